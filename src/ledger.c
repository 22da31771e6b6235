/* The shared ledger of pool counts: entries made and found under one mutex
 * (once per pool a loop makes), then counted with atomics. */
#include "sluice/ledger.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sl_ledger {
    pthread_mutex_t mu;          /* guards pools, counters and every refs */
    sl_list_t pools;             /* sl_ledger_pool_t */
    sl_list_t counters;          /* sl_ledger_count_t */
    atomic_int clients;          /* clients of all loops (max_client_conn) */
    _Atomic uint32_t server_ids; /* the last S-<id> handed out, over all loops */
    int nloops;                  /* loops it was made for */
    sl_stmt_ids_t *ids;          /* owned: statement ids shared by the loops' registries */
    sl_loop_t *loops[SL_LEDGER_MAX_LOOPS]; /* borrowed, by worker_index; set before they run */
};

sl_ledger_t *sl_ledger_new(int nloops) {
    if (nloops < 1 || nloops > SL_LEDGER_MAX_LOOPS) return NULL;
    sl_ledger_t *lg = calloc(1, sizeof *lg);
    if (!lg) return NULL;
    lg->ids = sl_stmt_ids_new();
    if (!lg->ids) {
        free(lg);
        return NULL;
    }
    pthread_mutex_init(&lg->mu, NULL);
    sl_list_init(&lg->pools);
    sl_list_init(&lg->counters);
    lg->nloops = nloops;
    return lg;
}

static void count_free(sl_ledger_count_t *c) {
    sl_list_unlink(&c->node);
    free(c->name);
    free(c);
}

static void pool_free(sl_ledger_pool_t *e) {
    sl_list_unlink(&e->node);
    sl_params_clear(&e->defaults);
    OPENSSL_cleanse(&e->scram_keys, sizeof e->scram_keys);
    free(e->db);
    free(e->user);
    free(e);
}

void sl_ledger_free(sl_ledger_t *lg) {
    if (!lg) return;
    while (!sl_list_empty(&lg->pools))
        pool_free(sl_container_of(sl_list_first(&lg->pools), sl_ledger_pool_t, node));
    while (!sl_list_empty(&lg->counters))
        count_free(sl_container_of(sl_list_first(&lg->counters), sl_ledger_count_t, node));
    sl_stmt_ids_free(lg->ids);
    pthread_mutex_destroy(&lg->mu);
    free(lg);
}

int sl_ledger_attach(sl_ledger_t *lg, sl_loop_t *l) {
    int i = l->worker_index;
    if (i < 0 || i >= lg->nloops || lg->loops[i]) return SL_ECONFIG;
    lg->loops[i] = l;
    l->ledger = lg;
    l->stmts.shared = lg->ids;
    return SL_OK;
}

int sl_ledger_nloops(const sl_ledger_t *lg) {
    return lg->nloops;
}

sl_loop_t *sl_ledger_loop(const sl_ledger_t *lg, int i) {
    return i >= 0 && i < lg->nloops ? lg->loops[i] : NULL;
}

/* The counter of (kind, name, backend) with a new reference, made if new;
 * under the mutex. */
static sl_ledger_count_t *count_get(sl_ledger_t *lg, int kind, const char *name, int backend) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &lg->counters) {
        sl_ledger_count_t *c = sl_container_of(it, sl_ledger_count_t, node);
        if (c->kind == kind && c->backend == backend && strcmp(c->name, name) == 0) {
            c->refs++;
            return c;
        }
    }
    sl_ledger_count_t *c = calloc(1, sizeof *c);
    if (!c || !(c->name = strdup(name))) {
        free(c);
        return NULL;
    }
    c->kind = kind;
    c->backend = backend;
    c->refs = 1;
    sl_list_push_back(&lg->counters, &c->node);
    return c;
}

static void count_put(sl_ledger_count_t *c) {
    if (c && --c->refs == 0) count_free(c);
}

sl_ledger_pool_t *sl_ledger_pool_get(sl_ledger_t *lg, const char *db, const char *user,
                                     int backend) {
    pthread_mutex_lock(&lg->mu);
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &lg->pools) {
        sl_ledger_pool_t *e = sl_container_of(it, sl_ledger_pool_t, node);
        if (e->backend == backend && strcmp(e->db, db) == 0 && strcmp(e->user, user) == 0) {
            e->refs++;
            pthread_mutex_unlock(&lg->mu);
            return e;
        }
    }
    sl_ledger_pool_t *e = calloc(1, sizeof *e + (size_t)lg->nloops * sizeof(sl_ledger_slot_t));
    if (e) {
        e->db = strdup(db);
        e->user = strdup(user);
        e->backend = backend;
        e->nloops = lg->nloops;
        e->refs = 1;
        e->by_db = count_get(lg, 0, db, backend);
        e->by_user = count_get(lg, 1, user, backend);
        sl_list_init(&e->node);
        sl_list_init(&e->moving);
        if (!e->db || !e->user || !e->by_db || !e->by_user) {
            count_put(e->by_db);
            count_put(e->by_user);
            free(e->db);
            free(e->user);
            free(e);
            e = NULL;
        } else {
            sl_list_push_back(&lg->pools, &e->node);
        }
    }
    pthread_mutex_unlock(&lg->mu);
    return e;
}

void sl_ledger_pool_ref(sl_ledger_t *lg, sl_ledger_pool_t *e) {
    pthread_mutex_lock(&lg->mu);
    e->refs++;
    pthread_mutex_unlock(&lg->mu);
}

void sl_ledger_pool_put(sl_ledger_t *lg, sl_ledger_pool_t *e) {
    pthread_mutex_lock(&lg->mu);
    if (--e->refs == 0) {
        count_put(e->by_db);
        count_put(e->by_user);
        pool_free(e);
    }
    pthread_mutex_unlock(&lg->mu);
}

int sl_ledger_clients_add(sl_ledger_t *lg, int delta) {
    return atomic_fetch_add_explicit(&lg->clients, delta, memory_order_acq_rel) + delta;
}

void sl_ledger_defaults_publish(sl_ledger_t *lg, sl_ledger_pool_t *e, const sl_params_t *d) {
    pthread_mutex_lock(&lg->mu);
    if (e->defaults.n == 0)
        for (int i = 0; i < d->n; i++)
            if (sl_params_set(&e->defaults, d->v[i].name, d->v[i].value) != SL_OK) {
                sl_params_clear(&e->defaults); /* all or nothing: a partial list misleads */
                break;
            }
    pthread_mutex_unlock(&lg->mu);
}

bool sl_ledger_defaults_copy(sl_ledger_t *lg, sl_ledger_pool_t *e, sl_params_t *out) {
    pthread_mutex_lock(&lg->mu);
    for (int i = 0; i < e->defaults.n; i++)
        if (sl_params_set(out, e->defaults.v[i].name, e->defaults.v[i].value) != SL_OK) {
            sl_params_clear(out);
            break;
        }
    pthread_mutex_unlock(&lg->mu);
    return out->n > 0;
}

void sl_ledger_keys_publish(sl_ledger_t *lg, sl_ledger_pool_t *e, const sl_login_keys_t *k) {
    pthread_mutex_lock(&lg->mu);
    if (e->scram_keys.iterations == 0) e->scram_keys = *k;
    pthread_mutex_unlock(&lg->mu);
}

void sl_ledger_keys_copy(sl_ledger_t *lg, sl_ledger_pool_t *e, sl_login_keys_t *out) {
    pthread_mutex_lock(&lg->mu);
    if (out->iterations == 0) *out = e->scram_keys;
    pthread_mutex_unlock(&lg->mu);
}

void sl_ledger_pool_forget(sl_ledger_t *lg, sl_ledger_pool_t *e) {
    pthread_mutex_lock(&lg->mu);
    sl_params_clear(&e->defaults);
    OPENSSL_cleanse(&e->scram_keys, sizeof e->scram_keys);
    pthread_mutex_unlock(&lg->mu);
}

uint32_t sl_ledger_server_id(sl_ledger_t *lg) {
    return atomic_fetch_add_explicit(&lg->server_ids, 1, memory_order_relaxed) + 1;
}

int sl_ledger_db_refs(sl_ledger_t *lg, const char *db) {
    int n = 0;
    pthread_mutex_lock(&lg->mu);
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &lg->pools) {
        sl_ledger_pool_t *e = sl_container_of(it, sl_ledger_pool_t, node);
        if (strcmp(e->db, db) == 0) n += e->refs;
    }
    pthread_mutex_unlock(&lg->mu);
    return n;
}

void sl_ledger_fail_publish(sl_ledger_t *lg, sl_ledger_pool_t *e, const char *error,
                            const char *code, int64_t ms) {
    pthread_mutex_lock(&lg->mu);
    snprintf(e->fail_error, sizeof e->fail_error, "%s", error);
    snprintf(e->fail_code, sizeof e->fail_code, "%s", code);
    e->fail_ms = ms;
    atomic_store_explicit(&e->failed, true, memory_order_release);
    pthread_mutex_unlock(&lg->mu);
}

void sl_ledger_fail_clear(sl_ledger_t *lg, sl_ledger_pool_t *e) {
    if (!atomic_load_explicit(&e->failed, memory_order_acquire)) return;
    pthread_mutex_lock(&lg->mu);
    atomic_store_explicit(&e->failed, false, memory_order_release);
    e->fail_ms = 0;
    pthread_mutex_unlock(&lg->mu);
}

bool sl_ledger_fail_copy(sl_ledger_t *lg, sl_ledger_pool_t *e, char *error, size_t cap, char *code,
                         int64_t *ms) {
    if (!atomic_load_explicit(&e->failed, memory_order_acquire)) return false;
    pthread_mutex_lock(&lg->mu);
    bool failed = atomic_load_explicit(&e->failed, memory_order_relaxed);
    if (failed) {
        snprintf(error, cap, "%s", e->fail_error);
        snprintf(code, 6, "%s", e->fail_code);
        *ms = e->fail_ms;
    }
    pthread_mutex_unlock(&lg->mu);
    return failed;
}

sl_ledger_pool_t *sl_ledger_idle_sibling(sl_ledger_t *lg, const sl_ledger_pool_t *e, bool by_db,
                                         bool by_user, int not_loop, int *loop) {
    pthread_mutex_lock(&lg->mu);
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &lg->pools) {
        sl_ledger_pool_t *o = sl_container_of(it, sl_ledger_pool_t, node);
        if (o == e || !((by_db && o->by_db == e->by_db) || (by_user && o->by_user == e->by_user)))
            continue;
        for (int i = 0; i < o->nloops; i++) {
            if (i == not_loop || atomic_load_explicit(&o->slot[i].idle, memory_order_acquire) <= 0)
                continue;
            o->refs++;
            *loop = i;
            pthread_mutex_unlock(&lg->mu);
            return o;
        }
    }
    pthread_mutex_unlock(&lg->mu);
    return NULL;
}

void sl_ledger_moving_begin(sl_ledger_t *lg, sl_ledger_pool_t *e, sl_list_t *node) {
    pthread_mutex_lock(&lg->mu);
    sl_list_push_back(&e->moving, node);
    pthread_mutex_unlock(&lg->mu);
}

void sl_ledger_moving_end(sl_ledger_t *lg, sl_list_t *node) {
    pthread_mutex_lock(&lg->mu);
    sl_list_unlink(node);
    pthread_mutex_unlock(&lg->mu);
}

void sl_ledger_moving_walk(sl_ledger_t *lg,
                           void (*fn)(sl_ledger_pool_t *e, sl_list_t *node, void *arg), void *arg) {
    pthread_mutex_lock(&lg->mu);
    sl_list_t *it, *tmp, *m, *mtmp;
    sl_list_each(it, tmp, &lg->pools) {
        sl_ledger_pool_t *e = sl_container_of(it, sl_ledger_pool_t, node);
        sl_list_each(m, mtmp, &e->moving) fn(e, m, arg);
    }
    pthread_mutex_unlock(&lg->mu);
}
