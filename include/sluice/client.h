/* A client connection: startup, authentication, then idle/waiting/active
 * with a linked server, until it closes. Owns its socket, its poll handle,
 * its buffers (only while active) and the parameters it asked for. */
#ifndef SLUICE_CLIENT_H
#define SLUICE_CLIENT_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "sluice/auth.h"
#include "sluice/buf.h"
#include "sluice/conn.h"
#include "sluice/list.h"
#include "sluice/params.h"
#include "sluice/pool.h"
#include "sluice/proto.h"
#include "sluice/route.h"
#include "sluice/scram.h"
#include "sluice/server.h"
#include "sluice/stmt.h"
#include "sluice/loop.h"

/* enum sl_client_state is in loop.h: the loop keeps a list of clients per state. */

extern const char *const sl_client_state_names[];

typedef struct sl_client {
    sl_list_t node;        /* on the loop's clients list until it starts closing */
    sl_list_t state_node;  /* on the loop's clients_in[state]: moved by sl_client_set_state */
    sl_loop_t *w;        /* borrowed */
    uint32_t id;           /* C-<id>; also the BackendKeyData pid */
    uint32_t cancel_key;   /* random; with id, what a CancelRequest must match */
    char tag[160];         /* "C-1 db=app user=bob peer=127.0.0.1:5544" */
    char peer[56];         /* address:port or "unix" */
    enum sl_client_state state;
    sl_conn_t sock;        /* its socket; sock.fd and sock.ssl (set once the client asked
                              for TLS) are owned, freed once the poll handle closed, whose
                              close callback frees the client */
    bool tls_accepting;    /* TLS handshake in progress */
    char *user, *dbname;   /* owned; set after the startup packet */
    sl_pool_t *pool;       /* borrowed; set after authentication */
    sl_server_t *server;   /* borrowed while linked */
    sl_waiter_t waiter;    /* its place in the pool's queue */
    sl_pool_t *wait_pool;  /* borrowed: the pool it is queued on (or was last) */
    /* read/write splitting (router.c), for databases with replicas */
    sl_route_t *route;     /* borrowed: its database's routing, or NULL */
    struct sl_client_route *rt; /* owned with route: pools, fence, kept request (router.c) */
    int tx_backend;        /* backend of the transaction in flight; -1: none */
    bool tx_write;         /* that transaction was routed as a write */
    bool tx_kept;          /* rt holds a copy of the request (a replica read) */
    bool tx_replied;       /* the server (or sluice for it) answered something */
    bool tx_retried;       /* this read was moved once already */
    bool barrier;          /* bytes from barrier_off on wait for the next transaction: */
    uint32_t barrier_off;  /* ... a write sent while a replica serves a read */
    sl_params_t params;    /* session parameters the client asked for */
    sl_params_t startup;   /* the ones it gave at login, as given: where RESET, RESET ALL
                              and DISCARD ALL put them back (see relay.c, "fix-up") */
    uint64_t params_fp;    /* their fingerprint; 0: to recompute */
    sl_buf_t in;           /* client -> server bytes; held while active */
    sl_buf_t out;          /* server/sluice -> client bytes; held while active */
    uint8_t *login_buf;    /* owned during login: startup and auth messages */
    uint32_t login_len;    /* bytes in login_buf */
    sl_scan_t scan;        /* framing of client -> server bytes */
    uint32_t scan_new;     /* bytes appended to `in` and not framed yet */
    int pending;           /* ReadyForQuery replies the client still expects */
    bool server_error;     /* an ErrorResponse was relayed since the last ReadyForQuery */
    bool terminated;       /* the client sent Terminate */
    bool quiet_close;      /* log the close at debug level only (port probes) */
    bool holding;          /* a Query is kept in `in` until complete, to be analysed */
    bool unvetted;         /* a Query/Parse too long to analyse waits for a server: the
                              next one linked is reset when the client leaves it */
    bool ext_open;         /* extended-protocol messages sent since the last Sync */
    bool reset_seen;       /* the client ran DISCARD ALL: its server's settings changed */
    uint32_t hold_start;   /* offset in `in` of the held Query */
    uint32_t pins;         /* SL_STATE_* session state tying it to its server */
    bool state_made;       /* created session state on its server since linking */
    bool state_kept;       /* ... and some a reset leaves (setseed()): close that server */
    sl_params_t dirty;     /* names the client SET or RESET since its server last settled */
    bool capture_all;      /* it ran RESET ALL: re-read every tracked setting */
    uint32_t capturing;    /* leading entries of `dirty` being read back now */
    /* RESET fix-up (relay.c): a request that RESETs startup parameters has its
     * ReadyForQuery held until sluice SETs the client's values back. */
    uint8_t fix;           /* enum fix_state in relay.c */
    bool fix_all;          /* the request ran RESET ALL or DISCARD ALL */
    bool fix_failed;       /* an ErrorResponse came before its ReadyForQuery */
    bool fix_cut;          /* the server message being relayed is that ReadyForQuery */
    char fix_status;       /* its transaction status */
    sl_params_t fix_names; /* name -> "-": put back; "+": SET after RESET ALL, kept;
                              while the SETs run, name -> the value being applied */
    int fix_after;         /* requests behind the fence, counted in `pending` */
    bool fix_fence;        /* bytes of `in` from fix_fence_off on wait for the fix-up */
    uint32_t fix_fence_off;
    sl_stmt_names_t stmt_names; /* its named prepared statements (transaction pooling) */
    struct sl_ps *ps;      /* owned while linked with statement tracking; see prepare.h */
    bool drop_ahead;       /* a message analysed and not yet walked may run DISCARD ALL or
                              DEALLOCATE ALL: the walker looks (see prepare.c) */
    bool s2c_blocked;      /* server -> client write hit EAGAIN */
    bool c2s_blocked;      /* client -> server write hit EAGAIN */
    const char *reject;    /* refuse after the startup packet with this 53300 message */
    sl_auth_t *auth;       /* owned during authentication */
    int auth_method;       /* enum sl_auth_type, kept while auth_query runs */
    struct sl_authq_job *authq; /* its auth_query lookup in flight (authq.c), or NULL */
    /* times, on the loop clock (ms) */
    int64_t connect_ms;    /* accepted */
    int64_t query_ms;      /* the oldest request still unanswered was sent */
    int64_t last_io_ms;    /* last request sent or last ReadyForQuery relayed */
    int64_t partial_ms;    /* the incomplete message `in` ends in began to arrive; 0: none */
} sl_client_t;

/* Where forwarding client bytes to the server stops: before a held Query
 * or Parse, a partial header, the RESET fix-up's fence, or the routing
 * barrier. */
static inline uint32_t sl_client_fwd_limit(const sl_client_t *c) {
    uint32_t limit = c->holding ? c->hold_start : c->in.tail - c->scan.hdr_len;
    if (c->fix_fence && c->fix_fence_off < limit) limit = c->fix_fence_off;
    return c->barrier && c->barrier_off < limit ? c->barrier_off : limit;
}

/* Bytes a server could take now: a partial header, or the start of a Query
 * held until whole, is no reason to ask for a server. */
static inline bool sl_client_has_request(const sl_client_t *c) {
    return sl_client_fwd_limit(c) > c->in.head;
}

void sl_client_accept(sl_loop_t *w, int fd, const char *peer);
/* The one exit: logs reason, releases or closes the server, frees later. */
void sl_client_close(sl_client_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Sends a FATAL ErrorResponse (best effort) then closes. */
void sl_client_fatal(sl_client_t *c, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Changes the state and moves the client to the loop's list for it. An
 * illegal transition (see the table in client.c) is refused: logged as an
 * error with both state names, and nothing moves; returns false then. A
 * WAITING client is also on its pool's FIFO queue, through its waiter. */
bool sl_client_set_state(sl_client_t *c, enum sl_client_state st);
/* Recomputes which events the client's poll watches. */
void sl_client_update_poll(sl_client_t *c);
/* Writes queued output; returns false if the client was closed. */
bool sl_client_flush(sl_client_t *c);
/* Answers every request the client is waiting on with one ErrorResponse
 * (none if msg is NULL: one was already relayed) and a ReadyForQuery each,
 * drops its unsent input and makes it idle. False if the client was closed. */
bool sl_client_abort_requests(sl_client_t *c, const char *code, const char *msg);
/* Queues an idle client that has requests for a server (routing them when
 * its database has replicas). */
void sl_client_request_server(sl_client_t *c);
/* A cancel for a client still waiting for a server: its queued request is
 * dropped and answered with 57014, as PostgreSQL would answer a cancel. */
void sl_client_cancel_wait(sl_client_t *c);
/* Called by the janitor. */
void sl_client_tick(sl_client_t *c, int64_t now_ms);
/* SIGTERM: close now if between transactions, else after the current one. */
void sl_client_shutdown(sl_client_t *c);

#endif
