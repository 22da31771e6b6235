/* Peering (PgBouncer's, in spirit): several sluice instances behind one load
 * balancer each hand out cancel keys naming their own peer_id (cancelkey.h).
 * A CancelRequest travels on a new connection, which the balancer may give
 * to another instance than the one its client is on; that instance sends
 * the same 16 bytes on to the instance the key names, with one hop less in
 * the key's TTL, so that peers configured in a circle cannot bounce a
 * cancel for ever.
 *
 * Owns one loop's forwards in flight (non-blocking, each bounded in time,
 * at most SL_PEERS_INFLIGHT_MAX at once). Does not own the [peers] list:
 * each forward reads the running config, so that a reload applies to the
 * next cancel. Cancelling this instance's own clients is session's
 * (sl_cancel_forward). */
#ifndef SLUICE_PEERS_H
#define SLUICE_PEERS_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice/err.h"
#include "sluice/loop.h"

/* Forwards one loop keeps in flight at most: cancels come in bursts when a
 * database is slow, but each forward holds a socket; beyond this a cancel
 * is dropped, with a log line. */
#define SL_PEERS_INFLIGHT_MAX 64
/* How long one forward may take, from its start to the peer closing the
 * connection (as PostgreSQL does once it handled a cancel). */
#define SL_PEERS_TIMEOUT_MS 2000

/* Sets up l's (empty) set of forwards; SL_OK or SL_ENOMEM. */
int sl_peers_init(sl_loop_t *l) SL_MUST_USE;
/* A CancelRequest (pid, key as received) came in on the connection tagged
 * tag. With peering on and a key naming another peer_id, it is forwarded
 * to that peer, or dropped with a log line saying why (TTL spent, peer
 * not in [peers], too many in flight), and true is returned: the request
 * is dealt with. False: the key is this instance's (or peering is off),
 * for the caller to look up among its own clients. */
bool sl_peers_route_cancel(sl_loop_t *l, uint32_t pid, uint32_t key, const char *tag);
/* Shutdown: ends every forward in flight (their handles close) and starts
 * no new one. */
void sl_peers_close_all(sl_loop_t *l);
/* Frees the state once l's loop has run its last callbacks. */
void sl_peers_free(sl_loop_t *l);

#endif
