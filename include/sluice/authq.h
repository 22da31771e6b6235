/* auth_user + auth_query: users not in auth_file are looked up in
 * PostgreSQL itself, through a connection as auth_user, without blocking
 * the loop. Answers are cached for auth_cache_ttl. A user the query does
 * not find (or finds without a password) fails like a wrong password. */
#ifndef SLUICE_AUTHQ_H
#define SLUICE_AUTHQ_H

#include <stdbool.h>

#include "sluice/loop.h"
#include "sluice/userlist.h"

/* A lookup in flight; freed by authq once it reported (or was forgotten). */
typedef struct sl_authq_job sl_authq_job_t;
/* Called when a lookup ends, with the arg given to sl_authq_lookup: secret
 * NULL when the user was not found or the lookup failed (err says why, for
 * the log). The job is freed when it returns: the caller drops its handle.
 * A callback, so that authq (floor 3) never calls up into the session. */
typedef void (*sl_authq_done_cb)(void *arg, sl_user_secret_t *secret, const char *err);

/* The secret for user: auth_file first, then a cached auth_query answer
 * that is still fresh. NULL when neither has it. */
sl_user_secret_t *sl_authq_find(sl_loop_t *w, const char *user);
/* The secret a backend login of user uses: auth_file first, then the
 * latest auth_query answer however old. auth_cache_ttl says how long a
 * client login may trust an answer without asking again; the backend login
 * that follows a client's must not find it gone (auth_cache_ttl = 0 would
 * leave every pooled login of such a user without a password). */
sl_user_secret_t *sl_authq_find_for_backend(sl_loop_t *w, const char *user);
/* Whether a user missing from auth_file is looked up for database db. */
bool sl_authq_enabled(sl_loop_t *w, const char *db);
/* Starts a lookup of user for database db (asker: its log tag);
 * done(arg, ...) is called later (not after sl_authq_forget). NULL if it
 * could not start (done not called). */
sl_authq_job_t *sl_authq_lookup(sl_loop_t *w, const char *asker, const char *db, const char *user,
                                sl_authq_done_cb done, void *arg);
/* The asker is going away: job (NULL: none) reports to nobody. */
void sl_authq_forget(sl_authq_job_t *j);
/* Frees the cache (worker end). */
void sl_authq_free(sl_loop_t *w);

#endif
