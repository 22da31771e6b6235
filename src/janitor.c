/* One timer per worker walks its clients and pools a few times a second.
 * Per-connection timers would cost a handle per idle client; a sweep is
 * O(connections) and cheap at this rate. */
#include "sluice/janitor.h"

#include "sluice/client.h"
#include "sluice/pool.h"

static void janitor_cb(uv_timer_t *t) {
    sl_worker_t *w = t->data;
    int64_t now = sl_now_ms(w);
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->clients) {
        sl_client_t *c = sl_container_of(it, sl_client_t, node);
        sl_client_tick(c, now);
    }
    sl_list_each(it, tmp, &w->pools) {
        sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        sl_pool_tick(p, now);
    }
}

void sl_janitor_start(sl_worker_t *w) {
    uv_timer_init(w->loop, &w->janitor);
    w->janitor.data = w;
    uv_timer_start(&w->janitor, janitor_cb, SL_JANITOR_PERIOD_MS, SL_JANITOR_PERIOD_MS);
}
