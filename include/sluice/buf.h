/* Fixed-capacity byte buffers and the free list they come from. A buffer is
 * only held by a connection while it is active, so idle connections cost no
 * buffer memory. Pure: no I/O. */
#ifndef SLUICE_BUF_H
#define SLUICE_BUF_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/err.h"

typedef struct sl_buf {
    uint8_t *data; /* owned by the free list; NULL when not held */
    uint32_t cap;  /* bytes */
    uint32_t head; /* first unconsumed byte */
    uint32_t tail; /* one past the last byte */
} sl_buf_t;

static inline uint32_t sl_buf_len(const sl_buf_t *b) { return b->tail - b->head; }
static inline uint32_t sl_buf_space(const sl_buf_t *b) { return b->cap - b->tail; }
static inline uint8_t *sl_buf_rptr(const sl_buf_t *b) { return b->data + b->head; }
static inline uint8_t *sl_buf_wptr(const sl_buf_t *b) { return b->data + b->tail; }

/* Drops n consumed bytes from the front; resets to empty when all is consumed. */
void sl_buf_consume(sl_buf_t *b, uint32_t n);
/* Moves unconsumed bytes to the front so that all free space is at the end. */
void sl_buf_compact(sl_buf_t *b);
/* Appends n bytes (compacting if needed); SL_ENOSPACE when they do not fit. */
int sl_buf_append(sl_buf_t *b, const void *p, size_t n) SL_MUST_USE;

/* A free list of equally sized blocks, one per worker. */
typedef struct sl_bufpool {
    void **free;      /* owned array of owned blocks */
    uint32_t nfree;   /* blocks in free[] */
    uint32_t maxfree; /* blocks kept at most; the rest are freed */
    uint32_t size;    /* bytes per block */
    uint64_t in_use;  /* blocks handed out and not yet returned */
} sl_bufpool_t;

/* Keeps up to maxfree returned blocks for reuse; if even the list cannot be
 * allocated, it keeps none (every block is malloc'ed and freed). */
void sl_bufpool_init(sl_bufpool_t *bp, uint32_t size, uint32_t maxfree);
void sl_bufpool_destroy(sl_bufpool_t *bp);
/* Gives b a block of bp->size bytes; SL_ENOMEM on allocation failure. */
int sl_buf_take(sl_bufpool_t *bp, sl_buf_t *b) SL_MUST_USE;
/* Returns b's block to the list (no-op when b holds none). */
void sl_buf_give(sl_bufpool_t *bp, sl_buf_t *b);

#endif
