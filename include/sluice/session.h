/* The session module (src/session/: client, relay, prepare, router,
 * cancel): client connections from accept to close, linked to servers of
 * the pools below. This is all the floors above (worker, listener,
 * janitor) call; everything else is the module's own (src/session/session.h).
 * Modules below never call it: they report through callbacks it sets. */
#ifndef SLUICE_SESSION_H
#define SLUICE_SESSION_H

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
/* SIGHUP read a new auth_file (fresh), not yet in w->users: logins in
 * progress look their user up again in it before the old one is freed. */
void sl_session_users_reloaded(sl_loop_t *w, sl_userlist_t *fresh);
/* Frees what the module keeps per loop (reusable relay states); once every
 * client is gone. */
void sl_session_free(sl_loop_t *w);

#endif
