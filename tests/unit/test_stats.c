/* stats: histogram bucket edges, SQLSTATE class mapping, pool sums and
 * period averages. */
#include "sluice/stats.h"
#include "unit/check.h"

static void test_hist_edges(void) {
    sl_hist_t h = {0};
    /* Each bound falls in its own bucket; one above it in the next. */
    for (int i = 0; i < SL_HIST_NBUCKETS; i++) {
        sl_hist_observe(&h, sl_hist_bounds_us[i]);
        ASSERT_EQ(h.bucket[i], 1);
        sl_hist_observe(&h, sl_hist_bounds_us[i] + 1);
        if (i + 1 < SL_HIST_NBUCKETS) ASSERT_EQ(h.bucket[i + 1], 1);
        if (i + 1 < SL_HIST_NBUCKETS) h.bucket[i + 1] = 0;
    }
    /* The last "+1" is above every bound: only in count (+Inf). */
    uint64_t in_buckets = 0;
    for (int i = 0; i < SL_HIST_NBUCKETS; i++)
        in_buckets += h.bucket[i];
    ASSERT_EQ(in_buckets, SL_HIST_NBUCKETS);
    ASSERT_EQ(h.count, 2 * SL_HIST_NBUCKETS);
    sl_hist_t z = {0};
    sl_hist_observe(&z, 0);
    ASSERT_EQ(z.bucket[0], 1);
    ASSERT_EQ(z.sum_us, 0);
    sl_hist_observe(&z, 20000000);
    ASSERT_EQ(z.count, 2);
    ASSERT_EQ(z.sum_us, 20000000);
}

static void test_err_classes(void) {
    ASSERT_STREQ(sl_err_class_names[sl_err_class_index("28P01")], "28");
    ASSERT_STREQ(sl_err_class_names[sl_err_class_index("08006")], "08");
    ASSERT_STREQ(sl_err_class_names[sl_err_class_index("42501")], "42");
    ASSERT_STREQ(sl_err_class_names[sl_err_class_index("57014")], "57");
    ASSERT_STREQ(sl_err_class_names[sl_err_class_index("XX000")], "XX");
    ASSERT_STREQ(sl_err_class_names[sl_err_class_index("0A000")], "0A");
    ASSERT_STREQ(sl_err_class_names[sl_err_class_index("HV000")], "other");
    ASSERT_EQ(sl_err_class_index(NULL), SL_ERR_NCLASSES - 1);
    ASSERT_EQ(sl_err_class_index("4"), SL_ERR_NCLASSES - 1);
    ASSERT_EQ(sl_err_class_index(""), SL_ERR_NCLASSES - 1);
    /* Every named class maps to itself. */
    for (int i = 0; i < SL_ERR_NCLASSES - 1; i++)
        ASSERT_EQ(sl_err_class_index(sl_err_class_names[i]), i);
}

static void test_average(void) {
    sl_pool_stats_t prev = {0}, now = {0};
    prev.xact_count = 100;
    prev.xact_time_us = 1000;
    now.xact_count = 300;                /* 200 in 10 s: 20/s */
    now.xact_time_us = 1000 + 200 * 150; /* 150 us each */
    now.query_count = 400;
    now.query_time_us = 400 * 50;
    now.server_assignment_count = 10;
    now.wait_time_us = 10 * 7000;
    now.bytes_received = 12345;
    sl_pool_avg_t a;
    sl_pool_stats_average(&now, &prev, 10.0, &a);
    ASSERT_EQ(a.xact_count, 20);
    ASSERT_EQ(a.xact_time_us, 150);
    ASSERT_EQ(a.query_count, 40);
    ASSERT_EQ(a.query_time_us, 50);
    ASSERT_EQ(a.wait_time_us, 7000);
    ASSERT_EQ(a.bytes_received, 1235);
    sl_pool_stats_average(&now, &now, 10.0, &a);
    ASSERT_EQ(a.xact_time_us, 0); /* no transaction: no division by zero */
    sl_pool_stats_t sum = {0};
    sl_pool_stats_add(&sum, &now);
    sl_pool_stats_add(&sum, &now);
    ASSERT_EQ(sum.query_count, 800);
    /* A period's delta: the newer snapshot minus the older, field by field. */
    sl_pool_stats_t delta = now;
    sl_pool_stats_sub(&delta, &prev);
    ASSERT_EQ(delta.xact_count, 200);
    ASSERT_EQ(delta.xact_time_us, 200 * 150);
    ASSERT_EQ(delta.query_count, 400);
    sl_hist_observe(&sum.wait_hist, 300);
    sl_pool_stats_t d2 = sum;
    sl_pool_stats_sub(&d2, &now);
    ASSERT_EQ(d2.wait_hist.count, 1);
    ASSERT_EQ(d2.wait_hist.bucket[2], 1);
    ASSERT_EQ(d2.query_count, 400);
}

int main(void) {
    test_hist_edges();
    test_err_classes();
    test_average();
    return check_done("test_stats");
}
