/* CancelRequest: sluice issued the key, so it finds the client and cancels
 * whatever that client's server runs right now. PQcancel blocks, so it runs
 * on the libuv thread pool with a PGcancel copied on the loop thread. */
#include "sluice/cancel.h"

#include <libpq-fe.h>
#include <stdlib.h>

#include "sluice/client.h"
#include "sluice/log.h"

typedef struct cancel_job {
    uv_work_t req;
    PGcancel *cancel; /* owned */
    char err[256];
    int ok;
    char tag[256];
} cancel_job_t;

static void cancel_work(uv_work_t *req) {
    cancel_job_t *job = req->data;
    job->ok = PQcancel(job->cancel, job->err, sizeof job->err);
}

static void cancel_after(uv_work_t *req, int status) {
    cancel_job_t *job = req->data;
    if (status == 0 && !job->ok) sl_log_warn(job->tag, "cancel failed: %s", job->err);
    PQfreeCancel(job->cancel);
    free(job);
}

int sl_cancel_forward(sl_worker_t *w, uint32_t pid, uint32_t key, const char *peer) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->clients) {
        sl_client_t *c = sl_container_of(it, sl_client_t, node);
        if (c->id != pid || c->cancel_key != key) continue;
        if (c->state == SL_CL_WAITING) {
            sl_client_cancel_wait(c);
            sl_log_info(c->tag, "cancel request from %s: dropped its queued request", peer);
            return 1;
        }
        sl_server_t *s = c->server;
        if (!s || s->state != SL_SV_ACTIVE || c->pending == 0) {
            sl_log_debug(c->tag, "cancel request from %s: nothing running", peer);
            return 0;
        }
        cancel_job_t *job = calloc(1, sizeof *job);
        if (!job) return 0;
        job->cancel = PQgetCancel(s->conn);
        if (!job->cancel) {
            free(job);
            return 0;
        }
        snprintf(job->tag, sizeof job->tag, "%s", c->tag);
        job->req.data = job;
        if (uv_queue_work(w->loop, &job->req, cancel_work, cancel_after) != 0) {
            PQfreeCancel(job->cancel);
            free(job);
            return 0;
        }
        sl_log_info(c->tag, "cancel request from %s forwarded to %s", peer, s->tag);
        return 1;
    }
    sl_log_debug(NULL, "cancel request from %s matched no client", peer);
    return 0;
}
