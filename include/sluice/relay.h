/* The byte pump between a linked client and server: message-boundary-aware
 * streaming through the client's two fixed buffers with backpressure both
 * ways, detection of ReadyForQuery to end a transaction, parameter tracking,
 * and what the client sees when the server dies. Sits with the client layer:
 * it works on both structs. */
#ifndef SLUICE_RELAY_H
#define SLUICE_RELAY_H

#include "sluice/client.h"

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
/* Frames n bytes from the server just placed in c->out at p (ReadyForQuery,
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
 * is counted in c->pending again, for whoever answers instead. */
void sl_relay_forget_fix(sl_client_t *c);
/* Unlinks the server on client exit: back to the pool if clean, else closed. */
void sl_relay_unlink(sl_client_t *c);

#endif
