/* Server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it,
 * without channel binding. Pure: bytes in, bytes out; the caller supplies the
 * random server nonce. Also parses PostgreSQL's SCRAM verifier format. */
#ifndef SLUICE_SCRAM_H
#define SLUICE_SCRAM_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/err.h"

#define SL_SCRAM_KEY_LEN 32
#define SL_SCRAM_DEFAULT_ITERATIONS 4096

typedef struct sl_scram_secret {
    int iterations;
    uint8_t salt[64];
    size_t salt_len; /* bytes */
    uint8_t stored_key[SL_SCRAM_KEY_LEN];
    uint8_t server_key[SL_SCRAM_KEY_LEN];
} sl_scram_secret_t;

/* Parses "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>". */
int sl_scram_parse_secret(const char *s, sl_scram_secret_t *out) SL_MUST_USE;
/* ClientKey and ServerKey of a plaintext password for a salt and iteration
 * count (PBKDF2; expensive: cache them). */
int sl_scram_keys_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                                int iterations, uint8_t client_key[SL_SCRAM_KEY_LEN],
                                uint8_t server_key[SL_SCRAM_KEY_LEN]) SL_MUST_USE;
/* Derives a secret from a plaintext password (PBKDF2; expensive: cache it). */
int sl_scram_secret_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                                  int iterations, sl_scram_secret_t *out) SL_MUST_USE;

enum sl_scram_state { SL_SCRAM_INIT, SL_SCRAM_SENT_FIRST, SL_SCRAM_DONE };

typedef struct sl_scram_server {
    enum sl_scram_state state;
    sl_scram_secret_t secret;
    char gs2_header[16];         /* "n,," or "y,," */
    char client_first_bare[512]; /* copied from the client */
    char server_first[512];      /* what we sent */
    char nonce[256];             /* client nonce + server nonce */
    uint8_t client_key[SL_SCRAM_KEY_LEN]; /* recovered from a valid proof */
} sl_scram_server_t;

/* Reads client-first-message, writes server-first-message into out.
 * Returns its length, or SL_EPROTO for a malformed message or a channel
 * binding request. */
int sl_scram_server_first(sl_scram_server_t *st, const sl_scram_secret_t *secret,
                          const uint8_t *msg, size_t n, const char *server_nonce, char *out,
                          size_t cap) SL_MUST_USE;
/* Reads client-final-message; on a valid proof writes server-final-message
 * ("v=...") into out and returns its length. SL_EAUTH for a wrong proof,
 * SL_EPROTO for a malformed message. The proof check is constant-time. */
int sl_scram_server_final(sl_scram_server_t *st, const uint8_t *msg, size_t n, char *out,
                          size_t cap) SL_MUST_USE;

/* Client side, for logging in to a backend with keys instead of a password:
 * a client's ClientKey (recovered from its proof) and the verifier's
 * ServerKey, as PgBouncer does for SCRAM pass-through. */
typedef struct sl_scram_client {
    char client_first_bare[128];
    char nonce[64];
    uint8_t server_sig[SL_SCRAM_KEY_LEN]; /* what server-final must carry */
} sl_scram_client_t;

/* Writes client-first-message ("n,,n=,r=<nonce>"); returns its length. */
int sl_scram_client_first(sl_scram_client_t *st, const char *nonce, char *out, size_t cap)
    SL_MUST_USE;
/* Reads server-first-message, writes client-final-message with the proof
 * made from client_key; returns its length or SL_EPROTO. */
int sl_scram_client_final(sl_scram_client_t *st, const uint8_t *client_key,
                          const uint8_t *server_key, const uint8_t *msg, size_t n, char *out,
                          size_t cap) SL_MUST_USE;
/* Checks server-final-message: SL_OK, or SL_EAUTH when the server did not
 * prove it knows the verifier. */
int sl_scram_client_verify(const sl_scram_client_t *st, const uint8_t *msg, size_t n) SL_MUST_USE;

/* PostgreSQL's md5 password scheme: hex MD5 of a then b into out (32
 * characters and a NUL), as in "md5" + md5(password + user) and the
 * response md5(that + salt). */
void sl_md5_hex(const void *a, size_t an, const void *b, size_t bn, char out[33]);

/* Base64 helpers (standard alphabet, padded). Return length or -1. */
int sl_base64_encode(const uint8_t *in, size_t n, char *out, size_t cap);
int sl_base64_decode(const char *in, size_t n, uint8_t *out, size_t cap);

#endif
