/* SCRAM-SHA-256 server exchange with OpenSSL's primitives. */
#include "sluice/scram.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sl_base64_encode(const uint8_t *in, size_t n, char *out, size_t cap) {
    if (cap < 4 * ((n + 2) / 3) + 1) return -1;
    return EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

/* Strict RFC 4648 base64: only the alphabet, then at most two '=' that end
 * the text. EVP_DecodeBlock alone skips whitespace around the text and
 * counts padding as zero bytes, so "QUJD=\n" style input would decode to a
 * length off by the padding it failed to see. */
static bool base64_valid(const char *in, size_t n) {
    size_t pad = 0;
    if (n >= 1 && in[n - 1] == '=') pad++;
    if (n >= 2 && in[n - 2] == '=') pad++;
    for (size_t i = 0; i < n - pad; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return false;
    }
    return true;
}

int sl_base64_decode(const char *in, size_t n, uint8_t *out, size_t cap) {
    if (n % 4 != 0 || n > INT_MAX) return -1;
    if (cap < n / 4 * 3) return -1;
    if (!base64_valid(in, n)) return -1;
    int len = EVP_DecodeBlock(out, (const unsigned char *)in, (int)n);
    if (len < 0) return -1;
    /* EVP_DecodeBlock counts padding as zero bytes: take them off. */
    if (n >= 1 && in[n - 1] == '=') len--;
    if (n >= 2 && in[n - 2] == '=') len--;
    return len;
}

void sl_md5_hex(const void *a, size_t an, const void *b, size_t bn, char out[33]) {
    unsigned char d[16];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_md5(), NULL);
    EVP_DigestUpdate(ctx, a, an);
    EVP_DigestUpdate(ctx, b, bn);
    EVP_DigestFinal_ex(ctx, d, NULL);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void hmac(const uint8_t *key, size_t klen, const void *msg, size_t n, uint8_t *out) {
    unsigned int olen = SL_SCRAM_KEY_LEN;
    HMAC(EVP_sha256(), key, (int)klen, msg, n, out, &olen);
}

int sl_scram_keys_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                                int iterations, uint8_t client_key[SL_SCRAM_KEY_LEN],
                                uint8_t server_key[SL_SCRAM_KEY_LEN]) {
    if (iterations < 1) return SL_EPROTO;
    uint8_t salted[SL_SCRAM_KEY_LEN];
    if (!PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, iterations,
                           EVP_sha256(), SL_SCRAM_KEY_LEN, salted))
        return SL_ENOMEM;
    hmac(salted, sizeof salted, "Client Key", 10, client_key);
    hmac(salted, sizeof salted, "Server Key", 10, server_key);
    OPENSSL_cleanse(salted, sizeof salted);
    return SL_OK;
}

int sl_scram_secret_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                                  int iterations, sl_scram_secret_t *out) {
    if (salt_len > sizeof out->salt) return SL_EPROTO;
    uint8_t client_key[SL_SCRAM_KEY_LEN];
    int rc = sl_scram_keys_from_password(password, salt, salt_len, iterations, client_key,
                                         out->server_key);
    if (rc != SL_OK) return rc;
    SHA256(client_key, sizeof client_key, out->stored_key);
    memcpy(out->salt, salt, salt_len);
    out->salt_len = salt_len;
    out->iterations = iterations;
    OPENSSL_cleanse(client_key, sizeof client_key);
    return SL_OK;
}

int sl_scram_parse_secret(const char *s, sl_scram_secret_t *out) {
    static const char prefix[] = "SCRAM-SHA-256$";
    if (strncmp(s, prefix, sizeof prefix - 1) != 0) return SL_EPROTO;
    s += sizeof prefix - 1;
    char *end;
    long it = strtol(s, &end, 10);
    if (end == s || *end != ':' || it < 1 || it > 100000000) return SL_EPROTO;
    const char *salt = end + 1;
    const char *dollar = strchr(salt, '$');
    if (!dollar) return SL_EPROTO;
    const char *stored = dollar + 1;
    const char *colon = strchr(stored, ':');
    if (!colon) return SL_EPROTO;
    const char *server = colon + 1;
    int sl = sl_base64_decode(salt, (size_t)(dollar - salt), out->salt, sizeof out->salt);
    uint8_t tmp[48];
    if (sl <= 0) return SL_EPROTO;
    out->salt_len = (size_t)sl;
    if (sl_base64_decode(stored, (size_t)(colon - stored), tmp, sizeof tmp) != SL_SCRAM_KEY_LEN)
        return SL_EPROTO;
    memcpy(out->stored_key, tmp, SL_SCRAM_KEY_LEN);
    if (sl_base64_decode(server, strlen(server), tmp, sizeof tmp) != SL_SCRAM_KEY_LEN)
        return SL_EPROTO;
    memcpy(out->server_key, tmp, SL_SCRAM_KEY_LEN);
    out->iterations = (int)it;
    return SL_OK;
}

/* Copies msg into a NUL-terminated string; SL_EPROTO if it holds a NUL or is too long. */
static int to_cstr(const uint8_t *msg, size_t n, char *out, size_t cap) {
    if (n >= cap || memchr(msg, '\0', n)) return SL_EPROTO;
    memcpy(out, msg, n);
    out[n] = '\0';
    return SL_OK;
}

int sl_scram_server_first(sl_scram_server_t *st, const sl_scram_secret_t *secret,
                          const uint8_t *msg, size_t n, const char *server_nonce, char *out,
                          size_t cap) {
    char m[512];
    if (st->state != SL_SCRAM_INIT || to_cstr(msg, n, m, sizeof m) < 0) return SL_EPROTO;
    /* gs2-header: "n,," (no binding) or "y,," (client could, thinks we can't).
     * "p=" asks for channel binding, which we never offer. */
    if ((m[0] != 'n' && m[0] != 'y') || m[1] != ',') return SL_EPROTO;
    const char *authzid_end = strchr(m + 2, ',');
    if (!authzid_end || authzid_end != m + 2) return SL_EPROTO; /* authzid unsupported */
    size_t gs2_len = (size_t)(authzid_end + 1 - m);
    memcpy(st->gs2_header, m, gs2_len);
    st->gs2_header[gs2_len] = '\0';
    const char *bare = m + gs2_len;
    /* bare: n=<user>,r=<nonce>[,ext...] ; PostgreSQL ignores the user name here. */
    if (strncmp(bare, "n=", 2) != 0) return SL_EPROTO;
    const char *r = strstr(bare, ",r=");
    if (!r) return SL_EPROTO;
    r += 3;
    size_t rlen = strcspn(r, ",");
    if (rlen == 0) return SL_EPROTO;
    for (size_t i = 0; i < rlen; i++)
        if (r[i] < 0x21 || r[i] > 0x7e) return SL_EPROTO;
    if (rlen + strlen(server_nonce) + 1 > sizeof st->nonce) return SL_EPROTO;
    snprintf(st->client_first_bare, sizeof st->client_first_bare, "%s", bare);
    snprintf(st->nonce, sizeof st->nonce, "%.*s%s", (int)rlen, r, server_nonce);
    st->secret = *secret;
    char salt64[96];
    if (sl_base64_encode(secret->salt, secret->salt_len, salt64, sizeof salt64) < 0)
        return SL_EPROTO;
    int len = snprintf(st->server_first, sizeof st->server_first, "r=%s,s=%s,i=%d", st->nonce,
                       salt64, secret->iterations);
    if (len < 0 || (size_t)len >= sizeof st->server_first || (size_t)len >= cap) return SL_EPROTO;
    memcpy(out, st->server_first, (size_t)len + 1);
    st->state = SL_SCRAM_SENT_FIRST;
    return len;
}

int sl_scram_server_final(sl_scram_server_t *st, const uint8_t *msg, size_t n, char *out,
                          size_t cap) {
    char m[512];
    if (st->state != SL_SCRAM_SENT_FIRST || to_cstr(msg, n, m, sizeof m) < 0) return SL_EPROTO;
    /* c=<base64 gs2 header>,r=<nonce>[,ext],p=<proof> ; proof is last. */
    if (strncmp(m, "c=", 2) != 0) return SL_EPROTO;
    const char *c = m + 2;
    size_t clen = strcspn(c, ",");
    uint8_t cb[64];
    int cbl = sl_base64_decode(c, clen, cb, sizeof cb);
    if (cbl < 0 || (size_t)cbl != strlen(st->gs2_header) || memcmp(cb, st->gs2_header, (size_t)cbl))
        return SL_EPROTO;
    const char *r = c + clen;
    if (strncmp(r, ",r=", 3) != 0) return SL_EPROTO;
    r += 3;
    size_t rlen = strcspn(r, ",");
    if (rlen != strlen(st->nonce) || memcmp(r, st->nonce, rlen) != 0) return SL_EPROTO;
    const char *p = strstr(r, ",p=");
    if (!p) return SL_EPROTO;
    size_t without_proof = (size_t)(p - m);
    p += 3;
    uint8_t proof[48];
    if (sl_base64_decode(p, strlen(p), proof, sizeof proof) != SL_SCRAM_KEY_LEN) return SL_EPROTO;

    char auth[1600];
    int alen = snprintf(auth, sizeof auth, "%s,%s,%.*s", st->client_first_bare, st->server_first,
                        (int)without_proof, m);
    if (alen < 0 || (size_t)alen >= sizeof auth) return SL_EPROTO;
    uint8_t client_sig[SL_SCRAM_KEY_LEN], stored[SL_SCRAM_KEY_LEN], server_sig[SL_SCRAM_KEY_LEN];
    hmac(st->secret.stored_key, SL_SCRAM_KEY_LEN, auth, (size_t)alen, client_sig);
    for (int i = 0; i < SL_SCRAM_KEY_LEN; i++)
        st->client_key[i] = proof[i] ^ client_sig[i];
    SHA256(st->client_key, SL_SCRAM_KEY_LEN, stored);
    st->state = SL_SCRAM_DONE;
    if (CRYPTO_memcmp(stored, st->secret.stored_key, SL_SCRAM_KEY_LEN) != 0) {
        OPENSSL_cleanse(st->client_key, sizeof st->client_key);
        return SL_EAUTH;
    }
    hmac(st->secret.server_key, SL_SCRAM_KEY_LEN, auth, (size_t)alen, server_sig);
    char sig64[64];
    if (sl_base64_encode(server_sig, sizeof server_sig, sig64, sizeof sig64) < 0) return SL_EPROTO;
    int len = snprintf(out, cap, "v=%s", sig64);
    if (len < 0 || (size_t)len >= cap) return SL_EPROTO;
    return len;
}

/* ---- client side ---- */

int sl_scram_client_first(sl_scram_client_t *st, const char *nonce, char *out, size_t cap) {
    if (strlen(nonce) >= sizeof st->nonce) return SL_EPROTO;
    snprintf(st->nonce, sizeof st->nonce, "%s", nonce);
    /* PostgreSQL takes the user from the startup packet: n= stays empty. */
    snprintf(st->client_first_bare, sizeof st->client_first_bare, "n=,r=%s", nonce);
    int len = snprintf(out, cap, "n,,%s", st->client_first_bare);
    return len < 0 || (size_t)len >= cap ? SL_EPROTO : len;
}

int sl_scram_client_final(sl_scram_client_t *st, const uint8_t *client_key,
                          const uint8_t *server_key, const uint8_t *msg, size_t n, char *out,
                          size_t cap) {
    char first[512];
    if (to_cstr(msg, n, first, sizeof first) < 0 || strncmp(first, "r=", 2) != 0) return SL_EPROTO;
    const char *r = first + 2;
    size_t rlen = strcspn(r, ",");
    size_t mine = strlen(st->nonce);
    /* The server's nonce extends ours. */
    if (rlen <= mine || memcmp(r, st->nonce, mine) != 0) return SL_EPROTO;
    char without_proof[320];
    int wlen = snprintf(without_proof, sizeof without_proof, "c=biws,r=%.*s", (int)rlen, r);
    if (wlen < 0 || (size_t)wlen >= sizeof without_proof) return SL_EPROTO;
    char auth[1200];
    int alen = snprintf(auth, sizeof auth, "%s,%s,%s", st->client_first_bare, first, without_proof);
    if (alen < 0 || (size_t)alen >= sizeof auth) return SL_EPROTO;
    uint8_t stored[SL_SCRAM_KEY_LEN], sig[SL_SCRAM_KEY_LEN], proof[SL_SCRAM_KEY_LEN];
    SHA256(client_key, SL_SCRAM_KEY_LEN, stored);
    hmac(stored, SL_SCRAM_KEY_LEN, auth, (size_t)alen, sig);
    for (int i = 0; i < SL_SCRAM_KEY_LEN; i++)
        proof[i] = client_key[i] ^ sig[i];
    hmac(server_key, SL_SCRAM_KEY_LEN, auth, (size_t)alen, st->server_sig);
    char proof64[64];
    if (sl_base64_encode(proof, sizeof proof, proof64, sizeof proof64) < 0) return SL_EPROTO;
    OPENSSL_cleanse(proof, sizeof proof);
    int len = snprintf(out, cap, "%s,p=%s", without_proof, proof64);
    return len < 0 || (size_t)len >= cap ? SL_EPROTO : len;
}

int sl_scram_client_verify(const sl_scram_client_t *st, const uint8_t *msg, size_t n) {
    char m[256];
    if (to_cstr(msg, n, m, sizeof m) < 0 || strncmp(m, "v=", 2) != 0) return SL_EPROTO;
    uint8_t sig[48];
    int len = sl_base64_decode(m + 2, strcspn(m + 2, ","), sig, sizeof sig);
    if (len != SL_SCRAM_KEY_LEN || CRYPTO_memcmp(sig, st->server_sig, SL_SCRAM_KEY_LEN) != 0)
        return SL_EAUTH;
    return SL_OK;
}
