/* The workers of one process (workers = N): N threads, each running one
 * sl_worker_t (its own libuv loop, listeners, pools and clients), and what
 * they share: the signals (handled by the main thread, which passes them
 * on), a message inbox per worker (uv_async: signals, cancel requests,
 * shutdowns), and the freeze barrier through which one worker reads or
 * changes every loop (the console, /metrics, RELOAD, SET).
 *
 * Nothing of a loop is touched from another thread except (a) its inbox,
 * under the inbox's mutex, and (b) while it is parked by a freeze: a
 * worker that freezes asks every other to park (each blocks inside its own
 * loop's async callback, between callbacks, so its state is consistent),
 * then reads or acts on all loops as if single-threaded, then thaws. Two
 * workers that freeze at once cannot deadlock: one waiting to freeze
 * parks for the other first (the barrier's mutex orders them).
 *
 * A worker without a group (a unit test's hand-built worker) is a group of
 * one: every function here then acts on it alone. */
#ifndef SLUICE_WORKERS_H
#define SLUICE_WORKERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/worker.h"

typedef struct sl_workers sl_workers_t;

/* Resolves the workers key: 0 (the default) means one per online CPU;
 * the answer is 1..SL_CANCELKEY_WORKERS_MAX. */
int sl_workers_wanted(const sl_config_t *cfg);

/* Starts n workers: worker 0 takes cfg, the others a config parsed from
 * the same text (so all run the same settings), each opens its listeners
 * (SO_REUSEPORT on TCP when n > 1); then the threads start. Returns NULL
 * with why in err on failure (nothing is left running). */
sl_workers_t *sl_workers_start(sl_config_t *cfg, int n, char *err, size_t errlen);
/* Runs the main thread's loop (signals) until every worker has stopped,
 * joins them and frees the group. Returns the exit status. */
int sl_workers_run(sl_workers_t *g);

/* Workers of w's group (1 without a group), and worker i of it; NULL when
 * that worker has stopped (its loop is gone). Only while frozen (or on
 * w itself) may the result be read. */
int sl_workers_count(const sl_worker_t *w);
sl_worker_t *sl_workers_at(sl_worker_t *w, int i);

/* Parks every other worker of w's group, each between two callbacks of its
 * own loop, and returns once they all are (or have stopped). Freezes do
 * not nest: thaw before freezing again. */
void sl_workers_freeze(sl_worker_t *w);
void sl_workers_thaw(sl_worker_t *w);

/* RELOAD (the console's, and SIGHUP's): the file is read once and every
 * worker applies it (the caller has frozen the others). As
 * sl_worker_reload otherwise. */
int sl_workers_reload(sl_worker_t *w, char *err, size_t errlen, char *warn,
                      size_t warnlen) SL_MUST_USE;
/* SHUTDOWN and the stop signals: every worker starts its shutdown (w's
 * own after the current callbacks, as sl_worker_shutdown). */
void sl_workers_shutdown(sl_worker_t *w, enum sl_shutdown_mode mode);
/* A CancelRequest for a client of worker `worker` (its key says so) that
 * reached w: passed to that worker, which forwards it. False when there
 * is no such worker (the key is not ours, or it has stopped). */
bool sl_workers_cancel(sl_worker_t *w, int worker, uint32_t pid, uint32_t key, const char *peer);

#endif
