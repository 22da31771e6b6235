/* Comma-separated name lists from the config ("a, b, c*"): membership test
 * without case, a trailing * matching any suffix. Pure. */
#ifndef SLUICE_STRLIST_H
#define SLUICE_STRLIST_H

#include <stdbool.h>

bool sl_strlist_has(const char *list, const char *name);

#endif
