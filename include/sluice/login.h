/* sluice's own backend login, for users whose password sluice does not
 * have in plain text (libpq needs one): md5 with the stored md5 hash, or
 * SCRAM-SHA-256 with the ClientKey a client's own SCRAM proof gave and the
 * verifier's ServerKey (pass-through, as PgBouncer does). A pure state
 * machine: it is fed whole backend messages and writes what to answer. */
#ifndef SLUICE_LOGIN_H
#define SLUICE_LOGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/err.h"
#include "sluice/scram.h"

/* SCRAM keys derived from a plaintext password for one salt and iteration
 * count (PBKDF2 costs milliseconds: derived once, then reused). */
typedef struct sl_login_keys {
    uint8_t salt[64];
    size_t salt_len;                   /* bytes */
    int iterations;                    /* 0: empty */
    uint8_t client_key[SL_SCRAM_KEY_LEN];
    uint8_t server_key[SL_SCRAM_KEY_LEN];
} sl_login_keys_t;

typedef struct sl_login_secret {
    char md5[36];                      /* "md5<32 hex>", or empty */
    bool has_keys;                     /* client_key and server_key are set (any salt) */
    uint8_t client_key[SL_SCRAM_KEY_LEN];
    uint8_t server_key[SL_SCRAM_KEY_LEN];
    char password[256];                /* plaintext (from the config), or empty */
    sl_login_keys_t *cache;            /* borrowed, may be NULL: keys derived from password,
                                          read and filled by the login for the backend's salt */
    bool copy_cache;                   /* *cache does not outlive the call to sl_login_start
                                          (a probe's copy of its pool's keys): the login
                                          keeps a copy of its own and fills that */
} sl_login_secret_t;

enum sl_login_result { SL_LOGIN_MORE, SL_LOGIN_DONE, SL_LOGIN_FAIL };

typedef struct sl_login {
    char user[64];
    sl_login_secret_t secret;
    sl_scram_client_t scram;
    bool authenticated;           /* AuthenticationOk came */
    int derived_iterations;       /* > 0: this login ran PBKDF2 (the cache missed) */
    sl_login_keys_t own_cache;    /* owned: secret.cache points here under copy_cache */
    uint32_t backend_pid, backend_key; /* BackendKeyData, for cancels */
    char error[256];              /* why it failed */
    char code[6];                 /* SQLSTATE of the failure */
} sl_login_t;

/* Writes the StartupMessage for user and database into out (cap bytes);
 * returns its length or SL_ENOSPACE. */
int sl_login_start(sl_login_t *l, const char *user, const char *dbname,
                   const sl_login_secret_t *secret, uint8_t *out, size_t cap);
/* Forgets the exchange so far (a new connection starts over with the same
 * user and secret; the StartupMessage is the caller's to resend). */
void sl_login_restart(sl_login_t *l);
/* Feeds one whole backend message; writes the reply, if any, into out and
 * sets *out_len. DONE at ReadyForQuery; FAIL with error/code set. */
enum sl_login_result sl_login_feed(sl_login_t *l, uint8_t type, const uint8_t *body, size_t n,
                                   uint8_t *out, size_t cap, size_t *out_len);

#endif
