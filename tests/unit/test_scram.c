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
    const char *bad_first[] = {"p=tls-server-end-point,,n=,r=abc",
                               "x,,n=,r=abc",
                               "n,,r=abc",
                               "n,,n=,r=",
                               "n,a=admin,n=,r=abc",
                               ""};
    for (size_t i = 0; i < sizeof bad_first / sizeof *bad_first; i++) {
        sl_scram_server_t st = {0};
        char out[512];
        ASSERT_EQ(sl_scram_server_first(&st, &sec, (const uint8_t *)bad_first[i],
                                        strlen(bad_first[i]), "srv", out, sizeof out),
                  SL_EPROTO);
    }
    /* A wrong nonce or channel-binding echo in the final message. */
    const char *bad_final[] = {
        "c=biws,r=wrongnonce,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AA==", "r=x",
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"};
    for (size_t i = 0; i < sizeof bad_final / sizeof *bad_final; i++) {
        sl_scram_server_t st = {0};
        char out[512];
        ASSERT_TRUE(sl_scram_server_first(&st, &sec, (const uint8_t *)client_first,
                                          strlen(client_first), server_nonce, out, sizeof out) > 0);
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

/* sluice's client against its own server: the keys a client's proof
 * yields log in again (pass-through), a wrong key does not. */
static void client_round_trip(void) {
    static const uint8_t salt[] = "0123456789abcdef";
    sl_scram_secret_t sec;
    ASSERT_EQ(sl_scram_secret_from_password("pw", salt, 16, 4096, &sec), SL_OK);
    uint8_t salted[SL_SCRAM_KEY_LEN], client_key[SL_SCRAM_KEY_LEN];
    ASSERT_TRUE(PKCS5_PBKDF2_HMAC("pw", 2, salt, 16, 4096, EVP_sha256(), 32, salted) == 1);
    unsigned int olen = 32;
    HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, client_key, &olen);
    for (int wrong = 0; wrong < 2; wrong++) {
        sl_scram_client_t cl;
        sl_scram_server_t sv = {0};
        char c1[256], s1[512], c2[512], s2[256];
        int n = sl_scram_client_first(&cl, "clientnonce", c1, sizeof c1);
        ASSERT_TRUE(n > 0 && !strcmp(c1, "n,,n=,r=clientnonce"));
        n = sl_scram_server_first(&sv, &sec, (const uint8_t *)c1, (size_t)n, "servernonce", s1,
                                  sizeof s1);
        ASSERT_TRUE(n > 0);
        uint8_t key[SL_SCRAM_KEY_LEN];
        memcpy(key, client_key, sizeof key);
        key[0] ^= (uint8_t)wrong;
        n = sl_scram_client_final(&cl, key, sec.server_key, (const uint8_t *)s1, (size_t)n, c2,
                                  sizeof c2);
        ASSERT_TRUE(n > 0);
        n = sl_scram_server_final(&sv, (const uint8_t *)c2, (size_t)n, s2, sizeof s2);
        if (wrong) {
            ASSERT_EQ(n, SL_EAUTH);
            continue;
        }
        ASSERT_TRUE(n > 0);
        ASSERT_TRUE(memcmp(sv.client_key, client_key, SL_SCRAM_KEY_LEN) == 0);
        ASSERT_EQ(sl_scram_client_verify(&cl, (const uint8_t *)s2, (size_t)n), SL_OK);
        s2[3] ^= 1; /* a server that does not know the verifier */
        ASSERT_TRUE(sl_scram_client_verify(&cl, (const uint8_t *)s2, (size_t)n) != SL_OK);
    }
    /* A server nonce that does not extend ours is refused. */
    sl_scram_client_t cl;
    char c1[256], c2[512];
    ASSERT_TRUE(sl_scram_client_first(&cl, "abc", c1, sizeof c1) > 0);
    const char *bad = "r=xyzdef,s=MTIz,i=4096";
    ASSERT_EQ(sl_scram_client_final(&cl, client_key, sec.server_key, (const uint8_t *)bad,
                                    strlen(bad), c2, sizeof c2),
              SL_EPROTO);
}

/* Only strict base64 decodes: whitespace around the text, padding in the
 * middle or characters outside the alphabet are refused, so a decoded
 * length can never count padding as bytes. */
static void test_base64_strict(void) {
    uint8_t out[64];
    ASSERT_EQ(sl_base64_decode("QUJD", 4, out, sizeof out), 3);
    ASSERT_EQ(sl_base64_decode("QUI=", 4, out, sizeof out), 2);
    ASSERT_EQ(sl_base64_decode("QQ==", 4, out, sizeof out), 1);
    ASSERT_EQ(sl_base64_decode("QUI ", 4, out, sizeof out), -1);
    ASSERT_EQ(sl_base64_decode(" QUI", 4, out, sizeof out), -1);
    ASSERT_EQ(sl_base64_decode("QQ=\n", 4, out, sizeof out), -1);
    ASSERT_EQ(sl_base64_decode("Q=QQ", 4, out, sizeof out), -1);
    ASSERT_EQ(sl_base64_decode("QUJDQUI=\n\n\n\n", 12, out, sizeof out), -1);
    ASSERT_EQ(sl_base64_decode("QU*D", 4, out, sizeof out), -1);
}

int main(void) {
    test_base64_strict();
    client_round_trip();
    test_rfc7677();
    test_wrong_proof();
    test_verifier();
    test_malformed();
    return check_done("test_scram");
}
