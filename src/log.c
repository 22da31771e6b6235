/* The log sink: one process-wide destination and level, set at start-up and on
 * reload. Lines look like
 *   2026-11-23T20:30:01.123Z level=info C-1 db=app user=bob msg="login ok"
 * Writes are single fprintf calls on a line-buffered stream, under the
 * sink's mutex: lines of two workers never interleave (stdio's own lock
 * does that much), and a reopen (SIGHUP, RELOAD) never closes the stream
 * under another thread's write. */
#include "sluice/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static struct {
    _Atomic int level;  /* enum sl_log_level: read by every thread before each line */
    pthread_mutex_t mu; /* guards file */
    FILE *file;         /* owned unless stderr */
} sink = {SL_LOG_INFO, PTHREAD_MUTEX_INITIALIZER, NULL};

static const char *level_names[] = {"error", "warn", "info", "debug"};

bool sl_log_enabled(enum sl_log_level level) {
    return (int)level <= atomic_load_explicit(&sink.level, memory_order_relaxed);
}

void sl_log_set_level(enum sl_log_level level) {
    atomic_store_explicit(&sink.level, (int)level, memory_order_relaxed);
}

int sl_log_open(const char *path) {
    FILE *f = NULL;
    if (path && *path) {
        f = fopen(path, "a");
        if (!f) return -errno;
        setvbuf(f, NULL, _IOLBF, 0);
    }
    pthread_mutex_lock(&sink.mu);
    FILE *old = sink.file;
    sink.file = f;
    pthread_mutex_unlock(&sink.mu);
    if (old && old != stderr) fclose(old);
    return 0;
}

void sl_log_write(enum sl_log_level level, const char *tag, const char *fmt, ...) {
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
    pthread_mutex_lock(&sink.mu);
    fprintf(sink.file ? sink.file : stderr, "%s.%03dZ level=%s%s%s msg=\"%s\"\n", ts,
            (int)(tv.tv_usec / 1000), level_names[level], *safe_tag ? " " : "", safe_tag, msg);
    pthread_mutex_unlock(&sink.mu);
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
