/* Listening sockets: TCP (IPv4 and IPv6, from listen_addr) and the Unix
 * socket .s.PGSQL.<port> in unix_socket_dir, each accepted with accept4 on a
 * uv_poll. Accepted sockets are handed to the client module. When the
 * process runs out of file descriptors, a listener turns the waiting clients
 * away with an error (53300) through a spare descriptor it keeps for that,
 * stops watching its socket for a while and says so in the log at most once
 * per report period. */
#ifndef SLUICE_LISTENER_H
#define SLUICE_LISTENER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "sluice/worker.h"

typedef struct sl_listener {
    struct sl_listener *next; /* worker's list */
    sl_worker_t *w;           /* borrowed */
    uv_poll_t poll;           /* its close callback and retry's free the listener */
    int fd;                   /* owned */
    char desc[160];           /* "127.0.0.1:6432" or the socket path */
    char unix_path[108];      /* unlinked on close if still this socket's; "" for TCP */
    dev_t unix_dev;           /* the socket file as bound: a newer sluice may replace it */
    ino_t unix_ino;
    /* running out of file descriptors (EMFILE, ENFILE) */
    uv_timer_t retry;     /* restarts the poll stopped for want of descriptors */
    int spare_fd;         /* owned: /dev/null, given up to turn one client away; -1 if none */
    bool exhausted;       /* accept failed for want of resources and has not worked since */
    int last_errno;       /* why, for the report */
    uint64_t turned_away; /* since the last report: clients turned away, or failed retries */
    int64_t report_ms;    /* loop clock of the last report; 0: none yet */
    int open_handles;     /* poll and retry: the listener is freed when both closed */
} sl_listener_t;

/* Opens every configured listener; on failure writes why into err. */
int sl_listener_open_all(sl_worker_t *w, char *err, size_t errlen) SL_MUST_USE;
void sl_listener_close_all(sl_worker_t *w);
/* w's Unix listening socket, which later workers share; -1: none. */
int sl_listener_unix_fd(const sl_worker_t *w);
/* SUSPEND: no connection is accepted (they wait in the backlog) until the
 * same call with false (RESUME). */
void sl_listener_suspend_all(sl_worker_t *w, bool suspend);

#endif
