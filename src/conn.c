/* The I/O layer shared by client and backend sockets: one epoll set per
 * loop, interest computed from the owner's wants and the TLS direction, TLS
 * or plain reads and writes, and kicks for bytes poll cannot announce. */
#include "sluice/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice/log.h"
#include "sluice/tls.h"

/* ---- the loop's socket set ---- */

static void set_close_handles(sl_conn_kicks_t *k);
static void set_interest(sl_conn_t *cn, int ev);

/* Runs the close callbacks owed: a detached connection's owner may free it
 * there, so they run outside any epoll batch that could still name it. */
static void run_closed(sl_conn_kicks_t *k) {
    while (!sl_list_empty(&k->closed)) {
        sl_conn_t *cn = sl_container_of(sl_list_first(&k->closed), sl_conn_t, close_node);
        sl_list_unlink(&cn->close_node);
        int n = cn->close_owed;
        cn->close_owed = 0;
        for (int i = 0; i < n; i++) {
            cn->handles--;
            k->nconns--;
            /* The owner frees cn only once handles is 0: on the last round. */
            if (cn->on_closed) cn->on_closed(cn);
        }
    }
    if (k->stopping && k->nconns == 0) set_close_handles(k);
}

static void run_kicks(sl_conn_kicks_t *k) {
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
        if (cn->refused && cn->attached) {
            int e = cn->refused;
            cn->refused = 0;
            cn->on_event(cn, -e, 0);
            continue;
        }
        /* The owner may have stopped wanting bytes since; it asks again
         * (and is kicked again) when it has room. */
        if (cn->reading && cn->attached && sl_conn_pending(cn) > 0)
            cn->on_event(cn, 0, UV_READABLE);
    }
}

static void kick_idle_cb(uv_idle_t *h) {
    sl_conn_kicks_t *k = h->data;
    run_kicks(k);
    run_closed(k);
    if (!k->closed_handles && sl_list_empty(&k->conns) && sl_list_empty(&k->closed))
        uv_idle_stop(h);
}

static void wake_idle(sl_conn_kicks_t *k) {
    if (!k->closed_handles && !uv_is_active((uv_handle_t *)&k->idle))
        uv_idle_start(&k->idle, kick_idle_cb);
}

/* Maps one epoll event to the owner's: an error stops the socket (as
 * libuv stops a poll handle on POLLERR), a hang-up wakes what is armed,
 * and TLS may need the other direction: a read that waits for
 * writability, a write that waits for readability. */
static void dispatch(sl_conn_t *cn, uint32_t e) {
    if (!cn->attached || !cn->armed) return; /* detached or stopped earlier in this batch */
    if (e & EPOLLERR) {
        set_interest(cn, 0);
        cn->on_event(cn, UV_EBADF, 0);
        return;
    }
    int events = 0;
    if (e & (EPOLLIN | EPOLLHUP)) events |= UV_READABLE;
    if (e & (EPOLLOUT | EPOLLHUP)) events |= UV_WRITABLE;
    events &= cn->armed;
    if (!events) return;
    int ev = events;
    if (cn->read_wants_write && (events & UV_WRITABLE)) ev |= UV_READABLE;
    if (cn->write_wants_read && (events & UV_READABLE)) ev |= UV_WRITABLE;
    cn->on_event(cn, 0, ev);
}

static void set_poll_cb(uv_poll_t *h, int status, int events) {
    (void)events;
    sl_conn_kicks_t *k = h->data;
    if (status < 0) return; /* an epoll fd raises no error while it lives */
    /* Level-triggered: what does not fit in this batch is there next round.
     * A connection detached by an earlier event of the batch is still
     * memory (its close callback waits for the idle handle) and is skipped. */
    struct epoll_event evs[64];
    int n = epoll_wait(k->epfd, evs, 64, 0);
    for (int i = 0; i < n; i++)
        dispatch(evs[i].data.ptr, evs[i].events);
}

void sl_conn_kicks_init(sl_conn_kicks_t *k, uv_loop_t *loop) {
    *k = (sl_conn_kicks_t){.loop = loop};
    sl_list_init(&k->conns);
    sl_list_init(&k->closed);
    uv_idle_init(loop, &k->idle);
    k->idle.data = k;
    k->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (k->epfd >= 0 && uv_poll_init(loop, &k->ep_poll, k->epfd) != 0) {
        close(k->epfd);
        k->epfd = -1;
    }
    k->ep_poll.data = k;
}

static void set_close_handles(sl_conn_kicks_t *k) {
    if (k->closed_handles) return;
    k->closed_handles = true;
    uv_close((uv_handle_t *)&k->idle, NULL);
    if (k->epfd >= 0) {
        uv_close((uv_handle_t *)&k->ep_poll, NULL);
        close(k->epfd); /* libuv took it out of its own set at uv_close */
        k->epfd = -1;
    }
}

void sl_conn_kicks_close(sl_conn_kicks_t *k) {
    k->stopping = true;
    if (k->nconns == 0) set_close_handles(k);
}

static void kick(sl_conn_t *cn) {
    if (cn->kicked || !cn->kicks) return;
    cn->kicked = true;
    sl_list_push_back(&cn->kicks->conns, &cn->kick_node);
    wake_idle(cn->kicks);
}

/* ---- one socket ---- */

void sl_conn_init(sl_conn_t *cn, uv_loop_t *loop, sl_conn_kicks_t *kicks, sl_conn_event_cb on_event,
                  sl_conn_closed_cb on_closed, void *data) {
    (void)loop; /* kicks->loop: every socket of a loop is in its set */
    *cn = (sl_conn_t){
        .kicks = kicks, .fd = -1, .on_event = on_event, .on_closed = on_closed, .data = data};
    sl_list_init(&cn->kick_node);
    sl_list_init(&cn->close_node);
}

int sl_conn_attach(sl_conn_t *cn, int fd) {
    if (cn->attached && cn->fd == fd) return SL_OK;
    if (cn->attached) sl_conn_detach(cn);
    sl_conn_kicks_t *k = cn->kicks;
    if (!k || k->epfd < 0 || k->stopping) return SL_EIO;
    cn->attached = true;
    cn->handles++;
    k->nconns++;
    cn->fd = fd;
    cn->armed = 0;
    cn->read_wants_write = cn->write_wants_read = false;
    return SL_OK;
}

/* Puts the epoll set's interest in fd to ev (0: out of the set). */
static void set_interest(sl_conn_t *cn, int ev) {
    sl_conn_kicks_t *k = cn->kicks;
    struct epoll_event e = {.events = (ev & UV_READABLE ? EPOLLIN : 0u) |
                                      (ev & UV_WRITABLE ? EPOLLOUT : 0u),
                            .data.ptr = cn};
    int rc;
    if (!ev)
        rc = epoll_ctl(k->epfd, EPOLL_CTL_DEL, cn->fd, NULL);
    else if (!cn->armed) {
        rc = epoll_ctl(k->epfd, EPOLL_CTL_ADD, cn->fd, &e);
        if (rc != 0 && errno == EEXIST) rc = epoll_ctl(k->epfd, EPOLL_CTL_MOD, cn->fd, &e);
    } else {
        /* libpq may have closed and reopened a socket under the same number:
         * the kernel dropped the old one from the set. */
        rc = epoll_ctl(k->epfd, EPOLL_CTL_MOD, cn->fd, &e);
        if (rc != 0 && errno == ENOENT) rc = epoll_ctl(k->epfd, EPOLL_CTL_ADD, cn->fd, &e);
    }
    if (rc != 0 && ev && errno != EBADF) {
        /* The set cannot take the socket (out of memory, or
         * fs.epoll.max_user_watches reached): its owner would wait for an
         * event that never comes. It gets a poll error instead, from the
         * idle handle (not inside its own update call). */
        sl_log_error(NULL,
                     "cannot watch a socket: epoll_ctl: %s; raise fs.epoll.max_user_watches "
                     "or free memory; the connection is closed",
                     strerror(errno));
        cn->refused = errno;
        kick(cn);
        return;
    }
    /* A socket the kernel refuses otherwise (closed under us, EBADF)
     * reports nothing: its owner learns of it at its next read or write. */
    int was = cn->armed;
    cn->armed = (uint8_t)ev;
    /* The set's handle is active while some socket is armed, as a socket's
     * own handle would be: it keeps the loop running for them alone. */
    if (!was && ev && k->narmed++ == 0) uv_poll_start(&k->ep_poll, UV_READABLE, set_poll_cb);
    if (was && !ev && --k->narmed == 0) uv_poll_stop(&k->ep_poll);
}

void sl_conn_detach(sl_conn_t *cn) {
    if (cn->kicked) sl_list_unlink(&cn->kick_node);
    cn->kicked = false;
    if (!cn->attached) return;
    /* Out of the set now; the close callback comes a loop round later. */
    if (cn->armed) set_interest(cn, 0);
    cn->attached = false;
    cn->reading = false;
    if (cn->close_owed++ == 0) sl_list_push_back(&cn->kicks->closed, &cn->close_node);
    wake_idle(cn->kicks);
}

void sl_conn_update_slow(sl_conn_t *cn, bool want_read, bool want_write) {
    if (!cn->attached) return;
    cn->reading = want_read;
    int ev = 0;
    if (want_read) ev |= UV_READABLE;
    if (want_write) ev |= UV_WRITABLE;
    if (want_read && cn->read_wants_write) ev |= UV_WRITABLE;
    if (want_write && cn->write_wants_read) ev |= UV_READABLE;
    /* An epoll_ctl only when the set changes. */
    if (ev != cn->armed) set_interest(cn, ev);
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
