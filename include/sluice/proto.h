/* PostgreSQL v3 wire protocol: framing, parsing and building messages.
 * Pure: no I/O, no logging, no allocation; parsed strings point into the
 * caller's bytes. Owns nothing about connections. */
#ifndef SLUICE_PROTO_H
#define SLUICE_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "sluice/buf.h"
#include "sluice/err.h"

#define SL_PROTO_V3 196608u         /* 3.0 */
#define SL_PROTO_CANCEL 80877102u   /* CancelRequest code */
#define SL_PROTO_SSL 80877103u      /* SSLRequest code */
#define SL_PROTO_GSSENC 80877104u   /* GSSENCRequest code */
#define SL_STARTUP_MAX_BYTES 10240u /* longest startup packet accepted */
#define SL_STARTUP_MAX_PARAMS 64

typedef struct sl_kv {
    const char *name;  /* borrowed, NUL-terminated */
    const char *value; /* borrowed, NUL-terminated */
} sl_kv_t;

enum sl_startup_kind { SL_SU_STARTUP, SL_SU_SSL, SL_SU_GSSENC, SL_SU_CANCEL };

typedef struct sl_startup {
    enum sl_startup_kind kind;
    uint32_t version; /* protocol code as sent */
    int nparams;
    sl_kv_t params[SL_STARTUP_MAX_PARAMS]; /* borrowed from the packet */
    uint32_t cancel_pid, cancel_key;       /* SL_SU_CANCEL only */
} sl_startup_t;

/* Parses the untyped first packet of a connection. Returns bytes consumed,
 * SL_ENEEDMORE, SL_EBADLEN (length under 8), SL_ETOOBIG (over 10 KiB),
 * SL_EVERSION (protocol other than 3.x) or SL_EPROTO (malformed body). */
ssize_t sl_proto_parse_startup(const uint8_t *p, size_t n, sl_startup_t *out);

/* Returns the value of a startup parameter, or NULL. */
const char *sl_startup_get(const sl_startup_t *su, const char *name);

/* A protocol option ("_pq_.name"): a request to change the protocol, not a
 * setting. sluice knows none; they are never applied to a session. */
static inline bool sl_proto_is_protocol_option(const char *name) {
    return strncmp(name, "_pq_.", 5) == 0;
}

/* NegotiateProtocolVersion ('v') as PostgreSQL 15 answers a startup packet
 * asking for more than 3.0: the newest version sluice speaks (3.0, as the
 * full code 196608 like PostgreSQL sends it) and the names of the protocol
 * options it does not know. Returns 1 when written, 0 when the client asked
 * for 3.0 without options (no message is due), or SL_ENOSPACE. */
int sl_proto_put_negotiate_version(sl_buf_t *b, const sl_startup_t *su) SL_MUST_USE;

/* Splits a libpq `options` value into name/value pairs: "-c a=b", "-ca=b" and
 * "--a=b" forms, with backslash escapes for spaces. The string is rewritten
 * in place; each pair points into it. Returns pairs found or SL_EPROTO for a
 * switch other than -c/--. */
int sl_proto_parse_options(char *opts, sl_kv_t *out, int max);

/* ---- Incremental framing of typed messages --------------------------------
 * Feed bytes; the scanner reports the start of each message (type and
 * length known) and its end. If the caller sets `collect` on START, the body
 * is copied into coll (up to coll_cap bytes; coll_len says how much). */
enum sl_scan_ev { SL_SCAN_NONE, SL_SCAN_START, SL_SCAN_END, SL_SCAN_ERROR };

typedef struct sl_scan {
    uint8_t hdr[5];
    uint8_t hdr_len;   /* header bytes seen so far */
    bool in_body;      /* between START and END */
    bool collect;      /* set by the caller on START */
    uint8_t type;      /* current message type */
    uint32_t len;      /* current message length incl. the 4 length bytes */
    uint32_t remain;   /* body bytes still to come */
    uint8_t *coll;     /* borrowed collection buffer */
    uint32_t coll_cap; /* bytes */
    uint32_t coll_len; /* bytes collected of the current message */
} sl_scan_t;

/* Consumes bytes up to the next event; returns the count consumed and sets
 * *ev. SL_SCAN_NONE means all n bytes were consumed with nothing to report.
 * SL_SCAN_ERROR: declared length under 4. */
size_t sl_scan_feed(sl_scan_t *s, const uint8_t *p, size_t n, enum sl_scan_ev *ev);
/* Whether t is the type of a message a PostgreSQL backend sends (protocol
 * 3.0); anything else means the stream is garbage. */
bool sl_proto_backend_type_ok(uint8_t t);
/* True between messages (no partial header or body outstanding). */
static inline bool sl_scan_at_boundary(const sl_scan_t *s) {
    return !s->in_body && !s->hdr_len;
}
/* True when the whole body of the current message was collected. */
static inline bool sl_scan_complete(const sl_scan_t *s) {
    return s->coll_len == s->len - 4;
}

/* ---- Reading bodies of messages sluice must understand ---------------- */
typedef struct sl_error_fields {
    const char *severity, *code, *message; /* borrowed; NULL when absent. code only when it is a
                                              SQLSTATE (five digits or capitals): any other 'C'
                                              field is never passed on or logged as one */
} sl_error_fields_t;

int sl_proto_parse_error(const uint8_t *body, size_t n, sl_error_fields_t *out) SL_MUST_USE;
int sl_proto_parse_param_status(const uint8_t *body, size_t n, sl_kv_t *out) SL_MUST_USE;
/* SASLInitialResponse: mechanism name and initial client data. */
int sl_proto_parse_sasl_initial(const uint8_t *body, size_t n, const char **mech,
                                const uint8_t **data, uint32_t *data_len) SL_MUST_USE;

/* ---- Building messages into a buffer --------------------------------------
 * Each returns SL_OK or SL_ENOSPACE (buffer left unchanged). */
int sl_proto_put_error(sl_buf_t *b, const char *severity, const char *code,
                       const char *msg) SL_MUST_USE;
/* A NoticeResponse (severity NOTICE): something a client should know that
 * is no error. */
int sl_proto_put_notice(sl_buf_t *b, const char *code, const char *msg) SL_MUST_USE;
int sl_proto_put_auth(sl_buf_t *b, uint32_t code, const void *data, size_t n) SL_MUST_USE;
int sl_proto_put_param_status(sl_buf_t *b, const char *name, const char *value) SL_MUST_USE;
int sl_proto_put_backend_key(sl_buf_t *b, uint32_t pid, uint32_t key) SL_MUST_USE;
int sl_proto_put_ready(sl_buf_t *b, char status) SL_MUST_USE;
int sl_proto_put_query(sl_buf_t *b, const char *sql) SL_MUST_USE;
/* A message without a body: ParseComplete '1', CloseComplete '3', ... */
int sl_proto_put_empty(sl_buf_t *b, uint8_t type) SL_MUST_USE;
int sl_proto_put_command_complete(sl_buf_t *b, const char *tag) SL_MUST_USE;
int sl_proto_put_byte(sl_buf_t *b, uint8_t c) SL_MUST_USE;

/* Writes the SQL literal form of s ('...' with quotes doubled, E'' when it
 * holds backslashes) into out; returns the length or -1 when it does not fit. */
int sl_proto_quote_literal(const char *s, char *out, size_t cap);
/* Writes a double-quoted identifier; returns the length or -1. */
int sl_proto_quote_ident(const char *s, char *out, size_t cap);

static inline uint32_t sl_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void sl_put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

#endif
