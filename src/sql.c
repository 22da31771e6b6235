/* SQL analysis. The fast path only answers when its answer cannot differ
 * from the parser's (a unit test checks this over a corpus); everything
 * else goes to libpg_query, whose JSON parse tree is read by node names. */
#include "sluice/sql.h"

#include "sluice/strlist.h"

#include <ctype.h>
#include <pg_query.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- lexical helpers ---- */

static bool is_word_char(char c) { return isalnum((unsigned char)c) || c == '_' || c == '$'; }

/* Reads a routing hint from the text of a comment. */
static void note_hint(const char *body, size_t n, enum sl_sql_hint *hint) {
    while (n && isspace((unsigned char)*body)) body++, n--;
    while (n && isspace((unsigned char)body[n - 1])) n--;
    if (n == 14 && !strncasecmp(body, "sluice:primary", 14)) *hint = SL_HINT_PRIMARY;
    if (n == 14 && !strncasecmp(body, "sluice:replica", 14)) *hint = SL_HINT_REPLICA;
}

/* Skips one comment at p if there is one; returns the position after it,
 * p itself if there is none, or NULL for an unterminated block comment. */
static const char *skip_comment(const char *p, enum sl_sql_hint *hint) {
    if (p[0] == '-' && p[1] == '-') {
        while (*p && *p != '\n') p++;
        return p;
    }
    if (p[0] != '/' || p[1] != '*') return p;
    const char *start = p + 2;
    int depth = 1; /* PostgreSQL block comments nest */
    p += 2;
    while (*p && depth) {
        if (p[0] == '/' && p[1] == '*') depth++, p += 2;
        else if (p[0] == '*' && p[1] == '/') depth--, p += 2;
        else p++;
    }
    if (depth) return NULL;
    if (hint) note_hint(start, (size_t)(p - 2 - start), hint);
    return p;
}

static const char *skip_space(const char *p, enum sl_sql_hint *hint) {
    for (;;) {
        while (isspace((unsigned char)*p)) p++;
        const char *q = skip_comment(p, hint);
        if (!q) return NULL;
        if (q == p) return p;
        p = q;
    }
}

/* ---- fast path ---- */

typedef struct scan_facts {
    bool paren, word_for, word_into, multi, complex, extra_words;
} scan_facts_t;

/* Scans the text after the first keyword, outside quotes and comments. */
static void scan_rest(const char *p, scan_facts_t *f) {
    bool after_semicolon = false;
    while (*p) {
        const char *q = skip_comment(p, NULL);
        if (!q) {
            f->complex = true;
            return;
        }
        if (q != p) {
            p = q;
            continue;
        }
        char c = *p;
        if (isspace((unsigned char)c)) {
            p++;
            continue;
        }
        if (after_semicolon) {
            f->multi = true;
            return;
        }
        if (c == ';') {
            after_semicolon = true;
            p++;
            continue;
        }
        if (c == '\'' || c == '"') {
            /* E'..' and U&'..' escapes need the real lexer. */
            if (c == '\'' && p[-1] && (p[-1] == 'E' || p[-1] == 'e' || p[-1] == '&')) {
                f->complex = true;
                return;
            }
            p++;
            for (;;) {
                if (!*p) {
                    f->complex = true;
                    return;
                }
                if (*p == '\\' && c == '\'') {
                    f->complex = true;
                    return;
                }
                if (*p == c) {
                    if (p[1] == c) {
                        p += 2;
                        continue;
                    }
                    p++;
                    break;
                }
                p++;
            }
            continue;
        }
        if (c == '$') {
            if (!isdigit((unsigned char)p[1])) { /* dollar quoting */
                f->complex = true;
                return;
            }
            p++;
            while (isdigit((unsigned char)*p)) p++;
            continue;
        }
        if (c == '(') f->paren = true;
        if (isalpha((unsigned char)c) || c == '_') {
            const char *w = p;
            while (is_word_char(*p)) p++;
            size_t n = (size_t)(p - w);
            f->extra_words = true;
            if (n == 3 && !strncasecmp(w, "for", 3)) f->word_for = true;
            if (n == 4 && !strncasecmp(w, "into", 4)) f->word_into = true;
            continue;
        }
        p++;
    }
}

static bool word_in(const char *w, const char *const *list) {
    for (int i = 0; list[i]; i++)
        if (!strcasecmp(w, list[i])) return true;
    return false;
}

bool sl_sql_fast(const char *sql, sl_sql_info_t *out) {
    memset(out, 0, sizeof *out);
    const char *p = skip_space(sql, &out->hint);
    if (!p) return false;
    char word[16];
    size_t n = 0;
    while (isalpha((unsigned char)p[n]) && n < sizeof word - 1) word[n] = p[n], n++;
    word[n] = '\0';
    if (n == 0 || is_word_char(p[n])) return false;
    scan_facts_t f = {0};
    scan_rest(p + n, &f);
    if (f.complex || f.multi) return false;
    static const char *const writes[] = {"INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE",
                                         "ALTER", "GRANT", "REVOKE", "VACUUM", "REINDEX",
                                         "CLUSTER", "COMMENT", "REFRESH", NULL};
    static const char *const reads[] = {"SELECT", "TABLE", NULL};
    static const char *const tx_end[] = {"COMMIT", "END", "ROLLBACK", "ABORT", NULL};
    if (word_in(word, writes)) {
        out->read_only = false;
        return true;
    }
    if (word_in(word, reads) && !f.paren && !f.word_for && !f.word_into) {
        out->read_only = true;
        return true;
    }
    if (!strcasecmp(word, "SHOW") || word_in(word, tx_end)) {
        out->read_only = true;
        return true;
    }
    if (!strcasecmp(word, "BEGIN") && !f.extra_words && !f.paren) {
        out->read_only = true;
        out->begin = true;
        return true;
    }
    return false;
}

/* ---- parser ---- */

typedef struct span {
    const char *p;
    size_t n;
} span_t;

static bool has(span_t s, const char *needle) { return memmem(s.p, s.n, needle, strlen(needle)); }

typedef struct fn_facts {
    bool writes, advisory_lock, advisory_unlock_all;
} fn_facts_t;

/* Looks at every function call in the span: its last name part decides. */
static fn_facts_t functions(span_t s, const char *write_functions) {
    fn_facts_t f = {0};
    static const char key[] = "\"FuncCall\":{\"funcname\":[";
    const char *p = s.p, *end = s.p + s.n;
    while ((p = memmem(p, (size_t)(end - p), key, sizeof key - 1))) {
        p += sizeof key - 1;
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (!close) break;
        char name[128] = "";
        const char *q = p;
        while ((q = memmem(q, (size_t)(close - q), "\"sval\":\"", 8))) {
            q += 8;
            const char *z = memchr(q, '"', (size_t)(close - q));
            if (!z) break;
            snprintf(name, sizeof name, "%.*s", (int)(z - q), q);
            q = z;
        }
        if (sl_strlist_has(write_functions, name)) f.writes = true;
        if (!strncasecmp(name, "pg_advisory_lock", 16) ||
            !strncasecmp(name, "pg_try_advisory_lock", 20))
            f.advisory_lock = true;
        if (!strcasecmp(name, "pg_advisory_unlock_all")) f.advisory_unlock_all = true;
        p = close;
    }
    return f;
}

static bool writes_data(span_t s, const char *write_functions, uint32_t *state) {
    fn_facts_t f = functions(s, write_functions);
    if (f.advisory_lock) *state |= SL_STATE_ADVISORY_LOCK;
    if (f.advisory_unlock_all) *state |= SL_STATE_ADVISORY_UNLOCK_ALL;
    return f.writes || has(s, "\"lockingClause\":") || has(s, "\"intoClause\":") ||
           has(s, "\"InsertStmt\":{") || has(s, "\"UpdateStmt\":{") ||
           has(s, "\"DeleteStmt\":{") || has(s, "\"MergeStmt\":{");
}

/* Records the target of a session-level SET or RESET (SET LOCAL and SET
 * TRANSACTION end with the transaction and need no tracking). */
static void note_set(span_t s, sl_sql_info_t *out) {
    if (has(s, "\"is_local\":true")) return;
    if (has(s, "\"kind\":\"VAR_RESET_ALL\"")) {
        out->reset_all = true;
        return;
    }
    if (!has(s, "\"kind\":\"VAR_SET_VALUE\"") && !has(s, "\"kind\":\"VAR_SET_DEFAULT\"") &&
        !has(s, "\"kind\":\"VAR_SET_CURRENT\"") && !has(s, "\"kind\":\"VAR_RESET\""))
        return;
    const char *n = memmem(s.p, s.n, "\"name\":\"", 8);
    if (!n) return;
    n += 8;
    const char *z = memchr(n, '"', (size_t)(s.p + s.n - n));
    if (!z) return;
    int len = (int)(z - n);
    if ((len == 11 && !strncmp(n, "TRANSACTION", 11)) || memchr(n, ' ', (size_t)len)) return;
    size_t used = strlen(out->set_names);
    if (used + (size_t)len + 2 > sizeof out->set_names) {
        out->reset_all = true; /* too many to list: capture everything */
        return;
    }
    snprintf(out->set_names + used, sizeof out->set_names - used, "%s%.*s", used ? "," : "", len,
             n);
}

static const char read_only_on[] =
    "\"defname\":\"transaction_read_only\",\"arg\":{\"A_Const\":{\"ival\":{\"ival\":1}";

/* Classifies one top-level statement (its node name and JSON span). */
static void one_statement(const char *node, span_t s, const char *wf, sl_sql_info_t *out) {
    bool read = false;
    uint32_t st = 0;
    if (!strcmp(node, "SelectStmt") || !strcmp(node, "VariableShowStmt")) {
        read = !writes_data(s, wf, &st);
    } else if (!strcmp(node, "ExplainStmt")) {
        read = !has(s, "\"defname\":\"analyze\"") || !writes_data(s, wf, &st);
    } else if (!strcmp(node, "CopyStmt")) {
        read = !has(s, "\"is_from\":true") && !writes_data(s, wf, &st);
    } else if (!strcmp(node, "TransactionStmt")) {
        read = true;
        if (has(s, "\"kind\":\"TRANS_STMT_BEGIN\"") || has(s, "\"kind\":\"TRANS_STMT_START\"")) {
            out->begin = true;
            if (has(s, read_only_on)) out->begin_read_only = true;
        }
    } else if (!strcmp(node, "VariableSetStmt")) {
        read = true;
        if (has(s, "\"name\":\"TRANSACTION\"") && has(s, read_only_on)) out->begin_read_only = true;
        note_set(s, out);
    } else if (!strcmp(node, "ListenStmt")) {
        st |= SL_STATE_LISTEN;
    } else if (!strcmp(node, "UnlistenStmt")) {
        if (!has(s, "\"conditionname\"")) st |= SL_STATE_UNLISTEN_ALL;
    } else if (!strcmp(node, "CreateStmt") || !strcmp(node, "CreateTableAsStmt") ||
               !strcmp(node, "ViewStmt") || !strcmp(node, "CreateSeqStmt")) {
        if (has(s, "\"relpersistence\":\"t\"")) st |= SL_STATE_TEMP_OBJECT;
    } else if (!strcmp(node, "PrepareStmt")) {
        st |= SL_STATE_PREPARE;
    } else if (!strcmp(node, "DeallocateStmt")) {
        if (!has(s, "\"name\"")) st |= SL_STATE_DEALLOCATE_ALL;
    } else if (!strcmp(node, "DeclareCursorStmt")) {
        const char *o = memmem(s.p, s.n, "\"options\":", 10);
        if (o && (atoi(o + 10) & 0x20)) st |= SL_STATE_HOLD_CURSOR; /* CURSOR_OPT_HOLD */
        read = !writes_data(s, wf, &st);
    } else if (!strcmp(node, "ClosePortalStmt")) {
        read = true;
        if (!has(s, "\"portalname\"")) st |= SL_STATE_CLOSE_ALL;
    } else if (!strcmp(node, "DoStmt") || !strcmp(node, "CallStmt")) {
        st |= SL_STATE_OPAQUE; /* and a write: read stays false */
    } else if (!strcmp(node, "DiscardStmt")) {
        if (has(s, "\"target\":\"DISCARD_ALL\"")) st |= SL_STATE_DISCARD_ALL;
    }
    if (!read) out->read_only = false;
    out->state |= st;
}

void sl_sql_parse(const char *sql, const char *write_functions, sl_sql_info_t *out) {
    memset(out, 0, sizeof *out);
    out->parsed = true;
    (void)skip_space(sql, &out->hint);
    PgQueryParseResult r = pg_query_parse(sql);
    if (r.error) {
        out->invalid = true;
        pg_query_free_parse_result(r);
        return;
    }
    out->read_only = true;
    static const char key[] = "{\"stmt\":{\"";
    const char *j = r.parse_tree, *end = j + strlen(j);
    const char *p = strstr(j, key);
    while (p) {
        const char *name = p + sizeof key - 1;
        const char *q = strchr(name, '"');
        const char *next = strstr(name, key);
        if (!q) break;
        char node[64];
        snprintf(node, sizeof node, "%.*s", (int)(q - name), name);
        span_t s = {name, (size_t)((next ? next : end) - name)};
        one_statement(node, s, write_functions, out);
        p = next;
    }
    pg_query_free_parse_result(r);
}

/* ---- cache ---- */

static uint64_t text_hash(const char *s, uint32_t *len) {
    uint64_t h = 14695981039346656037ull;
    const char *p = s;
    for (; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
    *len = (uint32_t)(p - s);
    return h ? h : 1;
}

void sl_sql_classify(sl_sql_cache_t *cache, const char *sql, const char *write_functions,
                     sl_sql_info_t *out) {
    if (sl_sql_fast(sql, out)) return;
    uint32_t len;
    uint64_t h = text_hash(sql, &len);
    size_t i = h % SL_SQL_CACHE_SLOTS;
    if (cache->slot[i].hash == h && cache->slot[i].len == len) {
        cache->hits++;
        *out = cache->slot[i].info;
        return;
    }
    cache->misses++;
    sl_sql_parse(sql, write_functions, out);
    cache->slot[i].hash = h;
    cache->slot[i].len = len;
    cache->slot[i].info = *out;
}
