/* CancelRequest handling: a key issued by sluice is matched to its client and
 * turned into a cancel of the backend that client holds right now, sent with
 * libpq's PQcancel on the libuv thread pool (it blocks). */
#ifndef SLUICE_CANCEL_H
#define SLUICE_CANCEL_H

#include <stdint.h>

#include "sluice/loop.h"

/* Returns 1 if a cancel was sent, 0 if the key matched nothing to cancel. */
int sl_cancel_forward(sl_loop_t *w, uint32_t pid, uint32_t key, const char *peer);

#endif
