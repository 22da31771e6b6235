/* params: lookup without case, set, remove, fingerprint; interned lists
 * shared between identical lists, copied back on the first change, freed
 * with their last reference. */
#include "sluice/params.h"
#include "unit/check.h"

static void fill(sl_params_t *ps, const char *app) {
    ASSERT_EQ(sl_params_set(ps, "application_name", app), SL_OK);
    ASSERT_EQ(sl_params_set(ps, "DateStyle", "ISO, MDY"), SL_OK);
    ASSERT_EQ(sl_params_set(ps, "TimeZone", "UTC"), SL_OK);
}

static void basics(void) {
    sl_params_t p = {0};
    fill(&p, "a");
    ASSERT_STREQ(sl_params_get(&p, "datestyle"), "ISO, MDY");
    uint64_t fp = sl_params_fingerprint(&p);
    ASSERT_EQ(sl_params_set(&p, "TIMEZONE", "UTC"), SL_OK);
    ASSERT_EQ(p.n, 3);
    ASSERT_TRUE(sl_params_fingerprint(&p) == fp);
    sl_params_remove(&p, "timezone");
    ASSERT_EQ(p.n, 2);
    ASSERT_TRUE(sl_params_get(&p, "TimeZone") == NULL);
    sl_params_clear(&p);
    ASSERT_EQ(p.n, 0);
}

static void sharing(void) {
    sl_params_t a = {0}, b = {0}, c = {0};
    fill(&a, "app");
    fill(&b, "app");
    fill(&c, "other");
    uint64_t fp = sl_params_fingerprint(&a);
    sl_params_share(&a);
    sl_params_share(&b);
    sl_params_share(&c);
    ASSERT_EQ(sl_params_shared_count(), 2);
    ASSERT_TRUE(a.v == b.v); /* one copy for the identical two */
    ASSERT_TRUE(a.v != c.v);
    ASSERT_EQ(a.cap, 0);
    ASSERT_STREQ(sl_params_get(&b, "TIMEZONE"), "UTC");
    ASSERT_TRUE(sl_params_fingerprint(&b) == fp);
    /* Setting the value it has keeps it shared. */
    ASSERT_EQ(sl_params_set(&a, "timezone", "UTC"), SL_OK);
    ASSERT_TRUE(a.v == b.v);
    /* A change gives a its own copy; b is untouched. A name taken from
     * the shared entries themselves stays valid through the change. */
    ASSERT_EQ(sl_params_set(&a, a.v[2].name, "Asia/Tokyo"), SL_OK);
    ASSERT_TRUE(a.v != b.v && a.cap > 0);
    ASSERT_STREQ(sl_params_get(&a, "TimeZone"), "Asia/Tokyo");
    ASSERT_STREQ(sl_params_get(&b, "TimeZone"), "UTC");
    ASSERT_STREQ(sl_params_get(&a, "application_name"), "app");
    ASSERT_EQ(sl_params_shared_count(), 2);
    /* Removing gives its own copy too; the last reference frees. */
    sl_params_remove(&c, "nonexistent");
    ASSERT_EQ(c.cap, 0);
    sl_params_remove(&c, c.v[0].name);
    ASSERT_EQ(c.n, 2);
    ASSERT_TRUE(sl_params_get(&c, "application_name") == NULL);
    ASSERT_EQ(sl_params_shared_count(), 1);
    sl_params_clear(&b);
    ASSERT_EQ(sl_params_shared_count(), 0);
    /* An empty list is never interned. */
    sl_params_t e = {0};
    sl_params_share(&e);
    ASSERT_TRUE(e.v == NULL);
    ASSERT_EQ(sl_params_shared_count(), 0);
    sl_params_clear(&a);
    sl_params_clear(&c);
}

int main(void) {
    basics();
    sharing();
    return check_done("test_params");
}
