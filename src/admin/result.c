/* The console's reply writer: RowDescription, DataRow, CommandComplete,
 * ErrorResponse and NoticeResponse in a block that grows as needed (a
 * console reply is as long as the lists it walks, like PgBouncer's
 * dynamic PktBuf). Values are sent in text format with the column's type
 * OID, so psql aligns numbers and drivers convert them (int8 to integers,
 * numeric to decimals). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "sluice/log.h"
#include "sluice/utf8.h"

static bool reserve(sl_res_t *r, size_t n) {
    if (r->oom) return false;
    if (r->len + n <= r->cap) return true;
    size_t cap = r->cap ? r->cap : 1024;
    while (cap < r->len + n)
        cap *= 2;
    uint8_t *p = realloc(r->data, cap);
    if (!p) {
        r->oom = true;
        return false;
    }
    r->data = p;
    r->cap = cap;
    return true;
}

static void put(sl_res_t *r, const void *p, size_t n) {
    if (!reserve(r, n)) return;
    memcpy(r->data + r->len, p, n);
    r->len += n;
}

static void put32(sl_res_t *r, uint32_t v) {
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(r, b, 4);
}

static void put16(sl_res_t *r, uint16_t v) {
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    put(r, b, 2);
}

/* Writes the message length of the message that starts at `start`. */
static void seal(sl_res_t *r, size_t start) {
    if (r->oom) return;
    uint32_t n = (uint32_t)(r->len - start - 1);
    uint8_t *p = r->data + start + 1;
    p[0] = (uint8_t)(n >> 24), p[1] = (uint8_t)(n >> 16), p[2] = (uint8_t)(n >> 8),
    p[3] = (uint8_t)n;
}

void sl_res_begin(sl_res_t *r, const sl_res_col_t *cols, int ncols) {
    size_t start = r->len;
    put(r, "T\0\0\0\0", 5);
    put16(r, (uint16_t)ncols);
    for (int i = 0; i < ncols; i++) {
        put(r, cols[i].name, strlen(cols[i].name) + 1);
        put32(r, 0); /* table OID */
        put16(r, 0); /* column number */
        put32(r, (uint32_t)cols[i].type);
        put16(r, cols[i].type == SL_RES_INT8 ? 8 : cols[i].type == SL_RES_TIMESTAMP ? 8 : 0xffff);
        put32(r, 0xffffffffu); /* type modifier: none */
        put16(r, 0);           /* text format */
    }
    seal(r, start);
    r->cols = cols;
    r->ncols = (uint16_t)ncols;
    r->nrows = 0;
}

void sl_res_row(sl_res_t *r) {
    r->row_start = r->len;
    r->row_cols = 0;
    put(r, "D\0\0\0\0", 5);
    put16(r, r->ncols);
}

static void value(sl_res_t *r, const char *s, size_t n) {
    put32(r, (uint32_t)n);
    put(r, s, n);
    r->row_cols++;
}

/* A text value comes from a client often (application_name, a database or
 * user name through the '*' entry) and may not be UTF-8: a single such
 * value would make every SHOW that lists it undecodable by drivers. */
static void text_value(sl_res_t *r, const char *s, size_t n) {
    size_t at = r->len + 4;
    value(r, s, n);
    if (!r->oom) sl_utf8_clean((char *)r->data + at, n);
}

void sl_res_text(sl_res_t *r, const char *s) {
    if (!s) {
        sl_res_null(r);
        return;
    }
    text_value(r, s, strlen(s));
}

void sl_res_int(sl_res_t *r, int64_t v) {
    char b[24];
    int n = snprintf(b, sizeof b, "%" PRId64, v);
    value(r, b, (size_t)n);
}

void sl_res_uint(sl_res_t *r, uint64_t v) {
    char b[24];
    int n = snprintf(b, sizeof b, "%" PRIu64, v);
    value(r, b, (size_t)n);
}

void sl_res_null(sl_res_t *r) {
    put32(r, 0xffffffffu);
    r->row_cols++;
}

void sl_res_time(sl_res_t *r, int64_t loop_ms, const sl_loop_t *l) {
    if (loop_ms <= 0) {
        sl_res_null(r);
        return;
    }
    /* The loop clock is monotonic: place it on the wall clock by now. */
    time_t t = time(NULL) - (time_t)((sl_now_ms(l) - loop_ms) / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char b[32];
    size_t n = strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S", &tm);
    value(r, b, n);
}

void sl_res_row_end(sl_res_t *r) {
    if (r->row_cols != r->ncols && !r->oom) {
        /* A bug in a SHOW: the reply would confuse every client. */
        sl_log_error(NULL, "internal error: console row has %u columns, expected %u", r->row_cols,
                     r->ncols);
        r->oom = true;
        return;
    }
    seal(r, r->row_start);
    r->nrows++;
}

void sl_res_complete(sl_res_t *r, const char *tag) {
    size_t start = r->len;
    put(r, "C\0\0\0\0", 5);
    put(r, tag, strlen(tag) + 1);
    seal(r, start);
}

static void field_msg(sl_res_t *r, char type, const char *severity, const char *code,
                      const char *fmt, va_list ap) {
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* A message echoes what the client sent, shortened to fit: a cut can
     * fall inside a character, and the bytes may not be UTF-8 at all. */
    sl_utf8_clean(msg, strlen(msg));
    size_t start = r->len;
    char t[6] = {type, 0, 0, 0, 0, 0};
    put(r, t, 5);
    put(r, "S", 1), put(r, severity, strlen(severity) + 1);
    put(r, "V", 1), put(r, severity, strlen(severity) + 1);
    put(r, "C", 1), put(r, code, strlen(code) + 1);
    put(r, "M", 1), put(r, msg, strlen(msg) + 1);
    put(r, "", 1);
    seal(r, start);
}

void sl_res_error(sl_res_t *r, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    field_msg(r, 'E', "ERROR", code, fmt, ap);
    va_end(ap);
}

void sl_res_notice(sl_res_t *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    field_msg(r, 'N', "NOTICE", "00000", fmt, ap);
    va_end(ap);
}
