/* The ledger's pieces that need no server: a cap taken by compare-and-swap
 * bites at its value; entries are shared by name and
 * freed with their last reference; two loops' statement registries give a
 * body the same id, and a server's cache carried from one to the other
 * keeps its statements under those ids. */
#include <stdatomic.h>
#include <string.h>

#include "sluice/ledger.h"
#include "unit/check.h"

/* The cap bites at exactly its value; 0 is no cap. (Racing loops never
 * overshoot because each take is one compare-and-swap; a threaded test of
 * that could not fail reliably on a loaded 2-core machine, where the
 * threads rarely run at the same instant, so there is none.) */
static void test_take(void) {
    atomic_int n = 0;
    ASSERT_TRUE(sl_ledger_take(&n, 0));
    ASSERT_TRUE(sl_ledger_take(&n, 2));
    ASSERT_TRUE(!sl_ledger_take(&n, 2));
    ASSERT_EQ(sl_ledger_read(&n), 2);
    sl_ledger_give(&n);
    ASSERT_TRUE(sl_ledger_take(&n, 2));
    ASSERT_TRUE(!sl_ledger_take(&n, 1)); /* a cap lowered below the count */
    ASSERT_EQ(sl_ledger_read(&n), 2);
}

static void test_entries(void) {
    ASSERT_TRUE(sl_ledger_new(0) == NULL);
    ASSERT_TRUE(sl_ledger_new(SL_LEDGER_MAX_LOOPS + 1) == NULL);
    sl_ledger_t *lg = sl_ledger_new(2);
    ASSERT_TRUE(lg != NULL);
    sl_ledger_pool_t *a = sl_ledger_pool_get(lg, "app", "bob", 0);
    sl_ledger_pool_t *b = sl_ledger_pool_get(lg, "app", "bob", 0);
    sl_ledger_pool_t *c = sl_ledger_pool_get(lg, "app", "eve", 0);
    sl_ledger_pool_t *r = sl_ledger_pool_get(lg, "app", "bob", 1);
    ASSERT_TRUE(a == b);
    ASSERT_TRUE(a != c && a != r);
    ASSERT_TRUE(a->by_db == c->by_db); /* one database on one backend */
    ASSERT_TRUE(a->by_db != r->by_db); /* the replica counts apart */
    ASSERT_TRUE(a->by_user != c->by_user);
    ASSERT_EQ(a->nloops, 2);
    sl_ledger_pool_put(lg, a);
    sl_ledger_pool_put(lg, b);
    sl_ledger_pool_put(lg, c);
    sl_ledger_pool_put(lg, r);
    ASSERT_EQ(sl_ledger_clients_add(lg, 1), 1);
    ASSERT_EQ(sl_ledger_clients_add(lg, 1), 2);
    ASSERT_EQ(sl_ledger_clients_add(lg, -1), 1);
    sl_ledger_free(lg);
}

static const uint8_t body1[] = "SELECT 1\0\0";
static const uint8_t body2[] = "SELECT 2\0\0";

static void test_shared_ids(void) {
    sl_stmt_ids_t *ids = sl_stmt_ids_new();
    sl_stmt_registry_t ra = {.shared = ids}, rb = {.shared = ids};
    sl_stmt_t *a1 = sl_stmt_intern(&ra, body1, sizeof body1 - 1);
    sl_stmt_t *a2 = sl_stmt_intern(&ra, body2, sizeof body2 - 1);
    sl_stmt_t *b2 = sl_stmt_intern(&rb, body2, sizeof body2 - 1);
    ASSERT_TRUE(a1->id != a2->id);
    ASSERT_EQ(b2->id, a2->id); /* same text, same name in every loop */
    sl_stmt_unref(&rb, b2);

    /* A server's cache leaves loop A and lands on loop B. */
    sl_stmt_cache_t ca, cb;
    sl_stmt_cache_init(&ca);
    sl_stmt_cache_init(&cb);
    ASSERT_EQ(sl_stmt_cache_add(&ca, a1), SL_OK);
    ASSERT_EQ(sl_stmt_cache_add(&ca, a2), SL_OK);
    uint32_t id1 = a1->id, id2 = a2->id;
    sl_stmt_unref(&ra, a1); /* only the cache holds them now */
    sl_stmt_unref(&ra, a2);
    sl_stmt_carry_t *k = NULL;
    ASSERT_EQ(sl_stmt_cache_export(&ca, &ra, &k), SL_OK);
    ASSERT_TRUE(k != NULL);
    ASSERT_EQ(sl_stmt_cache_count(&ca), 0u);
    ASSERT_EQ(ra.map.count, 0u); /* A let go of them */
    ASSERT_EQ(sl_stmt_cache_import(&cb, &rb, k), SL_OK);
    ASSERT_EQ(sl_stmt_cache_count(&cb), 2u);
    sl_stmt_t *b1 = sl_stmt_find(&rb, body1, sizeof body1 - 1);
    ASSERT_TRUE(b1 && b1->id == id1 && b1->valid && sl_stmt_cache_use(&cb, b1));
    b2 = sl_stmt_find(&rb, body2, sizeof body2 - 1);
    ASSERT_TRUE(b2 && b2->id == id2 && sl_stmt_cache_use(&cb, b2));
    sl_stmt_cache_clear(&cb, &rb);

    /* Without shared ids a cache cannot leave: its names would mean other
     * statements on the other loop. */
    sl_stmt_registry_t lone = {0};
    sl_stmt_cache_t cl;
    sl_stmt_cache_init(&cl);
    sl_stmt_t *l1 = sl_stmt_intern(&lone, body1, sizeof body1 - 1);
    ASSERT_EQ(sl_stmt_cache_add(&cl, l1), SL_OK);
    ASSERT_EQ(sl_stmt_cache_export(&cl, &lone, &k), SL_ECONFIG);
    ASSERT_EQ(sl_stmt_cache_count(&cl), 1u);
    sl_stmt_unref(&lone, l1);
    sl_stmt_cache_clear(&cl, &lone);
    sl_stmt_registry_free(&lone);

    /* An id is never given to another text, even once its text is gone. */
    sl_stmt_t *again = sl_stmt_intern(&ra, body1, sizeof body1 - 1);
    ASSERT_TRUE(again->id != id1 && again->id != id2);
    sl_stmt_unref(&ra, again);
    sl_stmt_registry_free(&ra);
    sl_stmt_registry_free(&rb);
    sl_stmt_ids_free(ids);
}

int main(void) {
    test_take();
    test_entries();
    test_shared_ids();
    return check_done("test_ledger");
}
