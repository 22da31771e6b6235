/* CancelRequest: sluice issued the key, so it finds the client and cancels
 * whatever that client's server runs right now. PQcancel blocks, so it runs
 * on the libuv thread pool with a PGcancel copied on the loop thread. */
#include "session.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sluice/log.h"
#include "sluice/proto.h"

typedef struct cancel_job {
    uv_work_t req;
    PGcancel *cancel;             /* owned; NULL for a server sluice logged in to itself */
    struct sockaddr_storage addr; /* then: where it is, and its key */
    uint32_t pid, key;
    char err[256];
    int ok;
    char tag[256];
} cancel_job_t;

/* A CancelRequest on a new connection, as libpq's PQcancel sends it. */
static int send_cancel(cancel_job_t *job) {
    const struct sockaddr *sa = (const struct sockaddr *)&job->addr;
    socklen_t len = sa->sa_family == AF_UNIX   ? sizeof(struct sockaddr_un)
                    : sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                               : sizeof(struct sockaddr_in6);
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    uint8_t pkt[16];
    sl_put_be32(pkt, 16);
    sl_put_be32(pkt + 4, SL_PROTO_CANCEL);
    sl_put_be32(pkt + 8, job->pid);
    sl_put_be32(pkt + 12, job->key);
    int ok = fd >= 0 && connect(fd, sa, len) == 0 && send(fd, pkt, 16, MSG_NOSIGNAL) == 16;
    if (!ok) snprintf(job->err, sizeof job->err, "%s", strerror(errno));
    if (fd >= 0) {
        char c;
        (void)recv(fd, &c, 1, 0); /* the backend closes when done */
        close(fd);
    }
    return ok;
}

static void cancel_work(uv_work_t *req) {
    cancel_job_t *job = req->data;
    job->ok = job->cancel ? PQcancel(job->cancel, job->err, sizeof job->err) : send_cancel(job);
}

static void cancel_after(uv_work_t *req, int status) {
    cancel_job_t *job = req->data;
    if (status == 0 && !job->ok) sl_log_warn(job->tag, "cancel failed: %s", job->err);
    if (job->cancel) PQfreeCancel(job->cancel);
    free(job);
}

/* Sends a cancel for what s runs for c, off the loop; 1 if sent. */
static int cancel_server(sl_loop_t *w, sl_client_t *c, sl_server_t *s) {
    cancel_job_t *job = calloc(1, sizeof *job);
    if (!job) return 0;
    if (s->conn) {
        job->cancel = PQgetCancel(s->conn);
    } else {
        job->addr = s->addrs[s->addr_next > 0 ? s->addr_next - 1 : 0];
        job->pid = s->be_pid, job->key = s->be_key;
    }
    if (s->conn && !job->cancel) {
        free(job);
        return 0;
    }
    snprintf(job->tag, sizeof job->tag, "%s", sl_client_tag(c));
    job->req.data = job;
    s->cancel_sent = true;
    if (uv_queue_work(w->loop, &job->req, cancel_work, cancel_after) != 0) {
        if (job->cancel) PQfreeCancel(job->cancel);
        free(job);
        return 0;
    }
    return 1;
}

void sl_cancel_running(sl_client_t *c, sl_server_t *s) {
    if (s->state == SL_SV_ACTIVE && c->a->pending > 0 && cancel_server(c->w, c, s))
        sl_log_info(sl_client_tag(c), "cancel sent to %s, so that it stops the query at once",
                    s->tag);
}

int sl_cancel_forward(sl_loop_t *w, uint32_t pid, uint32_t key, const char *peer) {
    /* The kernel spreads new connections over the workers' sockets: the
     * cancel may have reached another worker than its client's, which the
     * key names. */
    int owner = sl_cancelkey_worker(pid);
    if (owner != w->worker_index && w->cancel_elsewhere) {
        if (w->cancel_elsewhere(w, owner, pid, key, peer)) return 1;
        sl_log_debug(NULL, "cancel request from %s names worker %d, which does not run", peer,
                     owner);
        return 0;
    }
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->clients) {
        sl_client_t *c = sl_container_of(it, sl_client_t, node);
        if (!sl_cancelkey_matches(pid, key, sl_client_cancel_pid(c), c->cancel_key)) continue;
        if (c->state == SL_CL_WAITING) {
            /* Its request has not reached a server: dropped now, or, when
             * its server is linked and still being given its settings,
             * once that is done (relay.c, setup_finish). */
            bool later = c->server != NULL;
            if (!sl_client_cancel_wait(c)) {
                sl_log_debug(sl_client_tag(c), "cancel request from %s: no whole request waits",
                             peer);
                return 0;
            }
            sl_log_info(sl_client_tag(c), "cancel request from %s: %s", peer,
                        later ? "its request is dropped once its server is set up"
                              : "dropped its queued request");
            return 1;
        }
        sl_server_t *s = c->server;
        if (!s || s->state != SL_SV_ACTIVE || c->a->pending == 0) {
            sl_log_debug(sl_client_tag(c), "cancel request from %s: nothing running", peer);
            return 0;
        }
        if (!cancel_server(w, c, s)) return 0;
        sl_log_info(sl_client_tag(c), "cancel request from %s forwarded to %s", peer, s->tag);
        return 1;
    }
    sl_log_debug(NULL, "cancel request from %s matched no client", peer);
    return 0;
}
