/* One timer per worker walks its clients and pools a few times a second.
 * Per-connection timers would cost a handle per idle client; a sweep is
 * O(connections) and cheap at this rate. */
#include "sluice/janitor.h"

#include <string.h>

#include "sluice/log.h"
#include "sluice/pool.h"
#include "sluice/session.h"
#include "sluice/workers.h"

static int walk_len(const sl_list_t *l) {
    int n = 0;
    for (const sl_list_t *it = l->next; it != l; it = it->next)
        n++;
    return n;
}

/* Clients and servers by state, counted by walking the lists they sit on
 * (state is location): what SHOW CLIENTS / SHOW SERVERS will walk too. */
static void append_states(sl_worker_t *w, char *buf, size_t cap) {
    int cl[SL_CL_NSTATES] = {0}, sv[SL_SV_NSTATES] = {0};
    for (int i = 0; i < sl_workers_count(w); i++) {
        const sl_worker_t *o = sl_workers_at(w, i);
        if (!o) continue;
        const sl_loop_t *l = &o->core;
        for (int st = 0; st < SL_CL_NSTATES; st++)
            cl[st] += walk_len(&l->clients_in[st]);
        for (const sl_list_t *it = l->pools.next; it != &l->pools; it = it->next) {
            const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
            for (int st = 0; st < SL_SV_CLOSING; st++)
                sv[st] += walk_len(&p->servers.in[st]);
        }
        sv[SL_SV_CLOSING] += walk_len(&l->servers_closing);
    }
    size_t n = strlen(buf);
    n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "; clients by state:");
    for (int st = 0; st < SL_CL_NSTATES && n < cap; st++)
        n += (size_t)snprintf(buf + n, cap - n, " cl_%s=%d", sl_client_state_names[st], cl[st]);
    if (n < cap) n += (size_t)snprintf(buf + n, cap - n, "; pool servers by state:");
    for (int st = 0; st < SL_SV_NSTATES && n < cap; st++)
        n += (size_t)snprintf(buf + n, cap - n, " sv_%s=%d", sl_server_state_names[st], sv[st]);
}

/* The counters of every worker, summed (sl_stats_t is counters only). */
static void stats_sum(sl_worker_t *w, sl_stats_t *sum) {
    _Static_assert(sizeof(sl_stats_t) % sizeof(uint64_t) == 0, "sl_stats_t is uint64_t only");
    memset(sum, 0, sizeof *sum);
    for (int i = 0; i < sl_workers_count(w); i++) {
        const sl_worker_t *o = sl_workers_at(w, i);
        const uint64_t *y = o ? (const uint64_t *)&o->core.stats : NULL;
        for (size_t k = 0; y && k < sizeof *sum / sizeof *y; k++)
            ((uint64_t *)sum)[k] += y[k];
    }
}

/* The stats line, every stats_period: one for the process, written by
 * worker 0 with the others frozen for the time of the sums. */
static void stats_tick(sl_worker_t *w, int64_t now) {
    int64_t period = w->core.cfg->stats_period_ms;
    if (period <= 0 || now - w->stats_ms < period) return;
    sl_stats_t all = w->core.stats;
    if (w->core.cfg->log_stats && w->core.worker_index == 0) {
        char line[1536];
        sl_workers_freeze(w);
        stats_sum(w, &all);
        sl_stats_format(&all, &w->stats_prev, (double)(now - w->stats_ms) / 1000.0, line,
                        sizeof line);
        append_states(w, line, sizeof line);
        sl_workers_thaw(w);
        sl_log_info(NULL, "%s", line);
    }
    /* What each pool added over the period that just ended, for SHOW STATS's
     * avg_* columns (they stay as they are until the next one, as in PgBouncer). */
    sl_list_t *it;
    for (it = w->core.pools.next; it != &w->core.pools; it = it->next) {
        sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        p->stats_delta = p->stats;
        sl_pool_stats_sub(&p->stats_delta, &p->stats_prev);
        p->stats_delta_ms = now - w->stats_ms;
        p->stats_prev = p->stats;
    }
    w->stats_prev = all;
    w->stats_ms = now;
}

static void janitor_cb(uv_timer_t *t) {
    sl_worker_t *w = t->data;
    int64_t now = sl_now_ms(&w->core);
    /* SUSPEND froze every client: no timeout runs while nothing can move. */
    if (w->core.suspended) return;
    sl_session_tick_all(&w->core, now);
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->core.pools) {
        sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        sl_pool_tick(p, now);
    }
    stats_tick(w, now);
    /* SHUTDOWN WAIT_FOR_CLIENTS: clients leave on their own. */
    if (w->core.draining) sl_worker_maybe_finish(w);
}

void sl_janitor_start(sl_worker_t *w) {
    uv_timer_init(w->core.loop, &w->janitor);
    w->janitor.data = w;
    w->stats_ms = sl_now_ms(&w->core);
    uv_timer_start(&w->janitor, janitor_cb, SL_JANITOR_PERIOD_MS, SL_JANITOR_PERIOD_MS);
}
