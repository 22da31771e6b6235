/* A backend connection: opened with libpq's non-blocking connect driven by a
 * uv_poll, then used as a raw socket. Owns the PGconn, its poll handle and the
 * framing state of the bytes coming from the backend. It runs sluice's own
 * short queries (parameter SETs, reset, check) itself; while a client is
 * linked the relay drives its socket (sock, see conn.h) through the io
 * callback and says what it waits for. It knows nothing of clients or
 * pools: it reports to its owner through callbacks. */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include <libpq-fe.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "sluice/conn.h"
#include "sluice/list.h"
#include "sluice/login.h"
#include "sluice/params.h"
#include "sluice/proto.h"
#include "sluice/stmt.h"
#include "sluice/loop.h"

enum sl_server_state {
    SL_SV_RESOLVING,  /* uv_getaddrinfo in flight */
    SL_SV_CONNECTING, /* PQconnectPoll in progress */
    SL_SV_QUERY,      /* running an internal query (SET, reset, check) */
    SL_SV_IDLE,       /* ready, in its pool's idle list */
    SL_SV_ACTIVE,     /* linked to a client; the relay drives the socket */
    SL_SV_CLOSING,    /* handles closing; freed in the last close callback */
    SL_SV_NSTATES
};

extern const char *const sl_server_state_names[];

/* An owner's servers by state (a pool's): sl_server_set_state moves a server
 * between these lists as its state changes, so "which servers are idle" is
 * a list and SHOW SERVERS a walk. CLOSING servers leave them for the loop's
 * servers_closing: the owner may be freed before their handles close. */
typedef struct sl_server_lists {
    sl_list_t in[SL_SV_NSTATES]; /* sl_server_t by node; in[SL_SV_CLOSING] stays empty */
    int n[SL_SV_NSTATES];        /* servers on each list */
} sl_server_lists_t;

struct sl_client;

typedef struct sl_server sl_server_t;
/* A server leaving its loop has no handle left there: it may be posted. */
typedef void (*sl_server_moved_cb)(sl_server_t *s);
/* Connect or internal query finished: err NULL on success. */
typedef void (*sl_server_done_cb)(sl_server_t *s, const char *err, const char *sqlstate);
/* Socket events while ACTIVE (status < 0 is a poll error). */
typedef void (*sl_server_io_cb)(sl_server_t *s, int status, int events);

struct sl_server {
    sl_list_t node;         /* on its home list for its state, or the loop's servers_closing */
    sl_loop_t *w;           /* borrowed */
    void *owner;            /* borrowed: the done() callbacks' context (a pool, a health
                               check's backend, an auth_query job: not one type) */
    sl_server_lists_t *home; /* borrowed: its owner's lists by state (a pool's), or NULL
                                (probes, auth_query): then on no list until closing */
    struct sl_client *link; /* borrowed: the linked client, or NULL */
    uint32_t id;            /* S-<id> in logs */
    char tag[192];          /* "S-3 db=app user=bob backend=127.0.0.1:5432" */
    enum sl_server_state state;
    PGconn *conn;           /* owned; PQfinish in the last close callback; NULL for own logins */
    sl_login_t *login;      /* owned: sluice's own login (md5/SCRAM without libpq), else NULL */
    bool own_socket;        /* fd is sluice's (own login): closed after its poll handle */
    bool own_up;            /* own login: the TCP connect completed */
    bool fail_transient;    /* the failure done() reports may pass with a retry (refused,
                               reset, 57P03 starting up or shutting down): set before done() */
    int own_phase;          /* own login: SSLRequest sent, TLS handshake, or login */
    SSL *own_ssl;           /* own login over TLS: owned; sock.ssl once the handshake starts */
    struct sl_own_tls *own_tls; /* own login: owned copy of the libpq TLS settings */
    uint8_t *own_startup;   /* own login: the StartupMessage, sent once TLS is settled */
    uint32_t own_startup_len;
    struct sockaddr_storage addrs[4]; /* own login: addresses to try, then the one used */
    int naddrs, addr_next;
    uint32_t be_pid, be_key; /* own login: BackendKeyData, for cancels */
    sl_conn_t sock;         /* its socket: PQsocket() (libpq's, which may switch sockets while
                               connecting) or sluice's own (own_socket); sock.ssl, set at login,
                               is libpq's TLS or own_ssl, NULL in plain text */
    PostgresPollingStatusType pq_wants; /* libpq connect: what the last PQconnectPoll waits for */
    int open_handles;       /* timer and resolve request whose close callback is pending */
    uv_getaddrinfo_t *resolve; /* owned while resolving */
    sl_params_t reported;   /* ParameterStatus values the backend reported */
    sl_params_t applied;    /* non-reported parameters sluice SET on it */
    uint64_t params_fp;     /* fingerprint of the client parameters it has; 0: unknown */
    sl_scan_t scan;         /* framing of backend -> sluice bytes */
    uint8_t coll[1024];     /* collected bodies of messages sluice reads */
    char tx_status;         /* last ReadyForQuery status: 'I', 'T', 'E' */
    sl_stmt_cache_t stmts;  /* statements prepared on it under sluice's names */
    int64_t connect_ms;     /* when the connection was opened */
    int64_t idle_since_ms;  /* when it last became idle */
    bool close_needed;      /* close at the next idle moment */
    bool cancel_sent;       /* a cancel went to its backend: closed, not pooled, when its
                               client lets it go (PostgreSQL signals a backend twice for one
                               cancel, and a late signal would hit the next client's query) */
    bool reset_needed;      /* a client left session state on it: server_reset_query
                               before anyone else gets it */
    bool fresh;             /* just connected or checked: no server_check_query needed */
    sl_server_done_cb done; /* pending connect/query completion */
    sl_server_io_cb io;     /* ACTIVE: relay callback */
    void (*on_close)(sl_server_t *s); /* owner's hook, called once when closing starts */
    uv_timer_t timer;       /* connect/query timeout; its close callback frees the struct */
    uint8_t *qout;          /* owned: unsent bytes of an internal query */
    uint32_t qout_len, qout_off;
    uint8_t *row;           /* owned: first DataRow body of the last internal query */
    uint32_t row_len;
    char error[256];        /* first error of an internal query */
    char error_code[6];     /* its SQLSTATE */
    char host[400];         /* backend address(es), for logs */
    /* Moving to another loop (workers): from sl_server_leave_loop until
     * sl_server_join_loop it is IDLE on no list, with no handle; the fd,
     * PGconn, TLS state, caches and parameters stay in the struct. */
    bool moving;                 /* leaving: its handles are closing */
    sl_server_moved_cb moved;    /* called once they are closed, on the loop it leaves */
    struct sl_stmt_carry *carry; /* owned while moving: its prepared statements (stmt.h) */
    sl_loop_msg_t msg;           /* the owner's message carrying it to the other loop */
    sl_loop_t *move_to;          /* borrowed: that loop, while moving */
    void *share;                 /* borrowed: the owner's shared accounting (a pool's ledger
                                    entry), for on_close; NULL: none */
};

/* Starts connecting with the given libpq parameters (NULL-terminated arrays,
 * borrowed for the duration of the call). done() reports the outcome. */
sl_server_t *sl_server_connect(sl_loop_t *w, void *owner, const char *const *keys,
                               const char *const *vals, const char *tag, sl_server_done_cb done);
/* Like sl_server_connect, but logs in with sluice's own md5/SCRAM exchange
 * using secret (keys, an md5 hash, or a password whose SCRAM keys are
 * derived once per salt): TCP or Unix socket, TLS as the sslmode,
 * sslrootcert, sslcert, sslkey and ssl_*_protocol_version keys say. */
sl_server_t *sl_server_connect_own(sl_loop_t *w, void *owner, const char *const *keys,
                                   const char *const *vals, const char *tag,
                                   const sl_login_secret_t *secret, sl_server_done_cb done);
/* Runs sql (simple protocol) and swallows its results; done() when
 * ReadyForQuery arrives, with the first error if any. */
int sl_server_query(sl_server_t *s, const char *sql, sl_server_done_cb done) SL_MUST_USE;
/* Changes the state and moves the server to the matching list together.
 * An illegal transition (see the table in server.c) is refused: logged as
 * an error with both state names, and nothing moves; returns false then. */
bool sl_server_set_state(sl_server_t *s, enum sl_server_state st);
/* Puts a server on home's list for its state (a pool takes a server it just
 * opened): from then on sl_server_set_state keeps it on the right one. */
void sl_server_adopt(sl_server_t *s, sl_server_lists_t *home);
void sl_server_lists_init(sl_server_lists_t *l);
/* Starts closing; the struct is freed once its handles are closed. */
void sl_server_close(sl_server_t *s, const char *reason);
/* Starts handing an IDLE server (no query, no client, a backend in no
 * transaction) over to another loop: it leaves its owner's lists, its
 * prepared-statement cache is carried by shared ids (the loop's registry
 * must share them: sl_ledger_attach), and its poll and timer handles close
 * on this loop; the fd, PGconn and TLS stay open. moved(s) runs on this
 * loop once they are closed: the owner then posts it (s->msg). SL_ECONFIG
 * (not movable now) or SL_ENOMEM: nothing changed. */
int sl_server_leave_loop(sl_server_t *s, sl_server_moved_cb moved) SL_MUST_USE;
/* On the receiving loop's thread: the server gets new handles on w (a new
 * poll handle on the same fd) and its carried statements, IDLE, watched
 * for the backend going away (unless owner is NULL: then it is to be closed
 * at once), on no list (sl_server_adopt it). On failure
 * (SL_ENOMEM, SL_EIO) it is set up on w all the same, to be closed there. */
int sl_server_join_loop(sl_server_t *s, sl_loop_t *w, void *owner) SL_MUST_USE;
/* Records a ParameterStatus the backend sent (during relay or a query). */
void sl_server_note_param(sl_server_t *s, const uint8_t *body, uint32_t n);

#endif
