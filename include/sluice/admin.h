/* The admin console: PgBouncer's SHOW commands and controls, served to
 * clients of the virtual databases pgbouncer and sluice. The session
 * module logs them in and frames their messages; this module answers. */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include "sluice/worker.h"

/* Wires the console into w's loop (its console_query hook). */
void sl_admin_attach(sl_worker_t *w);

#endif
