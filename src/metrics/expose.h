/* Internal to the metrics module (src/metrics/): the pure HTTP request
 * parser (http_parse.c), the text exposition of a loop's state (expose.c)
 * and the health verdicts, which http.c serves. */
#ifndef SLUICE_METRICS_EXPOSE_H
#define SLUICE_METRICS_EXPOSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/worker.h"

/* ---- request head parser (pure: no I/O, no allocation) ---- */

/* Longest request head (request line and headers) read; a longer one is
 * refused with 431. */
#define SL_HTTP_MAX_HEAD 8192

enum sl_http_method { SL_HTTP_GET, SL_HTTP_HEAD, SL_HTTP_OTHER };

typedef struct sl_http_req {
    enum sl_http_method method;
    const char *path; /* borrowed: into the caller's buffer, up to '?' */
    size_t path_len;
    int minor; /* HTTP/1.<minor> */
} sl_http_req_t;

/* Parses the head in p[0..n): the request line and the header lines up to
 * the empty line (CRLF or a bare LF). Returns the bytes of the head (> 0),
 * SL_ENEEDMORE when the empty line has not come yet, or SL_EPROTO for a
 * malformed head (bad request line, a header line without a name and
 * colon, a folded line, control bytes). */
int sl_http_parse(const char *p, size_t n, sl_http_req_t *req);

/* ---- /metrics ---- */

typedef struct sl_expose sl_expose_t;

/* Copies what /metrics reports of w (pools, servers and clients by state,
 * backends, counters) so that the text can be written in pieces while the
 * loop goes on: about 1 KiB per pool. start_s: process start (Unix time).
 * NULL when out of memory. */
sl_expose_t *sl_expose_snapshot(const sl_worker_t *w, int64_t start_s);
/* Writes the next piece of the text into buf (cap bytes; at least
 * SL_EXPOSE_MIN_CHUNK): whole lines only. Returns its length, 0 at the
 * end. */
#define SL_EXPOSE_MIN_CHUNK 32768
size_t sl_expose_next(sl_expose_t *e, char *buf, size_t cap);
void sl_expose_free(sl_expose_t *e);

/* ---- /health ---- */

/* true when w accepts clients and every database's primary is known to
 * answer; else false with a one-line reason (cap bytes). */
bool sl_expose_healthy(const sl_worker_t *w, char *reason, size_t cap);

#endif
