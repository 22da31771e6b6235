/* /metrics in the Prometheus text exposition format 0.0.4, and the health
 * verdicts of /health (see expose.h).
 *
 * A scrape first copies what it reports (sl_expose_snapshot): the numbers
 * of every pool, backend and database, in one pass on the loop, so that
 * they are consistent with each other. The text is then written from that
 * copy in pieces of at most the connection's buffer, as the socket drains:
 * the pools may change or go away meanwhile, the copy does not. Memory is
 * one copy per scrape in flight (about 1 KiB per pool) plus one buffer per
 * connection, never the whole text.
 *
 * With several workers the copy is taken with every worker frozen
 * (workers.h) and covers them all: a pool or backend present on several
 * loops is one series, its numbers summed.
 *
 * Names: sluice_*, counters end in _total, times are seconds. Labels:
 * database (the name clients connect to), user, backend (host:port),
 * role (primary or replica, as the health checks last saw it). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expose.h"
#include "sluice/config.h"
#include "sluice/ledger.h"
#include "sluice/pool.h"
#include "sluice/route.h"
#include "sluice/server.h"
#include "sluice/session.h"
#include "sluice/utf8.h"
#include "sluice/workers.h"

/* Label values longer than this are cut (database and user names are at
 * most 63 bytes in PostgreSQL; backend lists can be longer). It keeps every
 * line, and so every item below, a bounded size. */
#define LABEL_MAX 256

typedef struct pool_snap {
    char *db, *user;            /* owned copies */
    const void *lp;             /* its ledger entry (one per database, user and backend) */
    char backend[LABEL_MAX];    /* host:port */
    const char *role;           /* static: "primary" or "replica" */
    int servers[SL_SV_NSTATES]; /* by state; CLOSING stays 0 (those left the pool) */
    int size, min_size, reserve_size;
    int n_waiting, n_clients;
    double maxwait_s;      /* age of the oldest waiter, 0 without */
    bool login_failing;    /* the last backend login failed and none worked since */
    bool unreachable;      /* a primary pool of a database without replicas whose last login
                              failed for want of an answer (primary_unreachable) */
    sl_pool_stats_t stats; /* its counters and histograms */
} pool_snap_t;

typedef struct backend_snap {
    char *db;             /* owned copy */
    char addr[LABEL_MAX]; /* host:port */
    const char *role;     /* static */
    bool up, lagging;
    uint64_t lag_bytes; /* behind the writer; 0 for the writer or when unknown */
    double lag_s;       /* replay delay the standby reports */
    int outstanding;    /* transactions in flight */
    double latency_s;   /* EWMA of transactions and checks */
    int failures;       /* failed checks in a row */
} backend_snap_t;

/* Pools of one database: pools[first .. first+n) after sorting. */
typedef struct db_snap {
    size_t first, n;
    bool primary_up;
    sl_pool_stats_t stats; /* summed over its pools (for the histograms) */
} db_snap_t;

struct sl_expose {
    int64_t start_s;
    bool accepting;
    int clients[SL_CL_NSTATES];
    int max_client_conn;
    int servers_closing;
    sl_stats_t stats;
    pool_snap_t *pools; /* owned, sorted by database, user, backend */
    size_t npools;
    db_snap_t *dbs; /* owned */
    size_t ndbs;
    backend_snap_t *backends; /* owned */
    size_t nbackends;
    /* where the text stopped: family, then item within it; header: the
     * family's HELP and TYPE lines are out */
    size_t fam, item;
    bool header;
};

/* ---- writing lines ---- */

typedef struct out {
    char *p;
    size_t len, cap;
    bool full; /* a write did not fit: the item is redone in the next piece */
} out_t;

static void put(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out_t *o, const char *fmt, ...) {
    if (o->full) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len)
        o->full = true;
    else
        o->len += (size_t)n;
}

/* A label value as the format wants it: backslash, double quote and line
 * feed escaped; cut at LABEL_MAX bytes of input. */
static const char *esc(const char *in, char *out, size_t cap) {
    size_t o = 0, n = strnlen(in, LABEL_MAX);
    for (size_t i = 0; i < n && o + 3 < cap;) {
        /* Names come from clients (the '*' entry makes a pool of any
         * database name): a byte that is not part of a well-formed
         * character becomes '?', and a cut never splits one, since
         * Prometheus refuses the whole scrape for a label that is not
         * UTF-8. */
        int k = sl_utf8_char_len((const unsigned char *)in + i, n - i);
        if (k > 1) {
            if (o + (size_t)k + 1 > cap) break;
            memcpy(out + o, in + i, (size_t)k);
            o += (size_t)k, i += (size_t)k;
            continue;
        }
        char c = k ? in[i] : '?';
        i++;
        if (c == '\\' || c == '"' || c == '\n') {
            out[o++] = '\\';
            c = c == '\n' ? 'n' : c;
        }
        out[o++] = c;
    }
    out[o] = '\0';
    return out;
}

#define ESC_CAP (2 * LABEL_MAX + 4)

/* The four labels of a pool's series. */
static void pool_labels(const pool_snap_t *p, char *buf, size_t cap) {
    char d[ESC_CAP], u[ESC_CAP], b[ESC_CAP];
    snprintf(buf, cap, "database=\"%s\",user=\"%s\",backend=\"%s\",role=\"%s\"",
             esc(p->db, d, sizeof d), esc(p->user, u, sizeof u), esc(p->backend, b, sizeof b),
             p->role);
}

#define LABELS_CAP (4 * ESC_CAP + 64)

/* ---- families ---- */

typedef struct family {
    const char *name, *type, *help;
    size_t (*count)(const sl_expose_t *e);
    /* Writes item i's lines (none is fine). */
    void (*emit)(const sl_expose_t *e, const struct family *f, size_t i, out_t *o);
} family_t;

static size_t one(const sl_expose_t *e) {
    (void)e;
    return 1;
}
static size_t npools(const sl_expose_t *e) {
    return e->npools;
}
static size_t ndbs(const sl_expose_t *e) {
    return e->ndbs;
}
static size_t nbackends(const sl_expose_t *e) {
    return e->nbackends;
}

static void emit_info(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    (void)e, (void)i;
    put(o, "%s{version=\"%s\"} 1\n", f->name, SLUICE_VERSION);
}

static void emit_up(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    (void)i;
    put(o, "%s %d\n", f->name, e->accepting ? 1 : 0);
}

static void emit_start(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    (void)i;
    put(o, "%s %lld\n", f->name, (long long)e->start_s);
}

static void emit_clients(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    (void)i;
    for (int st = 0; st < SL_CL_NSTATES; st++)
        put(o, "%s{state=\"%s\"} %d\n", f->name, sl_client_state_names[st], e->clients[st]);
}

static void emit_client_limit(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    (void)i;
    put(o, "%s %d\n", f->name, e->max_client_conn);
}

static void emit_servers_closing(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    (void)i;
    put(o, "%s %d\n", f->name, e->servers_closing);
}

static void emit_servers(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    const pool_snap_t *p = &e->pools[i];
    char l[LABELS_CAP];
    pool_labels(p, l, sizeof l);
    for (int st = 0; st < SL_SV_CLOSING; st++)
        put(o, "%s{%s,state=\"%s\"} %d\n", f->name, l, sl_server_state_names[st], p->servers[st]);
}

/* Pool gauges: one family per field, by offset into pool_snap_t. */
#define POOL_INT(field)                                                                            \
    static void emit_##field(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {        \
        char l[LABELS_CAP];                                                                        \
        pool_labels(&e->pools[i], l, sizeof l);                                                    \
        put(o, "%s{%s} %d\n", f->name, l, (int)e->pools[i].field);                                 \
    }
POOL_INT(size)
POOL_INT(min_size)
POOL_INT(reserve_size)
POOL_INT(n_waiting)
POOL_INT(n_clients)
POOL_INT(login_failing)

/* Counters of a pool, by offset into sl_pool_stats_t; times in
 * microseconds are written as seconds. */
#define POOL_COUNTER(fname, field)                                                                 \
    static void emit_##fname(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {        \
        char l[LABELS_CAP];                                                                        \
        pool_labels(&e->pools[i], l, sizeof l);                                                    \
        put(o, "%s{%s} %llu\n", f->name, l, (unsigned long long)e->pools[i].stats.field);          \
    }
#define POOL_SECONDS(fname, field)                                                                 \
    static void emit_##fname(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {        \
        char l[LABELS_CAP];                                                                        \
        pool_labels(&e->pools[i], l, sizeof l);                                                    \
        put(o, "%s{%s} %.6f\n", f->name, l, (double)e->pools[i].stats.field / 1e6);                \
    }
POOL_COUNTER(assignments, server_assignment_count)
POOL_COUNTER(xacts, xact_count)
POOL_COUNTER(queries, query_count)
POOL_COUNTER(bytes_received, bytes_received)
POOL_COUNTER(bytes_sent, bytes_sent)
POOL_SECONDS(xact_time, xact_time_us)
POOL_SECONDS(query_time, query_time_us)
POOL_SECONDS(wait_time, wait_time_us)
POOL_COUNTER(client_parses, client_parse_count)
POOL_COUNTER(server_parses, server_parse_count)
POOL_COUNTER(binds, bind_count)
POOL_COUNTER(logins, client_login_count)

/* A database's histogram: the buckets sluice keeps are per range, the
 * format's are cumulative (le: at most that many seconds). */
static void emit_hist(const family_t *f, const char *db, const sl_hist_t *h, out_t *o) {
    char d[ESC_CAP];
    esc(db, d, sizeof d);
    uint64_t cum = 0;
    for (int b = 0; b < SL_HIST_NBUCKETS; b++) {
        cum += h->bucket[b];
        put(o, "%s_bucket{database=\"%s\",le=\"%.9g\"} %llu\n", f->name, d,
            (double)sl_hist_bounds_us[b] / 1e6, (unsigned long long)cum);
    }
    put(o, "%s_bucket{database=\"%s\",le=\"+Inf\"} %llu\n", f->name, d,
        (unsigned long long)h->count);
    put(o, "%s_sum{database=\"%s\"} %.6f\n", f->name, d, (double)h->sum_us / 1e6);
    put(o, "%s_count{database=\"%s\"} %llu\n", f->name, d, (unsigned long long)h->count);
}

static void emit_query_hist(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    emit_hist(f, e->pools[e->dbs[i].first].db, &e->dbs[i].stats.query_hist, o);
}

static void emit_wait_hist(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    emit_hist(f, e->pools[e->dbs[i].first].db, &e->dbs[i].stats.wait_hist, o);
}

/* ErrorResponses sent to clients by SQLSTATE class, logins included. */
static void emit_errors(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    (void)i;
    for (int k = 0; k < SL_ERR_NCLASSES; k++)
        put(o, "%s{class=\"%s\"} %llu\n", f->name, sl_err_class_names[k],
            (unsigned long long)e->stats.errors[k]);
}

static void emit_maxwait(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    char l[LABELS_CAP];
    pool_labels(&e->pools[i], l, sizeof l);
    put(o, "%s{%s} %.6f\n", f->name, l, e->pools[i].maxwait_s);
}

static void emit_primary_up(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    char d[ESC_CAP];
    put(o, "%s{database=\"%s\"} %d\n", f->name, esc(e->pools[e->dbs[i].first].db, d, sizeof d),
        e->dbs[i].primary_up ? 1 : 0);
}

/* Backends of databases with replicas (health-checked). */
static void backend_labels(const backend_snap_t *b, char *buf, size_t cap) {
    char d[ESC_CAP], a[ESC_CAP];
    snprintf(buf, cap, "database=\"%s\",backend=\"%s\",role=\"%s\"", esc(b->db, d, sizeof d),
             esc(b->addr, a, sizeof a), b->role);
}

#define BACKEND_VAL(fname, fmt, expr)                                                              \
    static void emit_##fname(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {        \
        const backend_snap_t *b = &e->backends[i];                                                 \
        char l[LABELS_CAP];                                                                        \
        backend_labels(b, l, sizeof l);                                                            \
        put(o, "%s{%s} " fmt "\n", f->name, l, expr);                                              \
    }
BACKEND_VAL(backend_up, "%d", b->up ? 1 : 0)
BACKEND_VAL(backend_lagging, "%d", b->lagging ? 1 : 0)
BACKEND_VAL(lag_bytes, "%llu", (unsigned long long)b->lag_bytes)
BACKEND_VAL(lag_seconds, "%.6f", b->lag_s)
BACKEND_VAL(outstanding, "%d", b->outstanding)
BACKEND_VAL(latency, "%.6f", b->latency_s)
BACKEND_VAL(failures, "%d", b->failures)

/* Counters of the whole loop that no pool has. */
static void emit_routed(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    (void)i;
    put(o, "%s{target=\"replica\"} %llu\n", f->name, (unsigned long long)e->stats.routed_replica);
    put(o, "%s{target=\"primary_read\"} %llu\n", f->name,
        (unsigned long long)e->stats.routed_primary_read);
    put(o, "%s{target=\"write\"} %llu\n", f->name, (unsigned long long)e->stats.routed_write);
}

#define LOOP_COUNTER(fname, field)                                                                 \
    static void emit_##fname(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {        \
        (void)i;                                                                                   \
        put(o, "%s %llu\n", f->name, (unsigned long long)e->stats.field);                          \
    }
LOOP_COUNTER(read_retries, read_retries)
LOOP_COUNTER(parse_answered, parse_answered)
LOOP_COUNTER(stmt_evicted, stmt_evicted)

static void emit_pins(const sl_expose_t *e, const family_t *f, size_t i, out_t *o) {
    (void)i;
    for (int r = 0; r < SL_PIN_NREASONS; r++)
        put(o, "%s{reason=\"%s\"} %llu\n", f->name, sl_pin_reason_names[r],
            (unsigned long long)e->stats.pins[r]);
}

static const family_t families[] = {
    {"sluice_info", "gauge", "Always 1; the version label says which sluice answers.", one,
     emit_info},
    {"sluice_up", "gauge", "1 while sluice accepts new clients, 0 once it is shutting down.", one,
     emit_up},
    {"sluice_start_time_seconds", "gauge", "When this sluice process started (Unix time).", one,
     emit_start},
    {"sluice_clients", "gauge", "Client connections by state.", one, emit_clients},
    {"sluice_max_client_connections", "gauge", "max_client_conn: the most clients accepted.", one,
     emit_client_limit},
    {"sluice_servers", "gauge", "Backend connections of each pool by state.", npools, emit_servers},
    {"sluice_servers_closing", "gauge", "Backend connections being closed.", one,
     emit_servers_closing},
    {"sluice_pool_size", "gauge", "Backend connections a pool may open (pool_size).", npools,
     emit_size},
    {"sluice_pool_min_size", "gauge", "Backend connections a pool keeps open (min_pool_size).",
     npools, emit_min_size},
    {"sluice_pool_reserve_size", "gauge",
     "Extra connections a pool may open for clients waiting reserve_pool_timeout.", npools,
     emit_reserve_size},
    {"sluice_pool_waiting_clients", "gauge", "Clients waiting for a backend connection.", npools,
     emit_n_waiting},
    {"sluice_pool_max_wait_seconds", "gauge",
     "How long the oldest client waiting for a backend connection has waited.", npools,
     emit_maxwait},
    {"sluice_pool_clients", "gauge", "Clients logged in to the pool's database as its user.",
     npools, emit_n_clients},
    {"sluice_pool_login_failing", "gauge",
     "1 when the pool's last backend login failed and none has worked since.", npools,
     emit_login_failing},
    {"sluice_server_assignments_total", "counter",
     "Times a client was given a backend connection of the pool.", npools, emit_assignments},
    {"sluice_transactions_total", "counter", "Transactions ended through the pool.", npools,
     emit_xacts},
    {"sluice_queries_total", "counter",
     "Requests of the pool's clients answered (one per ReadyForQuery).", npools, emit_queries},
    {"sluice_received_bytes_total", "counter", "Bytes read from the pool's clients.", npools,
     emit_bytes_received},
    {"sluice_sent_bytes_total", "counter", "Bytes written to the pool's clients.", npools,
     emit_bytes_sent},
    {"sluice_transaction_time_seconds_total", "counter",
     "Time from the first request of each transaction to its end.", npools, emit_xact_time},
    {"sluice_query_time_seconds_total", "counter",
     "Time from each request on a server to its ReadyForQuery.", npools, emit_query_time},
    {"sluice_wait_time_seconds_total", "counter", "Time clients waited for a backend connection.",
     npools, emit_wait_time},
    {"sluice_client_parses_total", "counter", "Parse messages from the pool's clients.", npools,
     emit_client_parses},
    {"sluice_server_parses_total", "counter", "Parse messages sent to the pool's servers.", npools,
     emit_server_parses},
    {"sluice_binds_total", "counter", "Bind messages from the pool's clients.", npools, emit_binds},
    {"sluice_client_logins_total", "counter", "Client logins completed.", npools, emit_logins},
    {"sluice_query_duration_seconds", "histogram",
     "Time from a request on a server to its ReadyForQuery, per database.", ndbs, emit_query_hist},
    {"sluice_wait_duration_seconds", "histogram",
     "Time a client waited for a backend connection, per wait that got one, per database.", ndbs,
     emit_wait_hist},
    {"sluice_errors_total", "counter", "ErrorResponses sent to clients, by SQLSTATE class.", one,
     emit_errors},
    {"sluice_database_primary_up", "gauge",
     "1 when the database's primary answers (health checks, or its last login worked).", ndbs,
     emit_primary_up},
    {"sluice_backend_up", "gauge", "1 while a health-checked backend is admitted.", nbackends,
     emit_backend_up},
    {"sluice_backend_lagging", "gauge",
     "1 while a replica is too far behind for reads (max_replica_lag, max_replica_lag_time).",
     nbackends, emit_backend_lagging},
    {"sluice_replica_lag_bytes", "gauge", "WAL bytes a replica's replay is behind the primary.",
     nbackends, emit_lag_bytes},
    {"sluice_replica_lag_seconds", "gauge", "Replay delay a replica reports.", nbackends,
     emit_lag_seconds},
    {"sluice_backend_transactions_in_flight", "gauge", "Transactions running on the backend.",
     nbackends, emit_outstanding},
    {"sluice_backend_latency_seconds", "gauge",
     "Weighted average latency of the backend's transactions and health checks.", nbackends,
     emit_latency},
    {"sluice_backend_failed_checks", "gauge", "Health checks of the backend failed in a row.",
     nbackends, emit_failures},
    {"sluice_routed_transactions_total", "counter",
     "Transactions of databases with replicas by where they went.", one, emit_routed},
    {"sluice_read_retries_total", "counter",
     "Reads moved to another backend after their first one failed.", one, emit_read_retries},
    {"sluice_pinned_clients_total", "counter",
     "Clients pinned to their server by session state, by what made it.", one, emit_pins},
    {"sluice_parses_answered_total", "counter",
     "Client Parse messages sluice answered itself (statement already prepared).", one,
     emit_parse_answered},
    {"sluice_server_statements_evicted_total", "counter",
     "Prepared statements closed on servers to stay within max_prepared_statements.", one,
     emit_stmt_evicted},
};
#define NFAMILIES (sizeof families / sizeof *families)

size_t sl_expose_next(sl_expose_t *e, char *buf, size_t cap) {
    out_t o = {.p = buf, .cap = cap};
    while (e->fam < NFAMILIES) {
        const family_t *f = &families[e->fam];
        size_t mark = o.len;
        if (!e->header) {
            put(&o, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
            if (o.full) break;
            e->header = true;
            continue;
        }
        if (e->item >= f->count(e)) {
            e->fam++, e->item = 0, e->header = false;
            continue;
        }
        f->emit(e, f, e->item, &o);
        if (o.full && mark == 0) {
            /* Larger than a whole piece: cannot happen with LABEL_MAX and
             * the families above; skipped rather than ending the text. */
            o.full = false, o.len = 0;
        } else if (o.full) {
            o.len = mark; /* redone whole in the next piece */
            break;
        }
        e->item++;
    }
    return o.len;
}

/* ---- the copy ---- */

static const sl_route_t *find_route(const sl_loop_t *l, const char *db) {
    for (const sl_list_t *it = l->routes.next; it != &l->routes; it = it->next) {
        const sl_route_t *r = sl_container_of(it, sl_route_t, node);
        if (!r->retired && strcmp(r->db, db) == 0) return r;
    }
    return NULL;
}

/* host:port of backend i of db as the config says (route.c does the same
 * for routed databases, whose addresses the route keeps). */
static void config_addr(const sl_config_t *cfg, const char *db, int i, char *buf, size_t cap) {
    bool automatic;
    const sl_db_cfg_t *d = sl_config_serving_db(cfg, db, &automatic);
    if (!d) {
        snprintf(buf, cap, "unknown");
    } else if (i == 0) {
        const char *host = sl_db_cfg_get(d, "host"), *port = sl_db_cfg_get(d, "port");
        snprintf(buf, cap, "%s:%s", host ? host : "localhost", port ? port : "5432");
    } else if (i <= d->nreplicas) {
        snprintf(buf, cap, "%.200s:%d", d->replicas[i - 1].host, d->replicas[i - 1].port);
    } else {
        snprintf(buf, cap, "replica %d", i);
    }
}

/* A backend login failure that says the backend does not answer: a
 * refused or reset connection, a timeout, a server starting or shutting
 * down. A permanent one (wrong password, no such database) comes from a
 * primary that answers. */
static bool primary_unreachable(const sl_pool_t *p) {
    return p->backend == 0 && p->login_fail_ms != 0 && !p->fail_permanent;
}

static int copy_pool(pool_snap_t *s, const sl_pool_t *p, const sl_loop_t *l, int64_t now_ms) {
    s->db = strdup(p->db_alias);
    s->user = strdup(p->user);
    if (!s->db || !s->user) return SL_ENOMEM;
    s->lp = p->lp;
    const sl_route_t *r = find_route(l, p->db_alias);
    if (r && p->backend < r->n)
        snprintf(s->backend, sizeof s->backend, "%.255s", r->b[p->backend].addr);
    else
        config_addr(l->cfg, p->db_alias, p->backend, s->backend, sizeof s->backend);
    s->role = sl_route_backend_role(r, p->backend);
    for (int st = 0; st < SL_SV_CLOSING; st++)
        s->servers[st] = sl_pool_count(p, (enum sl_server_state)st);
    s->size = p->size, s->min_size = p->min_size, s->reserve_size = p->reserve_size;
    s->n_waiting = p->n_waiting, s->n_clients = p->n_clients;
    sl_list_t *first = sl_list_first(&p->waiting);
    if (first) {
        int64_t since = sl_container_of(first, sl_waiter_t, node)->since_ms;
        s->maxwait_s = now_ms > since ? (double)(now_ms - since) / 1000.0 : 0;
    }
    s->login_failing = p->login_fail_ms != 0;
    s->unreachable = !r && primary_unreachable(p);
    s->stats = p->stats;
    return SL_OK;
}

static int cmp_pool(const void *a, const void *b) {
    const pool_snap_t *x = a, *y = b;
    int c = strcmp(x->db, y->db);
    if (!c) c = strcmp(x->user, y->user);
    if (!c) c = strcmp(x->backend, y->backend);
    return c;
}

/* The same pool on another loop: its numbers go into the first copy. */
static void merge_pool(pool_snap_t *into, const pool_snap_t *p) {
    for (int st = 0; st < SL_SV_NSTATES; st++)
        into->servers[st] += p->servers[st];
    into->n_waiting += p->n_waiting, into->n_clients += p->n_clients;
    if (p->maxwait_s > into->maxwait_s) into->maxwait_s = p->maxwait_s;
    into->login_failing |= p->login_failing;
    into->unreachable |= p->unreachable;
    sl_pool_stats_add(&into->stats, &p->stats);
}

/* Sorted copies of one (database, user, backend) are merged into one. */
static void merge_pools(sl_expose_t *e) {
    size_t out = 0;
    for (size_t i = 0; i < e->npools; i++) {
        if (out > 0 && cmp_pool(&e->pools[out - 1], &e->pools[i]) == 0) {
            merge_pool(&e->pools[out - 1], &e->pools[i]);
            free(e->pools[i].db), free(e->pools[i].user);
            continue;
        }
        e->pools[out++] = e->pools[i];
    }
    e->npools = out;
}

/* A server on its way from one worker to another, under its pool. */
static void count_moving(sl_ledger_pool_t *lp, sl_list_t *node, void *arg) {
    sl_expose_t *e = arg;
    const sl_server_t *s = sl_container_of(node, sl_server_t, node);
    if (s->state >= SL_SV_CLOSING) return;
    for (size_t i = 0; i < e->npools; i++) {
        if (e->pools[i].lp == lp) {
            e->pools[i].servers[s->state]++;
            return;
        }
    }
}

static int copy_pools(sl_expose_t *e, sl_worker_t *w) {
    size_t n = 0;
    for (int k = 0; k < sl_workers_count(w); k++) {
        const sl_worker_t *o = sl_workers_at(w, k);
        if (!o) continue;
        for (const sl_list_t *it = o->core.pools.next; it != &o->core.pools; it = it->next)
            n++;
    }
    e->pools = calloc(n ? n : 1, sizeof *e->pools);
    e->dbs = calloc(n ? n : 1, sizeof *e->dbs);
    if (!e->pools || !e->dbs) return SL_ENOMEM;
    for (int k = 0; k < sl_workers_count(w); k++) {
        const sl_worker_t *o = sl_workers_at(w, k);
        if (!o) continue;
        const sl_loop_t *ol = &o->core;
        int64_t now = sl_now_ms(ol);
        for (const sl_list_t *it = ol->pools.next; it != &ol->pools; it = it->next) {
            const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
            if (copy_pool(&e->pools[e->npools++], p, ol, now) != SL_OK) return SL_ENOMEM;
        }
    }
    qsort(e->pools, e->npools, sizeof *e->pools, cmp_pool);
    merge_pools(e);
    /* Servers between two workers are on no loop's list (SHOW SERVERS). */
    if (w->core.ledger) sl_ledger_moving_walk(w->core.ledger, count_moving, e);
    const sl_loop_t *l = &w->core;
    /* Databases: runs of pools with one name; its primary is up unless its
     * route knows no writer or (without a route) a primary pool's logins
     * fail for want of an answer. */
    for (size_t i = 0; i < e->npools; i++) {
        if (i == 0 || strcmp(e->pools[i].db, e->pools[i - 1].db) != 0) {
            const sl_route_t *r = find_route(l, e->pools[i].db);
            e->dbs[e->ndbs++] = (db_snap_t){.first = i, .primary_up = !r || r->writer >= 0};
        }
        db_snap_t *d = &e->dbs[e->ndbs - 1];
        d->n++;
        if (e->pools[i].unreachable) d->primary_up = false;
        sl_pool_stats_add(&d->stats, &e->pools[i].stats);
    }
    /* Freed automatic pools' counts stay in their database's histograms. */
    for (int k = 0; k < sl_workers_count(w); k++) {
        const sl_worker_t *o = sl_workers_at(w, k);
        for (size_t i = 0; o && i < e->ndbs; i++) {
            const sl_pool_stats_t *gone =
                sl_pool_retired_stats(&o->core, e->pools[e->dbs[i].first].db);
            if (gone) sl_pool_stats_add(&e->dbs[i].stats, gone);
        }
    }
    return SL_OK;
}

/* A backend already copied from another loop's route of its database:
 * that copy, whose load takes this one's too. */
static backend_snap_t *backend_copied(sl_expose_t *e, const char *db, const char *addr) {
    for (size_t i = 0; i < e->nbackends; i++)
        if (!strcmp(e->backends[i].db, db) && !strcmp(e->backends[i].addr, addr))
            return &e->backends[i];
    return NULL;
}

static int copy_loop_backends(sl_expose_t *e, const sl_loop_t *l);

static int copy_backends(sl_expose_t *e, sl_worker_t *w) {
    size_t n = 0;
    for (int k = 0; k < sl_workers_count(w); k++) {
        const sl_worker_t *o = sl_workers_at(w, k);
        if (!o) continue;
        for (const sl_list_t *it = o->core.routes.next; it != &o->core.routes; it = it->next) {
            const sl_route_t *r = sl_container_of(it, sl_route_t, node);
            if (!r->retired) n += (size_t)r->n;
        }
    }
    e->backends = calloc(n ? n : 1, sizeof *e->backends);
    if (!e->backends) return SL_ENOMEM;
    for (int k = 0; k < sl_workers_count(w); k++) {
        const sl_worker_t *o = sl_workers_at(w, k);
        if (o && copy_loop_backends(e, &o->core) != SL_OK) return SL_ENOMEM;
    }
    return SL_OK;
}

static int copy_loop_backends(sl_expose_t *e, const sl_loop_t *l) {
    for (const sl_list_t *it = l->routes.next; it != &l->routes; it = it->next) {
        const sl_route_t *r = sl_container_of(it, sl_route_t, node);
        if (r->retired) continue;
        const sl_backend_t *w = r->writer >= 0 ? &r->b[r->writer] : NULL;
        for (int i = 0; i < r->n; i++) {
            const sl_backend_t *b = &r->b[i];
            backend_snap_t *had = backend_copied(e, r->db, b->addr);
            if (had) {
                had->outstanding += b->outstanding;
                continue;
            }
            backend_snap_t *s = &e->backends[e->nbackends++];
            if (!(s->db = strdup(r->db))) return SL_ENOMEM;
            snprintf(s->addr, sizeof s->addr, "%.255s", b->addr);
            s->role = sl_route_backend_role(r, i);
            s->up = b->up, s->lagging = b->lagging;
            /* As the route compares them: once both have answered a check. */
            if (w && b->in_recovery && b->checks_done > 0 && w->checks_done > 0 && w->lsn > b->lsn)
                s->lag_bytes = w->lsn - b->lsn;
            s->lag_s = b->lag_s;
            s->outstanding = b->outstanding;
            s->latency_s = b->ewma_us / 1e6;
            s->failures = b->failures;
        }
    }
    return SL_OK;
}

/* Adds b's counters to a: sl_stats_t is counters only. */
static void stats_add(sl_stats_t *a, const sl_stats_t *b) {
    _Static_assert(sizeof(sl_stats_t) % sizeof(uint64_t) == 0, "sl_stats_t is uint64_t only");
    uint64_t *x = (uint64_t *)a;
    const uint64_t *y = (const uint64_t *)b;
    for (size_t i = 0; i < sizeof *a / sizeof *x; i++)
        x[i] += y[i];
}

static sl_expose_t *snapshot(sl_worker_t *w, int64_t start_s) {
    const sl_loop_t *l = &w->core;
    sl_expose_t *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->start_s = start_s;
    e->accepting = !l->shutting_down && !l->draining && !w->stopping;
    e->max_client_conn = l->cfg->max_client_conn;
    for (int k = 0; k < sl_workers_count(w); k++) {
        const sl_worker_t *o = sl_workers_at(w, k);
        if (!o) continue;
        for (int st = 0; st < SL_CL_NSTATES; st++)
            e->clients[st] += o->core.nclients_in[st];
        e->servers_closing += o->core.nservers_closing;
        stats_add(&e->stats, &o->core.stats);
    }
    if (copy_pools(e, w) != SL_OK || copy_backends(e, w) != SL_OK) {
        sl_expose_free(e);
        return NULL;
    }
    return e;
}

sl_expose_t *sl_expose_snapshot(const sl_worker_t *cw, int64_t start_s) {
    sl_worker_t *w = (sl_worker_t *)cw; /* frozen, read only */
    sl_workers_freeze(w);
    sl_expose_t *e = snapshot(w, start_s);
    sl_workers_thaw(w);
    return e;
}

void sl_expose_free(sl_expose_t *e) {
    if (!e) return;
    for (size_t i = 0; i < e->npools; i++)
        free(e->pools[i].db), free(e->pools[i].user);
    for (size_t i = 0; i < e->nbackends; i++)
        free(e->backends[i].db);
    free(e->pools), free(e->dbs), free(e->backends);
    free(e);
}

/* ---- /health ---- */

/* Copies msg into out as one line: control bytes become spaces. */
static void one_line(char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void one_line(char *out, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = ' ';
}

static bool loop_healthy(const sl_loop_t *l, char *reason, size_t cap);

bool sl_expose_healthy(const sl_worker_t *cw, char *reason, size_t cap) {
    sl_worker_t *w = (sl_worker_t *)cw; /* frozen, read only */
    const sl_loop_t *l = &w->core;
    if (l->shutting_down || l->draining || w->stopping) {
        one_line(reason, cap, "shutting down: not accepting new clients");
        return false;
    }
    bool ok = true;
    sl_workers_freeze(w);
    for (int k = 0; k < sl_workers_count(w) && ok; k++) {
        const sl_worker_t *o = sl_workers_at(w, k);
        if (o) ok = loop_healthy(&o->core, reason, cap);
    }
    sl_workers_thaw(w);
    return ok;
}

/* The databases of one loop: each has a primary that answers. */
static bool loop_healthy(const sl_loop_t *l, char *reason, size_t cap) {
    for (const sl_list_t *it = l->routes.next; it != &l->routes; it = it->next) {
        const sl_route_t *r = sl_container_of(it, sl_route_t, node);
        if (!r->retired && r->writer < 0) {
            one_line(reason, cap, "database %.64s: no primary answers health checks (%s)", r->db,
                     r->b[0].addr);
            return false;
        }
    }
    for (const sl_list_t *it = l->pools.next; it != &l->pools; it = it->next) {
        const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        if (primary_unreachable(p) && !find_route(l, p->db_alias)) {
            char addr[LABEL_MAX];
            config_addr(l->cfg, p->db_alias, 0, addr, sizeof addr);
            one_line(reason, cap, "database %.64s: primary %.64s does not answer: %.160s",
                     p->db_alias, addr, p->last_error);
            return false;
        }
    }
    one_line(reason, cap, "ok");
    return true;
}
