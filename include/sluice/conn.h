/* One socket of either end, a client's or a backend's: its place in the
 * loop's epoll set, reads and writes with or without TLS, the direction a TLS call
 * waits for, and the "decrypted bytes wait inside TLS" kick that poll cannot
 * give. What the socket is watched for is computed from what its owner wants
 * each time the owner says so, plus what TLS waits for: a poll error, which
 * takes the socket out of the set, leaves nothing stale behind. The fd and the SSL
 * object belong to the owner (client.c, server.c, or libpq); buffers,
 * framing and protocol state are the owner's too. PgBouncer's SBuf is the
 * model: one I/O layer and one event callback for both ends. */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "sluice/err.h"
#include "sluice/list.h"

typedef struct sl_conn sl_conn_t;
/* A socket event: status < 0 is a poll error (the socket left the set),
 * else events holds UV_READABLE / UV_WRITABLE as the owner should act on
 * them (a TLS read waiting for writability is reported as readable). */
typedef void (*sl_conn_event_cb)(sl_conn_t *cn, int status, int events);
/* A socket let go by sl_conn_detach is done with: a loop round later. */
typedef void (*sl_conn_closed_cb)(sl_conn_t *cn);

/* The sockets of one loop. All of them sit in one epoll set, watched by a
 * single libuv poll handle, rather than a libuv poll handle each: a handle
 * is 160 bytes, most of an idle client's memory (issue 13). The set also
 * runs the connections with decrypted bytes inside TLS from an idle handle
 * before the loop blocks again, and the close callbacks of detached
 * connections, one loop round later as libuv's uv_close would. */
typedef struct sl_conn_kicks {
    uv_loop_t *loop;     /* borrowed */
    int epfd;            /* owned: the epoll set of every attached socket; -1 if it could
                            not be made (attaching then fails) */
    uv_poll_t ep_poll;   /* watches epfd for readability */
    sl_list_t conns;     /* sl_conn_t with TLS bytes to run, by kick_node */
    sl_list_t closed;    /* sl_conn_t detached, whose on_closed is owed, by close_node */
    uv_idle_t idle;      /* active while conns or closed is not empty */
    int nconns;          /* attachments not yet through their close callback */
    int narmed;          /* sockets in the epoll set: ep_poll runs while above 0 */
    bool stopping;       /* sl_conn_kicks_close ran: the handles close once nconns is 0 */
    bool closed_handles; /* they did */
} sl_conn_kicks_t;

struct sl_conn {
    sl_conn_kicks_t *kicks;      /* borrowed: its loop's socket set */
    SSL *ssl;                    /* borrowed (the owner's or libpq's): all I/O goes through it;
                                    NULL in plain text */
    sl_list_t kick_node;         /* its place on kicks->conns */
    sl_list_t close_node;        /* its place on kicks->closed */
    sl_conn_event_cb on_event;   /* socket events, poll errors and kicks */
    sl_conn_closed_cb on_closed; /* after each detach, a loop round later; may free the owner */
    void *data;                  /* borrowed: the owner */
    int fd;                      /* the socket last attached, -1 none; the owner's, closed by it
                                    only once detached */
    uint16_t handles;            /* attachments whose close callback has not run yet */
    uint16_t close_owed;         /* of them, detached ones: on_closed runs that many times */
    uint8_t armed;               /* UV_* events in the epoll set now; 0: not in it */
    bool attached;               /* fd is watched (a detach ends it) */
    bool reading;                /* the owner's last sl_conn_update wanted bytes */
    bool read_wants_write;       /* the last TLS read or handshake step waits for writability */
    bool write_wants_read;       /* the last TLS write waits for readability */
    bool kicked;                 /* on kicks->conns */
    int refused;                 /* errno of an epoll_ctl that refused the socket (ENOMEM,
                                    ENOSPC: max_user_watches), owed to the owner as a poll
                                    error from the idle handle; 0: none */
};

void sl_conn_kicks_init(sl_conn_kicks_t *k, uv_loop_t *loop);
/* The loop is stopping: its handles close once every attached socket
 * was detached and its close callback ran. */
void sl_conn_kicks_close(sl_conn_kicks_t *k);

/* Sets up cn with no socket yet. loop is kicks' loop (kept in kicks). */
void sl_conn_init(sl_conn_t *cn, uv_loop_t *loop, sl_conn_kicks_t *kicks, sl_conn_event_cb on_event,
                  sl_conn_closed_cb on_closed, void *data);
/* Watches fd (nothing armed yet). A different fd than the one watched is a
 * new attachment, the old one detached first (its close callback runs):
 * libpq may move to another socket while connecting. SL_EIO on failure. */
int sl_conn_attach(sl_conn_t *cn, int fd) SL_MUST_USE;
/* Stops watching (on_closed follows, a loop round later); the fd stays
 * open, for the owner to close. Leaves the kick list. */
void sl_conn_detach(sl_conn_t *cn);
/* Arms the poll for what the owner wants now (read: it has room for bytes;
 * write: it has bytes to send), plus the direction TLS waits for. Wanting to
 * read with decrypted bytes already inside TLS queues a kick. */
void sl_conn_update_slow(sl_conn_t *cn, bool want_read, bool want_write);
static inline void sl_conn_update(sl_conn_t *cn, bool want_read, bool want_write) {
    /* Inline for the common case, called several times per transaction: a
     * plain-text socket whose watched events do not change. */
    if (!cn->ssl && cn->attached && !cn->read_wants_write && !cn->write_wants_read &&
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
