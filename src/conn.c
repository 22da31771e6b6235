/* The I/O layer shared by client and backend sockets: one poll handle per
 * fd, interest computed from the owner's wants and the TLS direction, TLS
 * or plain reads and writes, and kicks for bytes poll cannot announce. */
#include "sluice/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice/tls.h"

/* ---- kicks ---- */

static void kick_idle_cb(uv_idle_t *h) {
    sl_conn_kicks_t *k = h->data;
    /* Take the list as it is now: running a connection may queue it again. */
    sl_list_t batch;
    sl_list_init(&batch);
    while (!sl_list_empty(&k->conns)) {
        sl_list_t *n = sl_list_first(&k->conns);
        sl_list_unlink(n);
        sl_list_push_back(&batch, n);
    }
    while (!sl_list_empty(&batch)) {
        sl_conn_t *cn = sl_container_of(sl_list_first(&batch), sl_conn_t, kick_node);
        sl_list_unlink(&cn->kick_node);
        cn->kicked = false;
        /* The owner may have stopped wanting bytes since; it asks again
         * (and is kicked again) when it has room. */
        if (cn->reading && cn->poll && sl_conn_pending(cn) > 0) cn->on_event(cn, 0, UV_READABLE);
    }
    if (sl_list_empty(&k->conns)) uv_idle_stop(h);
}

void sl_conn_kicks_init(sl_conn_kicks_t *k, uv_loop_t *loop) {
    sl_list_init(&k->conns);
    uv_idle_init(loop, &k->idle);
    k->idle.data = k;
}

void sl_conn_kicks_close(sl_conn_kicks_t *k) {
    uv_close((uv_handle_t *)&k->idle, NULL);
}

static void kick(sl_conn_t *cn) {
    if (cn->kicked || !cn->kicks) return;
    cn->kicked = true;
    sl_list_push_back(&cn->kicks->conns, &cn->kick_node);
    if (!uv_is_active((uv_handle_t *)&cn->kicks->idle))
        uv_idle_start(&cn->kicks->idle, kick_idle_cb);
}

/* ---- the poll handle ---- */

static void conn_poll_cb(uv_poll_t *h, int status, int events) {
    sl_conn_t *cn = h->data;
    if (status < 0) {
        /* libuv stopped the handle: whatever the owner wants next must be
         * armed again, never taken as already there. */
        cn->armed = 0;
        cn->on_event(cn, status, 0);
        return;
    }
    /* TLS may need the other direction: a read that waits for
     * writability, a write that waits for readability. */
    int ev = events;
    if (cn->read_wants_write && (events & UV_WRITABLE)) ev |= UV_READABLE;
    if (cn->write_wants_read && (events & UV_READABLE)) ev |= UV_WRITABLE;
    cn->on_event(cn, 0, ev);
}

static void conn_closed_cb(uv_handle_t *h) {
    sl_conn_t *cn = h->data;
    if (h == (uv_handle_t *)&cn->own_poll)
        cn->own_poll_busy = false;
    else
        free(h);
    cn->handles--;
    if (cn->on_closed) cn->on_closed(cn); /* may free cn */
}

void sl_conn_init(sl_conn_t *cn, uv_loop_t *loop, sl_conn_kicks_t *kicks, sl_conn_event_cb on_event,
                  sl_conn_closed_cb on_closed, void *data) {
    *cn = (sl_conn_t){.loop = loop,
                      .kicks = kicks,
                      .fd = -1,
                      .on_event = on_event,
                      .on_closed = on_closed,
                      .data = data};
    sl_list_init(&cn->kick_node);
}

int sl_conn_attach(sl_conn_t *cn, int fd) {
    if (cn->poll && cn->fd == fd) return SL_OK;
    if (cn->poll) sl_conn_detach(cn);
    uv_poll_t *p = cn->own_poll_busy ? malloc(sizeof *p) : &cn->own_poll;
    if (!p) return SL_ENOMEM;
    if (uv_poll_init(cn->loop, p, fd) != 0) {
        if (p != &cn->own_poll) free(p);
        return SL_EIO;
    }
    p->data = cn;
    if (p == &cn->own_poll) cn->own_poll_busy = true;
    cn->poll = p;
    cn->handles++;
    cn->fd = fd;
    cn->armed = 0;
    cn->read_wants_write = cn->write_wants_read = false;
    return SL_OK;
}

void sl_conn_detach(sl_conn_t *cn) {
    if (cn->kicked) sl_list_unlink(&cn->kick_node);
    cn->kicked = false;
    if (!cn->poll) return;
    /* uv_close stops the handle and takes the fd out of epoll now; the
     * memory goes in the close callback. */
    uv_close((uv_handle_t *)cn->poll, conn_closed_cb);
    cn->poll = NULL;
    cn->armed = 0;
    cn->reading = false;
}

void sl_conn_update_slow(sl_conn_t *cn, bool want_read, bool want_write) {
    if (!cn->poll) return;
    cn->reading = want_read;
    int ev = 0;
    if (want_read) ev |= UV_READABLE;
    if (want_write) ev |= UV_WRITABLE;
    if (want_read && cn->read_wants_write) ev |= UV_WRITABLE;
    if (want_write && cn->write_wants_read) ev |= UV_READABLE;
    /* Starting a handle is an epoll_ctl: only when the set changes. */
    if (ev != cn->armed) {
        if (ev)
            uv_poll_start(cn->poll, ev, conn_poll_cb);
        else
            uv_poll_stop(cn->poll);
        cn->armed = ev;
    }
    if (want_read && cn->ssl && SSL_is_init_finished(cn->ssl) && SSL_pending(cn->ssl) > 0) kick(cn);
}

void sl_conn_tls_wait(sl_conn_t *cn, int want) {
    cn->read_wants_write = want == SL_TLS_WANT_WRITE;
}

/* ---- bytes ---- */

static ssize_t errno_result(void) {
    return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

ssize_t sl_conn_read(sl_conn_t *cn, void *p, size_t n) {
    if (cn->ssl) {
        int want;
        ssize_t r = sl_tls_read(cn->ssl, p, n, &want);
        cn->read_wants_write = r == -EAGAIN && want == SL_TLS_WANT_WRITE;
        return r;
    }
    for (;;) {
        ssize_t r = read(cn->fd, p, n);
        if (r >= 0) return r;
        if (errno != EINTR) return errno_result();
    }
}

ssize_t sl_conn_write(sl_conn_t *cn, const void *p, size_t n) {
    if (cn->ssl) {
        int want;
        ssize_t r = sl_tls_write(cn->ssl, p, n, &want);
        cn->write_wants_read = r == -EAGAIN && want == SL_TLS_WANT_READ;
        return r;
    }
    for (;;) {
        ssize_t r = send(cn->fd, p, n, MSG_NOSIGNAL);
        if (r >= 0) return r;
        if (errno != EINTR) return errno_result();
    }
}
