/* Named prepared statements in transaction pooling: the statements a worker
 * knows (interned by query text and parameter types, so the same text from
 * many clients is one statement), each client's names for them, and each
 * server's cache of the ones prepared on it under sluice's own names
 * ("sluice_<id>"), least recently used first. Pure: no I/O. */
#ifndef SLUICE_STMT_H
#define SLUICE_STMT_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice/err.h"
#include "sluice/hmap.h"
#include "sluice/list.h"

#define SL_STMT_PREFIX "sluice_"
/* PostgreSQL's NAMEDATALEN - 1: it keys prepared statements by their first
 * 63 bytes (protocol-level names are cut at that byte; SQL identifiers
 * were cut at a character boundary within it by the lexer). */
#define SL_STMT_NAME_MAX 63

typedef struct sl_stmt {
    sl_hnode_t node; /* in the registry, by hash of body */
    uint32_t id;     /* server-side name is SL_STMT_PREFIX<id> */
    uint32_t refs;   /* client names, server caches and replies in flight */
    uint32_t len;    /* bytes of body */
    bool valid;      /* a server accepted it once: sluice may answer its Parse alone */
    bool parsed;     /* sluice's parser read its text as one statement (prepare.c) */
    struct sl_stmt_id *sid; /* a reference to its entry in the registry's shared ids, or NULL */
    uint8_t body[];  /* Parse after the name: query text, NUL, count and OIDs of parameter types */
} sl_stmt_t;

/* Statement ids shared by the registries of several loops (workers): the
 * same body gets the same id in each, so a server handed from one loop to
 * another keeps its statements under the names they were prepared with.
 * Thread-safe (a mutex, taken only when a loop interns a body it does not
 * know yet or frees one). */
typedef struct sl_stmt_ids sl_stmt_ids_t;
sl_stmt_ids_t *sl_stmt_ids_new(void);
/* Once no registry uses it any more. */
void sl_stmt_ids_free(sl_stmt_ids_t *ids);

typedef struct sl_stmt_registry {
    sl_hmap_t map;         /* sl_stmt_t by hash of body */
    uint32_t next_id;      /* ids are never reused while sluice runs */
    sl_stmt_ids_t *shared; /* borrowed: ids come from there when set (several loops), else
                              from next_id */
} sl_stmt_registry_t;

/* The statement with this body, created if new; a reference for the caller.
 * NULL when out of memory. */
sl_stmt_t *sl_stmt_intern(sl_stmt_registry_t *r, const uint8_t *body, uint32_t len);
/* The statement with this body if known, without taking a reference. */
sl_stmt_t *sl_stmt_find(const sl_stmt_registry_t *r, const uint8_t *body, uint32_t len);
void sl_stmt_ref(sl_stmt_t *st);
void sl_stmt_unref(sl_stmt_registry_t *r, sl_stmt_t *st);
/* Writes the server-side name ("sluice_17") into buf; returns its length. */
int sl_stmt_name(const sl_stmt_t *st, char *buf, size_t cap);
void sl_stmt_registry_free(sl_stmt_registry_t *r);

/* ---- A client's names ---- */
typedef struct sl_stmt_names {
    sl_hmap_t map;  /* sl_stmt_name_t by hash of name */
    uint64_t bytes; /* body bytes of the statements named, summed per name */
} sl_stmt_names_t;

/* A client's name for a statement: counted, so that a Bind or Describe in
 * flight keeps the name it used (for an error about it) even when the
 * client closes or rebinds the name before the server replies. */
typedef struct sl_stmt_name sl_stmt_name_t;

/* The statement a client named so, or NULL. */
sl_stmt_t *sl_stmt_names_get(const sl_stmt_names_t *n, const char *name);
/* The client's entry for name, or NULL; borrowed (sl_stmt_name_ref to keep
 * it). */
sl_stmt_name_t *sl_stmt_names_entry(const sl_stmt_names_t *n, const char *name);
void sl_stmt_name_ref(sl_stmt_name_t *e);
void sl_stmt_name_unref(sl_stmt_registry_t *r, sl_stmt_name_t *e);
/* The name as the client spelled it, and the statement it was bound to
 * (an entry never changes once a reply in flight holds it). */
const char *sl_stmt_name_client(const sl_stmt_name_t *e);
sl_stmt_t *sl_stmt_name_target(const sl_stmt_name_t *e);
/* How many names a client holds. */
uint32_t sl_stmt_names_count(const sl_stmt_names_t *n);
/* Whether binding name to a body of len bytes keeps the client within
 * max_count names and max_bytes of body (rebinding a name replaces its
 * bytes); false names the bound it would cross in *which. */
bool sl_stmt_names_fit(const sl_stmt_names_t *n, const char *name, uint32_t len, uint32_t max_count,
                       uint64_t max_bytes, const char **which);
/* Binds name to st (taking a new reference), replacing an earlier binding. */
int sl_stmt_names_set(sl_stmt_names_t *n, sl_stmt_registry_t *r, const char *name, sl_stmt_t *st)
    SL_MUST_USE;
/* Forgets name; false if it was not bound. */
bool sl_stmt_names_remove(sl_stmt_names_t *n, sl_stmt_registry_t *r, const char *name);
void sl_stmt_names_clear(sl_stmt_names_t *n, sl_stmt_registry_t *r);

/* ---- A server's prepared statements ---- */
typedef struct sl_stmt_cache {
    sl_hmap_t map;  /* sl_stmt_slot_t by statement id */
    sl_list_t lru;  /* least recently used first */
    uint64_t epoch; /* bumped when a transaction ends (named portals close) */
    const sl_stmt_t *unnamed; /* bound to the unnamed portal last; compared only */
    /* The client whose Parse of the unnamed statement completed there
     * last, by its id and its loop (compared only), or 0: only that client
     * may use the unnamed statement in a later transaction (prepare.c). */
    uint32_t unnamed_owner;
    const void *unnamed_loop;
} sl_stmt_cache_t;

void sl_stmt_cache_init(sl_stmt_cache_t *c);
/* True if st is prepared there; makes it the most recently used. */
bool sl_stmt_cache_use(sl_stmt_cache_t *c, const sl_stmt_t *st);
/* A portal was bound to st: closing st would close the portal, so st is not
 * evicted while it may be open (a named one until the transaction ends, the
 * unnamed one until the next Bind). */
void sl_stmt_cache_bound(sl_stmt_cache_t *c, const sl_stmt_t *st, bool named_portal);
/* Records st as prepared there (a new reference), used now. */
int sl_stmt_cache_add(sl_stmt_cache_t *c, sl_stmt_t *st) SL_MUST_USE;
/* Forgets st (it is not, or no longer, prepared there). */
void sl_stmt_cache_remove(sl_stmt_cache_t *c, sl_stmt_registry_t *r, const sl_stmt_t *st);
/* The least recently used statement to evict to make room under max
 * entries, or NULL when none may go now (the cache is within max, or every
 * entry may back an open portal). It stays cached until
 * sl_stmt_cache_remove(). */
sl_stmt_t *sl_stmt_cache_victim(const sl_stmt_cache_t *c, uint32_t max);
uint32_t sl_stmt_cache_count(const sl_stmt_cache_t *c);
void sl_stmt_cache_clear(sl_stmt_cache_t *c, sl_stmt_registry_t *r);

/* A server's cache on its way to another loop: the statements by their
 * shared ids, least recently used first, holding no reference into the
 * loop it leaves. */
typedef struct sl_stmt_carry sl_stmt_carry_t;
/* Empties c (its statements belong to r, whose ids must be shared) into a
 * carry; *out is NULL when c was empty. SL_ECONFIG when r has no shared
 * ids, SL_ENOMEM: c is left as it was either way. */
int sl_stmt_cache_export(sl_stmt_cache_t *c, sl_stmt_registry_t *r,
                         sl_stmt_carry_t **out) SL_MUST_USE;
/* On the receiving loop: fills the empty cache c with the carry's
 * statements, interned in r (same shared ids, so the same names on the
 * server), and frees the carry. A statement that cannot be interned (out
 * of memory) is left out: SL_ENOMEM, and the server must not be trusted
 * with its names (close it). */
int sl_stmt_cache_import(sl_stmt_cache_t *c, sl_stmt_registry_t *r,
                         sl_stmt_carry_t *carry) SL_MUST_USE;
/* Frees a carry that will not be imported. */
void sl_stmt_carry_free(sl_stmt_carry_t *carry);

#endif
