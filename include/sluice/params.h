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
    sl_param_t *v; /* owned array */
    int n, cap;
} sl_params_t;

const char *sl_params_get(const sl_params_t *ps, const char *name);
int sl_params_set(sl_params_t *ps, const char *name, const char *value);
void sl_params_clear(sl_params_t *ps);
/* Removes name, keeping the order of the others. */
void sl_params_remove(sl_params_t *ps, const char *name);
/* A hash of the names (without case) and values in list order; never 0. */
uint64_t sl_params_fingerprint(const sl_params_t *ps);

#endif
