/* A client's side of read/write splitting: before each transaction (each
 * connection in session pooling) it reads the requests waiting in the
 * client's buffer, decides read or write (sql.c), asks the route for a
 * backend and queues the client on that backend's pool. It counts the
 * transactions each backend has in flight and keeps the client's
 * read-your-writes fence. Databases without replicas go straight to their
 * one pool. */
#ifndef SLUICE_ROUTER_H
#define SLUICE_ROUTER_H

#include <stdbool.h>

#include "sluice/client.h"

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
/* The client sent more (from offset `from` of its buffer) while its read
 * runs on a replica: unless all of it reads too, it waits behind a barrier
 * until that transaction is over, then is routed on its own. */
void sl_router_guard(sl_client_t *c, uint32_t from);
/* Requests held behind the barrier that expect a ReadyForQuery. */
int sl_router_held_pending(const sl_client_t *c);
/* Drops the client's pool references (it is closing). */
void sl_router_detach(sl_client_t *c);

#endif
