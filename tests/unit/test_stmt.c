/* stmt: interning by text and types, client names, a server's LRU with the
 * portals that protect statements from eviction; and the hash map below. */
#include "sluice/stmt.h"
#include "unit/check.h"

#include <stdio.h>

static sl_stmt_t *mk(sl_stmt_registry_t *r, const char *sql) {
    uint8_t body[128];
    size_t n = strlen(sql) + 1;
    memcpy(body, sql, n);
    body[n] = 0, body[n + 1] = 0; /* no parameter types */
    return sl_stmt_intern(r, body, (uint32_t)n + 2);
}

static void hmap_many(void) {
    sl_hmap_t m = {0};
    sl_hnode_t nodes[1000];
    for (int i = 0; i < 1000; i++) {
        nodes[i].hash = (uint64_t)(i % 300); /* shared hashes chain */
        ASSERT_EQ(sl_hmap_add(&m, &nodes[i]), SL_OK);
    }
    ASSERT_EQ(m.count, 1000u);
    int same = 0;
    for (sl_hnode_t *n = sl_hmap_find(&m, 7); n; n = sl_hmap_next(n)) same++;
    ASSERT_EQ(same, 4); /* 7, 307, 607, 907 */
    for (int i = 0; i < 1000; i += 2) sl_hmap_remove(&m, &nodes[i]);
    ASSERT_EQ(m.count, 500u);
    ASSERT_TRUE(sl_hmap_find(&m, 1000) == NULL);
    while (sl_hmap_any(&m)) sl_hmap_remove(&m, sl_hmap_any(&m));
    ASSERT_EQ(m.count, 0u);
    sl_hmap_free(&m);
}

int main(void) {
    hmap_many();
    sl_stmt_registry_t r = {0};
    /* Same text and types: one statement; other types: another. */
    sl_stmt_t *a = mk(&r, "SELECT 1"), *a2 = mk(&r, "SELECT 1");
    ASSERT_TRUE(a == a2 && a->refs == 2);
    uint8_t typed[] = "SELECT $1\0\0\1\0\0\0\x17";
    sl_stmt_t *t = sl_stmt_intern(&r, typed, sizeof typed - 1);
    ASSERT_TRUE(t != a && t->id != a->id);
    char name[32];
    sl_stmt_name(a, name, sizeof name);
    ASSERT_STREQ(name, "sluice_1");
    ASSERT_TRUE(sl_stmt_find(&r, typed, sizeof typed - 1) == t);

    /* Names: rebinding moves the reference; removing releases it. */
    sl_stmt_names_t names = {0};
    ASSERT_EQ(sl_stmt_names_set(&names, &r, "S_1", a), SL_OK);
    ASSERT_TRUE(sl_stmt_names_get(&names, "S_1") == a && a->refs == 3);
    ASSERT_EQ(sl_stmt_names_set(&names, &r, "S_1", t), SL_OK);
    ASSERT_TRUE(sl_stmt_names_get(&names, "S_1") == t && a->refs == 2);
    ASSERT_TRUE(sl_stmt_names_get(&names, "S_2") == NULL);
    ASSERT_TRUE(sl_stmt_names_remove(&names, &r, "S_1"));
    ASSERT_TRUE(!sl_stmt_names_remove(&names, &r, "S_1"));
    sl_stmt_unref(&r, a2);

    /* A client's bound: names and bytes of text, a rebinding counted once. */
    const char *which = NULL;
    ASSERT_EQ(names.bytes, 0u);
    ASSERT_EQ(sl_stmt_names_set(&names, &r, "x", a), SL_OK);
    ASSERT_EQ(sl_stmt_names_set(&names, &r, "y", t), SL_OK);
    ASSERT_EQ(names.bytes, (uint64_t)a->len + t->len);
    ASSERT_EQ(sl_stmt_names_count(&names), 2u);
    ASSERT_TRUE(sl_stmt_names_fit(&names, "z", 1, 3, 1000, &which));
    ASSERT_TRUE(!sl_stmt_names_fit(&names, "z", 1, 2, 1000, &which));
    ASSERT_STREQ(which, "max_client_prepared_statements");
    ASSERT_TRUE(sl_stmt_names_fit(&names, "x", 1, 2, 1000, &which)); /* a rebinding */
    uint32_t both = a->len + t->len;
    ASSERT_TRUE(!sl_stmt_names_fit(&names, "z", 1, 3, both, &which));
    ASSERT_STREQ(which, "max_client_prepared_bytes");
    ASSERT_TRUE(sl_stmt_names_fit(&names, "x", a->len, 3, both, &which));
    ASSERT_TRUE(!sl_stmt_names_fit(&names, "x", a->len + 1, 3, both, &which));
    ASSERT_EQ(sl_stmt_names_set(&names, &r, "x", t), SL_OK); /* rebinding moves its bytes */
    ASSERT_EQ(names.bytes, 2u * t->len);
    ASSERT_TRUE(sl_stmt_names_remove(&names, &r, "y"));
    ASSERT_EQ(names.bytes, (uint64_t)t->len);
    sl_stmt_names_clear(&names, &r);
    ASSERT_EQ(names.bytes, 0u);
    ASSERT_EQ(sl_stmt_names_count(&names), 0u);

    /* A name a reply in flight holds: closing or rebinding it leaves the
     * held entry as the Bind saw it (an error about it names it so). */
    ASSERT_EQ(sl_stmt_names_set(&names, &r, "held", a), SL_OK);
    sl_stmt_name_t *held = sl_stmt_names_entry(&names, "held");
    ASSERT_TRUE(held != NULL && sl_stmt_names_entry(&names, "other") == NULL);
    sl_stmt_name_ref(held);
    ASSERT_EQ(sl_stmt_names_set(&names, &r, "held", t), SL_OK);
    ASSERT_TRUE(sl_stmt_names_get(&names, "held") == t && sl_stmt_name_target(held) == a);
    ASSERT_STREQ(sl_stmt_name_client(held), "held");
    ASSERT_EQ(names.bytes, (uint64_t)t->len);
    ASSERT_TRUE(sl_stmt_names_remove(&names, &r, "held"));
    ASSERT_EQ(sl_stmt_names_count(&names), 0u);
    ASSERT_EQ(a->refs, 2u); /* ours and the held entry's */
    sl_stmt_name_unref(&r, held);
    ASSERT_EQ(a->refs, 1u);
    /* Not held: a rebinding keeps the entry. */
    ASSERT_EQ(sl_stmt_names_set(&names, &r, "kept", a), SL_OK);
    sl_stmt_name_t *kept = sl_stmt_names_entry(&names, "kept");
    ASSERT_EQ(sl_stmt_names_set(&names, &r, "kept", t), SL_OK);
    ASSERT_TRUE(sl_stmt_names_entry(&names, "kept") == kept && sl_stmt_name_target(kept) == t);
    sl_stmt_names_clear(&names, &r);

    /* PostgreSQL keys names by their first 63 bytes: names that agree
     * there are one; a shorter name is another. */
    char n63[64], n70[80], other[80];
    memset(n63, 'n', 63);
    n63[63] = '\0';
    snprintf(n70, sizeof n70, "%s_first", n63);
    snprintf(other, sizeof other, "%s_second", n63);
    ASSERT_EQ(sl_stmt_names_set(&names, &r, n70, a), SL_OK);
    ASSERT_TRUE(sl_stmt_names_get(&names, other) == a && sl_stmt_names_get(&names, n63) == a);
    n63[62] = '\0';
    ASSERT_TRUE(sl_stmt_names_get(&names, n63) == NULL);
    ASSERT_STREQ(sl_stmt_name_client(sl_stmt_names_entry(&names, other)), n70);
    ASSERT_EQ(sl_stmt_names_set(&names, &r, other, t), SL_OK); /* the same name: rebound */
    ASSERT_EQ(sl_stmt_names_count(&names), 1u);
    ASSERT_TRUE(sl_stmt_names_remove(&names, &r, n70) && sl_stmt_names_count(&names) == 0);
    sl_stmt_names_clear(&names, &r);

    /* A server's cache: LRU order, max 3. */
    sl_stmt_cache_t c;
    sl_stmt_cache_init(&c);
    c.epoch = 1;
    sl_stmt_t *s[5];
    for (int i = 0; i < 5; i++) {
        char sql[32];
        snprintf(sql, sizeof sql, "SELECT %d", i + 10);
        s[i] = mk(&r, sql);
    }
    for (int i = 0; i < 3; i++) ASSERT_EQ(sl_stmt_cache_add(&c, s[i]), SL_OK);
    ASSERT_TRUE(sl_stmt_cache_victim(&c, 4) == NULL); /* room left */
    ASSERT_TRUE(sl_stmt_cache_victim(&c, 3) == s[0]);
    ASSERT_TRUE(sl_stmt_cache_use(&c, s[0]));         /* now s[1] is oldest */
    ASSERT_TRUE(sl_stmt_cache_victim(&c, 3) == s[1]);
    /* A named portal protects until the epoch ends; the unnamed portal
     * until the next Bind. */
    sl_stmt_cache_bound(&c, s[1], true);
    sl_stmt_cache_bound(&c, s[2], false);
    ASSERT_TRUE(sl_stmt_cache_victim(&c, 3) == s[0]);
    sl_stmt_cache_bound(&c, s[0], true);
    ASSERT_TRUE(sl_stmt_cache_victim(&c, 3) == NULL); /* all may back a portal */
    c.epoch++;
    ASSERT_TRUE(sl_stmt_cache_victim(&c, 3) == s[1]);
    sl_stmt_cache_remove(&c, &r, s[1]);
    ASSERT_EQ(sl_stmt_cache_count(&c), 2u);
    ASSERT_TRUE(!sl_stmt_cache_use(&c, s[1]));
    ASSERT_EQ(s[1]->refs, 1u); /* only ours */
    sl_stmt_cache_clear(&c, &r);
    ASSERT_EQ(sl_stmt_cache_count(&c), 0u);
    for (int i = 0; i < 5; i++) ASSERT_EQ(s[i]->refs, 1u);
    for (int i = 0; i < 5; i++) sl_stmt_unref(&r, s[i]);
    sl_stmt_unref(&r, a);
    sl_stmt_unref(&r, t);
    ASSERT_EQ(r.map.count, 0u);
    sl_stmt_names_clear(&names, &r);
    sl_stmt_registry_free(&r);
    return check_done("test_stmt");
}
