/* The log sink: one process-wide destination and level, set at start-up and on
 * reload. Lines look like
 *   2026-11-23T20:30:01.123Z level=info C-1 db=app user=bob msg="login ok"
 * Writes are single fprintf calls on a line-buffered stream. */
#include "sluice/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static struct {
    enum sl_log_level level;
    FILE *file; /* owned unless stderr */
} sink = {SL_LOG_INFO, NULL};

static const char *level_names[] = {"error", "warn", "info", "debug"};

bool sl_log_enabled(enum sl_log_level level) { return level <= sink.level; }

void sl_log_set_level(enum sl_log_level level) { sink.level = level; }

int sl_log_open(const char *path) {
    if (!path || !*path) {
        if (sink.file && sink.file != stderr) fclose(sink.file);
        sink.file = NULL;
        return 0;
    }
    FILE *f = fopen(path, "a");
    if (!f) return -errno;
    setvbuf(f, NULL, _IOLBF, 0);
    if (sink.file && sink.file != stderr) fclose(sink.file);
    sink.file = f;
    return 0;
}

void sl_log_write(enum sl_log_level level, const char *tag, const char *fmt, ...) {
    FILE *out = sink.file ? sink.file : stderr;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    char raw[1024], msg[1024 * 4], safe_tag[256 * 4];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    sl_log_escape(raw, msg, sizeof msg);
    sl_log_escape(tag ? tag : "", safe_tag, sizeof safe_tag);
    fprintf(out, "%s.%03dZ level=%s%s%s msg=\"%s\"\n", ts, (int)(tv.tv_usec / 1000),
            level_names[level], *safe_tag ? " " : "", safe_tag, msg);
}

/* Names and messages come from clients (a user name, a database name, a
 * backend's error text): a newline or an escape sequence in them must not
 * forge a log line or drive a terminal. Control bytes become \xNN and a
 * double quote (which would end msg="...") becomes a single one. */
size_t sl_log_escape(const char *in, char *out, size_t cap) {
    size_t o = 0;
    if (cap == 0) return 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 5 < cap; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            snprintf(out + o, cap - o, "\\x%02x", *p);
            o += 4;
        } else {
            out[o++] = *p == '"' ? '\'' : (char)*p;
        }
    }
    out[o] = '\0';
    return o;
}
