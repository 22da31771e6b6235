/* One socket of either end, a client's or a backend's: the libuv poll handle
 * on its fd, reads and writes with or without TLS, the direction a TLS call
 * waits for, and the "decrypted bytes wait inside TLS" kick that poll cannot
 * give. What the socket is watched for is computed from what its owner wants
 * each time the owner says so, plus what TLS waits for: a poll error, which
 * stops the handle in libuv, leaves nothing stale behind. The fd and the SSL
 * object belong to the owner (client.c, server.c, or libpq); buffers,
 * framing and protocol state are the owner's too. PgBouncer's SBuf is the
 * model: one I/O layer and one event callback for both ends. */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#include "sluice/err.h"
#include "sluice/list.h"

typedef struct sl_conn sl_conn_t;
/* A socket event: status < 0 is a poll error (libuv stopped the handle),
 * else events holds UV_READABLE / UV_WRITABLE as the owner should act on
 * them (a TLS read waiting for writability is reported as readable). */
typedef void (*sl_conn_event_cb)(sl_conn_t *cn, int status, int events);
/* A handle let go by sl_conn_detach finished closing. */
typedef void (*sl_conn_closed_cb)(sl_conn_t *cn);

/* The connections of one loop with decrypted bytes inside TLS: they are run
 * from an idle handle before the loop blocks again. */
typedef struct sl_conn_kicks {
    sl_list_t conns; /* sl_conn_t, by kick_node */
    uv_idle_t idle;  /* active while conns is not empty */
} sl_conn_kicks_t;

struct sl_conn {
    uv_loop_t *loop;             /* borrowed */
    sl_conn_kicks_t *kicks;      /* borrowed: its loop's */
    int fd;                      /* the socket last attached, -1 none; the owner's, closed by it
                                    only once the handle is detached */
    SSL *ssl;                    /* borrowed (the owner's or libpq's): all I/O goes through it;
                                    NULL in plain text */
    uv_poll_t *poll;             /* the handle watching fd, NULL when detached: &own_poll, or
                                    owned memory freed in its close callback when a new socket
                                    came while own_poll was still closing (libpq's switch) */
    uv_poll_t own_poll;          /* embedded, so a client costs one allocation */
    bool own_poll_busy;          /* own_poll is set up and its close callback has not run */
    int handles;                 /* poll handles made and not yet through their close callback */
    int armed;                   /* UV_* events the handle runs with now; 0 once libuv stopped it */
    bool reading;                /* the owner's last sl_conn_update wanted bytes */
    bool read_wants_write;       /* the last TLS read or handshake step waits for writability */
    bool write_wants_read;       /* the last TLS write waits for readability */
    bool kicked;                 /* on kicks->conns */
    sl_list_t kick_node;         /* its place there */
    sl_conn_event_cb on_event;   /* socket events, poll errors and kicks */
    sl_conn_closed_cb on_closed; /* after each detached handle closed; may free the owner */
    void *data;                  /* borrowed: the owner */
};

void sl_conn_kicks_init(sl_conn_kicks_t *k, uv_loop_t *loop);
/* Closes the idle handle (the loop is stopping). */
void sl_conn_kicks_close(sl_conn_kicks_t *k);

/* Sets up cn with no socket yet. */
void sl_conn_init(sl_conn_t *cn, uv_loop_t *loop, sl_conn_kicks_t *kicks, sl_conn_event_cb on_event,
                  sl_conn_closed_cb on_closed, void *data);
/* Watches fd (nothing armed yet). A different fd than the one watched gets
 * a new handle, the old one closed first: libuv forgets fds by number, and
 * libpq may have reused the number. SL_ENOMEM or SL_EIO on failure. */
int sl_conn_attach(sl_conn_t *cn, int fd) SL_MUST_USE;
/* Stops watching and closes the handle (on_closed follows); the fd stays
 * open, for the owner to close. Leaves the kick list. */
void sl_conn_detach(sl_conn_t *cn);
/* Arms the poll for what the owner wants now (read: it has room for bytes;
 * write: it has bytes to send), plus the direction TLS waits for. Wanting to
 * read with decrypted bytes already inside TLS queues a kick. */
void sl_conn_update_slow(sl_conn_t *cn, bool want_read, bool want_write);
static inline void sl_conn_update(sl_conn_t *cn, bool want_read, bool want_write) {
    /* Inline for the common case, called several times per transaction: a
     * plain-text socket whose watched events do not change. */
    if (!cn->ssl && cn->poll && !cn->read_wants_write && !cn->write_wants_read &&
        ((want_read ? UV_READABLE : 0) | (want_write ? UV_WRITABLE : 0)) == cn->armed) {
        cn->reading = want_read;
        return;
    }
    sl_conn_update_slow(cn, want_read, want_write);
}
/* Records the direction a TLS handshake step waits for (enum sl_tls_want):
 * the owner then waits for it as a read. */
void sl_conn_tls_wait(sl_conn_t *cn, int want);
/* Like read(2) / send(2) through TLS when there is TLS: bytes moved, 0 at
 * EOF (reads), -EAGAIN, or another negative errno (-EIO for TLS). */
ssize_t sl_conn_read(sl_conn_t *cn, void *p, size_t n);
ssize_t sl_conn_write(sl_conn_t *cn, const void *p, size_t n);
/* Decrypted bytes already inside TLS, invisible to poll. */
static inline int sl_conn_pending(const sl_conn_t *cn) {
    return cn->ssl ? SSL_pending(cn->ssl) : 0;
}

#endif
