/* Routing state and backend choice for databases with replicas. */
#include "sluice/route.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/health.h"
#include "sluice/log.h"
#include "sluice/pool.h"

/* Backend i of db as "host:port": 0 the entry's own address, i replica i. */
static void backend_addr(const sl_db_cfg_t *db, int i, char *buf, size_t cap) {
    const char *host = sl_db_cfg_get(db, "host"), *port = sl_db_cfg_get(db, "port");
    if (i == 0)
        snprintf(buf, cap, "%s:%s", host ? host : "localhost", port ? port : "5432");
    else
        snprintf(buf, cap, "%s:%d", db->replicas[i - 1].host, db->replicas[i - 1].port);
}

/* What the route keeps of its database entry: looked up once per load or
 * reload, not per transaction. */
static void take_settings(sl_route_t *r, const sl_db_cfg_t *db) {
    r->routing = sl_db_cfg_routing(db);
    r->balance = db->load_balance >= 0 ? db->load_balance : r->w->cfg->load_balance;
    for (int i = 1; i < r->n && i <= db->nreplicas; i++)
        r->b[i].weight = db->replicas[i - 1].weight;
}

static void set_backends(sl_route_t *r, const sl_db_cfg_t *db) {
    r->n = 1 + db->nreplicas;
    for (int i = 0; i < r->n; i++) {
        sl_backend_t *b = &r->b[i];
        b->route = r;
        b->idx = i;
        b->weight = 1;
        backend_addr(db, i, b->addr, sizeof b->addr);
    }
    take_settings(r, db);
}

/* Until its first check answers, a backend is taken to be what the config
 * says it is: the entry's address the primary, the replicas standbys. */
static void reset_backend(sl_backend_t *b) {
    b->up = true;
    b->in_recovery = b->idx > 0;
    b->lagging = false;
    b->late_checks = 0;
    b->lsn = 0;
    memset(b->recent, 0, sizeof b->recent);
    b->lag_s = 0;
    b->failures = 0;
}

/* ---- several workers: the health board ---- */

/* One database's backend health as its checker last published it. */
typedef struct sl_health_pub {
    sl_list_t node; /* on the board's entries, under its mutex */
    char *db;       /* owned */
    int n, writer;  /* as the checker's route */
    char addr[SL_MAX_BACKENDS][280];
    sl_backend_t b[SL_MAX_BACKENDS]; /* the health fields only (copy_health) */
    _Atomic uint64_t version;        /* bumped by each publication; 0: none yet */
} sl_health_pub_t;

struct sl_health_board {
    pthread_mutex_t mu; /* guards entries and every entry's fields but version */
    sl_list_t entries;  /* sl_health_pub_t, never freed before the board */
    sl_loop_t *checker; /* borrowed: the loop that runs every check */
};

sl_health_board_t *sl_health_board_new(sl_loop_t *checker) {
    sl_health_board_t *hb = calloc(1, sizeof *hb);
    if (!hb) return NULL;
    pthread_mutex_init(&hb->mu, NULL);
    sl_list_init(&hb->entries);
    hb->checker = checker;
    return hb;
}

void sl_health_board_free(sl_health_board_t *hb) {
    if (!hb) return;
    while (!sl_list_empty(&hb->entries)) {
        sl_health_pub_t *e = sl_container_of(sl_list_first(&hb->entries), sl_health_pub_t, node);
        sl_list_unlink(&e->node);
        free(e->db);
        free(e);
    }
    pthread_mutex_destroy(&hb->mu);
    free(hb);
}

static sl_health_pub_t *board_entry(sl_health_board_t *hb, const char *db) {
    pthread_mutex_lock(&hb->mu);
    sl_health_pub_t *e = NULL;
    for (sl_list_t *it = hb->entries.next; it != &hb->entries && !e; it = it->next) {
        sl_health_pub_t *x = sl_container_of(it, sl_health_pub_t, node);
        if (!strcmp(x->db, db)) e = x;
    }
    if (!e && (e = calloc(1, sizeof *e)) && !(e->db = strdup(db))) {
        free(e);
        e = NULL;
    }
    if (e && !e->node.next) sl_list_push_back(&hb->entries, &e->node);
    pthread_mutex_unlock(&hb->mu);
    return e;
}

/* What checks know of a backend (not its load, which is each loop's). */
static void copy_health(sl_backend_t *to, const sl_backend_t *from) {
    to->up = from->up;
    to->in_recovery = from->in_recovery;
    to->lagging = from->lagging;
    to->lsn = from->lsn;
    to->lag_s = from->lag_s;
    to->late_checks = from->late_checks;
    to->failures = from->failures;
    to->checks_sent = from->checks_sent;
    to->checks_done = from->checks_done;
    memcpy(to->recent, from->recent, sizeof to->recent);
}

/* The checker publishes before it sends a check (checks_sent): a fence a
 * follower marks after that reads the new count, so the check it waits for
 * is sent after its commit. */
void sl_route_publish(sl_route_t *r) {
    sl_health_pub_t *e = r->pub;
    if (!e || r->follower) return;
    sl_health_board_t *hb = r->w->health_board;
    pthread_mutex_lock(&hb->mu);
    e->n = r->n;
    e->writer = r->writer;
    for (int i = 0; i < r->n; i++) {
        memcpy(e->addr[i], r->b[i].addr, sizeof e->addr[i]);
        copy_health(&e->b[i], &r->b[i]);
    }
    atomic_fetch_add_explicit(&e->version, 1, memory_order_release);
    pthread_mutex_unlock(&hb->mu);
}

/* A follower copies what the checker published since it last looked;
 * backends that came up and a new writer wake the pools that wait for
 * them. Nothing while the entry describes other addresses (a reload the
 * checker has not applied yet). */
static void route_sync_copy(sl_route_t *r) {
    sl_health_pub_t *e = r->pub;
    if (!e) return;
    uint64_t v = atomic_load_explicit(&e->version, memory_order_acquire);
    if (v == r->seen_version) return;
    bool woke[SL_MAX_BACKENDS] = {false};
    sl_health_board_t *hb = r->w->health_board;
    pthread_mutex_lock(&hb->mu);
    bool same = e->n == r->n;
    for (int i = 0; same && i < r->n; i++)
        same = !strcmp(e->addr[i], r->b[i].addr);
    if (same) {
        for (int i = 0; i < r->n; i++) {
            woke[i] = !r->b[i].up && e->b[i].up;
            copy_health(&r->b[i], &e->b[i]);
        }
        if (e->writer != r->writer && e->writer >= 0) woke[e->writer] = true;
        r->writer = e->writer;
        r->seen_version = v;
    }
    pthread_mutex_unlock(&hb->mu);
    for (int i = 0; i < r->n; i++)
        if (woke[i]) sl_pool_backend_up(r->w, r->db, i);
}

/* Runs for every transaction routed: only a follower has anything to do. */
static inline void route_sync(sl_route_t *r) {
    if (r->follower) route_sync_copy(r);
}

/* A follower also looks every poll period: pools waiting for a backend to
 * come up must not wait for a transaction to start. */
static void sync_tick_cb(uv_timer_t *t) {
    route_sync(t->data);
}

/* The checker loop makes its own route of db, whose checks the follower
 * routes copy. */
typedef struct want_msg {
    sl_loop_msg_t m;
    char *db, *user; /* owned */
} want_msg_t;

static void want_run(sl_loop_t *l, sl_loop_msg_t *m, bool live) {
    want_msg_t *wm = sl_container_of(m, want_msg_t, m);
    if (live) (void)sl_route_get(l, wm->db, wm->user);
    free(wm->db), free(wm->user), free(wm);
}

static void ask_checker(sl_route_t *r, const char *user) {
    want_msg_t *wm = calloc(1, sizeof *wm);
    if (!wm || !(wm->db = strdup(r->db)) || !(wm->user = strdup(user))) {
        if (wm) free(wm->db), free(wm);
        return;
    }
    wm->m.run = want_run;
    if (!sl_loop_post(r->w->health_board->checker, &wm->m)) free(wm->db), free(wm->user), free(wm);
}

/* Starts what keeps a new (or reset) route's health known: its own checks,
 * or, on a follower, the copy of the checker's. */
static void start_health(sl_route_t *r) {
    if (!r->follower) {
        sl_health_start(r);
        sl_route_publish(r);
        return;
    }
    r->seen_version = 0;
    int64_t every = sl_health_poll_period_ms(r->w->cfg);
    uv_timer_start(&r->timer, sync_tick_cb, 0, (uint64_t)every);
}

sl_route_t *sl_route_get(sl_loop_t *w, const char *db, const char *user) {
    bool automatic;
    const sl_db_cfg_t *dbc = sl_config_serving_db(w->cfg, db, &automatic);
    if (!dbc || dbc->nreplicas == 0) return NULL;
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->routes) {
        sl_route_t *r = sl_container_of(it, sl_route_t, node);
        if (!r->retired && strcmp(r->db, db) == 0) return r;
    }
    sl_route_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->w = w;
    r->db = strdup(db);
    r->check_user = strdup(user);
    if (!r->db || !r->check_user) {
        free(r->db), free(r->check_user), free(r);
        return NULL;
    }
    snprintf(r->tag, sizeof r->tag, "route db=%s", db);
    r->automatic = automatic;
    set_backends(r, dbc);
    for (int i = 0; i < r->n; i++)
        reset_backend(&r->b[i]);
    r->writer = 0;
    r->rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)r ^ uv_hrtime();
    uv_timer_init(w->loop, &r->timer);
    r->timer.data = r;
    sl_list_push_back(&w->routes, &r->node);
    if (w->health_board && (r->pub = board_entry(w->health_board, db)))
        r->follower = w != w->health_board->checker;
    start_health(r);
    if (r->follower) ask_checker(r, user);
    char list[1024] = "";
    for (int i = 1; i < r->n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i > 1 ? ", " : "",
                 r->b[i].addr);
    /* Said once for the process: by the loop that checks the backends. */
    if (!r->follower || sl_log_enabled(SL_LOG_DEBUG))
        sl_log_write(r->follower ? SL_LOG_DEBUG : SL_LOG_INFO, r->tag,
                     "routing %s: primary %s, replicas %s, load_balance %s%s",
                     sl_routing_names[r->routing], r->b[0].addr, list, sl_balance_names[r->balance],
                     automatic ? " (from the '*' entry)" : "");
    return r;
}

/* ---- what the checks say ---- */

static void update_writer(sl_route_t *r) {
    int cur = r->writer;
    if (cur >= 0 && r->b[cur].up && !r->b[cur].in_recovery) return;
    int next = -1;
    for (int i = 0; i < r->n && next < 0; i++)
        if (r->b[i].up && !r->b[i].in_recovery) next = i;
    if (next == cur) return;
    r->writer = next;
    /* Other workers copy it before the line below is read: a client that
     * acts on the log (an operator, a test) finds every worker agreeing. */
    sl_route_publish(r);
    if (next < 0) {
        sl_log_warn(r->tag, "no primary is up: writes fail until one answers or a replica is "
                            "promoted");
        return;
    }
    sl_pool_backend_up(r->w, r->db, next);
    sl_log_warn(r->tag, "writes now go to %s (%s)", r->b[next].addr,
                next == 0 ? "the configured primary" : "a promoted replica");
}

static void ewma_add(sl_backend_t *b, uint64_t us) {
    b->ewma_us = b->ewma_us > 0 ? 0.8 * b->ewma_us + 0.2 * (double)us : (double)us;
}

static void update_lag(sl_route_t *r, sl_backend_t *b) {
    /* Positions are compared only once both sides have answered. */
    if (!b->in_recovery || r->writer < 0 || b->checks_done == 0 ||
        r->b[r->writer].checks_done == 0) {
        b->lagging = false;
        return;
    }
    const sl_config_t *cfg = r->w->cfg;
    uint64_t head = r->b[r->writer].lsn;
    uint64_t behind = head > b->lsn ? head - b->lsn : 0;
    bool lag = (cfg->max_replica_lag > 0 && behind > (uint64_t)cfg->max_replica_lag) ||
               b->late_checks >= 2;
    if (lag == b->lagging) return;
    b->lagging = lag;
    if (lag)
        sl_log_warn(r->tag,
                    "replica %s is lagging (%llu bytes, %.1f s behind): no reads until it "
                    "catches up",
                    b->addr, (unsigned long long)behind, b->lag_s);
    else
        sl_log_info(r->tag, "replica %s caught up: it takes reads again", b->addr);
}

void sl_route_checked(sl_route_t *r, int i, bool in_recovery, uint64_t lsn, double lag_s,
                      uint64_t rtt_us) {
    sl_backend_t *b = &r->b[i];
    if (b->in_recovery && !in_recovery && i > 0)
        sl_log_warn(r->tag, "replica %s was promoted: it is a primary now", b->addr);
    else if (!b->in_recovery && in_recovery)
        sl_log_warn(r->tag, "%s is a standby now: it takes no writes", b->addr);
    b->in_recovery = in_recovery;
    b->lsn = lsn;
    size_t slot = b->checks_done % (sizeof b->recent / sizeof *b->recent);
    b->recent[slot].seq = b->checks_done;
    b->recent[slot].lsn = lsn;
    b->lag_s = lag_s;
    /* A replay delay is believed when two of its checks in a row see it:
     * one can land in the instant between a commit's arrival and its
     * replay, when the last replayed commit may be old. */
    bool late = in_recovery && r->w->cfg->max_replica_lag_time_ms > 0 &&
                lag_s * 1000.0 > (double)r->w->cfg->max_replica_lag_time_ms;
    b->late_checks = late ? b->late_checks + 1 : 0;
    b->failures = 0;
    ewma_add(b, rtt_us);
    if (!b->up) {
        b->up = true;
        sl_log_info(r->tag, "%s answers again: re-admitted", b->addr);
        sl_pool_backend_up(r->w, r->db, i);
    }
    update_writer(r);
    if (i == r->writer)
        for (int k = 0; k < r->n; k++)
            update_lag(r, &r->b[k]);
    else
        update_lag(r, b);
    sl_route_publish(r);
}

void sl_route_check_failed(sl_route_t *r, int i, const char *err) {
    sl_backend_t *b = &r->b[i];
    b->failures++;
    if (b->up && b->failures >= r->w->cfg->health_check_failures) {
        b->up = false;
        sl_log_warn(r->tag, "%s ejected after %d failed checks or connections in a row: %s",
                    b->addr, b->failures, err);
        update_writer(r);
        sl_health_reconnect(b);
    }
    sl_route_publish(r);
}

/* ---- choice ---- */

static uint64_t next_rand(sl_route_t *r) {
    uint64_t x = r->rng;
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    return r->rng = x;
}

/* Fewest transactions in flight per unit of weight; ties in rotation.
 * The loads (outstanding + 1) / weight are compared cross-multiplied, in
 * integers: this runs for every read. */
static int least_outstanding(sl_route_t *r, const int *c, int n) {
    const sl_backend_t *best = NULL;
    int k = (int)(r->rr++ % (uint64_t)n);
    for (int left = n; left > 0; left--, k = k + 1 == n ? 0 : k + 1) {
        const sl_backend_t *b = &r->b[c[k]];
        if (!best || (int64_t)(b->outstanding + 1) * best->weight <
                         (int64_t)(best->outstanding + 1) * b->weight)
            best = b;
    }
    return best->idx;
}

/* Smooth weighted round robin: even spacing, exact shares. */
static int round_robin(sl_route_t *r, const int *c, int n) {
    int total = 0, best = -1;
    for (int k = 0; k < n; k++) {
        sl_backend_t *b = &r->b[c[k]];
        b->swrr += b->weight;
        total += b->weight;
        if (best < 0 || b->swrr > r->b[best].swrr) best = b->idx;
    }
    r->b[best].swrr -= total;
    return best;
}

static int weighted_random(sl_route_t *r, const int *c, int n, int skip) {
    int total = 0;
    for (int k = 0; k < n; k++)
        if (c[k] != skip) total += r->b[c[k]].weight;
    if (total == 0) return c[0];
    int x = (int)(next_rand(r) % (uint64_t)total);
    for (int k = 0; k < n; k++) {
        if (c[k] == skip) continue;
        x -= r->b[c[k]].weight;
        if (x < 0) return c[k];
    }
    return c[n - 1];
}

/* Power of two random choices: of two weighted random backends, the one
 * whose latency times load (per weight) is lower. A slow or overloaded
 * replica still gets a share, only a smaller one, and so keeps being
 * measured; the health checks measure it too. */
static double latency_cost(const sl_backend_t *b) {
    double lat = b->ewma_us > 0 ? b->ewma_us : 1.0;
    return lat * (b->outstanding + 1.0) / b->weight;
}

static int latency_pick(sl_route_t *r, const int *c, int n) {
    if (n == 1) return c[0];
    int a = weighted_random(r, c, n, -1);
    int b = weighted_random(r, c, n, a);
    double ca = latency_cost(&r->b[a]), cb = latency_cost(&r->b[b]);
    if (ca == cb) return (r->rr++ & 1) ? a : b;
    return ca < cb ? a : b;
}

static bool fence_passed(sl_route_t *r, sl_fence_t *f, const sl_backend_t *b) {
    if (!f || !f->set) return true;
    if (f->lsn == 0) {
        if (r->writer < 0) return false;
        if (f->writer != r->writer) {
            /* The writer changed: the fence is taken again on the new one. */
            f->writer = r->writer;
            f->after = r->b[r->writer].checks_sent;
            return false;
        }
        const sl_backend_t *wb = &r->b[r->writer];
        if (wb->checks_done <= f->after || wb->lsn == 0) return false;
        /* The first check sent after the commit; if the ring has moved on,
         * the oldest it still holds (later, so also safe). */
        uint64_t want = f->after + 1, best_seq = 0;
        f->lsn = wb->lsn;
        for (size_t k = 0; k < sizeof wb->recent / sizeof *wb->recent; k++) {
            uint64_t seq = wb->recent[k].seq;
            if (seq >= want && (best_seq == 0 || seq < best_seq) && wb->recent[k].lsn) {
                best_seq = seq;
                f->lsn = wb->recent[k].lsn;
            }
        }
    }
    return b->lsn >= f->lsn;
}

int sl_route_pick(sl_route_t *r, bool write, sl_fence_t *fence, int exclude) {
    route_sync(r);
    if (write) return r->writer;
    int cand[SL_MAX_BACKENDS], n = 0, healthy = 0;
    /* Without a primary, no fence can be resolved: the replicas are all
     * there is. */
    if (r->writer < 0) fence = NULL;
    for (int i = 0; i < r->n; i++) {
        sl_backend_t *b = &r->b[i];
        if (i == r->writer || i == exclude || !b->up || !b->in_recovery || b->lagging) continue;
        healthy++;
        if (fence_passed(r, fence, b)) cand[n++] = i;
    }
    /* Said once per change; a retry's excluded backend says nothing about
     * the others. */
    if (exclude < 0 && (healthy == 0) != r->reads_on_writer) {
        r->reads_on_writer = healthy == 0;
        if (r->reads_on_writer)
            sl_log_warn(r->tag, "no replica can take reads (down, lagging or promoted): reads go "
                                "to the primary");
        else
            sl_log_info(r->tag, "replicas take reads again");
    }
    if (n == 0) return r->writer;
    switch (r->balance) {
    case SL_LB_LATENCY:
        return latency_pick(r, cand, n);
    case SL_LB_ROUND_ROBIN:
        return round_robin(r, cand, n);
    case SL_LB_RANDOM:
        return weighted_random(r, cand, n, -1);
    default:
        return least_outstanding(r, cand, n);
    }
}

void sl_route_begin(sl_route_t *r, int i) {
    r->b[i].outstanding++;
}

void sl_route_end(sl_route_t *r, int i, uint64_t latency_us) {
    sl_backend_t *b = &r->b[i];
    if (b->outstanding > 0) b->outstanding--;
    ewma_add(b, latency_us);
}

void sl_route_fence_mark(sl_route_t *r, sl_fence_t *f) {
    route_sync(r); /* the writer's checks_sent as of now, not of the last look */
    f->set = r->writer >= 0;
    f->writer = r->writer;
    f->after = f->set ? r->b[r->writer].checks_sent : 0;
    f->lsn = 0;
}

/* ---- reload and shutdown ---- */

void sl_route_reconfigure_all(sl_loop_t *w) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->routes) {
        sl_route_t *r = sl_container_of(it, sl_route_t, node);
        if (r->retired) continue;
        bool automatic;
        const sl_db_cfg_t *db = sl_config_serving_db(w->cfg, r->db, &automatic);
        r->automatic = automatic;
        if (!db || db->nreplicas == 0) {
            /* Its clients keep it; their reads go to the primary now. */
            r->retired = true;
            r->routing = SL_ROUTE_PRIMARY;
            sl_health_stop(r);
            for (int i = 0; i < r->n; i++)
                if (i != r->writer) r->b[i].up = false;
            sl_log_info(r->tag, "replicas removed from the config: reads go to the primary");
            continue;
        }
        bool same = 1 + db->nreplicas == r->n;
        for (int i = 0; same && i < r->n; i++) {
            char addr[sizeof r->b[i].addr];
            backend_addr(db, i, addr, sizeof addr);
            same = !strcmp(addr, r->b[i].addr);
        }
        if (same) {
            take_settings(r, db);
            continue;
        }
        /* A changed list: checks start over on the new addresses. */
        sl_log_info(r->tag, "replica list changed: checking the new backends");
        sl_health_stop(r);
        int old_n = r->n;
        set_backends(r, db);
        for (int i = 0; i < r->n; i++)
            reset_backend(&r->b[i]);
        for (int i = r->n; i < old_n; i++)
            r->b[i].outstanding = 0;
        r->writer = 0;
        start_health(r);
    }
}

static void route_closed_cb(uv_handle_t *h) {
    sl_route_t *r = h->data;
    free(r->db), free(r->check_user);
    free(r);
}

static void route_close(sl_route_t *r) {
    sl_list_unlink(&r->node);
    sl_health_stop(r);
    uv_close((uv_handle_t *)&r->timer, route_closed_cb);
}

/* True when no client holds a pool of db, and none did for the last
 * autodb_idle_timeout. Every client attached to a route holds its
 * database's pool (client.c refs c->pool before sl_router_attach), so then
 * no client holds the route either. */
static bool db_unused(sl_loop_t *w, const char *db, int64_t now) {
    int64_t timeout = w->cfg->autodb_idle_timeout_ms;
    if (timeout <= 0) return false;
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->pools) {
        const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        if (strcmp(p->db_alias, db) != 0) continue;
        if (p->n_clients > 0 || p->n_waiting > 0 || now - p->unused_since_ms < timeout)
            return false;
    }
    return true;
}

bool sl_route_release_idle(sl_loop_t *w, const char *db, int64_t now) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->routes) {
        sl_route_t *r = sl_container_of(it, sl_route_t, node);
        if (strcmp(r->db, db) != 0) continue;
        /* Routes of named entries live as long as the config has them. */
        if (!r->automatic || !db_unused(w, db, now)) return false;
        sl_log_info(r->tag, "route closed after autodb_idle_timeout");
        route_close(r);
    }
    return true;
}

void sl_route_close_all(sl_loop_t *w) {
    while (!sl_list_empty(&w->routes)) {
        route_close(sl_container_of(sl_list_first(&w->routes), sl_route_t, node));
    }
}

const char *sl_route_backend_role(const sl_route_t *rt, int i) {
    if (!rt || i >= rt->n) return i == 0 ? "primary" : "replica";
    if (i == rt->writer) return "primary";
    return rt->b[i].in_recovery ? "replica" : "unknown";
}
