/* userlist.txt parsing and the per-user SCRAM secret cache. */
#include "sluice/userlist.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/textfile.h"

/* Reads a "quoted" token with "" as an escaped quote. */
static const char *quoted(const char *p, char **out) {
    while (*p == ' ' || *p == '\t') p++;
    if (*p != '"') return NULL;
    p++;
    size_t cap = strlen(p) + 1;
    char *v = malloc(cap), *w = v;
    if (!v) return NULL;
    for (;;) {
        if (!*p || *p == '\n') {
            free(v);
            return NULL;
        }
        if (*p == '"') {
            if (p[1] == '"') {
                *w++ = '"';
                p += 2;
                continue;
            }
            p++;
            break;
        }
        *w++ = *p++;
    }
    *w = '\0';
    *out = v;
    return p;
}

enum sl_secret_kind sl_secret_classify(const char *s) {
    if (strncmp(s, "SCRAM-SHA-256$", 14) == 0) return SL_SECRET_SCRAM;
    if (strlen(s) == 35 && strncmp(s, "md5", 3) == 0 && strspn(s + 3, "0123456789abcdef") == 32)
        return SL_SECRET_MD5;
    return SL_SECRET_PLAIN;
}

int sl_userlist_parse(const char *name, const char *text, sl_userlist_t *out, char *err,
                      size_t errlen) {
    memset(out, 0, sizeof *out);
    int line = 0;
    const char *p = text;
    while (*p) {
        line++;
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        char *l = strndup(p, len);
        p += len + (eol ? 1 : 0);
        char *s = l;
        while (*s == ' ' || *s == '\t' || *s == '\r') s++;
        if (!*s || *s == ';' || *s == '#') {
            free(l);
            continue;
        }
        char *user = NULL, *secret = NULL;
        const char *rest = quoted(s, &user);
        if (rest) rest = quoted(rest, &secret);
        free(l);
        if (!rest) {
            free(user);
            snprintf(err, errlen, "%s:%d: expected \"user\" \"password\"", name, line);
            sl_userlist_free(out);
            return SL_ECONFIG;
        }
        sl_user_secret_t *grown = realloc(out->v, sizeof *out->v * (size_t)(out->n + 1));
        if (!grown) {
            free(user), free(secret);
            sl_userlist_free(out);
            return SL_ENOMEM;
        }
        out->v = grown;
        sl_user_secret_t *u = &out->v[out->n++];
        *u = (sl_user_secret_t){.name = user, .secret = secret, .kind = sl_secret_classify(secret)};
        if (u->kind == SL_SECRET_SCRAM) {
            sl_scram_secret_t parsed;
            if (sl_scram_parse_secret(secret, &parsed) < 0) {
                snprintf(err, errlen, "%s:%d: malformed SCRAM-SHA-256 secret for user '%s'",
                         name, line, user);
                sl_userlist_free(out);
                return SL_ECONFIG;
            }
        }
    }
    return SL_OK;
}

int sl_userlist_load(const char *path, sl_userlist_t *out, char *err, size_t errlen) {
    char *text;
    size_t got;
    int rc = sl_textfile_read(path, "auth_file", &text, &got, err, errlen);
    if (rc < 0) return rc;
    rc = sl_userlist_parse(path, text, out, err, errlen);
    OPENSSL_cleanse(text, got);
    free(text);
    return rc;
}

void sl_userlist_free(sl_userlist_t *ul) {
    for (int i = 0; i < ul->n; i++) {
        sl_user_secret_t *u = &ul->v[i];
        free(u->name);
        if (u->secret) OPENSSL_cleanse(u->secret, strlen(u->secret));
        free(u->secret);
        free(u->scram);
    }
    free(ul->v);
    ul->v = NULL;
    ul->n = 0;
}

sl_user_secret_t *sl_userlist_find(const sl_userlist_t *ul, const char *user) {
    for (int i = 0; i < ul->n; i++)
        if (strcmp(ul->v[i].name, user) == 0) return &ul->v[i];
    return NULL;
}

const sl_scram_secret_t *sl_user_scram(sl_user_secret_t *u) {
    if (u->scram) return u->scram;
    if (u->kind == SL_SECRET_MD5) return NULL;
    sl_scram_secret_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    int rc;
    if (u->kind == SL_SECRET_SCRAM) {
        rc = sl_scram_parse_secret(u->secret, s);
    } else {
        uint8_t salt[16];
        rc = RAND_bytes(salt, sizeof salt) == 1
                 ? sl_scram_secret_from_password(u->secret, salt, sizeof salt,
                                                 SL_SCRAM_DEFAULT_ITERATIONS, s)
                 : SL_ENOMEM;
    }
    if (rc < 0) {
        free(s);
        return NULL;
    }
    u->scram = s;
    return s;
}
