/* The layout of the BackendKeyData sluice gives its clients, so that a
 * CancelRequest names where its client lives: which sluice instance (peer_id,
 * as PgBouncer's peering puts it in the key) and which worker of that
 * instance, plus how many more times it may be forwarded (a TTL, so that
 * peers configured in a circle cannot bounce a cancel for ever).
 *
 *   process id (sent first): bit 31..30 zero (the int32 stays positive),
 *                            29..16 peer_id (0: no peering, else 1..16383),
 *                            15..10 worker index (0..63),
 *                            9..0   low bits of the client's id
 *   secret key:              bits 7..6 the TTL (hops left), the rest random
 *
 * Pure: no state. A key matches a client whatever its TTL bits say. */
#ifndef SLUICE_CANCELKEY_H
#define SLUICE_CANCELKEY_H

#include <stdbool.h>
#include <stdint.h>

#define SL_CANCELKEY_PEER_MAX 16383 /* largest peer_id that fits */
#define SL_CANCELKEY_WORKERS_MAX 64 /* workers a key can name */
#define SL_CANCELKEY_TTL_MAX 3u     /* forwards a fresh key allows */

/* The process id of a client of worker `worker` (< SL_CANCELKEY_WORKERS_MAX)
 * on instance peer_id (0..SL_CANCELKEY_PEER_MAX) with client id `id`. */
static inline uint32_t sl_cancelkey_pid(int peer_id, int worker, uint32_t id) {
    return ((uint32_t)peer_id & 0x3FFFu) << 16 | ((uint32_t)worker & 0x3Fu) << 10 | (id & 0x3FFu);
}

/* The secret half of a fresh key: random bits with the TTL at its maximum. */
static inline uint32_t sl_cancelkey_secret(uint32_t random) {
    return (random & ~0xC0u) | SL_CANCELKEY_TTL_MAX << 6;
}

static inline int sl_cancelkey_peer(uint32_t pid) {
    return (int)(pid >> 16 & 0x3FFFu);
}

static inline int sl_cancelkey_worker(uint32_t pid) {
    return (int)(pid >> 10 & 0x3Fu);
}

static inline unsigned sl_cancelkey_ttl(uint32_t key) {
    return key >> 6 & 3u;
}

/* key with its TTL replaced by ttl (0..SL_CANCELKEY_TTL_MAX). */
static inline uint32_t sl_cancelkey_with_ttl(uint32_t key, unsigned ttl) {
    return (key & ~0xC0u) | (ttl & 3u) << 6;
}

/* Whether a CancelRequest (pid, key) names the client that was given
 * (client_pid, client_key), whatever the request's TTL bits say. */
static inline bool sl_cancelkey_matches(uint32_t pid, uint32_t key, uint32_t client_pid,
                                        uint32_t client_key) {
    return pid == client_pid && (key & ~0xC0u) == (client_key & ~0xC0u);
}

#endif
