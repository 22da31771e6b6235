/* Backend login with md5 hashes or SCRAM keys instead of a password. */
#include "sluice/login.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/proto.h"

enum {
    AUTH_OK = 0,
    AUTH_CLEARTEXT = 3,
    AUTH_MD5 = 5,
    AUTH_SASL = 10,
    AUTH_SASL_CONTINUE = 11,
    AUTH_SASL_FINAL = 12
};

static int put_u32(uint8_t *p, size_t cap, size_t *o, uint32_t v) {
    if (*o + 4 > cap) return SL_ENOSPACE;
    sl_put_be32(p + *o, v);
    *o += 4;
    return SL_OK;
}

static int put_str(uint8_t *p, size_t cap, size_t *o, const char *s, size_t n) {
    if (*o + n > cap) return SL_ENOSPACE;
    memcpy(p + *o, s, n);
    *o += n;
    return SL_OK;
}

int sl_login_start(sl_login_t *l, const char *user, const char *dbname,
                   const sl_login_secret_t *secret, uint8_t *out, size_t cap) {
    memset(l, 0, sizeof *l);
    snprintf(l->user, sizeof l->user, "%s", user);
    l->secret = *secret;
    /* The caller's keys may be gone when the backend's server-first comes
     * (a probe's are on its caller's stack): keep a copy. */
    if (secret->cache && secret->copy_cache) {
        l->own_cache = *secret->cache;
        l->secret.cache = &l->own_cache;
    }
    size_t o = 4;
    if (put_u32(out, cap, &o, 196608) < 0 || put_str(out, cap, &o, "user", 5) < 0 ||
        put_str(out, cap, &o, user, strlen(user) + 1) < 0 ||
        put_str(out, cap, &o, "database", 9) < 0 ||
        put_str(out, cap, &o, dbname, strlen(dbname) + 1) < 0 || put_str(out, cap, &o, "", 1) < 0)
        return SL_ENOSPACE;
    sl_put_be32(out, (uint32_t)o);
    return (int)o;
}

void sl_login_restart(sl_login_t *l) {
    sl_login_secret_t secret = l->secret;
    sl_login_keys_t keys = l->own_cache;
    char user[sizeof l->user];
    memcpy(user, l->user, sizeof user);
    memset(l, 0, sizeof *l);
    l->secret = secret;
    l->own_cache = keys;
    if (secret.copy_cache) l->secret.cache = &l->own_cache;
    memcpy(l->user, user, sizeof user);
    OPENSSL_cleanse(&secret, sizeof secret);
    OPENSSL_cleanse(&keys, sizeof keys);
}

static enum sl_login_result fail(sl_login_t *l, const char *code, const char *msg) {
    snprintf(l->code, sizeof l->code, "%s", code);
    snprintf(l->error, sizeof l->error, "%s", msg);
    return SL_LOGIN_FAIL;
}

/* 'p' message with body parts; *out_len set. */
static enum sl_login_result reply(sl_login_t *l, uint8_t *out, size_t cap, size_t *out_len,
                                  const void *a, size_t an, const void *b, size_t bn) {
    if (5 + an + bn > cap) return fail(l, "08006", "login reply too long");
    out[0] = 'p';
    sl_put_be32(out + 1, (uint32_t)(4 + an + bn));
    memcpy(out + 5, a, an);
    if (bn) memcpy(out + 5 + an, b, bn);
    *out_len = 5 + an + bn;
    return SL_LOGIN_MORE;
}

static enum sl_login_result md5_reply(sl_login_t *l, const uint8_t *salt, uint8_t *out, size_t cap,
                                      size_t *out_len) {
    if (strncmp(l->secret.md5, "md5", 3) != 0 || strlen(l->secret.md5) != 35)
        return fail(l, "28P01",
                    "the backend asks for md5 and sluice has no md5 hash for this "
                    "user: put the password (or its md5 hash) in auth_file");
    char hex[36] = "md5";
    sl_md5_hex(l->secret.md5 + 3, 32, salt, 4, hex + 3);
    return reply(l, out, cap, out_len, hex, 36, NULL, 0);
}

static enum sl_login_result sasl_start(sl_login_t *l, const uint8_t *body, size_t n, uint8_t *out,
                                       size_t cap, size_t *out_len) {
    bool offered = false;
    for (size_t o = 4; o < n && body[o];) {
        const char *mech = (const char *)body + o;
        size_t len = strnlen(mech, n - o);
        if (len == 13 && !memcmp(mech, "SCRAM-SHA-256", 13)) offered = true;
        o += len + 1;
    }
    if (!offered) return fail(l, "08006", "the backend offers no SASL mechanism sluice speaks");
    if (!l->secret.has_keys && !l->secret.password[0])
        return fail(l, "28P01",
                    "no SCRAM keys for this user yet: they come from a client's own "
                    "SCRAM login to sluice (or put the password in auth_file)");
    uint8_t raw[18];
    char nonce[32], first[128];
    if (RAND_bytes(raw, sizeof raw) != 1 ||
        sl_base64_encode(raw, sizeof raw, nonce, sizeof nonce) < 0)
        return fail(l, "08006", "no randomness for the SCRAM nonce");
    int fl = sl_scram_client_first(&l->scram, nonce, first, sizeof first);
    if (fl < 0) return fail(l, "08006", "SCRAM client-first failed");
    uint8_t mid[4 + 14];
    memcpy(mid, "SCRAM-SHA-256", 14);
    sl_put_be32(mid + 14, (uint32_t)fl);
    return reply(l, out, cap, out_len, mid, sizeof mid, first, (size_t)fl);
}

/* PBKDF2 runs on the event loop, once per backend salt (then cached and
 * shared by the workers): PostgreSQL's 4,096 rounds take a few ms; this
 * bound keeps a backend (or a role given a huge scram_iterations) from
 * stalling every client of the loop for seconds. */
#define SL_LOGIN_MAX_ITERATIONS 100000

/* The salt and iteration count of a server-first-message
 * ("r=<nonce>,s=<base64 salt>,i=<count>[,...]"): NULL, or what is wrong
 * with it, for the client and the log. */
static const char *parse_server_first(const uint8_t *msg, size_t n, sl_login_keys_t *k) {
    k->salt_len = 0;
    k->iterations = 0;
    bool salted = false;
    for (size_t o = 0; o + 2 <= n;) {
        size_t end = o;
        while (end < n && msg[end] != ',')
            end++;
        if (msg[o + 1] == '=' && msg[o] == 's') {
            int len =
                sl_base64_decode((const char *)msg + o + 2, end - o - 2, k->salt, sizeof k->salt);
            if (len <= 0) return "malformed SCRAM server-first-message (salt)";
            k->salt_len = (size_t)len;
            salted = true;
        } else if (msg[o + 1] == '=' && msg[o] == 'i') {
            char num[12];
            size_t len = end - o - 2;
            if (len == 0 || len >= sizeof num)
                return "malformed SCRAM server-first-message (iteration count)";
            memcpy(num, msg + o + 2, len);
            num[len] = '\0';
            char *e;
            long it = strtol(num, &e, 10);
            if (*e || it < 1) return "malformed SCRAM server-first-message (iteration count)";
            if (it > SL_LOGIN_MAX_ITERATIONS)
                return "the backend asks for more than 100000 SCRAM iterations, which sluice "
                       "will not compute on its event loop: set the role's password with a lower "
                       "scram_iterations, or give sluice the role's SCRAM verifier in auth_file";
            k->iterations = (int)it;
        }
        o = end + 1;
    }
    return salted && k->iterations > 0 ? NULL : "malformed SCRAM server-first-message";
}

/* ClientKey and ServerKey for the backend's salt: from the cache when it
 * holds this salt, else by PBKDF2 over the password (on the caller's
 * thread: the event loop, once per salt), filling the cache. NULL, or what
 * went wrong. */
static const char *password_keys(sl_login_t *l, const uint8_t *msg, size_t n, sl_login_keys_t *k) {
    const char *bad = parse_server_first(msg, n, k);
    if (bad) return bad;
    const sl_login_keys_t *c = l->secret.cache;
    if (c && c->iterations == k->iterations && c->salt_len == k->salt_len &&
        !memcmp(c->salt, k->salt, k->salt_len)) {
        *k = *c;
        return NULL;
    }
    if (sl_scram_keys_from_password(l->secret.password, k->salt, k->salt_len, k->iterations,
                                    k->client_key, k->server_key) != SL_OK)
        return "out of memory deriving the SCRAM keys";
    l->derived_iterations = k->iterations;
    if (l->secret.cache) *l->secret.cache = *k;
    return NULL;
}

enum sl_login_result sl_login_feed(sl_login_t *l, uint8_t type, const uint8_t *body, size_t n,
                                   uint8_t *out, size_t cap, size_t *out_len) {
    *out_len = 0;
    if (type == 'E') {
        sl_error_fields_t ef;
        if (sl_proto_parse_error(body, n, &ef) == SL_OK)
            return fail(l, ef.code ? ef.code : "08006",
                        ef.message && *ef.message ? ef.message
                                                  : "the backend refused the login without a "
                                                    "message: see its log");
        return fail(l, "08006", "backend refused the login");
    }
    if (type == 'K' && n == 8) {
        l->backend_pid = sl_be32(body);
        l->backend_key = sl_be32(body + 4);
        return SL_LOGIN_MORE;
    }
    if (type == 'Z')
        return l->authenticated ? SL_LOGIN_DONE
                                : fail(l, "08P01", "ReadyForQuery before authentication");
    if (type != 'R') return SL_LOGIN_MORE; /* ParameterStatus, NoticeResponse: the caller's */
    if (n < 4) return fail(l, "08P01", "malformed authentication request");
    switch (sl_be32(body)) {
    case AUTH_OK:
        l->authenticated = true;
        return SL_LOGIN_MORE;
    case AUTH_MD5:
        if (n != 8) return fail(l, "08P01", "malformed md5 request");
        return md5_reply(l, body + 4, out, cap, out_len);
    case AUTH_SASL:
        return sasl_start(l, body, n, out, cap, out_len);
    case AUTH_SASL_CONTINUE: {
        char final[512];
        sl_login_keys_t k;
        const uint8_t *ck = l->secret.client_key, *sk = l->secret.server_key;
        if (l->secret.password[0]) {
            const char *bad = password_keys(l, body + 4, n - 4, &k);
            if (bad) return fail(l, "08P01", bad);
            ck = k.client_key, sk = k.server_key;
        }
        int fl = sl_scram_client_final(&l->scram, ck, sk, body + 4, n - 4, final, sizeof final);
        OPENSSL_cleanse(&k, sizeof k);
        if (fl < 0) return fail(l, "08P01", "malformed SCRAM server-first-message");
        return reply(l, out, cap, out_len, final, (size_t)fl, NULL, 0);
    }
    case AUTH_SASL_FINAL:
        if (sl_scram_client_verify(&l->scram, body + 4, n - 4) != SL_OK)
            return fail(l, "28000",
                        "the backend's SCRAM signature does not match: it does not "
                        "know this user's verifier");
        return SL_LOGIN_MORE;
    case AUTH_CLEARTEXT:
        if (l->secret.password[0])
            return reply(l, out, cap, out_len, l->secret.password, strlen(l->secret.password) + 1,
                         NULL, 0);
        return fail(l, "28P01",
                    "the backend asks for a plaintext password, which sluice does not "
                    "have for this user: put it in auth_file");
    default:
        return fail(l, "08006",
                    "the backend asks for an authentication method sluice does "
                    "not support for this user");
    }
}
