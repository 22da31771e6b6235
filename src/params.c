/* Session parameter lists. Lists are short (a dozen entries): linear search. */
#include "sluice/params.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <strings.h>

/* An interned list: one block holding this header, the entries, then their
 * "name\0value\0" strings. A list that shares it points v at entries. */
typedef struct shared {
    struct shared *next; /* on this thread's interned list */
    uint64_t fp;         /* sl_params_fingerprint of the entries */
    uint32_t refs;       /* lists pointing at it; freed at 0 */
    int n;               /* entries */
    sl_param_t entries[];
} shared_t;

/* Interned lists of this thread: short (one per distinct set of startup
 * parameters among connected clients), capped so that a crowd of distinct
 * ones costs no search time; past the cap a list keeps its own copy. */
#define MAX_SHARED 256
static _Thread_local shared_t *interned;
static _Thread_local int ninterned;

static bool is_shared(const sl_params_t *ps) { return ps->cap == 0 && ps->v != NULL; }

static shared_t *shared_of(const sl_params_t *ps) {
    return (shared_t *)(void *)((char *)ps->v - offsetof(shared_t, entries));
}

static void unref(shared_t *sh) {
    if (--sh->refs > 0) return;
    for (shared_t **pp = &interned; *pp; pp = &(*pp)->next)
        if (*pp == sh) {
            *pp = sh->next;
            ninterned--;
            break;
        }
    free(sh);
}

const char *sl_params_get(const sl_params_t *ps, const char *name) {
    for (int i = 0; i < ps->n; i++)
        if (strcasecmp(ps->v[i].name, name) == 0) return ps->v[i].value;
    return NULL;
}

/* One allocation per parameter: "name\0value\0", value pointing inside. */
static char *make_entry(const char *name, const char *value, char **value_out) {
    size_t ln = strlen(name) + 1, lv = strlen(value) + 1;
    char *blk = malloc(ln + lv);
    if (!blk) return NULL;
    memcpy(blk, name, ln);
    memcpy(blk + ln, value, lv);
    *value_out = blk + ln;
    return blk;
}

/* Gives a shared list its own copy of the entries, for a change. The
 * shared block is returned, still referenced: the caller's arguments may
 * point into it, so it is let go (unref) only after the change. NULL when
 * ps was its own already; *rc is SL_ENOMEM when the copy failed. */
static shared_t *unshare(sl_params_t *ps, int *rc) {
    *rc = SL_OK;
    if (!is_shared(ps)) return NULL;
    shared_t *sh = shared_of(ps);
    sl_params_t own = {0};
    for (int i = 0; i < sh->n; i++)
        if (sl_params_set(&own, sh->entries[i].name, sh->entries[i].value) < 0) {
            sl_params_clear(&own);
            *rc = SL_ENOMEM;
            return NULL;
        }
    *ps = own;
    return sh;
}

static int set_own(sl_params_t *ps, const char *name, const char *value);

int sl_params_set(sl_params_t *ps, const char *name, const char *value) {
    if (is_shared(ps)) {
        const char *cur = sl_params_get(ps, name);
        if (cur && strcmp(cur, value) == 0) return SL_OK; /* no change: stays shared */
        int rc;
        shared_t *sh = unshare(ps, &rc);
        if (rc < 0) return rc;
        rc = set_own(ps, name, value);
        unref(sh);
        return rc;
    }
    return set_own(ps, name, value);
}

static int set_own(sl_params_t *ps, const char *name, const char *value) {
    for (int i = 0; i < ps->n; i++)
        if (strcasecmp(ps->v[i].name, name) == 0) {
            if (strcmp(ps->v[i].value, value) == 0) return SL_OK;
            char *v, *blk = make_entry(ps->v[i].name, value, &v);
            if (!blk) return SL_ENOMEM;
            free(ps->v[i].name);
            ps->v[i] = (sl_param_t){blk, v};
            return SL_OK;
        }
    if (ps->n == ps->cap) {
        int cap = ps->cap ? ps->cap * 2 : 8;
        sl_param_t *grown = realloc(ps->v, sizeof *grown * (size_t)cap);
        if (!grown) return SL_ENOMEM;
        ps->v = grown;
        ps->cap = cap;
    }
    char *v, *blk = make_entry(name, value, &v);
    if (!blk) return SL_ENOMEM;
    ps->v[ps->n++] = (sl_param_t){blk, v};
    return SL_OK;
}

void sl_params_clear(sl_params_t *ps) {
    if (is_shared(ps)) {
        unref(shared_of(ps));
    } else {
        for (int i = 0; i < ps->n; i++) free(ps->v[i].name);
        free(ps->v);
    }
    ps->v = NULL;
    ps->n = ps->cap = 0;
}

void sl_params_remove(sl_params_t *ps, const char *name) {
    if (is_shared(ps)) {
        if (!sl_params_get(ps, name)) return;
        int rc;
        shared_t *sh = unshare(ps, &rc);
        if (rc < 0) return; /* stays as it was: the caller cannot tell, as before a change */
        sl_params_remove(ps, name);
        unref(sh);
        return;
    }
    for (int i = 0; i < ps->n; i++)
        if (strcasecmp(ps->v[i].name, name) == 0) {
            free(ps->v[i].name);
            memmove(&ps->v[i], &ps->v[i + 1], sizeof *ps->v * (size_t)(ps->n - i - 1));
            ps->n--;
            return;
        }
}

uint64_t sl_params_fingerprint(const sl_params_t *ps) {
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (int i = 0; i < ps->n; i++) {
        for (const char *p = ps->v[i].name; *p; p++)
            h = (h ^ (uint64_t)tolower((unsigned char)*p)) * 1099511628211ull;
        h = (h ^ 0xffu) * 1099511628211ull;
        for (const char *p = ps->v[i].value; *p; p++)
            h = (h ^ (uint64_t)(unsigned char)*p) * 1099511628211ull;
        h = (h ^ 0xfeu) * 1099511628211ull;
    }
    return h ? h : 1;
}

static bool same_entries(const shared_t *sh, const sl_params_t *ps) {
    if (sh->n != ps->n) return false;
    for (int i = 0; i < ps->n; i++)
        if (strcmp(sh->entries[i].name, ps->v[i].name) != 0 ||
            strcmp(sh->entries[i].value, ps->v[i].value) != 0)
            return false;
    return true;
}

/* A new interned block with ps's entries, referenced once; NULL if out of
 * memory. */
static shared_t *make_shared(const sl_params_t *ps, uint64_t fp) {
    size_t strings = 0;
    for (int i = 0; i < ps->n; i++)
        strings += strlen(ps->v[i].name) + strlen(ps->v[i].value) + 2;
    shared_t *sh = malloc(sizeof *sh + sizeof(sl_param_t) * (size_t)ps->n + strings);
    if (!sh) return NULL;
    *sh = (shared_t){.fp = fp, .refs = 1, .n = ps->n};
    char *str = (char *)&sh->entries[ps->n];
    for (int i = 0; i < ps->n; i++) {
        size_t ln = strlen(ps->v[i].name) + 1, lv = strlen(ps->v[i].value) + 1;
        memcpy(str, ps->v[i].name, ln);
        memcpy(str + ln, ps->v[i].value, lv);
        sh->entries[i] = (sl_param_t){str, str + ln};
        str += ln + lv;
    }
    return sh;
}

void sl_params_share(sl_params_t *ps) {
    if (ps->n == 0 || is_shared(ps)) return;
    uint64_t fp = sl_params_fingerprint(ps);
    shared_t *sh = interned;
    while (sh && !(sh->fp == fp && same_entries(sh, ps))) sh = sh->next;
    if (sh) {
        sh->refs++;
    } else {
        if (ninterned >= MAX_SHARED || !(sh = make_shared(ps, fp))) return;
        sh->next = interned;
        interned = sh;
        ninterned++;
    }
    sl_params_clear(ps);
    ps->v = sh->entries;
    ps->n = sh->n;
    ps->cap = 0;
}

int sl_params_shared_count(void) { return ninterned; }
