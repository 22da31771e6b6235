/* Routing state of a database with replicas: each backend's health, role,
 * WAL position and load, the read-your-writes fences, and the choice of a
 * backend for a transaction. The health checker (health.c) feeds it; the
 * router (router.c) asks it. Backend 0 is the database entry's own address,
 * backend i its replica i; which one takes writes follows what the checks
 * see (pg_is_in_recovery), so a promoted replica takes over. */
#ifndef SLUICE_ROUTE_H
#define SLUICE_ROUTE_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "sluice/config.h"
#include "sluice/list.h"
#include "sluice/loop.h"
#include "sluice/server.h"

#define SL_MAX_BACKENDS (1 + SL_MAX_REPLICAS)

typedef struct sl_route sl_route_t;

typedef struct sl_backend {
    sl_route_t *route; /* borrowed: the route it belongs to */
    int idx;           /* 0: the entry's own address; i: replica i */
    char addr[280];    /* host:port, for logs */
    int weight;        /* 1..100 */
    /* what its checks said */
    bool up;          /* admitted: answering checks */
    bool in_recovery; /* a standby */
    bool lagging;     /* behind the writer by more than max_replica_lag */
    uint64_t lsn;     /* writer: WAL insert position; standby: replay position */
    double lag_s;     /* replay delay a standby reports (0 when caught up) */
    int late_checks;  /* checks in a row with lag_s over max_replica_lag_time */
    int failures;     /* failed checks in a row */
    /* its checker connection (health.c) */
    sl_server_t *check;      /* NULL between connections */
    bool check_busy;         /* a check is in flight */
    uint64_t checks_sent;    /* checks whose query went out */
    uint64_t checks_done;    /* number of the last check answered */
    int64_t next_check_ms;   /* loop clock */
    uint64_t check_start_ns; /* the check (or its connection) in flight began */
    struct {
        uint64_t seq, lsn;
    } recent[64]; /* answered checks by number, a ring: fences look up theirs */
    /* load */
    int outstanding;        /* transactions in flight on it */
    double ewma_us;         /* latency of its transactions and checks, weighted */
    int swrr;               /* smooth weighted round robin state */
    uint64_t routed_reads;  /* read transactions routed to it (SHOW REPLICAS) */
    uint64_t routed_writes; /* write transactions routed to it */
} sl_backend_t;

struct sl_route {
    sl_list_t node;   /* on the loop's routes */
    sl_loop_t *w;     /* borrowed */
    char *db;         /* owned: the database alias */
    char *check_user; /* owned: whose connection settings the checks use */
    char tag[160];    /* "route db=app" */
    int n;            /* backends */
    sl_backend_t b[SL_MAX_BACKENDS];
    int routing;          /* enum sl_routing, from the entry */
    int balance;          /* enum sl_balance, the entry's or the global one */
    int writer;           /* backend taking writes; -1 when none is known */
    bool reads_on_writer; /* no replica can take reads (logged once) */
    uint64_t rr;          /* rotation for ties */
    uint64_t rng;         /* xorshift state */
    uv_timer_t timer;     /* one-shot, set for the next check due (health.c); its close
                           * callback frees the route */
    bool checking;        /* health checks started and not stopped */
    bool retired;         /* its replicas left the config: reads go to the primary */
    bool automatic;       /* made from the '*' entry for this name: closed when unused */
    /* where its transactions went, since the route was made (SHOW ROUTING) */
    uint64_t routed_write;        /* writes and read-write transactions */
    uint64_t routed_replica;      /* reads a replica served */
    uint64_t routed_primary_read; /* reads the writer took (fence, lag, no replica) */
    uint64_t read_retries;        /* reads moved to another backend after a failure */
    /* several workers (the loop's health board): one loop checks, the
     * others follow what it publishes */
    struct sl_health_pub *pub; /* borrowed: the board's entry of this database; NULL: one
                                  loop, its own checks */
    bool follower;             /* another loop runs the checks: b[]'s health is copied */
    uint64_t seen_version;     /* the entry's version copied last */
};

/* What a client must see after its last write: fences are resolved by the
 * first check of the writer sent after the commit. */
typedef struct sl_fence {
    bool set;
    int writer;     /* the writer it was taken on */
    uint64_t after; /* the writer's checks_sent when the write committed */
    uint64_t lsn;   /* resolved position, 0 until known */
} sl_fence_t;

/* The route of a database with replicas (created on first use), or NULL
 * when it has none. A name without its own entry takes the '*' entry's
 * replicas, routing and load_balance. user's connection settings are used
 * for the checks. */
sl_route_t *sl_route_get(sl_loop_t *w, const char *db, const char *user);
/* For pool.c, before it frees a '*' pool of db: false while a route of db
 * still runs (its health checks borrow the pools of db). A '*' route whose
 * database no client has used for autodb_idle_timeout is closed here, so
 * arbitrary names cannot make routes and their checks pile up. */
bool sl_route_release_idle(sl_loop_t *w, const char *db, int64_t now);
/* Backend for a transaction: a write goes to the writer, a read to a
 * standby that is up, not lagging and past the fence (the writer when none
 * is). exclude: a backend to avoid (-1: none). -1 if nothing can serve. */
int sl_route_pick(sl_route_t *r, bool write, sl_fence_t *fence, int exclude);
/* A transaction starts and ends on backend i (latency feeds the EWMA). */
void sl_route_begin(sl_route_t *r, int i);
void sl_route_end(sl_route_t *r, int i, uint64_t latency_us);
/* The client committed a write on the writer: its fence starts now. */
void sl_route_fence_mark(sl_route_t *r, sl_fence_t *f);
/* After a check of backend i: new facts, or a failure (err). */
void sl_route_checked(sl_route_t *r, int i, bool in_recovery, uint64_t lsn, double lag_s,
                      uint64_t rtt_us);
void sl_route_check_failed(sl_route_t *r, int i, const char *err);
/* Reload: backends follow the new replica list. Shutdown: close all. */
void sl_route_reconfigure_all(sl_loop_t *w);
void sl_route_close_all(sl_loop_t *w);

/* ---- several workers: replica health checked once per backend ---- */

/* The process's health board: each database's backend health as the one
 * loop that checks it (worker 0) last saw it, for the other loops to
 * copy. Thread-safe (a mutex, and a version counter read lock-free). */
typedef struct sl_health_board sl_health_board_t;
/* A board whose checks run on loop `checker` (its worker_index 0); NULL
 * when out of memory. */
sl_health_board_t *sl_health_board_new(sl_loop_t *checker);
/* Frees it once no loop runs. */
void sl_health_board_free(sl_health_board_t *hb);
/* The checker's route r changed what its checks know: the followers see it
 * at their next transaction (or sync tick). */
void sl_route_publish(sl_route_t *r);

/* What backend i of the database plays, as the health checks last saw it,
 * for the console and /metrics alike: "primary" (the writer), "replica" (in
 * recovery) or "unknown" (neither, e.g. an old primary after a failover
 * not yet seen in recovery). rt NULL (a database without replicas):
 * backend 0 is its primary. */
const char *sl_route_backend_role(const sl_route_t *rt, int i);

#endif
