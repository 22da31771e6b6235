/* Pool bookkeeping: which servers exist, which are free, who waits, and when
 * to open or close a backend connection. */
#include "sluice/pool.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/ledger.h"
#include "sluice/log.h"
#include "sluice/tls.h"

static void pool_dispatch(sl_pool_t *p);
static void expire_waiters(sl_pool_t *p, int64_t now);
static void trim_idle(sl_pool_t *p);
static void lp_publish(sl_pool_t *p);
static void lp_balance(sl_pool_t *p, int64_t now);
static bool lp_send(sl_pool_t *p, sl_server_t *s, int loop);
static int lp_wanting(sl_pool_t *p, int64_t my_oldest_ms);

/* With waiters of its own, a loop still hands an idle server to another
 * loop whose oldest waiter has waited this much longer than its own: the
 * queue stays roughly first come, first served across loops without
 * moving a server at every release. */
#define SL_POOL_FAIR_MS 50

/* What a pool does next (hand servers to waiters, open one, fail its
 * waiters) runs from the loop's deferred queue, never on the stack of
 * the release, close or login that made it necessary: those come from
 * other clients' and servers' code, often inside a list walk. */
static void wake_cb(sl_defer_t *d) {
    pool_dispatch(sl_container_of(d, sl_pool_t, wake));
}

static void pool_wake(sl_pool_t *p) {
    sl_defer(&p->w->defer, &p->wake);
}

/* Servers handed out: linked to a client, or running sluice's own query
 * (a reset, a check, a client's parameters) before or after. */
static int n_used(const sl_pool_t *p) {
    return p->servers.n[SL_SV_ACTIVE] + p->servers.n[SL_SV_QUERY];
}

/* Servers logging in. */
static int n_connecting(const sl_pool_t *p) {
    return p->servers.n[SL_SV_RESOLVING] + p->servers.n[SL_SV_CONNECTING];
}

int sl_pool_total(const sl_pool_t *p) {
    return p->servers.n[SL_SV_IDLE] + n_used(p) + n_connecting(p);
}

/* Servers of the pool in every loop: what pool_size caps. */
static int total_all(const sl_pool_t *p) {
    return p->lp ? sl_ledger_read(&p->lp->servers) : sl_pool_total(p);
}

/* Closes every server of p in state st. */
static void close_in(sl_pool_t *p, enum sl_server_state st, const char *why) {
    while (!sl_list_empty(&p->servers.in[st]))
        sl_server_close(sl_container_of(sl_list_first(&p->servers.in[st]), sl_server_t, node), why);
}

/* When the oldest waiter queued (loop clock), 0 when none waits. */
static int64_t oldest_wait_ms(const sl_pool_t *p) {
    sl_list_t *first = sl_list_first(&p->waiting);
    return first ? sl_container_of(first, sl_waiter_t, node)->since_ms : 0;
}

/* Takes the oldest waiter off the queue. */
static sl_waiter_t *pop_waiter(sl_pool_t *p) {
    sl_waiter_t *wt = sl_container_of(sl_list_first(&p->waiting), sl_waiter_t, node);
    sl_list_unlink(&wt->node);
    wt->queued = false;
    p->n_waiting--;
    return wt;
}

/* How long a waiter rides out transient login failures before it gets the
 * latest one: server_connect_timeout (what a single attempt may take
 * anyway), or query_wait_timeout if shorter. 0: no bound. */
static int64_t login_patience_ms(const sl_pool_t *p) {
    int64_t a = p->w->cfg->server_connect_timeout_ms, b = p->query_wait_timeout_ms;
    if (a <= 0) return b > 0 ? b : 0;
    return b > 0 && b < a ? b : a;
}

/* Fails the waiters that have waited through failures for their patience
 * (or all of them: patience 0 means fail at once). Always from the head: a
 * waiter's callback may take others off the queue (a client closing cancels
 * its own waits), so no saved next pointer. */
static void fail_waiters_older(sl_pool_t *p, int64_t patience, int64_t now, const char *err,
                               const char *code) {
    while (p->n_waiting > 0) {
        sl_waiter_t *wt = sl_container_of(sl_list_first(&p->waiting), sl_waiter_t, node);
        if (patience > 0 && now - wt->since_ms < patience) break; /* oldest first */
        pop_waiter(p);
        wt->cb(wt, NULL, err, code);
    }
}

/* Fails every waiter with the pool's last login error. */
static void fail_waiters_login(sl_pool_t *p, int64_t patience, int64_t now) {
    char msg[512];
    snprintf(msg, sizeof msg, SL_POOL_LOGIN_FAILED ": %s", p->last_error);
    fail_waiters_older(p, patience, now, msg, p->last_code);
}

static void retry_cb(uv_timer_t *t) {
    sl_pool_t *p = t->data;
    if (p) pool_wake(p);
}

/* Wakes the pool in ms for its next login attempt. */
static void arm_retry(sl_pool_t *p, int64_t ms) {
    if (!p->retry_timer) {
        p->retry_timer = malloc(sizeof *p->retry_timer);
        if (!p->retry_timer) return; /* the janitor's tick dispatches too */
        uv_timer_init(p->w->loop, p->retry_timer);
        p->retry_timer->data = p;
    }
    uv_timer_start(p->retry_timer, retry_cb, (uint64_t)(ms > 0 ? ms : 1), 0);
}

static void free_handle_cb(uv_handle_t *h) {
    free(h);
}

/* A backend login failed. A transient failure (refused, reset, starting up,
 * shutting down) is retried after a short backoff while waiters wait, up to
 * their patience; a permanent one fails them at once. Either way a waiter
 * only ever gets the error of an attempt that just ended. */
static void login_failed(sl_pool_t *p, sl_server_t *s, const char *err, const char *code) {
    int64_t now = sl_now_ms(p->w);
    bool transient = s->fail_transient;
    /* Attempts started before the last failure ended failed with it (a
     * burst of connects as the backend went down): one attempt. */
    bool same_burst = p->login_fail_ms && s->connect_ms < p->login_fail_ms;
    if (p->fail_attempts == 0) {
        p->streak_start_ms = now;
        p->retry_delay_ms = 0;
        sl_log_warn(p->tag, "backend connection failed: %s (sqlstate %s)%s", err, code,
                    transient ? "; retrying while clients wait" : "");
    } else if (!same_burst) {
        sl_log_debug(p->tag, "backend login attempt %d failed: %s", p->fail_attempts + 1, err);
    }
    if (p->fail_attempts == 0 || !same_burst) {
        p->fail_attempts++;
        int64_t cap = p->w->cfg->server_login_retry_ms;
        if (cap > SL_POOL_RETRY_MAX_MS) cap = SL_POOL_RETRY_MAX_MS;
        if (cap < SL_POOL_RETRY_FIRST_MS) cap = SL_POOL_RETRY_FIRST_MS;
        p->retry_delay_ms = p->retry_delay_ms ? p->retry_delay_ms * 2 : SL_POOL_RETRY_FIRST_MS;
        if (p->retry_delay_ms > cap) p->retry_delay_ms = cap;
    }
    snprintf(p->last_error, sizeof p->last_error, "%s", err);
    snprintf(p->last_code, sizeof p->last_code, "%s", code);
    p->login_fail_ms = now;
    p->fail_permanent = !transient;
    /* The other workers' pools of the entry do not try again either. */
    if (p->lp && !transient) sl_ledger_fail_publish(p->w->ledger, p->lp, err, code, now);
    sl_server_close(s, err);
    /* The waiters learn it, and the next attempt is scheduled, from the
     * deferred queue (pool_dispatch). */
    p->fail_pending = true;
    pool_wake(p);
}

/* The first login after a streak of failures: back to normal, said once. */
static void login_works(sl_pool_t *p) {
    if (p->fail_attempts > 0) {
        int64_t took = sl_now_ms(p->w) - p->streak_start_ms;
        sl_log_info(p->tag, "backend login works again after %d failed attempt%s / %.1f s",
                    p->fail_attempts, p->fail_attempts == 1 ? "" : "s", (double)took / 1000.0);
    }
    p->fail_attempts = 0;
    p->retry_delay_ms = 0;
    p->login_fail_ms = 0;
    p->fail_permanent = false;
    if (p->lp) sl_ledger_fail_clear(p->w->ledger, p->lp);
}

/* With several workers: a permanent login failure another worker's pool
 * met within server_login_retry is this pool's too (its waiters are told
 * it at once, and no login is tried), as with one worker. */
static void lp_learn_failure(sl_pool_t *p, int64_t now) {
    int64_t at;
    if (p->login_fail_ms || !p->lp ||
        !sl_ledger_fail_copy(p->w->ledger, p->lp, p->last_error, sizeof p->last_error, p->last_code,
                             &at) ||
        now - at >= p->w->cfg->server_login_retry_ms)
        return;
    p->login_fail_ms = at > 0 ? at : 1;
    p->fail_permanent = true;
}

static void connect_done(sl_server_t *s, const char *err, const char *code) {
    sl_pool_t *p = s->owner;
    /* Said whether or not this login then succeeds: the keys are cached
     * either way (a restart may cut the login that derived them short). */
    if (s->login && s->login->derived_iterations)
        sl_log_info(p->tag,
                    "SCRAM keys derived from the configured password (PBKDF2, %d iterations, on "
                    "the event loop); later backend logins reuse them",
                    s->login->derived_iterations);
    /* Other loops' logins reuse them instead of deriving their own. */
    if (p->lp && p->scram_keys.iterations)
        sl_ledger_keys_publish(p->w->ledger, p->lp, &p->scram_keys);
    if (err) {
        login_failed(p, s, err, code ? code : "08006");
        return;
    }
    login_works(p);
    if (p->defaults.n == 0)
        for (int i = 0; i < s->reported.n; i++)
            if (sl_params_set(&p->defaults, s->reported.v[i].name, s->reported.v[i].value) < 0)
                break;
    if (p->lp && p->defaults.n > 0) sl_ledger_defaults_publish(p->w->ledger, p->lp, &p->defaults);
    sl_log_debug(s->tag, "backend connection ready");
    s->fresh = true;
    sl_server_set_state(s, SL_SV_IDLE);
    pool_wake(p);
}

/* Servers on one backend (a primary or a replica), by database and/or user. */
static int count_servers(sl_loop_t *w, int backend, const char *db, const char *user) {
    int n = 0;
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->pools) {
        sl_pool_t *q = sl_container_of(it, sl_pool_t, node);
        if (q->backend == backend && (!db || strcmp(q->db_alias, db) == 0) &&
            (!user || strcmp(q->user, user) == 0))
            n += sl_pool_total(q);
    }
    return n;
}

/* pool_size, plus reserve_pool_size once the oldest waiter has waited
 * reserve_pool_timeout. */
static int open_limit(const sl_pool_t *p, int64_t now) {
    int limit = p->size;
    sl_list_t *first = sl_list_first(&p->waiting);
    if (first && p->reserve_size > 0) {
        sl_waiter_t *wt = sl_container_of(first, sl_waiter_t, node);
        if (now - wt->since_ms >= p->w->cfg->reserve_pool_timeout_ms) limit += p->reserve_size;
    }
    return limit;
}

/* One loop alone: its own servers are all there is to count. */
static bool can_open(sl_pool_t *p, int64_t now) {
    if (sl_pool_total(p) >= open_limit(p, now)) return false;
    if (p->max_db && count_servers(p->w, p->backend, p->db_alias, NULL) >= p->max_db) return false;
    if (p->max_user && count_servers(p->w, p->backend, NULL, p->user) >= p->max_user) return false;
    return true;
}

/* At a database or user cap, an idle server of a sibling pool is closed to
 * make room (as PgBouncer does), rather than letting idle servers starve a
 * pool that has waiters. Returns true if one was closed. */
static void lp_evict_remote(sl_pool_t *p, int64_t now, int limit);

static bool evict_idle_sibling(sl_pool_t *p) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &p->w->pools) {
        sl_pool_t *q = sl_container_of(it, sl_pool_t, node);
        if (q == p || q->servers.n[SL_SV_IDLE] == 0) continue;
        bool shares = (p->max_db && strcmp(q->db_alias, p->db_alias) == 0) ||
                      (p->max_user && strcmp(q->user, p->user) == 0);
        if (!shares) continue;
        sl_server_t *s = sl_container_of(q->servers.in[SL_SV_IDLE].prev, sl_server_t, node);
        sl_server_close(s, "making room for another pool under max_db/max_user_connections");
        return true;
    }
    return false;
}

/* Whether a new backend login may start now. After a transient failure:
 * one attempt at a time, once its backoff has run (the retry timer wakes
 * the pool then), so that waiters get the outcome of a fresh attempt, not a
 * cached one. After a permanent failure (a wrong password, no such
 * database): none within server_login_retry, asking again would not cure
 * it. */
static bool login_allowed(sl_pool_t *p, int64_t now) {
    lp_learn_failure(p, now);
    if (!p->login_fail_ms) return true;
    if (p->fail_permanent) return now - p->login_fail_ms >= p->w->cfg->server_login_retry_ms;
    if (n_connecting(p) > 0) return false;
    int64_t at = p->login_fail_ms + p->retry_delay_ms;
    if (now >= at) return true;
    arm_retry(p, at - now);
    return false;
}

static const char *pool_kv(const sl_pool_t *p, const char *key) {
    for (int i = 0; p->keys[i]; i++)
        if (!strcmp(p->keys[i], key)) return p->vals[i];
    return NULL;
}

/* With a plaintext password, sluice's own exchange replaces libpq only for
 * settings it handles as libpq would: one host (name, address or socket
 * directory), port, and the TLS settings own_tls_settings reads. Anything
 * else (hostaddr, several hosts, options, application_name, gssencmode,
 * channel_binding, ...) and passwords beyond printable ASCII (libpq applies
 * SASLprep to them) stay with libpq. */
static bool own_login_fits(const sl_pool_t *p, const char *password) {
    static const char *const handled[] = {"host",
                                          "port",
                                          "dbname",
                                          "user",
                                          "password",
                                          "sslmode",
                                          "sslrootcert",
                                          "sslcert",
                                          "sslkey",
                                          "ssl_min_protocol_version",
                                          "ssl_max_protocol_version",
                                          NULL};
    for (int i = 0; p->keys[i]; i++) {
        int k = 0;
        while (handled[k] && strcmp(handled[k], p->keys[i]) != 0)
            k++;
        if (!handled[k]) return false;
    }
    const char *host = pool_kv(p, "host");
    if (host && strchr(host, ',')) return false;
    size_t len = strlen(password);
    if (len == 0 || len >= sizeof((sl_login_secret_t *)0)->password) return false;
    for (size_t i = 0; i < len; i++)
        if (password[i] < 0x20 || password[i] > 0x7e) return false;
    return true;
}

/* sluice logs in itself: with a configured password (md5 of password and
 * user, or SCRAM keys derived once per salt into cache, which may be NULL),
 * else with the md5 hash from auth_file or the SCRAM keys a client's login
 * revealed. False: libpq logs in (or nothing can). */
static bool own_secret(sl_pool_t *p, sl_login_secret_t *out, sl_login_keys_t *cache) {
    const char *user = pool_kv(p, "user"), *password = pool_kv(p, "password");
    memset(out, 0, sizeof *out);
    if (password) {
        if (!user || !own_login_fits(p, password)) return false;
        snprintf(out->password, sizeof out->password, "%s", password);
        memcpy(out->md5, "md5", 3);
        sl_md5_hex(password, strlen(password), user, strlen(user), out->md5 + 3);
        out->cache = cache;
        return true;
    }
    sl_loop_t *w = p->w;
    sl_user_secret_t *sec = !user            ? NULL
                            : w->find_secret ? w->find_secret(w, user)
                                             : sl_userlist_find(&w->users, user);
    if (!sec) return false;
    if (sec->kind == SL_SECRET_MD5) {
        snprintf(out->md5, sizeof out->md5, "%s", sec->secret);
        return true;
    }
    const sl_scram_secret_t *v = sec->kind == SL_SECRET_SCRAM ? sl_user_scram(sec) : NULL;
    if (!v || !sec->has_client_key) return false;
    out->has_keys = true;
    memcpy(out->client_key, sec->client_key, SL_SCRAM_KEY_LEN);
    memcpy(out->server_key, v->server_key, SL_SCRAM_KEY_LEN);
    return true;
}

/* cache: the pool's derived SCRAM keys, for servers the pool owns (it
 * outlives their login); NULL for others. copy_cache: cache is the caller's
 * temporary, which the login copies. */
static sl_server_t *open_with(sl_pool_t *p, void *owner, const char *tag, sl_server_done_cb done,
                              sl_login_keys_t *cache, bool copy_cache) {
    sl_login_secret_t secret;
    bool own = own_secret(p, &secret, cache);
    secret.copy_cache = copy_cache && secret.cache;
    sl_server_t *s;
    if (own)
        s = sl_server_connect_own(p->w, owner, (const char *const *)p->keys,
                                  (const char *const *)p->vals, tag, &secret, done);
    else
        s = sl_server_connect(p->w, owner, (const char *const *)p->keys,
                              (const char *const *)p->vals, tag, done);
    OPENSSL_cleanse(&secret, sizeof secret);
    return s;
}

sl_server_t *sl_pool_open_probe(sl_pool_t *p, void *owner, const char *tag,
                                sl_server_done_cb done) {
    /* A probe may outlive the pool: its login keeps a copy of the pool's
     * keys (this one is gone once the backend's server-first comes). */
    if (p->lp) sl_ledger_keys_copy(p->w->ledger, p->lp, &p->scram_keys);
    sl_login_keys_t keys = p->scram_keys;
    sl_server_t *s = open_with(p, owner, tag, done, &keys, true);
    OPENSSL_cleanse(&keys, sizeof keys);
    return s;
}

/* A server of the pool in some loop is gone: its places under the caps
 * are free for any loop. */
static void lp_give_slot(sl_ledger_pool_t *lp) {
    sl_ledger_give(&lp->servers);
    sl_ledger_give(&lp->by_db->servers);
    sl_ledger_give(&lp->by_user->servers);
}

static void server_gone(sl_server_t *s) {
    lp_give_slot(s->share);
}

/* Several loops: a place for one more server under pool_size (limit),
 * max_db_connections and max_user_connections, counted over all loops,
 * each taken by compare-and-swap so that loops racing for the last place
 * never overshoot; all or nothing. The db and user counters count even
 * without a cap, so that a cap set by a reload finds them right. */
static bool lp_take_slot(sl_pool_t *p, int limit) {
    sl_ledger_pool_t *lp = p->lp;
    if (limit <= 0 || !sl_ledger_take(&lp->servers, limit)) return false;
    if (!sl_ledger_take(&lp->by_db->servers, p->max_db)) {
        sl_ledger_give(&lp->servers);
        return false;
    }
    if (!sl_ledger_take(&lp->by_user->servers, p->max_user)) {
        sl_ledger_give(&lp->by_db->servers);
        sl_ledger_give(&lp->servers);
        return false;
    }
    return true;
}

/* With several loops the caller holds a place taken by lp_take_slot: the
 * server gives it back when it closes (server_gone). */
static void open_server(sl_pool_t *p) {
    if (p->lp) sl_ledger_keys_copy(p->w->ledger, p->lp, &p->scram_keys);
    sl_server_t *s = open_with(p, p, p->tag, connect_done, &p->scram_keys, false);
    if (p->lp) {
        if (!s || s->state == SL_SV_CLOSING) { /* failed at once, before its hook was set */
            lp_give_slot(p->lp);
            if (!s) return;
        } else {
            s->share = p->lp;
            s->on_close = server_gone;
        }
    }
    if (!s) return;
    sl_server_adopt(s, &p->servers);
}

/* Opens a server if the caps leave room (limit: the pool's own cap, from
 * open_limit or min_pool_size); false when one is reached. */
static bool open_if_room(sl_pool_t *p, int64_t now, int limit) {
    if (p->lp ? !lp_take_slot(p, limit) : !can_open(p, now) || sl_pool_total(p) >= limit)
        return false;
    open_server(p);
    return true;
}

static void check_done(sl_server_t *s, const char *err, const char *code) {
    (void)code;
    sl_pool_t *p = s->owner;
    p->n_checking--;
    if (err || s->close_needed) {
        sl_server_close(s, err ? "server_check_query failed" : "close requested");
    } else {
        s->fresh = true;
        sl_server_set_state(s, SL_SV_IDLE);
        s->idle_since_ms = sl_now_ms(p->w);
    }
    pool_wake(p);
}

static void pool_dispatch(sl_pool_t *p) {
    /* Paused: waiters stay queued; servers close as they come back. */
    if (p->paused) {
        close_in(p, SL_SV_IDLE, "database paused");
        if (p->lp) lp_publish(p);
        return;
    }
    int64_t now = sl_now_ms(p->w);
    if (p->fail_pending) {
        p->fail_pending = false;
        /* With no working server to wait for, waiting would only hang; a
         * transient failure is ridden out up to the waiters' patience. */
        bool ride = !p->fail_permanent && !p->fast_fail;
        if (p->servers.n[SL_SV_IDLE] + n_used(p) == 0)
            fail_waiters_login(p, ride ? login_patience_ms(p) : 0, now);
    }
    while (p->n_waiting > 0) {
        sl_list_t *first = sl_list_first(&p->servers.in[SL_SV_IDLE]);
        if (first) {
            sl_server_t *s = sl_container_of(first, sl_server_t, node);
            int64_t delay = p->w->cfg->server_check_delay_ms;
            const char *check = sl_config_check_query(p->w->cfg);
            if (!s->fresh && now - s->idle_since_ms >= delay && check) {
                p->n_checking++;
                sl_log_debug(s->tag, "server_check_query (%s) before reuse: idle %lld ms",
                             *check ? "its query" : "an empty query",
                             (long long)(now - s->idle_since_ms));
                if (sl_server_query(s, check, check_done) < 0) {
                    p->n_checking--;
                    sl_server_close(s, "out of memory");
                }
                continue;
            }
            /* Several loops: one whose clients have waited much longer
             * gets it instead. */
            int other;
            if (p->lp && (other = lp_wanting(p, oldest_wait_ms(p))) >= 0 && lp_send(p, s, other))
                continue;
            sl_waiter_t *wt = pop_waiter(p);
            /* Handed out: ACTIVE at once, so that it is never on the idle
             * list while a client holds it. The poll keeps watching: the
             * waiter links it (or runs a SET first, QUERY) before
             * returning, and stopping and restarting the poll would cost
             * two epoll_ctl calls per transaction. */
            sl_server_set_state(s, SL_SV_ACTIVE);
            wt->cb(wt, s, NULL, NULL);
            continue;
        }
        /* Servers connecting or being checked will serve the first waiters. */
        if (n_connecting(p) + p->n_checking >= p->n_waiting) break;
        if (!login_allowed(p, now)) {
            /* Waiters with no working server to wait for are told a
             * permanent failure at once. */
            if (p->fail_permanent && p->servers.n[SL_SV_IDLE] + n_used(p) == 0)
                fail_waiters_login(p, 0, now);
            break;
        }
        int limit = open_limit(p, now);
        if (!open_if_room(p, now, limit) &&
            !(evict_idle_sibling(p) && open_if_room(p, now, limit))) {
            if (p->lp) lp_evict_remote(p, now, limit);
            break;
        }
    }
    if (p->lp) lp_balance(p, now);
}

void sl_pool_request(sl_pool_t *p, sl_waiter_t *wt) {
    wt->since_ms = sl_now_ms(p->w);
    wt->queued = true;
    sl_list_push_back(&p->waiting, &wt->node);
    p->n_waiting++;
    pool_wake(p);
}

void sl_pool_cancel(sl_pool_t *p, sl_waiter_t *wt) {
    if (!wt->queued) return;
    sl_list_unlink(&wt->node);
    wt->queued = false;
    p->n_waiting--;
    if (p->lp) lp_publish(p); /* no server is to come here for it */
}

static void reset_done(sl_server_t *s, const char *err, const char *code) {
    (void)code;
    sl_pool_t *p = s->owner;
    if (err || s->tx_status != 'I' || s->close_needed) {
        sl_server_close(s, err               ? err
                           : s->close_needed ? "close requested"
                                             : "reset left a transaction open");
        pool_wake(p);
        return;
    }
    /* DISCARD ALL / RESET ALL returned every parameter to its login value. */
    s->reset_needed = false;
    sl_params_clear(&s->applied);
    s->params_fp = 0;
    sl_server_set_state(s, SL_SV_IDLE);
    pool_wake(p);
}

void sl_pool_release(sl_server_t *s, bool clean) {
    sl_pool_t *p = s->owner;
    s->fresh = false;
    sl_loop_t *w = p->w;
    s->link = NULL;
    s->io = NULL;
    int64_t now = sl_now_ms(w);
    const char *why =
        !clean            ? "released dirty (transaction or message unfinished)"
        : s->close_needed ? "close requested"
        : s->cancel_sent
            ? "a cancel was sent to it (so that it cannot reach the next client's query)"
        : p->paused ? "database paused"
        : w->cfg->server_lifetime_ms > 0 && now - s->connect_ms >= w->cfg->server_lifetime_ms
            ? "server_lifetime reached"
            : NULL;
    if (why) {
        sl_server_close(s, why);
        pool_wake(p);
        return;
    }
    /* State a client left (temp tables, LISTEN, locks...) goes whatever
     * server_reset_query says: DISCARD ALL is what clears all of it. */
    const char *reset = s->reset_needed ? "DISCARD ALL"
                        : p->mode == SL_POOL_SESSION || w->cfg->server_reset_query_always
                            ? w->cfg->server_reset_query
                            : "";
    if (*reset) {
        sl_stmt_cache_clear(&s->stmts, &w->stmts); /* DISCARD ALL drops them */
        if (sl_server_query(s, reset, reset_done) < 0) sl_server_close(s, "out of memory");
        return;
    }
    sl_server_set_state(s, SL_SV_IDLE);
    pool_wake(p);
}

static void free_kv(char **keys, char **vals) {
    for (int i = 0; keys && keys[i]; i++)
        free(keys[i]), free(vals[i]);
    free(keys), free(vals);
}

static sl_retired_stats_t *retired_of(const sl_loop_t *l, const char *db) {
    for (sl_list_t *it = l->retired_stats.next; it != &l->retired_stats; it = it->next) {
        sl_retired_stats_t *r = sl_container_of(it, sl_retired_stats_t, node);
        if (strcmp(r->db, db) == 0) return r;
    }
    return NULL;
}

const sl_pool_stats_t *sl_pool_retired_stats(const sl_loop_t *l, const char *db) {
    const sl_retired_stats_t *r = retired_of(l, db);
    return r ? &r->stats : NULL;
}

/* p (already off the loop's list) is about to be freed: what it counted
 * stays with its database while that has other pools; with the last one,
 * the database's retired counters go too (it leaves SHOW STATS and
 * /metrics whole, so nothing seen there goes back). */
static void retire_stats(sl_pool_t *p) {
    sl_loop_t *l = p->w;
    bool others = false;
    for (sl_list_t *it = l->pools.next; it != &l->pools && !others; it = it->next)
        others = strcmp(sl_container_of(it, sl_pool_t, node)->db_alias, p->db_alias) == 0;
    /* The database stays listed while another worker has a pool of it (its
     * rows sum every loop's pools and retired counters): p's entry holds
     * one reference still, so more means another pool, or a server of one
     * on its way between loops (kept a little longer then: harmless). */
    if (!others && p->lp) others = sl_ledger_db_refs(l->ledger, p->db_alias) > 1;
    sl_retired_stats_t *r = retired_of(l, p->db_alias);
    if (!others) {
        if (r) {
            sl_list_unlink(&r->node);
            free(r->db);
            free(r);
        }
        return;
    }
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r || !(r->db = strdup(p->db_alias))) {
            free(r);
            sl_log_warn(p->tag, "out of memory keeping a freed pool's counters: the "
                                "database's totals go back by them");
            return;
        }
        sl_list_push_back(&l->retired_stats, &r->node);
    }
    sl_pool_stats_add(&r->stats, &p->stats);
}

void sl_pool_free_retired(sl_loop_t *l) {
    while (!sl_list_empty(&l->retired_stats)) {
        sl_retired_stats_t *r =
            sl_container_of(sl_list_first(&l->retired_stats), sl_retired_stats_t, node);
        sl_list_unlink(&r->node);
        free(r->db);
        free(r);
    }
}

static void pool_free(sl_pool_t *p) {
    sl_defer_cancel(&p->wake);
    if (p->lp) {
        /* Its slot says nothing waits and nothing is idle here now. */
        p->n_waiting = 0;
        lp_publish(p);
        sl_ledger_pool_put(p->w->ledger, p->lp);
    }
    OPENSSL_cleanse(&p->scram_keys, sizeof p->scram_keys);
    if (p->retry_timer) {
        p->retry_timer->data = NULL;
        uv_close((uv_handle_t *)p->retry_timer, free_handle_cb);
    }
    free_kv(p->keys, p->vals);
    free(p->db_alias), free(p->user);
    sl_params_clear(&p->defaults);
    free(p);
}

/* Servers on the ledger's moving list (between two loops) of a database
 * or a pool entry: counted, and with mark marked to close when they land. */
typedef struct moving_walk {
    const char *db;                /* NULL: any */
    const sl_ledger_pool_t *entry; /* NULL: any */
    bool mark;                     /* mark each to close when it lands */
    bool marked_only;              /* count only those marked */
    int n;
} moving_walk_t;

static void moving_one(sl_ledger_pool_t *e, sl_list_t *node, void *arg) {
    moving_walk_t *mw = arg;
    if ((mw->entry && e != mw->entry) || (mw->db && strcmp(e->db, mw->db) != 0)) return;
    sl_server_t *s = sl_container_of(node, sl_server_t, node);
    if (mw->mark) s->close_needed = true;
    if (!mw->marked_only || s->close_needed) mw->n++;
}

static bool same_kv(char **k1, char **v1, char **k2, char **v2) {
    int i = 0;
    for (; k1[i] && k2[i]; i++)
        if (strcmp(k1[i], k2[i]) || strcmp(v1[i], v2[i])) return false;
    return !k1[i] && !k2[i];
}

/* Takes the pool's limits and libpq parameters from the current config. If
 * the connection parameters changed, servers made with the old ones are
 * replaced: idle and connecting ones now, busy ones when released. */
static int configure(sl_pool_t *p) {
    const sl_config_t *cfg = p->w->cfg;
    bool fallback;
    const sl_db_cfg_t *db = sl_config_serving_db(cfg, p->db_alias, &fallback);
    if (!db) return SL_ECONFIG;
    /* PgBouncer's precedence: a user's pool_mode, pool_size and
     * reserve_pool_size win over the database's. */
    sl_limits_t lim;
    sl_config_limits(cfg, db, p->user, &lim);
    p->mode = lim.pool_mode;
    p->size = lim.pool_size;
    p->min_size = lim.min_pool_size;
    p->reserve_size = lim.reserve_pool_size;
    p->max_db = lim.max_db_connections;
    p->max_user = lim.max_user_connections;
    p->max_db_clients = lim.max_db_client_connections;
    p->max_user_clients = lim.max_user_client_connections;
    p->query_wait_timeout_ms = lim.query_wait_timeout_ms;
    p->query_timeout_ms = lim.query_timeout_ms;
    p->idle_transaction_timeout_ms = lim.idle_transaction_timeout_ms;
    p->transaction_timeout_ms = lim.transaction_timeout_ms;
    p->client_idle_timeout_ms = lim.client_idle_timeout_ms;
    p->fast_fail = db->nreplicas > 0;

    char **keys = calloc((size_t)db->nkv + 10, sizeof(char *));
    char **vals = calloc((size_t)db->nkv + 10, sizeof(char *));
    int n = 0, rc = keys && vals ? SL_OK : SL_ENOMEM;
#define ADD(k, v)                                                                                  \
    do {                                                                                           \
        keys[n] = strdup(k), vals[n] = strdup(v);                                                  \
        if (!keys[n] || !vals[n]) rc = SL_ENOMEM;                                                  \
        n++;                                                                                       \
    } while (0)
    const char *force_user = sl_db_cfg_get(db, "user");
    const char *be_user = force_user ? force_user : p->user;
    if (p->backend > db->nreplicas) {
        free_kv(keys, vals);
        return SL_ECONFIG; /* the replica left the list: keep serving as before */
    }
    /* A replica's pool takes everything from the entry but the address. */
    const sl_replica_cfg_t *rep = p->backend > 0 ? &db->replicas[p->backend - 1] : NULL;
    for (int i = 0; i < db->nkv && rc == SL_OK; i++)
        if (strcmp(db->keys[i], "dbname") != 0 && strcmp(db->keys[i], "user") != 0 &&
            !(rep && (!strcmp(db->keys[i], "host") || !strcmp(db->keys[i], "hostaddr") ||
                      !strcmp(db->keys[i], "port"))))
            ADD(db->keys[i], db->vals[i]);
    if (rep && rc == SL_OK) {
        char port[8];
        snprintf(port, sizeof port, "%d", rep->port);
        ADD("host", rep->host);
        if (rc == SL_OK) ADD("port", port);
    }
    const char *target = sl_db_cfg_get(db, "dbname");
    if (rc == SL_OK) ADD("dbname", target && !fallback ? target : p->db_alias);
    if (rc == SL_OK) ADD("user", be_user);
    /* Backend TLS: the server_tls_* settings, unless the database's own
     * connection string says otherwise. */
    int lo, hi;
    if (sl_tls_parse_protocols(cfg->server_tls_protocols, &lo, &hi) < 0) lo = hi = 0;
    const char *tls[][2] = {
        {"sslmode", sl_tls_mode_names[cfg->server_tls_sslmode]},
        {"sslrootcert", cfg->server_tls_ca_file},
        {"sslcert", cfg->server_tls_cert_file},
        {"sslkey", cfg->server_tls_key_file},
        {"ssl_min_protocol_version", lo ? sl_tls_version_name(lo) : ""},
        {"ssl_max_protocol_version", hi ? sl_tls_version_name(hi) : ""},
    };
    for (size_t i = 0; i < sizeof tls / sizeof *tls && rc == SL_OK; i++)
        if (*tls[i][1] && !sl_db_cfg_get(db, tls[i][0])) ADD(tls[i][0], tls[i][1]);
    if (rc == SL_OK && !sl_db_cfg_get(db, "password")) {
        /* The backend password comes from auth_file when it is plaintext. */
        sl_user_secret_t *sec = sl_userlist_find(&p->w->users, be_user);
        if (sec && sec->kind == SL_SECRET_PLAIN) ADD("password", sec->secret);
    }
#undef ADD
    if (rc != SL_OK) {
        free_kv(keys, vals);
        return rc;
    }
    if (p->keys && same_kv(p->keys, p->vals, keys, vals)) {
        free_kv(keys, vals);
        return SL_OK;
    }
    if (p->keys) {
        sl_log_info(p->tag, "connection settings changed: replacing its servers");
        /* Resolving servers borrow the old arrays: close them before freeing. */
        close_in(p, SL_SV_RESOLVING, "connection settings changed");
        close_in(p, SL_SV_CONNECTING, "connection settings changed");
        close_in(p, SL_SV_IDLE, "connection settings changed");
        sl_list_t *it, *tmp;
        sl_list_each(it, tmp, &p->servers.in[SL_SV_ACTIVE]) sl_container_of(it, sl_server_t, node)
            ->close_needed = true;
        sl_list_each(it, tmp, &p->servers.in[SL_SV_QUERY]) sl_container_of(it, sl_server_t, node)
            ->close_needed = true;
        free_kv(p->keys, p->vals);
        sl_params_clear(&p->defaults);
        /* The password may have changed: derive again. */
        OPENSSL_cleanse(&p->scram_keys, sizeof p->scram_keys);
        if (p->lp) {
            sl_ledger_pool_forget(p->w->ledger, p->lp);
            /* One on its way between two loops logged in with the old
             * settings too (a reload runs with every other loop frozen). */
            sl_ledger_moving_walk(p->w->ledger, moving_one,
                                  &(moving_walk_t){.entry = p->lp, .mark = true});
        }
    }
    p->keys = keys;
    p->vals = vals;
    return SL_OK;
}

sl_pool_t *sl_pool_get(sl_loop_t *w, const char *dbname, const char *user, char *err,
                       size_t errlen) {
    return sl_pool_get_at(w, dbname, user, 0, err, errlen);
}

sl_pool_t *sl_pool_get_at(sl_loop_t *w, const char *dbname, const char *user, int backend,
                          char *err, size_t errlen) {
    bool fallback;
    if (!sl_config_serving_db(w->cfg, dbname, &fallback)) {
        snprintf(err, errlen, "no such database: %s", dbname);
        return NULL;
    }
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->pools) {
        sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        if (p->backend == backend && strcmp(p->db_alias, dbname) == 0 && strcmp(p->user, user) == 0)
            return p;
    }
    sl_pool_t *p = calloc(1, sizeof *p);
    if (p) {
        p->w = w;
        p->db_alias = strdup(dbname);
        p->user = strdup(user);
        sl_server_lists_init(&p->servers);
        sl_list_init(&p->waiting);
        sl_defer_init(&p->wake, wake_cb);
        p->backend = backend;
        if (backend)
            snprintf(p->tag, sizeof p->tag, "db=%s user=%s replica=%d", dbname, user, backend);
        else
            snprintf(p->tag, sizeof p->tag, "db=%s user=%s", dbname, user);
        p->automatic = fallback;
        p->unused_since_ms = sl_now_ms(w);
        p->paused = w->db_paused && w->db_paused(w, dbname);
        /* Found by name once, here; counted lock-free from then on. */
        if (w->ledger && sl_ledger_nloops(w->ledger) > 1 &&
            !(p->lp = sl_ledger_pool_get(w->ledger, dbname, user, backend))) {
            pool_free(p);
            p = NULL;
        }
    }
    if (!p || !p->db_alias || !p->user || configure(p) != SL_OK) {
        if (p) pool_free(p);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    sl_list_push_back(&w->pools, &p->node);
    sl_log_debug(p->tag, "pool created mode=%s size=%d", sl_pool_mode_names[p->mode], p->size);
    return p;
}

/* Through their own pools: a replica's pool is never a client's own. */
int sl_pool_count_logins(sl_loop_t *w, const char *db, const char *user) {
    int n = 0;
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->pools) {
        sl_pool_t *q = sl_container_of(it, sl_pool_t, node);
        if ((!db || strcmp(q->db_alias, db) == 0) && (!user || strcmp(q->user, user) == 0))
            n += q->n_logins;
    }
    return n;
}

/* Several loops: the client caps count the logins of all of them, each
 * taken by compare-and-swap. */
static const char *lp_admit(sl_pool_t *p, char *detail, size_t cap) {
    sl_ledger_count_t *db = p->lp->by_db, *user = p->lp->by_user;
    if (!sl_ledger_take(&db->logins, p->max_db_clients)) {
        snprintf(detail, cap, "database %s has %d clients, max_db_client_connections = %d",
                 p->db_alias, sl_ledger_read(&db->logins), p->max_db_clients);
        return "client connections exceeded (max_db_client_connections)";
    }
    if (!sl_ledger_take(&user->logins, p->max_user_clients)) {
        sl_ledger_give(&db->logins);
        snprintf(detail, cap, "user %s has %d clients, max_user_client_connections = %d", p->user,
                 sl_ledger_read(&user->logins), p->max_user_clients);
        return "client connections exceeded (max_user_client_connections)";
    }
    p->n_logins++;
    return NULL;
}

const char *sl_pool_admit(sl_pool_t *p, char *detail, size_t cap) {
    if (p->lp) return lp_admit(p, detail, cap);
    int n;
    if (p->max_db_clients > 0 &&
        (n = sl_pool_count_logins(p->w, p->db_alias, NULL)) >= p->max_db_clients) {
        snprintf(detail, cap, "database %s has %d clients, max_db_client_connections = %d",
                 p->db_alias, n, p->max_db_clients);
        return "client connections exceeded (max_db_client_connections)";
    }
    if (p->max_user_clients > 0 &&
        (n = sl_pool_count_logins(p->w, NULL, p->user)) >= p->max_user_clients) {
        snprintf(detail, cap, "user %s has %d clients, max_user_client_connections = %d", p->user,
                 n, p->max_user_clients);
        return "client connections exceeded (max_user_client_connections)";
    }
    p->n_logins++;
    return NULL;
}

void sl_pool_leave(sl_pool_t *p) {
    p->n_logins--;
    if (p->lp) {
        sl_ledger_give(&p->lp->by_db->logins);
        sl_ledger_give(&p->lp->by_user->logins);
    }
}

void sl_pool_ref(sl_pool_t *p) {
    p->n_clients++;
}

void sl_pool_unref(sl_pool_t *p) {
    if (--p->n_clients == 0) p->unused_since_ms = sl_now_ms(p->w);
}

void sl_pool_reconfigure_all(sl_loop_t *w) {
    int64_t now = sl_now_ms(w);
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->pools) {
        sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        /* A database removed from the config keeps serving its clients; new
         * logins to it are refused by sl_pool_get. */
        if (configure(p) != SL_OK) continue;
        /* The new limits apply to the clients waiting now, not at their
         * next turn: a shorter query_wait_timeout fails them at once, a
         * larger pool opens servers for them (pool_dispatch). */
        expire_waiters(p, now);
        trim_idle(p);
        pool_wake(p);
    }
}

void sl_pool_backend_up(sl_loop_t *w, const char *db, int backend) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->pools) {
        sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        if (p->backend == backend && strcmp(p->db_alias, db) == 0) {
            /* The next request tries at once; the streak stays for its log line. */
            p->login_fail_ms = 0;
            p->fail_permanent = false;
            /* And the failure another worker recorded goes too: otherwise
             * the next dispatch learns it again (lp_learn_failure) and the
             * backend stays refused for the rest of server_login_retry
             * although its health checks pass. */
            if (p->lp) sl_ledger_fail_clear(w->ledger, p->lp);
        }
    }
}

void sl_pool_tick(sl_pool_t *p, int64_t now) {
    const sl_config_t *cfg = p->w->cfg;
    /* A pool made for a database name through '*' goes away when unused,
     * so arbitrary names cannot make pools pile up. */
    if (p->automatic && p->n_clients == 0 && p->n_waiting == 0 && n_used(p) == 0 &&
        n_connecting(p) == 0 && cfg->autodb_idle_timeout_ms > 0 &&
        now - p->unused_since_ms >= cfg->autodb_idle_timeout_ms &&
        (!p->w->release_db || p->w->release_db(p->w, p->db_alias, now))) {
        close_in(p, SL_SV_IDLE, "autodb_idle_timeout reached");
        sl_log_info(p->tag, "pool removed after autodb_idle_timeout");
        sl_list_unlink(&p->node);
        retire_stats(p);
        pool_free(p);
        return;
    }
    /* Idle servers past their idle timeout or lifetime. */
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &p->servers.in[SL_SV_IDLE]) {
        sl_server_t *s = sl_container_of(it, sl_server_t, node);
        if (cfg->server_lifetime_ms > 0 && now - s->connect_ms >= cfg->server_lifetime_ms)
            sl_server_close(s, "server_lifetime reached");
        else if (cfg->server_idle_timeout_ms > 0 &&
                 now - s->idle_since_ms >= cfg->server_idle_timeout_ms &&
                 total_all(p) > p->min_size)
            sl_server_close(s, "server_idle_timeout reached");
    }
    expire_waiters(p, now);
    trim_idle(p);
    /* min_pool_size: while backend logins fail, one attempt at a time
     * after the backoff (transient) or none within server_login_retry.
     * With several loops it counts the servers of all of them (any loop
     * that has the pool tops it up, never past min_pool_size: the place
     * is taken by compare-and-swap); idle ones move where clients wait. */
    int warm = p->min_size < p->size ? p->min_size : p->size;
    while (!p->paused && total_all(p) < p->min_size && login_allowed(p, now) &&
           open_if_room(p, now, warm))
        ;
    pool_wake(p);
}

/* Waiters past query_wait_timeout get the error, oldest first, always from
 * the head (see fail_waiters_older). */
static void expire_waiters(sl_pool_t *p, int64_t now) {
    while (p->query_wait_timeout_ms > 0 && p->n_waiting > 0) {
        sl_waiter_t *wt = sl_container_of(sl_list_first(&p->waiting), sl_waiter_t, node);
        if (now - wt->since_ms < p->query_wait_timeout_ms) break;
        pop_waiter(p);
        if (p->login_fail_ms && p->servers.n[SL_SV_IDLE] + n_used(p) == 0) {
            /* Waiting for a backend that does not take logins yet. */
            char msg[600];
            snprintf(msg, sizeof msg,
                     SL_POOL_LOGIN_FAILED ": %s (query_wait_timeout reached while retrying)",
                     p->last_error);
            wt->cb(wt, NULL, msg, p->last_code);
            continue;
        }
        wt->cb(wt, NULL,
               p->paused ? "query_wait_timeout: the database is paused (PAUSE) and was not "
                           "resumed in time; RESUME it, or raise query_wait_timeout before "
                           "pausing"
                         : "query_wait_timeout: no server connection became free in time; "
                           "raise pool_size or query_wait_timeout",
               "08P01");
    }
}

/* Idle servers beyond pool_size + reserve_pool_size (a reload made the pool
 * smaller) are closed, as PgBouncer's check_pool_size does; busy ones
 * stay until released. */
static void trim_idle(sl_pool_t *p) {
    while (total_all(p) > p->size + p->reserve_size && p->servers.n[SL_SV_IDLE] > 0) {
        /* The least recently used first: idle servers are most recent first. */
        sl_list_t *last = p->servers.in[SL_SV_IDLE].prev;
        sl_server_close(sl_container_of(last, sl_server_t, node), "pool_size lowered");
    }
}

void sl_pool_close_all(sl_loop_t *w) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->pools) {
        sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        for (int st = 0; st < SL_SV_CLOSING; st++)
            close_in(p, (enum sl_server_state)st, "shutting down");
        sl_list_unlink(&p->node);
        pool_free(p);
    }
    sl_pool_free_retired(w);
}

void sl_pool_set_paused(sl_pool_t *p, bool paused) {
    p->paused = paused;
    if (paused) {
        close_in(p, SL_SV_RESOLVING, "database paused");
        close_in(p, SL_SV_CONNECTING, "database paused");
    }
    pool_wake(p);
}

/* Marks every server of state st to be closed when it is next released. */
static void mark_close_needed(sl_pool_t *p, enum sl_server_state st) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &p->servers.in[st]) sl_container_of(it, sl_server_t, node)->close_needed =
        true;
}

void sl_pool_reconnect(sl_pool_t *p) {
    close_in(p, SL_SV_RESOLVING, "reconnect requested");
    close_in(p, SL_SV_CONNECTING, "reconnect requested");
    close_in(p, SL_SV_IDLE, "reconnect requested");
    mark_close_needed(p, SL_SV_ACTIVE);
    mark_close_needed(p, SL_SV_QUERY);
    pool_wake(p);
}

void sl_pool_close_unlinked(sl_pool_t *p, const char *why) {
    for (int st = 0; st < SL_SV_CLOSING; st++) {
        sl_list_t *it, *tmp;
        sl_list_each(it, tmp, &p->servers.in[st]) {
            sl_server_t *s = sl_container_of(it, sl_server_t, node);
            if (!s->link) sl_server_close(s, why);
        }
    }
    pool_wake(p);
}

static int walk_moving(sl_loop_t *l, moving_walk_t *mw) {
    if (l->ledger) sl_ledger_moving_walk(l->ledger, moving_one, mw);
    return mw->n;
}

int sl_pool_mark_moving(sl_loop_t *l, const char *db) {
    return walk_moving(l, &(moving_walk_t){.db = db, .mark = true});
}

int sl_pool_count_moving(sl_loop_t *l, const char *db, bool marked_only) {
    return walk_moving(l, &(moving_walk_t){.db = db, .marked_only = marked_only});
}

int sl_pool_close_pending(const sl_pool_t *p) {
    int n = 0;
    for (int st = 0; st < SL_SV_CLOSING; st++)
        for (const sl_list_t *it = p->servers.in[st].next; it != &p->servers.in[st]; it = it->next)
            n += sl_container_of(it, sl_server_t, node)->close_needed;
    return n;
}

/* ---- several loops: the shared ledger (ledger.h) ---- */

static inline sl_ledger_slot_t *my_slot(const sl_pool_t *p) {
    return &p->lp->slot[p->w->worker_index];
}

/* Tells the other loops how many clients wait here (and since when) and
 * how many servers are idle, written only when it changed. Servers that
 * arrived since the last time stop counting as on their way here now,
 * together with the waiters they served, so that no other loop sees a
 * waiter both unserved and with nothing coming. */
static void lp_publish(sl_pool_t *p) {
    sl_ledger_slot_t *me = my_slot(p);
    int idle = p->servers.n[SL_SV_IDLE];
    int64_t oldest = p->n_waiting > 0 ? oldest_wait_ms(p) : 0;
    if (p->n_waiting != p->lp_waiting)
        atomic_store_explicit(&me->waiting, p->lp_waiting = p->n_waiting, memory_order_release);
    if (idle != p->lp_idle)
        atomic_store_explicit(&me->idle, p->lp_idle = idle, memory_order_release);
    if (oldest != p->lp_oldest_ms)
        atomic_store_explicit(&me->oldest_ms, p->lp_oldest_ms = oldest, memory_order_release);
    if (p->lp_arrived) {
        atomic_fetch_sub_explicit(&me->inflight, p->lp_arrived, memory_order_acq_rel);
        p->lp_arrived = 0;
    }
}

/* Another loop whose waiters are not all covered by servers on their way
 * there, or -1. my_oldest_ms: this loop has waiters too, the oldest queued
 * then; only a loop whose oldest waiter queued SL_POOL_FAIR_MS before it
 * counts (0: any). */
static int lp_wanting(sl_pool_t *p, int64_t my_oldest_ms) {
    int n = p->lp->nloops, me = p->w->worker_index;
    for (int k = 1; k < n; k++) {
        int i = (me + k) % n;
        sl_ledger_slot_t *o = &p->lp->slot[i];
        int want = atomic_load_explicit(&o->waiting, memory_order_acquire) -
                   atomic_load_explicit(&o->inflight, memory_order_acquire);
        if (want <= 0) continue;
        if (my_oldest_ms) {
            int64_t t = atomic_load_explicit(&o->oldest_ms, memory_order_acquire);
            if (!t || t > my_oldest_ms - SL_POOL_FAIR_MS) continue;
        }
        return i;
    }
    return -1;
}

static sl_pool_t *pool_of(sl_loop_t *l, const sl_ledger_pool_t *lp) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &l->pools) {
        sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        if (p->lp == lp) return p;
    }
    return NULL;
}

/* A server from another loop lands on loop l: it gets its handles here and
 * goes to l's pool of the same entry, whose first waiter gets it (or it
 * stays idle there: it is l's now). counted: it was counted on its way to
 * l (inflight). Without that pool (freed meanwhile), or when l is closing,
 * it is closed here. */
static void server_arrive(sl_loop_t *l, sl_server_t *s, bool live, bool counted) {
    sl_ledger_pool_t *lp = s->share;
    sl_ledger_moving_end(l->ledger, &s->node); /* this loop's now: its node goes on a list here */
    sl_pool_t *p = live ? pool_of(l, lp) : NULL;
    int rc = sl_server_join_loop(s, l, p);
    if (counted) {
        if (p)
            p->lp_arrived++;
        else
            atomic_fetch_sub_explicit(&lp->slot[l->worker_index].inflight, 1, memory_order_acq_rel);
    }
    if (!p) {
        sl_server_close(s, live ? "its pool is gone from the worker it was handed to"
                                : "the worker it was handed to is stopping");
    } else if (s->close_needed) {
        /* RECONNECT, KILL or a reload of its settings came while it moved. */
        sl_server_close(s, "close requested while it moved between workers");
        pool_wake(p);
    } else if (rc != SL_OK) {
        sl_server_close(s, "out of memory taking over a server from another worker");
    } else if (!sl_pool_has_defaults(p)) {
        /* The server carries the parameters its last client set: a client
         * that logs in on it takes its unset ones from this pool's fresh
         * login values (fill_defaults). This loop learns them from the
         * ledger when its pool never connected; when nobody knows them (a
         * reload changed the pool's settings and forgot them), the server
         * would hand one client's settings to another: closed, and a fresh
         * login (which learns them) takes its place. */
        sl_server_close(s, "its pool's login values are unknown on the worker it was handed to "
                           "(settings reloaded)");
        pool_wake(p);
    } else {
        sl_log_debug(s->tag, "taken over by worker %d", l->worker_index);
        sl_server_adopt(s, &p->servers);
        p->lp_moved_in++;
        pool_wake(p);
    }
    sl_ledger_pool_put(l->ledger, lp); /* the reference it travelled with */
}

static void moved_in_run(sl_loop_t *l, sl_loop_msg_t *m, bool live) {
    server_arrive(l, sl_container_of(m, sl_server_t, msg), live, true);
}

/* On the loop it leaves, once its handles there are closed: off it goes.
 * If the target is closing, it comes back to this loop instead. */
static void moved_out_cb(sl_server_t *s) {
    s->msg.run = moved_in_run;
    if (sl_loop_post(s->move_to, &s->msg)) return;
    sl_ledger_pool_t *lp = s->share;
    atomic_fetch_sub_explicit(&lp->slot[s->move_to->worker_index].inflight, 1,
                              memory_order_acq_rel);
    server_arrive(s->w, s, !s->w->shutting_down, false);
}

/* Hands idle server s to loop i, whose clients wait: counted on its way
 * there at once, so that no other loop sends one for the same waiter. */
static bool lp_send(sl_pool_t *p, sl_server_t *s, int i) {
    sl_loop_t *to = sl_ledger_loop(p->w->ledger, i);
    if (!to) return false;
    sl_ledger_slot_t *o = &p->lp->slot[i];
    atomic_fetch_add_explicit(&o->inflight, 1, memory_order_acq_rel);
    sl_ledger_pool_ref(p->w->ledger, p->lp); /* the entry outlives its trip */
    s->move_to = to;
    if (sl_server_leave_loop(s, moved_out_cb) != SL_OK) {
        atomic_fetch_sub_explicit(&o->inflight, 1, memory_order_acq_rel);
        sl_ledger_pool_put(p->w->ledger, p->lp);
        return false;
    }
    /* Off this pool's lists and on no other loop's yet: listed in the
     * ledger meanwhile, so that SHOW SERVERS does not miss it. */
    sl_ledger_moving_begin(p->w->ledger, p->lp, &s->node);
    p->lp_moved_out++;
    sl_log_debug(s->tag, "handed to worker %d, whose clients wait", i);
    return true;
}

/* A loop asked to look at its pool of lp (pool_dispatch, then lp_balance):
 * an idle server there may go to the asker, or the asker finds room. */
typedef struct lp_wake_msg {
    sl_loop_msg_t msg;
    sl_ledger_pool_t *lp; /* a reference */
} lp_wake_msg_t;

static void wake_run(sl_loop_t *l, sl_loop_msg_t *m, bool live) {
    lp_wake_msg_t *wm = sl_container_of(m, lp_wake_msg_t, msg);
    sl_pool_t *p = live ? pool_of(l, wm->lp) : NULL;
    if (p) pool_wake(p);
    sl_ledger_pool_put(l->ledger, wm->lp);
    free(wm);
}

/* Asks loop `to` (from loop `from`) to wake its pool of lp; false when the
 * message could not go (the caller's next dispatch asks again). */
static bool post_wake(sl_loop_t *from, sl_loop_t *to, sl_ledger_pool_t *lp) {
    lp_wake_msg_t *wm = to ? malloc(sizeof *wm) : NULL;
    if (!wm) return false;
    wm->msg.run = wake_run;
    wm->lp = lp;
    sl_ledger_pool_ref(from->ledger, lp);
    if (sl_loop_post(to, &wm->msg)) return true;
    sl_ledger_pool_put(from->ledger, lp);
    free(wm);
    return false;
}

/* Waiters here that no server here will serve, while another loop has
 * idle ones: asks those loops (at most once per millisecond of this
 * loop's clock; the next dispatch asks again if it is still needed). */
static void lp_pull(sl_pool_t *p, int64_t now) {
    if (now == p->lp_pull_ms) return;
    p->lp_pull_ms = now;
    int n = p->lp->nloops, me = p->w->worker_index;
    for (int i = 0; i < n; i++) {
        sl_loop_t *to = i != me ? sl_ledger_loop(p->w->ledger, i) : NULL;
        if (to && atomic_load_explicit(&p->lp->slot[i].idle, memory_order_acquire) > 0)
            (void)post_wake(p->w, to, p->lp);
    }
}

/* After a dispatch, with several loops: idle servers no client here wants
 * go to loops whose clients wait; waiters here that nothing here will
 * serve ask loops with idle servers; then the slot is published. */
static void lp_balance(sl_pool_t *p, int64_t now) {
    int other;
    while (p->n_waiting == 0 && p->servers.n[SL_SV_IDLE] > 0 && (other = lp_wanting(p, 0)) >= 0) {
        sl_server_t *s =
            sl_container_of(sl_list_first(&p->servers.in[SL_SV_IDLE]), sl_server_t, node);
        if (!lp_send(p, s, other)) break;
    }
    if (p->n_waiting > n_connecting(p) + p->n_checking && p->servers.n[SL_SV_IDLE] == 0)
        lp_pull(p, now);
    lp_publish(p);
}

bool sl_pool_has_defaults(sl_pool_t *p) {
    if (p->defaults.n > 0) return true;
    return p->lp && sl_ledger_defaults_copy(p->w->ledger, p->lp, &p->defaults);
}

/* Closing an idle server of another pool on another loop, to make room
 * under max_db/max_user_connections for the asker (a loop index and its
 * entry), which is woken once it is done. */
typedef struct lp_evict_msg {
    sl_loop_msg_t msg;
    sl_ledger_pool_t *victim; /* a reference: the entry whose idle server goes */
    sl_ledger_pool_t *asker;  /* a reference: the entry whose waiters want the room */
    int asker_loop;           /* worker index of the asker's loop */
} lp_evict_msg_t;

static void evict_run(sl_loop_t *l, sl_loop_msg_t *m, bool live) {
    lp_evict_msg_t *em = sl_container_of(m, lp_evict_msg_t, msg);
    sl_pool_t *q = live ? pool_of(l, em->victim) : NULL;
    if (q && q->servers.n[SL_SV_IDLE] > 0) {
        sl_server_t *s = sl_container_of(q->servers.in[SL_SV_IDLE].prev, sl_server_t, node);
        /* Its places under the caps are given back as it starts closing
         * (server_gone), before the asker is woken below. */
        sl_server_close(s, "making room for another worker's pool under "
                           "max_db/max_user_connections");
        lp_publish(q);
    }
    sl_ledger_pool_put(l->ledger, em->victim);
    (void)post_wake(l, sl_ledger_loop(l->ledger, em->asker_loop), em->asker);
    sl_ledger_pool_put(l->ledger, em->asker);
    free(em);
}

/* Waiters here, no room under max_db/max_user_connections (this pool's own
 * pool_size is not what stops it), and no idle sibling on this loop to
 * close: one on another loop is asked to close (at most once per
 * millisecond of this loop's clock; the next dispatch asks again). */
static void lp_evict_remote(sl_pool_t *p, int64_t now, int limit) {
    if ((!p->max_db && !p->max_user) || now == p->lp_evict_ms ||
        sl_ledger_read(&p->lp->servers) >= limit)
        return;
    p->lp_evict_ms = now;
    int at;
    sl_ledger_pool_t *victim = sl_ledger_idle_sibling(p->w->ledger, p->lp, p->max_db > 0,
                                                      p->max_user > 0, p->w->worker_index, &at);
    if (!victim) return;
    lp_evict_msg_t *em = malloc(sizeof *em);
    sl_loop_t *to = sl_ledger_loop(p->w->ledger, at);
    if (em) {
        em->msg.run = evict_run;
        em->victim = victim;
        em->asker = p->lp;
        em->asker_loop = p->w->worker_index;
        sl_ledger_pool_ref(p->w->ledger, p->lp);
        if (to && sl_loop_post(to, &em->msg)) return;
        sl_ledger_pool_put(p->w->ledger, p->lp);
        free(em);
    }
    sl_ledger_pool_put(p->w->ledger, victim);
}
