/* Counters of what a worker did, and the periodic log line that reports
 * them (PgBouncer's stats_period / log_stats). Pure: no I/O besides the
 * text it formats. */
#ifndef SLUICE_STATS_H
#define SLUICE_STATS_H

#include <stddef.h>
#include <stdint.h>

/* Session state that pins a client to its server, by what created it. */
enum sl_pin_reason {
    SL_PIN_LISTEN,
    SL_PIN_TEMP,
    SL_PIN_PREPARE,
    SL_PIN_HOLD_CURSOR,
    SL_PIN_ADVISORY_LOCK,
    SL_PIN_NREASONS
};
extern const char *const sl_pin_reason_names[SL_PIN_NREASONS];

/* Latency histogram with fixed buckets (Prometheus style, but NOT cumulative
 * here: bucket[i] counts observations > bound[i-1] and <= bound[i]; one
 * above the last bound is only in count). An exporter sums the buckets up
 * to i for its cumulative `le` series, and count is the +Inf bucket. */
#define SL_HIST_NBUCKETS                                                                           \
    16 /* upper bounds in us: 100 250 500 1000 2500 5000 10000 25000 50000                         \
          100000 250000 500000 1000000 2500000 5000000 10000000 */
extern const uint64_t sl_hist_bounds_us[SL_HIST_NBUCKETS];
typedef struct sl_hist {
    uint64_t bucket[SL_HIST_NBUCKETS]; /* non-cumulative counts, see above */
    uint64_t count;                    /* every observation (the +Inf bucket) */
    uint64_t sum_us;                   /* their sum, microseconds */
} sl_hist_t;
void sl_hist_observe(sl_hist_t *h, uint64_t us);

/* SQLSTATE classes counted separately (the first two characters of the
 * code); the last index, "other", counts every other class. */
#define SL_ERR_NCLASSES 17
extern const char *const sl_err_class_names[SL_ERR_NCLASSES];
/* The index of sqlstate's class; the "other" index for NULL, a short or
 * an unknown code. */
int sl_err_class_index(const char *sqlstate);

/* Counters of one pool (database, user, backend), PgBouncer's meanings
 * (its src/stats.c). Only ever incremented; averages come from two
 * snapshots (sl_pool_stats_average). Times are microseconds. */
typedef struct sl_pool_stats {
    uint64_t server_assignment_count; /* times a client was given a server of the pool */
    uint64_t xact_count;              /* transactions ended (ReadyForQuery idle) */
    uint64_t query_count;             /* requests answered (one per ReadyForQuery), as PgBouncer */
    uint64_t bytes_received;          /* bytes read from clients, bytes */
    uint64_t bytes_sent;              /* bytes written to clients, bytes */
    uint64_t xact_time_us;            /* first request of a transaction to its end */
    uint64_t query_time_us;           /* a request on a server to its ReadyForQuery */
    uint64_t wait_time_us;            /* clients waiting for a server */
    uint64_t client_parse_count;      /* Parse messages from clients */
    uint64_t server_parse_count;      /* Parse messages sent to servers */
    uint64_t bind_count;              /* Bind messages from clients */
    uint64_t client_login_count;      /* client logins completed */
    uint64_t errors[SL_ERR_NCLASSES]; /* ErrorResponses sent to clients, by SQLSTATE class */
    sl_hist_t query_hist;             /* query time per request */
    sl_hist_t wait_hist;              /* wait time per wait that ended with a server */
} sl_pool_stats_t;

/* Averages over one stats_period, as PgBouncer's SHOW STATS reports them:
 * counts and bytes per second; times per transaction, per query and per
 * server assignment (wait), microseconds. */
typedef struct sl_pool_avg {
    uint64_t server_assignment_count, xact_count, query_count; /* per second */
    uint64_t bytes_received, bytes_sent;                       /* bytes per second */
    uint64_t xact_time_us;  /* per transaction ended in the period */
    uint64_t query_time_us; /* per query */
    uint64_t wait_time_us;  /* per server assignment */
    uint64_t client_parse_count, server_parse_count, bind_count, client_login_count; /* per s */
} sl_pool_avg_t;

/* Adds b's counters to a (SHOW STATS sums the pools of a database). */
void sl_pool_stats_add(sl_pool_stats_t *a, const sl_pool_stats_t *b);
/* Takes b's counters from a (a period's delta: a snapshot minus an older one). */
void sl_pool_stats_sub(sl_pool_stats_t *a, const sl_pool_stats_t *b);
/* The averages between snapshot prev and now, secs apart (<= 0: none). */
void sl_pool_stats_average(const sl_pool_stats_t *now, const sl_pool_stats_t *prev, double secs,
                           sl_pool_avg_t *out);

typedef struct sl_stats {
    uint64_t xact_count;              /* transactions ended (ReadyForQuery idle) */
    uint64_t query_count;             /* requests answered (one per ReadyForQuery), as PgBouncer */
    uint64_t server_assignment_count; /* times a client was given a server */
    uint64_t client_parse_count;      /* Parse messages from clients */
    uint64_t server_parse_count;      /* Parse messages sent to servers */
    uint64_t bind_count;              /* Bind messages from clients */
    uint64_t parse_answered;          /* client Parses sluice answered itself */
    uint64_t stmt_evicted;            /* server statements closed to stay in bounds */
    uint64_t pins[SL_PIN_NREASONS];   /* clients pinned, by reason */
    /* databases with replicas: where transactions went */
    uint64_t routed_replica;          /* reads served by a replica */
    uint64_t routed_primary_read;     /* reads the primary took (fence, lag, no replica) */
    uint64_t routed_write;            /* writes and read-write transactions */
    uint64_t read_retries;            /* reads moved to another backend after a failure */
    uint64_t errors[SL_ERR_NCLASSES]; /* ErrorResponses sent to clients, by SQLSTATE class,
                                         also those of clients with no pool yet (login) */
} sl_stats_t;

/* Formats the stats line for the period since `prev` (rates per second over
 * secs) followed by totals; returns its length. */
int sl_stats_format(const sl_stats_t *now, const sl_stats_t *prev, double secs, char *buf,
                    size_t cap);

#endif
