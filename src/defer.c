/* The deferred-work queue: see defer.h. */
#include "sluice/defer.h"

static void idle_cb(uv_idle_t *h) {
    /* Nothing to do here: an active idle handle makes the loop poll
     * without blocking, so the check handle drains on this round. */
    (void)h;
}

/* Runs what is queued now. The queue is taken as it is: an entry may queue
 * more work (itself included), which runs on the next round, so nothing can
 * spin here. An entry may also cancel one still waiting in the batch. */
static void check_cb(uv_check_t *h) {
    sl_deferq_t *dq = h->data;
    sl_list_t batch;
    sl_list_init(&batch);
    while (!sl_list_empty(&dq->queue)) {
        sl_list_t *n = dq->queue.next;
        sl_list_unlink(n);
        sl_list_push_back(&batch, n);
    }
    while (!sl_list_empty(&batch)) {
        sl_defer_t *d = sl_container_of(batch.next, sl_defer_t, node);
        sl_list_unlink(&d->node);
        d->queued = false;
        d->cb(d);
    }
    if (sl_list_empty(&dq->queue)) uv_idle_stop(&dq->idle);
}

void sl_defer_init(sl_defer_t *d, sl_defer_cb cb) {
    sl_list_init(&d->node);
    d->cb = cb;
    d->queued = false;
}

void sl_deferq_init(sl_deferq_t *dq, uv_loop_t *loop) {
    sl_list_init(&dq->queue);
    uv_check_init(loop, &dq->check);
    dq->check.data = dq;
    uv_check_start(&dq->check, check_cb);
    uv_unref((uv_handle_t *)&dq->check); /* it alone must not keep the loop alive */
    uv_idle_init(loop, &dq->idle);
    dq->idle.data = dq;
}

void sl_deferq_close(sl_deferq_t *dq) {
    while (!sl_list_empty(&dq->queue))
        sl_defer_cancel(sl_container_of(dq->queue.next, sl_defer_t, node));
    uv_close((uv_handle_t *)&dq->check, NULL);
    uv_close((uv_handle_t *)&dq->idle, NULL);
}

void sl_defer(sl_deferq_t *dq, sl_defer_t *d) {
    if (d->queued) return;
    d->queued = true;
    sl_list_push_back(&dq->queue, &d->node);
    if (!uv_is_active((uv_handle_t *)&dq->idle)) uv_idle_start(&dq->idle, idle_cb);
}

void sl_defer_cancel(sl_defer_t *d) {
    if (!d->queued) return;
    sl_list_unlink(&d->node);
    d->queued = false;
}
