/* Health checks of a route's backends: one libpq connection per backend,
 * on the worker's loop, asking every lsn_poll_period whether it is a standby
 * and where its WAL is (the writer's insert position, a standby's replay
 * position and delay). Answers and failures go to the route. A failed check
 * is retried after health_check_period; one that takes longer than
 * health_check_timeout counts as failed. */
#ifndef SLUICE_HEALTH_H
#define SLUICE_HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sl_route;
struct sl_config;
struct sl_backend;

/* Starts the checks: the route's timer runs only when a check is due or
 * one in flight would time out. */
void sl_health_start(struct sl_route *r);
/* Stops the checks and closes their connections (the timer stays open). */
void sl_health_stop(struct sl_route *r);
/* The backend was ejected: its check connection is dropped, so that only
 * a new connection answering re-admits it. */
void sl_health_reconnect(struct sl_backend *b);
/* How often a backend is checked (lsn_poll_period, at most
 * health_check_period), in ms. */
int64_t sl_health_poll_period_ms(const struct sl_config *cfg);
/* Milliseconds from now_ms (loop clock) and now_ns (uv_hrtime) until the
 * route's next check is due or a check in flight times out; -1 when
 * neither can happen (every check waits for an answer, without a timeout). */
int64_t sl_health_next_due_ms(const struct sl_route *r, int64_t now_ms, uint64_t now_ns);

#endif
