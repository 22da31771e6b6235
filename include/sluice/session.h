/* The session module (src/session/: client, relay, prepare, router,
 * cancel): client connections from accept to close, linked to servers of
 * the pools below. This is all the floors above (worker, listener,
 * janitor) call; everything else is the module's own (src/session/session.h).
 * Modules below never call it: they report through callbacks it sets. */
#ifndef SLUICE_SESSION_H
#define SLUICE_SESSION_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>

#include "sluice/loop.h"

/* Names of enum sl_client_state (loop.h), for logs and stats lines. */
extern const char *const sl_client_state_names[];

/* Takes an accepted socket (owned from here on) and starts its login. */
void sl_session_accept(sl_loop_t *w, int fd, const char *peer);
/* The janitor's tick for every client: timeouts, late closes. */
void sl_session_tick_all(sl_loop_t *w, int64_t now_ms);
/* SIGTERM: each client closes now if between transactions, else after its
 * current one. */
void sl_session_shutdown_all(sl_loop_t *w);
/* Fast shutdown: every client gets a FATAL with this SQLSTATE and message,
 * and is closed. */
void sl_session_close_all(sl_loop_t *w, const char *code, const char *msg);
/* A console command that completes later (PAUSE, WAIT_CLOSE, SUSPEND),
 * called by the admin module while the command runs: the client's
 * ReadyForQuery (and its next Query) wait for sl_console_finish. False when
 * client_id is no console connection. */
bool sl_console_hold(sl_loop_t *w, uint32_t client_id);
/* Whether that console connection is still there and held. */
bool sl_console_is_held(sl_loop_t *w, uint32_t client_id);
/* Ends a held command: sends reply (a malloc'ed block of whole messages,
 * taken) and the ReadyForQuery, if the client is still connected; else
 * frees reply. */
void sl_console_finish(sl_loop_t *w, uint32_t client_id, uint8_t *reply, size_t len);
/* KILL: every client of database db (NULL: all, but the admin console's)
 * gets a FATAL with this SQLSTATE and message, and is closed. */
void sl_session_close_db(sl_loop_t *w, const char *db, const char *code, const char *msg);
/* SUSPEND and RESUME changed w->suspended: every client's socket (and its
 * linked server's) is watched for what it may do now. */
void sl_session_repoll_all(sl_loop_t *w);
/* True when no client has bytes left to write either way (SUSPEND is done). */
bool sl_session_flushed(const sl_loop_t *w);
/* SIGHUP read a new auth_file (fresh), not yet in w->users: logins in
 * progress look their user up again in it before the old one is freed. */
void sl_session_users_reloaded(sl_loop_t *w, sl_userlist_t *fresh);
struct sl_client;
struct sl_server;
struct sl_pool;

/* What the admin console reads of one client (SHOW CLIENTS, SHOW POOLS):
 * a snapshot whose pointers are valid only during the walk's callback. */
typedef struct sl_client_info {
    uint32_t id;                    /* C-<id>; also the BackendKeyData pid */
    enum sl_client_state state;     /* the list it is on */
    const char *user, *dbname;      /* borrowed; NULL before the startup packet */
    const char *peer;               /* "address:port", or "unix" */
    int fd;                         /* its socket, for the local address */
    const SSL *ssl;                 /* its TLS, or NULL */
    const char *application_name;   /* borrowed; NULL when it gave none */
    int64_t connect_ms;             /* accepted, loop clock */
    int64_t request_ms;             /* last request sent or reply relayed, loop clock */
    int64_t wait_ms;                /* waiting for a server: since when (loop clock), else 0 */
    const struct sl_server *server; /* linked server, or NULL */
    const struct sl_pool *pool;     /* the pool it logged in to, or NULL (console, login) */
    int prepared_statements;        /* protocol-level statements it has named */
    bool console;                   /* an admin console connection */
    bool close_needed;              /* it will be closed at its next transaction end */
} sl_client_info_t;

typedef void (*sl_client_visit_cb)(const sl_client_info_t *ci, void *arg);
/* Calls visit for each client not closing, in state order (login, auth,
 * login_wait, idle, waiting, active): a walk over the loop's lists. The
 * callback must not close or change clients. */
void sl_session_walk(sl_loop_t *w, sl_client_visit_cb visit, void *arg);
/* The id of a server's linked client (SHOW SERVERS' link column); 0: none. */
uint32_t sl_session_client_id(const struct sl_client *c);
/* KILL_CLIENT: client id gets a FATAL with code and msg and is closed.
 * Returns 1 if it was found, 0 if no such client, -1 if it is `self` (a
 * console cannot close its own connection from its own command). */
int sl_session_kill(sl_loop_t *w, uint32_t id, uint32_t self, const char *code, const char *msg);

/* A CancelRequest (pid, key) that reached w, or that another worker passed
 * on: cancels what the client the key names runs (or passes it to the
 * worker the key names). Returns 1 if a cancel was sent or passed on. */
int sl_cancel_forward(sl_loop_t *w, uint32_t pid, uint32_t key, const char *peer);

/* Frees what the module keeps per loop (reusable relay states); once every
 * client is gone. */
void sl_session_free(sl_loop_t *w);

#endif
