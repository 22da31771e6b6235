/* Forwarding a CancelRequest to the peer its key names: a connection of its
 * own on the loop (TCP, or the peer's Unix socket), the 16 bytes with the
 * TTL one lower, then a wait for the peer to close, all within
 * SL_PEERS_TIMEOUT_MS. The cancel connection that brought the request is
 * closed by its session at once, as for a cancel of our own clients: the
 * forward lives on alone, bounded in time and in number. */
#include "sluice/peers.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/cancelkey.h"
#include "sluice/log.h"
#include "sluice/proto.h"

typedef struct sl_peers sl_peers_t;

struct sl_peers {
    sl_list_t inflight; /* forward_t by node: started, not finished */
    int ninflight;      /* on inflight */
    bool closing;       /* shutting down: no new forward */
};

typedef struct forward {
    sl_list_t node;    /* on its loop's inflight until finished */
    sl_peers_t *owner; /* borrowed; NULL once finished (off the list) */
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } sock;                     /* to the peer, once sock_open */
    uv_timer_t timer;           /* the deadline of the whole forward */
    uv_getaddrinfo_t resolve;   /* looking the peer's host name up, while resolving */
    struct addrinfo *addrs;     /* owned: the lookup's answer (NULL for a literal address) */
    struct addrinfo *next_addr; /* borrowed from addrs: the one to try after this one */
    uv_connect_t connect;
    uv_write_t write;
    uint8_t pkt[16];  /* the CancelRequest as sent on: the TTL one lower */
    char rbuf[64];    /* what the peer sends before it closes (nothing, normally) */
    int peer_id;      /* where it goes */
    char where[300];  /* "host:port" or the socket's path, for logs */
    char host[256];   /* copied from [peers]: a reload may free that config meanwhile */
    int port;         /* TCP port, or the socket file's number */
    char tag[160];    /* the cancel connection's tag, for logs */
    int open_handles; /* sock and timer handles whose close callback has not run */
    bool resolving;   /* resolve is in the thread pool: its callback frees the result */
    bool sock_open;   /* sock was initialised: it must be closed */
    bool sent;        /* the write completed */
    bool finished;    /* logged and off the list; waits for its handles */
} forward_t;

/* Frees f once nothing of libuv refers to it any more. */
static void maybe_free(forward_t *f) {
    if (!f->finished || f->open_handles > 0 || f->resolving) return;
    uv_freeaddrinfo(f->addrs);
    free(f);
}

static void handle_closed_cb(uv_handle_t *h) {
    forward_t *f = h->data;
    f->open_handles--;
    maybe_free(f);
}

/* Ends f: one log line, off the in-flight list, handles closing. */
static void finish(forward_t *f, enum sl_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void finish(forward_t *f, enum sl_log_level level, const char *fmt, ...) {
    if (f->finished) return;
    f->finished = true;
    if (sl_log_enabled(level)) {
        char why[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(why, sizeof why, fmt, ap);
        va_end(ap);
        sl_log_write(level, f->tag, "cancel request for a client of peer %d %s", f->peer_id, why);
    }
    sl_list_unlink(&f->node);
    f->owner->ninflight--;
    f->owner = NULL;
    uv_close((uv_handle_t *)&f->timer, handle_closed_cb);
    if (f->sock_open) uv_close(&f->sock.handle, handle_closed_cb);
    /* A lookup not yet started is dropped; a running one ends by itself. */
    if (f->resolving) uv_cancel((uv_req_t *)&f->resolve);
    maybe_free(f);
}

static void fail(forward_t *f, const char *what, int status) {
    finish(f, SL_LOG_WARN,
           "not forwarded: %s %s: %s; check [peers] entry %d and that the instance runs", what,
           f->where, uv_strerror(status), f->peer_id);
}

static void timeout_cb(uv_timer_t *t) {
    forward_t *f = t->data;
    finish(f, SL_LOG_WARN,
           "not forwarded: %s did not %s within %d ms; check [peers] entry %d and that the "
           "instance runs",
           f->where, f->sent ? "close the connection" : "take the request", SL_PEERS_TIMEOUT_MS,
           f->peer_id);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    (void)suggested;
    forward_t *f = h->data;
    *buf = uv_buf_init(f->rbuf, sizeof f->rbuf);
}

/* The peer closes once it handled the request, as PostgreSQL does. */
static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    (void)buf;
    forward_t *f = s->data;
    if (nread >= 0) return; /* a peer has nothing to say; ignored */
    if (nread == UV_EOF)
        finish(f, SL_LOG_INFO, "forwarded to %s", f->where);
    else
        finish(f, SL_LOG_WARN, "sent to %s, whose connection then failed: %s", f->where,
               uv_strerror((int)nread));
}

static void write_cb(uv_write_t *w, int status) {
    forward_t *f = w->data;
    if (f->finished) return;
    if (status < 0) {
        fail(f, "cannot send to", status);
        return;
    }
    f->sent = true;
}

static void connect_tcp(forward_t *f, const struct sockaddr *addr);

/* The next address of the lookup's answer, once the socket that failed
 * on the last one has closed (a libuv handle connects once). */
static void retry_closed_cb(uv_handle_t *h) {
    forward_t *f = h->data;
    f->open_handles--;
    if (f->finished) {
        maybe_free(f);
        return;
    }
    struct addrinfo *ai = f->next_addr;
    f->next_addr = ai->ai_next;
    connect_tcp(f, ai->ai_addr);
}

/* A connect failed: the next address, as libpq tries them, else the end. A
 * name with an IPv6 and an IPv4 address reaches a peer that listens on
 * only one of them. */
static void connect_failed(forward_t *f, int status) {
    if (!f->next_addr || !f->sock_open) {
        fail(f, "cannot connect to", status);
        return;
    }
    f->sock_open = false;
    uv_close(&f->sock.handle, retry_closed_cb);
}

static void connect_cb(uv_connect_t *c, int status) {
    forward_t *f = c->data;
    if (f->finished) return;
    if (status < 0) {
        connect_failed(f, status);
        return;
    }
    uv_buf_t b = uv_buf_init((char *)f->pkt, sizeof f->pkt);
    int rc = uv_write(&f->write, &f->sock.stream, &b, 1, write_cb);
    if (rc == 0) rc = uv_read_start(&f->sock.stream, alloc_cb, read_cb);
    if (rc < 0) fail(f, "cannot send to", rc);
}

/* Connects to addr over TCP (one of the lookup's answers, or a literal
 * address). */
static void connect_tcp(forward_t *f, const struct sockaddr *addr) {
    int rc = uv_tcp_init(f->timer.loop, &f->sock.tcp);
    if (rc < 0) {
        fail(f, "cannot connect to", rc);
        return;
    }
    f->sock_open = true;
    f->open_handles++;
    f->sock.handle.data = f;
    rc = uv_tcp_connect(&f->connect, &f->sock.tcp, addr, connect_cb);
    if (rc < 0) connect_failed(f, rc);
}

static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    forward_t *f = req->data;
    f->resolving = false;
    if (f->finished) {
        uv_freeaddrinfo(res);
        maybe_free(f);
        return;
    }
    if (status < 0 || !res) {
        uv_freeaddrinfo(res);
        fail(f, "cannot resolve the host of", status < 0 ? status : UV_EAI_NONAME);
        return;
    }
    /* The answers in order, the next one only when a connect fails: a
     * name that resolves to several instances would make the forward
     * land on any of them (PgBouncer warns the same); the TTL then bounds
     * the hops. */
    f->addrs = res;
    f->next_addr = res->ai_next;
    connect_tcp(f, res->ai_addr);
}

/* Starts f towards its peer: a Unix socket, a literal address, or a name
 * to look up first (off the loop, in libuv's thread pool). */
static void start(forward_t *f, uv_loop_t *loop) {
    if (f->host[0] == '/') {
        uv_pipe_init(loop, &f->sock.pipe, 0);
        f->sock_open = true;
        f->open_handles++;
        f->sock.handle.data = f;
        uv_pipe_connect(&f->connect, &f->sock.pipe, f->where, connect_cb);
        return;
    }
    struct sockaddr_storage ss;
    if (uv_ip4_addr(f->host, f->port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(f->host, f->port, (struct sockaddr_in6 *)&ss) == 0) {
        connect_tcp(f, (const struct sockaddr *)&ss);
        return;
    }
    char port[8];
    snprintf(port, sizeof port, "%d", f->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int rc = uv_getaddrinfo(loop, &f->resolve, resolved_cb, f->host, port, &hints);
    if (rc == 0)
        f->resolving = true;
    else
        fail(f, "cannot resolve the host of", rc);
}

/* A new forward of (pid, key) to peer p, on the in-flight list. */
static void forward(sl_loop_t *l, const sl_peer_cfg_t *p, uint32_t pid, uint32_t key,
                    const char *tag) {
    forward_t *f = calloc(1, sizeof *f);
    if (!f) {
        sl_log_error(tag, "cancel request for a client of peer %d dropped: out of memory", p->id);
        return;
    }
    f->owner = l->peers;
    sl_list_push_back(&l->peers->inflight, &f->node);
    l->peers->ninflight++;
    f->peer_id = p->id;
    f->port = p->port;
    snprintf(f->host, sizeof f->host, "%s", p->host);
    snprintf(f->tag, sizeof f->tag, "%s", tag ? tag : "");
    if (p->host[0] == '/')
        snprintf(f->where, sizeof f->where, "%s/.s.PGSQL.%d", p->host, p->port);
    else
        snprintf(f->where, sizeof f->where, strchr(p->host, ':') ? "[%s]:%d" : "%s:%d", p->host,
                 p->port);
    sl_put_be32(f->pkt, 16);
    sl_put_be32(f->pkt + 4, SL_PROTO_CANCEL);
    sl_put_be32(f->pkt + 8, pid);
    sl_put_be32(f->pkt + 12, sl_cancelkey_with_ttl(key, sl_cancelkey_ttl(key) - 1));
    f->connect.data = f->write.data = f->resolve.data = f;
    uv_timer_init(l->loop, &f->timer);
    f->timer.data = f;
    f->open_handles++;
    uv_timer_start(&f->timer, timeout_cb, SL_PEERS_TIMEOUT_MS, 0);
    start(f, l->loop);
}

/* Forwards to p unless too many are in flight (on this loop, or to p). */
static void forward_bounded(sl_loop_t *l, const sl_peer_cfg_t *p, uint32_t pid, uint32_t key,
                            const char *tag) {
    sl_peers_t *ps = l->peers;
    int to_peer = 0;
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &ps->inflight) {
        to_peer += sl_container_of(it, forward_t, node)->peer_id == p->id;
    }
    if (ps->ninflight >= SL_PEERS_INFLIGHT_MAX || (p->pool_size > 0 && to_peer >= p->pool_size)) {
        sl_log_warn(tag,
                    "cancel request for a client of peer %d dropped: %d forwards already in "
                    "flight (%d to that peer; at most %d, pool_size %d): check that the peers "
                    "answer, or raise that peer's pool_size in [peers]",
                    p->id, ps->ninflight, to_peer, SL_PEERS_INFLIGHT_MAX, p->pool_size);
        return;
    }
    forward(l, p, pid, key, tag);
}

bool sl_peers_route_cancel(sl_loop_t *l, uint32_t pid, uint32_t key, const char *tag) {
    int owner = sl_cancelkey_peer(pid);
    if (l->peer_id == 0 || owner == l->peer_id) return false;
    if (!l->peers) { /* a loop set up without sl_peers_init: a bug, said as such */
        sl_log_error(tag,
                     "cancel request for a client of peer %d dropped: this loop has no "
                     "peering state (sl_peers_init was not called)",
                     owner);
        return true;
    }
    if (l->peers->closing) {
        sl_log_info(tag, "cancel request for a client of peer %d dropped: sluice is shutting down",
                    owner);
        return true;
    }
    if (owner == 0) {
        sl_log_warn(tag, "cancel request dropped: its key names no peer (peer_id 0: a key from a "
                         "sluice without peering, or a made-up one); every instance behind the "
                         "balancer needs its own peer_id");
        return true;
    }
    unsigned ttl = sl_cancelkey_ttl(key);
    if (ttl == 0) {
        sl_log_warn(tag,
                    "cancel request for a client of peer %d dropped: its TTL is spent (it was "
                    "forwarded %u times already); check that each instance's [peers] entry "
                    "for %d reaches the instance running with peer_id = %d (entries pointing "
                    "at each other make a circle)",
                    owner, SL_CANCELKEY_TTL_MAX, owner, owner);
        return true;
    }
    const sl_peer_cfg_t *p = sl_config_find_peer(l->cfg, owner);
    if (!p) {
        sl_log_warn(tag,
                    "cancel request for a client of peer %d dropped: peer %d is not in [peers]; "
                    "add '%d = host=... port=...' to this instance's [peers] (every instance "
                    "needs an entry for each other one)",
                    owner, owner, owner);
        return true;
    }
    forward_bounded(l, p, pid, key, tag);
    return true;
}

int sl_peers_init(sl_loop_t *l) {
    l->peers = calloc(1, sizeof *l->peers);
    if (!l->peers) return SL_ENOMEM;
    sl_list_init(&l->peers->inflight);
    return SL_OK;
}

void sl_peers_close_all(sl_loop_t *l) {
    if (!l->peers) return;
    l->peers->closing = true;
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &l->peers->inflight) {
        finish(sl_container_of(it, forward_t, node), SL_LOG_INFO,
               "not forwarded: sluice is shutting down");
    }
}

void sl_peers_free(sl_loop_t *l) {
    free(l->peers);
    l->peers = NULL;
}
