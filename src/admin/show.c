/* SHOW: PgBouncer 1.25's result sets (column names, order and meaning;
 * see PGBOUNCER-COMPAT.md), with sluice's additions as extra columns at
 * the end, and SHOW REPLICAS / SHOW ROUTING of its own. Each is a walk
 * over the loop's lists (clients by state, pools and their servers by
 * state, routes) or over the running configuration: state is location, so
 * nothing here keeps counts of its own.
 *
 * Integers are int8 columns, SHOW STATS counters numeric (as PgBouncer
 * sends them), times of connections UTC timestamps.
 *
 * With several workers every SHOW covers all of them (the console froze
 * them for the Query): lists are walked loop after loop, and rows of one
 * pool, database or route on several loops are summed into one. */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "admin.h"
#include "sluice/control.h"
#include "sluice/ledger.h"
#include "sluice/pool.h"
#include "sluice/route.h"
#include "sluice/session.h"

#define T SL_RES_TEXT
#define I SL_RES_INT8
#define N SL_RES_NUMERIC
#define TS SL_RES_TIMESTAMP
#define NCOLS(a) ((int)(sizeof(a) / sizeof *(a)))

static sl_loop_t *core(sl_admin_ctx_t *ctx) {
    return &ctx->w->core;
}

/* The loop of worker i, or NULL when it has stopped. */
static sl_loop_t *loop_at(sl_admin_ctx_t *ctx, int i) {
    sl_worker_t *o = sl_workers_at(ctx->w, i);
    return o ? &o->core : NULL;
}

/* Runs body for l = each running worker's loop. */
#define EACH_LOOP(ctx, l)                                                                          \
    for (int l##_i = 0; l##_i < sl_workers_count((ctx)->w); l##_i++)                               \
        if (((l) = loop_at((ctx), l##_i)) != NULL)

/* ---- helpers ---- */

/* A pool of ledger entry e on any running loop (the same database, user
 * and backend on each), or NULL when no loop has one any more. */
static const sl_pool_t *pool_of_entry(sl_admin_ctx_t *ctx, const sl_ledger_pool_t *e) {
    sl_loop_t *l;
    EACH_LOOP(ctx, l) {
        for (const sl_list_t *it = l->pools.next; it != &l->pools; it = it->next) {
            const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
            if (p->lp == e) return p;
        }
    }
    return NULL;
}

/* A pool's libpq parameter (host, port, dbname, user), or NULL. */
static const char *pool_param(const sl_pool_t *p, const char *key) {
    for (int i = 0; p->keys && p->keys[i]; i++)
        if (strcmp(p->keys[i], key) == 0) return p->vals[i];
    return NULL;
}

static int pool_port(const sl_pool_t *p) {
    const char *v = pool_param(p, "port");
    return v ? atoi(v) : 5432;
}

/* Splits "addr:port" / "[v6]:port" / "unix" into its parts. */
static void split_peer(const char *peer, int unix_port, char *addr, size_t cap, int *port) {
    if (!strcmp(peer, "unix")) {
        snprintf(addr, cap, "unix");
        *port = unix_port;
        return;
    }
    const char *colon = strrchr(peer, ':');
    size_t n = colon ? (size_t)(colon - peer) : strlen(peer);
    if (n >= 2 && peer[0] == '[' && peer[n - 1] == ']') peer++, n -= 2;
    snprintf(addr, cap, "%.*s", (int)n, peer);
    *port = colon ? atoi(colon + 1) : 0;
}

static void local_addr(int fd, int unix_port, char *addr, size_t cap, int *port) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    /* No socket yet (a server still resolving its host): nothing to show. */
    snprintf(addr, cap, "%s", "");
    *port = 0;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) return;
    if (ss.ss_family == AF_UNIX) {
        snprintf(addr, cap, "unix");
        *port = unix_port;
    }
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, addr, (socklen_t)cap);
        *port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, addr, (socklen_t)cap);
        *port = ntohs(a->sin6_port);
    }
}

static void tls_text(const SSL *ssl, char *buf, size_t cap) {
    if (!ssl)
        buf[0] = '\0';
    else
        snprintf(buf, cap, "%s/%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
}

/* PgBouncer's names for client states (1.25: idle is its own state). */
static const char *client_state(const sl_client_info_t *ci) {
    switch (ci->state) {
    case SL_CL_LOGIN:
    case SL_CL_AUTH:
        return "login";
    case SL_CL_LOGIN_WAIT:
    case SL_CL_WAITING:
        return "waiting";
    case SL_CL_ACTIVE:
        return "active";
    default:
        return "idle";
    }
}

/* An idle server past server_check_delay needs its check before use:
 * PgBouncer's "used". */
static bool server_used(const sl_loop_t *l, const sl_server_t *s) {
    const sl_config_t *cfg = l->cfg;
    return s->state == SL_SV_IDLE && *cfg->server_check_query && !s->fresh &&
           sl_now_ms(l) - s->idle_since_ms >= cfg->server_check_delay_ms;
}

static const char *server_state(const sl_loop_t *l, const sl_server_t *s) {
    switch (s->state) {
    case SL_SV_RESOLVING:
    case SL_SV_CONNECTING:
        return "new";
    case SL_SV_QUERY:
        return "tested";
    case SL_SV_ACTIVE:
        return "active";
    case SL_SV_IDLE:
        return server_used(l, s) ? "used" : "idle";
    default:
        return "closing";
    }
}

static int pool_mode_of(const sl_pool_t *p) {
    return p->mode;
}

/* ---- SHOW POOLS ---- */

/* One row of SHOW POOLS: every pool of (database, user), replicas
 * included, summed (SHOW REPLICAS has them per backend). */
typedef struct pool_row {
    const char *db, *user; /* borrowed from the first pool */
    const sl_pool_t *first;
    int cl_active, cl_waiting;
    int sv_active, sv_idle, sv_used, sv_tested, sv_login;
    int64_t oldest_wait_ms; /* loop clock; 0: nobody waits */
    int pool_size;
} pool_row_t;

typedef struct pool_rows {
    pool_row_t *v;
    int n;
    int console_clients; /* the pgbouncer row's cl_active */
    bool oom;
} pool_rows_t;

static pool_row_t *find_row(pool_rows_t *rs, const char *db, const char *user) {
    for (int i = 0; i < rs->n; i++)
        if (!strcmp(rs->v[i].db, db) && !strcmp(rs->v[i].user, user)) return &rs->v[i];
    return NULL;
}

static void count_client(const sl_client_info_t *ci, void *arg) {
    pool_rows_t *rs = arg;
    if (ci->console) {
        rs->console_clients++;
        return;
    }
    if (!ci->pool) return; /* still logging in */
    pool_row_t *r = find_row(rs, ci->pool->db_alias, ci->pool->user);
    if (!r) return;
    /* 1.25's cl_active: linked to a server, or idle with nothing to run. */
    if (ci->state == SL_CL_ACTIVE || ci->state == SL_CL_IDLE) r->cl_active++;
    if (ci->state == SL_CL_WAITING || ci->state == SL_CL_LOGIN_WAIT) r->cl_waiting++;
}

static void collect_loop_pools(sl_loop_t *l, pool_rows_t *rs);

typedef struct moving_count {
    sl_admin_ctx_t *ctx;
    pool_rows_t *rs;
} moving_count_t;

/* A server on its way from one worker to another is idle (pool.c's
 * lp_send hands over idle servers only): counted under its pool's row. */
static void count_moving(sl_ledger_pool_t *e, sl_list_t *node, void *arg) {
    moving_count_t *mc = arg;
    const sl_pool_t *p = pool_of_entry(mc->ctx, e);
    pool_row_t *r = p ? find_row(mc->rs, p->db_alias, p->user) : NULL;
    if (!r) return; /* no pool of its entry left: it is closed as it lands */
    if (server_used(core(mc->ctx), sl_container_of(node, sl_server_t, node)))
        r->sv_used++;
    else
        r->sv_idle++;
}

static void collect_pools(sl_admin_ctx_t *ctx, pool_rows_t *rs) {
    int np = 0;
    sl_loop_t *l;
    EACH_LOOP(ctx, l) {
        for (const sl_list_t *it = l->pools.next; it != &l->pools; it = it->next)
            np++;
    }
    rs->v = calloc((size_t)np + 1, sizeof *rs->v);
    if (!rs->v) {
        rs->oom = true;
        return;
    }
    EACH_LOOP(ctx, l) collect_loop_pools(l, rs);
    /* Every other loop is frozen while the console reads: a server between
     * two of them stays where it is meanwhile. */
    moving_count_t mc = {ctx, rs};
    if (core(ctx)->ledger) sl_ledger_moving_walk(core(ctx)->ledger, count_moving, &mc);
}

/* Adds l's pools and clients to the rows (a pool of (db, user) on several
 * loops is one row). */
static void collect_loop_pools(sl_loop_t *l, pool_rows_t *rs) {
    const sl_list_t *it;
    for (it = l->pools.next; it != &l->pools; it = it->next) {
        const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        pool_row_t *r = find_row(rs, p->db_alias, p->user);
        if (!r) {
            r = &rs->v[rs->n++];
            r->db = p->db_alias;
            r->user = p->user;
            r->first = p;
            r->pool_size = p->size;
        }
        r->sv_active += sl_pool_count(p, SL_SV_ACTIVE);
        r->sv_tested += sl_pool_count(p, SL_SV_QUERY);
        r->sv_login += sl_pool_count(p, SL_SV_CONNECTING) + sl_pool_count(p, SL_SV_RESOLVING);
        const sl_list_t *s;
        for (s = p->servers.in[SL_SV_IDLE].next; s != &p->servers.in[SL_SV_IDLE]; s = s->next) {
            if (server_used(l, sl_container_of(s, sl_server_t, node)))
                r->sv_used++;
            else
                r->sv_idle++;
        }
        if (!sl_list_empty(&p->waiting)) {
            const sl_waiter_t *wt = sl_container_of(p->waiting.next, sl_waiter_t, node);
            if (!r->oldest_wait_ms || wt->since_ms < r->oldest_wait_ms)
                r->oldest_wait_ms = wt->since_ms;
        }
    }
    sl_session_walk(l, count_client, rs);
}

static int show_pools(sl_admin_ctx_t *ctx) {
    static const sl_res_col_t cols[] = {{"database", T},
                                        {"user", T},
                                        {"cl_active", I},
                                        {"cl_waiting", I},
                                        {"cl_active_cancel_req", I},
                                        {"cl_waiting_cancel_req", I},
                                        {"sv_active", I},
                                        {"sv_active_cancel", I},
                                        {"sv_being_canceled", I},
                                        {"sv_idle", I},
                                        {"sv_used", I},
                                        {"sv_tested", I},
                                        {"sv_login", I},
                                        {"maxwait", I},
                                        {"maxwait_us", I},
                                        {"pool_mode", T},
                                        {"load_balance_hosts", T}};
    sl_loop_t *l = core(ctx);
    pool_rows_t rs = {0};
    collect_pools(ctx, &rs);
    if (rs.oom) {
        sl_res_error(ctx->res, "53200", "out of memory");
        return -1;
    }
    sl_res_t *r = ctx->res;
    sl_res_begin(r, cols, NCOLS(cols));
    /* The console itself, as PgBouncer lists it. */
    sl_res_row(r);
    sl_res_text(r, "pgbouncer");
    sl_res_text(r, "pgbouncer");
    sl_res_int(r, rs.console_clients);
    for (int k = 0; k < 12; k++)
        sl_res_int(r, 0);
    sl_res_text(r, "statement");
    sl_res_null(r);
    sl_res_row_end(r);
    int64_t now = sl_now_ms(l);
    for (int i = 0; i < rs.n; i++) {
        const pool_row_t *p = &rs.v[i];
        int64_t waited_us = p->oldest_wait_ms ? (now - p->oldest_wait_ms) * 1000 : 0;
        if (waited_us < 0) waited_us = 0;
        sl_res_row(r);
        sl_res_text(r, p->db);
        sl_res_text(r, p->user);
        sl_res_int(r, p->cl_active);
        sl_res_int(r, p->cl_waiting);
        sl_res_int(r, 0); /* cancels are forwarded at once: never queued */
        sl_res_int(r, 0);
        sl_res_int(r, p->sv_active);
        sl_res_int(r, 0);
        sl_res_int(r, 0);
        sl_res_int(r, p->sv_idle);
        sl_res_int(r, p->sv_used);
        sl_res_int(r, p->sv_tested);
        sl_res_int(r, p->sv_login);
        sl_res_int(r, waited_us / 1000000);
        sl_res_int(r, waited_us % 1000000);
        sl_res_text(r, sl_pool_mode_names[pool_mode_of(p->first)]);
        const char *host = pool_param(p->first, "host");
        sl_res_text(r, host && strchr(host, ',') ? (pool_param(p->first, "load_balance_hosts")
                                                        ? pool_param(p->first, "load_balance_hosts")
                                                        : "disable")
                                                 : NULL);
        sl_res_row_end(r);
    }
    free(rs.v);
    sl_res_complete(r, "SHOW");
    return 0;
}

/* ---- SHOW CLIENTS / SERVERS ---- */

static const sl_res_col_t conn_cols[] = {{"type", T},
                                         {"user", T},
                                         {"database", T},
                                         {"replication", T},
                                         {"state", T},
                                         {"addr", T},
                                         {"port", I},
                                         {"local_addr", T},
                                         {"local_port", I},
                                         {"connect_time", TS},
                                         {"request_time", TS},
                                         {"wait", I},
                                         {"wait_us", I},
                                         {"close_needed", I},
                                         {"ptr", T},
                                         {"link", T},
                                         {"remote_pid", I},
                                         {"tls", T},
                                         {"application_name", T},
                                         {"prepared_statements", I},
                                         {"id", I}};

typedef struct client_walk {
    sl_admin_ctx_t *ctx;
    sl_loop_t *l; /* the client's loop: its clock */
} client_walk_t;

static void client_row(const sl_client_info_t *ci, void *arg) {
    sl_admin_ctx_t *ctx = ((client_walk_t *)arg)->ctx;
    sl_loop_t *l = ((client_walk_t *)arg)->l;
    sl_res_t *r = ctx->res;
    char addr[64], laddr[64], tls[128], ptr[24], link[24];
    int port, lport;
    split_peer(ci->peer, l->cfg->listen_port, addr, sizeof addr, &port);
    local_addr(ci->fd, l->cfg->listen_port, laddr, sizeof laddr, &lport);
    tls_text(ci->ssl, tls, sizeof tls);
    snprintf(ptr, sizeof ptr, "C-%u", ci->id);
    const sl_server_t *s = ci->server;
    if (s) snprintf(link, sizeof link, "S-%u", s->id);
    int64_t waited_us = ci->wait_ms ? (sl_now_ms(l) - ci->wait_ms) * 1000 : 0;
    if (waited_us < 0) waited_us = 0;
    sl_res_row(r);
    sl_res_text(r, "C");
    sl_res_text(r, ci->user ? ci->user : "");
    sl_res_text(r, ci->dbname ? ci->dbname : "");
    sl_res_text(r, "none");
    sl_res_text(r, client_state(ci));
    sl_res_text(r, addr);
    sl_res_int(r, port);
    sl_res_text(r, laddr);
    sl_res_int(r, lport);
    sl_res_time(r, ci->connect_ms, l);
    sl_res_time(r, ci->request_ms, l);
    sl_res_int(r, waited_us / 1000000);
    sl_res_int(r, waited_us % 1000000);
    sl_res_int(r, ci->close_needed);
    sl_res_text(r, ptr);
    sl_res_text(r, s ? link : NULL);
    sl_res_int(r, 0);
    sl_res_text(r, tls);
    sl_res_text(r, ci->application_name ? ci->application_name : "");
    sl_res_int(r, ci->prepared_statements);
    sl_res_int(r, ci->id);
    sl_res_row_end(r);
}

static int show_clients(sl_admin_ctx_t *ctx) {
    sl_res_begin(ctx->res, conn_cols, NCOLS(conn_cols));
    sl_loop_t *l;
    EACH_LOOP(ctx, l) {
        client_walk_t cw = {ctx, l};
        sl_session_walk(l, client_row, &cw);
    }
    sl_res_complete(ctx->res, "SHOW");
    return 0;
}

/* One row of SHOW SERVERS: server s of pool p (user, database, backend
 * host and port) on loop l (its clock and settings). */
static void server_row(sl_admin_ctx_t *ctx, sl_loop_t *l, const sl_pool_t *p,
                       const sl_server_t *s) {
    sl_res_t *r = ctx->res;
    char laddr[64], tls[128], ptr[24], link[24];
    int lport;
    local_addr(s->sock.fd, l->cfg->listen_port, laddr, sizeof laddr, &lport);
    tls_text(s->sock.ssl, tls, sizeof tls);
    snprintf(ptr, sizeof ptr, "S-%u", s->id);
    uint32_t cid = sl_session_client_id(s->link);
    if (cid) snprintf(link, sizeof link, "C-%u", cid);
    int pid = s->conn ? PQbackendPID(s->conn) : (int)s->be_pid;
    const char *host = pool_param(p, "host");
    sl_res_row(r);
    sl_res_text(r, "S");
    sl_res_text(r, p->user);
    sl_res_text(r, p->db_alias);
    sl_res_text(r, "none");
    sl_res_text(r, server_state(l, s));
    sl_res_text(r, host ? host : "");
    sl_res_int(r, pool_port(p));
    sl_res_text(r, laddr);
    sl_res_int(r, lport);
    sl_res_time(r, s->connect_ms, l);
    sl_res_time(r, s->state == SL_SV_IDLE && s->idle_since_ms ? s->idle_since_ms : s->connect_ms,
                l);
    sl_res_int(r, 0);
    sl_res_int(r, 0);
    sl_res_int(r, s->close_needed);
    sl_res_text(r, ptr);
    sl_res_text(r, cid ? link : NULL);
    sl_res_int(r, pid);
    sl_res_text(r, tls);
    sl_res_text(r, "");
    sl_res_int(r, (int64_t)s->stmts.map.count);
    sl_res_int(r, s->id);
    sl_res_row_end(r);
}

/* A server on its way from one worker to another (pool.c's lp_send): on no
 * loop's list, but open and idle, bound for a waiting client. */
static void moving_row(sl_ledger_pool_t *e, sl_list_t *node, void *arg) {
    sl_admin_ctx_t *ctx = arg;
    const sl_pool_t *p = pool_of_entry(ctx, e);
    /* Without any pool of its entry left it is closed as it lands ("its
     * pool is gone"): nothing to show it under. */
    if (p) server_row(ctx, core(ctx), p, sl_container_of(node, sl_server_t, node));
}

static int show_servers(sl_admin_ctx_t *ctx) {
    sl_loop_t *l;
    sl_res_begin(ctx->res, conn_cols, NCOLS(conn_cols));
    EACH_LOOP(ctx, l) {
        for (const sl_list_t *it = l->pools.next; it != &l->pools; it = it->next) {
            const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
            for (int st = 0; st < SL_SV_CLOSING; st++) {
                const sl_list_t *head = &p->servers.in[st], *s;
                for (s = head->next; s != head; s = s->next)
                    server_row(ctx, l, p, sl_container_of(s, sl_server_t, node));
            }
        }
    }
    /* Every other loop is frozen while the console reads: a server between
     * two of them stays where it is meanwhile. */
    if (core(ctx)->ledger) sl_ledger_moving_walk(core(ctx)->ledger, moving_row, ctx);
    sl_res_complete(ctx->res, "SHOW");
    return 0;
}

/* ---- SHOW STATS, STATS_TOTALS, STATS_AVERAGES, TOTALS ---- */

typedef struct db_stats {
    const char *db;
    sl_pool_stats_t total; /* since start */
    sl_pool_stats_t delta; /* over the last complete stats_period */
    int64_t delta_ms;
} db_stats_t;

static void collect_loop_stats(sl_loop_t *l, db_stats_t *v, int *n);

/* Per database, every pool of every loop summed (users and backends); *n
 * rows. */
static db_stats_t *collect_stats(sl_admin_ctx_t *ctx, int *n) {
    int np = 0;
    sl_loop_t *l;
    EACH_LOOP(ctx, l) {
        for (const sl_list_t *it = l->pools.next; it != &l->pools; it = it->next)
            np++;
    }
    db_stats_t *v = calloc((size_t)np + 1, sizeof *v);
    if (!v) return NULL;
    *n = 0;
    EACH_LOOP(ctx, l) collect_loop_stats(l, v, n);
    /* Freed automatic pools' counts stay in their database's totals. */
    EACH_LOOP(ctx, l) {
        for (int i = 0; i < *n; i++) {
            const sl_pool_stats_t *gone = sl_pool_retired_stats(l, v[i].db);
            if (gone) sl_pool_stats_add(&v[i].total, gone);
        }
    }
    return v;
}

static void collect_loop_stats(sl_loop_t *l, db_stats_t *v, int *n) {
    const sl_list_t *it;
    for (it = l->pools.next; it != &l->pools; it = it->next) {
        const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        db_stats_t *d = NULL;
        for (int i = 0; i < *n && !d; i++)
            if (!strcmp(v[i].db, p->db_alias)) d = &v[i];
        if (!d) {
            d = &v[(*n)++];
            d->db = p->db_alias;
        }
        sl_pool_stats_add(&d->total, &p->stats);
        sl_pool_stats_add(&d->delta, &p->stats_delta);
        if (p->stats_delta_ms > d->delta_ms) d->delta_ms = p->stats_delta_ms;
    }
}

static void averages(const db_stats_t *d, sl_pool_avg_t *a) {
    sl_pool_stats_t zero = {0};
    sl_pool_stats_average(&d->delta, &zero, (double)d->delta_ms / 1000.0, a);
}

static void put_totals(sl_res_t *r, const sl_pool_stats_t *t) {
    sl_res_uint(r, t->server_assignment_count);
    sl_res_uint(r, t->xact_count);
    sl_res_uint(r, t->query_count);
    sl_res_uint(r, t->bytes_received);
    sl_res_uint(r, t->bytes_sent);
    sl_res_uint(r, t->xact_time_us);
    sl_res_uint(r, t->query_time_us);
    sl_res_uint(r, t->wait_time_us);
    sl_res_uint(r, t->client_parse_count);
    sl_res_uint(r, t->server_parse_count);
    sl_res_uint(r, t->bind_count);
}

static void put_averages(sl_res_t *r, const sl_pool_avg_t *a) {
    sl_res_uint(r, a->server_assignment_count);
    sl_res_uint(r, a->xact_count);
    sl_res_uint(r, a->query_count);
    sl_res_uint(r, a->bytes_received);
    sl_res_uint(r, a->bytes_sent);
    sl_res_uint(r, a->xact_time_us);
    sl_res_uint(r, a->query_time_us);
    sl_res_uint(r, a->wait_time_us);
    sl_res_uint(r, a->client_parse_count);
    sl_res_uint(r, a->server_parse_count);
    sl_res_uint(r, a->bind_count);
}

enum stats_kind { STATS_BOTH, STATS_TOTALS, STATS_AVERAGES };

static int show_stats(sl_admin_ctx_t *ctx, enum stats_kind kind) {
    /* 1.25.2's columns, then HEAD's client_login_count where HEAD puts it
     * last (new columns only at the end). */
    static const sl_res_col_t both[] = {{"database", T},
                                        {"total_server_assignment_count", N},
                                        {"total_xact_count", N},
                                        {"total_query_count", N},
                                        {"total_received", N},
                                        {"total_sent", N},
                                        {"total_xact_time", N},
                                        {"total_query_time", N},
                                        {"total_wait_time", N},
                                        {"total_client_parse_count", N},
                                        {"total_server_parse_count", N},
                                        {"total_bind_count", N},
                                        {"avg_server_assignment_count", N},
                                        {"avg_xact_count", N},
                                        {"avg_query_count", N},
                                        {"avg_recv", N},
                                        {"avg_sent", N},
                                        {"avg_xact_time", N},
                                        {"avg_query_time", N},
                                        {"avg_wait_time", N},
                                        {"avg_client_parse_count", N},
                                        {"avg_server_parse_count", N},
                                        {"avg_bind_count", N},
                                        {"total_client_login_count", N},
                                        {"avg_client_login_count", N}};
    static const sl_res_col_t totals[] = {{"database", T},           {"server_assignment_count", N},
                                          {"xact_count", N},         {"query_count", N},
                                          {"bytes_received", N},     {"bytes_sent", N},
                                          {"xact_time", N},          {"query_time", N},
                                          {"wait_time", N},          {"client_parse_count", N},
                                          {"server_parse_count", N}, {"bind_count", N},
                                          {"client_login_count", N}};
    static const sl_res_col_t avgs[] = {{"database", T},
                                        {"server_assignment_count", N},
                                        {"xact_count", N},
                                        {"query_count", N},
                                        {"bytes_received", N},
                                        {"bytes_sent", N},
                                        {"xact_time", N},
                                        {"query_time", N},
                                        {"wait_time", N},
                                        {"avg_client_parse_count", N},
                                        {"avg_server_parse_count", N},
                                        {"avg_bind_count", N},
                                        {"avg_client_login_count", N}};
    int n = 0;
    db_stats_t *v = collect_stats(ctx, &n);
    if (!v) {
        sl_res_error(ctx->res, "53200", "out of memory");
        return -1;
    }
    sl_res_t *r = ctx->res;
    if (kind == STATS_BOTH) sl_res_begin(r, both, NCOLS(both));
    if (kind == STATS_TOTALS) sl_res_begin(r, totals, NCOLS(totals));
    if (kind == STATS_AVERAGES) sl_res_begin(r, avgs, NCOLS(avgs));
    for (int i = 0; i < n; i++) {
        sl_pool_avg_t a;
        averages(&v[i], &a);
        sl_res_row(r);
        sl_res_text(r, v[i].db);
        if (kind != STATS_AVERAGES) put_totals(r, &v[i].total);
        if (kind != STATS_TOTALS) put_averages(r, &a);
        if (kind != STATS_AVERAGES) sl_res_uint(r, v[i].total.client_login_count);
        if (kind != STATS_TOTALS) sl_res_uint(r, a.client_login_count);
        sl_res_row_end(r);
    }
    free(v);
    sl_res_complete(r, "SHOW");
    return 0;
}

static int show_totals(sl_admin_ctx_t *ctx) {
    static const sl_res_col_t cols[] = {{"name", T}, {"value", N}};
    int n = 0;
    db_stats_t *v = collect_stats(ctx, &n);
    if (!v) {
        sl_res_error(ctx->res, "53200", "out of memory");
        return -1;
    }
    db_stats_t all = {0};
    for (int i = 0; i < n; i++) {
        sl_pool_stats_add(&all.total, &v[i].total);
        sl_pool_stats_add(&all.delta, &v[i].delta);
        if (v[i].delta_ms > all.delta_ms) all.delta_ms = v[i].delta_ms;
    }
    free(v);
    sl_pool_avg_t a;
    averages(&all, &a);
    const sl_pool_stats_t *t = &all.total;
    const struct {
        const char *name;
        uint64_t v;
    } rows[] = {
        {"total_server_assignment_count", t->server_assignment_count},
        {"total_xact_count", t->xact_count},
        {"total_query_count", t->query_count},
        {"total_received", t->bytes_received},
        {"total_sent", t->bytes_sent},
        {"total_xact_time", t->xact_time_us},
        {"total_query_time", t->query_time_us},
        {"total_wait_time", t->wait_time_us},
        {"total_client_parse_count", t->client_parse_count},
        {"total_server_parse_count", t->server_parse_count},
        {"total_bind_count", t->bind_count},
        {"total_client_login_count", t->client_login_count},
        {"avg_server_assignment_count", a.server_assignment_count},
        {"avg_xact_count", a.xact_count},
        {"avg_query_count", a.query_count},
        {"avg_recv", a.bytes_received},
        {"avg_sent", a.bytes_sent},
        {"avg_xact_time", a.xact_time_us},
        {"avg_query_time", a.query_time_us},
        {"avg_wait_time", a.wait_time_us},
        {"avg_client_parse_count", a.client_parse_count},
        {"avg_server_parse_count", a.server_parse_count},
        {"avg_bind_count", a.bind_count},
        {"avg_client_login_count", a.client_login_count},
    };
    sl_res_t *r = ctx->res;
    sl_res_begin(r, cols, NCOLS(cols));
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        sl_res_row(r);
        sl_res_text(r, rows[i].name);
        sl_res_uint(r, rows[i].v);
        sl_res_row_end(r);
    }
    sl_res_complete(r, "SHOW");
    return 0;
}

/* ---- SHOW DATABASES, USERS ---- */

static int servers_of(sl_admin_ctx_t *ctx, const char *db, const char *user) {
    int n = 0;
    sl_loop_t *l;
    EACH_LOOP(ctx, l) {
        for (const sl_list_t *it = l->pools.next; it != &l->pools; it = it->next) {
            const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
            if ((db && strcmp(p->db_alias, db)) || (user && strcmp(p->user, user))) continue;
            n += sl_pool_total(p);
        }
    }
    return n;
}

static int logins_of(sl_admin_ctx_t *ctx, const char *db, const char *user) {
    int n = 0;
    sl_loop_t *l;
    EACH_LOOP(ctx, l) n += sl_pool_count_logins(l, db, user);
    return n;
}

/* Whether a pool before `upto` (on loop li, or on any loop before it)
 * has this database (by_user false) or user name: rows made from pools
 * come once each. */
static bool named_before(sl_admin_ctx_t *ctx, int li, const sl_list_t *upto, const char *name,
                         bool by_user) {
    for (int i = 0; i <= li; i++) {
        sl_loop_t *l = loop_at(ctx, i);
        if (!l) continue;
        for (const sl_list_t *it = l->pools.next; it != &l->pools; it = it->next) {
            if (i == li && it == upto) break;
            const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
            if (!strcmp(by_user ? p->user : p->db_alias, name)) return true;
        }
    }
    return false;
}

static void database_row(sl_admin_ctx_t *ctx, const char *name, const sl_db_cfg_t *d) {
    sl_loop_t *l = core(ctx);
    const sl_config_t *cfg = l->cfg;
    sl_res_t *r = ctx->res;
    const char *host = d ? sl_db_cfg_get(d, "host") : NULL;
    const char *port = d ? sl_db_cfg_get(d, "port") : NULL;
    const char *dbname = d ? sl_db_cfg_get(d, "dbname") : NULL;
    const char *user = d ? sl_db_cfg_get(d, "user") : NULL;
    const char *lbh = d ? sl_db_cfg_get(d, "load_balance_hosts") : NULL;
    int max_db = d && d->max_db_connections >= 0 ? d->max_db_connections : cfg->max_db_connections;
    sl_res_row(r);
    sl_res_text(r, name);
    sl_res_text(r, host);
    sl_res_int(r, port ? atoi(port) : 5432);
    sl_res_text(r, dbname ? dbname : name);
    sl_res_text(r, user);
    sl_res_int(r, d && d->pool_size >= 0 ? d->pool_size : cfg->default_pool_size);
    sl_res_int(r, d && d->min_pool_size >= 0 ? d->min_pool_size : cfg->min_pool_size);
    sl_res_int(r, d && d->reserve_pool_size >= 0 ? d->reserve_pool_size : cfg->reserve_pool_size);
    sl_res_int(r, cfg->server_lifetime_ms / 1000);
    sl_res_text(r, d && d->pool_mode >= 0 ? sl_pool_mode_names[d->pool_mode] : NULL);
    sl_res_text(r, host && strchr(host, ',') ? (lbh ? lbh : "disable") : NULL);
    sl_res_int(r, max_db);
    sl_res_int(r, servers_of(ctx, name, NULL));
    /* the cap and the count max_db_client_connections admits by */
    sl_res_int(r, d && d->max_db_client_connections >= 0 ? d->max_db_client_connections
                                                         : cfg->max_db_client_connections);
    sl_res_int(r, logins_of(ctx, name, NULL));
    sl_res_int(r, sl_control_paused(l, name));
    sl_res_int(r, sl_control_disabled(l, name));
    /* sluice's own: how the database routes, and its replicas */
    sl_res_text(r, d ? sl_routing_names[sl_db_cfg_routing(d)] : "primary");
    sl_res_int(r, d ? d->nreplicas : 0);
    sl_res_row_end(r);
}

static int show_databases(sl_admin_ctx_t *ctx) {
    static const sl_res_col_t cols[] = {{"name", T},
                                        {"host", T},
                                        {"port", I},
                                        {"database", T},
                                        {"force_user", T},
                                        {"pool_size", I},
                                        {"min_pool_size", I},
                                        {"reserve_pool_size", I},
                                        {"server_lifetime", I},
                                        {"pool_mode", T},
                                        {"load_balance_hosts", T},
                                        {"max_connections", I},
                                        {"current_connections", I},
                                        {"max_client_connections", I},
                                        {"current_client_connections", I},
                                        {"paused", I},
                                        {"disabled", I},
                                        {"routing", T},
                                        {"replicas", I}};
    sl_loop_t *l = core(ctx);
    sl_res_t *r = ctx->res;
    sl_res_begin(r, cols, NCOLS(cols));
    for (int i = 0; i < l->cfg->ndbs; i++)
        if (strcmp(l->cfg->dbs[i].name, "*") != 0)
            database_row(ctx, l->cfg->dbs[i].name, &l->cfg->dbs[i]);
    /* Databases the '*' entry made, each once. */
    sl_loop_t *pl;
    EACH_LOOP(ctx, pl) {
        for (const sl_list_t *it = pl->pools.next; it != &pl->pools; it = it->next) {
            const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
            if (!p->automatic || sl_config_find_db(l->cfg, p->db_alias)) continue;
            if (!named_before(ctx, pl_i, it, p->db_alias, false))
                database_row(ctx, p->db_alias, sl_config_find_db(l->cfg, "*"));
        }
    }
    sl_res_complete(r, "SHOW");
    return 0;
}

static void user_row(sl_admin_ctx_t *ctx, const char *name, const sl_user_cfg_t *u) {
    sl_loop_t *l = core(ctx);
    const sl_config_t *cfg = l->cfg;
    sl_res_t *r = ctx->res;
    sl_res_row(r);
    sl_res_text(r, name);
    sl_res_int(r, u && u->pool_size >= 0 ? u->pool_size : cfg->default_pool_size);
    sl_res_int(r, u && u->reserve_pool_size >= 0 ? u->reserve_pool_size : cfg->reserve_pool_size);
    sl_res_text(r, u && u->pool_mode >= 0 ? sl_pool_mode_names[u->pool_mode] : NULL);
    sl_res_int(r, u && u->max_user_connections >= 0 ? u->max_user_connections
                                                    : cfg->max_user_connections);
    sl_res_int(r, servers_of(ctx, NULL, name));
    /* the cap and the count max_user_client_connections admits by */
    sl_res_int(r, u && u->max_user_client_connections >= 0 ? u->max_user_client_connections
                                                           : cfg->max_user_client_connections);
    sl_res_int(r, logins_of(ctx, NULL, name));
    sl_res_row_end(r);
}

static int show_users(sl_admin_ctx_t *ctx) {
    static const sl_res_col_t cols[] = {{"name", T},
                                        {"pool_size", I},
                                        {"reserve_pool_size", I},
                                        {"pool_mode", T},
                                        {"max_user_connections", I},
                                        {"current_connections", I},
                                        {"max_user_client_connections", I},
                                        {"current_client_connections", I}};
    sl_loop_t *l = core(ctx);
    sl_res_begin(ctx->res, cols, NCOLS(cols));
    for (int i = 0; i < l->cfg->nusers; i++)
        user_row(ctx, l->cfg->users[i].name, &l->cfg->users[i]);
    /* Users with pools and no [users] line, each once. */
    sl_loop_t *pl;
    EACH_LOOP(ctx, pl) {
        for (const sl_list_t *it = pl->pools.next; it != &pl->pools; it = it->next) {
            const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
            if (sl_config_find_user(l->cfg, p->user)) continue;
            if (!named_before(ctx, pl_i, it, p->user, true)) user_row(ctx, p->user, NULL);
        }
    }
    sl_res_complete(ctx->res, "SHOW");
    return 0;
}

/* ---- SHOW CONFIG, LISTS, MEM, VERSION, STATE, FDS ---- */

static int show_config(sl_admin_ctx_t *ctx) {
    static const sl_res_col_t cols[] = {
        {"key", T}, {"value", T}, {"default", T}, {"changeable", T}};
    sl_res_t *r = ctx->res;
    sl_res_begin(r, cols, NCOLS(cols));
    for (int i = 0; i < sl_config_nkeys(); i++) {
        char val[1024];
        sl_config_key_value(core(ctx)->cfg, i, val, sizeof val);
        sl_res_row(r);
        sl_res_text(r, sl_config_key(i));
        sl_res_text(r, val);
        sl_res_text(r, sl_config_key_default(i));
        /* PgBouncer's meaning: can it change without a restart. */
        sl_res_text(r, sl_config_key_change(i) == SL_KEY_RESTART ? "no" : "yes");
        sl_res_row_end(r);
    }
    sl_res_complete(r, "SHOW");
    return 0;
}

typedef struct login_count {
    int login, users;
} login_count_t;

static void count_login(const sl_client_info_t *ci, void *arg) {
    login_count_t *lc = arg;
    if (ci->state == SL_CL_LOGIN || ci->state == SL_CL_AUTH) lc->login++;
}

static void count_node(sl_ledger_pool_t *e, sl_list_t *node, void *arg) {
    (void)e, (void)node;
    (*(int *)arg)++;
}

static int show_lists(sl_admin_ctx_t *ctx) {
    static const sl_res_col_t cols[] = {{"list", T}, {"items", I}};
    sl_loop_t *l = core(ctx), *o;
    int npools = 0, nservers = 0, ndbs = 0, nclients = 0;
    login_count_t lc = {0};
    EACH_LOOP(ctx, o) {
        for (const sl_list_t *it = o->pools.next; it != &o->pools; it = it->next) {
            npools++;
            nservers += sl_pool_total(sl_container_of(it, sl_pool_t, node));
        }
        nservers += o->nservers_closing;
        nclients += o->nclients;
        sl_session_walk(o, count_login, &lc);
    }
    /* Servers between two workers are on no loop's list (SHOW SERVERS). */
    if (l->ledger) sl_ledger_moving_walk(l->ledger, count_node, &nservers);
    for (int i = 0; i < l->cfg->ndbs; i++)
        ndbs += strcmp(l->cfg->dbs[i].name, "*") != 0;
    const struct {
        const char *name;
        int64_t n;
    } rows[] = {
        {"databases", ndbs},
        {"users", l->cfg->nusers},
        {"peers", 0},
        {"pools", npools},
        {"peer_pools", 0},
        {"free_clients", 0}, /* clients are allocated per connection, not from a slab */
        {"used_clients", nclients},
        {"login_clients", lc.login},
        {"free_servers", 0},
        {"used_servers", nservers},
        {"dns_names", 0}, /* names are resolved per connection (getaddrinfo), not cached */
        {"dns_zones", 0},
        {"dns_queries", 0},
        {"dns_pending", 0},
    };
    sl_res_t *r = ctx->res;
    sl_res_begin(r, cols, NCOLS(cols));
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        sl_res_row(r);
        sl_res_text(r, rows[i].name);
        sl_res_int(r, rows[i].n);
        sl_res_row_end(r);
    }
    sl_res_complete(r, "SHOW");
    return 0;
}

static int show_mem(sl_admin_ctx_t *ctx) {
    static const sl_res_col_t cols[] = {
        {"name", T}, {"size", I}, {"used", I}, {"free", I}, {"memtotal", I}};
    sl_loop_t *l = core(ctx), *o;
    int npools = 0, nservers = 0;
    int64_t bufs_used = 0, bufs_free = 0;
    EACH_LOOP(ctx, o) {
        for (const sl_list_t *it = o->pools.next; it != &o->pools; it = it->next) {
            npools++;
            nservers += sl_pool_total(sl_container_of(it, sl_pool_t, node));
        }
        nservers += o->nservers_closing;
        bufs_used += (int64_t)o->bufs.in_use;
        bufs_free += o->bufs.nfree;
    }
    const struct {
        const char *name;
        int64_t size, used, free;
    } rows[] = {
        {"pkt_buf", l->bufs.size, bufs_used, bufs_free},
        {"server", (int64_t)sizeof(sl_server_t), nservers, 0},
        {"pool", (int64_t)sizeof(sl_pool_t), npools, 0},
    };
    sl_res_t *r = ctx->res;
    sl_res_begin(r, cols, NCOLS(cols));
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        sl_res_row(r);
        sl_res_text(r, rows[i].name);
        sl_res_int(r, rows[i].size);
        sl_res_int(r, rows[i].used);
        sl_res_int(r, rows[i].free);
        sl_res_int(r, rows[i].size * (rows[i].used + rows[i].free));
        sl_res_row_end(r);
    }
    sl_res_complete(r, "SHOW");
    return 0;
}

static int show_version(sl_admin_ctx_t *ctx) {
    static const sl_res_col_t cols[] = {{"version", T}};
    sl_res_begin(ctx->res, cols, 1);
    sl_res_row(ctx->res);
    sl_res_text(ctx->res, "sluice " SLUICE_VERSION);
    sl_res_row_end(ctx->res);
    sl_res_complete(ctx->res, "SHOW");
    return 0;
}

static int show_state(sl_admin_ctx_t *ctx) {
    static const sl_res_col_t cols[] = {{"key", T}, {"value", T}};
    sl_worker_t *w = ctx->w;
    bool leaving = w->core.shutting_down || w->core.draining || w->stopping;
    bool paused = sl_control_paused(&w->core, NULL);
    /* As PgBouncer: active is neither paused nor suspended (nor leaving). */
    const char *rows[][2] = {
        {"active", leaving || paused || w->core.suspended ? "no" : "yes"},
        {"paused", paused ? "yes" : "no"},
        {"suspended", w->core.suspended ? "yes" : "no"},
        {"shutting_down", leaving ? "yes" : "no"},
    };
    sl_res_begin(ctx->res, cols, NCOLS(cols));
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        sl_res_row(ctx->res);
        sl_res_text(ctx->res, rows[i][0]);
        sl_res_text(ctx->res, rows[i][1]);
        sl_res_row_end(ctx->res);
    }
    sl_res_complete(ctx->res, "SHOW");
    return 0;
}

/* PgBouncer's SHOW FDS lists the sockets it would hand to a new process in
 * an online restart (-R, fd takeover). sluice hands over no sockets (a
 * restart is a second process on the same port with so_reuseport): the
 * result set has PgBouncer's columns and no rows. */
static int show_fds(sl_admin_ctx_t *ctx) {
    static const sl_res_col_t cols[] = {{"fd", I},
                                        {"task", T},
                                        {"user", T},
                                        {"database", T},
                                        {"addr", T},
                                        {"port", I},
                                        {"cancel", I},
                                        {"link", I},
                                        {"client_encoding", T},
                                        {"std_strings", T},
                                        {"datestyle", T},
                                        {"timezone", T},
                                        {"password", T},
                                        {"scram_client_key", T},
                                        {"scram_server_key", T}};
    sl_res_begin(ctx->res, cols, NCOLS(cols));
    sl_res_complete(ctx->res, "SHOW");
    return 0;
}

/* ---- SHOW REPLICAS, ROUTING (sluice's own) ---- */

/* Each loop has its own route of a database (its clients' load and
 * counts); the health state they share. A database is shown once, from
 * its first loop's route, with the counts of every loop's summed. */
static bool route_shown_before(sl_admin_ctx_t *ctx, int li, const sl_route_t *rt) {
    for (int i = 0; i <= li; i++) {
        sl_loop_t *l = loop_at(ctx, i);
        if (!l) continue;
        for (const sl_list_t *it = l->routes.next; it != &l->routes; it = it->next) {
            const sl_route_t *o = sl_container_of(it, sl_route_t, node);
            if (o == rt) return false;
            if (o->retired == rt->retired && !strcmp(o->db, rt->db)) return true;
        }
    }
    return false;
}

/* rt's counts plus those of the same database's routes on other loops. */
typedef struct route_sums {
    int outstanding[SL_MAX_BACKENDS];
    uint64_t reads[SL_MAX_BACKENDS], writes[SL_MAX_BACKENDS];
    uint64_t routed_write, routed_replica, routed_primary_read, read_retries;
} route_sums_t;

static void route_sum(sl_admin_ctx_t *ctx, const sl_route_t *rt, route_sums_t *sum) {
    memset(sum, 0, sizeof *sum);
    sl_loop_t *l;
    EACH_LOOP(ctx, l) {
        for (const sl_list_t *it = l->routes.next; it != &l->routes; it = it->next) {
            const sl_route_t *o = sl_container_of(it, sl_route_t, node);
            if (o->retired != rt->retired || strcmp(o->db, rt->db) != 0) continue;
            for (int i = 0; i < rt->n && i < o->n; i++) {
                sum->outstanding[i] += o->b[i].outstanding;
                sum->reads[i] += o->b[i].routed_reads;
                sum->writes[i] += o->b[i].routed_writes;
            }
            sum->routed_write += o->routed_write;
            sum->routed_replica += o->routed_replica;
            sum->routed_primary_read += o->routed_primary_read;
            sum->read_retries += o->read_retries;
        }
    }
}

static void replica_rows(sl_admin_ctx_t *ctx, const sl_route_t *rt);

static int show_replicas(sl_admin_ctx_t *ctx) {
    static const sl_res_col_t cols[] = {
        {"database", T},     {"backend", I},       {"role", T},         {"address", T},
        {"weight", I},       {"healthy", T},       {"lagging", T},      {"lag_bytes", I},
        {"lag_seconds", T},  {"replay_lsn", T},    {"in_flight", I},    {"latency_ewma_us", I},
        {"reads_routed", I}, {"writes_routed", I}, {"failed_checks", I}};
    sl_loop_t *l;
    sl_res_t *r = ctx->res;
    sl_res_begin(r, cols, NCOLS(cols));
    EACH_LOOP(ctx, l) {
        for (const sl_list_t *it = l->routes.next; it != &l->routes; it = it->next) {
            const sl_route_t *rt = sl_container_of(it, sl_route_t, node);
            if (!route_shown_before(ctx, l_i, rt)) replica_rows(ctx, rt);
        }
    }
    sl_res_complete(r, "SHOW");
    return 0;
}

static void replica_rows(sl_admin_ctx_t *ctx, const sl_route_t *rt) {
    sl_res_t *r = ctx->res;
    route_sums_t sum;
    route_sum(ctx, rt, &sum);
    {
        uint64_t wlsn = rt->writer >= 0 ? rt->b[rt->writer].lsn : 0;
        for (int i = 0; i < rt->n; i++) {
            const sl_backend_t *b = &rt->b[i];
            char lsn[32], lag_s[32];
            snprintf(lsn, sizeof lsn, "%X/%X", (unsigned)(b->lsn >> 32), (unsigned)b->lsn);
            snprintf(lag_s, sizeof lag_s, "%.3f", b->lag_s);
            bool standby = i != rt->writer;
            sl_res_row(r);
            sl_res_text(r, rt->db);
            sl_res_int(r, i);
            sl_res_text(r, sl_route_backend_role(rt, i));
            sl_res_text(r, b->addr);
            sl_res_int(r, b->weight);
            sl_res_text(r, b->up ? "yes" : "no");
            sl_res_text(r, b->lagging ? "yes" : "no");
            if (standby && wlsn && b->lsn)
                sl_res_int(r, wlsn > b->lsn ? (int64_t)(wlsn - b->lsn) : 0);
            else if (standby)
                sl_res_null(r); /* no position known yet */
            else
                sl_res_int(r, 0);
            sl_res_text(r, standby ? lag_s : "0.000");
            sl_res_text(r, b->lsn ? lsn : NULL);
            sl_res_int(r, sum.outstanding[i]);
            sl_res_int(r, (int64_t)b->ewma_us);
            sl_res_uint(r, sum.reads[i]);
            sl_res_uint(r, sum.writes[i]);
            sl_res_int(r, b->failures);
            sl_res_row_end(r);
        }
    }
}

static void routing_row(sl_admin_ctx_t *ctx, const sl_route_t *rt);

static int show_routing(sl_admin_ctx_t *ctx) {
    static const sl_res_col_t cols[] = {
        {"database", T},         {"routing", T},     {"load_balance", T}, {"backends", I},
        {"healthy_backends", I}, {"writer", I},      {"writes", I},       {"replica_reads", I},
        {"primary_reads", I},    {"read_retries", I}};
    sl_loop_t *l;
    sl_res_t *r = ctx->res;
    sl_res_begin(r, cols, NCOLS(cols));
    EACH_LOOP(ctx, l) {
        for (const sl_list_t *it = l->routes.next; it != &l->routes; it = it->next) {
            const sl_route_t *rt = sl_container_of(it, sl_route_t, node);
            if (!route_shown_before(ctx, l_i, rt)) routing_row(ctx, rt);
        }
    }
    sl_res_complete(r, "SHOW");
    return 0;
}

static void routing_row(sl_admin_ctx_t *ctx, const sl_route_t *rt) {
    sl_res_t *r = ctx->res;
    route_sums_t sum;
    route_sum(ctx, rt, &sum);
    {
        int up = 0;
        for (int i = 0; i < rt->n; i++)
            up += rt->b[i].up;
        sl_res_row(r);
        sl_res_text(r, rt->db);
        sl_res_text(r, sl_routing_names[rt->routing]);
        sl_res_text(r, sl_balance_names[rt->balance]);
        sl_res_int(r, rt->n);
        sl_res_int(r, up);
        if (rt->writer >= 0)
            sl_res_int(r, rt->writer);
        else
            sl_res_null(r);
        sl_res_uint(r, sum.routed_write);
        sl_res_uint(r, sum.routed_replica);
        sl_res_uint(r, sum.routed_primary_read);
        sl_res_uint(r, sum.read_retries);
        sl_res_row_end(r);
    }
}

/* ---- SHOW ERRORS (sluice's own) ---- */

/* ErrorResponses sent to clients by SQLSTATE class: per database (its
 * pools summed), and the row for database "*" with every error since
 * start, logins that failed before they had a pool included. */
static int show_errors(sl_admin_ctx_t *ctx) {
    static const sl_res_col_t cols[] = {{"database", T}, {"class", T}, {"count", I}};
    int n = 0;
    db_stats_t *v = collect_stats(ctx, &n);
    if (!v) {
        sl_res_error(ctx->res, "53200", "out of memory");
        return -1;
    }
    uint64_t all[SL_ERR_NCLASSES] = {0};
    sl_loop_t *l;
    EACH_LOOP(ctx, l) {
        for (int k = 0; k < SL_ERR_NCLASSES; k++)
            all[k] += l->stats.errors[k];
    }
    sl_res_t *r = ctx->res;
    sl_res_begin(r, cols, NCOLS(cols));
    for (int i = 0; i <= n; i++) {
        const uint64_t *errs = i < n ? v[i].total.errors : all;
        for (int k = 0; k < SL_ERR_NCLASSES; k++) {
            if (!errs[k]) continue;
            sl_res_row(r);
            sl_res_text(r, i < n ? v[i].db : "*");
            sl_res_text(r, sl_err_class_names[k]);
            sl_res_uint(r, errs[k]);
            sl_res_row_end(r);
        }
    }
    free(v);
    sl_res_complete(r, "SHOW");
    return 0;
}

/* ---- SHOW HELP and the topic table ---- */

static int show_help(sl_admin_ctx_t *ctx);

static int stats_both(sl_admin_ctx_t *c) {
    return show_stats(c, STATS_BOTH);
}
static int stats_totals(sl_admin_ctx_t *c) {
    return show_stats(c, STATS_TOTALS);
}
static int stats_averages(sl_admin_ctx_t *c) {
    return show_stats(c, STATS_AVERAGES);
}

static const struct {
    const char *topic;
    bool admin_only; /* FDS: PgBouncer keeps it from stats_users */
    int (*run)(sl_admin_ctx_t *ctx);
} topics[] = {
    {"HELP", false, show_help},
    {"POOLS", false, show_pools},
    {"STATS", false, stats_both},
    {"STATS_TOTALS", false, stats_totals},
    {"STATS_AVERAGES", false, stats_averages},
    {"TOTALS", false, show_totals},
    {"CLIENTS", false, show_clients},
    {"SERVERS", false, show_servers},
    {"DATABASES", false, show_databases},
    {"USERS", false, show_users},
    {"CONFIG", false, show_config},
    {"LISTS", false, show_lists},
    {"MEM", false, show_mem},
    {"VERSION", false, show_version},
    {"STATE", false, show_state},
    {"FDS", true, show_fds},
    {"REPLICAS", false, show_replicas},
    {"ROUTING", false, show_routing},
    {"ERRORS", false, show_errors},
};

const char *const sl_admin_show_topics =
    "HELP, POOLS, STATS, STATS_TOTALS, STATS_AVERAGES, TOTALS, CLIENTS, SERVERS, DATABASES, "
    "USERS, CONFIG, LISTS, MEM, VERSION, STATE, FDS, REPLICAS, ROUTING, ERRORS";

static int show_help(sl_admin_ctx_t *ctx) {
    sl_res_notice(ctx->res, "Console usage");
    sl_res_notice(ctx->res, "\tSHOW %s", sl_admin_show_topics);
    for (const sl_admin_cmd_t *c = sl_admin_cmds; c->verb; c++)
        if (strcmp(c->verb, "SHOW") != 0)
            sl_res_notice(ctx->res, "\t%s%s", c->usage, c->admin_only ? " (admin_users)" : "");
    sl_res_complete(ctx->res, "SHOW");
    return 0;
}

int sl_admin_show(sl_admin_ctx_t *ctx, const char *args) {
    size_t n = 0;
    while (args[n] && (isalnum((unsigned char)args[n]) || args[n] == '_'))
        n++;
    const char *rest = args + n;
    while (isspace((unsigned char)*rest))
        rest++;
    for (size_t i = 0; i < sizeof topics / sizeof *topics; i++) {
        if (strlen(topics[i].topic) != n || strncasecmp(topics[i].topic, args, n) != 0) continue;
        if (*rest) {
            sl_res_error(ctx->res, "42601", "SHOW %s takes no argument", topics[i].topic);
            return -1;
        }
        if (topics[i].admin_only && !ctx->who->admin) {
            sl_res_error(ctx->res, "42501",
                         "permission denied: SHOW %s is for admin_users; user \"%s\" is in "
                         "stats_users",
                         topics[i].topic, ctx->who->user);
            return -1;
        }
        return topics[i].run(ctx);
    }
    sl_res_error(ctx->res, "42601", "unknown SHOW topic \"%.*s\": valid ones are %s",
                 (int)(n > 64 ? 64 : n), n ? args : "", sl_admin_show_topics);
    return -1;
}
