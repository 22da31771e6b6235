/* A worker: one libuv loop and what sets it up and runs it (listeners,
 * the janitor timer, signals, stopping). What the connection core needs
 * from the loop is its sl_loop_t (loop.h), embedded here as core; the core
 * never sees this struct. */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "sluice/control.h"
#include "sluice/loop.h"
#include "sluice/stats.h"

struct sl_listener;
struct sl_metrics;

/* How a shutdown treats the connected clients (PgBouncer's SHUTDOWN
 * variants). Each stops accepting new clients first. */
enum sl_shutdown_mode {
    SL_SHUTDOWN_FAST,             /* SHUTDOWN, SIGQUIT: close everything and exit */
    SL_SHUTDOWN_WAIT_FOR_SERVERS, /* SHUTDOWN WAIT_FOR_SERVERS, SIGINT: each client is closed
                                     after its transaction; exit when none is left */
    SL_SHUTDOWN_WAIT_FOR_CLIENTS, /* SHUTDOWN WAIT_FOR_CLIENTS, SIGTERM: exit when the clients
                                     have left; transaction-pooled ones are closed between
                                     transactions after shutdown_grace_period */
};

/* Where a worker sits among the workers of its process (workers.c). */
typedef struct sl_worker_place {
    struct sl_workers *group;     /* borrowed: the process's workers */
    int index, count;             /* this worker's index (its core's worker_index) and how
                                     many there are */
    int unix_fd;                  /* worker 0's Unix listening socket, which the others share
                                     (each watches a dup of it); -1: open one */
    _Atomic uint32_t *client_ids; /* borrowed: the process's client id counter */
    struct sl_ledger *ledger;     /* borrowed: the pools' shared counts; NULL with one worker */
} sl_worker_place_t;

typedef struct sl_worker {
    sl_loop_t core;                /* what clients, servers and pools run on */
    sl_worker_place_t place;       /* its group, index and shared sockets */
    struct sl_listener *listeners; /* owned list */
    uv_timer_t janitor;            /* periodic timeouts and pool upkeep */
    /* Called once as the worker starts stopping (its handles close): the
     * group closes what it keeps on the worker's loop (its inbox). */
    void (*on_stop)(struct sl_worker *w);
    /* Whether the worker must keep running, its own clients gone, while
     * other workers still have theirs (worker 0 serves /metrics and /ready
     * for the whole process). Unset: no. */
    bool (*others_running)(struct sl_worker *w);
    struct sl_metrics *metrics; /* owned: the metrics_listen endpoint, NULL when off */
    sl_stats_t stats_prev;      /* as of the last stats line */
    int64_t stats_ms;           /* when the last stats line was due */
    bool stopping;              /* handles are being closed */
    sl_defer_t shutdown_job;    /* the console's SHUTDOWN, run after the current callbacks */
    int shutdown_mode;          /* its enum sl_shutdown_mode */
    int status_clients;         /* clients last told to systemd (STATUS=) during a shutdown */
    int exit_code;
} sl_worker_t;

/* Sets w up on cfg (taken) at its place: loop, files, listeners,
 * janitor. Signals are not its own: the group passes them on
 * (sl_worker_signal). */
int sl_worker_init(sl_worker_t *w, sl_config_t *cfg, const sl_worker_place_t *place, char *err,
                   size_t errlen);
/* Runs the loop until the worker has stopped, then frees what it holds;
 * returns its exit status. */
int sl_worker_run(sl_worker_t *w);
/* A signal the main thread passed on to this worker: SIGINT, SIGTERM and
 * SIGQUIT start its shutdown. (SIGHUP, SIGUSR1 and SIGUSR2 act on every
 * worker at once, under a freeze: see workers.c.) */
void sl_worker_signal(sl_worker_t *w, int signum);
/* Reloads the config file (SIGHUP, the console's RELOAD). On success the
 * new limits and timeouts apply at once, to waiting clients too; a warning
 * (TLS files refused, the rest applied) goes to warn. On failure the
 * running config stays, every error is logged, and err holds them all, one
 * "file:line: message" per line ('\n'-separated): what RELOAD answers.
 * Returns SL_OK or SL_ECONFIG. */
int sl_worker_reload(sl_worker_t *w, char *err, size_t errlen, char *warn,
                     size_t warnlen) SL_MUST_USE;
/* The same from the file's text, read once for every worker (text: the
 * file as read; quiet: log nothing, another worker has said it all). */
int sl_worker_reload_text(sl_worker_t *w, const char *text, bool quiet, char *err, size_t errlen,
                          char *warn, size_t warnlen) SL_MUST_USE;
/* Settings in w->core.cfg changed in place (the console's SET): pools,
 * routes and the parser's answers follow them. */
void sl_worker_settings_changed(sl_worker_t *w);
/* The console's SHUTDOWN: runs after the callbacks of the current round
 * (signals start theirs at once). A WAIT_ mode asked for while one runs
 * changes nothing but WAIT_FOR_SERVERS's closing of clients. */
void sl_worker_shutdown(sl_worker_t *w, enum sl_shutdown_mode mode);
/* SUSPEND (true): stops accepting and reading every socket while what is
 * owed is still written (sl_session_flushed says when it all is); RESUME
 * (false) undoes it. */
void sl_worker_suspend(sl_worker_t *w, bool suspend);
/* Checks whether a graceful shutdown has finished and stops the loop if so. */
void sl_worker_maybe_finish(sl_worker_t *w);

#endif
