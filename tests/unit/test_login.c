/* login: sluice's own backend login, fed the messages a backend sends. */
#include "sluice/login.h"
#include "sluice/proto.h"
#include "unit/check.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

static void msg(uint8_t *body, size_t *n, uint32_t code, const void *rest, size_t rn) {
    sl_put_be32(body, code);
    memcpy(body + 4, rest, rn);
    *n = 4 + rn;
}

int main(void) {
    sl_login_t l;
    uint8_t out[600], body[600];
    size_t n, olen;
    sl_login_secret_t sec = {0};
    /* md5: md5(hash-hex + salt), from the stored "md5" + md5(password + user). */
    snprintf(sec.md5, sizeof sec.md5, "md5%s", "a6b5a1b8b4d1b7b1e2f1c8a9d0c3b2a1");
    int len = sl_login_start(&l, "bob", "app", &sec, out, sizeof out);
    ASSERT_TRUE(len == 4 + 4 + 5 + 4 + 9 + 4 + 1);
    ASSERT_TRUE(!memcmp(out + 8, "user\0bob\0database\0app\0\0", 23));
    msg(body, &n, 5, "\1\2\3\4", 4);
    ASSERT_EQ(sl_login_feed(&l, 'R', body, n, out, sizeof out, &olen), SL_LOGIN_MORE);
    ASSERT_TRUE(olen == 5 + 36 && out[0] == 'p' && !memcmp(out + 5, "md5", 3) && out[40] == 0);
    unsigned char d[16];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
    EVP_DigestUpdate(ctx, "a6b5a1b8b4d1b7b1e2f1c8a9d0c3b2a1", 32);
    EVP_DigestUpdate(ctx, "\1\2\3\4", 4);
    EVP_DigestFinal_ex(ctx, d, NULL);
    EVP_MD_CTX_free(ctx);
    char hex[33];
    for (int i = 0; i < 16; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
    ASSERT_TRUE(!memcmp(out + 8, hex, 32));
    msg(body, &n, 0, "", 0);
    ASSERT_EQ(sl_login_feed(&l, 'R', body, n, out, sizeof out, &olen), SL_LOGIN_MORE);
    ASSERT_EQ(
        sl_login_feed(&l, 'K', (const uint8_t *)"\0\0\0\7\0\0\0\11", 8, out, sizeof out, &olen),
        SL_LOGIN_MORE);
    ASSERT_EQ(sl_login_feed(&l, 'Z', (const uint8_t *)"I", 1, out, sizeof out, &olen),
              SL_LOGIN_DONE);
    ASSERT_TRUE(l.backend_pid == 7 && l.backend_key == 9);

    /* SCRAM against sluice's own server side, with the keys of "pw". */
    static const uint8_t salt[] = "0123456789abcdef";
    sl_scram_secret_t v;
    ASSERT_EQ(sl_scram_secret_from_password("pw", salt, 16, 4096, &v), SL_OK);
    uint8_t salted[32];
    unsigned int ol = 32;
    PKCS5_PBKDF2_HMAC("pw", 2, salt, 16, 4096, EVP_sha256(), 32, salted);
    memset(&sec, 0, sizeof sec);
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, sec.client_key, &ol);
    memcpy(sec.server_key, v.server_key, 32);
    sec.has_keys = true;
    ASSERT_TRUE(sl_login_start(&l, "bob", "app", &sec, out, sizeof out) > 0);
    msg(body, &n, 10, "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0", 34);
    ASSERT_EQ(sl_login_feed(&l, 'R', body, n, out, sizeof out, &olen), SL_LOGIN_MORE);
    ASSERT_TRUE(out[0] == 'p' && !memcmp(out + 5, "SCRAM-SHA-256\0", 14));
    uint32_t first_len = sl_be32(out + 19);
    sl_scram_server_t sv = {0};
    char s1[512], s2[256];
    int s1n = sl_scram_server_first(&sv, &v, out + 23, first_len, "srv", s1, sizeof s1);
    ASSERT_TRUE(s1n > 0);
    msg(body, &n, 11, s1, (size_t)s1n);
    ASSERT_EQ(sl_login_feed(&l, 'R', body, n, out, sizeof out, &olen), SL_LOGIN_MORE);
    int s2n = sl_scram_server_final(&sv, out + 5, olen - 5, s2, sizeof s2);
    ASSERT_TRUE(s2n > 0); /* the server accepted the proof made from the keys */
    msg(body, &n, 12, s2, (size_t)s2n);
    ASSERT_EQ(sl_login_feed(&l, 'R', body, n, out, sizeof out, &olen), SL_LOGIN_MORE);
    s2[3] ^= 1; /* a server that does not know the verifier */
    msg(body, &n, 12, s2, (size_t)s2n);
    ASSERT_EQ(sl_login_feed(&l, 'R', body, n, out, sizeof out, &olen), SL_LOGIN_FAIL);

    /* What cannot work says so. */
    memset(&sec, 0, sizeof sec);
    ASSERT_TRUE(sl_login_start(&l, "bob", "app", &sec, out, sizeof out) > 0);
    msg(body, &n, 3, "", 0);
    ASSERT_EQ(sl_login_feed(&l, 'R', body, n, out, sizeof out, &olen), SL_LOGIN_FAIL);
    ASSERT_TRUE(strstr(l.error, "plaintext password") != NULL);
    msg(body, &n, 10, "SCRAM-SHA-256\0", 15);
    ASSERT_EQ(sl_login_feed(&l, 'R', body, n, out, sizeof out, &olen), SL_LOGIN_FAIL);
    ASSERT_TRUE(strstr(l.error, "no SCRAM keys") != NULL);
    ASSERT_EQ(sl_login_feed(&l, 'E', (const uint8_t *)"SFATAL\0C28P01\0Mbad\0\0", 20, out,
                            sizeof out, &olen),
              SL_LOGIN_FAIL);
    ASSERT_STREQ(l.code, "28P01");
    ASSERT_EQ(sl_login_feed(&l, 'Z', (const uint8_t *)"I", 1, out, sizeof out, &olen),
              SL_LOGIN_FAIL);

    /* A backend asking for more PBKDF2 rounds than sluice runs on its loop
     * is refused, saying what to change; the malformed one says so. */
    memset(&sec, 0, sizeof sec);
    snprintf(sec.password, sizeof sec.password, "pw");
    static const char *const firsts[] = {"r=abc,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=10000000",
                                         "r=abc,s=MDEyMzQ1Njc4OWFiY2RlZg==,i=x"};
    static const char *const says[] = {"more than 100000 SCRAM iterations", "iteration count"};
    for (int i = 0; i < 2; i++) {
        ASSERT_TRUE(sl_login_start(&l, "bob", "app", &sec, out, sizeof out) > 0);
        msg(body, &n, 10, "SCRAM-SHA-256\0", 15);
        ASSERT_EQ(sl_login_feed(&l, 'R', body, n, out, sizeof out, &olen), SL_LOGIN_MORE);
        msg(body, &n, 11, firsts[i], strlen(firsts[i]));
        ASSERT_EQ(sl_login_feed(&l, 'R', body, n, out, sizeof out, &olen), SL_LOGIN_FAIL);
        ASSERT_TRUE(strstr(l.error, says[i]) != NULL);
    }
    return check_done("test_login");
}
