/* The HTTP/1.x request head parser of the metrics endpoint (see expose.h).
 * Pure, in the manner of picohttpparser: it reads the caller's bytes,
 * validates each complete line as it comes (so that garbage is refused at
 * its first line feed, not when the head limit is reached) and points into
 * the buffer for the path. Only what the endpoint needs is kept: method,
 * path and version; header values are checked for control bytes and
 * otherwise ignored (every answer closes the connection, so no header
 * changes what the endpoint does). */
#include <string.h>

#include "expose.h"
#include "sluice/err.h"

/* RFC 9110 token characters. */
static bool is_tchar(unsigned char c) {
    if (c >= '0' && c <= '9') return true;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Visible characters of a request target (no space, no control byte). */
static bool is_target_char(unsigned char c) {
    return c > 0x20 && c != 0x7f;
}

/* A line of p[0..len) without its line end. */
static int parse_request_line(const char *p, size_t len, sl_http_req_t *req) {
    size_t i = 0;
    while (i < len && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= len || p[i] != ' ') return SL_EPROTO;
    if (i == 3 && !memcmp(p, "GET", 3))
        req->method = SL_HTTP_GET;
    else if (i == 4 && !memcmp(p, "HEAD", 4))
        req->method = SL_HTTP_HEAD;
    else
        req->method = SL_HTTP_OTHER;
    size_t t = ++i;
    while (i < len && is_target_char((unsigned char)p[i]))
        i++;
    if (i == t || i >= len || p[i] != ' ') return SL_EPROTO;
    req->path = p + t;
    const char *q = memchr(p + t, '?', i - t);
    req->path_len = q ? (size_t)(q - (p + t)) : i - t;
    i++;
    if (len - i != 8 || memcmp(p + i, "HTTP/1.", 7) || p[i + 7] < '0' || p[i + 7] > '9')
        return SL_EPROTO;
    req->minor = p[i + 7] - '0';
    return SL_OK;
}

/* "name: value": a token, a colon, then no control byte but tab. A line
 * starting with a space or tab (obsolete folding) is refused, as RFC 9112
 * allows. */
static int check_header_line(const char *p, size_t len) {
    size_t i = 0;
    while (i < len && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= len || p[i] != ':') return SL_EPROTO;
    for (i++; i < len; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) return SL_EPROTO;
    }
    return SL_OK;
}

int sl_http_parse(const char *p, size_t n, sl_http_req_t *req) {
    size_t pos = 0;
    /* Empty lines before the request line are ignored (RFC 9112 2.2). */
    while (pos < n && (p[pos] == '\r' || p[pos] == '\n')) {
        if (p[pos] == '\r' && pos + 1 < n && p[pos + 1] != '\n') return SL_EPROTO;
        pos++;
    }
    bool first = true;
    while (pos < n) {
        const char *nl = memchr(p + pos, '\n', n - pos);
        if (!nl) break;
        size_t end = (size_t)(nl - p), len = end - pos;
        if (len > 0 && p[end - 1] == '\r') len--;
        int rc;
        if (first)
            rc = parse_request_line(p + pos, len, req);
        else if (len == 0)
            return (int)(end + 1);
        else
            rc = check_header_line(p + pos, len);
        if (rc != SL_OK) return rc;
        first = false;
        pos = end + 1;
    }
    /* An incomplete line may already be wrong: a NUL or another control
     * byte can never become valid, so say so now. */
    for (size_t i = pos; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f) return SL_EPROTO;
    }
    return SL_ENEEDMORE;
}
