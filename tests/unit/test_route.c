/* route: backend choice by each load_balance mode and weights, fences
 * (resolved by the first writer check sent after the commit), lag by bytes
 * and by replay delay, ejection and re-admission, promotion. The route is
 * built by hand on a loop that never runs: no health check connects. */
#include <stdlib.h>
#include <string.h>

#include "sluice/config.h"
#include "sluice/health.h"
#include "sluice/log.h"
#include "sluice/route.h"
#include "unit/check.h"

static sl_loop_t w;

static sl_route_t *make_route(int w1, int w2) {
    sl_route_t *r = calloc(1, sizeof *r);
    r->w = &w;
    r->db = strdup("app");
    snprintf(r->tag, sizeof r->tag, "route db=app");
    r->n = 3;
    int weights[] = {1, w1, w2};
    for (int i = 0; i < 3; i++) {
        sl_backend_t *b = &r->b[i];
        b->route = r, b->idx = i, b->weight = weights[i], b->up = true;
        b->in_recovery = i > 0;
        snprintf(b->addr, sizeof b->addr, "10.0.0.%d:5432", i + 1);
    }
    r->rng = 12345;
    r->balance = w.cfg->load_balance;
    return r;
}

static void free_route(sl_route_t *r) {
    free(r->db);
    free(r);
}

/* One answered check of backend i, as health.c reports it. */
static void checked(sl_route_t *r, int i, bool standby, uint64_t lsn) {
    r->b[i].checks_sent++;
    r->b[i].checks_done = r->b[i].checks_sent;
    sl_route_checked(r, i, standby, lsn, 0, 100);
}

static void counts(sl_route_t *r, int picks, int *on) {
    on[0] = on[1] = on[2] = 0;
    for (int k = 0; k < picks; k++) {
        int b = sl_route_pick(r, false, NULL, -1);
        on[b]++;
        sl_route_begin(r, b);
        sl_route_end(r, b, 100);
    }
}

static void test_balance(void) {
    int on[3];
    sl_route_t *r = make_route(1, 1);
    w.cfg->load_balance = SL_LB_LEAST_OUTSTANDING;
    counts(r, 100, on);
    ASSERT_EQ(on[0], 0);
    ASSERT_EQ(on[1], 50); /* idle ties go in rotation */
    ASSERT_EQ(on[2], 50);
    r->b[1].outstanding = 3;
    ASSERT_EQ(sl_route_pick(r, false, NULL, -1), 2);
    ASSERT_EQ(sl_route_pick(r, false, NULL, 2), 1); /* excluded: the other one */
    r->b[1].outstanding = 0;
    ASSERT_EQ(sl_route_pick(r, true, NULL, -1), 0); /* writes: the primary */
    free_route(r);

    r = make_route(1, 3);
    /* (in flight + 1) / weight: 9 / 3 on weight 3 ties with 3 / 1 */
    r->b[2].outstanding = 8;
    r->b[1].outstanding = 2;
    int a = sl_route_pick(r, false, NULL, -1), b = sl_route_pick(r, false, NULL, -1);
    ASSERT_TRUE(a != b); /* a tie, in rotation */
    r->b[1].outstanding = 3;
    ASSERT_EQ(sl_route_pick(r, false, NULL, -1), 2);
    free_route(r);

    w.cfg->load_balance = SL_LB_ROUND_ROBIN;
    r = make_route(1, 3);
    counts(r, 400, on);
    ASSERT_EQ(on[1], 100);
    ASSERT_EQ(on[2], 300);
    free_route(r);

    w.cfg->load_balance = SL_LB_RANDOM;
    r = make_route(1, 3);
    counts(r, 4000, on);
    ASSERT_TRUE(on[1] > 800 && on[1] < 1200);
    ASSERT_EQ(on[1] + on[2], 4000);
    free_route(r);

    /* latency: of two, the lower EWMA times transactions in flight. */
    w.cfg->load_balance = SL_LB_LATENCY;
    r = make_route(1, 1);
    r->b[1].ewma_us = 1000, r->b[2].ewma_us = 100;
    for (int k = 0; k < 20; k++)
        ASSERT_EQ(sl_route_pick(r, false, NULL, -1), 2);
    r->b[2].outstanding = 20; /* 100 x 21 > 1000 x 1 */
    ASSERT_EQ(sl_route_pick(r, false, NULL, -1), 1);
    free_route(r);
    w.cfg->load_balance = SL_LB_LEAST_OUTSTANDING;
}

static void test_fence(void) {
    sl_route_t *r = make_route(1, 1);
    checked(r, 0, false, 1000);
    checked(r, 1, true, 1000);
    checked(r, 2, true, 1000);
    sl_fence_t f;
    sl_route_fence_mark(r, &f); /* a commit, after the writer's check 1 */
    ASSERT_TRUE(f.set);
    ASSERT_EQ(sl_route_pick(r, false, &f, -1), 0); /* not resolved yet: the primary */
    checked(r, 0, false, 1500);                    /* check 2: sent after the commit */
    checked(r, 0, false, 9000);                    /* check 3: later writes */
    checked(r, 1, true, 1400);
    checked(r, 2, true, 1500);
    for (int k = 0; k < 4; k++)
        ASSERT_EQ(sl_route_pick(r, false, &f, -1), 2);
    ASSERT_EQ(f.lsn, 1500); /* the first check after the commit, not the latest */
    checked(r, 1, true, 1600);
    int a = sl_route_pick(r, false, &f, -1), b = sl_route_pick(r, false, &f, -1);
    ASSERT_TRUE(a != b && a > 0 && b > 0);
    free_route(r);
}

static void test_lag(void) {
    sl_route_t *r = make_route(1, 1);
    w.cfg->max_replica_lag = 100;
    checked(r, 0, false, 5000);
    checked(r, 1, true, 4800);
    checked(r, 2, true, 4950);
    ASSERT_TRUE(r->b[1].lagging);
    ASSERT_TRUE(!r->b[2].lagging);
    for (int k = 0; k < 4; k++)
        ASSERT_EQ(sl_route_pick(r, false, NULL, -1), 2);
    checked(r, 1, true, 5000);
    ASSERT_TRUE(!r->b[1].lagging);
    /* Both behind: reads go to the primary. */
    checked(r, 0, false, 90000);
    ASSERT_TRUE(r->b[1].lagging && r->b[2].lagging);
    ASSERT_EQ(sl_route_pick(r, false, NULL, -1), 0);
    w.cfg->max_replica_lag = 0;
    /* A replay delay counts from the second check that sees it. */
    w.cfg->max_replica_lag_time_ms = 500;
    checked(r, 0, false, 100);
    r->b[1].checks_sent++, r->b[1].checks_done++;
    sl_route_checked(r, 1, true, 100, 2.0, 100);
    ASSERT_TRUE(!r->b[1].lagging);
    checked(r, 0, false, 100); /* the primary's checks do not count for it */
    checked(r, 0, false, 100);
    ASSERT_TRUE(!r->b[1].lagging);
    r->b[1].checks_sent++, r->b[1].checks_done++;
    sl_route_checked(r, 1, true, 100, 2.0, 100);
    ASSERT_TRUE(r->b[1].lagging);
    checked(r, 1, true, 100);
    ASSERT_TRUE(!r->b[1].lagging);
    w.cfg->max_replica_lag_time_ms = 0;
    free_route(r);
}

static void test_health(void) {
    sl_route_t *r = make_route(1, 1);
    w.cfg->health_check_failures = 3;
    sl_route_check_failed(r, 1, "refused");
    sl_route_check_failed(r, 1, "refused");
    ASSERT_TRUE(r->b[1].up);
    sl_route_check_failed(r, 1, "refused");
    ASSERT_TRUE(!r->b[1].up);
    for (int k = 0; k < 4; k++)
        ASSERT_EQ(sl_route_pick(r, false, NULL, -1), 2);
    checked(r, 1, true, 0);
    ASSERT_TRUE(r->b[1].up);

    /* The primary fails: no writer; a replica promoted takes writes. */
    for (int k = 0; k < 3; k++)
        sl_route_check_failed(r, 0, "refused");
    ASSERT_EQ(sl_route_pick(r, true, NULL, -1), -1);
    ASSERT_TRUE(sl_route_pick(r, false, NULL, -1) > 0); /* reads go on */
    checked(r, 2, false, 7000);
    ASSERT_EQ(r->writer, 2);
    ASSERT_EQ(sl_route_pick(r, true, NULL, -1), 2);
    for (int k = 0; k < 4; k++)
        ASSERT_EQ(sl_route_pick(r, false, NULL, -1), 1);
    /* The old primary comes back: the promoted one keeps the writes. */
    checked(r, 0, false, 6000);
    ASSERT_EQ(r->writer, 2);
    free_route(r);
}

/* The health timer wakes when a check is due or one in flight would time
 * out, not on a fixed short tick (it used to wake every 5 ms whatever the
 * periods said). */
static void test_health_schedule(void) {
    sl_route_t *r = make_route(1, 1);
    w.cfg->lsn_poll_period_ms = 500;
    w.cfg->health_check_period_ms = 2000;
    w.cfg->health_check_timeout_ms = 3000;
    int64_t now = 100000;
    uint64_t now_ns = 900ull * 1000000000ull;
    for (int i = 0; i < r->n; i++)
        r->b[i].next_check_ms = now + 500 + 10 * i; /* answered lsn_poll_period ago */
    ASSERT_EQ(sl_health_next_due_ms(r, now, now_ns), 500);
    r->b[0].next_check_ms = now + 2000; /* failed: retried after health_check_period */
    ASSERT_EQ(sl_health_next_due_ms(r, now, now_ns), 510);
    r->b[1].check_busy = true; /* in flight for 2.8 s: times out in 0.2 s */
    r->b[1].check_start_ns = now_ns - 2800ull * 1000000ull;
    ASSERT_EQ(sl_health_next_due_ms(r, now, now_ns), 200);
    r->b[2].next_check_ms = now - 7; /* overdue: at once */
    ASSERT_EQ(sl_health_next_due_ms(r, now, now_ns), 0);
    w.cfg->health_check_timeout_ms = 0; /* no timeout: a busy check sets no deadline */
    for (int i = 0; i < r->n; i++)
        r->b[i].check_busy = true;
    ASSERT_EQ(sl_health_next_due_ms(r, now, now_ns), -1);
    w.cfg->health_check_timeout_ms = 3000;
    for (int i = 0; i < r->n; i++)
        r->b[i].check_busy = false;

    /* The timer itself: one-shot, set for what is due. */
    uv_timer_init(w.loop, &r->timer);
    r->timer.data = r;
    sl_health_start(r); /* every check is due at once */
    ASSERT_TRUE(uv_is_active((uv_handle_t *)&r->timer));
    ASSERT_EQ(uv_timer_get_due_in(&r->timer), 0);
    ASSERT_EQ(uv_timer_get_repeat(&r->timer), 0);
    int64_t t = sl_now_ms(&w);
    r->b[1].next_check_ms = t + 500, r->b[2].next_check_ms = t + 500;
    sl_health_reconnect(&r->b[0]); /* ejected: its next try is 2 s away, the others' 0.5 s */
    ASSERT_EQ(r->b[0].next_check_ms, t + 2000);
    ASSERT_EQ(uv_timer_get_due_in(&r->timer), 500);
    sl_health_stop(r);
    ASSERT_TRUE(!uv_is_active((uv_handle_t *)&r->timer));
    uv_close((uv_handle_t *)&r->timer, NULL);
    uv_run(w.loop, UV_RUN_NOWAIT);
    free_route(r);
}

int main(void) {
    char err[512];
    w.cfg = sl_config_load_string("t.ini", "[sluice]\nauth_type = trust\n", err, sizeof err);
    if (!w.cfg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    w.loop = malloc(sizeof *w.loop);
    uv_loop_init(w.loop);
    sl_list_init(&w.pools);
    sl_list_init(&w.routes);
    sl_log_set_level(SL_LOG_ERROR);
    test_balance();
    test_fence();
    test_lag();
    test_health();
    test_health_schedule();
    uv_loop_close(w.loop);
    free(w.loop);
    sl_config_free(w.cfg);
    return check_done("test_route");
}
