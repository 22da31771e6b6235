/* Client authentication exchanges (trust, any, plain, md5, SCRAM-SHA-256)
 * against the secrets of auth_file. Writes the server's side of each step
 * into the client's output buffer; never logs or echoes a secret. An unknown
 * user goes through the same exchange as a known one and fails the same way,
 * so user names cannot be probed. */
#ifndef SLUICE_AUTH_H
#define SLUICE_AUTH_H

#include <stdbool.h>

#include "sluice/buf.h"
#include "sluice/scram.h"
#include "sluice/userlist.h"
#include "sluice/loop.h"

enum sl_auth_result { SL_AUTH_OK, SL_AUTH_CONTINUE, SL_AUTH_FAIL, SL_AUTH_BAD_MESSAGE };

typedef struct sl_auth {
    int method;             /* enum sl_auth_type actually used */
    sl_user_secret_t *user; /* borrowed from the worker's userlist; NULL if unknown */
    uint8_t md5_salt[4];
    sl_scram_server_t *scram; /* owned during SCRAM */
    sl_scram_secret_t mock;   /* stands in for an unknown user's secret */
} sl_auth_t;

/* Starts authentication of user with method (enum sl_auth_type: trust, any,
 * plain, md5 or scram-sha-256); writes the first request into out. Returns
 * SL_AUTH_OK when no password is needed. */
enum sl_auth_result sl_auth_begin(sl_auth_t *a, sl_loop_t *w, int method, const char *user,
                                  sl_user_secret_t *secret, sl_buf_t *out);
/* Feeds the body of a PasswordMessage ('p'); writes the next request. */
enum sl_auth_result sl_auth_step(sl_auth_t *a, const char *user, const uint8_t *body, size_t n,
                                 sl_buf_t *out);
void sl_auth_clear(sl_auth_t *a);

#endif
