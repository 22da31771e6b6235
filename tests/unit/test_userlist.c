/* userlist: the three secret kinds, quoting, comments, errors. */
#include "sluice/userlist.h"
#include "unit/check.h"

int main(void) {
    sl_userlist_t ul;
    char err[256] = "";
    const char *text = "; comment\n"
                       "\"alice\" \"plain pw\"\n"
                       "\"bob\" \"md50123456789abcdef0123456789abcdef\"\n"
                       "\"q\"\"uote\" \"x\"\n"
                       "\"carol\" \"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
                       "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
                       "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=\"\n";
    ASSERT_EQ(sl_userlist_parse("u.txt", text, &ul, err, sizeof err), SL_OK);
    ASSERT_EQ(ul.n, 4);
    sl_user_secret_t *a = sl_userlist_find(&ul, "alice");
    ASSERT_TRUE(a && a->kind == SL_SECRET_PLAIN && !strcmp(a->secret, "plain pw"));
    ASSERT_TRUE(sl_userlist_find(&ul, "bob")->kind == SL_SECRET_MD5);
    ASSERT_TRUE(sl_userlist_find(&ul, "q\"uote") != NULL);
    sl_user_secret_t *c = sl_userlist_find(&ul, "carol");
    ASSERT_TRUE(c && c->kind == SL_SECRET_SCRAM);
    ASSERT_TRUE(c && sl_user_scram(c) && sl_user_scram(c)->iterations == 4096);
    ASSERT_TRUE(sl_user_scram(sl_userlist_find(&ul, "bob")) == NULL);
    /* Derived once from the plaintext, then cached. */
    const sl_scram_secret_t *d1 = sl_user_scram(a), *d2 = sl_user_scram(a);
    ASSERT_TRUE(d1 && d1 == d2);
    ASSERT_TRUE(sl_userlist_find(&ul, "nobody") == NULL);
    sl_userlist_free(&ul);

    ASSERT_EQ(sl_userlist_parse("u.txt", "\"ok\" \"x\"\nnot quoted\n", &ul, err, sizeof err),
              SL_ECONFIG);
    ASSERT_STREQ(err, "u.txt:2: expected \"user\" \"password\"");
    ASSERT_EQ(sl_userlist_parse("u.txt", "\"bad\" \"SCRAM-SHA-256$zz\"\n", &ul, err, sizeof err),
              SL_ECONFIG);
    ASSERT_TRUE(strstr(err, "u.txt:1: malformed SCRAM") != NULL);
    ASSERT_EQ(sl_userlist_load("/nonexistent", &ul, err, sizeof err), SL_ECONFIG);
    return check_done("test_userlist");
}
