/* buf: the block free list, including when its own allocation fails (the
 * test links with --wrap=calloc to make one calloc fail on demand). */
#include <stdlib.h>
#include <string.h>

#include "sluice/buf.h"
#include "unit/check.h"

void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);

static int fail_callocs; /* the next this many calloc calls return NULL */

void *__wrap_calloc(size_t n, size_t size) {
    if (fail_callocs > 0) {
        fail_callocs--;
        return NULL;
    }
    return __real_calloc(n, size);
}

/* Takes and gives back blocks through bp; checks they are usable. */
static void round_trip(sl_bufpool_t *bp) {
    sl_buf_t a = {0}, b = {0};
    ASSERT_EQ(sl_buf_take(bp, &a), SL_OK);
    ASSERT_EQ(sl_buf_take(bp, &b), SL_OK);
    ASSERT_EQ(a.cap, 64);
    ASSERT_EQ(sl_buf_append(&a, "hello", 5), SL_OK);
    ASSERT_EQ(sl_buf_len(&a), 5);
    ASSERT_EQ(bp->in_use, 2);
    sl_buf_give(bp, &a);
    sl_buf_give(bp, &b);
    ASSERT_TRUE(a.data == NULL && b.data == NULL);
    ASSERT_EQ(bp->in_use, 0);
}

static void test_free_list(void) {
    sl_bufpool_t bp;
    sl_bufpool_init(&bp, 64, 1);
    round_trip(&bp);
    ASSERT_EQ(bp.nfree, 1); /* one kept, the other freed */
    sl_bufpool_destroy(&bp);
}

/* Out of memory at start-up: no free list, blocks still come and go. */
static void test_no_free_list(void) {
    sl_bufpool_t bp;
    fail_callocs = 1;
    sl_bufpool_init(&bp, 64, 1024);
    ASSERT_EQ(fail_callocs, 0); /* the list was asked for, and refused */
    round_trip(&bp);
    ASSERT_EQ(bp.nfree, 0);
    sl_bufpool_destroy(&bp);
}

int main(void) {
    test_free_list();
    test_no_free_list();
    return check_done("test_buf");
}
