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

typedef struct sl_stats {
    uint64_t xact_count;              /* transactions ended (ReadyForQuery idle) */
    uint64_t query_count;             /* Query and Execute messages from clients */
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
} sl_stats_t;

/* Formats the stats line for the period since `prev` (rates per second over
 * secs) followed by totals; returns its length. */
int sl_stats_format(const sl_stats_t *now, const sl_stats_t *prev, double secs, char *buf,
                    size_t cap);

#endif
