/* scram: the RFC 7677 exchange, verifier parsing, wrong proofs, bad input. */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "sluice/scram.h"
#include "unit/check.h"

static const char client_first[] = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
static const char server_nonce[] = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
static const char client_final[] = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                                   "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";

static void rfc_secret(sl_scram_secret_t *sec) {
    uint8_t salt[32];
    int n = sl_base64_decode("W22ZaJ0SNY7soEsUEjb6gQ==", 24, salt, sizeof salt);
    ASSERT_EQ(n, 16);
    ASSERT_EQ(sl_scram_secret_from_password("pencil", salt, (size_t)n, 4096, sec), SL_OK);
}

static void test_rfc7677(void) {
    sl_scram_secret_t sec;
    rfc_secret(&sec);
    sl_scram_server_t st = {0};
    char out[512];
    int n = sl_scram_server_first(&st, &sec, (const uint8_t *)client_first, strlen(client_first),
                                  server_nonce, out, sizeof out);
    ASSERT_TRUE(n > 0);
    ASSERT_STREQ(out, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                      "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
    n = sl_scram_server_final(&st, (const uint8_t *)client_final, strlen(client_final), out,
                              sizeof out);
    ASSERT_TRUE(n > 0);
    ASSERT_STREQ(out, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
}

static void test_wrong_proof(void) {
    sl_scram_secret_t sec;
    rfc_secret(&sec);
    sl_scram_server_t st = {0};
    char out[512];
    ASSERT_TRUE(sl_scram_server_first(&st, &sec, (const uint8_t *)client_first,
                                      strlen(client_first), server_nonce, out, sizeof out) > 0);
    char bad[256];
    snprintf(bad, sizeof bad, "%s", client_final);
    bad[strlen(bad) - 3] ^= 1; /* flip a bit of the proof */
    ASSERT_EQ(sl_scram_server_final(&st, (const uint8_t *)bad, strlen(bad), out, sizeof out),
              SL_EAUTH);
}

static void test_verifier(void) {
    sl_scram_secret_t a, b;
    rfc_secret(&a);
    char salt64[64], sk64[64], svk64[64], text[256];
    sl_base64_encode(a.salt, a.salt_len, salt64, sizeof salt64);
    sl_base64_encode(a.stored_key, 32, sk64, sizeof sk64);
    sl_base64_encode(a.server_key, 32, svk64, sizeof svk64);
    snprintf(text, sizeof text, "SCRAM-SHA-256$4096:%s$%s:%s", salt64, sk64, svk64);
    ASSERT_EQ(sl_scram_parse_secret(text, &b), SL_OK);
    ASSERT_EQ(b.iterations, 4096);
    ASSERT_TRUE(memcmp(a.stored_key, b.stored_key, 32) == 0);
    ASSERT_TRUE(memcmp(a.server_key, b.server_key, 32) == 0);
    ASSERT_EQ(sl_scram_parse_secret("SCRAM-SHA-256$x:abc$def:ghi", &b), SL_EPROTO);
    ASSERT_EQ(sl_scram_parse_secret("md5abc", &b), SL_EPROTO);
    ASSERT_EQ(sl_scram_parse_secret("SCRAM-SHA-256$4096:c2FsdA==$c2hvcnQ=:c2hvcnQ=", &b),
              SL_EPROTO);
}

static void test_malformed(void) {
    sl_scram_secret_t sec;
    rfc_secret(&sec);
    const char *bad_first[] = {"p=tls-server-end-point,,n=,r=abc", "x,,n=,r=abc", "n,,r=abc",
                               "n,,n=,r=", "n,a=admin,n=,r=abc", ""};
    for (size_t i = 0; i < sizeof bad_first / sizeof *bad_first; i++) {
        sl_scram_server_t st = {0};
        char out[512];
        ASSERT_EQ(sl_scram_server_first(&st, &sec, (const uint8_t *)bad_first[i],
                                        strlen(bad_first[i]), "srv", out, sizeof out),
                  SL_EPROTO);
    }
    /* A wrong nonce or channel-binding echo in the final message. */
    const char *bad_final[] = {"c=biws,r=wrongnonce,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                               "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AA==",
                               "r=x", "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"};
    for (size_t i = 0; i < sizeof bad_final / sizeof *bad_final; i++) {
        sl_scram_server_t st = {0};
        char out[512];
        ASSERT_TRUE(sl_scram_server_first(&st, &sec, (const uint8_t *)client_first,
                                          strlen(client_first), server_nonce, out,
                                          sizeof out) > 0);
        ASSERT_EQ(sl_scram_server_final(&st, (const uint8_t *)bad_final[i], strlen(bad_final[i]),
                                        out, sizeof out),
                  SL_EPROTO);
    }
    /* Final before first. */
    sl_scram_server_t st = {0};
    char out[64];
    ASSERT_EQ(sl_scram_server_final(&st, (const uint8_t *)client_final, strlen(client_final), out,
                                    sizeof out),
              SL_EPROTO);
}

int main(void) {
    test_rfc7677();
    test_wrong_proof();
    test_verifier();
    test_malformed();
    return check_done("test_scram");
}
