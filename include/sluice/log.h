/* Levelled, logfmt-style log lines. The level is tested before arguments are
 * evaluated. Each connection passes its own tag ("C-12 db=app user=bob
 * peer=127.0.0.1:5544") so lines can be grepped per connection. Callers must
 * never pass a password or any other secret. */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum sl_log_level { SL_LOG_ERROR, SL_LOG_WARN, SL_LOG_INFO, SL_LOG_DEBUG };

bool sl_log_enabled(enum sl_log_level level);
void sl_log_set_level(enum sl_log_level level);
/* Opens (or reopens) the log file; NULL or "" logs to stderr. Returns 0 or -errno. */
int sl_log_open(const char *path);
/* Copies in to out (cap bytes, NUL-terminated) with control bytes as \xNN
 * and double quotes as single ones; returns the length written. Every line
 * goes through it: tags and messages carry client-chosen names. */
size_t sl_log_escape(const char *in, char *out, size_t cap);
void sl_log_write(enum sl_log_level level, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define SL_LOG_(lvl, tag, ...)                                                                     \
    do {                                                                                           \
        if (sl_log_enabled(lvl)) sl_log_write(lvl, tag, __VA_ARGS__);                              \
    } while (0)
#define sl_log_error(tag, ...) SL_LOG_(SL_LOG_ERROR, tag, __VA_ARGS__)
#define sl_log_warn(tag, ...) SL_LOG_(SL_LOG_WARN, tag, __VA_ARGS__)
#define sl_log_info(tag, ...) SL_LOG_(SL_LOG_INFO, tag, __VA_ARGS__)
#define sl_log_debug(tag, ...) SL_LOG_(SL_LOG_DEBUG, tag, __VA_ARGS__)

#endif
