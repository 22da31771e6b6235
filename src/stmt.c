/* Statements interned per worker, clients' names for them, and servers'
 * caches of them with least-recently-used eviction. */
#include "sluice/stmt.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- ids shared by several loops ---- */

typedef struct sl_stmt_id {
    sl_hnode_t node; /* in the shared map, by hash of body */
    uint32_t id;
    uint32_t refs; /* registries' statements and carries holding it; under the mutex */
    uint32_t len;
    uint8_t body[]; /* as sl_stmt_t's; never changes */
} sl_stmt_id_t;

struct sl_stmt_ids {
    pthread_mutex_t mu;
    sl_hmap_t map;    /* sl_stmt_id_t */
    uint32_t next_id; /* never reused */
};

sl_stmt_ids_t *sl_stmt_ids_new(void) {
    sl_stmt_ids_t *ids = calloc(1, sizeof *ids);
    if (ids) pthread_mutex_init(&ids->mu, NULL);
    return ids;
}

void sl_stmt_ids_free(sl_stmt_ids_t *ids) {
    if (!ids) return;
    for (sl_hnode_t *n; (n = sl_hmap_any(&ids->map));) {
        sl_hmap_remove(&ids->map, n);
        free(sl_container_of(n, sl_stmt_id_t, node));
    }
    sl_hmap_free(&ids->map);
    pthread_mutex_destroy(&ids->mu);
    free(ids);
}

/* The shared entry of body with a new reference, made if new; NULL when
 * out of memory. */
static sl_stmt_id_t *ids_take(sl_stmt_ids_t *ids, const uint8_t *body, uint32_t len,
                              uint64_t hash) {
    pthread_mutex_lock(&ids->mu);
    sl_stmt_id_t *e = NULL;
    for (sl_hnode_t *n = sl_hmap_find(&ids->map, hash); n && !e; n = sl_hmap_next(n)) {
        sl_stmt_id_t *x = sl_container_of(n, sl_stmt_id_t, node);
        if (x->len == len && memcmp(x->body, body, len) == 0) e = x;
    }
    if (e) {
        e->refs++;
    } else if ((e = malloc(sizeof *e + len))) {
        e->node.hash = hash;
        e->id = ++ids->next_id;
        e->refs = 1;
        e->len = len;
        memcpy(e->body, body, len);
        if (sl_hmap_add(&ids->map, &e->node) < 0) {
            free(e);
            e = NULL;
        }
    }
    pthread_mutex_unlock(&ids->mu);
    return e;
}

static void ids_ref(sl_stmt_ids_t *ids, sl_stmt_id_t *e) {
    pthread_mutex_lock(&ids->mu);
    e->refs++;
    pthread_mutex_unlock(&ids->mu);
}

static void ids_put(sl_stmt_ids_t *ids, sl_stmt_id_t *e) {
    pthread_mutex_lock(&ids->mu);
    if (--e->refs == 0) {
        sl_hmap_remove(&ids->map, &e->node);
        free(e);
    }
    pthread_mutex_unlock(&ids->mu);
}

/* A statement of r is freed. */
static void stmt_free(sl_stmt_registry_t *r, sl_stmt_t *st) {
    if (st->sid) ids_put(r->shared, st->sid);
    free(st);
}

sl_stmt_t *sl_stmt_find(const sl_stmt_registry_t *r, const uint8_t *body, uint32_t len) {
    uint64_t h = sl_hash_bytes(body, len);
    for (sl_hnode_t *n = sl_hmap_find(&r->map, h); n; n = sl_hmap_next(n)) {
        sl_stmt_t *st = sl_container_of(n, sl_stmt_t, node);
        if (st->len == len && memcmp(st->body, body, len) == 0) return st;
    }
    return NULL;
}

sl_stmt_t *sl_stmt_intern(sl_stmt_registry_t *r, const uint8_t *body, uint32_t len) {
    sl_stmt_t *st = sl_stmt_find(r, body, len);
    if (st) {
        st->refs++;
        return st;
    }
    st = malloc(sizeof *st + len);
    if (!st) return NULL;
    st->node.hash = sl_hash_bytes(body, len);
    st->valid = st->parsed = false;
    st->sid = NULL;
    if (r->shared) {
        if (!(st->sid = ids_take(r->shared, body, len, st->node.hash))) {
            free(st);
            return NULL;
        }
        st->id = st->sid->id;
    } else {
        st->id = ++r->next_id;
    }
    st->refs = 1;
    st->len = len;
    memcpy(st->body, body, len);
    if (sl_hmap_add(&r->map, &st->node) < 0) {
        stmt_free(r, st);
        return NULL;
    }
    return st;
}

void sl_stmt_ref(sl_stmt_t *st) { st->refs++; }

void sl_stmt_unref(sl_stmt_registry_t *r, sl_stmt_t *st) {
    if (--st->refs > 0) return;
    sl_hmap_remove(&r->map, &st->node);
    stmt_free(r, st);
}

int sl_stmt_name(const sl_stmt_t *st, char *buf, size_t cap) {
    return snprintf(buf, cap, SL_STMT_PREFIX "%u", st->id);
}

void sl_stmt_registry_free(sl_stmt_registry_t *r) {
    for (sl_hnode_t *n; (n = sl_hmap_any(&r->map));) {
        sl_hmap_remove(&r->map, n);
        stmt_free(r, sl_container_of(n, sl_stmt_t, node));
    }
    sl_hmap_free(&r->map);
}

/* ---- names ---- */

struct sl_stmt_name {
    sl_hnode_t node; /* in the client's map until closed or rebound */
    sl_stmt_t *st;   /* a reference; fixed once a reply in flight holds the entry */
    uint32_t refs;   /* the map's, until closed or rebound, and replies in flight */
    char name[];     /* as the client spelled it first (only the first
                        SL_STMT_NAME_MAX bytes tell names apart) */
};

/* The bytes of a name PostgreSQL tells statements apart by: it keys them
 * by their first SL_STMT_NAME_MAX bytes, so two names that agree there are
 * one statement. */
static size_t key_len(const char *name) {
    return strnlen(name, SL_STMT_NAME_MAX);
}

static uint64_t key_hash(const char *name) {
    return sl_hash_bytes(name, key_len(name));
}

static sl_stmt_name_t *name_find(const sl_stmt_names_t *n, const char *name) {
    for (sl_hnode_t *x = sl_hmap_find(&n->map, key_hash(name)); x; x = sl_hmap_next(x)) {
        sl_stmt_name_t *e = sl_container_of(x, sl_stmt_name_t, node);
        if (strncmp(e->name, name, SL_STMT_NAME_MAX) == 0) return e;
    }
    return NULL;
}

sl_stmt_t *sl_stmt_names_get(const sl_stmt_names_t *n, const char *name) {
    sl_stmt_name_t *e = name_find(n, name);
    return e ? e->st : NULL;
}

sl_stmt_name_t *sl_stmt_names_entry(const sl_stmt_names_t *n, const char *name) {
    return name_find(n, name);
}

void sl_stmt_name_ref(sl_stmt_name_t *e) { e->refs++; }

void sl_stmt_name_unref(sl_stmt_registry_t *r, sl_stmt_name_t *e) {
    if (--e->refs > 0) return;
    sl_stmt_unref(r, e->st);
    free(e);
}

const char *sl_stmt_name_client(const sl_stmt_name_t *e) { return e->name; }

sl_stmt_t *sl_stmt_name_target(const sl_stmt_name_t *e) { return e->st; }

uint32_t sl_stmt_names_count(const sl_stmt_names_t *n) {
    return n->map.count;
}

bool sl_stmt_names_fit(const sl_stmt_names_t *n, const char *name, uint32_t len, uint32_t max_count,
                       uint64_t max_bytes, const char **which) {
    const sl_stmt_name_t *e = name_find(n, name);
    uint64_t bytes = n->bytes - (e ? e->st->len : 0) + len;
    if (!e && n->map.count >= max_count) {
        *which = "max_client_prepared_statements";
        return false;
    }
    if (bytes > max_bytes) {
        *which = "max_client_prepared_bytes";
        return false;
    }
    return true;
}

/* Takes e out of the client's map; it lives on while replies in flight
 * hold it. */
static void name_drop(sl_stmt_names_t *n, sl_stmt_registry_t *r, sl_stmt_name_t *e) {
    n->bytes -= e->st->len;
    sl_hmap_remove(&n->map, &e->node);
    sl_stmt_name_unref(r, e);
}

int sl_stmt_names_set(sl_stmt_names_t *n, sl_stmt_registry_t *r, const char *name,
                      sl_stmt_t *st) {
    sl_stmt_name_t *e = name_find(n, name);
    if (e && e->refs == 1) { /* no reply in flight names it: rebind in place */
        n->bytes += (uint64_t)st->len - e->st->len;
        sl_stmt_ref(st);
        sl_stmt_unref(r, e->st);
        e->st = st;
        return SL_OK;
    }
    size_t len = strlen(name);
    sl_stmt_name_t *ne = malloc(sizeof *ne + len + 1);
    if (!ne) return SL_ENOMEM;
    ne->node.hash = key_hash(name);
    memcpy(ne->name, name, len + 1);
    ne->st = st;
    ne->refs = 1;
    if (sl_hmap_add(&n->map, &ne->node) < 0) {
        free(ne);
        return SL_ENOMEM;
    }
    sl_stmt_ref(st);
    n->bytes += st->len;
    /* A reply still owed for the old binding keeps the old entry. */
    if (e) name_drop(n, r, e);
    return SL_OK;
}

bool sl_stmt_names_remove(sl_stmt_names_t *n, sl_stmt_registry_t *r, const char *name) {
    sl_stmt_name_t *e = name_find(n, name);
    if (e) name_drop(n, r, e);
    return e != NULL;
}

void sl_stmt_names_clear(sl_stmt_names_t *n, sl_stmt_registry_t *r) {
    for (sl_hnode_t *x; (x = sl_hmap_any(&n->map));)
        name_drop(n, r, sl_container_of(x, sl_stmt_name_t, node));
    sl_hmap_free(&n->map);
    n->bytes = 0;
}

/* ---- a server's cache ---- */

typedef struct sl_stmt_slot {
    sl_hnode_t node; /* by statement id */
    sl_list_t lru;
    sl_stmt_t *st;   /* a reference */
    uint64_t epoch;  /* when a named portal was last bound to it */
} sl_stmt_slot_t;

void sl_stmt_cache_init(sl_stmt_cache_t *c) {
    *c = (sl_stmt_cache_t){0};
    sl_list_init(&c->lru);
}

static sl_stmt_slot_t *slot_find(const sl_stmt_cache_t *c, const sl_stmt_t *st) {
    for (sl_hnode_t *x = sl_hmap_find(&c->map, st->id); x; x = sl_hmap_next(x)) {
        sl_stmt_slot_t *s = sl_container_of(x, sl_stmt_slot_t, node);
        if (s->st == st) return s;
    }
    return NULL;
}

static void touch(sl_stmt_cache_t *c, sl_stmt_slot_t *s) {
    sl_list_unlink(&s->lru);
    sl_list_push_back(&c->lru, &s->lru);
}

bool sl_stmt_cache_use(sl_stmt_cache_t *c, const sl_stmt_t *st) {
    sl_stmt_slot_t *s = slot_find(c, st);
    if (s) touch(c, s);
    return s != NULL;
}

void sl_stmt_cache_bound(sl_stmt_cache_t *c, const sl_stmt_t *st, bool named_portal) {
    sl_stmt_slot_t *s = slot_find(c, st);
    if (named_portal && s) s->epoch = c->epoch;
    if (!named_portal) c->unnamed = st;
}

int sl_stmt_cache_add(sl_stmt_cache_t *c, sl_stmt_t *st) {
    sl_stmt_slot_t *s = slot_find(c, st);
    if (s) {
        touch(c, s);
        return SL_OK;
    }
    s = malloc(sizeof *s);
    if (!s) return SL_ENOMEM;
    s->node.hash = st->id;
    s->st = st;
    s->epoch = 0; /* epochs start at 1 */
    sl_list_init(&s->lru);
    if (sl_hmap_add(&c->map, &s->node) < 0) {
        free(s);
        return SL_ENOMEM;
    }
    sl_stmt_ref(st);
    touch(c, s);
    return SL_OK;
}

static void slot_drop(sl_stmt_cache_t *c, sl_stmt_registry_t *r, sl_stmt_slot_t *s) {
    sl_hmap_remove(&c->map, &s->node);
    sl_list_unlink(&s->lru);
    sl_stmt_unref(r, s->st);
    free(s);
}

void sl_stmt_cache_remove(sl_stmt_cache_t *c, sl_stmt_registry_t *r, const sl_stmt_t *st) {
    sl_stmt_slot_t *s = slot_find(c, st);
    if (s) slot_drop(c, r, s);
}

sl_stmt_t *sl_stmt_cache_victim(const sl_stmt_cache_t *c, uint32_t max) {
    if (c->map.count < max) return NULL;
    for (sl_list_t *it = c->lru.next; it != &c->lru; it = it->next) {
        sl_stmt_slot_t *s = sl_container_of(it, sl_stmt_slot_t, lru);
        if (s->epoch != c->epoch && s->st != c->unnamed) return s->st;
    }
    return NULL;
}

uint32_t sl_stmt_cache_count(const sl_stmt_cache_t *c) { return c->map.count; }

void sl_stmt_cache_clear(sl_stmt_cache_t *c, sl_stmt_registry_t *r) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &c->lru) slot_drop(c, r, sl_container_of(it, sl_stmt_slot_t, lru));
    sl_hmap_free(&c->map);
}

/* ---- a cache moving to another loop ---- */

struct sl_stmt_carry {
    sl_stmt_ids_t *ids; /* borrowed: the shared ids the entries are in */
    uint32_t n;
    sl_stmt_id_t *e[]; /* references, least recently used first */
};

int sl_stmt_cache_export(sl_stmt_cache_t *c, sl_stmt_registry_t *r, sl_stmt_carry_t **out) {
    *out = NULL;
    if (!r->shared) return SL_ECONFIG;
    if (c->map.count == 0) return SL_OK;
    sl_stmt_carry_t *k = malloc(sizeof *k + c->map.count * sizeof(sl_stmt_id_t *));
    if (!k) return SL_ENOMEM;
    k->ids = r->shared;
    k->n = 0;
    for (sl_list_t *it = c->lru.next; it != &c->lru; it = it->next) {
        sl_stmt_t *st = sl_container_of(it, sl_stmt_slot_t, lru)->st;
        ids_ref(r->shared, st->sid);
        k->e[k->n++] = st->sid;
    }
    sl_stmt_cache_clear(c, r);
    /* What the unnamed statement and portal were belongs to a client of
     * the loop it leaves. */
    c->unnamed = NULL;
    c->unnamed_owner = 0;
    c->unnamed_loop = NULL;
    *out = k;
    return SL_OK;
}

void sl_stmt_carry_free(sl_stmt_carry_t *k) {
    if (!k) return;
    for (uint32_t i = 0; i < k->n; i++)
        ids_put(k->ids, k->e[i]);
    free(k);
}

int sl_stmt_cache_import(sl_stmt_cache_t *c, sl_stmt_registry_t *r, sl_stmt_carry_t *k) {
    int rc = SL_OK;
    for (uint32_t i = 0; k && i < k->n; i++) {
        /* The carry's reference keeps the entry, so the body gets the id
         * it was prepared under. */
        sl_stmt_t *st = r->shared == k->ids ? sl_stmt_intern(r, k->e[i]->body, k->e[i]->len) : NULL;
        if (!st || st->id != k->e[i]->id || sl_stmt_cache_add(c, st) < 0) {
            rc = SL_ENOMEM;
        } else {
            st->valid = true; /* a server accepted it */
        }
        if (st) sl_stmt_unref(r, st);
    }
    sl_stmt_carry_free(k);
    return rc;
}
