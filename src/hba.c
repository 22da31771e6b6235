/* pg_hba.conf lines for sluice's own client authentication. */
#include "sluice/hba.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/textfile.h"

const char *const sl_hba_method_names[] = {"reject", "trust", "md5", "scram-sha-256", "cert",
                                           "password", NULL};

enum conn_type { CT_LOCAL, CT_HOST, CT_HOSTSSL, CT_HOSTNOSSL };

typedef struct rule {
    enum conn_type type;
    char *dbs, *users;      /* owned; ",name,name," or NULL for all */
    int family;             /* AF_INET or AF_INET6; 0: any address */
    uint8_t addr[16], mask[16];
    enum sl_hba_method method;
    int line;
} rule_t;

struct sl_hba {
    rule_t *rules;
    int n;
};

void sl_hba_free(sl_hba_t *h) {
    if (!h) return;
    for (int i = 0; i < h->n; i++) free(h->rules[i].dbs), free(h->rules[i].users);
    free(h->rules);
    free(h);
}

/* ",a,b," for the list "a,b" (quotes dropped); NULL for all. */
static char *list_of(const char *field, bool *bad) {
    if (strcmp(field, "all") == 0) return NULL;
    size_t n = strlen(field);
    char *out = malloc(n + 3);
    if (!out) {
        *bad = true;
        return NULL;
    }
    size_t o = 0;
    out[o++] = ',';
    for (size_t i = 0; i < n; i++)
        if (field[i] != '"') out[o++] = field[i];
    out[o++] = ',';
    out[o] = '\0';
    return out;
}

/* Whether name is one entry of list (",a,b,"; NULL: all). A name with a
 * comma is in none: it would match across entries ("a,b" in ",a,b,"), or
 * at the list's first byte, whose p[-1] is outside it; the client chooses
 * its user and database names. */
static bool in_list(const char *list, const char *name) {
    if (!list) return true;
    if (!*name || strchr(name, ',')) return false;
    size_t n = strlen(name);
    for (const char *p = list; (p = strstr(p, name)); p++)
        if (p > list && p[-1] == ',' && p[n] == ',') return true;
    return false;
}

static bool mask_of_bits(uint8_t *mask, int bits, int max) {
    if (bits < 0 || bits > max) return false;
    memset(mask, 0, 16);
    for (int i = 0; i < bits; i++) mask[i / 8] |= (uint8_t)(0x80 >> (i % 8));
    return true;
}

static bool parse_addr(const char *s, int *family, uint8_t *out) {
    if (inet_pton(AF_INET, s, out) == 1) {
        *family = AF_INET;
        return true;
    }
    if (inet_pton(AF_INET6, s, out) == 1) {
        *family = AF_INET6;
        return true;
    }
    return false;
}

static int fail(char *err, size_t errlen, const char *name, int line, const char *why,
                const char *what) {
    snprintf(err, errlen, "%s:%d: %s%s%s%s", name, line, why, what ? " \"" : "", what ? what : "",
             what ? "\"" : "");
    return SL_ECONFIG;
}

/* Splits a line into whitespace-separated fields (a '#' starts a comment;
 * double quotes keep spaces). */
static int split(char *line, char **f, int max) {
    int n = 0;
    char *p = line;
    while (*p && n < max) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
        if (!*p || *p == '#') break;
        f[n++] = p;
        bool q = false;
        while (*p && (q || (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' && *p != '#'))) {
            if (*p == '"') q = !q;
            p++;
        }
        if (*p == '#') {
            *p = '\0';
            break;
        }
        if (*p) *p++ = '\0';
    }
    return n;
}

static int parse_line(sl_hba_t *h, char *text, const char *name, int line, char *err,
                      size_t errlen) {
    char *f[16];
    int n = split(text, f, 16);
    if (n == 0) return SL_OK;
    rule_t r = {.line = line};
    static const char *const types[] = {"local", "host", "hostssl", "hostnossl", NULL};
    int t = 0;
    while (types[t] && strcmp(types[t], f[0]) != 0) t++;
    if (!types[t])
        return fail(err, errlen, name, line, "unknown connection type (use local, host, hostssl, "
                                             "hostnossl):", f[0]);
    r.type = (enum conn_type)t;
    int need = r.type == CT_LOCAL ? 4 : 5;
    if (n < need) return fail(err, errlen, name, line, "too few fields", NULL);
    int i = 3;
    if (r.type != CT_LOCAL) {
        char *a = f[i++];
        if (strcmp(a, "all") != 0) {
            char *slash = strchr(a, '/');
            if (slash) *slash = '\0';
            if (!parse_addr(a, &r.family, r.addr))
                return fail(err, errlen, name, line, "invalid address", a);
            int max = r.family == AF_INET ? 32 : 128;
            if (slash) {
                char *end;
                long bits = strtol(slash + 1, &end, 10);
                if (*end || !mask_of_bits(r.mask, (int)bits, max))
                    return fail(err, errlen, name, line, "invalid mask length", slash + 1);
            } else {
                /* address then mask as a separate field */
                int mf;
                if (i >= n || !parse_addr(f[i], &mf, r.mask) || mf != r.family)
                    return fail(err, errlen, name, line,
                                "address needs a /bits mask or a mask field", a);
                i++;
            }
            for (int k = 0; k < 16; k++) r.addr[k] &= r.mask[k];
        }
    }
    if (i >= n) return fail(err, errlen, name, line, "missing authentication method", NULL);
    int m = 0;
    while (sl_hba_method_names[m] && strcmp(sl_hba_method_names[m], f[i]) != 0) m++;
    if (!sl_hba_method_names[m])
        return fail(err, errlen, name, line, "unsupported authentication method", f[i]);
    r.method = (enum sl_hba_method)m;
    if (r.method == SL_HBA_CERT && r.type != CT_HOSTSSL)
        return fail(err, errlen, name, line, "cert needs a hostssl line", NULL);
    bool bad = false;
    r.dbs = list_of(f[1], &bad);
    r.users = list_of(f[2], &bad);
    rule_t *g = bad ? NULL : realloc(h->rules, (size_t)(h->n + 1) * sizeof *g);
    if (!g) {
        free(r.dbs), free(r.users);
        return fail(err, errlen, name, line, "out of memory", NULL);
    }
    h->rules = g;
    h->rules[h->n++] = r;
    return SL_OK;
}

sl_hba_t *sl_hba_parse(const char *name, const char *text, char *err, size_t errlen) {
    sl_hba_t *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    int line = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        char *copy = strndup(p, len);
        line++;
        int rc = copy ? parse_line(h, copy, name, line, err, errlen) : SL_ENOMEM;
        free(copy);
        if (rc < 0) {
            if (rc == SL_ENOMEM) snprintf(err, errlen, "%s: out of memory", name);
            sl_hba_free(h);
            return NULL;
        }
        p += len + (nl ? 1 : 0);
    }
    return h;
}

sl_hba_t *sl_hba_load(const char *path, char *err, size_t errlen) {
    char *text;
    size_t len;
    if (sl_textfile_read(path, "auth_hba_file", &text, &len, err, errlen) < 0) return NULL;
    sl_hba_t *h = sl_hba_parse(path, text, err, errlen);
    free(text);
    return h;
}

static bool addr_match(const rule_t *r, const struct sockaddr *sa) {
    if (!r->family) return true;
    uint8_t a[16];
    if (sa->sa_family == AF_INET && r->family == AF_INET) {
        memcpy(a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        for (int k = 0; k < 4; k++)
            if ((a[k] & r->mask[k]) != r->addr[k]) return false;
        return true;
    }
    if (sa->sa_family == AF_INET6 && r->family == AF_INET6) {
        memcpy(a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        for (int k = 0; k < 16; k++)
            if ((a[k] & r->mask[k]) != r->addr[k]) return false;
        return true;
    }
    return false;
}

enum sl_hba_method sl_hba_match(const sl_hba_t *h, const struct sockaddr *addr, bool tls,
                                const char *db, const char *user, int *line) {
    *line = 0;
    for (int i = 0; h && i < h->n; i++) {
        const rule_t *r = &h->rules[i];
        if ((r->type == CT_LOCAL) != (addr == NULL)) continue;
        if (r->type == CT_HOSTSSL && !tls) continue;
        if (r->type == CT_HOSTNOSSL && tls) continue;
        if (!in_list(r->dbs, db) || !in_list(r->users, user)) continue;
        if (addr && !addr_match(r, addr)) continue;
        *line = r->line;
        return r->method;
    }
    return SL_HBA_REJECT;
}
