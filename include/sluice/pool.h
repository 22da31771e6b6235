/* Pools of backend connections keyed by (database alias, user): bounded by
 * pool_size (+ reserve_pool_size after reserve_pool_timeout) and by the
 * per-database and per-user caps, a FIFO queue of waiters, min_pool_size kept
 * warm, idle/lifetime/check upkeep. A waiter is handed a server through its
 * callback, so the pool never knows what a client is. */
#ifndef SLUICE_POOL_H
#define SLUICE_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice/defer.h"
#include "sluice/list.h"
#include "sluice/loop.h"
#include "sluice/params.h"
#include "sluice/server.h"
#include "sluice/stats.h"

/* How a waiter's error starts when the backend could not be logged in to
 * (as opposed to query_wait_timeout, a full pool). */
#define SL_POOL_LOGIN_FAILED "server login failed"
/* Longest wait between two login attempts while clients wait for a backend
 * that is restarting: the answer comes at most this long after it accepts
 * again, and one failed attempt a few times a second costs it nothing. */
#define SL_POOL_RETRY_MAX_MS 500
#define SL_POOL_RETRY_FIRST_MS 100

typedef struct sl_waiter sl_waiter_t;
/* Exactly one of s and err is set. */
typedef void (*sl_waiter_cb)(sl_waiter_t *wt, sl_server_t *s, const char *err, const char *code);

struct sl_waiter {
    sl_list_t node;   /* on the pool's waiting list while queued */
    sl_waiter_cb cb;  /* called once per request */
    int64_t since_ms; /* when the request was queued */
    bool queued;
};

typedef struct sl_pool {
    sl_list_t node;                   /* on the loop's pools list */
    sl_loop_t *w;                     /* borrowed */
    char *db_alias;                   /* owned: the name clients connect to */
    char *user;                       /* owned: the client user this pool serves */
    int backend;                      /* 0: the database's primary entry; i: its replica i */
    char tag[160];                    /* "db=app user=bob" */
    char **keys, **vals;              /* owned, NULL-terminated libpq parameters */
    int mode;                         /* enum sl_pool_mode */
    int size, min_size, reserve_size; /* servers */
    int max_db, max_user;             /* 0: no cap */
    /* From the config for this database and user (sl_config_limits), taken
     * again at each reload; 0: none. */
    int max_db_clients, max_user_clients; /* logged-in clients of its database / user */
    int64_t query_wait_timeout_ms;        /* how long a waiter waits */
    int64_t query_timeout_ms, idle_transaction_timeout_ms; /* for its clients */
    int64_t transaction_timeout_ms, client_idle_timeout_ms;
    int n_logins;              /* clients logged in through it (their own pool, backend 0 only) */
    sl_server_lists_t servers; /* its servers not closing, one list per state (server.c
                                  moves them); idle ones most recently used first */
    int n_checking;            /* of servers in QUERY: running server_check_query, soon free */
    sl_list_t waiting;         /* sl_waiter_t, oldest first */
    int n_waiting;
    sl_params_t defaults;    /* reported parameters of a fresh backend */
    bool automatic;          /* made from the '*' entry: freed when unused */
    bool paused;             /* an operator paused its database (PAUSE, KILL; control.c): no
                                server is handed out or opened, each closes as it comes back */
    int n_clients;           /* clients holding a pointer to it */
    int64_t unused_since_ms; /* when n_clients last dropped to 0 */
    int64_t login_fail_ms;   /* end of the last failed backend login, 0 if none since the last
                                success (or since health checks saw the backend answer) */
    bool fail_permanent;     /* that failure needs a fix, not a retry (wrong password, no such
                                database): waiters get it at once during server_login_retry */
    bool fast_fail;          /* the database has replicas: its router moves or refuses requests,
                                so waiters get each failure at once instead of riding it out */
    int fail_attempts;       /* failed login attempts in the current streak, 0 if none */
    int64_t streak_start_ms; /* when the current streak of failures began */
    int64_t retry_delay_ms;  /* wait after a transient failure before the next attempt: 100 ms
                                doubling up to SL_POOL_RETRY_MAX_MS (or server_login_retry) */
    uv_timer_t *retry_timer; /* owned, created on first use: wakes the pool for that attempt;
                                freed in its close callback */
    bool fail_pending;       /* a login failed: its waiters are told on the next wake */
    sl_defer_t wake;         /* queued when the pool has work to do (see pool.c) */
    char last_error[480];    /* the last failure's message (for waiters it fails) */
    char last_code[6];
    sl_pool_stats_t stats;       /* counters since the pool was made (SHOW STATS, /metrics) */
    sl_pool_stats_t stats_prev;  /* as of the last stats_period tick */
    sl_pool_stats_t stats_delta; /* what that period added (averages of several pools are
                                    averages of their summed deltas) */
    int64_t stats_delta_ms;      /* its length, ms; 0 before the first period ends */
    sl_login_keys_t scram_keys;  /* derived from the configured password for the backend's salt
                                    by the first own login (empty until then) */
    /* With several loops (a ledger of more than one loop), what they share
     * about this (database, user, backend): its caps count the servers of
     * all loops, and idle servers move to the loop whose clients wait.
     * NULL when the loop is alone: then nothing below is used. */
    struct sl_ledger_pool *lp; /* owned reference */
    int lp_waiting, lp_idle;   /* what this loop last published in its slot */
    int64_t lp_oldest_ms;
    int lp_arrived;        /* servers adopted from other loops since the last publish */
    int64_t lp_pull_ms;    /* when it last asked other loops for an idle server */
    int64_t lp_evict_ms;   /* when it last asked another loop to close an idle server of a
                              pool under the same max_db/max_user_connections */
    uint64_t lp_moved_in;  /* servers taken over from other loops */
    uint64_t lp_moved_out; /* servers handed to other loops */
} sl_pool_t;

/* What the automatic pools of a database that were freed had counted, kept
 * while the database has other pools, so that its totals (SHOW STATS,
 * /metrics) never go back; freed with its last pool. */
typedef struct sl_retired_stats {
    sl_list_t node; /* on the loop's retired_stats */
    char *db;       /* owned */
    sl_pool_stats_t stats;
} sl_retired_stats_t;
/* Those of database db, or NULL. */
const sl_pool_stats_t *sl_pool_retired_stats(const sl_loop_t *l, const char *db);
/* Frees them all (the loop ends). */
void sl_pool_free_retired(sl_loop_t *l);

/* Finds or creates the pool for a client of `dbname` as `user`. On failure
 * returns NULL with a message for the client in err. */
sl_pool_t *sl_pool_get(sl_loop_t *w, const char *dbname, const char *user, char *err,
                       size_t errlen);
/* The same for one backend of the database: 0 its primary, i its replica i. */
sl_pool_t *sl_pool_get_at(sl_loop_t *w, const char *dbname, const char *user, int backend,
                          char *err, size_t errlen);
/* Opens a connection with the pool's settings that the pool does not keep:
 * owner and done() belong to the caller (health checks). */
sl_server_t *sl_pool_open_probe(sl_pool_t *p, void *owner, const char *tag, sl_server_done_cb done);
/* A client that logged in to p's database as p's user is counted, unless
 * that passes max_db_client_connections or max_user_client_connections:
 * then nothing is counted and the refusal (PgBouncer's text) is returned,
 * with the count that hit the cap in detail for the log. */
const char *sl_pool_admit(sl_pool_t *p, char *detail, size_t cap) SL_MUST_USE;
/* The client admitted by sl_pool_admit left. */
void sl_pool_leave(sl_pool_t *p);
/* Clients logged in to database db (NULL: any) as user (NULL: any): what
 * the caps count (SHOW DATABASES / SHOW USERS current_client_connections). */
int sl_pool_count_logins(sl_loop_t *w, const char *db, const char *user);
/* A client takes or drops its reference (pools are freed only unreferenced). */
void sl_pool_ref(sl_pool_t *p);
void sl_pool_unref(sl_pool_t *p);
void sl_pool_request(sl_pool_t *p, sl_waiter_t *wt);
void sl_pool_cancel(sl_pool_t *p, sl_waiter_t *wt);
/* Gives a server back. clean: its session is reusable (no transaction, no
 * partial message); otherwise it is closed. */
void sl_pool_release(sl_server_t *s, bool clean);
/* Health checks see backend `backend` of db answer again: its pools stop
 * refusing requests for server_login_retry. */
void sl_pool_backend_up(sl_loop_t *w, const char *db, int backend);
/* Timeouts and upkeep; called by the janitor. */
void sl_pool_tick(sl_pool_t *p, int64_t now_ms);
void sl_pool_close_all(sl_loop_t *w);
/* After a reload: every pool takes its limits and connection settings from
 * the new config, and applies them to its waiters at once (more servers
 * for a larger pool, the error for those past a shorter
 * query_wait_timeout, surplus idle servers of a smaller pool closed). */
void sl_pool_reconfigure_all(sl_loop_t *w);
int sl_pool_total(const sl_pool_t *p);
/* True when the pool knows what a fresh backend login reports (defaults):
 * learned by its own first login, or copied here from another loop's
 * (workers share them through the ledger). */
bool sl_pool_has_defaults(sl_pool_t *p);
/* PAUSE and RESUME (control.c): a paused pool keeps its waiters queued,
 * hands out and opens no server, closes its idle and connecting servers
 * now and the others as they are released. */
void sl_pool_set_paused(sl_pool_t *p, bool paused);
/* RECONNECT: idle and connecting servers close now, the others as they
 * are next released (close_needed); new ones are opened as needed. */
void sl_pool_reconnect(sl_pool_t *p);
/* KILL: closes every server no client is linked to, whatever its state. */
void sl_pool_close_unlinked(sl_pool_t *p, const char *why);
/* Servers still waiting to be closed as they are released (WAIT_CLOSE). */
int sl_pool_close_pending(const sl_pool_t *p);
/* Servers of database db (NULL: any) between two workers are on no loop's
 * list, only on the ledger's moving list. Both calls only while every
 * other loop is frozen; 0 with one loop. */
/* RECONNECT and KILL for them: each is marked to be closed when it lands
 * (it would otherwise go on serving with its old backend connection).
 * Returns how many were marked. */
int sl_pool_mark_moving(sl_loop_t *l, const char *db);
/* How many there are (WAIT_CLOSE: marked_only, those marked to close). */
int sl_pool_count_moving(sl_loop_t *l, const char *db, bool marked_only);
/* Servers of the pool in state st (a walk over p->servers.in[st] lists them). */
static inline int sl_pool_count(const sl_pool_t *p, enum sl_server_state st) {
    return p->servers.n[st];
}

#endif
