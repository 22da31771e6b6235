/* auth_query lookups on the loop, through a server connection as
 * auth_user, and the cache of their answers. */
#include "sluice/authq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/pool.h"

typedef struct entry {
    sl_list_t node;
    sl_user_secret_t sec; /* name and secret owned */
    int64_t fetched_ms;
} entry_t;

typedef struct sl_authq_job {
    void *arg; /* the asker's, for done; NULL once it left */
    sl_authq_done_cb done;
    char user[64];
} job_t;

static entry_t *cached(sl_loop_t *w, const char *user) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->authq_cache) {
        entry_t *e = sl_container_of(it, entry_t, node);
        if (!strcmp(e->sec.name, user)) return e;
    }
    return NULL;
}

sl_user_secret_t *sl_authq_find(sl_loop_t *w, const char *user) {
    sl_user_secret_t *u = sl_userlist_find(&w->users, user);
    if (u) return u;
    entry_t *e = cached(w, user);
    if (e && sl_now_ms(w) - e->fetched_ms < w->cfg->auth_cache_ttl_ms) return &e->sec;
    return NULL;
}

sl_user_secret_t *sl_authq_find_for_backend(sl_loop_t *w, const char *user) {
    sl_user_secret_t *u = sl_userlist_find(&w->users, user);
    if (u) return u;
    entry_t *e = cached(w, user);
    return e ? &e->sec : NULL;
}

static const char *auth_user_for(sl_loop_t *w, const char *db) {
    const sl_db_cfg_t *d = sl_config_find_db(w->cfg, db);
    if (!d) d = sl_config_find_db(w->cfg, "*");
    const char *u = d ? sl_db_cfg_get(d, "auth_user") : NULL;
    return u && *u ? u : *w->cfg->auth_user ? w->cfg->auth_user : NULL;
}

bool sl_authq_enabled(sl_loop_t *w, const char *db) {
    return auth_user_for(w, db) != NULL;
}

static void entry_free(entry_t *e) {
    free(e->sec.name);
    free(e->sec.secret);
    free(e->sec.scram);
    free(e);
}

/* Records an answer; an earlier one stays alive (a login may be using it). */
static sl_user_secret_t *remember(sl_loop_t *w, const char *user, const char *secret) {
    entry_t *old = cached(w, user);
    if (old && !strcmp(old->sec.secret, secret)) {
        old->fetched_ms = sl_now_ms(w);
        return &old->sec;
    }
    entry_t *e = calloc(1, sizeof *e);
    if (!e || !(e->sec.name = strdup(user)) || !(e->sec.secret = strdup(secret))) {
        if (e) free(e->sec.name);
        free(e);
        return NULL;
    }
    e->sec.kind = sl_secret_classify(secret);
    e->fetched_ms = sl_now_ms(w);
    if (old) {
        sl_list_unlink(&old->node);
        sl_list_push_back(&w->authq_retired, &old->node);
    }
    sl_list_push_back(&w->authq_cache, &e->node);
    return &e->sec;
}

static void finish(job_t *j, sl_user_secret_t *sec, const char *err) {
    if (j->arg) j->done(j->arg, sec, err);
    free(j);
}

static void query_done(sl_server_t *s, const char *err, const char *code) {
    (void)code;
    job_t *j = s->owner;
    sl_user_secret_t *sec = NULL;
    char why[300] = "";
    if (err) {
        snprintf(why, sizeof why, "auth_query failed: %s", err);
    } else if (s->row && s->row_len >= 2 && (s->row[0] << 8 | s->row[1]) >= 2) {
        /* Two columns: the name, then the secret (NULL: no password). */
        const uint8_t *p = s->row + 2, *end = s->row + s->row_len;
        int32_t len = p + 4 <= end ? (int32_t)sl_be32(p) : -1;
        p += 4 + (len > 0 ? len : 0);
        int32_t slen = p + 4 <= end ? (int32_t)sl_be32(p) : -1;
        if (slen > 0 && p + 4 + slen <= end) {
            char *secret = strndup((const char *)p + 4, (size_t)slen);
            if (secret) sec = remember(s->w, j->user, secret);
            free(secret);
            /* The login then fails as for an unknown user; the log says why. */
            if (!sec) snprintf(why, sizeof why, "auth_query: out of memory keeping the answer");
        }
    }
    sl_server_close(s, "auth_query done");
    finish(j, sec, why[0] ? why : NULL);
}

static void connected(sl_server_t *s, const char *err, const char *code) {
    (void)code;
    job_t *j = s->owner;
    if (err) {
        char why[600];
        snprintf(why, sizeof why, "auth_user could not log in: %s", err);
        sl_server_close(s, err);
        finish(j, NULL, why);
        return;
    }
    /* $1 becomes the quoted user name. */
    const char *q = s->w->cfg->auth_query, *dollar = strstr(q, "$1");
    char lit[200], sql[1200];
    if (sl_proto_quote_literal(j->user, lit, sizeof lit) < 0 || !dollar ||
        snprintf(sql, sizeof sql, "%.*s%s%s", (int)(dollar - q), q, lit, dollar + 2) >=
            (int)sizeof sql ||
        sl_server_query(s, sql, query_done) < 0) {
        sl_server_close(s, "auth_query could not be sent");
        finish(j, NULL, "auth_query could not be sent (it needs a $1 for the user name)");
    }
}

sl_authq_job_t *sl_authq_lookup(sl_loop_t *w, const char *asker, const char *db, const char *user,
                                sl_authq_done_cb done, void *arg) {
    const char *au = auth_user_for(w, db);
    if (!au || strlen(user) >= sizeof((job_t *)0)->user) return NULL;
    char err[256];
    const char *qdb = *w->cfg->auth_dbname ? w->cfg->auth_dbname : db;
    sl_pool_t *p = sl_pool_get(w, qdb, au, err, sizeof err);
    if (!p) {
        sl_log_warn(asker, "auth_query: %s", err);
        return NULL;
    }
    job_t *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->arg = arg;
    j->done = done;
    snprintf(j->user, sizeof j->user, "%s", user);
    char tag[160];
    snprintf(tag, sizeof tag, "auth_query db=%s user=%s", qdb, au);
    sl_server_t *s = sl_server_connect(w, j, (const char *const *)p->keys,
                                       (const char *const *)p->vals, tag, connected);
    if (!s) {
        free(j);
        return NULL;
    }
    return j;
}

void sl_authq_forget(sl_authq_job_t *j) {
    if (j) j->arg = NULL;
}

void sl_authq_free(sl_loop_t *w) {
    sl_list_t *lists[] = {&w->authq_cache, &w->authq_retired};
    for (int i = 0; i < 2; i++)
        while (!sl_list_empty(lists[i])) {
            entry_t *e = sl_container_of(sl_list_first(lists[i]), entry_t, node);
            sl_list_unlink(&e->node);
            entry_free(e);
        }
}
