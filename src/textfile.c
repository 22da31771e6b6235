/* Whole-file reads for the small files sluice parses. */
#include "sluice/textfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEXTFILE_MAX_BYTES (64L << 20)

int sl_textfile_read(const char *path, const char *what, char **text, size_t *len, char *err,
                     size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open %s: %s", path, what, strerror(errno));
        return SL_ECONFIG;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (size < 0 || size > TEXTFILE_MAX_BYTES) {
        fclose(f);
        snprintf(err, errlen, "%s: %s too large", path, what);
        return SL_ECONFIG;
    }
    char *t = malloc((size_t)size + 1);
    size_t got = t ? fread(t, 1, (size_t)size, f) : 0;
    fclose(f);
    if (!t) {
        snprintf(err, errlen, "%s: out of memory", path);
        return SL_ENOMEM;
    }
    t[got] = '\0';
    *text = t;
    *len = got;
    return SL_OK;
}
