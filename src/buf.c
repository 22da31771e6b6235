/* Byte buffers and the per-worker free list of their blocks. */
#include "sluice/buf.h"

#include <stdlib.h>
#include <string.h>

void sl_buf_consume(sl_buf_t *b, uint32_t n) {
    b->head += n;
    if (b->head >= b->tail) b->head = b->tail = 0;
}

void sl_buf_compact(sl_buf_t *b) {
    if (b->head == 0) return;
    uint32_t len = sl_buf_len(b);
    memmove(b->data, b->data + b->head, len);
    b->head = 0;
    b->tail = len;
}

int sl_buf_append(sl_buf_t *b, const void *p, size_t n) {
    if (sl_buf_space(b) < n) sl_buf_compact(b);
    if (sl_buf_space(b) < n) return SL_ENOSPACE;
    memcpy(b->data + b->tail, p, n);
    b->tail += (uint32_t)n;
    return SL_OK;
}

void sl_bufpool_init(sl_bufpool_t *bp, uint32_t size, uint32_t maxfree) {
    memset(bp, 0, sizeof *bp);
    bp->size = size;
    bp->maxfree = maxfree;
    bp->free = calloc(maxfree ? maxfree : 1, sizeof(void *));
    /* The free list only saves malloc calls: without one, blocks are
     * allocated and freed each time, and nothing else changes. */
    if (!bp->free) bp->maxfree = 0;
}

void sl_bufpool_destroy(sl_bufpool_t *bp) {
    for (uint32_t i = 0; i < bp->nfree; i++) free(bp->free[i]);
    free(bp->free);
    bp->free = NULL;
    bp->nfree = 0;
}

int sl_buf_take(sl_bufpool_t *bp, sl_buf_t *b) {
    if (b->data) return SL_OK;
    void *blk = bp->nfree ? bp->free[--bp->nfree] : malloc(bp->size);
    if (!blk) return SL_ENOMEM;
    b->data = blk;
    b->cap = bp->size;
    b->head = b->tail = 0;
    bp->in_use++;
    return SL_OK;
}

void sl_buf_give(sl_bufpool_t *bp, sl_buf_t *b) {
    if (!b->data) return;
    if (bp->nfree < bp->maxfree)
        bp->free[bp->nfree++] = b->data;
    else
        free(b->data);
    bp->in_use--;
    b->data = NULL;
    b->cap = b->head = b->tail = 0;
}
