/* Session parameter lists. Lists are short (a dozen entries): linear search. */
#include "sluice/params.h"

#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <strings.h>

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

int sl_params_set(sl_params_t *ps, const char *name, const char *value) {
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
    for (int i = 0; i < ps->n; i++) free(ps->v[i].name);
    free(ps->v);
    ps->v = NULL;
    ps->n = ps->cap = 0;
}

void sl_params_remove(sl_params_t *ps, const char *name) {
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
