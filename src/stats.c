/* The periodic stats line. */
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
