/* A small list of session parameters (name -> value), names compared without
 * case as PostgreSQL does. Used for what a client asked for and for what a
 * server currently has. Pure. */
#ifndef SLUICE_PARAMS_H
#define SLUICE_PARAMS_H

#include <stdint.h>

#include "sluice/err.h"

typedef struct sl_param {
    char *name;  /* owned: one block holding name and value */
    char *value; /* points into name's block */
} sl_param_t;

typedef struct sl_params {
    sl_param_t *v; /* owned array; or, when cap is 0 and v is not NULL, the read-only
                      array of a shared list (sl_params_share), referenced */
    int n, cap;    /* entries; slots of an owned array (0 for a shared one) */
} sl_params_t;

const char *sl_params_get(const sl_params_t *ps, const char *name);
int sl_params_set(sl_params_t *ps, const char *name, const char *value);
void sl_params_clear(sl_params_t *ps);
/* Removes name, keeping the order of the others. */
void sl_params_remove(sl_params_t *ps, const char *name);
/* A hash of the names (without case) and values in list order; never 0. */
uint64_t sl_params_fingerprint(const sl_params_t *ps);
/* Interns ps: its entries are dropped for a reference to one read-only copy
 * shared by every identical list interned on this thread (thousands of idle
 * clients of one application carry the same dozen parameters). Reading is
 * unchanged; the first sl_params_set or sl_params_remove that changes ps
 * gives it its own copy again. A shared list must be cleared on the thread
 * that interned it (a client's lists never leave its worker). Best effort:
 * out of memory, ps stays as it is. */
void sl_params_share(sl_params_t *ps);
/* The lists interned on this thread now (for tests). */
int sl_params_shared_count(void);

#endif
