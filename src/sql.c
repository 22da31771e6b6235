/* SQL analysis. The fast path only answers when its answer cannot differ
 * from the parser's (a unit test checks this over a corpus); everything
 * else goes to libpg_query, whose JSON parse tree is read by node names. */
#include "sluice/sql.h"

#include "sluice/strlist.h"

#include <ctype.h>
#include <pg_query.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

/* ---- lexical helpers ---- */

/* Byte classes of the lexer, as a table built at compile time: the fast
 * path looks at every byte of most queries, and ctype calls per byte were
 * a good part of its cost. Space is the C locale's isspace. As PostgreSQL's
 * lexer, any byte of a multibyte character (>= 0x80) may be part of an
 * identifier, so `café(1)` is one name, not `caf` and `é`. */
enum { CH_SPACE = 1, CH_IDENT_START = 2, CH_WORD = 4, CH_DIGIT = 8 };
#define CHAR_CLASS(c)                                                                              \
    (((c) == ' ' || ((c) >= '\t' && (c) <= '\r') ? CH_SPACE : 0) |                                 \
     (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z') || (c) == '_' || (c) >= 0x80        \
          ? CH_IDENT_START | CH_WORD                                                               \
          : 0) |                                                                                   \
     ((c) >= '0' && (c) <= '9' ? CH_DIGIT | CH_WORD : 0) | ((c) == '$' ? CH_WORD : 0))
#define CLASS_8(i)                                                                                 \
    CHAR_CLASS(i), CHAR_CLASS(i + 1), CHAR_CLASS(i + 2), CHAR_CLASS(i + 3), CHAR_CLASS(i + 4),     \
        CHAR_CLASS(i + 5), CHAR_CLASS(i + 6), CHAR_CLASS(i + 7)
#define CLASS_64(i)                                                                                \
    CLASS_8(i), CLASS_8(i + 8), CLASS_8(i + 16), CLASS_8(i + 24), CLASS_8(i + 32),                 \
        CLASS_8(i + 40), CLASS_8(i + 48), CLASS_8(i + 56)
static const uint8_t chars[256] = {CLASS_64(0), CLASS_64(64), CLASS_64(128), CLASS_64(192)};

static inline bool is_ident_start(char c) {
    return chars[(unsigned char)c] & CH_IDENT_START;
}
static inline bool is_word_char(char c) {
    return chars[(unsigned char)c] & CH_WORD;
}
static inline bool is_space(char c) {
    return chars[(unsigned char)c] & CH_SPACE;
}
static inline bool is_digit(char c) {
    return chars[(unsigned char)c] & CH_DIGIT;
}

/* Reads a routing hint from the text of a comment. */
static void note_hint(const char *body, size_t n, enum sl_sql_hint *hint) {
    while (n && is_space(*body))
        body++, n--;
    while (n && is_space(body[n - 1]))
        n--;
    if (n == 14 && !strncasecmp(body, "sluice:primary", 14)) *hint = SL_HINT_PRIMARY;
    if (n == 14 && !strncasecmp(body, "sluice:replica", 14)) *hint = SL_HINT_REPLICA;
}

/* Skips one comment at p if there is one; returns the position after it,
 * p itself if there is none, or NULL for an unterminated block comment. */
static const char *skip_comment(const char *p, enum sl_sql_hint *hint) {
    if (p[0] == '-' && p[1] == '-') {
        /* PostgreSQL's lexer ends it at either newline character: SQL after
         * a carriage return is run, not commented out. */
        while (*p && *p != '\n' && *p != '\r')
            p++;
        return p;
    }
    if (p[0] != '/' || p[1] != '*') return p;
    const char *start = p + 2;
    int depth = 1; /* PostgreSQL block comments nest */
    p += 2;
    while (*p && depth) {
        if (p[0] == '/' && p[1] == '*')
            depth++, p += 2;
        else if (p[0] == '*' && p[1] == '/')
            depth--, p += 2;
        else
            p++;
    }
    if (depth) return NULL;
    if (hint) note_hint(start, (size_t)(p - 2 - start), hint);
    return p;
}

static const char *skip_space(const char *p, enum sl_sql_hint *hint) {
    for (;;) {
        while (is_space(*p))
            p++;
        const char *q = skip_comment(p, hint);
        if (!q) return NULL;
        if (q == p) return p;
        p = q;
    }
}

/* ---- fast path ---- */

typedef struct scan_facts {
    bool paren, word_for, word_into, multi, complex, extra_words;
    bool unknown_call; /* a '(' after a name that may call a function with state */
} scan_facts_t;

static bool call_harmless(const char *w, size_t n);

/* What the tokens before a '(' say about it: a call of the function they
 * name, or a keyword's parenthesis, or the column list of INSERT INTO t. */
typedef struct call_scan {
    const char *name; /* the name just before, NULL after any other token */
    size_t len;
    bool quoted;    /* a "quoted" identifier */
    bool qualified; /* a '.' came before it */
    bool target;    /* it names the table after INTO */
    bool dot, into; /* the last token was '.', the word INTO */
} call_scan_t;

/* Whether the n-byte word w is lower (lower case ASCII letters, n of them)
 * in any case: for the few fixed words the scan looks for on every word,
 * where a strncasecmp call costs more than the compare. Setting bit 5 maps
 * only a letter's upper case onto its lower case. */
static inline bool word_is(const char *w, size_t n, const char *lower) {
    for (size_t i = 0; i < n; i++)
        if ((w[i] | 0x20) != lower[i]) return false;
    return lower[n] == '\0';
}

static void call_name(call_scan_t *k, const char *w, size_t n, bool quoted) {
    k->target = k->into || (k->dot && k->target);
    k->qualified = k->dot;
    k->name = w, k->len = n, k->quoted = quoted;
    k->dot = false;
    k->into = !quoted && n == 4 && word_is(w, 4, "into");
}

/* Any token but a name or a dot; c is its first character. Inline: it
 * runs for every operator, number and literal. */
static inline void call_other(call_scan_t *k, char c, scan_facts_t *f) {
    if (c == '(' && k->name && !k->target &&
        (k->quoted || k->qualified || !call_harmless(k->name, k->len)))
        f->unknown_call = true;
    bool keep_target = c == '.' && k->target;
    *k = (call_scan_t){.dot = c == '.', .target = keep_target};
}

/* Scans the text after the first keyword, outside quotes and comments. */
static void scan_rest(const char *p, scan_facts_t *f) {
    bool after_semicolon = false;
    call_scan_t k = {0};
    while (*p) {
        char c = *p;
        if (is_space(c)) {
            p++;
            continue;
        }
        if (c == '-' || c == '/') {
            const char *q = skip_comment(p, NULL);
            if (!q) {
                f->complex = true;
                return;
            }
            if (q != p) {
                p = q;
                continue;
            }
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
            const char *open = p;
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
            if (c == '"')
                call_name(&k, open, (size_t)(p - open), true);
            else
                call_other(&k, c, f);
            continue;
        }
        if (c == '$') {
            if (!is_digit(p[1])) { /* dollar quoting */
                f->complex = true;
                return;
            }
            p++;
            while (is_digit(*p))
                p++;
            call_other(&k, c, f);
            continue;
        }
        if (is_digit(c)) { /* a number is one token: 1, 1.5, 1e-3 (letters after it are not) */
            while (is_digit(*p) || *p == '.')
                p++;
            if ((*p == 'e' || *p == 'E') &&
                (is_digit(p[1]) || ((p[1] == '+' || p[1] == '-') && is_digit(p[2])))) {
                p += 2;
                while (is_digit(*p))
                    p++;
            }
            call_other(&k, c, f);
            continue;
        }
        if (c == '(') f->paren = true;
        if (is_ident_start(c)) {
            const char *w = p;
            while (is_word_char(*p))
                p++;
            size_t n = (size_t)(p - w);
            f->extra_words = true;
            if (n == 3 && word_is(w, 3, "for")) f->word_for = true;
            if (n == 4 && word_is(w, 4, "into")) f->word_into = true;
            call_name(&k, w, n, false);
            continue;
        }
        call_other(&k, c, f);
        p++;
    }
}

static bool word_in(const char *w, const char *const *list) {
    for (int i = 0; list[i]; i++)
        if (!strcasecmp(w, list[i])) return true;
    return false;
}

static int cmp_word(const void *key, const void *elem) {
    return strcmp(key, *(const char *const *)elem);
}

/* Whether the sorted list of n lower-case words holds w (lower case). */
static bool sorted_has(const char *w, const char *const *list, size_t n) {
    return bsearch(w, list, n, sizeof *list, cmp_word) != NULL;
}

/* What the first keyword of a statement says, for the fast path. */
enum first_kind { FK_OTHER, FK_WRITE, FK_READ, FK_READ_ONLY, FK_BEGIN };

/* w: the upper-cased first word, n its length. A switch on the first
 * letter, then one comparison of equal lengths: this runs for every query. */
static enum first_kind first_kind(const char *w, size_t n) {
#define IS(word) (n == sizeof word - 1 && !memcmp(w, word, sizeof word - 1))
    switch (w[0]) {
    case 'A':
        return IS("ABORT") ? FK_READ_ONLY : IS("ALTER") ? FK_WRITE : FK_OTHER;
    case 'B':
        return IS("BEGIN") ? FK_BEGIN : FK_OTHER;
    case 'C':
        return IS("COMMIT") ? FK_READ_ONLY : IS("CLUSTER") || IS("COMMENT") ? FK_WRITE : FK_OTHER;
    case 'D':
        return IS("DELETE") ? FK_WRITE : FK_OTHER;
    case 'E':
        return IS("END") ? FK_READ_ONLY : FK_OTHER;
    case 'G':
        return IS("GRANT") ? FK_WRITE : FK_OTHER;
    case 'I':
        return IS("INSERT") ? FK_WRITE : FK_OTHER;
    case 'M':
        return IS("MERGE") ? FK_WRITE : FK_OTHER;
    case 'R':
        if (IS("ROLLBACK")) return FK_READ_ONLY;
        return IS("REFRESH") || IS("REINDEX") || IS("REVOKE") ? FK_WRITE : FK_OTHER;
    case 'S':
        return IS("SELECT") ? FK_READ : IS("SHOW") ? FK_READ_ONLY : FK_OTHER;
    case 'T':
        return IS("TABLE") ? FK_READ : IS("TRUNCATE") ? FK_WRITE : FK_OTHER;
    case 'U':
        return IS("UPDATE") ? FK_WRITE : FK_OTHER;
    case 'V':
        return IS("VACUUM") ? FK_WRITE : FK_OTHER;
    default:
        return FK_OTHER;
    }
#undef IS
}

bool sl_sql_fast(const char *sql, sl_sql_info_t *out) {
    memset(out, 0, sizeof *out);
    const char *p = skip_space(sql, &out->hint);
    if (!p) return false;
    char word[16];
    size_t n = 0;
    while (n < sizeof word - 1 && ((p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z')))
        word[n] = (char)(p[n] & ~0x20), n++; /* upper case */
    word[n] = '\0';
    if (n == 0 || is_word_char(p[n])) return false;
    enum first_kind kind = first_kind(word, n);
    if (kind == FK_OTHER) return false;
    scan_facts_t f = {0};
    scan_rest(p + n, &f);
    if (f.complex || f.multi || f.unknown_call) return false;
    switch (kind) {
    case FK_WRITE:
        out->read_only = false;
        return true;
    case FK_READ:
        if (f.paren || f.word_for || f.word_into) return false;
        out->read_only = true;
        return true;
    case FK_READ_ONLY:
        out->read_only = true;
        return true;
    case FK_BEGIN:
        if (f.extra_words || f.paren) return false;
        out->read_only = true;
        out->begin = true;
        return true;
    default:
        return false;
    }
}

/* ---- parser ---- */

typedef struct span {
    const char *p;
    size_t n;
} span_t;

static bool has(span_t s, const char *needle) {
    return memmem(s.p, s.n, needle, strlen(needle));
}

/* ---- JSON of the parse tree ---- */

/* The position after the JSON string whose opening quote is at p, or NULL. */
static const char *json_string_end(const char *p, const char *end) {
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return NULL;
}

/* The position after the JSON value that starts at p, or NULL. */
static const char *json_skip(const char *p, const char *end) {
    if (p >= end) return NULL;
    if (*p == '"') return json_string_end(p, end);
    if (*p != '{' && *p != '[') {
        while (p < end && *p != ',' && *p != '}' && *p != ']')
            p++;
        return p;
    }
    int depth = 0;
    while (p < end) {
        if (*p == '"') {
            p = json_string_end(p, end);
            if (!p) return NULL;
            continue;
        }
        if (*p == '{' || *p == '[') depth++;
        if ((*p == '}' || *p == ']') && --depth == 0) return p + 1;
        p++;
    }
    return NULL;
}

static bool starts(const char *p, const char *end, const char *prefix) {
    size_t n = strlen(prefix);
    return (size_t)(end - p) >= n && !memcmp(p, prefix, n);
}

/* Copies the JSON string at p (its opening quote) to out. False when it
 * holds an escape (no built-in name does) or does not fit. */
static bool json_copy(const char *p, const char *end, char *out, size_t cap) {
    const char *z = p < end && *p == '"' ? json_string_end(p, end) : NULL;
    if (!z) return false;
    size_t n = (size_t)(z - p - 2);
    if (n >= cap || memchr(p + 1, '\\', n)) return false;
    memcpy(out, p + 1, n);
    out[n] = '\0';
    return true;
}

/* ---- function calls ---- */

/* One FuncCall node: its name and its argument list. */
typedef struct call {
    char schema[64];         /* "" when the name is not qualified */
    char name[64];           /* "" when sluice cannot read it (escapes, too long) */
    const char *args[4];     /* the first arguments' JSON (pointers into the tree) */
    const char *args_end[4]; /* ... and where each ends */
    int nargs;               /* how many arguments (may exceed 4) */
} call_t;

/* Reads the call whose funcname array starts at p ('['); returns the
 * position after its name, or NULL when the JSON is not as expected. With
 * with_args, also reads the argument list (walking every argument costs the
 * size of the call's subtree, so only set_config's are read, a bounded
 * number of times per statement: see functions()). */
static const char *read_call(const char *p, const char *end, call_t *k, bool with_args) {
    memset(k, 0, sizeof *k);
    char part[3][64];
    int parts = 0;
    bool readable = true;
    for (p++; p < end && *p != ']';) {
        static const char str[] = "{\"String\":{\"sval\":";
        if (!starts(p, end, str)) return NULL;
        if (parts == 3 || !json_copy(p + sizeof str - 1, end, part[parts], sizeof part[0]))
            readable = false;
        else
            parts++;
        if (!(p = json_skip(p, end))) return NULL;
        if (p < end && *p == ',') p++;
    }
    if (p >= end) return NULL;
    p++; /* ']' */
    if (readable && parts == 1) snprintf(k->name, sizeof k->name, "%s", part[0]);
    if (readable && parts == 2) {
        snprintf(k->schema, sizeof k->schema, "%s", part[0]);
        snprintf(k->name, sizeof k->name, "%s", part[1]);
    }
    static const char args[] = ",\"args\":[";
    if (!with_args || !starts(p, end, args)) return p;
    for (p += sizeof args - 1; p < end && *p != ']'; k->nargs++) {
        const char *e = json_skip(p, end);
        if (!e) return NULL;
        if (k->nargs < 4) k->args[k->nargs] = p, k->args_end[k->nargs] = e;
        p = e < end && *e == ',' ? e + 1 : e;
    }
    return p;
}

/* The string of a string constant argument, or false. */
static bool const_string(const char *a, const char *end, char *out, size_t cap) {
    static const char key[] = "{\"A_Const\":{\"sval\":{\"sval\":";
    return starts(a, end, key) && json_copy(a + sizeof key - 1, end, out, cap);
}

/* The value of a boolean constant argument (true, false, 'on', 'off'...),
 * or -1 when it is anything else: an expression, a parameter, a cast. */
static int const_bool(const char *a, const char *end) {
    if (starts(a, end, "{\"A_Const\":{\"boolval\":{}")) return 0;
    if (starts(a, end, "{\"A_Const\":{\"boolval\":{\"boolval\":true}")) return 1;
    char v[8];
    if (!const_string(a, end, v, sizeof v)) return -1;
    static const char *const yes[] = {"t", "true", "on", "yes", "y", "1", NULL};
    static const char *const no[] = {"f", "false", "off", "no", "n", "0", NULL};
    return word_in(v, yes) ? 1 : word_in(v, no) ? 0 : -1;
}

/* Adds name to the session-level settings the statement changes. */
static void list_setting(sl_sql_info_t *out, const char *name, size_t len) {
    size_t used = strlen(out->set_names);
    if (used + len + 2 > sizeof out->set_names) {
        out->reset_all = true; /* too many to list: capture everything */
        return;
    }
    snprintf(out->set_names + used, sizeof out->set_names - used, "%s%.*s", used ? "," : "",
             (int)len, name);
}

static void note_reset(sl_sql_info_t *out, const char *name, int len, bool reset);

/* set_config(name, value, is_local) with a constant name and flag is a SET
 * (false: session-level, read back and carried) or a SET LOCAL (true: gone
 * with the transaction). Anything computed is only known when it runs:
 * false when it is opaque. */
static bool note_set_config(const call_t *k, const char *end, sl_sql_info_t *out) {
    char name[64];
    if (k->nargs != 3 || !const_string(k->args[0], end, name, sizeof name) || !name[0])
        return false;
    int local = const_bool(k->args[2], end);
    if (local < 0) return false;
    if (local) return true;
    for (char *c = name; *c; c++) {
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '.') return false;
        *c = (char)tolower((unsigned char)*c); /* setting names ignore case */
    }
    list_setting(out, name, strlen(name));
    note_reset(out, name, (int)strlen(name), false);
    return true;
}

/* Functions that change session state a reset (DISCARD ALL) leaves alone:
 * built-ins, and dblink's named connections (still open, logged in as
 * whoever opened them, after DISCARD ALL). */
static const char *const unresettable[] = {"dblink_connect",
                                           "dblink_connect_u",
                                           "pg_backup_start",
                                           "pg_create_logical_replication_slot",
                                           "pg_create_physical_replication_slot",
                                           "pg_replication_origin_session_setup",
                                           "setseed",
                                           NULL};

static bool is_advisory_lock(const char *name) {
    return !strncmp(name, "pg_advisory_lock", 16) || !strncmp(name, "pg_try_advisory_lock", 20);
}

bool sl_sql_builtin(const char *name) {
    size_t lo = 0, hi = sl_sql_builtin_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int cmp = strcmp(name, sl_sql_builtin_names[mid]);
        if (cmp == 0) return true;
        if (cmp < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return false;
}

/* Keywords a '(' may follow without calling a function (sorted: looked up
 * by bsearch): only reserved and column-name keywords, which PostgreSQL
 * never takes as a function's name.
 * Unreserved ones (BY, SET, FILTER, OVER, CONFLICT) and type/function-name
 * ones (LIKE, ILIKE, SIMILAR, IS, JOIN) may name a user's function, so a
 * '(' after them goes to the parser. */
static const char *const paren_keywords[] = {
    "all",      "and",    "any",       "array",     "as",      "between",  "cast",      "coalesce",
    "distinct", "do",     "else",      "except",    "exists",  "extract",  "from",      "greatest",
    "group",    "having", "in",        "intersect", "lateral", "least",    "limit",     "not",
    "nullif",   "offset", "on",        "or",        "overlay", "position", "returning", "row",
    "select",   "some",   "substring", "then",      "trim",    "union",    "using",     "values",
    "when",     "where",  "with",      NULL};

/* For the fast path: a '(' after the unqualified word w opens a keyword's
 * parenthesis or calls a built-in that makes no session state. Anything
 * else goes to the parser. */
static bool call_harmless(const char *w, size_t n) {
    char name[64];
    if (n >= sizeof name) return false;
    for (size_t i = 0; i < n; i++)
        name[i] = (char)(w[i] >= 'A' && w[i] <= 'Z' ? w[i] + 32 : w[i]);
    name[n] = '\0';
    if (sorted_has(name, paren_keywords, sizeof paren_keywords / sizeof *paren_keywords - 1))
        return true;
    return sl_sql_builtin(name) && strcmp(name, "set_config") && !is_advisory_lock(name) &&
           strcmp(name, "pg_advisory_unlock_all") && !word_in(name, unresettable);
}

/* Whether the operator listed the function in stateless_functions: an
 * entry without a dot names it in any schema, "schema.name" only there. */
static bool trusted(const char *stateless, const call_t *k) {
    if (!stateless || !*stateless || !k->name[0]) return false;
    if (sl_strlist_has(stateless, k->name)) return true;
    if (!k->schema[0]) return false;
    char full[130];
    snprintf(full, sizeof full, "%s.%s", k->schema, k->name);
    return sl_strlist_has(stateless, full);
}

typedef struct fn_facts {
    bool writes, advisory_lock, advisory_unlock_all;
    bool opaque;       /* a call whose session state sluice cannot see */
    bool unresettable; /* a call whose session state DISCARD ALL leaves */
} fn_facts_t;

/* What one call does: a write (write_functions), session state sluice
 * tracks (advisory locks, set_config with constants), or state it cannot
 * see (a function that is neither a built-in nor in stateless_functions). */
static void one_call(const call_t *k, const char *end, const char *wf, const char *sf,
                     fn_facts_t *f, sl_sql_info_t *out) {
    if (k->name[0] && sl_strlist_has(wf, k->name)) f->writes = true;
    if (word_in(k->name, unresettable)) f->unresettable = true; /* whatever its schema */
    bool builtin = (!k->schema[0] || !strcmp(k->schema, "pg_catalog")) && k->name[0] &&
                   sl_sql_builtin(k->name);
    if (!builtin) {
        if (!trusted(sf, k)) f->opaque = true;
        return;
    }
    if (is_advisory_lock(k->name)) f->advisory_lock = true;
    if (!strcmp(k->name, "pg_advisory_unlock_all")) f->advisory_unlock_all = true;
    if (!strcmp(k->name, "set_config") && !note_set_config(k, end, out)) f->opaque = true;
}

/* Looks at every function call in the span, at any depth. A call sluice
 * cannot read is opaque. */
static fn_facts_t functions(span_t s, const char *wf, const char *sf, sl_sql_info_t *out) {
    fn_facts_t f = {0};
    static const char key[] = "\"FuncCall\":{\"funcname\":";
    const char *p = s.p, *end = s.p + s.n;
    int arg_reads = 0; /* set_config calls whose arguments were read */
    while ((p = memmem(p, (size_t)(end - p), key, sizeof key - 1))) {
        p += sizeof key - 1;
        call_t k;
        const char *after = read_call(p, end, &k, false);
        if (after && !strcmp(k.name, "set_config")) {
            /* Reading arguments walks the whole subtree: at most 8 times a
             * statement, so that nesting cannot make the scan quadratic. */
            if (++arg_reads > 8) {
                f.opaque = true;
                break;
            }
            if (!read_call(p, end, &k, true)) after = NULL;
        }
        if (!after) { /* not the JSON sluice knows: assume the worst */
            f.opaque = true;
            break;
        }
        one_call(&k, end, wf, sf, &f, out);
        /* Calls nested in the arguments come next: the search goes on from
         * this call's name, not from its end. */
        p = after;
    }
    return f;
}

static bool writes_data(span_t s, const fn_facts_t *f) {
    return f->writes || has(s, "\"lockingClause\":") || has(s, "\"intoClause\":") ||
           has(s, "\"InsertStmt\":{") || has(s, "\"UpdateStmt\":{") || has(s, "\"DeleteStmt\":{") ||
           has(s, "\"MergeStmt\":{");
}

/* Records, for name, whether its last change in the text puts it back to
 * its reset value ('-') or sets a value that a RESET ALL before it does not
 * touch ('+'). */
static void note_reset(sl_sql_info_t *out, const char *name, int len, bool reset) {
    char kept[sizeof out->resets] = "";
    size_t used = 0;
    for (char *p = out->resets, *e; *p; p = *e ? e + 1 : e) {
        e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        if ((int)(e - p) - 1 == len && !strncasecmp(p + 1, name, (size_t)len)) continue;
        used += (size_t)snprintf(kept + used, sizeof kept - used, "%s%.*s", used ? "," : "",
                                 (int)(e - p), p);
    }
    if (reset || out->resets_all) {
        if (used + (size_t)len + 3 > sizeof kept) {
            out->resets_overflow = true;
            return;
        }
        snprintf(kept + used, sizeof kept - used, "%s%c%.*s", used ? "," : "", reset ? '-' : '+',
                 len, name);
    }
    memcpy(out->resets, kept, sizeof kept);
}

/* Records the target of a session-level SET or RESET (SET LOCAL and SET
 * TRANSACTION end with the transaction and need no tracking). */
static void note_set(span_t s, sl_sql_info_t *out) {
    if (has(s, "\"is_local\":true")) return;
    if (has(s, "\"kind\":\"VAR_RESET_ALL\"")) {
        out->reset_all = true;
        out->resets_all = true;
        out->resets[0] = '\0';
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
    note_reset(out, n, len,
               has(s, "\"kind\":\"VAR_RESET\"") || has(s, "\"kind\":\"VAR_SET_DEFAULT\""));
    list_setting(out, n, (size_t)len);
}

/* SET SESSION CHARACTERISTICS AS TRANSACTION ... sets the defaults of
 * later transactions: the settings behind each mode it names. */
static void note_characteristics(span_t s, sl_sql_info_t *out) {
    static const char *const modes[] = {"isolation", "read_only", "deferrable", NULL};
    for (int i = 0; modes[i]; i++) {
        char key[64], name[64];
        snprintf(key, sizeof key, "\"defname\":\"transaction_%s\"", modes[i]);
        if (!has(s, key)) continue;
        int n = snprintf(name, sizeof name, "default_transaction_%s", modes[i]);
        list_setting(out, name, (size_t)n);
    }
}

static const char read_only_on[] =
    "\"defname\":\"transaction_read_only\",\"arg\":{\"A_Const\":{\"ival\":{\"ival\":1}";

/* Whether the statement names a prepared statement in sluice's namespace.
 * The parse tree gives each name once folded and unquoted, as the server
 * will read it; a string constant cannot fake the key (its quotes are
 * escaped in the JSON). */
static bool names_pooler(span_t s) {
    /* No opening quote: the span of a top-level statement starts after it. */
    static const char *const nodes[] = {"PrepareStmt\"", "ExecuteStmt\"", "DeallocateStmt\"", NULL};
    for (int i = 0; nodes[i]; i++) {
        char key[96];
        snprintf(key, sizeof key, "%s:{\"name\":\"" SL_SQL_POOLER_PREFIX, nodes[i]);
        if (has(s, key)) return true;
    }
    return false;
}

/* Classifies one top-level statement (its node name and JSON span). */
static void one_statement(const char *node, span_t s, const char *wf, const char *sf,
                          sl_sql_info_t *out) {
    bool read = false;
    uint32_t st = 0;
    /* Calls anywhere in the statement, also where they may not run (a
     * DEFAULT, a view): when in doubt, reset. */
    fn_facts_t fn = functions(s, wf, sf, out);
    if (names_pooler(s)) out->names_pooler_statement = true;
    if (fn.advisory_lock) st |= SL_STATE_ADVISORY_LOCK;
    if (fn.advisory_unlock_all) st |= SL_STATE_ADVISORY_UNLOCK_ALL;
    if (fn.opaque) st |= SL_STATE_OPAQUE;
    if (fn.unresettable) st |= SL_STATE_UNRESETTABLE;
    if (!strcmp(node, "SelectStmt") || !strcmp(node, "VariableShowStmt")) {
        read = !writes_data(s, &fn);
    } else if (!strcmp(node, "ExplainStmt")) {
        read = !has(s, "\"defname\":\"analyze\"") || !writes_data(s, &fn);
    } else if (!strcmp(node, "CopyStmt")) {
        read = !has(s, "\"is_from\":true") && !writes_data(s, &fn);
    } else if (!strcmp(node, "TransactionStmt")) {
        read = true;
        if (has(s, "\"kind\":\"TRANS_STMT_BEGIN\"") || has(s, "\"kind\":\"TRANS_STMT_START\"")) {
            out->begin = true;
            if (has(s, read_only_on)) out->begin_read_only = true;
        }
    } else if (!strcmp(node, "VariableSetStmt")) {
        read = true;
        if (has(s, "\"name\":\"TRANSACTION\"") && has(s, read_only_on)) out->begin_read_only = true;
        if (has(s, "\"name\":\"SESSION CHARACTERISTICS\""))
            note_characteristics(s, out);
        else
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
        read = !writes_data(s, &fn);
    } else if (!strcmp(node, "ClosePortalStmt")) {
        read = true;
        if (!has(s, "\"portalname\"")) st |= SL_STATE_CLOSE_ALL;
    } else if (!strcmp(node, "DoStmt") || !strcmp(node, "CallStmt")) {
        st |= SL_STATE_OPAQUE; /* and a write: read stays false */
    } else if (!strcmp(node, "DiscardStmt")) {
        if (has(s, "\"target\":\"DISCARD_ALL\"")) {
            st |= SL_STATE_DISCARD_ALL;
            out->resets_all = true; /* DISCARD ALL runs RESET ALL */
            out->resets[0] = '\0';
        }
    }
    if (!read) out->read_only = false;
    out->state |= st;
}

void sl_sql_parse(const char *sql, const char *write_functions, const char *stateless_functions,
                  sl_sql_info_t *out) {
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
        one_statement(node, s, write_functions, stateless_functions, out);
        p = next;
    }
    pg_query_free_parse_result(r);
}

/* ---- cache ---- */

/* The cache is keyed by a hash of the text alone: a client able to make
 * two texts collide could have a statement that creates session state (SET
 * search_path, CREATE TEMP TABLE) answered as a cached stateless SELECT,
 * and its server would go to the next client unreset. So the hash is
 * SipHash-2-4 under a key drawn at random once per process: without the
 * key, colliding texts cannot be made (FNV-1a, used before, has no key). */
static uint64_t hash_key[2];
static pthread_once_t hash_key_once = PTHREAD_ONCE_INIT;

static void hash_key_init(void) {
    if (getrandom(hash_key, sizeof hash_key, 0) != (ssize_t)sizeof hash_key) {
        /* No entropy source: a key from the clock and the address space
         * still differs per process, unknown to a client. */
        hash_key[0] = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&hash_key;
        hash_key[1] = (uint64_t)clock() ^ ((uint64_t)(uintptr_t)&hash_key_once << 7);
    }
}

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                                   \
    do {                                                                                           \
        v0 += v1, v1 = ROTL(v1, 13), v1 ^= v0, v0 = ROTL(v0, 32);                                  \
        v2 += v3, v3 = ROTL(v3, 16), v3 ^= v2;                                                     \
        v0 += v3, v3 = ROTL(v3, 21), v3 ^= v0;                                                     \
        v2 += v1, v1 = ROTL(v1, 17), v1 ^= v2, v2 = ROTL(v2, 32);                                  \
    } while (0)

static uint64_t siphash24(const uint8_t *in, size_t n) {
    uint64_t k0 = hash_key[0], k1 = hash_key[1];
    uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
    size_t whole = n - n % 8;
    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = 0;
        for (int b = 0; b < 8; b++)
            m |= (uint64_t)in[i + (size_t)b] << (8 * b);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t last = (uint64_t)n << 56;
    for (size_t b = 0; b < n % 8; b++)
        last |= (uint64_t)in[whole + b] << (8 * b);
    v3 ^= last;
    SIPROUND;
    SIPROUND;
    v0 ^= last;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t text_hash(const char *s, uint32_t *len) {
    pthread_once(&hash_key_once, hash_key_init);
    size_t n = strlen(s);
    *len = (uint32_t)n;
    uint64_t h = siphash24((const uint8_t *)s, n);
    return h ? h : 1;
}

/* Answers from the parser cache, else from the parser (cached then). */
static void classify_slow(sl_sql_cache_t *cache, const char *sql, const char *write_functions,
                          const char *stateless_functions, sl_sql_info_t *out) {
    uint32_t len;
    uint64_t h = text_hash(sql, &len);
    size_t i = h % SL_SQL_CACHE_SLOTS;
    if (cache->slot[i].hash == h && cache->slot[i].len == len) {
        cache->hits++;
        *out = cache->slot[i].info;
        return;
    }
    cache->misses++;
    sl_sql_parse(sql, write_functions, stateless_functions, out);
    cache->slot[i].hash = h;
    cache->slot[i].len = len;
    cache->slot[i].info = *out;
}

void sl_sql_classify(sl_sql_cache_t *cache, const char *sql, const char *write_functions,
                     const char *stateless_functions, sl_sql_info_t *out) {
    size_t len = strlen(sql);
    if (len > 0 && len == cache->last.len && !memcmp(sql, cache->last.text, len)) {
        cache->last_hits++;
        *out = cache->last.info;
        return;
    }
    if (!sl_sql_fast(sql, out))
        classify_slow(cache, sql, write_functions, stateless_functions, out);
    if (len <= SL_SQL_LAST_MAX) {
        memcpy(cache->last.text, sql, len);
        cache->last.len = (uint32_t)len;
        cache->last.info = *out;
    }
}
