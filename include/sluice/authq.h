/* auth_user + auth_query: users not in auth_file are looked up in
 * PostgreSQL itself, through a connection as auth_user, without blocking
 * the loop. Answers are cached for auth_cache_ttl. A user the query does
 * not find (or finds without a password) fails like a wrong password. */
#ifndef SLUICE_AUTHQ_H
#define SLUICE_AUTHQ_H

#include <stdbool.h>

#include "sluice/userlist.h"
#include "sluice/loop.h"

struct sl_client;
/* Called when a lookup ends: secret NULL when the user was not found or the
 * lookup failed (err says why, for the log). */
typedef void (*sl_authq_done_cb)(struct sl_client *c, sl_user_secret_t *secret, const char *err);

/* The secret for user: auth_file first, then a cached auth_query answer
 * that is still fresh. NULL when neither has it. */
sl_user_secret_t *sl_authq_find(sl_loop_t *w, const char *user);
/* Whether a user missing from auth_file is looked up for database db. */
bool sl_authq_enabled(sl_loop_t *w, const char *db);
/* Starts a lookup for c; done() is called later (not if c closed before:
 * sl_authq_forget). Returns false if it could not start (done not called). */
bool sl_authq_lookup(struct sl_client *c, const char *db, const char *user, sl_authq_done_cb done);
/* c is closing: its lookup, if any, reports to nobody. */
void sl_authq_forget(struct sl_client *c);
/* Frees the cache (worker end). */
void sl_authq_free(sl_loop_t *w);

#endif
