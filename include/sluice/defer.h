/* Deferred work: a per-loop queue of consequences that must not run on the
 * stack of whoever caused them. Closing or failing one object (a client, a
 * server, a pool's login) only marks it and queues what follows (hand a
 * free server to the next waiter, fail a pool's waiters); the queue is
 * drained from a libuv check handle after the current callbacks. A timer
 * walking a list therefore never sees the list change under it, and no
 * caller has to ask "was I closed meanwhile?" after a call. Knows nothing
 * of clients or pools: an entry is an embedded node and a callback. */
#ifndef SLUICE_DEFER_H
#define SLUICE_DEFER_H

#include <stdbool.h>
#include <uv.h>

#include "sluice/list.h"

typedef struct sl_defer sl_defer_t;
typedef void (*sl_defer_cb)(sl_defer_t *d);

/* Embedded in the object whose work it is; queued at most once at a time. */
struct sl_defer {
    sl_list_t node; /* on the queue while queued */
    sl_defer_cb cb; /* runs once per queueing; find the owner with sl_container_of */
    bool queued;
};

typedef struct sl_deferq {
    sl_list_t queue;  /* sl_defer_t, in the order they were queued */
    uv_check_t check; /* drains the queue after each round of I/O callbacks */
    uv_idle_t idle;   /* active while the queue is not empty: the loop must not block */
} sl_deferq_t;

void sl_defer_init(sl_defer_t *d, sl_defer_cb cb);
void sl_deferq_init(sl_deferq_t *dq, uv_loop_t *loop);
/* Closes the handles; entries still queued are dropped. */
void sl_deferq_close(sl_deferq_t *dq);
/* Queues d unless it is queued already. */
void sl_defer(sl_deferq_t *dq, sl_defer_t *d);
/* Takes d off the queue (its owner is going away). */
void sl_defer_cancel(sl_defer_t *d);

#endif
