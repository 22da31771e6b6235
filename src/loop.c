/* The loop context's life: what every loop needs before its first client
 * and what is left to free after its last handle closed. */
#include "sluice/loop.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/err.h"

/* Blocks kept for reuse in the buffer free list: enough for a burst of
 * clients becoming active at once without a malloc each. */
#define SL_LOOP_BUFS_KEPT 1024

/* Before the poll (its callbacks come later) and after it (the timers of
 * the next round come later): the next sl_now_us reads the clock again. */
static void clock_stale(uv_prepare_t *h) {
    ((sl_loop_t *)h->data)->now_us = 0;
}
static void clock_stale_check(uv_check_t *h) {
    ((sl_loop_t *)h->data)->now_us = 0;
}

/* Takes what is queued now and runs it: a message may post again (to this
 * loop too), which lands in the next batch. */
static void inbox_run(sl_loop_t *l, bool live) {
    sl_list_t batch;
    sl_list_init(&batch);
    pthread_mutex_lock(&l->inbox_mu);
    while (!sl_list_empty(&l->inbox)) {
        sl_list_t *n = sl_list_first(&l->inbox);
        sl_list_unlink(n);
        sl_list_push_back(&batch, n);
    }
    pthread_mutex_unlock(&l->inbox_mu);
    while (!sl_list_empty(&batch)) {
        sl_loop_msg_t *m = sl_container_of(sl_list_first(&batch), sl_loop_msg_t, node);
        sl_list_unlink(&m->node);
        m->run(l, m, live);
    }
}

static void inbox_cb(uv_async_t *h) {
    inbox_run(h->data, true);
}

bool sl_loop_post(sl_loop_t *to, sl_loop_msg_t *m) {
    pthread_mutex_lock(&to->inbox_mu);
    bool open = !to->inbox_closed;
    if (open) {
        sl_list_push_back(&to->inbox, &m->node);
        /* uv_async_send is the one libuv call safe from another thread
         * (sends that come together are run once); under the mutex, so
         * that the handle cannot be closed between the check and it. */
        uv_async_send(&to->inbox_async);
    }
    pthread_mutex_unlock(&to->inbox_mu);
    return open;
}

int sl_loop_init(sl_loop_t *l, sl_config_t *cfg, char *err, size_t errlen) {
    memset(l, 0, sizeof *l);
    l->cfg = cfg;
    sl_list_init(&l->clients);
    for (int i = 0; i < SL_CL_NSTATES; i++)
        sl_list_init(&l->clients_in[i]);
    sl_list_init(&l->servers_closing);
    sl_list_init(&l->pools);
    sl_list_init(&l->retired_stats);
    sl_list_init(&l->routes);
    sl_list_init(&l->authq_cache);
    sl_list_init(&l->authq_retired);
    sl_list_init(&l->kicks.conns);
    sl_list_init(&l->inbox);
    /* Before the loop: a failure here then leaves nothing to close. */
    l->sql_cache = calloc(1, sizeof *l->sql_cache);
    if (!l->sql_cache) {
        snprintf(err, errlen, "out of memory for the query parser cache");
        return SL_ENOMEM;
    }
    l->loop = malloc(sizeof *l->loop);
    if (!l->loop || uv_loop_init(l->loop) != 0) {
        free(l->sql_cache);
        l->sql_cache = NULL;
        free(l->loop);
        l->loop = NULL;
        snprintf(err, errlen, "cannot create event loop: out of memory");
        return SL_ENOMEM;
    }
    sl_deferq_init(&l->defer, l->loop);
    pthread_mutex_init(&l->inbox_mu, NULL);
    uv_async_init(l->loop, &l->inbox_async, inbox_cb);
    l->inbox_async.data = l;
    /* Waiting for messages alone must not keep the loop alive. */
    uv_unref((uv_handle_t *)&l->inbox_async);
    uv_prepare_init(l->loop, &l->clock_prepare);
    uv_check_init(l->loop, &l->clock_check);
    l->clock_prepare.data = l->clock_check.data = l;
    uv_prepare_start(&l->clock_prepare, clock_stale);
    uv_check_start(&l->clock_check, clock_stale_check);
    /* they alone must not keep the loop alive */
    uv_unref((uv_handle_t *)&l->clock_prepare);
    uv_unref((uv_handle_t *)&l->clock_check);
    sl_bufpool_init(&l->bufs, (uint32_t)cfg->pkt_buf, SL_LOOP_BUFS_KEPT);
    return SL_OK;
}

void sl_loop_close(sl_loop_t *l) {
    pthread_mutex_lock(&l->inbox_mu);
    l->inbox_closed = true;
    pthread_mutex_unlock(&l->inbox_mu);
    inbox_run(l, false); /* what came before the door shut */
    uv_close((uv_handle_t *)&l->inbox_async, NULL);
    sl_deferq_close(&l->defer);
    uv_close((uv_handle_t *)&l->clock_prepare, NULL);
    uv_close((uv_handle_t *)&l->clock_check, NULL);
}

void sl_loop_destroy(sl_loop_t *l) {
    if (l->loop) free(l->loop);
    l->loop = NULL;
    sl_userlist_free(&l->users);
    sl_bufpool_destroy(&l->bufs);
    free(l->sql_cache);
    l->sql_cache = NULL;
    SSL_CTX_free(l->client_tls);
    l->client_tls = NULL;
    sl_hba_free(l->hba);
    l->hba = NULL;
    sl_stmt_registry_free(&l->stmts);
    pthread_mutex_destroy(&l->inbox_mu);
}
