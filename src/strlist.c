/* Name lists from the config. */
#include "sluice/strlist.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

bool sl_strlist_has(const char *list, const char *name) {
    size_t nlen = strlen(name);
    const char *p = list;
    while (p && *p) {
        while (*p == ' ' || *p == ',' || *p == '\t') p++;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *t = e;
        while (t > p && isspace((unsigned char)t[-1])) t--;
        size_t len = (size_t)(t - p);
        if (len && p[len - 1] == '*') {
            if (nlen >= len - 1 && !strncasecmp(name, p, len - 1)) return true;
        } else if (len && len == nlen && !strncasecmp(name, p, len)) {
            return true;
        }
        p = e;
    }
    return false;
}
