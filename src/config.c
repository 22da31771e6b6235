/* sluice.ini parsing. The option table below is the single list of
 * [sluice] keys: it gives each its type, field, default and bounds. */
#include "sluice/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/un.h>

#include "sluice/cancelkey.h"
#include "sluice/sql.h"
#include "sluice/tls.h"

const char *const sl_pool_mode_names[] = {"session", "transaction", "statement", NULL};
const char *const sl_auth_type_names[] = {"any",           "trust", "plain", "md5",
                                          "scram-sha-256", "cert",  "hba",   NULL};
const char *const sl_pin_mode_names[] = {"off", "on", "error", NULL};
const char *const sl_tls_mode_names[] = {"disable",   "allow",       "prefer", "require",
                                         "verify-ca", "verify-full", NULL};
const char *const sl_routing_names[] = {"primary", "auto", "replica", NULL};
const char *const sl_balance_names[] = {"least_outstanding", "latency", "round_robin", "random",
                                        NULL};
static const char *const bool_names[] = {"0", "1", NULL};

enum opt_type { OPT_INT, OPT_MS, OPT_STR, OPT_BOOL, OPT_ENUM, OPT_BYTES };

typedef struct opt {
    const char *name;
    enum opt_type type;
    size_t off;
    const char *def;
    double min, max; /* for OPT_INT and OPT_MS (seconds) */
    const char *const *names;
} opt_t;

#define F(field) offsetof(sl_config_t, field)
#define O_INT(n, f, d, lo, hi)                                                                     \
    { n, OPT_INT, F(f), d, lo, hi, NULL }
#define O_MS(n, f, d, hi)                                                                          \
    { n, OPT_MS, F(f), d, 0, hi, NULL }
#define O_STR(n, f, d)                                                                             \
    { n, OPT_STR, F(f), d, 0, 0, NULL }
#define O_BOOL(n, f, d)                                                                            \
    { n, OPT_BOOL, F(f), d, 0, 0, bool_names }
#define O_ENUM(n, f, d, names)                                                                     \
    { n, OPT_ENUM, F(f), d, 0, 0, names }
#define O_BYTES(n, f, d)                                                                           \
    { n, OPT_BYTES, F(f), d, 0, 0, NULL }

/* Alphabetical. Times are seconds in the file (fractions allowed). */
static const opt_t opts[] = {
    O_STR("admin_users", admin_users, ""),
    O_ENUM("auth_type", auth_type, "md5", sl_auth_type_names),
    O_MS("autodb_idle_timeout", autodb_idle_timeout_ms, "3600", 86400 * 365),
    O_STR("auth_file", auth_file, ""),
    O_MS("auth_cache_ttl", auth_cache_ttl_ms, "60", 86400),
    O_STR("auth_dbname", auth_dbname, ""),
    O_STR("auth_hba_file", auth_hba_file, ""),
    O_STR("auth_query", auth_query, "SELECT usename, passwd FROM pg_shadow WHERE usename=$1"),
    O_STR("auth_user", auth_user, ""),
    O_MS("client_idle_timeout", client_idle_timeout_ms, "0", 86400 * 365),
    O_MS("client_login_timeout", client_login_timeout_ms, "60", 86400),
    O_MS("client_partial_message_timeout", client_partial_message_timeout_ms, "30", 86400),
    O_STR("client_tls13_ciphers", client_tls13_ciphers, ""),
    O_STR("client_tls_ca_file", client_tls_ca_file, ""),
    O_STR("client_tls_cert_file", client_tls_cert_file, ""),
    O_STR("client_tls_ciphers", client_tls_ciphers, "default"),
    O_STR("client_tls_dheparams", client_tls_dheparams, "auto"),
    O_STR("client_tls_ecdhcurve", client_tls_ecdhcurve, "auto"),
    O_STR("client_tls_key_file", client_tls_key_file, ""),
    O_STR("client_tls_protocols", client_tls_protocols, "secure"),
    O_ENUM("client_tls_sslmode", client_tls_sslmode, "disable", sl_tls_mode_names),
    O_INT("default_pool_size", default_pool_size, "20", 1, 100000),
    O_INT("health_check_failures", health_check_failures, "3", 1, 1000),
    O_MS("health_check_period", health_check_period_ms, "1", 3600),
    O_MS("health_check_timeout", health_check_timeout_ms, "3", 3600),
    O_MS("idle_transaction_timeout", idle_transaction_timeout_ms, "0", 86400 * 365),
    O_STR("ignore_startup_parameters", ignore_startup_parameters, ""),
    O_STR("listen_addr", listen_addr, ""),
    O_ENUM("load_balance", load_balance, "least_outstanding", sl_balance_names),
    O_INT("listen_backlog", listen_backlog, "128", 1, 65535),
    O_INT("listen_port", listen_port, "6432", 1, 65535),
    O_BOOL("log_connections", log_connections, "1"),
    O_BOOL("log_disconnections", log_disconnections, "1"),
    O_BOOL("log_stats", log_stats, "1"),
    O_STR("logfile", logfile, ""),
    O_MS("lsn_poll_period", lsn_poll_period_ms, "0.02", 60),
    O_INT("max_client_conn", max_client_conn, "100", 1, 1000000),
    O_INT("max_client_prepared_bytes", max_client_prepared_bytes, "67108864", 1024, 2147483647),
    O_INT("max_client_prepared_statements", max_client_prepared_statements, "10000", 1, 1000000),
    O_INT("max_db_client_connections", max_db_client_connections, "0", 0, 1000000),
    O_INT("max_db_connections", max_db_connections, "0", 0, 100000),
    O_INT("max_prepared_statements", max_prepared_statements, "200", 0, 100000),
    /* PostgreSQL refuses a longer message ("invalid message length") and
     * drops the connection: sluice refuses it first, keeping the server. */
    O_INT("max_packet_size", max_packet_size, "1073741818", 1024, 2147483647),
    O_BYTES("max_replica_lag", max_replica_lag, "16MB"),
    O_MS("max_replica_lag_time", max_replica_lag_time_ms, "0", 86400),
    O_INT("max_rewrite_size", max_rewrite_size, "1048576", 1024, 1 << 30),
    O_INT("max_user_client_connections", max_user_client_connections, "0", 0, 1000000),
    O_INT("max_user_connections", max_user_connections, "0", 0, 100000),
    O_STR("metrics_listen", metrics_listen, ""),
    O_INT("min_pool_size", min_pool_size, "0", 0, 100000),
    O_INT("peer_id", peer_id, "0", 0, SL_CANCELKEY_PEER_MAX),
    O_STR("pidfile", pidfile, ""),
    O_ENUM("pin_session_state", pin_session_state, "on", sl_pin_mode_names),
    O_INT("pkt_buf", pkt_buf, "8192", 2048, 1 << 24),
    O_ENUM("pool_mode", pool_mode, "session", sl_pool_mode_names),
    O_BOOL("read_your_writes", read_your_writes, "1"),
    O_INT("reserve_pool_size", reserve_pool_size, "0", 0, 100000),
    O_MS("reserve_pool_timeout", reserve_pool_timeout_ms, "5", 86400),
    O_MS("server_check_delay", server_check_delay_ms, "30", 86400),
    O_STR("server_check_query", server_check_query, SL_CHECK_EMPTY_QUERY),
    O_MS("server_connect_timeout", server_connect_timeout_ms, "15", 86400),
    O_MS("server_idle_timeout", server_idle_timeout_ms, "600", 86400 * 365),
    O_MS("server_lifetime", server_lifetime_ms, "3600", 86400 * 365),
    O_MS("server_login_retry", server_login_retry_ms, "15", 86400),
    O_STR("server_tls_ca_file", server_tls_ca_file, ""),
    O_STR("server_tls_cert_file", server_tls_cert_file, ""),
    O_STR("server_tls_key_file", server_tls_key_file, ""),
    O_STR("server_tls_protocols", server_tls_protocols, "secure"),
    O_ENUM("server_tls_sslmode", server_tls_sslmode, "prefer", sl_tls_mode_names),
    O_STR("server_reset_query", server_reset_query, "DISCARD ALL"),
    O_MS("shutdown_grace_period", shutdown_grace_period_ms, "30", 86400),
    O_BOOL("so_reuseport", so_reuseport, "0"),
    O_MS("stats_period", stats_period_ms, "60", 86400),
    O_STR("stateless_functions", stateless_functions, ""),
    O_STR("stats_users", stats_users, ""),
    O_BOOL("server_reset_query_always", server_reset_query_always, "0"),
    O_STR("track_extra_parameters", track_extra_parameters, "IntervalStyle"),
    O_MS("transaction_timeout", transaction_timeout_ms, "0", 86400 * 365),
    O_STR("unix_socket_dir", unix_socket_dir, "/tmp"),
    O_INT("verbose", verbose, "0", 0, 3),
    /* 0 (the default): one per online CPU; at most what a cancel key can
     * name. The start log line says how many were started. */
    O_INT("workers", workers, "0", 0, SL_CANCELKEY_WORKERS_MAX),
    O_STR("write_functions", write_functions, SL_SQL_DEFAULT_WRITE_FUNCTIONS),
    O_MS("query_timeout", query_timeout_ms, "0", 86400 * 365),
    O_MS("query_wait_notify", query_wait_notify_ms, "5", 86400),
    O_MS("query_wait_timeout", query_wait_timeout_ms, "120", 86400 * 365),
};
#define NOPTS (sizeof opts / sizeof opts[0])

/* Errors kept with their text; more are only counted (a file of garbage
 * must not make sluice hold a message per line). */
#define MAX_ERRORS 100

struct line_reader;

/* Parsing goes on past an error, so that one run reports every error. */
typedef struct parse_ctx {
    sl_config_t *cfg;
    const char *name;       /* borrowed: the file, for messages */
    struct line_reader *rd; /* borrowed: counts lines; NULL for defaults */
    int line;               /* the line being parsed; 0: none (defaults, whole-file checks) */
    char *errs;             /* owned: "name:line: message\n" per error kept */
    size_t errs_len;        /* bytes in errs */
    int nerrs;              /* errors found, kept or not */
    int first_err_line;     /* the lowest line with an error; 0: none */
    int opt_line[NOPTS];    /* where each [sluice] key was last set; 0: its default */
} parse_ctx_t;

static int fail(parse_ctx_t *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(parse_ctx_t *ctx, const char *fmt, ...) {
    if (ctx->line > 0 && (ctx->first_err_line == 0 || ctx->line < ctx->first_err_line))
        ctx->first_err_line = ctx->line;
    if (++ctx->nerrs > MAX_ERRORS) return 0;
    char msg[600], line[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int n = ctx->line > 0 ? snprintf(line, sizeof line, "%s:%d: %s\n", ctx->name, ctx->line, msg)
                          : snprintf(line, sizeof line, "%s: %s\n", ctx->name, msg);
    size_t len = n < (int)sizeof line ? (size_t)n : sizeof line - 1;
    line[len - 1] = '\n';
    char *grown = realloc(ctx->errs, ctx->errs_len + len + 1);
    if (!grown) return 0; /* counted, not kept */
    memcpy(grown + ctx->errs_len, line, len + 1);
    ctx->errs = grown;
    ctx->errs_len += len;
    return 0; /* inih: an error on this line (parsing goes on) */
}

/* Copies the errors kept into err: whole lines while they fit, then how
 * many more there are. */
static void errors_out(const parse_ctx_t *ctx, char *err, size_t errlen) {
    if (errlen == 0) return;
    err[0] = '\0';
    size_t o = 0;
    int shown = 0;
    const char *p = ctx->errs ? ctx->errs : "";
    for (const char *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
        size_t len = (size_t)(nl - p);
        /* Room for this line, and for the count of the rest unless it is the last. */
        bool last = shown + 1 == ctx->nerrs;
        if (o + (o ? 1 : 0) + len + 1 + (last ? 0 : 64) > errlen) break;
        if (o) err[o++] = '\n';
        memcpy(err + o, p, len);
        o += len;
        err[o] = '\0';
        shown++;
    }
    if (shown < ctx->nerrs)
        snprintf(err + o, errlen - o, "%s%s: %d more error%s not shown", o ? "\n" : "", ctx->name,
                 ctx->nerrs - shown, ctx->nerrs - shown == 1 ? "" : "s");
}

static int enum_index(const char *const *names, const char *v) {
    for (int i = 0; names[i]; i++)
        if (strcasecmp(names[i], v) == 0) return i;
    return -1;
}

static int parse_bool(const char *v) {
    if (!strcasecmp(v, "1") || !strcasecmp(v, "on") || !strcasecmp(v, "true") ||
        !strcasecmp(v, "yes"))
        return 1;
    if (!strcasecmp(v, "0") || !strcasecmp(v, "off") || !strcasecmp(v, "false") ||
        !strcasecmp(v, "no"))
        return 0;
    return -1;
}

/* "123", "64kB", "16MB", "1GB" (PostgreSQL's units, 1024-based); -1 if invalid. */
static int64_t parse_bytes(const char *v) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || x < 0) return -1;
    while (isspace((unsigned char)*end))
        end++;
    static const struct {
        const char *unit;
        int shift;
    } units[] = {{"", 0}, {"B", 0}, {"kB", 10}, {"MB", 20}, {"GB", 30}, {"TB", 40}};
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (!strcasecmp(end, units[i].unit))
            return x > (INT64_MAX >> units[i].shift) ? -1 : (int64_t)x << units[i].shift;
    return -1;
}

static int set_opt(parse_ctx_t *ctx, const opt_t *o, const char *v) {
    char *field = (char *)ctx->cfg + o->off;
    char *end;
    switch (o->type) {
    case OPT_INT: {
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || x < o->min || x > o->max)
            return fail(ctx, "%s: invalid value '%s' (expected an integer from %.0f to %.0f)",
                        o->name, v, o->min, o->max);
        *(int *)field = (int)x;
        return 1;
    }
    case OPT_MS: {
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x) || x < o->min || x > o->max)
            return fail(ctx, "%s: invalid value '%s' (expected seconds from 0 to %.0f)", o->name, v,
                        o->max);
        *(int64_t *)field = (int64_t)llround(x * 1000.0);
        return 1;
    }
    case OPT_STR: {
        char *dup = strdup(v);
        if (!dup) return fail(ctx, "out of memory");
        free(*(char **)field);
        *(char **)field = dup;
        return 1;
    }
    case OPT_BOOL: {
        int b = parse_bool(v);
        if (b < 0) return fail(ctx, "%s: invalid value '%s' (expected 0 or 1)", o->name, v);
        *(bool *)field = b;
        return 1;
    }
    case OPT_BYTES: {
        int64_t x = parse_bytes(v);
        if (x < 0)
            return fail(ctx,
                        "%s: invalid value '%s' (expected bytes, with an optional kB, MB or "
                        "GB unit)",
                        o->name, v);
        *(int64_t *)field = x;
        return 1;
    }
    case OPT_ENUM: {
        int i = enum_index(o->names, v);
        if (i < 0) {
            char list[256] = "";
            for (int k = 0; o->names[k]; k++) {
                strncat(list, k ? ", " : "", sizeof list - strlen(list) - 1);
                strncat(list, o->names[k], sizeof list - strlen(list) - 1);
            }
            return fail(ctx, "%s: invalid value '%s' (expected one of: %s)", o->name, v, list);
        }
        *(int *)field = i;
        return 1;
    }
    }
    return fail(ctx, "%s: internal error", o->name);
}

/* ---- key=value lists (conninfo style) for [databases] and [users] ---- */

typedef struct kvlist {
    int n;
    char *keys[64], *vals[64];
} kvlist_t;

static void kvlist_free(kvlist_t *l) {
    for (int i = 0; i < l->n; i++)
        free(l->keys[i]), free(l->vals[i]);
    l->n = 0;
}

/* Splits "a=1 b='x y' c=\'z" into pairs. Returns 1 or fails the line. */
static int split_kv_pairs(parse_ctx_t *ctx, const char *s, kvlist_t *out) {
    out->n = 0;
    size_t cap = strlen(s) + 1;
    while (*s) {
        while (isspace((unsigned char)*s))
            s++;
        if (!*s) break;
        const char *k = s;
        while (*s && *s != '=' && !isspace((unsigned char)*s))
            s++;
        size_t klen = (size_t)(s - k);
        while (isspace((unsigned char)*s))
            s++;
        if (*s != '=' || klen == 0) return fail(ctx, "expected key=value near '%.20s'", k);
        s++;
        while (isspace((unsigned char)*s))
            s++;
        char *v = malloc(cap), *w = v;
        if (!v) return fail(ctx, "out of memory");
        if (*s == '\'') {
            s++;
            while (*s && *s != '\'') {
                if (*s == '\\' && s[1]) s++;
                *w++ = *s++;
            }
            if (*s != '\'') {
                free(v);
                return fail(ctx, "unterminated quoted value for '%.*s'", (int)klen, k);
            }
            s++;
        } else {
            while (*s && !isspace((unsigned char)*s)) {
                if (*s == '\\' && s[1]) s++;
                *w++ = *s++;
            }
        }
        *w = '\0';
        if (out->n == 64) {
            free(v);
            return fail(ctx, "too many parameters");
        }
        char *key = strndup(k, klen);
        if (!key) {
            free(v);
            return fail(ctx, "out of memory");
        }
        out->keys[out->n] = key;
        out->vals[out->n] = v;
        out->n++;
    }
    return 1;
}

/* As split_kv_pairs; on failure the pairs split before the bad one are
 * freed (the callers return at once: they leaked them). */
static int split_kv(parse_ctx_t *ctx, const char *s, kvlist_t *out) {
    int ok = split_kv_pairs(ctx, s, out);
    if (!ok) kvlist_free(out);
    return ok;
}

static int parse_int_field(parse_ctx_t *ctx, const char *key, const char *v, int lo, int hi,
                           int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return fail(ctx, "%s: invalid value '%s' (expected an integer from %d to %d)", key, v, lo,
                    hi);
    *out = (int)x;
    return 1;
}

/* Seconds (fractions allowed) into milliseconds, as the [sluice] keys. */
static int parse_ms_field(parse_ctx_t *ctx, const char *key, const char *v, int64_t *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x) || x < 0 || x > 86400.0 * 365)
        return fail(ctx, "%s: invalid value '%s' (expected seconds from 0 to %d)", key, v,
                    86400 * 365);
    *out = (int64_t)llround(x * 1000.0);
    return 1;
}

static bool libpq_knows(const char *key) {
    PQconninfoOption *defs = PQconndefaults();
    bool found = false;
    for (PQconninfoOption *o = defs; o && o->keyword; o++)
        if (strcmp(o->keyword, key) == 0) found = true;
    PQconninfoFree(defs);
    return found;
}

/* libpq parameters whose value is one of a fixed list. libpq itself only
 * checks them when a server connection is made, so a typo would pass
 * --check and a reload and fail every client later: check them here. */
static const struct {
    const char *key;
    const char *const values[8]; /* NULL-ended */
} libpq_enums[] = {
    {"sslmode", {"disable", "allow", "prefer", "require", "verify-ca", "verify-full", NULL}},
    {"gssencmode", {"disable", "prefer", "require", NULL}},
    {"channel_binding", {"disable", "prefer", "require", NULL}},
    {"sslcertmode", {"disable", "allow", "require", NULL}},
    {"sslnegotiation", {"postgres", "direct", NULL}},
    {"load_balance_hosts", {"disable", "random", NULL}},
    {"target_session_attrs",
     {"any", "read-write", "read-only", "primary", "standby", "prefer-standby", NULL}},
};

/* SL_OK, or fails with the list of accepted values. libpq compares these
 * case-sensitively, so sluice does too. */
static int check_libpq_value(parse_ctx_t *ctx, const char *db, const char *key, const char *v) {
    for (size_t i = 0; i < sizeof libpq_enums / sizeof *libpq_enums; i++) {
        if (strcmp(libpq_enums[i].key, key) != 0) continue;
        char list[160] = "";
        for (int j = 0; libpq_enums[i].values[j]; j++) {
            if (!strcmp(libpq_enums[i].values[j], v)) return 1;
            snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", j ? ", " : "",
                     libpq_enums[i].values[j]);
        }
        return fail(ctx, "database '%s': %s: invalid value '%s' (expected one of %s)", db, key, v,
                    list);
    }
    /* A replication connection cannot carry SQL: no pool could serve it. */
    if (!strcmp(key, "replication"))
        return fail(ctx,
                    "database '%s': replication: sluice pools no replication connections; "
                    "remove the key",
                    db);
    return 1;
}

/* replicas = host:port[:weight], ... (an IPv6 address goes in brackets). */
static int parse_replicas(parse_ctx_t *ctx, const char *v, sl_db_cfg_t *db) {
    if (db->replicas) return fail(ctx, "replicas: given twice");
    db->replicas = calloc(SL_MAX_REPLICAS, sizeof *db->replicas);
    if (!db->replicas) return fail(ctx, "out of memory");
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", v);
    char *save = NULL;
    for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        while (isspace((unsigned char)*item))
            item++;
        if (!*item) continue;
        if (db->nreplicas == SL_MAX_REPLICAS)
            return fail(ctx, "replicas: more than %d replicas", SL_MAX_REPLICAS);
        sl_replica_cfg_t *r = &db->replicas[db->nreplicas];
        char *host = item, *rest = "";
        for (char *e = item + strlen(item); e > item && isspace((unsigned char)e[-1]);)
            *--e = '\0';
        if (*item == '[') {
            host = item + 1;
            char *close = strchr(host, ']');
            if (!close || (close[1] && close[1] != ':'))
                return fail(ctx, "replicas: invalid address '%s' (expected [ipv6]:port)", item);
            *close = '\0';
            if (close[1]) rest = close + 2;
        } else if ((rest = strchr(item, ':')) != NULL) {
            *rest++ = '\0';
        } else {
            rest = "";
        }
        r->port = 5432, r->weight = 1;
        char *end;
        if (*rest) {
            long port = strtol(rest, &end, 10);
            if (end == rest || port < 1 || port > 65535 || (*end && *end != ':'))
                return fail(ctx, "replicas: invalid port in '%s' (expected host:port[:weight])",
                            host);
            r->port = (int)port;
            if (*end == ':') {
                long wgt = strtol(end + 1, &end, 10);
                while (isspace((unsigned char)*end))
                    end++;
                if (wgt < 1 || wgt > 100 || *end)
                    return fail(ctx, "replicas: invalid weight for '%s' (expected 1 to 100)", host);
                r->weight = (int)wgt;
            }
        }
        if (!*host || strlen(host) >= sizeof r->host)
            return fail(ctx, "replicas: invalid host in '%s'", v);
        snprintf(r->host, sizeof r->host, "%s", host);
        db->nreplicas++;
    }
    if (db->nreplicas == 0) return fail(ctx, "replicas: empty list");
    return 1;
}

static int add_database(parse_ctx_t *ctx, const char *name, const char *value, int line) {
    sl_config_t *cfg = ctx->cfg;
    if (sl_config_find_db(cfg, name)) return fail(ctx, "database '%s' defined twice", name);
    kvlist_t kv;
    if (!split_kv(ctx, value, &kv)) return 0;
    sl_db_cfg_t db = {.pool_size = -1,
                      .routing = -1,
                      .load_balance = -1,
                      .min_pool_size = -1,
                      .reserve_pool_size = -1,
                      .max_db_connections = -1,
                      .max_db_client_connections = -1,
                      .query_wait_timeout_ms = -1,
                      .pool_mode = -1,
                      .line = line};
    db.keys = calloc((size_t)kv.n + 1, sizeof(char *));
    db.vals = calloc((size_t)kv.n + 1, sizeof(char *));
    int ok = 1;
    /* Every key is looked at, so that each bad one is reported. */
    for (int i = 0; i < kv.n; i++) {
        const char *k = kv.keys[i], *v = kv.vals[i];
        if (!strcmp(k, "pool_size"))
            ok &= parse_int_field(ctx, k, v, 1, 100000, &db.pool_size);
        else if (!strcmp(k, "min_pool_size"))
            ok &= parse_int_field(ctx, k, v, 0, 100000, &db.min_pool_size);
        else if (!strcmp(k, "reserve_pool_size") || !strcmp(k, "reserve_pool"))
            ok &= parse_int_field(ctx, k, v, 0, 100000, &db.reserve_pool_size);
        else if (!strcmp(k, "max_db_connections"))
            ok &= parse_int_field(ctx, k, v, 0, 100000, &db.max_db_connections);
        else if (!strcmp(k, "max_db_client_connections"))
            ok &= parse_int_field(ctx, k, v, 0, 1000000, &db.max_db_client_connections);
        else if (!strcmp(k, "query_wait_timeout"))
            ok &= parse_ms_field(ctx, k, v, &db.query_wait_timeout_ms);
        else if (!strcmp(k, "pool_mode")) {
            db.pool_mode = enum_index(sl_pool_mode_names, v);
            if (db.pool_mode < 0)
                ok = fail(ctx,
                          "pool_mode: invalid value '%s' (expected session, transaction or "
                          "statement)",
                          v);
        } else if (!strcmp(k, "routing")) {
            db.routing = enum_index(sl_routing_names, v);
            if (db.routing < 0)
                ok =
                    fail(ctx, "routing: invalid value '%s' (expected primary, auto or replica)", v);
        } else if (!strcmp(k, "load_balance")) {
            db.load_balance = enum_index(sl_balance_names, v);
            if (db.load_balance < 0)
                ok = fail(ctx,
                          "load_balance: invalid value '%s' (expected least_outstanding, "
                          "latency, round_robin or random)",
                          v);
        } else if (!strcmp(k, "replicas")) {
            ok &= parse_replicas(ctx, v, &db);
        } else if (!libpq_knows(k)) {
            ok = fail(ctx, "database '%s': unknown connection parameter '%s'", name, k);
        } else if (!check_libpq_value(ctx, name, k, v)) {
            ok = 0;
        } else {
            db.keys[db.nkv] = kv.keys[i];
            db.vals[db.nkv] = kv.vals[i];
            kv.keys[i] = kv.vals[i] = NULL;
            db.nkv++;
        }
    }
    kvlist_free(&kv);
    if (ok && db.routing == SL_ROUTE_REPLICA && db.nreplicas == 0)
        ok = fail(ctx, "database '%s': routing = replica needs replicas = host:port,...", name);
    db.name = strdup(name);
    sl_db_cfg_t *grown = realloc(cfg->dbs, sizeof(sl_db_cfg_t) * (size_t)(cfg->ndbs + 1));
    if (!grown) ok = fail(ctx, "out of memory");
    if (grown) cfg->dbs = grown;
    if (!ok) {
        for (int i = 0; i < db.nkv; i++)
            free(db.keys[i]), free(db.vals[i]);
        free(db.keys), free(db.vals), free(db.name), free(db.replicas);
        return 0;
    }
    cfg->dbs[cfg->ndbs++] = db;
    return 1;
}

/* The [users] keys that take a number (pool_mode is the other one):
 * PgBouncer's per-user keys. Times are seconds, as in [sluice]. */
#define U(f) offsetof(sl_user_cfg_t, f)
static const struct {
    const char *key;
    bool ms;    /* seconds into an int64_t of ms; else an int */
    size_t off; /* into sl_user_cfg_t */
    int lo, hi; /* for an int */
} user_keys[] = {
    {"client_idle_timeout", true, U(client_idle_timeout_ms), 0, 0},
    {"idle_transaction_timeout", true, U(idle_transaction_timeout_ms), 0, 0},
    {"max_user_client_connections", false, U(max_user_client_connections), 0, 1000000},
    {"max_user_connections", false, U(max_user_connections), 0, 100000},
    {"pool_size", false, U(pool_size), 1, 100000},
    {"query_timeout", true, U(query_timeout_ms), 0, 0},
    {"query_wait_timeout", true, U(query_wait_timeout_ms), 0, 0},
    {"reserve_pool_size", false, U(reserve_pool_size), 0, 100000},
    {"transaction_timeout", true, U(transaction_timeout_ms), 0, 0},
};
#undef U

static int set_user_key(parse_ctx_t *ctx, sl_user_cfg_t *u, const char *k, const char *v) {
    if (!strcmp(k, "pool_mode")) {
        u->pool_mode = enum_index(sl_pool_mode_names, v);
        if (u->pool_mode < 0)
            return fail(ctx,
                        "pool_mode: invalid value '%s' (expected session, transaction or "
                        "statement)",
                        v);
        return 1;
    }
    for (size_t i = 0; i < sizeof user_keys / sizeof *user_keys; i++) {
        if (strcmp(user_keys[i].key, k) != 0) continue;
        char *field = (char *)u + user_keys[i].off;
        return user_keys[i].ms
                   ? parse_ms_field(ctx, k, v, (int64_t *)field)
                   : parse_int_field(ctx, k, v, user_keys[i].lo, user_keys[i].hi, (int *)field);
    }
    char list[512] = "pool_mode";
    for (size_t i = 0; i < sizeof user_keys / sizeof *user_keys; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), ", %s", user_keys[i].key);
    return fail(ctx, "user '%s': unknown key '%s' (expected %s)", u->name, k, list);
}

/* A [users] line's keys before it sets any: -1, "not set", in every one
 * (0 would be "off", overriding the global value). One definition, for the
 * parser and for sl_config_limits alike. */
static const sl_user_cfg_t user_unset = {.pool_mode = -1,
                                         .pool_size = -1,
                                         .reserve_pool_size = -1,
                                         .max_user_connections = -1,
                                         .max_user_client_connections = -1,
                                         .query_timeout_ms = -1,
                                         .query_wait_timeout_ms = -1,
                                         .idle_transaction_timeout_ms = -1,
                                         .transaction_timeout_ms = -1,
                                         .client_idle_timeout_ms = -1};

static int add_user(parse_ctx_t *ctx, const char *name, const char *value) {
    sl_config_t *cfg = ctx->cfg;
    if (sl_config_find_user(cfg, name)) return fail(ctx, "user '%s' defined twice", name);
    kvlist_t kv;
    if (!split_kv(ctx, value, &kv)) return 0;
    sl_user_cfg_t u = user_unset;
    u.name = (char *)name; /* borrowed until kept below */
    int ok = 1;
    for (int i = 0; i < kv.n; i++)
        ok &= set_user_key(ctx, &u, kv.keys[i], kv.vals[i]);
    kvlist_free(&kv);
    if (!ok) return 0;
    sl_user_cfg_t *grown = realloc(cfg->users, sizeof(sl_user_cfg_t) * (size_t)(cfg->nusers + 1));
    if (!grown) return fail(ctx, "out of memory");
    cfg->users = grown;
    u.name = strdup(name);
    if (!u.name) return fail(ctx, "out of memory");
    cfg->users[cfg->nusers++] = u;
    return 1;
}

/* "<id> = host=... port=... pool_size=..." in [peers]. As in PgBouncer, the
 * instance's own id may be listed (and is then unused), so that one [peers]
 * section serves every instance of the group. */
static int add_peer(parse_ctx_t *ctx, const char *name, const char *value) {
    sl_config_t *cfg = ctx->cfg;
    int id;
    char *end;
    errno = 0;
    long x = strtol(name, &end, 10);
    if (errno || end == name || *end || x < 1 || x > SL_CANCELKEY_PEER_MAX)
        return fail(ctx,
                    "[peers]: invalid peer id '%s' (expected an integer from 1 to %d, the "
                    "peer_id of that instance)",
                    name, SL_CANCELKEY_PEER_MAX);
    id = (int)x;
    if (sl_config_find_peer(cfg, id)) return fail(ctx, "[peers]: peer %d defined twice", id);
    kvlist_t kv;
    if (!split_kv(ctx, value, &kv)) return 0;
    sl_peer_cfg_t p = {.id = id, .port = 6432, .line = ctx->line};
    int ok = 1;
    bool has_host = false;
    for (int i = 0; i < kv.n; i++) {
        const char *k = kv.keys[i], *v = kv.vals[i];
        if (!strcmp(k, "host")) {
            has_host = true;
            if (!*v || strlen(v) >= sizeof p.host)
                ok = fail(ctx,
                          "peer %d: invalid host '%.40s' (expected a host name, an address "
                          "or a Unix socket directory)",
                          id, v);
            else if (*v == '@')
                ok = fail(ctx,
                          "peer %d: host '%s': abstract Unix sockets are not supported; "
                          "give the directory of the peer's unix_socket_dir",
                          id, v);
            else if (*v == '/' && strlen(v) + sizeof "/.s.PGSQL.65535" >
                                      sizeof((struct sockaddr_un *)0)->sun_path)
                ok = fail(ctx,
                          "peer %d: Unix socket directory '%s' is too long for a socket "
                          "path",
                          id, v);
            else
                snprintf(p.host, sizeof p.host, "%s", v);
        } else if (!strcmp(k, "port")) {
            ok &= parse_int_field(ctx, k, v, 1, 65535, &p.port);
        } else if (!strcmp(k, "pool_size")) {
            ok &= parse_int_field(ctx, k, v, 1, 100000, &p.pool_size);
        } else {
            ok = fail(ctx, "peer %d: unknown key '%s' (expected host, port or pool_size)", id, k);
        }
    }
    kvlist_free(&kv);
    if (ok && !has_host) ok = fail(ctx, "peer %d: no host (expected host=... port=...)", id);
    if (!ok) return 0;
    sl_peer_cfg_t *grown = realloc(cfg->peers, sizeof(sl_peer_cfg_t) * (size_t)(cfg->npeers + 1));
    if (!grown) return fail(ctx, "out of memory");
    cfg->peers = grown;
    cfg->peers[cfg->npeers++] = p;
    return 1;
}

/* inih reads line by line; the reader counts lines, for the messages. */
typedef struct line_reader {
    const char *text; /* string source, or NULL */
    FILE *file;       /* file source, or NULL */
    int line;         /* of the last read */
    bool mid_line;    /* the last read ended inside a long line (inih reads on) */
    parse_ctx_t *ctx; /* borrowed: where a syntax error inih does not report goes */
} line_reader_t;

static int on_ini_line(void *user, const char *section, const char *name, const char *value) {
    parse_ctx_t *ctx = user;
    ctx->line = ctx->rd->line;
    if (!strcasecmp(section, "sluice") || !strcasecmp(section, "pgbouncer")) {
        for (size_t i = 0; i < NOPTS; i++)
            if (!strcasecmp(opts[i].name, name)) {
                ctx->opt_line[i] = ctx->line;
                return set_opt(ctx, &opts[i], value);
            }
        return fail(ctx, "unknown key '%s' in [%s]", name, section);
    }
    if (!strcasecmp(section, "databases")) return add_database(ctx, name, value, ctx->line);
    if (!strcasecmp(section, "users")) return add_user(ctx, name, value);
    if (!strcasecmp(section, "peers")) return add_peer(ctx, name, value);
    return fail(ctx, "unknown section [%s] (expected [sluice], [databases], [users] or [peers])",
                section);
}

static sl_config_t *config_new(void) {
    sl_config_t *cfg = calloc(1, sizeof *cfg);
    if (!cfg) return NULL;
    parse_ctx_t ctx = {.cfg = cfg, .name = "defaults"};
    for (size_t i = 0; i < NOPTS; i++)
        if (!set_opt(&ctx, &opts[i], opts[i].def)) {
            free(ctx.errs);
            sl_config_free(cfg);
            return NULL;
        }
    return cfg;
}

/* A comma list of function names, each [schema.]name with an optional
 * trailing * (see sl_strlist_has; "schema.*" too); NULL if valid, else the
 * bad entry's first character. */
static const char *bad_function_entry(const char *list) {
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p) break;
        const char *start = p;
        int parts = 0;
        for (;;) {
            if (!isalpha((unsigned char)*p) && *p != '_') return start;
            while (isalnum((unsigned char)*p) || *p == '_' || *p == '$')
                p++;
            parts++;
            if (*p != '.' || parts == 2) break;
            p++;
            if (*p == '*') break; /* schema.*: every function in that schema */
        }
        if (*p == '*') p++;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p && *p != ',') return start;
    }
    return NULL;
}

int sl_config_parse_hostport(const char *v, char *host, size_t cap, int *port) {
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v) return SL_ECONFIG;
    const char *h = v, *hend = colon;
    if (*v == '[') { /* [v6]:port */
        if (colon[-1] != ']') return SL_ECONFIG;
        h = v + 1, hend = colon - 1;
    } else if (memchr(v, ':', (size_t)(colon - v))) {
        return SL_ECONFIG; /* a bare IPv6 address: its port would be ambiguous */
    }
    size_t hlen = (size_t)(hend - h);
    if (hlen == 0 || hlen >= cap) return SL_ECONFIG;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p < 1 || p > 65535) return SL_ECONFIG;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (int)p;
    return SL_OK;
}

/* Points the next message at the line that set key (none: its default). */
static void at_key(parse_ctx_t *ctx, const char *key) {
    ctx->line = 0;
    for (size_t i = 0; i < NOPTS; i++)
        if (!strcmp(opts[i].name, key)) ctx->line = ctx->opt_line[i];
}

/* Checks of keys together; each failure is reported, at the line of the
 * key it names. */
static void validate(parse_ctx_t *ctx) {
    const sl_config_t *cfg = ctx->cfg;
    const char *bad = bad_function_entry(cfg->stateless_functions);
    if (bad) {
        at_key(ctx, "stateless_functions");
        fail(ctx,
             "stateless_functions: invalid entry near '%.30s' (expected a comma list of "
             "function names, name or schema.name, an optional * at the end)",
             bad);
    }
    if (cfg->auth_type == SL_AUTH_HBA && !*cfg->auth_hba_file) {
        at_key(ctx, "auth_type");
        fail(ctx, "auth_type hba needs auth_hba_file");
    }
    if (cfg->auth_type != SL_AUTH_TRUST && cfg->auth_type != SL_AUTH_ANY &&
        cfg->auth_type != SL_AUTH_CERT && !*cfg->auth_file) {
        at_key(ctx, "auth_type");
        fail(ctx, "auth_type %s needs auth_file", sl_auth_type_names[cfg->auth_type]);
    }
    if (!*cfg->listen_addr && !*cfg->unix_socket_dir) {
        at_key(ctx, "listen_addr");
        fail(ctx, "nothing to listen on: set listen_addr or unix_socket_dir");
    }
    char mhost[256];
    int mport;
    if (*cfg->metrics_listen &&
        sl_config_parse_hostport(cfg->metrics_listen, mhost, sizeof mhost, &mport) < 0) {
        at_key(ctx, "metrics_listen");
        fail(ctx,
             "metrics_listen: invalid value \"%s\" (expected addr:port, e.g. "
             "127.0.0.1:9127, [::1]:9127 or *:9127; empty: off)",
             cfg->metrics_listen);
    }
    if (cfg->npeers > 0 && cfg->peer_id == 0) {
        ctx->line = cfg->peers[0].line;
        fail(ctx, "[peers] is set but peer_id is 0 (peering off): set peer_id to this instance's "
                  "id in the group, or remove [peers]");
    }
    const char *protos[][2] = {{"client_tls_protocols", cfg->client_tls_protocols},
                               {"server_tls_protocols", cfg->server_tls_protocols}};
    for (int i = 0; i < 2; i++) {
        int lo, hi;
        if (sl_tls_parse_protocols(protos[i][1], &lo, &hi) < 0) {
            at_key(ctx, protos[i][0]);
            fail(ctx, "%s: unknown value \"%s\" (use tlsv1.2, tlsv1.3, secure, all, legacy)",
                 protos[i][0], protos[i][1]);
        }
    }
}

static void configure_inih(void) {
    /* Connection strings can be long: let the line buffer grow. */
    ini_use_stack = false;
    ini_allow_realloc = true;
    ini_max_line = 1 << 20;
    ini_allow_multiline = false;
    /* Go on after an error: every error is reported with its line. */
    ini_stop_on_first_error = false;
}

/* Lines inih cannot parse (a section header without its ']', a line with
 * no '='), which it reports only as the first error's line number: said
 * here, so that each is reported like the other errors. */
static void check_syntax(line_reader_t *r, const char *str) {
    while (*str == ' ' || *str == '\t')
        str++;
    size_t n = strcspn(str, "\r\n");
    if (n == 0 || *str == ';' || *str == '#') return;
    r->ctx->line = r->line;
    if (*str == '[') {
        if (!memchr(str, ']', n)) fail(r->ctx, "syntax error: section header without ']'");
    } else if (!memchr(str, '=', n) && !memchr(str, ':', n)) {
        fail(r->ctx, "syntax error: '%.*s' (expected [section] or key = value)",
             n > 40 ? 40 : (int)n, str);
    }
}

static char *read_line(char *str, int num, void *stream) {
    line_reader_t *r = stream;
    char *res;
    if (r->file) {
        res = fgets(str, num, r->file);
    } else {
        if (!*r->text) return NULL;
        const char *nl = strchr(r->text, '\n');
        size_t len = nl ? (size_t)(nl - r->text + 1) : strlen(r->text);
        if (len > (size_t)num - 1) len = (size_t)num - 1;
        memcpy(str, r->text, len);
        str[len] = '\0';
        r->text += len;
        res = str;
    }
    if (!res) return NULL;
    /* inih reads a long line in several calls: one line each. */
    if (!r->mid_line) {
        r->line++;
        check_syntax(r, res);
    }
    size_t n = strlen(res);
    r->mid_line = n > 0 && res[n - 1] != '\n';
    return res;
}

static sl_config_t *load(const char *name, line_reader_t *reader, char *err, size_t errlen) {
    configure_inih();
    sl_config_t *cfg = config_new();
    if (!cfg || !(cfg->path = strdup(name))) {
        snprintf(err, errlen, "%s: out of memory", name);
        sl_config_free(cfg);
        return NULL;
    }
    parse_ctx_t ctx = {.cfg = cfg, .name = name, .rd = reader};
    reader->ctx = &ctx;
    int rc = ini_parse_stream(read_line, reader, on_ini_line, &ctx);
    if (rc < 0) {
        ctx.line = 0;
        fail(&ctx, "cannot parse: out of memory");
    } else if (rc > 0 && (ctx.first_err_line == 0 || rc < ctx.first_err_line)) {
        /* Only inih saw it (a line too long for its buffer). */
        ctx.line = rc;
        fail(&ctx, "syntax error (expected [section] or key = value)");
    }
    validate(&ctx);
    if (ctx.nerrs > 0) {
        errors_out(&ctx, err, errlen);
        free(ctx.errs);
        sl_config_free(cfg);
        return NULL;
    }
    free(ctx.errs);
    return cfg;
}

sl_config_t *sl_config_load(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open config file: %s", path, strerror(errno));
        return NULL;
    }
    line_reader_t r = {.file = f};
    sl_config_t *cfg = load(path, &r, err, errlen);
    fclose(f);
    return cfg;
}

sl_config_t *sl_config_load_string(const char *name, const char *text, char *err, size_t errlen) {
    line_reader_t r = {.text = text};
    return load(name, &r, err, errlen);
}

void sl_config_free(sl_config_t *cfg) {
    if (!cfg) return;
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (opts[i].type == OPT_STR) free(*(char **)((char *)cfg + opts[i].off));
    for (int i = 0; i < cfg->ndbs; i++) {
        sl_db_cfg_t *d = &cfg->dbs[i];
        for (int k = 0; k < d->nkv; k++)
            free(d->keys[k]), free(d->vals[k]);
        free(d->keys), free(d->vals), free(d->name), free(d->replicas);
    }
    for (int i = 0; i < cfg->nusers; i++)
        free(cfg->users[i].name);
    free(cfg->dbs);
    free(cfg->users);
    free(cfg->peers);
    free(cfg->path);
    free(cfg);
}

const sl_db_cfg_t *sl_config_find_db(const sl_config_t *cfg, const char *name) {
    for (int i = 0; i < cfg->ndbs; i++)
        if (strcmp(cfg->dbs[i].name, name) == 0) return &cfg->dbs[i];
    return NULL;
}

const sl_db_cfg_t *sl_config_serving_db(const sl_config_t *cfg, const char *name, bool *automatic) {
    const sl_db_cfg_t *db = sl_config_find_db(cfg, name);
    *automatic = !db;
    return db ? db : sl_config_find_db(cfg, "*");
}

int sl_db_cfg_routing(const sl_db_cfg_t *db) {
    if (db->routing >= 0) return db->nreplicas ? db->routing : SL_ROUTE_PRIMARY;
    return db->nreplicas ? SL_ROUTE_AUTO : SL_ROUTE_PRIMARY;
}

const sl_user_cfg_t *sl_config_find_user(const sl_config_t *cfg, const char *name) {
    for (int i = 0; i < cfg->nusers; i++)
        if (strcmp(cfg->users[i].name, name) == 0) return &cfg->users[i];
    return NULL;
}

const sl_peer_cfg_t *sl_config_find_peer(const sl_config_t *cfg, int id) {
    for (int i = 0; i < cfg->npeers; i++)
        if (cfg->peers[i].id == id) return &cfg->peers[i];
    return NULL;
}

const char *sl_db_cfg_get(const sl_db_cfg_t *db, const char *key) {
    for (int i = 0; i < db->nkv; i++)
        if (strcmp(db->keys[i], key) == 0) return db->vals[i];
    return NULL;
}

/* ---- the option table as the admin console shows and changes it ---- */

/* Keys a running sluice keeps from start-up (see worker.c's reload), and
 * keys whose change needs files read again (auth_file, hba, TLS): SET
 * refuses those; RELOAD applies the second kind. */
static const char *const fixed_keys[] = {
    "peer_id", /* the cancel keys clients hold name it */
    "listen_addr", "listen_port",    "listen_backlog", "unix_socket_dir", "pidfile",
    "pkt_buf",     "metrics_listen", "so_reuseport",   "workers",         NULL};
static const char *const file_keys[] = {"auth_file",
                                        "auth_hba_file",
                                        "auth_type",
                                        "client_tls_sslmode",
                                        "client_tls_key_file",
                                        "client_tls_cert_file",
                                        "client_tls_ca_file",
                                        "client_tls_protocols",
                                        "client_tls_ciphers",
                                        "client_tls13_ciphers",
                                        "client_tls_dheparams",
                                        "client_tls_ecdhcurve",
                                        "logfile",
                                        NULL};

static bool listed(const char *const *list, const char *name) {
    for (int i = 0; list[i]; i++)
        if (strcmp(list[i], name) == 0) return true;
    return false;
}

int sl_config_nkeys(void) {
    return (int)(sizeof opts / sizeof *opts);
}

const char *sl_config_key(int i) {
    return opts[i].name;
}

const char *sl_config_key_default(int i) {
    return opts[i].def;
}

int sl_config_key_index(const char *key) {
    for (int i = 0; i < sl_config_nkeys(); i++)
        if (strcasecmp(opts[i].name, key) == 0) return i;
    return -1;
}

enum sl_key_change sl_config_key_change(int i) {
    if (listed(fixed_keys, opts[i].name)) return SL_KEY_RESTART;
    if (listed(file_keys, opts[i].name)) return SL_KEY_RELOAD;
    return SL_KEY_SET;
}

void sl_config_key_value(const sl_config_t *cfg, int i, char *buf, size_t cap) {
    const opt_t *o = &opts[i];
    const char *field = (const char *)cfg + o->off;
    switch (o->type) {
    case OPT_INT:
        snprintf(buf, cap, "%d", *(const int *)field);
        return;
    case OPT_MS: {
        /* Seconds, as the file has them; fractions only where there are. */
        int64_t ms = *(const int64_t *)field;
        if (ms % 1000 == 0) {
            snprintf(buf, cap, "%lld", (long long)(ms / 1000));
            return;
        }
        /* Exact to the millisecond (%g rounded 5555555.5 s to 5.55556e+06,
         * which reads back as another value), trailing zeros dropped. */
        long long frac = ms % 1000 < 0 ? -(ms % 1000) : ms % 1000;
        int n = snprintf(buf, cap, "%s%lld.%03lld", ms < 0 && ms > -1000 ? "-" : "",
                         (long long)(ms / 1000), frac);
        while (n > 0 && (size_t)n < cap && buf[n - 1] == '0')
            buf[--n] = '\0';
        return;
    }
    case OPT_STR:
        snprintf(buf, cap, "%s", *(char *const *)field ? *(char *const *)field : "");
        return;
    case OPT_BOOL:
        snprintf(buf, cap, "%d", *(const bool *)field ? 1 : 0);
        return;
    case OPT_ENUM:
        snprintf(buf, cap, "%s", o->names[*(const int *)field]);
        return;
    case OPT_BYTES:
        snprintf(buf, cap, "%lld", (long long)*(const int64_t *)field);
        return;
    }
    snprintf(buf, cap, "?");
}

static size_t field_size(enum opt_type t) {
    switch (t) {
    case OPT_MS:
    case OPT_BYTES:
        return sizeof(int64_t);
    case OPT_STR:
        return sizeof(char *);
    case OPT_BOOL:
        return sizeof(bool);
    default:
        return sizeof(int);
    }
}

int sl_config_set_key(sl_config_t *cfg, int i, const char *value, char *err, size_t errlen) {
    /* The checks a load runs on keys together (validate) run here too: the
     * old value comes back if the new one fails any of them. */
    const opt_t *o = &opts[i];
    char *field = (char *)cfg + o->off;
    union {
        int64_t l;
        char *s;
        int i;
        bool b;
    } saved;
    memcpy(&saved, field, field_size(o->type));
    if (o->type == OPT_STR) *(char **)field = NULL; /* set_opt frees what it replaces */
    parse_ctx_t ctx = {.cfg = cfg, .name = "SET"};
    if (set_opt(&ctx, o, value) && ctx.nerrs == 0) validate(&ctx);
    bool ok = ctx.nerrs == 0;
    if (o->type == OPT_STR) free(ok ? saved.s : *(char **)field);
    if (!ok) {
        memcpy(field, &saved, field_size(o->type));
        errors_out(&ctx, err, errlen);
    }
    free(ctx.errs);
    return ok ? SL_OK : SL_ECONFIG;
}

/* The first value that is set (not -1): a user's, a database's, the global. */
static int first_set(int a, int b, int global) {
    return a >= 0 ? a : b >= 0 ? b : global;
}

static int64_t first_set_ms(int64_t a, int64_t b, int64_t global) {
    return a >= 0 ? a : b >= 0 ? b : global;
}

void sl_config_limits(const sl_config_t *cfg, const sl_db_cfg_t *db, const char *user,
                      sl_limits_t *out) {
    const sl_user_cfg_t *u = sl_config_find_user(cfg, user);
    if (!u) u = &user_unset;
    /* PgBouncer (pool_pool_size, pool_res_pool_size): the user's over the
     * database's; sluice applies the same order to pool_mode and
     * query_wait_timeout. */
    out->pool_mode = first_set(u->pool_mode, db->pool_mode, cfg->pool_mode);
    out->pool_size = first_set(u->pool_size, db->pool_size, cfg->default_pool_size);
    out->reserve_pool_size =
        first_set(u->reserve_pool_size, db->reserve_pool_size, cfg->reserve_pool_size);
    out->query_wait_timeout_ms = first_set_ms(u->query_wait_timeout_ms, db->query_wait_timeout_ms,
                                              cfg->query_wait_timeout_ms);
    out->min_pool_size = first_set(db->min_pool_size, -1, cfg->min_pool_size);
    out->max_db_connections = first_set(db->max_db_connections, -1, cfg->max_db_connections);
    out->max_db_client_connections =
        first_set(db->max_db_client_connections, -1, cfg->max_db_client_connections);
    out->max_user_connections = first_set(u->max_user_connections, -1, cfg->max_user_connections);
    out->max_user_client_connections =
        first_set(u->max_user_client_connections, -1, cfg->max_user_client_connections);
    out->query_timeout_ms = first_set_ms(u->query_timeout_ms, -1, cfg->query_timeout_ms);
    out->idle_transaction_timeout_ms =
        first_set_ms(u->idle_transaction_timeout_ms, -1, cfg->idle_transaction_timeout_ms);
    out->transaction_timeout_ms =
        first_set_ms(u->transaction_timeout_ms, -1, cfg->transaction_timeout_ms);
    out->client_idle_timeout_ms =
        first_set_ms(u->client_idle_timeout_ms, -1, cfg->client_idle_timeout_ms);
}

const char *sl_config_check_query(const sl_config_t *cfg) {
    if (!*cfg->server_check_query) return NULL;
    return strcmp(cfg->server_check_query, SL_CHECK_EMPTY_QUERY) == 0 ? ""
                                                                      : cfg->server_check_query;
}
