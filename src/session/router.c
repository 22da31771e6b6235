/* Read/write splitting for one client (see session.h, router.c part). */
#include "session.h"

#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/sql.h"

/* What a client of a database with replicas carries besides its route,
 * allocated only for such clients. */
typedef struct sl_client_route {
    sl_pool_t *pools[SL_MAX_BACKENDS]; /* referenced, one per backend, made on demand */
    uint64_t tx_start_us;              /* when the transaction in flight was routed (loop clock) */
    sl_fence_t fence;                  /* read-your-writes: where replicas must be */
    /* A replica read's request while it runs (replay.tail bytes): a block
     * of the loop's buffer pool, not a malloc per read, handed back when
     * the read ends; no block otherwise. */
    sl_buf_t replay;
    /* Offset in the client's buffer of the first request that began in the
     * bytes the scan framed last, after routing looked at the buffer:
     * SL_ROUTER_NO_NEW when none. Set by the scan, used and cleared by
     * sl_router_guard in the same read. */
    uint32_t new_request;
} sl_client_route_t;

#define SL_ROUTER_NO_NEW UINT32_MAX

/* READ_HINTED: a sluice:replica hint, which also waives read-your-writes. */
enum { NEED_MORE = -1, READ = 0, WRITE = 1, READ_HINTED = 2 };

bool sl_router_attach(sl_client_t *c) {
    c->tx_backend = -1;
    c->route = sl_route_get(c->w, c->dbname, c->user);
    if (!c->route) return true;
    c->rt = calloc(1, sizeof *c->rt);
    if (c->rt) c->rt->new_request = SL_ROUTER_NO_NEW;
    return c->rt != NULL;
}

void sl_router_detach(sl_client_t *c) {
    sl_router_done(c);
    if (!c->rt) return;
    for (int i = 0; i < SL_MAX_BACKENDS; i++)
        if (c->rt->pools[i]) sl_pool_unref(c->rt->pools[i]);
    free(c->rt);
    c->rt = NULL;
}

static sl_pool_t *backend_pool(sl_client_t *c, int b) {
    sl_pool_t **p = &c->rt->pools[b];
    if (!*p) {
        char err[256];
        *p = sl_pool_get_at(c->w, c->dbname, c->user, b, err, sizeof err);
        if (!*p) return NULL;
        sl_pool_ref(*p);
    }
    return *p;
}

/* The statement text a Query, Parse or Bind stands for; NULL when it has
 * none (or one sluice cannot know). */
static const char *message_sql(sl_client_t *c, uint8_t t, const char *body, size_t n,
                               bool parse_seen, bool *unknown) {
    *unknown = true;
    if (t == 'Q') {
        if (n == 0 || body[n - 1] != '\0') return NULL;
        *unknown = false;
        return body;
    }
    const char *name_end = memchr(body, '\0', n);
    if (!name_end) return NULL;
    if (t == 'P') {
        const char *q = name_end + 1;
        if (q >= body + n || !memchr(q, '\0', (size_t)(body + n - q))) return NULL;
        *unknown = false;
        return q;
    }
    *unknown = false;
    if (t != 'B') return NULL;
    /* Bind: portal name, then statement name. */
    const char *stmt = name_end + 1;
    if (stmt >= body + n || !memchr(stmt, '\0', (size_t)(body + n - stmt))) {
        *unknown = true;
        return NULL;
    }
    sl_stmt_t *st = *stmt ? sl_stmt_names_get(&c->stmt_names, stmt) : NULL;
    if (st) return (const char *)st->body;
    /* The unnamed statement, or one named in this same batch: its Parse
     * was looked at already. Otherwise sluice cannot tell. */
    *unknown = !parse_seen;
    return NULL;
}

/* Read or write for every complete request waiting in the client's buffer:
 * a read only if all of them are reads. */
static int classify_pending(sl_client_t *c, uint32_t from) {
    const sl_config_t *cfg = c->w->cfg;
    const uint8_t *p = c->a->in.data + from, *end = c->a->in.data + c->a->in.tail;
    bool any = false, write = false, parse_seen = false;
    enum sl_sql_hint hint = SL_HINT_NONE;
    while (end - p >= 5) {
        uint8_t t = p[0];
        uint32_t len = sl_be32(p + 1);
        if (len < 4) return WRITE;
        if ((uint64_t)(end - p) < 1 + (uint64_t)len) {
            /* One that can never be whole in the buffer streams through
             * unexamined: the primary takes it. */
            if (1 + (uint64_t)len > c->a->in.cap - 5) return WRITE;
            if (t == 'Q' || t == 'P' || t == 'B') return NEED_MORE;
            break;
        }
        const char *body = (const char *)p + 5;
        size_t n = len - 4;
        bool unknown;
        const char *sql = NULL;
        switch (t) {
        case 'Q':
        case 'P':
        case 'B':
            sql = message_sql(c, t, body, n, parse_seen, &unknown);
            break;
        case 'S':
        case 'H':
        case 'D':
        case 'E':
        case 'C':
        case SL_MSG_DEALLOCATE:
        case SL_MSG_REFUSED:
            unknown = false;
            break;
        default:
            unknown = true; /* FunctionCall and anything else: the primary */
        }
        if (t == 'P') parse_seen = true;
        if (unknown) write = true;
        if (sql) {
            sl_sql_info_t info;
            sl_sql_classify(c->w->sql_cache, sql, cfg->write_functions, cfg->stateless_functions,
                            &info);
            any = true;
            if (hint == SL_HINT_NONE) hint = info.hint;
            if (!info.read_only || (info.begin && !info.begin_read_only)) write = true;
        }
        p += 1 + len;
    }
    if (hint == SL_HINT_PRIMARY) return WRITE;
    if (hint == SL_HINT_REPLICA) return READ_HINTED;
    return write || !any ? WRITE : READ;
}

/* Starts a transaction on backend b (counted in the stats unless it is a
 * retry of one already counted). */
static void queue_on(sl_client_t *c, int b, bool write, bool retry) {
    sl_route_t *r = c->route;
    sl_stats_t *st = &c->w->stats;
    if (retry)
        st->read_retries++, r->read_retries++;
    else if (write)
        st->routed_write++, r->routed_write++;
    else if (b == r->writer)
        st->routed_primary_read++, r->routed_primary_read++;
    else
        st->routed_replica++, r->routed_replica++;
    if (write)
        r->b[b].routed_writes++;
    else
        r->b[b].routed_reads++;
    c->tx_backend = b;
    c->tx_write = write && b == r->writer;
    /* The loop's clock of this phase, which the relay's own timings read
     * too: no clock read of its own per transaction. */
    c->rt->tx_start_us = sl_now_us(c->w);
    sl_route_begin(r, b);
}

/* The backend a login is served by: the one a first transaction would go
 * to, else any that is up (a login only needs some backend to say hello). */
static int login_backend(sl_route_t *r, sl_fence_t *fence) {
    bool write = r->routing != SL_ROUTE_REPLICA;
    int b = sl_route_pick(r, write, fence, -1);
    return b >= 0 ? b : sl_route_pick(r, !write, fence, -1);
}

sl_pool_t *sl_router_login_pool(sl_client_t *c) {
    sl_route_t *r = c->route;
    if (!r) return c->pool;
    int b = login_backend(r, NULL); /* a fresh client has no fence */
    return b >= 0 ? backend_pool(c, b) : NULL;
}

int sl_router_request(sl_client_t *c) {
    sl_route_t *r = c->route;
    sl_pool_t *p = c->pool;
    if (r) {
        int routing = r->routing;
        bool login = c->state == SL_CL_LOGIN_WAIT;
        bool session = sl_client_mode(c) == SL_POOL_SESSION;
        bool write = routing != SL_ROUTE_REPLICA;
        bool hinted = false, wants_write = false;
        /* What is in the buffer now is looked at here, as one request. */
        c->rt->new_request = SL_ROUTER_NO_NEW;
        if (routing != SL_ROUTE_PRIMARY && !login && !session) {
            int k = classify_pending(c, c->a->in.head);
            if (k == NEED_MORE) return 0;
            wants_write = k == WRITE;
            hinted = k == READ_HINTED;
            if (routing == SL_ROUTE_AUTO) write = wants_write;
        }
        sl_fence_t *fence = c->w->cfg->read_your_writes && !hinted ? &c->rt->fence : NULL;
        int b = login ? login_backend(r, fence) : sl_route_pick(r, write, fence, -1);
        /* A read-only alias whose replicas are all out reads from the
         * primary, but never writes there. */
        if (routing == SL_ROUTE_REPLICA && wants_write && b >= 0 && b == r->writer) {
            char msg[300];
            snprintf(msg, sizeof msg,
                     "database \"%s\" is read-only (routing = replica) and no replica is up "
                     "to run this; it is not sent to the primary",
                     c->dbname);
            if (!sl_scan_at_boundary(&c->a->scan))
                sl_session_fail(c, "25006", "%s", msg);
            else
                sl_client_abort_requests(c, "25006", msg);
            return -1;
        }
        if (b < 0) {
            char msg[400];
            if (write)
                snprintf(msg, sizeof msg,
                         "no primary is available for database \"%s\": %s is down and no "
                         "replica has been promoted; retry later",
                         c->dbname, r->b[0].addr);
            else
                snprintf(msg, sizeof msg,
                         "no backend is available for database \"%s\": the primary and every "
                         "replica are down or lagging; retry later",
                         c->dbname);
            /* An error can only answer whole requests. */
            if (login || !sl_scan_at_boundary(&c->a->scan)) {
                sl_session_fail(c, "57P03", "%s", msg);
            } else {
                sl_log_warn(sl_client_tag(c), "%s refused: no backend can take it",
                            write ? "write" : "read");
                sl_client_abort_requests(c, "57P03", msg);
            }
            return -1;
        }
        p = backend_pool(c, b);
        if (!p) {
            sl_session_fail(c, "53200", "out of memory");
            return -1;
        }
        if (!login || session) queue_on(c, b, write, false);
    }
    c->wait_pool = p;
    sl_pool_request(p, &c->waiter);
    return 1;
}

static bool on_replica_read(const sl_client_t *c) {
    return c->route && c->tx_backend >= 0 && !c->tx_write && c->tx_backend != c->route->writer &&
           sl_client_mode(c) != SL_POOL_SESSION;
}

void sl_router_scanned_start(sl_client_t *c, uint32_t off) {
    if (c->rt->new_request == SL_ROUTER_NO_NEW) c->rt->new_request = off;
}

void sl_router_guard(sl_client_t *c) {
    uint32_t from = c->rt->new_request;
    c->rt->new_request = SL_ROUTER_NO_NEW;
    if (from == SL_ROUTER_NO_NEW || c->barrier || !on_replica_read(c) || c->pins ||
        from >= c->a->in.tail)
        return;
    if (c->route->routing != SL_ROUTE_AUTO) return;
    int k = classify_pending(c, from);
    if (k == READ || k == READ_HINTED) return;
    c->barrier = true;
    c->a->barrier_off = from;
}

int sl_router_held_pending(const sl_client_t *c) {
    if (!c->barrier) return 0;
    int n = 0;
    const uint8_t *p = c->a->in.data + c->a->barrier_off, *end = c->a->in.data + c->a->in.tail;
    while (end - p >= 5) {
        /* What the scan counted in c->a->pending (a Query answered by sluice
         * as DEALLOCATE was a Query then). */
        if (p[0] == 'Q' || p[0] == 'S' || p[0] == 'F' || p[0] == SL_MSG_DEALLOCATE) n++;
        uint64_t len = 1 + (uint64_t)sl_be32(p + 1);
        if ((uint64_t)(end - p) < len) break;
        p += len;
    }
    return n;
}

void sl_router_forget_replay(sl_client_t *c) {
    c->tx_kept = false;
    if (c->rt) sl_buf_give(&c->w->bufs, &c->rt->replay);
}

void sl_router_linked(sl_client_t *c) {
    c->tx_replied = false;
    sl_router_forget_replay(c);
    sl_route_t *r = c->route;
    int b = c->tx_backend;
    uint32_t n = sl_buf_len(&c->a->in);
    /* Only a whole request that fits one buffer: then it can be put back. */
    /* Nor when requests wait behind the barrier: they are not the read's. */
    if (!r || b < 0 || c->tx_write || b == r->writer || n == 0 || c->holding || c->barrier ||
        !sl_scan_at_boundary(&c->a->scan) || sl_client_mode(c) == SL_POOL_SESSION)
        return;
    sl_buf_t *kept = &c->rt->replay;
    if (n > c->w->bufs.size || sl_buf_take(&c->w->bufs, kept) != SL_OK) return;
    memcpy(kept->data, sl_buf_rptr(&c->a->in), n);
    kept->tail = n;
    c->tx_kept = true;
}

/* The transaction in flight is over on its backend (latency to the EWMA). */
static void end_tx(sl_client_t *c) {
    int b = c->tx_backend;
    c->tx_backend = -1;
    sl_route_end(c->route, b, sl_now_us(c->w) - c->rt->tx_start_us);
}

/* Moves the client's read off its backend, which failed (what, why), to
 * another one, once. Returns the pool it is to be queued on, or NULL when
 * it may not move (a write, already moved) or nothing else can take it. */
static sl_pool_t *move_read(sl_client_t *c, const char *what, const char *why) {
    sl_route_t *r = c->route;
    int b = c->tx_backend;
    sl_route_check_failed(r, b, why);
    if (c->tx_write || b == r->writer || c->tx_retried) return NULL;
    int nb = sl_route_pick(r, false, c->w->cfg->read_your_writes ? &c->rt->fence : NULL, b);
    sl_pool_t *p = nb >= 0 && nb != b ? backend_pool(c, nb) : NULL;
    if (!p) return NULL;
    end_tx(c);
    sl_log_info(sl_client_tag(c), "%s %s (%s): its read goes to %s instead", r->b[b].addr, what,
                why, r->b[nb].addr);
    queue_on(c, nb, false, true);
    c->tx_retried = true;
    c->wait_pool = p;
    return p;
}

bool sl_router_replay(sl_client_t *c, const char *why) {
    if (!c->tx_kept || c->tx_replied || c->tx_backend < 0 || c->pins || c->server_error)
        return false;
    sl_pool_t *p = move_read(c, "went away before answering", why);
    if (!p) return false;
    /* What is left of the request in the buffer is a tail of the copy. */
    memcpy(c->a->in.data, c->rt->replay.data, c->rt->replay.tail);
    c->a->in.head = 0;
    c->a->in.tail = c->rt->replay.tail;
    sl_router_forget_replay(c);
    sl_client_set_state(c, SL_CL_WAITING);
    sl_client_update_poll(c);
    sl_pool_request(p, &c->waiter);
    return true;
}

void sl_router_done(sl_client_t *c) {
    sl_router_forget_replay(c);
    c->tx_retried = false;
    if (c->tx_backend < 0 || !c->route) return;
    end_tx(c);
    /* Read-your-writes: from now on, this client's reads need replicas
     * that replayed the primary's WAL up to a position read after this
     * commit. */
    if (c->tx_write && c->w->cfg->read_your_writes) sl_route_fence_mark(c->route, &c->rt->fence);
}

bool sl_router_retry(sl_client_t *c, const char *err) {
    /* Only a backend that could not be reached counts (and a refused
     * connection as a failed check); a full pool (query_wait_timeout) is
     * no failure of the backend. */
    if (!c->route || c->tx_backend < 0 ||
        strncmp(err, SL_POOL_LOGIN_FAILED, strlen(SL_POOL_LOGIN_FAILED)) != 0)
        return false;
    sl_pool_t *p = move_read(c, "could not be reached", err);
    if (!p) return false;
    sl_pool_request(p, &c->waiter);
    return true;
}
