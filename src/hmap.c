/* Intrusive chained hash map: the bucket array doubles at load factor 1. */
#include "sluice/hmap.h"

#include <stdlib.h>

uint64_t sl_hash_bytes(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static uint32_t slot(const sl_hmap_t *m, uint64_t hash) {
    return (uint32_t)(hash ^ hash >> 32) & (m->nbuckets - 1);
}

sl_hnode_t *sl_hmap_find(const sl_hmap_t *m, uint64_t hash) {
    if (!m->nbuckets) return NULL;
    for (sl_hnode_t *n = m->buckets[slot(m, hash)]; n; n = n->next)
        if (n->hash == hash) return n;
    return NULL;
}

sl_hnode_t *sl_hmap_next(const sl_hnode_t *n) {
    for (sl_hnode_t *x = n->next; x; x = x->next)
        if (x->hash == n->hash) return x;
    return NULL;
}

static int grow(sl_hmap_t *m) {
    uint32_t nb = m->nbuckets ? m->nbuckets * 2 : 16;
    sl_hnode_t **b = calloc(nb, sizeof *b);
    if (!b) return SL_ENOMEM;
    sl_hmap_t g = {b, nb, m->count};
    for (uint32_t i = 0; i < m->nbuckets; i++)
        for (sl_hnode_t *n = m->buckets[i], *next; n; n = next) {
            next = n->next;
            uint32_t k = slot(&g, n->hash);
            n->next = b[k];
            b[k] = n;
        }
    free(m->buckets);
    *m = g;
    return SL_OK;
}

int sl_hmap_add(sl_hmap_t *m, sl_hnode_t *n) {
    if (m->count >= m->nbuckets && grow(m) < 0) return SL_ENOMEM;
    uint32_t k = slot(m, n->hash);
    n->next = m->buckets[k];
    m->buckets[k] = n;
    m->count++;
    return SL_OK;
}

void sl_hmap_remove(sl_hmap_t *m, sl_hnode_t *n) {
    for (sl_hnode_t **pp = &m->buckets[slot(m, n->hash)]; *pp; pp = &(*pp)->next)
        if (*pp == n) {
            *pp = n->next;
            m->count--;
            return;
        }
}

sl_hnode_t *sl_hmap_any(const sl_hmap_t *m) {
    for (uint32_t i = 0; m->count && i < m->nbuckets; i++)
        if (m->buckets[i]) return m->buckets[i];
    return NULL;
}

void sl_hmap_free(sl_hmap_t *m) {
    free(m->buckets);
    *m = (sl_hmap_t){0};
}
