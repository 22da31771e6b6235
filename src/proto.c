/* PostgreSQL v3 protocol framing, parsing and building. Every length read
 * from the wire is checked against the bytes actually present before use. */
#include "sluice/proto.h"

#include <string.h>

ssize_t sl_proto_parse_startup(const uint8_t *p, size_t n, sl_startup_t *out) {
    if (n < 4) return SL_ENEEDMORE;
    uint32_t len = sl_be32(p);
    if (len < 8) return SL_EBADLEN;
    if (len > SL_STARTUP_MAX_BYTES) return SL_ETOOBIG;
    if (n < 8) return SL_ENEEDMORE;
    uint32_t code = sl_be32(p + 4);
    memset(out, 0, offsetof(sl_startup_t, params));
    out->version = code;
    if (code == SL_PROTO_SSL || code == SL_PROTO_GSSENC) {
        if (len != 8) return SL_EBADLEN;
        out->kind = code == SL_PROTO_SSL ? SL_SU_SSL : SL_SU_GSSENC;
        return 8;
    }
    if (code == SL_PROTO_CANCEL) {
        if (len != 16) return SL_EBADLEN;
        if (n < 16) return SL_ENEEDMORE;
        out->kind = SL_SU_CANCEL;
        out->cancel_pid = sl_be32(p + 8);
        out->cancel_key = sl_be32(p + 12);
        return 16;
    }
    if (code >> 16 != 3) return SL_EVERSION;
    if (n < len) return SL_ENEEDMORE;
    out->kind = SL_SU_STARTUP;
    /* Body: name\0value\0 ... \0 */
    const char *s = (const char *)p + 8;
    const char *end = (const char *)p + len;
    if (end[-1] != '\0') return SL_EPROTO;
    while (s < end && *s) {
        const char *name = s;
        const char *z = memchr(s, '\0', (size_t)(end - s));
        if (!z || z + 1 >= end) return SL_EPROTO;
        const char *value = z + 1;
        const char *z2 = memchr(value, '\0', (size_t)(end - value));
        if (!z2) return SL_EPROTO;
        if (out->nparams == SL_STARTUP_MAX_PARAMS) return SL_EPROTO;
        out->params[out->nparams].name = name;
        out->params[out->nparams].value = value;
        out->nparams++;
        s = z2 + 1;
    }
    /* The list ends with one terminating NUL exactly at the end. */
    if (s != end - 1) return SL_EPROTO;
    return (ssize_t)len;
}

const char *sl_startup_get(const sl_startup_t *su, const char *name) {
    for (int i = 0; i < su->nparams; i++)
        if (strcmp(su->params[i].name, name) == 0) return su->params[i].value;
    return NULL;
}

/* Reads one whitespace-separated token with backslash escapes, in place. */
static char *next_token(char **cur) {
    char *s = *cur;
    while (*s == ' ' || *s == '\t')
        s++;
    if (!*s) return NULL;
    char *tok = s, *w = s;
    while (*s && *s != ' ' && *s != '\t') {
        if (*s == '\\' && s[1]) s++;
        *w++ = *s++;
    }
    if (*s) s++;
    *w = '\0';
    *cur = s;
    return tok;
}

static int split_pair(char *tok, sl_kv_t *kv) {
    char *eq = strchr(tok, '=');
    if (!eq || eq == tok) return SL_EPROTO;
    *eq = '\0';
    /* PostgreSQL accepts dashes for underscores in --name=value. */
    for (char *c = tok; *c; c++)
        if (*c == '-') *c = '_';
    kv->name = tok;
    kv->value = eq + 1;
    return SL_OK;
}

int sl_proto_parse_options(char *opts, sl_kv_t *out, int max) {
    int n = 0;
    char *cur = opts;
    char *tok;
    while ((tok = next_token(&cur))) {
        char *pair;
        if (strcmp(tok, "-c") == 0) {
            pair = next_token(&cur);
            if (!pair) return SL_EPROTO;
        } else if (strncmp(tok, "-c", 2) == 0) {
            pair = tok + 2;
        } else if (strncmp(tok, "--", 2) == 0) {
            pair = tok + 2;
        } else {
            return SL_EPROTO;
        }
        if (n == max) return SL_EPROTO;
        if (split_pair(pair, &out[n]) < 0) return SL_EPROTO;
        n++;
    }
    return n;
}

size_t sl_scan_feed(sl_scan_t *s, const uint8_t *p, size_t n, enum sl_scan_ev *ev) {
    size_t used = 0;
    if (!s->in_body) {
        if (s->hdr_len == 0 && n >= 5) {
            /* The common case, a whole header at hand: read it in place
             * rather than byte by byte (this runs for every message). */
            s->type = p[0];
            s->len = sl_be32(p + 1);
            used = 5;
        } else {
            while (s->hdr_len < 5 && used < n)
                s->hdr[s->hdr_len++] = p[used++];
            if (s->hdr_len < 5) {
                *ev = SL_SCAN_NONE;
                return used;
            }
            s->type = s->hdr[0];
            s->len = sl_be32(s->hdr + 1);
            s->hdr_len = 0;
        }
        if (s->len < 4) {
            *ev = SL_SCAN_ERROR;
            return used;
        }
        s->remain = s->len - 4;
        s->in_body = true;
        s->collect = false;
        s->coll_len = 0;
        *ev = SL_SCAN_START;
        return used;
    }
    size_t take = n < s->remain ? n : s->remain;
    if (s->collect && s->coll && s->coll_len < s->coll_cap) {
        size_t room = s->coll_cap - s->coll_len;
        size_t k = take < room ? take : room;
        memcpy(s->coll + s->coll_len, p, k);
        s->coll_len += (uint32_t)k;
    }
    s->remain -= (uint32_t)take;
    if (s->remain == 0) {
        s->in_body = false;
        *ev = SL_SCAN_END;
    } else {
        *ev = SL_SCAN_NONE;
    }
    return take;
}

/* The message types a backend sends, as a table: the relay asks for every
 * message of every reply (a strchr per message cost about 30 instructions). */
#define BACKEND_TYPE(t)                                                                            \
    ((t) == '1' || (t) == '2' || (t) == '3' || (t) == 'A' || (t) == 'C' || (t) == 'D' ||           \
     (t) == 'E' || (t) == 'G' || (t) == 'H' || (t) == 'I' || (t) == 'K' || (t) == 'N' ||           \
     (t) == 'R' || (t) == 'S' || (t) == 'T' || (t) == 'V' || (t) == 'W' || (t) == 'Z' ||           \
     (t) == 'c' || (t) == 'd' || (t) == 'n' || (t) == 's' || (t) == 't' || (t) == 'v')
#define BACKEND_TYPES_8(i)                                                                         \
    BACKEND_TYPE(i), BACKEND_TYPE(i + 1), BACKEND_TYPE(i + 2), BACKEND_TYPE(i + 3),                \
        BACKEND_TYPE(i + 4), BACKEND_TYPE(i + 5), BACKEND_TYPE(i + 6), BACKEND_TYPE(i + 7)
#define BACKEND_TYPES_64(i)                                                                        \
    BACKEND_TYPES_8(i), BACKEND_TYPES_8(i + 8), BACKEND_TYPES_8(i + 16), BACKEND_TYPES_8(i + 24),  \
        BACKEND_TYPES_8(i + 32), BACKEND_TYPES_8(i + 40), BACKEND_TYPES_8(i + 48),                 \
        BACKEND_TYPES_8(i + 56)
static const bool backend_types[256] = {BACKEND_TYPES_64(0), BACKEND_TYPES_64(64),
                                        BACKEND_TYPES_64(128), BACKEND_TYPES_64(192)};

bool sl_proto_backend_type_ok(uint8_t t) {
    return backend_types[t];
}

/* A SQLSTATE as PostgreSQL sends it: five digits or upper-case letters. */
static bool sqlstate_ok(const char *code) {
    for (int i = 0; i < 5; i++)
        if (!((code[i] >= '0' && code[i] <= '9') || (code[i] >= 'A' && code[i] <= 'Z')))
            return false;
    return code[5] == '\0';
}

int sl_proto_parse_error(const uint8_t *body, size_t n, sl_error_fields_t *out) {
    memset(out, 0, sizeof *out);
    size_t i = 0;
    while (i < n && body[i]) {
        uint8_t field = body[i++];
        const char *v = (const char *)body + i;
        const uint8_t *z = memchr(body + i, '\0', n - i);
        if (!z) return SL_EPROTO;
        if (field == 'S' && !out->severity) out->severity = v;
        if (field == 'V') out->severity = v;
        if (field == 'C' && (size_t)(z - body) - i == 5 && sqlstate_ok(v)) out->code = v;
        if (field == 'M') out->message = v;
        i = (size_t)(z - body) + 1;
    }
    return SL_OK;
}

int sl_proto_parse_param_status(const uint8_t *body, size_t n, sl_kv_t *out) {
    const uint8_t *z = memchr(body, '\0', n);
    if (!z || z == body) return SL_EPROTO;
    size_t rest = n - (size_t)(z + 1 - body);
    if (!rest || !memchr(z + 1, '\0', rest)) return SL_EPROTO;
    out->name = (const char *)body;
    out->value = (const char *)z + 1;
    return SL_OK;
}

int sl_proto_parse_sasl_initial(const uint8_t *body, size_t n, const char **mech,
                                const uint8_t **data, uint32_t *data_len) {
    const uint8_t *z = memchr(body, '\0', n);
    if (!z) return SL_EPROTO;
    size_t off = (size_t)(z + 1 - body);
    if (n - off < 4) return SL_EPROTO;
    uint32_t dl = sl_be32(body + off);
    off += 4;
    if (dl == 0xffffffffu) dl = 0;
    if (dl > n - off) return SL_EPROTO;
    *mech = (const char *)body;
    *data = body + off;
    *data_len = dl;
    return SL_OK;
}

/* Reserves a typed message of body length n; returns the body pointer. */
static uint8_t *put_begin(sl_buf_t *b, uint8_t type, size_t n) {
    if (sl_buf_space(b) < n + 5) sl_buf_compact(b);
    if (sl_buf_space(b) < n + 5) return NULL;
    uint8_t *p = sl_buf_wptr(b);
    p[0] = type;
    sl_put_be32(p + 1, (uint32_t)(n + 4));
    b->tail += (uint32_t)(n + 5);
    return p + 5;
}

/* ErrorResponse and NoticeResponse carry the same fields. */
static int put_fields(sl_buf_t *b, uint8_t type, const char *severity, const char *code,
                      const char *msg) {
    size_t ls = strlen(severity), lc = strlen(code), lm = strlen(msg);
    size_t n = (1 + ls + 1) * 2 + 1 + lc + 1 + 1 + lm + 1 + 1;
    uint8_t *p = put_begin(b, type, n);
    if (!p) return SL_ENOSPACE;
    *p++ = 'S';
    memcpy(p, severity, ls + 1), p += ls + 1;
    *p++ = 'V';
    memcpy(p, severity, ls + 1), p += ls + 1;
    *p++ = 'C';
    memcpy(p, code, lc + 1), p += lc + 1;
    *p++ = 'M';
    memcpy(p, msg, lm + 1), p += lm + 1;
    *p = '\0';
    return SL_OK;
}

int sl_proto_put_error(sl_buf_t *b, const char *severity, const char *code, const char *msg) {
    return put_fields(b, 'E', severity, code, msg);
}

int sl_proto_put_notice(sl_buf_t *b, const char *code, const char *msg) {
    return put_fields(b, 'N', "NOTICE", code, msg);
}

int sl_proto_put_auth(sl_buf_t *b, uint32_t code, const void *data, size_t n) {
    uint8_t *p = put_begin(b, 'R', 4 + n);
    if (!p) return SL_ENOSPACE;
    sl_put_be32(p, code);
    if (n) memcpy(p + 4, data, n);
    return SL_OK;
}

int sl_proto_put_param_status(sl_buf_t *b, const char *name, const char *value) {
    size_t ln = strlen(name) + 1, lv = strlen(value) + 1;
    uint8_t *p = put_begin(b, 'S', ln + lv);
    if (!p) return SL_ENOSPACE;
    memcpy(p, name, ln);
    memcpy(p + ln, value, lv);
    return SL_OK;
}

int sl_proto_put_backend_key(sl_buf_t *b, uint32_t pid, uint32_t key) {
    uint8_t *p = put_begin(b, 'K', 8);
    if (!p) return SL_ENOSPACE;
    sl_put_be32(p, pid);
    sl_put_be32(p + 4, key);
    return SL_OK;
}

int sl_proto_put_ready(sl_buf_t *b, char status) {
    uint8_t *p = put_begin(b, 'Z', 1);
    if (!p) return SL_ENOSPACE;
    *p = (uint8_t)status;
    return SL_OK;
}

int sl_proto_put_negotiate_version(sl_buf_t *b, const sl_startup_t *su) {
    size_t n = 8;
    uint32_t nopts = 0;
    for (int i = 0; i < su->nparams; i++)
        if (sl_proto_is_protocol_option(su->params[i].name)) {
            n += strlen(su->params[i].name) + 1;
            nopts++;
        }
    if ((su->version & 0xffff) == 0 && nopts == 0) return 0;
    uint8_t *p = put_begin(b, 'v', n);
    if (!p) return SL_ENOSPACE;
    sl_put_be32(p, SL_PROTO_V3);
    sl_put_be32(p + 4, nopts);
    p += 8;
    for (int i = 0; i < su->nparams; i++)
        if (sl_proto_is_protocol_option(su->params[i].name)) {
            size_t l = strlen(su->params[i].name) + 1;
            memcpy(p, su->params[i].name, l);
            p += l;
        }
    return 1;
}

/* A message whose body is one NUL-terminated string. */
static int put_string(sl_buf_t *b, uint8_t type, const char *str) {
    size_t n = strlen(str) + 1;
    uint8_t *p = put_begin(b, type, n);
    if (!p) return SL_ENOSPACE;
    memcpy(p, str, n);
    return SL_OK;
}

int sl_proto_put_query(sl_buf_t *b, const char *sql) {
    return put_string(b, 'Q', sql);
}

int sl_proto_put_empty(sl_buf_t *b, uint8_t type) {
    return put_begin(b, type, 0) ? SL_OK : SL_ENOSPACE;
}

int sl_proto_put_command_complete(sl_buf_t *b, const char *tag) {
    return put_string(b, 'C', tag);
}

int sl_proto_put_byte(sl_buf_t *b, uint8_t c) {
    return sl_buf_append(b, &c, 1);
}

int sl_proto_quote_literal(const char *s, char *out, size_t cap) {
    size_t o = 0;
    bool esc = strchr(s, '\\') != NULL;
#define PUT(c)                                                                                     \
    do {                                                                                           \
        if (o + 1 >= cap) return -1;                                                               \
        out[o++] = (c);                                                                            \
    } while (0)
    if (esc) PUT('E');
    PUT('\'');
    for (; *s; s++) {
        if (*s == '\'' || *s == '\\') PUT(*s);
        PUT(*s);
    }
    PUT('\'');
    out[o] = '\0';
    return (int)o;
}

int sl_proto_quote_ident(const char *s, char *out, size_t cap) {
    size_t o = 0;
    PUT('"');
    for (; *s; s++) {
        if (*s == '"') PUT('"');
        PUT(*s);
    }
    PUT('"');
    out[o] = '\0';
    return (int)o;
#undef PUT
}
