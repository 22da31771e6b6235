/* The session module's internal header: what client.c, relay.c,
 * prepare.c, router.c and cancel.c share, and nobody outside src/session/
 * sees (their public face is include/sluice/session.h). Calls among these
 * files may go either way; calls out of the module go down only.
 *
 * ---- client.c ----
 * A client connection: startup, authentication, then idle/waiting/active
 * with a linked server, until it closes. Owns its socket, its poll handle,
 * its buffers (only while active) and the parameters it asked for. */
#ifndef SLUICE_SESSION_INTERNAL_H
#define SLUICE_SESSION_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "sluice/auth.h"
#include "sluice/authq.h"
#include "sluice/buf.h"
#include "sluice/conn.h"
#include "sluice/expect.h"
#include "sluice/list.h"
#include "sluice/loop.h"
#include "sluice/params.h"
#include "sluice/pool.h"
#include "sluice/proto.h"
#include "sluice/route.h"
#include "sluice/scram.h"
#include "sluice/server.h"
#include "sluice/session.h"
#include "sluice/stmt.h"

/* enum sl_client_state is in loop.h: the loop keeps a list of clients per state. */

/* What a client holds only while it does something: logging in,
 * exchanging bytes with a server or with sluice, a console reply going
 * out. An idle client points at its loop's resting copy, all zero and
 * never written (an idle client is mostly its struct: issue 13); it takes
 * its own (sl_client_own) before it writes any of this, from a small
 * per-loop free list, and gives it back once all of it is at rest again
 * (zero, as the resting copy: see client.c, buffers_maybe_give). */
typedef struct sl_client_act {
    uint32_t barrier_off; /* where the barrier (see barrier) starts in `in` */
    sl_buf_t in;          /* client -> server bytes; held while active */
    sl_buf_t out;         /* server/sluice -> client bytes; held while active */
    uint8_t *login_buf;   /* owned during login: startup and auth messages */
    uint32_t login_len;   /* bytes in login_buf */
    sl_scan_t scan;       /* framing of client -> server bytes */
    uint32_t scan_new;    /* bytes appended to `in` and not framed yet */
    int pending;          /* ReadyForQuery replies the client still expects */
    uint32_t hold_start;  /* offset in `in` of the held Query */
    sl_params_t dirty;    /* names the client SET or RESET since its server last settled */
    uint32_t capturing;   /* leading entries of `dirty` being read back now */
    /* RESET fix-up (relay.c): a request that RESETs startup parameters has its
     * ReadyForQuery held until sluice SETs the client's values back. */
    uint8_t fix;           /* enum fix_state in relay.c */
    char fix_status;       /* its transaction status */
    sl_params_t fix_names; /* name -> "-": put back; "+": SET after RESET ALL, kept;
                              while the SETs run, name -> the value being applied */
    int fix_after;         /* requests behind the fence, counted in `pending` */
    uint32_t fix_fence_off;
    const char *reject;    /* refuse after the startup packet with this 53300 message */
    sl_auth_t *auth;       /* owned during authentication */
    int auth_method;       /* enum sl_auth_type, kept while auth_query runs */
    sl_authq_job_t *authq; /* its auth_query lookup in flight (authq.c), or NULL */
    /* times, on the loop clock (ms) */
    int64_t query_ms;   /* the oldest request still unanswered was sent */
    int64_t xact_ms;    /* the first request of its open transaction came; 0: none
                           (transaction_timeout counts from it, as PgBouncer's) */
    int64_t partial_ms; /* the incomplete message `in` ends in began to arrive; 0: none */
    /* per-pool stats (SHOW STATS): monotonic microseconds (uv_hrtime) */
    uint64_t xact_start_us;          /* its transaction began on a server; 0: none running */
    uint64_t query_start_us;         /* its oldest unanswered request began on a server; 0: none */
    uint8_t *console_out;            /* owned: the console reply going out, or NULL */
    size_t console_len;              /* its bytes */
    size_t console_off;              /* bytes of it copied to `out` so far */
    struct sl_client_act *next_free; /* on the loop's free list */
} sl_client_act_t;

typedef struct sl_client {
    sl_list_t node;       /* on the loop's clients list until it starts closing */
    sl_list_t state_node; /* on the loop's clients_in[state]: moved by sl_client_set_state */
    sl_loop_t *w;         /* borrowed */
    uint32_t id;          /* C-<id>; also the BackendKeyData pid */
    uint32_t cancel_key;  /* random; with id, what a CancelRequest must match */
    enum sl_client_state state;
    /* Its address, kept compact (the tag and SHOW CLIENTS format it): no
     * string per idle client. */
    uint8_t peer_addr[16]; /* IPv4 (4 bytes) or IPv6, network order */
    uint16_t peer_port;    /* host order */
    uint8_t peer_family;   /* AF_INET, AF_INET6, 0: the Unix socket ("unix"), or
                              SL_PEER_UNKNOWN ("?") */
    sl_client_act_t *a;    /* owned, or the loop's resting copy while idle (see above) */
    sl_conn_t sock;        /* its socket; sock.fd and sock.ssl (set once the client asked
                              for TLS) are owned, freed once the poll handle closed, whose
                              close callback frees the client */
    char *user, *dbname;   /* set after the startup packet: one block "user\0dbname\0", owned
                              through user (dbname points into it) */
    sl_pool_t *pool;       /* borrowed; set after authentication */
    sl_server_t *server;   /* borrowed while linked */
    sl_waiter_t waiter;    /* its place in the pool's queue */
    sl_pool_t *wait_pool;  /* borrowed: the pool it is queued on (or was last) */
    /* read/write splitting (router.c), for databases with replicas */
    sl_route_t *route;          /* borrowed: its database's routing, or NULL */
    struct sl_client_route *rt; /* owned with route: pools, fence, kept request (router.c) */
    int tx_backend;             /* backend of the transaction in flight; -1: none */
    sl_params_t params;         /* session parameters the client asked for */
    sl_params_t startup;        /* the ones it gave at login, as given: where RESET, RESET ALL
                                   and DISCARD ALL put them back (see relay.c, "fix-up") */
    uint64_t params_fp;         /* their fingerprint; 0: to recompute */
    uint32_t pins;              /* SL_STATE_* session state tying it to its server */
    sl_stmt_names_t stmt_names; /* its named prepared statements (transaction pooling) */
    struct sl_ps *ps; /* owned while linked with statement tracking; see prepare.c below */
    /* times, on the loop clock (ms) */
    int64_t connect_ms; /* accepted */
    int64_t last_io_ms; /* last request sent or last ReadyForQuery relayed */
    /* per-pool stats (SHOW STATS): monotonic microseconds (uv_hrtime) */
    uint64_t wait_start_us; /* it last became WAITING */
    /* the admin console (console.c) */
    uint8_t console; /* enum sl_console_level: 0 for a client of a real database */
    /* A failure recorded by a helper (sl_session_fail), for the entry point
     * that called it to turn into the FATAL reply and the close. */
    char fail_code[6]; /* its SQLSTATE; "": none */
    char *fail_msg;    /* owned: its message; NULL if it could not be kept */
    /* Flags, packed together as bits: a connected client is mostly this
     * struct, so no padding between scattered bools. */
    bool tls_accepting : 1; /* TLS handshake in progress */
    bool tx_write : 1;      /* that transaction was routed as a write */
    bool tx_kept : 1;       /* rt holds a copy of the request (a replica read) */
    bool tx_replied : 1;    /* the server (or sluice for it) answered something */
    bool tx_retried : 1;    /* this read was moved once already */
    bool barrier : 1;       /* bytes from barrier_off on wait for the next transaction: a write sent
                               while a replica serves a read */
    bool server_error : 1;  /* an ErrorResponse was relayed since the last ReadyForQuery */
    bool terminated : 1;    /* the client sent Terminate */
    bool quiet_close : 1;   /* log the close at debug level only (port probes) */
    bool holding : 1;       /* a Query is kept in `in` until complete, to be analysed */
    bool unvetted : 1;      /* a Query/Parse too long to analyse waits for a server: the next one
                               linked is reset when the client leaves it */
    bool ext_open : 1;      /* extended-protocol messages sent since the last Sync */
    bool reset_seen : 1;    /* the client ran DISCARD ALL: its server's settings changed */
    bool state_made : 1;    /* created session state on its server since linking */
    bool state_kept : 1;    /* ... and some a reset leaves (setseed()): close that server */
    bool session_held : 1;  /* took a server while its pool was in session mode: keeps it, and
                               session pooling's rules, until it leaves (sl_client_mode) */
    bool ps_on : 1;       /* max_prepared_statements was above 0 at its login: its named statements
                             are tracked (or not) until it leaves, whatever a SET or RELOAD makes
                             of the key meanwhile (sl_ps_wanted) */
    bool capture_all : 1; /* it ran RESET ALL: re-read every tracked setting */
    bool fix_all : 1;     /* the request ran RESET ALL or DISCARD ALL */
    bool fix_failed : 1;  /* an ErrorResponse came before its ReadyForQuery */
    bool fix_cut : 1;     /* the server message being relayed is that ReadyForQuery */
    bool fix_fence : 1;   /* bytes of `in` from fix_fence_off on wait for the fix-up */
    bool drop_ahead : 1;  /* a message analysed and not yet walked may run DISCARD ALL or
                             DEALLOCATE ALL: the walker looks (see prepare.c) */
    bool s2c_blocked : 1; /* server -> client write hit EAGAIN */
    bool c2s_blocked : 1; /* client -> server write hit EAGAIN */
    bool wait_notified : 1; /* got query_wait_notify's NOTICE in this wait */
    bool counted : 1;       /* counted in its pool's logins (sl_pool_admit) */
    bool early_bytes : 1;   /* sent bytes while in LOGIN_WAIT: its socket is not watched until the
                               login is answered (see client.c, on_login_wait) */
    bool console_ready : 1; /* its ReadyForQuery is still to be sent */
    bool console_peer : 1;  /* logged in as sluice's own OS user over the Unix socket */
    bool console_held : 1;  /* a command completes later (PAUSE, WAIT_CLOSE, SUSPEND): its
                               ReadyForQuery and the next Query wait for sl_console_finish */
    bool fail_silent : 1;   /* close without the FATAL (sl_session_drop) */
    bool cancel_asked : 1;  /* a cancel came while its linked server was being set up: the request
                               is dropped when that ends (relay.c, setup_finish) */
} sl_client_t;

/* Makes c->a c's own copy (see sl_client_act_t) before c writes to it;
 * false when out of memory. Cheap when it already is. */
bool sl_client_own_slow(sl_client_t *c);
static inline bool sl_client_own(sl_client_t *c) {
    return c->a != c->w->act_rest || sl_client_own_slow(c);
}

/* True once c is closing, or a helper recorded a failure that the entry
 * point will end it with: nothing more is done for c then. */
static inline bool sl_client_done(const sl_client_t *c) {
    return c->state == SL_CL_CLOSING || c->fail_code[0] != 0;
}

/* A peer_family for an address given in no form sl_session_accept reads. */
#define SL_PEER_UNKNOWN 255

/* Console clients, by what they may do. */
enum sl_console_level { SL_CONSOLE_NONE, SL_CONSOLE_ASKED, SL_CONSOLE_STATS, SL_CONSOLE_ADMIN };

/* The pool mode c is served in. A pool's mode can change (RELOAD, SET
 * pool_mode) while c holds a session-mode server: its session state there
 * was never analysed (session pooling needs not), so that server is never
 * handed to another client before c leaves. */
static inline int sl_client_mode(const sl_client_t *c) {
    return c->session_held ? SL_POOL_SESSION : c->pool->mode;
}

/* The counters a client's traffic goes to: its server's pool while linked
 * (with replicas, the backend serving it), else the pool it logged in to;
 * NULL before login. */
static inline sl_pool_stats_t *sl_client_stats(const sl_client_t *c) {
    if (c->server && c->server->home)
        return &sl_container_of(c->server->home, sl_pool_t, servers)->stats;
    return c->pool ? &c->pool->stats : NULL;
}

/* Where forwarding client bytes to the server stops: before a held Query
 * or Parse, a partial header, the RESET fix-up's fence, or the routing
 * barrier. */
static inline uint32_t sl_client_fwd_limit(const sl_client_t *c) {
    uint32_t limit = c->holding ? c->a->hold_start : c->a->in.tail - c->a->scan.hdr_len;
    if (c->fix_fence && c->a->fix_fence_off < limit) limit = c->a->fix_fence_off;
    return c->barrier && c->a->barrier_off < limit ? c->a->barrier_off : limit;
}

/* Bytes a server could take now: a partial header, or the start of a Query
 * held until whole, is no reason to ask for a server. */
static inline bool sl_client_has_request(const sl_client_t *c) {
    return sl_client_fwd_limit(c) > c->a->in.head;
}

/* c's log tag, "C-1 db=app user=bob peer=127.0.0.1:5544", formatted now
 * into one of a few per-thread buffers: valid until this thread formats a
 * few more (enough for the arguments of one log call). */
const char *sl_client_tag(const sl_client_t *c);
/* c's address as "address:port", "[v6]:port" or "unix", likewise. */
const char *sl_client_peer(const sl_client_t *c);
/* Whether c came in over the Unix socket. */
static inline bool sl_client_is_unix(const sl_client_t *c) {
    return c->peer_family == 0;
}

/* The one exit: logs reason, releases or closes the server, frees later. */
void sl_client_close(sl_client_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Records that c failed with SQLSTATE code and a message for the client:
 * the helpers below the entry points (relay, prepare, router) never close
 * a client themselves, they record this and return their status. The
 * first failure wins. Returns false, so that a helper can return it. */
bool sl_session_fail(sl_client_t *c, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same for a client that is to be closed with no reply: its socket
 * failed, or it sent Terminate and has all its replies. The message is the
 * reason logged. Returns false. */
bool sl_session_drop(sl_client_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Called by every entry point (a poll or server event, a pool or auth_query
 * callback, the janitor's tick, a cancel) once its work for c is over: a
 * recorded failure becomes the FATAL reply and the close. True when c is
 * closing (the memory stays valid until its handle's close callback). */
bool sl_session_settle(sl_client_t *c);
/* Counts an ErrorResponse with SQLSTATE code sent to c (sluice's own or
 * relayed from its server), by class, for the loop and c's pool. */
void sl_session_count_error(sl_client_t *c, const char *code);
/* Sends a FATAL ErrorResponse (best effort) then closes. For entry points
 * (client.c); helpers use sl_session_fail. */
void sl_client_fatal(sl_client_t *c, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Changes the state and moves the client to the loop's list for it. An
 * illegal transition (see the table in client.c) is refused: logged as an
 * error with both state names, and nothing moves; returns false then. A
 * WAITING client is also on its pool's FIFO queue, through its waiter. */
bool sl_client_set_state(sl_client_t *c, enum sl_client_state st);
/* Recomputes which events the client's poll watches. */
void sl_client_update_poll(sl_client_t *c);
/* Writes queued output; returns false if the client was closed or has a
 * recorded failure (then sl_session_settle writes it all). */
bool sl_client_flush(sl_client_t *c);
/* Answers every request the client is waiting on with one ErrorResponse
 * (none if msg is NULL: one was already relayed) and a ReadyForQuery each,
 * drops its unsent input and makes it idle. False if that did not fit: the
 * failure is recorded (sl_session_fail), or the client was closed. */
bool sl_client_abort_requests(sl_client_t *c, const char *code, const char *msg);
/* Queues an idle client that has requests for a server (routing them when
 * its database has replicas). */
void sl_client_request_server(sl_client_t *c);
/* A cancel for a client still waiting for a server: its queued request is
 * dropped and answered with 57014, as PostgreSQL would answer a cancel;
 * when a server is linked and still being given the client's settings, once
 * that is done (cancel_asked). False when there is no whole request to drop. */
bool sl_client_cancel_wait(sl_client_t *c);
/* What such a client is answered (57014). */
#define SL_CANCELLED_WAITING                                                                      \
    "canceling statement due to user request (it was waiting for a server connection)"
/* Called by the janitor. */
void sl_client_tick(sl_client_t *c, int64_t now_ms);
/* SIGTERM: close now if between transactions, else after the current one. */
void sl_client_shutdown(sl_client_t *c);
/* Whether a draining sluice (SIGTERM, SHUTDOWN WAIT_FOR_CLIENTS) closes c
 * between transactions now: shutdown_grace_period has passed and c is
 * transaction- or statement-pooled, with no session state pinning it. It
 * is closed as its transaction ends (the FATAL follows the ReadyForQuery in
 * one write, so a client pool that checks a connection before use sees it
 * closed), or once it has been idle for shutdown_grace_period. */
bool sl_client_drain_due(const sl_client_t *c);
#define SL_CLIENT_DRAIN_MSG                                                                        \
    "sluice is shutting down (shutdown_grace_period passed): connect again to reach the new "      \
    "process"

/* ---- relay.c ---- */
/* The byte pump between a linked client and server: message-boundary-aware
 * streaming through the client's two fixed buffers with backpressure both
 * ways, detection of ReadyForQuery to end a transaction, parameter tracking,
 * and what the client sees when the server dies. Sits with the client layer:
 * it works on both structs. */

/* Links c to s (parameters are applied first when they differ), then starts
 * relaying. Used for each transaction (each session in session pooling), and
 * at login when the pool has no cached parameters yet. */
void sl_relay_link(sl_client_t *c, sl_server_t *s);
/* Answers an authenticated client's login without a server, from pool p's
 * cached parameters (the client's own values where it gave them): the
 * client becomes idle and gets a server at its first request. False if it
 * was closed. */
bool sl_relay_welcome(sl_client_t *c, const sl_pool_t *p);
/* Frames client bytes read since the last call; false if c was closed. */
bool sl_relay_scan_client(sl_client_t *c);
/* Forwards framed client bytes to the linked server; false if c was closed. */
bool sl_relay_flush_c2s(sl_client_t *c);
/* Frames n bytes from the server just placed in c->a->out at p (ReadyForQuery,
 * ParameterStatus, errors); false if c was closed. */
bool sl_relay_scan_server(sl_client_t *c, sl_server_t *s, const uint8_t *p, size_t n);
/* The refusal text for a statement pin_session_state = error refuses. */
void sl_relay_pin_refusal(sl_client_t *c, const char *sql, char *msg, size_t cap);
/* After client bytes went to the server (or sluice answered a request
 * itself): gives the server back if nothing is owed and the transaction is
 * over (a lone Flush owes nothing), and closes a client that sent Terminate
 * once its replies are relayed. False if c was closed. */
bool sl_relay_settle(sl_client_t *c);
/* The client drained its output: relay what the server sent meanwhile. */
void sl_relay_resume(sl_client_t *c);
/* The linked server died: tell the client and, in transaction pooling, let
 * it carry on with a fresh server. */
void sl_relay_server_lost(sl_client_t *c, const char *why);
/* Drops a RESET fix-up in flight (see relay.c): its request was answered
 * otherwise, or the client's input was dropped. A ReadyForQuery it held
 * is counted in c->a->pending again, for whoever answers instead. */
void sl_relay_forget_fix(sl_client_t *c);
/* Unlinks the server on client exit: back to the pool if clean, else closed. */
void sl_relay_unlink(sl_client_t *c);

/* ---- prepare.c ---- */
/* Named prepared statements through transaction and statement pooling.
 * While a client is linked, its messages to the server go through a walker
 * that renames statements to sluice's server-side names, injects a Parse
 * where the server lacks one, evicts least recently used statements with a
 * Close, and answers Close (and a Parse the server already has) itself. The
 * server's replies go through a pump that drops the replies to sluice's own
 * messages and puts sluice's answers in their place in the stream. Both keep
 * the order of replies exact, with pipelining and when an error cuts a
 * pipeline short.
 *
 * The walker changes the client's names (and the server's cache) when it
 * sends a request, so that the requests behind it in the same batch are
 * renamed right; an error before the request makes PostgreSQL skip it, and
 * then its change is undone (in reverse order, see expect.h). A batch after
 * a Sync is not walked past a named statement while a change of an earlier
 * batch is unsettled: it must see the names as PostgreSQL will have them.
 *
 * DEALLOCATE ALL and DISCARD ALL (alone, in a Query of several statements,
 * or executed as a prepared statement) drop every statement of the
 * session, but only if they run: an error before them skips them, they
 * fail in an aborted transaction, and once run a rollback does not bring
 * the statements back. The walker sends such a request as a barrier (see
 * expect.h): a message behind it that uses names waits, and the pump
 * forgets the client's names and the server's statements when the
 * server's CommandComplete says the drop ran.
 * Sits with relay: it works on a linked client and server. */

typedef struct sl_bytes {
    uint8_t *p;             /* owned */
    uint32_t len, off, cap; /* bytes held, bytes already used, allocated */
} sl_bytes_t;

/* The in-flight state of a linked client in this mode. */
typedef struct sl_ps {
    sl_expect_t replies;   /* what the server owes, in order */
    sl_bytes_t stage;      /* bytes for the server, walked and rewritten; freed when
                              drained above 64 kB */
    sl_bytes_t msg;        /* a Parse/Bind/Describe/Close being assembled (at most
                              max_rewrite_size bytes of it); freed likewise */
    uint32_t msg_need;     /* bytes of the message (a Bind: its whole length) */
    uint32_t msg_max;      /* bytes of it held at most: the rest streams or is dropped */
    uint32_t remain;       /* bytes of the current client message still to walk */
    sl_buf_t sin;          /* server bytes not yet relayed (a pool buffer) */
    uint32_t s_remain;     /* bytes of the current server message still to relay */
    bool assembling;       /* msg holds the start of a message */
    bool s_mid;            /* inside a server message (answers must wait) */
    bool skip_to_sync;     /* a Parse was refused: drop messages up to the Sync */
    bool discard;          /* the message being walked is dropped */
    bool held;             /* the walker waits: a change of an earlier batch may yet be
                              skipped (see sl_expect_change_unsettled) */
    bool unnamed_drops;    /* the unnamed statement runs DEALLOCATE ALL or DISCARD ALL */
    bool portal_drops;     /* the portal drop_portal does: its Execute is a barrier */
    char drop_portal[64];  /* that portal's name ("": the unnamed one); a longer name
                              is not tracked */
    bool unnamed_batch;    /* a Parse of the unnamed statement was walked since the
                              last Sync */
    uint32_t unnamed_owed; /* such Parses whose reply is still owed */
    char dealloc_name[SL_STMT_NAME_MAX + 2]; /* the unnamed statement is a DEALLOCATE of
                                                this client name that sluice plays, or "" */
    bool dealloc_portal;                     /* the unnamed portal is bound to it */
    struct sl_ps *next_free;                 /* on the loop's free list */
} sl_ps_t;

/* The type byte the analysis gives a Parse refused under
 * pin_session_state = error, for the walker to answer (no client sends it:
 * a message of type 0 is refused as PostgreSQL refuses it). */
#define SL_MSG_REFUSED 0
/* The type byte of a Query that is SQL DEALLOCATE of one name: sluice
 * answers it when the name is one of the client's protocol-level
 * statements once the messages before it are walked (the server knows the
 * statement under another name), else it goes on as the Query it is. Type
 * 1 is no frontend message either. */
#define SL_MSG_DEALLOCATE 1
/* The type byte of a Parse whose text is `DEALLOCATE [PREPARE] name`: the
 * walker plays it when the name is one of the client's protocol-level
 * statements (see prepare.c), else it goes on as the Parse it is. Type 2
 * is no frontend message either. */
#define SL_MSG_DEALLOCATE_PARSE 2

/* The error (SQLSTATE 42501) for SQL that names a prepared statement in
 * sluice's namespace (PREPARE, EXECUTE, DEALLOCATE of sluice_...). */
#define SL_PS_POOLER_NAMES                                                                         \
    "prepared statement names starting with \"sluice_\" belong to the connection pooler, which "   \
    "prepares statements shared by its clients under them: name your prepared statements "         \
    "otherwise"

/* The statement name of a Query that is exactly `DEALLOCATE [PREPARE] name`
 * (one statement; an unquoted name folded to lower case) into buf. */
bool sl_ps_deallocate_name(const char *sql, char *buf, size_t cap);

/* Whether c's link to a server goes through this mode: transaction or
 * statement pooling with max_prepared_statements above 0 when c logged in
 * (ps_on). Inline: asked several times per message. */
static inline bool sl_ps_wanted(const sl_client_t *c) {
    return c->pool && sl_client_mode(c) != SL_POOL_SESSION && c->ps_on;
}
/* Sets up the in-flight state for a new link; false when out of memory. */
bool sl_ps_link(sl_client_t *c, sl_server_t *s) SL_MUST_USE;
/* Forwards walked client bytes; false if c was closed. */
bool sl_ps_flush_c2s(sl_client_t *c);
/* A client without a server (between transactions): Parse of a statement a
 * server already accepted, Close of a statement, Flush and the Sync ending
 * them are answered by sluice from the head of c->a->in, taking no server (a
 * driver that prepares synchronously must not wait for one). A Parse of a
 * new statement is answered too when nothing up to its Sync needs a server
 * and libpg_query reads its text as the server would: a syntax error as
 * PostgreSQL reports it (42601), other errors (an unknown table) by the
 * server at the first Bind or Describe. False if c was closed. */
bool sl_ps_answer_unlinked(sl_client_t *c);
/* Relays buffered server bytes into c->a->out as far as room allows; false if
 * c was closed. */
bool sl_ps_pump(sl_client_t *c, sl_server_t *s);
/* True when the pump has server bytes it could relay now (there is room
 * in c->a->out): the client's poll then asks for writability to resume it. */
bool sl_ps_can_pump(const sl_client_t *c);
/* True when nothing is in flight either way. */
bool sl_ps_idle(const sl_client_t *c);
/* Drops the in-flight state (the link ended) and the buffers it held; the
 * state goes to a small per-worker free list (one per transaction would
 * otherwise cost an allocation each). */
void sl_ps_unlink(sl_client_t *c);
/* Frees the loop's free list. */
void sl_ps_free_all(sl_loop_t *w);

/* ---- router.c ---- */
/* A client's side of read/write splitting: before each transaction (each
 * connection in session pooling) it reads the requests waiting in the
 * client's buffer, decides read or write (sql.c), asks the route for a
 * backend and queues the client on that backend's pool. It counts the
 * transactions each backend has in flight and keeps the client's
 * read-your-writes fence. Databases without replicas go straight to their
 * one pool. */

/* After login: takes the database's route, if it has one. */
bool sl_router_attach(sl_client_t *c);
/* The pool whose cached parameters answer the client's login: its one
 * pool, or with replicas the backend a login would be served by (NULL when
 * none is up). */
sl_pool_t *sl_router_login_pool(sl_client_t *c);
/* Queues the client for a server: 1 queued, 0 the first request is not
 * complete yet (routing needs it whole), -1 the client was answered with an
 * error or closed. */
int sl_router_request(sl_client_t *c);
/* The client's transaction on its backend is over (released, aborted, lost
 * or closed). Safe to call more than once. */
void sl_router_done(sl_client_t *c);
/* The backend chosen for a read could not give a server (err): the read
 * goes to another backend, nothing having been sent yet. False when there
 * is none, or it was not a read. */
bool sl_router_retry(sl_client_t *c, const char *err);
/* A server was linked for the client's transaction: a read on a replica
 * keeps a copy of its request for sl_router_replay. */
void sl_router_linked(sl_client_t *c);
/* The client sent more: the kept copy no longer covers its request. */
void sl_router_forget_replay(sl_client_t *c);
/* The replica serving the client's read went away before replying (why):
 * the request is put back and goes to another backend. False when that
 * cannot be done; the caller then reports the loss. */
bool sl_router_replay(sl_client_t *c, const char *why);
/* The scan framed the start of a request (a message that opens no batch
 * already open) at offset off of a routed client's buffer. */
void sl_router_scanned_start(sl_client_t *c, uint32_t off);
/* The client sent more while its read runs on a replica, or waits for one:
 * unless every request that began in it (see sl_router_scanned_start)
 * reads too, they wait behind a barrier until that transaction is over,
 * then are routed on their own. */
void sl_router_guard(sl_client_t *c);
/* Requests held behind the barrier that expect a ReadyForQuery. */
int sl_router_held_pending(const sl_client_t *c);
/* Drops the client's pool references (it is closing). */
void sl_router_detach(sl_client_t *c);

/* ---- console.c ---- */
/* The admin console's connections: who may log in, message framing and
 * the replies going out; the commands are the admin module's. */

/* The startup database is pgbouncer or sluice, and a console is wired. */
bool sl_console_wanted(const sl_client_t *c);
/* The client is on the Unix socket as the OS user running sluice
 * (SO_PEERCRED) under the user name pgbouncer (or sluice): it gets in with
 * no password, as in PgBouncer. */
bool sl_console_peer_ok(const sl_client_t *c);
/* Authenticated (or peer): admin_users get everything, stats_users SHOW
 * only, anyone else 28000; sends the login reply and makes c IDLE. */
void sl_console_login(sl_client_t *c, bool peer);
/* The socket is readable / writable: reads Queries, runs them one at a
 * time, and sends each reply as the socket takes it. */
void sl_console_readable(sl_client_t *c);
void sl_console_pump(sl_client_t *c);
/* A reply is still going out: c keeps its buffers and reads nothing more. */
bool sl_console_busy(const sl_client_t *c);

/* ---- cancel.c ---- */
/* The process id of c's BackendKeyData: its instance, worker and id. */
static inline uint32_t sl_client_cancel_pid(const sl_client_t *c) {
    return sl_cancelkey_pid(c->w->peer_id, c->w->worker_index, c->id);
}

/* CancelRequest handling: a key issued by sluice is matched to its client and
 * turned into a cancel of the backend that client holds right now, sent with
 * libpq's PQcancel on the libuv thread pool (it blocks). */

/* Returns 1 if a cancel was sent, 0 if the key matched nothing to cancel. */
int sl_cancel_forward(sl_loop_t *w, uint32_t pid, uint32_t key, const char *peer);
/* A client unlinked while its request runs (gone, killed, past
 * query_timeout or transaction_timeout) leaves its server to be closed, and
 * a backend busy with a query would not notice (PostgreSQL looks at its
 * socket only between queries) and run it to its end: this cancels what s
 * runs for c, if anything. Only for a server that is closed: sl_relay_unlink
 * calls it when the server is not clean. */
void sl_cancel_running(sl_client_t *c, sl_server_t *s);

#endif
