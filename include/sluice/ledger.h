/* The ledger: what the loops of one sluice share about their pools, so that
 * caps stay global when there are several workers. One entry per (database
 * alias, user, backend) pool counts the backend connections of all loops
 * and publishes, per loop, how many clients wait and how many servers are
 * idle; one counter per (database, backend) and per (user, backend) counts
 * servers for max_db_connections / max_user_connections and logged-in
 * clients for the client caps; one counter counts every client for
 * max_client_conn. Entries are found by name under a mutex once, when a
 * loop makes its pool, then read and bumped with C11 atomics, lock-free.
 * It owns no loop and no server: moving a server is pool.c's, through the
 * loops' inboxes (loop.h). Created once before the loops start
 * (sl_ledger_new), freed after they all ended. */
#ifndef SLUICE_LEDGER_H
#define SLUICE_LEDGER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "sluice/list.h"
#include "sluice/login.h"
#include "sluice/loop.h"
#include "sluice/params.h"
#include "sluice/stmt.h"

/* More loops than this are refused by sl_ledger_new. */
#define SL_LEDGER_MAX_LOOPS 256

typedef struct sl_ledger sl_ledger_t;

/* Servers and logins of one database or one user on one backend, all
 * loops. */
typedef struct sl_ledger_count {
    sl_list_t node;     /* on the ledger's counters, under its mutex */
    char *name;         /* owned: the database alias or the user */
    int kind;           /* 0: a database, 1: a user */
    int backend;        /* 0: the primary entry; i: replica i */
    int refs;           /* pool entries using it; under the ledger's mutex */
    atomic_int servers; /* backend connections opened and not yet closed */
    atomic_int logins;  /* clients admitted (backend 0 only: replicas' pools serve no login) */
} sl_ledger_count_t;

/* A per-loop slot of a pool entry, 64 bytes so that two loops' slots
 * rarely share a cache line: the loop it belongs to writes waiting, idle
 * and oldest_ms, the others read them; inflight is raised by the loops
 * that send it a server and lowered by it. */
typedef struct sl_ledger_slot {
    _Atomic int64_t oldest_ms; /* when its oldest waiter queued (loop clock, ms); 0: none */
    atomic_int waiting;        /* clients queued on that loop's pool */
    atomic_int idle;           /* servers idle in that loop's pool */
    atomic_int inflight;       /* servers posted to that loop and not yet adopted by it */
    char pad[64 - sizeof(int64_t) - 3 * sizeof(atomic_int)]; /* to 64 bytes */
} sl_ledger_slot_t;

/* One (database alias, user, backend) pool, all loops. */
typedef struct sl_ledger_pool {
    sl_list_t node;             /* on the ledger's pools, under its mutex */
    char *db, *user;            /* owned */
    int backend;                /* as sl_pool_t's */
    int refs;                   /* loops' pools holding it, and servers in flight; under mutex */
    sl_ledger_count_t *by_db;   /* owned reference: servers and logins of (db, backend) */
    sl_ledger_count_t *by_user; /* owned reference: servers and logins of (user, backend) */
    atomic_int servers;         /* backend connections of this pool in all loops: a slot is
                                   taken before a login starts and given back when it closes */
    /* What one loop learned that the others need, under the ledger's mutex
     * (read only when a loop's own copy is empty: a first login there, or
     * after a reload): */
    sl_params_t defaults;       /* owned: the ParameterStatus values of a fresh backend login,
                                   so that any loop answers logins and fills a client's unset
                                   parameters (a server moved in carries another client's) */
    sl_login_keys_t scram_keys; /* SCRAM keys derived from the configured password for the
                                   backend's salt (iterations 0: none yet); cleansed when freed */
    atomic_bool failed;         /* a permanent login failure is recorded below (read without
                                   the mutex, so that a loop with none looks no further) */
    int64_t fail_ms;            /* when it happened (loop clock, ms: every loop's is the same
                                   monotonic clock) */
    char fail_error[480];       /* its message, as waiters are told it */
    char fail_code[6];          /* its SQLSTATE */
    sl_list_t moving;           /* list nodes of its servers between two loops (on no loop's
                                   list then), under the mutex: sl_ledger_moving_begin */
    int nloops;                 /* entries in slot */
    sl_ledger_slot_t slot[];    /* per loop, by worker_index */
} sl_ledger_pool_t;

/* A ledger for nloops loops (1 .. SL_LEDGER_MAX_LOOPS), or NULL when out
 * of memory or nloops is out of range. */
sl_ledger_t *sl_ledger_new(int nloops);
/* Frees it once every loop has ended (no loop uses it any more). */
void sl_ledger_free(sl_ledger_t *lg);
/* Loop l, whose worker_index is set and below nloops, joins: l->ledger is
 * set and its statement registry shares statement ids with the other loops
 * (a server that moves keeps its prepared statements under their names).
 * Call after sl_loop_init and before the loop runs; SL_ECONFIG if the index
 * is out of range or taken. */
int sl_ledger_attach(sl_ledger_t *lg, sl_loop_t *l) SL_MUST_USE;
int sl_ledger_nloops(const sl_ledger_t *lg);
/* The loop attached with worker index i, or NULL. */
sl_loop_t *sl_ledger_loop(const sl_ledger_t *lg, int i);

/* The entry of (db, user, backend), made if new, with a reference for the
 * caller; NULL when out of memory. Takes the mutex. */
sl_ledger_pool_t *sl_ledger_pool_get(sl_ledger_t *lg, const char *db, const char *user,
                                     int backend);
void sl_ledger_pool_ref(sl_ledger_t *lg, sl_ledger_pool_t *e);
/* Drops a reference; the entry is freed with its last one. */
void sl_ledger_pool_put(sl_ledger_t *lg, sl_ledger_pool_t *e);

/* Publishes a fresh backend's reported parameters for every loop, unless
 * some loop did already (they are the same for one pool's settings). */
void sl_ledger_defaults_publish(sl_ledger_t *lg, sl_ledger_pool_t *e, const sl_params_t *d);
/* Copies the published parameters into *out (which must be empty): true
 * when there were some; false when none yet or out of memory (*out stays
 * empty). */
bool sl_ledger_defaults_copy(sl_ledger_t *lg, sl_ledger_pool_t *e, sl_params_t *out);
/* SCRAM keys derived by a loop, for the others' logins: published once
 * (the first derivation wins; a reload that changes the password forgets
 * them, sl_ledger_pool_forget); copy gives them when *out is empty. */
void sl_ledger_keys_publish(sl_ledger_t *lg, sl_ledger_pool_t *e, const sl_login_keys_t *k);
void sl_ledger_keys_copy(sl_ledger_t *lg, sl_ledger_pool_t *e, sl_login_keys_t *out);
/* The pool's connection settings changed (reload): the shared parameters
 * and keys were learned with the old ones, and are dropped. */
void sl_ledger_pool_forget(sl_ledger_t *lg, sl_ledger_pool_t *e);
/* References to the entries of database db (any user, any backend): the
 * pools of db on every loop, and servers of them on their way between
 * loops. Takes the mutex. */
int sl_ledger_db_refs(sl_ledger_t *lg, const char *db);
/* A backend login of the pool failed for a reason a retry does not cure
 * (wrong password, no such database): recorded for every loop, so that
 * none tries again within server_login_retry. */
void sl_ledger_fail_publish(sl_ledger_t *lg, sl_ledger_pool_t *e, const char *error,
                            const char *code, int64_t ms);
/* A login works again: the record goes. */
void sl_ledger_fail_clear(sl_ledger_t *lg, sl_ledger_pool_t *e);
/* The recorded failure, if any: true with its message (error, cap bytes),
 * SQLSTATE (code, 6 bytes) and time. */
bool sl_ledger_fail_copy(sl_ledger_t *lg, sl_ledger_pool_t *e, char *error, size_t cap, char *code,
                         int64_t *ms);
/* Another entry than e whose servers count under the same database cap
 * (by_db) or user cap (by_user) as e's, with an idle server on a loop
 * other than not_loop: that entry with a reference for the caller, and
 * the loop's index in *loop; NULL when none. Takes the mutex. */
sl_ledger_pool_t *sl_ledger_idle_sibling(sl_ledger_t *lg, const sl_ledger_pool_t *e, bool by_db,
                                         bool by_user, int not_loop, int *loop);
/* A server of e leaves its loop for another one: from its handles' close
 * to its adoption there it is on no loop's list, so its list node (free
 * meanwhile) is kept here, and the console, which reads every loop under
 * the freeze, still lists it (SHOW SERVERS). end: it arrived (or is
 * closed on the way); on the thread that now owns it, before the node is
 * used again. Take the mutex. */
void sl_ledger_moving_begin(sl_ledger_t *lg, sl_ledger_pool_t *e, sl_list_t *node);
void sl_ledger_moving_end(sl_ledger_t *lg, sl_list_t *node);
/* Calls fn for every moving node (with its entry), under the mutex. Only
 * while every other loop is frozen: the structs the nodes sit in do not
 * change then; fn must not call the ledger. */
void sl_ledger_moving_walk(sl_ledger_t *lg,
                           void (*fn)(sl_ledger_pool_t *e, sl_list_t *node, void *arg), void *arg);
/* A new server id (S-<id>), unique over every loop of the process. */
uint32_t sl_ledger_server_id(sl_ledger_t *lg);

/* Adds one to *n if that keeps it at or below cap (cap <= 0: no cap), as
 * one compare-and-swap, so that racing loops never overshoot; false when
 * the cap is reached (nothing added). */
static inline bool sl_ledger_take(atomic_int *n, int cap) {
    int cur = atomic_load_explicit(n, memory_order_relaxed);
    do {
        if (cap > 0 && cur >= cap) return false;
    } while (!atomic_compare_exchange_weak_explicit(n, &cur, cur + 1, memory_order_acq_rel,
                                                    memory_order_relaxed));
    return true;
}

static inline void sl_ledger_give(atomic_int *n) {
    atomic_fetch_sub_explicit(n, 1, memory_order_acq_rel);
}

static inline int sl_ledger_read(const atomic_int *n) {
    return atomic_load_explicit(n, memory_order_acquire);
}

/* A client was accepted (delta 1) or freed (delta -1) on some loop: the
 * clients of all loops now, for max_client_conn. */
int sl_ledger_clients_add(sl_ledger_t *lg, int delta);

#endif
