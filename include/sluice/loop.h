/* The low loop context: what the connection core (clients, servers, pools,
 * routes, auth) needs from the event loop it runs on, and nothing of how the
 * loop is set up or run (listeners, janitor, signals live in the worker,
 * which embeds this). Core modules include this header, never worker.h, so
 * that dependencies point down: worker -> core -> loop. All runtime state
 * hangs off it, never off globals, so that more loops are an addition. */
#ifndef SLUICE_LOOP_H
#define SLUICE_LOOP_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "sluice/buf.h"
#include "sluice/cancelkey.h"
#include "sluice/config.h"
#include "sluice/conn.h"
#include "sluice/defer.h"
#include "sluice/hba.h"
#include "sluice/list.h"
#include "sluice/sql.h"
#include "sluice/stats.h"
#include "sluice/stmt.h"
#include "sluice/userlist.h"

/* Client states (see src/session/session.h), here because the loop keeps one list of
 * clients per state: a client's state and the list it is on change together
 * in sl_client_set_state. */
enum sl_client_state {
    SL_CL_LOGIN,      /* reading the startup packet */
    SL_CL_AUTH,       /* password exchange */
    SL_CL_LOGIN_WAIT, /* authenticated, waiting for a first server: its pool has no
                         cached parameters to answer the login with yet */
    SL_CL_IDLE,       /* no server; nothing pending (transaction/statement mode) */
    SL_CL_WAITING,    /* has a request, waiting for a server */
    SL_CL_ACTIVE,     /* linked to a server */
    SL_CL_CLOSING,    /* handle closing; freed in its close callback */
    SL_CL_NSTATES
};

/* Who sent a Query to the admin console (see console_query below). */
typedef struct sl_console_who {
    uint32_t client_id; /* C-<id> of the console connection */
    const char *user;   /* borrowed: the user it logged in as */
    bool admin;         /* admin_users (or the Unix-socket peer running sluice); else
                           stats_users: SHOW only */
} sl_console_who_t;

struct sl_loop;
struct sl_ledger;

/* A message for a loop, posted from any thread (sl_loop_post) and run on
 * the loop's own thread: the only way one loop hands something to another.
 * The poster embeds it in what it sends. */
typedef struct sl_loop_msg sl_loop_msg_t;
struct sl_loop_msg {
    sl_list_t node; /* on the target's inbox while queued */
    /* Runs on the target loop's thread. live: the loop runs; false when it
     * is closing (sl_loop_close): the message is to be disposed of, its
     * loop still runs close callbacks but takes nothing new. */
    void (*run)(struct sl_loop *l, sl_loop_msg_t *m, bool live);
};

typedef struct sl_loop {
    uv_loop_t *loop;         /* owned */
    sl_config_t *cfg;        /* owned */
    sl_userlist_t users;     /* owned: the auth_file */
    sl_hba_t *hba;           /* owned: the auth_hba_file, for auth_type = hba */
    sl_list_t authq_cache;   /* auth_query answers (authq.c) */
    sl_list_t authq_retired; /* replaced answers, kept while logins may use them */
    sl_bufpool_t bufs;       /* pkt_buf-sized blocks for active connections */
    sl_list_t clients;       /* every sl_client_t not closing, by its node: walks that may
                                change clients' states (janitor, shutdown) go over this */
    sl_list_t clients_in[SL_CL_NSTATES]; /* sl_client_t by state, by its state_node:
                                            where a client is says what it is doing */
    int nclients_in[SL_CL_NSTATES];      /* clients on each of those lists */
    sl_list_t servers_closing;           /* sl_server_t whose handles are closing: off their pool's
                                            lists, since the pool may be freed before they are */
    int nservers_closing;                /* on servers_closing */
    sl_list_t pools;                     /* every sl_pool_t */
    sl_list_t retired_stats;             /* sl_retired_stats_t: counters of freed automatic
                                            pools of databases that still have pools (pool.c) */
    sl_list_t routes;                    /* sl_route_t of databases with replicas (route.c) */
    int nclients;                        /* on clients */
    uint32_t next_client_id;             /* ids for tags and BackendKeyData (one loop) */
    _Atomic uint32_t *client_ids;        /* borrowed: the process's counter when several
                                            loops hand out ids (workers), so that C-<id> names
                                            one client whatever its loop; NULL: next_client_id */
    int worker_index;                    /* which worker runs this loop (0-based): named in
                                            every cancel key it hands out (cancelkey.h) */
    int peer_id;                         /* this instance's peer_id (0: no peering), also
                                            named in cancel keys */
    uint32_t next_server_id;
    struct sl_ledger *ledger; /* borrowed: what the loops share (ledger.h); NULL: this loop is
                                 alone, and its caps count only its own servers */
    /* The inbox: messages other threads post (sl_loop_post), run by an
     * async handle on this loop. Made by sl_loop_init, closed by
     * sl_loop_close (messages still queued then run with live = false). */
    uv_async_t inbox_async;
    pthread_mutex_t inbox_mu; /* guards inbox and inbox_closed */
    sl_list_t inbox;          /* sl_loop_msg_t, oldest first */
    bool inbox_closed;        /* sl_loop_close ran: posts are refused */
    sl_deferq_t defer;        /* consequences of closes and releases, run later */
    /* A microsecond clock read at most once per phase of a loop round (the
     * stats time every query, as PgBouncer's cached time does): now_us is
     * 0 until read, and set back to 0 before and after each poll. */
    uv_prepare_t clock_prepare;
    uv_check_t clock_check;
    uint64_t now_us;
    sl_sql_cache_t *sql_cache; /* owned: parser answers by query text */
    sl_stmt_registry_t stmts;  /* named prepared statements of every client */
    struct sl_ps *ps_free;     /* owned: relay states kept for reuse (prepare.c) */
    int ps_nfree;
    /* Clients' activity states (session.h, sl_client_act_t): the resting
     * copy every idle client points at (owned, all zero, read-only; NULL
     * before the first client), and spare ones kept for reuse. */
    struct sl_client_act *act_rest;
    struct sl_client_act *act_free; /* owned, by next_free */
    int act_nfree;                  /* on act_free, at most a few dozen */
    SSL_CTX *client_tls;     /* owned reference; NULL when client TLS is off */
    uint8_t mock_secret[32]; /* random at start: salts of users that do not exist */
    sl_conn_kicks_t kicks;   /* sockets with TLS bytes poll cannot see (conn.c) */
    sl_stats_t stats;        /* counters since start */
    bool shutting_down;      /* SIGINT / SHUTDOWN WAIT_FOR_SERVERS: no new clients, close
                                each after its transaction */
    bool draining;           /* SIGTERM / SHUTDOWN WAIT_FOR_CLIENTS: no new clients, stop once
                                the last one has left */
    int64_t drain_close_ms;  /* while draining, the loop clock from which transaction-pooled
                                clients are closed between transactions
                                (shutdown_grace_period); 0: never */
    struct sl_control *ctl;  /* owned by control.c: PAUSE, DISABLE and KILL by database */
    struct sl_peers *peers;  /* owned by peers.c: CancelRequests being forwarded to peers */
    bool suspended;          /* SUSPEND: no client socket (nor a linked server's) is read until
                                RESUME; what is owed is still written */
    /* Called when the last client is freed while shutting_down or draining:
     * whoever runs the loop stops it then (the core cannot call up into the
     * worker). */
    void (*on_drained)(struct sl_loop *l);
    /* Whether an operator paused database db (PAUSE, KILL): its pools hand
     * out and open no server until RESUME. Set by control.c, which sits
     * above pool; unset: never. */
    bool (*db_paused)(const struct sl_loop *l, const char *db);
    /* What pool (floor 3) asks of route and authq, which sit above it (they
     * open their servers through pools): set by whoever wires the floors
     * together (the worker), so that pool never calls up into them. */
    /* The secret a backend login of user uses (auth_file, then the latest
     * auth_query answer, fresh or not); NULL: none. Unset: the auth_file
     * alone. */
    sl_user_secret_t *(*find_secret)(struct sl_loop *l, const char *user);
    /* The automatic pool of database db is about to be freed, unused since
     * before now_ms - autodb_idle_timeout: lets go of db's routing, if any;
     * false when it is still in use (the pool then stays). Unset: true. */
    bool (*release_db)(struct sl_loop *l, const char *db, int64_t now_ms);
    /* The admin console (floor 5) answers one Query of a client logged in
     * to the virtual database pgbouncer or sluice: the whole reply
     * (RowDescription, DataRows, CommandComplete, or an ErrorResponse, per
     * statement) without the ReadyForQuery, in a malloc'ed block the
     * session then owns (*len bytes; NULL: out of memory). Unset: there is
     * no console, and those names are databases like any other. */
    uint8_t *(*console_query)(struct sl_loop *l, const sl_console_who_t *who, const char *sql,
                              size_t *len);
    /* A CancelRequest whose key names another worker of this process
     * (cancelkey.h): passed to it (the workers module). False when there
     * is no such worker. Unset: one loop, every key is its own. */
    bool (*cancel_elsewhere)(struct sl_loop *l, int worker, uint32_t pid, uint32_t key,
                             const char *peer);
    /* What a PAUSE or WAIT_CLOSE waits for, over every loop of the process:
     * servers of db (NULL: all) still open, or (pending) still waiting to be
     * closed. Unset: this loop's alone (control.c counts them). */
    int (*control_count)(struct sl_loop *l, const char *db, bool pending);
    /* Shared replica health (route.c) when several workers run: one loop
     * checks each backend, the others copy. Borrowed; NULL: one loop. */
    struct sl_health_board *health_board;
} sl_loop_t;

/* A new client id (C-<id>), unique in the process. */
static inline uint32_t sl_loop_client_id(sl_loop_t *l) {
    if (!l->client_ids) return ++l->next_client_id;
    return atomic_fetch_add_explicit(l->client_ids, 1, memory_order_relaxed) + 1;
}

/* Milliseconds on the loop's clock. */
static inline int64_t sl_now_ms(const sl_loop_t *l) {
    return (int64_t)uv_now(l->loop);
}

/* Microseconds on the monotonic clock, as of this phase of the loop round. */
static inline uint64_t sl_now_us(sl_loop_t *l) {
    if (!l->now_us) l->now_us = uv_hrtime() / 1000;
    return l->now_us;
}

/* Zeroes l, takes cfg, creates the uv loop, the deferred queue, the buffer
 * free list and the parser cache, and makes every list empty. Returns SL_OK
 * or SL_ENOMEM with why in err. */
int sl_loop_init(sl_loop_t *l, sl_config_t *cfg, char *err, size_t errlen);
/* Queues m for loop `to` and wakes it; any thread. False when `to` is
 * closing (the message is not queued: it stays the caller's). */
bool sl_loop_post(sl_loop_t *to, sl_loop_msg_t *m) SL_MUST_USE;
/* Closes the handles sl_loop_init started (the deferred queue's and the
 * clock's): the loop can end once its users closed theirs. */
void sl_loop_close(sl_loop_t *l);
/* Frees what sl_loop_init made once the uv loop has no handles left (the
 * config stays the caller's to free). With several loops: only once no
 * other thread may post to it any more (every loop has stopped). */
void sl_loop_destroy(sl_loop_t *l);

#endif
