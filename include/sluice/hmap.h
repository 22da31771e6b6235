/* An intrusive chained hash map keyed by a 64-bit hash. The caller embeds a
 * node in its struct, hashes its own key and compares the full key itself
 * when walking the nodes that share a hash. Owns only its bucket array. */
#ifndef SLUICE_HMAP_H
#define SLUICE_HMAP_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/err.h"

typedef struct sl_hnode {
    struct sl_hnode *next; /* borrowed: next node in the bucket */
    uint64_t hash;
} sl_hnode_t;

typedef struct sl_hmap {
    sl_hnode_t **buckets; /* owned array */
    uint32_t nbuckets;    /* a power of two, or 0 before the first add */
    uint32_t count;       /* nodes in the map */
} sl_hmap_t;

/* First node with this hash, or NULL; sl_hmap_next() gives the following one. */
sl_hnode_t *sl_hmap_find(const sl_hmap_t *m, uint64_t hash);
sl_hnode_t *sl_hmap_next(const sl_hnode_t *n);
/* Adds n (n->hash set by the caller); SL_ENOMEM when the table cannot grow. */
int sl_hmap_add(sl_hmap_t *m, sl_hnode_t *n) SL_MUST_USE;
void sl_hmap_remove(sl_hmap_t *m, sl_hnode_t *n);
/* Any node, to empty the map one node at a time; NULL when empty. */
sl_hnode_t *sl_hmap_any(const sl_hmap_t *m);
/* Frees the bucket array (the nodes belong to the caller). */
void sl_hmap_free(sl_hmap_t *m);
/* 64-bit FNV-1a of n bytes. */
uint64_t sl_hash_bytes(const void *p, size_t n);

#endif
