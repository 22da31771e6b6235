/* A worker: one libuv loop and everything it runs (listeners, clients, pools,
 * buffers). All runtime state hangs off it, never off globals, so that more
 * workers are an addition. Lower modules read loop, cfg and bufs from it. */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "sluice/buf.h"
#include "sluice/config.h"
#include "sluice/defer.h"
#include "sluice/hba.h"
#include "sluice/list.h"
#include "sluice/sql.h"
#include "sluice/stats.h"
#include "sluice/stmt.h"
#include "sluice/userlist.h"

struct sl_listener;

typedef struct sl_worker {
    uv_loop_t *loop;         /* owned */
    sl_config_t *cfg;        /* owned */
    sl_userlist_t users;     /* owned: the auth_file */
    sl_hba_t *hba;           /* owned: the auth_hba_file, for auth_type = hba */
    sl_list_t authq_cache;   /* auth_query answers (authq.c) */
    sl_list_t authq_retired; /* replaced answers, kept while logins may use them */
    sl_bufpool_t bufs;       /* pkt_buf-sized blocks for active connections */
    sl_list_t clients;       /* every sl_client_t */
    sl_list_t pools;         /* every sl_pool_t */
    sl_list_t routes;        /* sl_route_t of databases with replicas (route.c) */
    int nclients;            /* on clients */
    uint32_t next_client_id; /* ids for tags and BackendKeyData */
    uint32_t next_server_id;
    struct sl_listener *listeners; /* owned list */
    uv_timer_t janitor;            /* periodic timeouts and pool upkeep */
    sl_deferq_t defer;             /* consequences of closes and releases, run later */
    uv_signal_t sig_int, sig_term, sig_hup;
    sl_sql_cache_t *sql_cache; /* owned: parser answers by query text */
    sl_stmt_registry_t stmts;  /* named prepared statements of every client */
    struct sl_ps *ps_free;     /* owned: relay states kept for reuse (prepare.c) */
    int ps_nfree;
    SSL_CTX *client_tls;       /* owned reference; NULL when client TLS is off */
    uint8_t mock_secret[32];   /* random at start: salts of users that do not exist */
    sl_list_t kicks;           /* clients with TLS bytes poll cannot see (client.c) */
    uv_idle_t kick_idle;       /* runs them before the loop blocks again */
    sl_stats_t stats;          /* counters since start */
    sl_stats_t stats_prev;     /* as of the last stats line */
    int64_t stats_ms;          /* when the last stats line was due */
    bool shutting_down; /* SIGTERM: no new clients, close each after its transaction */
    bool stopping;      /* handles are being closed */
    int exit_code;
} sl_worker_t;

/* Milliseconds on the loop's clock. */
static inline int64_t sl_now_ms(const sl_worker_t *w) { return (int64_t)uv_now(w->loop); }

int sl_worker_init(sl_worker_t *w, sl_config_t *cfg, char *err, size_t errlen);
int sl_worker_run(sl_worker_t *w);
/* Checks whether a graceful shutdown has finished and stops the loop if so. */
void sl_worker_maybe_finish(sl_worker_t *w);

#endif
