/* The metrics endpoint's HTTP server (see metrics.h): a listening socket
 * and its connections on the worker's loop, each an explicit state machine
 * on a uv_poll with one timer.
 *
 * Bounded in every direction, since anyone who can reach the port can
 * talk to it: at most SL_METRICS_MAX_CONNS connections, and at most
 * SL_METRICS_MAX_PER_PEER from one address, so that one host holding slow
 * connections cannot starve the scrapers (one more is answered 503 and
 * closed at once), a request head of at most
 * SL_HTTP_MAX_HEAD bytes (431), SL_METRICS_HEAD_TIMEOUT_MS for the whole
 * head however slowly it trickles in, SL_METRICS_WRITE_TIMEOUT_MS for a
 * client to take each piece of the answer, one answer per connection
 * (Connection: close). /metrics is written from a copy in pieces of one
 * buffer as the socket drains (expose.c), never built whole. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "expose.h"
#include "sluice/list.h"
#include "sluice/log.h"
#include "sluice/metrics.h"

#define SL_METRICS_MAX_CONNS 16
#define SL_METRICS_MAX_PER_PEER 4
#define SL_METRICS_HEAD_TIMEOUT_MS 5000
#define SL_METRICS_WRITE_TIMEOUT_MS 10000
/* After the answer: the client's unread bytes are read and dropped for at
 * most this long and this much, so that closing does not reset the
 * connection before the client has read the answer. */
#define SL_METRICS_LINGER_MS 1000
#define SL_METRICS_LINGER_BYTES 65536
#define SL_METRICS_ACCEPT_BATCH 32
/* Pieces of /metrics written per writable event: a fast reader of a large
 * text lets the loop's other connections have their turn in between. */
#define SL_METRICS_PIECES_PER_TURN 8
/* accept4 failing for want of descriptors or memory leaves the socket
 * readable: the listener stops watching it this long instead of spinning,
 * and says so at most once per SL_METRICS_REPORT_MS. */
#define SL_METRICS_PAUSE_MS 1000
#define SL_METRICS_REPORT_MS 10000

typedef struct sl_metrics {
    sl_worker_t *w;    /* borrowed */
    uv_poll_t poll;    /* on fd; its close callback drops a reference */
    uv_timer_t pause;  /* restarts the poll after an accept4 shortage; its close callback
                          drops a reference */
    int64_t report_ms; /* loop clock of the last shortage report, 0: none */
    int fd;            /* owned: the listening socket, -1 once closed */
    char desc[300];    /* "127.0.0.1:9127", for logs */
    int64_t start_s;   /* process start, Unix time (sluice_start_time_seconds) */
    sl_list_t conns;   /* http_conn_t by node */
    int nconns;        /* on conns */
    int refs;          /* the two handles and each connection not yet freed */
} sl_metrics_t;

enum conn_state {
    HC_READING, /* the request head, within SL_METRICS_HEAD_TIMEOUT_MS */
    HC_WRITING, /* the answer, within SL_METRICS_WRITE_TIMEOUT_MS */
    HC_LINGER,  /* answer sent and write side shut: dropping what the client still sends */
    HC_CLOSING  /* handles closing; freed in the last close callback */
};

typedef struct http_conn {
    sl_list_t node;  /* on the endpoint's conns until closing */
    sl_metrics_t *m; /* borrowed */
    int fd;          /* owned; closed when closing starts */
    enum conn_state state;
    uv_poll_t poll;            /* events per state (conn_watch) */
    uv_timer_t timer;          /* the state's deadline */
    int open_handles;          /* poll and timer: freed when both closed */
    char in[SL_HTTP_MAX_HEAD]; /* the request head so far */
    size_t in_len;             /* bytes in in */
    size_t lingered;           /* bytes dropped in HC_LINGER */
    char *out;                 /* owned, SL_EXPOSE_MIN_CHUNK bytes: the answer's next piece */
    size_t out_len, out_off;   /* bytes in out, bytes of them written */
    sl_expose_t *expose;       /* owned while /metrics has more to write */
    char tag[80];              /* "metrics peer=..." for logs */
    struct sockaddr_storage peer; /* its address (the port does not count) */
} http_conn_t;

static void conn_close(http_conn_t *c);
static void conn_on_write(http_conn_t *c);
static void conn_poll_cb(uv_poll_t *h, int status, int events);

static void metrics_unref(sl_metrics_t *m) {
    if (--m->refs == 0) free(m);
}

static void conn_handle_closed_cb(uv_handle_t *h) {
    http_conn_t *c = h->data;
    if (--c->open_handles > 0) return;
    sl_metrics_t *m = c->m;
    sl_expose_free(c->expose);
    free(c->out);
    free(c);
    metrics_unref(m);
}

static void conn_close(http_conn_t *c) {
    if (c->state == HC_CLOSING) return;
    c->state = HC_CLOSING;
    sl_list_unlink(&c->node);
    c->m->nconns--;
    uv_poll_stop(&c->poll);
    close(c->fd);
    uv_close((uv_handle_t *)&c->poll, conn_handle_closed_cb);
    uv_close((uv_handle_t *)&c->timer, conn_handle_closed_cb);
}

static void timeout_cb(uv_timer_t *t) {
    http_conn_t *c = t->data;
    if (c->state == HC_READING)
        sl_log_debug(c->tag, "request head not complete within %d ms: closed",
                     SL_METRICS_HEAD_TIMEOUT_MS);
    else if (c->state == HC_WRITING)
        sl_log_debug(c->tag, "answer not taken within %d ms: closed", SL_METRICS_WRITE_TIMEOUT_MS);
    conn_close(c);
}

/* The events a state waits for, and its deadline. */
static void conn_enter(http_conn_t *c, enum conn_state st) {
    c->state = st;
    int ev = st == HC_WRITING ? UV_WRITABLE : UV_READABLE;
    uint64_t ms = st == HC_READING   ? SL_METRICS_HEAD_TIMEOUT_MS
                  : st == HC_WRITING ? SL_METRICS_WRITE_TIMEOUT_MS
                                     : SL_METRICS_LINGER_MS;
    uv_poll_start(&c->poll, ev, conn_poll_cb);
    uv_timer_start(&c->timer, timeout_cb, ms, 0);
}

/* ---- answers ---- */

static const char *status_text(int status) {
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Error";
    }
}

/* Puts the status line and headers in out; the body is body (with its
 * length) or, when body is NULL, the streamed /metrics text. */
static void conn_answer(http_conn_t *c, int status, const char *extra, const char *body,
                        bool head_only) {
    int n;
    if (body)
        n = snprintf(
            c->out, SL_EXPOSE_MIN_CHUNK,
            "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: %zu\r\nCache-Control: no-store\r\n%sConnection: close\r\n\r\n%s",
            status, status_text(status), strlen(body), extra ? extra : "", head_only ? "" : body);
    else
        n = snprintf(c->out, SL_EXPOSE_MIN_CHUNK,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n\r\n");
    c->out_len = n > 0 && n < SL_EXPOSE_MIN_CHUNK ? (size_t)n : 0;
    c->out_off = 0;
    conn_enter(c, HC_WRITING);
    conn_on_write(c); /* inline first: the socket takes a short answer at once */
}

static bool path_is(const sl_http_req_t *r, const char *p) {
    return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

static void conn_serve(http_conn_t *c, const sl_http_req_t *r) {
    sl_worker_t *w = c->m->w;
    bool head = r->method == SL_HTTP_HEAD;
    if (r->method == SL_HTTP_OTHER) {
        conn_answer(c, 405, "Allow: GET, HEAD\r\n", "only GET and HEAD are served here\n", false);
    } else if (path_is(r, "/metrics")) {
        if (!head && !(c->expose = sl_expose_snapshot(w, c->m->start_s))) {
            sl_log_warn(c->tag, "out of memory for a /metrics copy: answered 503");
            conn_answer(c, 503, NULL, "out of memory: try again\n", false);
            return;
        }
        conn_answer(c, 200, NULL, NULL, head);
    } else if (path_is(r, "/health")) {
        char reason[400], body[410];
        bool ok = sl_expose_healthy(w, reason, sizeof reason);
        snprintf(body, sizeof body, "%s\n", reason);
        conn_answer(c, ok ? 200 : 503, NULL, body, head);
    } else if (path_is(r, "/ready")) {
        bool ready = !w->core.shutting_down && !w->core.draining && !w->stopping;
        conn_answer(c, ready ? 200 : 503, NULL, ready ? "ready\n" : "shutting down\n", head);
    } else {
        conn_answer(c, 404, NULL, "not found: try /metrics, /health or /ready\n", head);
    }
}

/* ---- events ---- */

static void conn_on_read(http_conn_t *c) {
    ssize_t n = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {
        conn_close(c); /* gone before asking */
        return;
    }
    c->in_len += (size_t)n;
    sl_http_req_t req;
    int rc = sl_http_parse(c->in, c->in_len, &req);
    if (rc > 0) {
        conn_serve(c, &req);
    } else if (rc == SL_EPROTO) {
        sl_log_debug(c->tag, "malformed request head: answered 400");
        conn_answer(c, 400, NULL, "malformed request\n", false);
    } else if (c->in_len == sizeof c->in) {
        sl_log_debug(c->tag, "request head over %d bytes: answered 431", SL_HTTP_MAX_HEAD);
        conn_answer(c, 431, NULL, "request head too large\n", false);
    }
}

/* The next piece of the answer into out, once out is all written. False
 * when there is none left. */
static bool conn_refill(http_conn_t *c) {
    if (!c->expose) return false;
    c->out_len = sl_expose_next(c->expose, c->out, SL_EXPOSE_MIN_CHUNK);
    c->out_off = 0;
    if (c->out_len > 0) return true;
    sl_expose_free(c->expose);
    c->expose = NULL;
    return false;
}

static void conn_on_write(http_conn_t *c) {
    for (int pieces = 0;;) {
        if (c->out_off == c->out_len) {
            if (pieces == SL_METRICS_PIECES_PER_TURN) return; /* the poll calls again */
            if (!conn_refill(c)) break;
            pieces++;
            /* The client takes the answer: its deadline is per piece. */
            uv_timer_start(&c->timer, timeout_cb, SL_METRICS_WRITE_TIMEOUT_MS, 0);
        }
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            conn_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    /* All sent: the end of the body is the end of the stream. */
    shutdown(c->fd, SHUT_WR);
    conn_enter(c, HC_LINGER);
}

static void conn_on_linger(http_conn_t *c) {
    char drop[4096];
    ssize_t n = read(c->fd, drop, sizeof drop);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n > 0 && (c->lingered += (size_t)n) < SL_METRICS_LINGER_BYTES) return;
    conn_close(c);
}

static void conn_poll_cb(uv_poll_t *h, int status, int events) {
    (void)events;
    http_conn_t *c = h->data;
    if (status < 0) {
        conn_close(c);
        return;
    }
    switch (c->state) {
    case HC_READING:
        conn_on_read(c);
        break;
    case HC_WRITING:
        conn_on_write(c);
        break;
    case HC_LINGER:
        conn_on_linger(c);
        break;
    case HC_CLOSING:
        break;
    }
}

/* More connections than SL_METRICS_MAX_CONNS, or than
 * SL_METRICS_MAX_PER_PEER from one address: a short answer if the socket
 * takes it at once, then close. */
static void refuse(int fd, bool peer) {
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                               "Content-Length: 21\r\nConnection: close\r\n\r\n"
                               "too many connections\n";
    static const char busy_peer[] =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
        "Content-Length: 39\r\nConnection: close\r\n\r\n"
        "too many connections from this address\n";
    if (peer)
        (void)!send(fd, busy_peer, sizeof busy_peer - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    else
        (void)!send(fd, busy, sizeof busy - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    close(fd);
}

static bool same_host(const struct sockaddr_storage *a, const struct sockaddr_storage *b) {
    if (a->ss_family != b->ss_family) return false;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
    return true; /* a Unix socket: one peer */
}

/* Open connections from ss's address (at most SL_METRICS_MAX_CONNS). */
static int from_host(const sl_metrics_t *m, const struct sockaddr_storage *ss) {
    int n = 0;
    for (const sl_list_t *it = m->conns.next; it != &m->conns; it = it->next)
        n += same_host(&sl_container_of(it, http_conn_t, node)->peer, ss);
    return n;
}

static void conn_start(sl_metrics_t *m, int fd, const struct sockaddr_storage *ss, socklen_t len) {
    http_conn_t *c = calloc(1, sizeof *c);
    char *out = malloc(SL_EXPOSE_MIN_CHUNK);
    if (!c || !out || uv_poll_init(m->w->core.loop, &c->poll, fd) != 0) {
        sl_log_warn(NULL, "metrics: no memory or poll handle for a connection: closed");
        free(c), free(out);
        close(fd);
        return;
    }
    char host[48] = "?", serv[8] = "?"; /* numeric: an IPv6 address fits */
    getnameinfo((const struct sockaddr *)ss, len, host, sizeof host, serv, sizeof serv,
                NI_NUMERICHOST | NI_NUMERICSERV);
    snprintf(c->tag, sizeof c->tag, "metrics peer=%.47s:%.7s", host, serv);
    c->m = m;
    c->fd = fd;
    c->out = out;
    c->peer = *ss;
    uv_timer_init(m->w->core.loop, &c->timer);
    c->poll.data = c->timer.data = c;
    c->open_handles = 2;
    sl_list_push_back(&m->conns, &c->node);
    m->nconns++;
    m->refs++;
    conn_enter(c, HC_READING);
}

static void accept_cb(uv_poll_t *h, int status, int events);

static void resume_cb(uv_timer_t *t) {
    sl_metrics_t *m = t->data;
    uv_poll_start(&m->poll, UV_READABLE, accept_cb);
}

static void pause_accepting(sl_metrics_t *m, int err) {
    int64_t now = sl_now_ms(&m->w->core);
    if (m->report_ms == 0 || now - m->report_ms >= SL_METRICS_REPORT_MS) {
        sl_log_warn(NULL,
                    "metrics listener %s: accept: %s; not accepting for %d ms (raise the "
                    "open-files limit or lower max_client_conn)",
                    m->desc, strerror(err), SL_METRICS_PAUSE_MS);
        m->report_ms = now;
    }
    uv_poll_stop(&m->poll);
    uv_timer_start(&m->pause, resume_cb, SL_METRICS_PAUSE_MS, 0);
}

static void accept_cb(uv_poll_t *h, int status, int events) {
    (void)events;
    sl_metrics_t *m = h->data;
    if (status < 0) {
        sl_log_error(NULL, "metrics listener %s: %s", m->desc, uv_strerror(status));
        return;
    }
    for (int i = 0; i < SL_METRICS_ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(m->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) pause_accepting(m, errno);
            return;
        }
        if (m->nconns >= SL_METRICS_MAX_CONNS)
            refuse(fd, false);
        else if (from_host(m, &ss) >= SL_METRICS_MAX_PER_PEER)
            refuse(fd, true);
        else
            conn_start(m, fd, &ss, len);
    }
}

/* ---- open and close ---- */

static int listen_on(const char *host, int port, bool reuseport, char *err, size_t errlen) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                    *res;
    char ps[8];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(strcmp(host, "*") ? host : NULL, ps, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "metrics_listen: cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = -1, e = 0;
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        /* so_reuseport: the next sluice of a rolling restart binds it too. */
        if (reuseport) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 64) != 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(err, errlen,
                 "metrics_listen: cannot listen on %s:%d: %s (is the port taken? set another "
                 "metrics_listen, or leave it empty to turn the endpoint off)",
                 host, port, strerror(e));
    return fd;
}

int sl_metrics_open(sl_worker_t *w, char *err, size_t errlen) {
    const char *spec = w->core.cfg->metrics_listen;
    if (!spec || !*spec) return SL_OK;
    char host[256];
    int port;
    if (sl_config_parse_hostport(spec, host, sizeof host, &port) != SL_OK) {
        snprintf(err, errlen, "metrics_listen: invalid value \"%s\" (expected addr:port)", spec);
        return SL_ECONFIG;
    }
    sl_metrics_t *m = calloc(1, sizeof *m);
    if (!m) {
        snprintf(err, errlen, "metrics_listen: out of memory");
        return SL_ENOMEM;
    }
    m->fd = listen_on(host, port, w->core.cfg->so_reuseport, err, errlen);
    if (m->fd < 0) {
        free(m);
        return SL_EIO;
    }
    if (uv_poll_init(w->core.loop, &m->poll, m->fd) != 0) {
        snprintf(err, errlen, "metrics_listen: cannot watch the listening socket");
        close(m->fd);
        free(m);
        return SL_EIO;
    }
    m->w = w;
    m->refs = 2;
    uv_timer_init(w->core.loop, &m->pause);
    m->pause.data = m;
    m->start_s = (int64_t)time(NULL);
    m->poll.data = m;
    sl_list_init(&m->conns);
    snprintf(m->desc, sizeof m->desc, "%s", spec);
    uv_poll_start(&m->poll, UV_READABLE, accept_cb);
    w->metrics = m;
    sl_log_info(NULL, "metrics endpoint listening on %s (/metrics, /health, /ready)", spec);
    return SL_OK;
}

static void listener_closed_cb(uv_handle_t *h) {
    metrics_unref(h->data);
}

void sl_metrics_close(sl_worker_t *w) {
    sl_metrics_t *m = w->metrics;
    if (!m) return;
    w->metrics = NULL;
    uv_poll_stop(&m->poll);
    close(m->fd);
    m->fd = -1;
    uv_close((uv_handle_t *)&m->poll, listener_closed_cb);
    uv_close((uv_handle_t *)&m->pause, listener_closed_cb);
    while (!sl_list_empty(&m->conns))
        conn_close(sl_container_of(sl_list_first(&m->conns), http_conn_t, node));
}
