/* Client authentication. md5 works from a plaintext or md5 secret; SCRAM from
 * a plaintext (keys derived once and cached) or a SCRAM verifier. As in
 * PgBouncer, md5 is upgraded to SCRAM when only a SCRAM verifier is known,
 * and SCRAM falls back to md5 when only an md5 hash is known. */
#include "sluice/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/proto.h"

#define AUTH_OK 0
#define AUTH_CLEARTEXT 3
#define AUTH_MD5 5
#define AUTH_SASL 10
#define AUTH_SASL_CONTINUE 11
#define AUTH_SASL_FINAL 12

static int put_ok(sl_buf_t *out) { return sl_proto_put_auth(out, AUTH_OK, NULL, 0); }

static enum sl_auth_result start_scram(sl_auth_t *a, sl_buf_t *out) {
    static const char mechs[] = "SCRAM-SHA-256\0"; /* list ends with an empty name */
    a->method = SL_AUTH_SCRAM;
    a->scram = calloc(1, sizeof *a->scram);
    if (!a->scram || sl_proto_put_auth(out, AUTH_SASL, mechs, sizeof mechs) < 0)
        return SL_AUTH_FAIL;
    return SL_AUTH_CONTINUE;
}

enum sl_auth_result sl_auth_begin(sl_auth_t *a, sl_loop_t *w, int method, const char *user,
                                  sl_user_secret_t *secret, sl_buf_t *out) {
    memset(a, 0, sizeof *a);
    a->method = method;
    a->user = secret;
    if (a->method == SL_AUTH_TRUST || a->method == SL_AUTH_ANY)
        return put_ok(out) < 0 ? SL_AUTH_FAIL : SL_AUTH_OK;
    if (!a->user) {
        /* A stand-in secret with a salt derived from the name and a secret
         * of this process (as PostgreSQL does): the exchange looks the same
         * as for a real user, the salt is as stable as a real user's across
         * attempts (a fresh one each time would tell that the user does not
         * exist), and it can only fail. */
        uint8_t salt[32];
        unsigned int len = sizeof salt;
        HMAC(EVP_sha256(), w->mock_secret, sizeof w->mock_secret, (const unsigned char *)user,
             strlen(user), salt, &len);
        memcpy(a->mock.salt, salt, 16);
        a->mock.salt_len = 16;
        a->mock.iterations = SL_SCRAM_DEFAULT_ITERATIONS;
        if (RAND_bytes(a->mock.stored_key, SL_SCRAM_KEY_LEN) != 1) return SL_AUTH_FAIL;
    }
    enum sl_secret_kind kind = a->user ? a->user->kind : SL_SECRET_PLAIN;
    if (a->method == SL_AUTH_MD5 && kind == SL_SECRET_SCRAM) return start_scram(a, out);
    if (a->method == SL_AUTH_SCRAM && kind != SL_SECRET_MD5) return start_scram(a, out);
    if (a->method == SL_AUTH_PLAIN)
        return sl_proto_put_auth(out, AUTH_CLEARTEXT, NULL, 0) < 0 ? SL_AUTH_FAIL
                                                                   : SL_AUTH_CONTINUE;
    a->method = SL_AUTH_MD5;
    if (RAND_bytes(a->md5_salt, sizeof a->md5_salt) != 1) return SL_AUTH_FAIL;
    return sl_proto_put_auth(out, AUTH_MD5, a->md5_salt, 4) < 0 ? SL_AUTH_FAIL : SL_AUTH_CONTINUE;
}

/* The body must be one NUL-terminated string. */
static const char *body_string(const uint8_t *body, size_t n) {
    if (n == 0 || body[n - 1] != '\0' || memchr(body, '\0', n) != body + n - 1) return NULL;
    return (const char *)body;
}

static enum sl_auth_result check_md5(sl_auth_t *a, const char *user, const char *pw) {
    if (!a->user) return SL_AUTH_FAIL;
    char inner[36], expect[36];
    if (a->user->kind == SL_SECRET_MD5) {
        snprintf(inner, sizeof inner, "%s", a->user->secret + 3);
    } else if (a->user->kind == SL_SECRET_PLAIN) {
        sl_md5_hex(a->user->secret, strlen(a->user->secret), user, strlen(user), inner);
    } else {
        return SL_AUTH_FAIL;
    }
    memcpy(expect, "md5", 3);
    sl_md5_hex(inner, 32, a->md5_salt, 4, expect + 3);
    bool ok = strlen(pw) == 35 && CRYPTO_memcmp(pw, expect, 35) == 0;
    OPENSSL_cleanse(inner, sizeof inner);
    return ok ? SL_AUTH_OK : SL_AUTH_FAIL;
}

/* A password against a SCRAM verifier. Unknown users run the same
 * derivation against their stand-in secret, so that the time an attempt
 * takes does not tell whether the user exists; a password already proved
 * once is recognised by its hash. */
static enum sl_auth_result check_plain_scram(sl_auth_t *a, const char *pw) {
    uint8_t h[32];
    SHA256((const unsigned char *)pw, strlen(pw), h);
    sl_user_secret_t *u = a->user;
    if (u && u->has_plain_ok && CRYPTO_memcmp(h, u->plain_ok, sizeof h) == 0) return SL_AUTH_OK;
    const sl_scram_secret_t *sec = u ? sl_user_scram(u) : &a->mock;
    sl_scram_secret_t mine;
    if (!sec ||
        sl_scram_secret_from_password(pw, sec->salt, sec->salt_len, sec->iterations, &mine) < 0)
        return SL_AUTH_FAIL;
    bool ok = u && CRYPTO_memcmp(mine.stored_key, sec->stored_key, SL_SCRAM_KEY_LEN) == 0;
    OPENSSL_cleanse(&mine, sizeof mine);
    if (ok) {
        memcpy(u->plain_ok, h, sizeof h);
        u->has_plain_ok = true;
    }
    return ok ? SL_AUTH_OK : SL_AUTH_FAIL;
}

static enum sl_auth_result check_plain(sl_auth_t *a, const char *user, const char *pw) {
    if (!a->user) return check_plain_scram(a, pw);
    if (a->user->kind == SL_SECRET_PLAIN) {
        size_t n = strlen(a->user->secret);
        return strlen(pw) == n && CRYPTO_memcmp(pw, a->user->secret, n) == 0 ? SL_AUTH_OK
                                                                              : SL_AUTH_FAIL;
    }
    if (a->user->kind == SL_SECRET_MD5) {
        char h[36] = "md5";
        sl_md5_hex(pw, strlen(pw), user, strlen(user), h + 3);
        return CRYPTO_memcmp(h, a->user->secret, 35) == 0 ? SL_AUTH_OK : SL_AUTH_FAIL;
    }
    return check_plain_scram(a, pw);
}

static enum sl_auth_result scram_step(sl_auth_t *a, const uint8_t *body, size_t n, sl_buf_t *out) {
    char reply[512];
    if (a->scram->state == SL_SCRAM_INIT) {
        const char *mech;
        const uint8_t *data;
        uint32_t dl;
        if (sl_proto_parse_sasl_initial(body, n, &mech, &data, &dl) < 0 ||
            strcmp(mech, "SCRAM-SHA-256") != 0)
            return SL_AUTH_BAD_MESSAGE;
        const sl_scram_secret_t *sec = a->user ? sl_user_scram(a->user) : &a->mock;
        if (!sec) return SL_AUTH_FAIL;
        uint8_t rnd[18];
        char nonce[32];
        if (RAND_bytes(rnd, sizeof rnd) != 1 || sl_base64_encode(rnd, sizeof rnd, nonce,
                                                                  sizeof nonce) < 0)
            return SL_AUTH_FAIL;
        int len = sl_scram_server_first(a->scram, sec, data, dl, nonce, reply, sizeof reply);
        if (len < 0) return SL_AUTH_BAD_MESSAGE;
        return sl_proto_put_auth(out, AUTH_SASL_CONTINUE, reply, (size_t)len) < 0
                   ? SL_AUTH_FAIL
                   : SL_AUTH_CONTINUE;
    }
    int len = sl_scram_server_final(a->scram, body, n, reply, sizeof reply);
    if (len == SL_EAUTH || (len >= 0 && !a->user)) return SL_AUTH_FAIL;
    if (len < 0) return SL_AUTH_BAD_MESSAGE;
    if (sl_proto_put_auth(out, AUTH_SASL_FINAL, reply, (size_t)len) < 0 || put_ok(out) < 0)
        return SL_AUTH_FAIL;
    if (a->user->kind == SL_SECRET_SCRAM) {
        /* Only a verifier is known: keep the key the proof revealed, so that
         * sluice can log in to the backend as this user. */
        memcpy(a->user->client_key, a->scram->client_key, SL_SCRAM_KEY_LEN);
        a->user->has_client_key = true;
    }
    return SL_AUTH_OK;
}

enum sl_auth_result sl_auth_step(sl_auth_t *a, const char *user, const uint8_t *body, size_t n,
                                 sl_buf_t *out) {
    enum sl_auth_result r;
    if (a->method == SL_AUTH_SCRAM) {
        r = scram_step(a, body, n, out);
    } else {
        const char *pw = body_string(body, n);
        if (!pw) return SL_AUTH_BAD_MESSAGE;
        r = a->method == SL_AUTH_MD5 ? check_md5(a, user, pw) : check_plain(a, user, pw);
        if (r == SL_AUTH_OK && put_ok(out) < 0) r = SL_AUTH_FAIL;
    }
    return r;
}

void sl_auth_clear(sl_auth_t *a) {
    if (a->scram) {
        OPENSSL_cleanse(a->scram, sizeof *a->scram);
        free(a->scram);
    }
    a->scram = NULL;
}
