/* Counters: the periodic stats line, the per-pool counters' sums and
 * averages, the histograms' buckets and the SQLSTATE classes. */
#include "sluice/stats.h"

#include <stdio.h>

const char *const sl_pin_reason_names[SL_PIN_NREASONS] = {
    "listen", "temp_object", "sql_prepare", "hold_cursor", "advisory_lock"};

int sl_stats_format(const sl_stats_t *now, const sl_stats_t *prev, double secs, char *buf,
                    size_t cap) {
    if (secs <= 0) secs = 1;
#define RATE(f) (double)(now->f - prev->f) / secs
    int n = snprintf(buf, cap,
                     "stats: %.0f xacts/s, %.0f queries/s, %.0f server assignments/s, "
                     "parses/s client %.0f server %.0f, %.0f binds/s; totals: xacts=%llu "
                     "queries=%llu client_parses=%llu server_parses=%llu binds=%llu "
                     "parses_answered_by_sluice=%llu statements_evicted=%llu pins:",
                     RATE(xact_count), RATE(query_count), RATE(server_assignment_count),
                     RATE(client_parse_count), RATE(server_parse_count), RATE(bind_count),
                     (unsigned long long)now->xact_count, (unsigned long long)now->query_count,
                     (unsigned long long)now->client_parse_count,
                     (unsigned long long)now->server_parse_count,
                     (unsigned long long)now->bind_count,
                     (unsigned long long)now->parse_answered,
                     (unsigned long long)now->stmt_evicted);
#undef RATE
    for (int i = 0; i < SL_PIN_NREASONS && n >= 0 && (size_t)n < cap; i++)
        n += snprintf(buf + n, cap - (size_t)n, " %s=%llu", sl_pin_reason_names[i],
                      (unsigned long long)now->pins[i]);
    if (n >= 0 && (size_t)n < cap)
        n += snprintf(buf + n, cap - (size_t)n,
                      "; routed: replica_reads=%llu primary_reads=%llu writes=%llu "
                      "read_retries=%llu",
                      (unsigned long long)now->routed_replica,
                      (unsigned long long)now->routed_primary_read,
                      (unsigned long long)now->routed_write,
                      (unsigned long long)now->read_retries);
    return n;
}

const uint64_t sl_hist_bounds_us[SL_HIST_NBUCKETS] = {
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};

void sl_hist_observe(sl_hist_t *h, uint64_t us) {
    h->count++;
    h->sum_us += us;
    /* Binary search: the first bound >= us. */
    int lo = 0, hi = SL_HIST_NBUCKETS;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (sl_hist_bounds_us[mid] < us)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < SL_HIST_NBUCKETS) h->bucket[lo]++;
}

/* The classes an operator acts on differently: connection (08), feature
 * (0A), data (22), constraints (23), transaction state (25), auth (28),
 * no such database (3D), rollbacks and deadlocks (40), syntax and access
 * (42), resources (53), limits (54), object state (55), operator
 * intervention and cancels (57), system (58), PL/pgSQL (P0), internal (XX). */
const char *const sl_err_class_names[SL_ERR_NCLASSES] = {"08", "0A", "22", "23", "25",   "28",
                                                         "3D", "40", "42", "53", "54",   "55",
                                                         "57", "58", "P0", "XX", "other"};

int sl_err_class_index(const char *sqlstate) {
    if (!sqlstate || !sqlstate[0] || !sqlstate[1]) return SL_ERR_NCLASSES - 1;
    for (int i = 0; i < SL_ERR_NCLASSES - 1; i++)
        if (sl_err_class_names[i][0] == sqlstate[0] && sl_err_class_names[i][1] == sqlstate[1])
            return i;
    return SL_ERR_NCLASSES - 1;
}

static void hist_add(sl_hist_t *a, const sl_hist_t *b) {
    for (int i = 0; i < SL_HIST_NBUCKETS; i++)
        a->bucket[i] += b->bucket[i];
    a->count += b->count;
    a->sum_us += b->sum_us;
}

void sl_pool_stats_add(sl_pool_stats_t *a, const sl_pool_stats_t *b) {
    a->server_assignment_count += b->server_assignment_count;
    a->xact_count += b->xact_count;
    a->query_count += b->query_count;
    a->bytes_received += b->bytes_received;
    a->bytes_sent += b->bytes_sent;
    a->xact_time_us += b->xact_time_us;
    a->query_time_us += b->query_time_us;
    a->wait_time_us += b->wait_time_us;
    a->client_parse_count += b->client_parse_count;
    a->server_parse_count += b->server_parse_count;
    a->bind_count += b->bind_count;
    a->client_login_count += b->client_login_count;
    for (int i = 0; i < SL_ERR_NCLASSES; i++)
        a->errors[i] += b->errors[i];
    hist_add(&a->query_hist, &b->query_hist);
    hist_add(&a->wait_hist, &b->wait_hist);
}

/* sl_pool_stats_sub walks the struct as an array of counters. */
_Static_assert(sizeof(sl_pool_stats_t) % sizeof(uint64_t) == 0 &&
                   sizeof(sl_pool_stats_t) ==
                       (12 + SL_ERR_NCLASSES + 2 * (SL_HIST_NBUCKETS + 2)) * sizeof(uint64_t),
               "sl_pool_stats_t holds uint64_t counters only");

void sl_pool_stats_sub(sl_pool_stats_t *a, const sl_pool_stats_t *b) {
    /* Counters only grow: a - b >= 0 field by field. Done as whole
     * arrays of uint64_t, which the struct is. */
    uint64_t *pa = (uint64_t *)a;
    const uint64_t *pb = (const uint64_t *)b;
    for (size_t i = 0; i < sizeof *a / sizeof(uint64_t); i++)
        pa[i] = pa[i] >= pb[i] ? pa[i] - pb[i] : 0;
}

void sl_pool_stats_average(const sl_pool_stats_t *now, const sl_pool_stats_t *prev, double secs,
                           sl_pool_avg_t *out) {
    *out = (sl_pool_avg_t){0};
    if (secs <= 0) return;
#define DELTA(f) (now->f >= prev->f ? now->f - prev->f : 0)
#define RATE(f) (uint64_t)((double)DELTA(f) / secs + 0.5)
#define PER(f, by) (DELTA(by) ? DELTA(f) / DELTA(by) : 0)
    out->server_assignment_count = RATE(server_assignment_count);
    out->xact_count = RATE(xact_count);
    out->query_count = RATE(query_count);
    out->bytes_received = RATE(bytes_received);
    out->bytes_sent = RATE(bytes_sent);
    out->client_parse_count = RATE(client_parse_count);
    out->server_parse_count = RATE(server_parse_count);
    out->bind_count = RATE(bind_count);
    out->client_login_count = RATE(client_login_count);
    out->xact_time_us = PER(xact_time_us, xact_count);
    out->query_time_us = PER(query_time_us, query_count);
    out->wait_time_us = PER(wait_time_us, server_assignment_count);
#undef PER
#undef RATE
#undef DELTA
}
