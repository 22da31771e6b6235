/* Reading a whole small text file (auth_file, auth_hba_file) into memory,
 * with a size cap and errors that name the file and what it is. */
#ifndef SLUICE_TEXTFILE_H
#define SLUICE_TEXTFILE_H

#include <stddef.h>

#include "sluice/err.h"

/* NUL-terminated contents of path in *text (owned by the caller) and their
 * length in *len; "path: cannot open <what>: ..." in err on failure. */
int sl_textfile_read(const char *path, const char *what, char **text, size_t *len, char *err,
                     size_t errlen) SL_MUST_USE;

#endif
