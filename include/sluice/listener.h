/* Listening sockets: TCP (IPv4 and IPv6, from listen_addr) and the Unix
 * socket .s.PGSQL.<port> in unix_socket_dir, each accepted with accept4 on a
 * uv_poll. Accepted sockets are handed to the client module. */
#ifndef SLUICE_LISTENER_H
#define SLUICE_LISTENER_H

#include <uv.h>

#include "sluice/worker.h"

typedef struct sl_listener {
    struct sl_listener *next; /* worker's list */
    sl_worker_t *w;           /* borrowed */
    uv_poll_t poll;           /* its close callback frees the listener */
    int fd;                   /* owned */
    char desc[160];           /* "127.0.0.1:6432" or the socket path */
    char unix_path[108];      /* unlinked on close; "" for TCP */
} sl_listener_t;

/* Opens every configured listener; on failure writes why into err. */
int sl_listener_open_all(sl_worker_t *w, char *err, size_t errlen) SL_MUST_USE;
void sl_listener_close_all(sl_worker_t *w);

#endif
