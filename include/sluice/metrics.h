/* The worker's HTTP endpoint for monitoring (metrics_listen): GET /metrics
 * in the Prometheus text format, /health for load balancers, /ready for
 * orchestrators. It owns its listening socket and its connections, all on
 * the worker's loop; it reads the loop's lists and counters and changes
 * nothing in them. Off when metrics_listen is empty. */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stddef.h>

#include "sluice/err.h"
#include "sluice/worker.h"

/* Opens w's endpoint if metrics_listen is set (w->metrics stays NULL
 * otherwise). On failure writes why into err. */
int sl_metrics_open(sl_worker_t *w, char *err, size_t errlen) SL_MUST_USE;
/* Closes the listening socket and every connection; the memory goes in
 * the handles' close callbacks. Safe when the endpoint is off. */
void sl_metrics_close(sl_worker_t *w);

#endif
