/* auth_file: PgBouncer's userlist.txt, lines of `"user" "secret"` where the
 * secret is a plaintext password, "md5<32 hex>" or a SCRAM-SHA-256 verifier.
 * Pure: reads the file, keeps the secrets in memory, never logs them. */
#ifndef SLUICE_USERLIST_H
#define SLUICE_USERLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/err.h"
#include "sluice/scram.h"

enum sl_secret_kind { SL_SECRET_PLAIN, SL_SECRET_MD5, SL_SECRET_SCRAM };

typedef struct sl_user_secret {
    char *name;                /* owned */
    char *secret;              /* owned; never logged */
    enum sl_secret_kind kind;
    sl_scram_secret_t *scram;  /* owned; parsed or derived on first use, NULL until then */
    /* Recovered from a client's valid SCRAM proof against a stored verifier:
     * with the verifier's ServerKey, it logs in to the backend (pass-through). */
    uint8_t client_key[SL_SCRAM_KEY_LEN];
    bool has_client_key;
    /* SHA-256 of the last plaintext password a client proved against the
     * SCRAM verifier (auth_type = plain): the next login with it costs a
     * hash, not 4096 rounds of PBKDF2 on the event loop. */
    uint8_t plain_ok[32];
    bool has_plain_ok;
} sl_user_secret_t;

typedef struct sl_userlist {
    sl_user_secret_t *v; /* owned array */
    int n;
} sl_userlist_t;

/* Parses text; on error writes "name:line: message" and returns SL_ECONFIG. */
int sl_userlist_parse(const char *name, const char *text, sl_userlist_t *out, char *err,
                      size_t errlen) SL_MUST_USE;
int sl_userlist_load(const char *path, sl_userlist_t *out, char *err, size_t errlen) SL_MUST_USE;
void sl_userlist_free(sl_userlist_t *ul);
sl_user_secret_t *sl_userlist_find(const sl_userlist_t *ul, const char *user);
/* What a secret string is: "md5<32 hex>", a SCRAM verifier, or plaintext. */
enum sl_secret_kind sl_secret_classify(const char *s);
/* The SCRAM secret for a user: the verifier as stored, or one derived once
 * from the plaintext password with a random salt. NULL for md5 secrets. */
const sl_scram_secret_t *sl_user_scram(sl_user_secret_t *u);

#endif
