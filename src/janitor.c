/* One timer per worker walks its clients and pools a few times a second.
 * Per-connection timers would cost a handle per idle client; a sweep is
 * O(connections) and cheap at this rate. */
#include "sluice/janitor.h"

#include "sluice/client.h"
#include "sluice/log.h"
#include "sluice/pool.h"

/* The stats line, every stats_period. */
static void stats_tick(sl_worker_t *w, int64_t now) {
    int64_t period = w->core.cfg->stats_period_ms;
    if (period <= 0 || now - w->stats_ms < period) return;
    if (w->core.cfg->log_stats) {
        char line[1024];
        sl_stats_format(&w->core.stats, &w->stats_prev, (double)(now - w->stats_ms) / 1000.0, line,
                        sizeof line);
        sl_log_info(NULL, "%s", line);
    }
    w->stats_prev = w->core.stats;
    w->stats_ms = now;
}

static void janitor_cb(uv_timer_t *t) {
    sl_worker_t *w = t->data;
    int64_t now = sl_now_ms(&w->core);
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->core.clients) {
        sl_client_t *c = sl_container_of(it, sl_client_t, node);
        sl_client_tick(c, now);
    }
    sl_list_each(it, tmp, &w->core.pools) {
        sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        sl_pool_tick(p, now);
    }
    stats_tick(w, now);
}

void sl_janitor_start(sl_worker_t *w) {
    uv_timer_init(w->core.loop, &w->janitor);
    w->janitor.data = w;
    w->stats_ms = sl_now_ms(&w->core);
    uv_timer_start(&w->janitor, janitor_cb, SL_JANITOR_PERIOD_MS, SL_JANITOR_PERIOD_MS);
}
