/* The periodic sweep of a worker: client timeouts and pool upkeep. */
#ifndef SLUICE_JANITOR_H
#define SLUICE_JANITOR_H

#include "sluice/worker.h"

#define SL_JANITOR_PERIOD_MS 200

void sl_janitor_start(sl_worker_t *w);

#endif
