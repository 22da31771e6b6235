/* The admin console attacked as a hostile or careless client would: what
 * it answers must stay usable. An error about a long value must say what
 * is wrong (not only that an error was not shown), and every message must
 * be valid UTF-8 (client_encoding is UTF8: drivers decode what they get),
 * even when a value the client sent is cut to fit. SET refuses what the
 * configuration file is refused for. */
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"

#define OPTS                                                                                       \
    "pool_mode = transaction\ndefault_pool_size = 1\nadmin_users = sl_scram\n"                     \
    "stats_users = sl_md5\n"

static PGconn *console(const it_sluice_t *s, const char *user) {
    PGconn *c = it_connect_db(s, user, "pgbouncer", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "console login as %s: %s", user, PQerrorMessage(c));
    return c;
}

/* True when s is well-formed UTF-8 (no cut or stray sequence). */
static bool utf8_ok(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80             ? 0
                : (*p & 0xe0) == 0xc0 ? 1
                : (*p & 0xf0) == 0xe0 ? 2
                : (*p & 0xf8) == 0xf0 ? 3
                                      : -1;
        if (n < 0) return false;
        p++;
        for (int i = 0; i < n; i++, p++)
            if ((*p & 0xc0) != 0x80) return false;
    }
    return true;
}

/* Runs sql expecting an error; returns its primary message (static). */
static const char *error_of(PGconn *c, const char *sql, const char *code) {
    static char msg[2048];
    PGresult *r = PQexec(c, sql);
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR, "%.60s... should fail", sql);
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    IT_ASSERT(st && !strcmp(st, code), "%.60s...: SQLSTATE %s, expected %s", sql, st ? st : "none",
              code);
    snprintf(msg, sizeof msg, "%s", m ? m : "");
    PQclear(r);
    return msg;
}

/* "SET key = 'v...'" with n copies of unit in the value. */
static char *set_sql(const char *key, const char *prefix, const char *unit, int n) {
    size_t cap = strlen(key) + strlen(prefix) + strlen(unit) * (size_t)n + 32;
    char *sql = malloc(cap);
    if (!sql) abort();
    int o = snprintf(sql, cap, "SET %s = '%s", key, prefix);
    for (int i = 0; i < n; i++)
        o += snprintf(sql + o, cap - (size_t)o, "%s", unit);
    snprintf(sql + o, cap - (size_t)o, "'");
    return sql;
}

/* A SET whose value is refused says which key and why, however long the
 * value: the value is shortened, the reason is not lost. */
static void set_long_value(it_sluice_t *s) {
    PGconn *adm = console(s, "sl_scram");
    char *sql = set_sql("default_pool_size", "", "9", 600);
    const char *m = error_of(adm, sql, "22023");
    IT_ASSERT(strstr(m, "default_pool_size") && strstr(m, "invalid value"),
              "the error names the key and the reason: \"%s\"", m);
    free(sql);
    /* Two-byte characters after one and two ASCII letters: wherever the
     * value is cut, one of the two cuts falls inside a character. */
    const char *prefixes[] = {"x", "xy"};
    for (int i = 0; i < 2; i++) {
        sql = set_sql("query_timeout", prefixes[i], "\xc3\xbc", 400);
        m = error_of(adm, sql, "22023");
        IT_ASSERT(strstr(m, "query_timeout") && strstr(m, "invalid value"),
                  "the error names the key and the reason: \"%.120s\"", m);
        IT_ASSERT(utf8_ok(m), "and is valid UTF-8: \"%s\"", m);
        free(sql);
    }
    it_value(adm, "SHOW VERSION"); /* the console still answers */
    PQfinish(adm);
}

static const char *config_value(PGconn *c, const char *key) {
    static char v[256];
    PGresult *r = PQexec(c, "SHOW CONFIG");
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "SHOW CONFIG: %s", PQresultErrorMessage(r));
    v[0] = '\0';
    for (int i = 0; i < PQntuples(r); i++)
        if (!strcmp(PQgetvalue(r, i, 0), key)) snprintf(v, sizeof v, "%s", PQgetvalue(r, i, 1));
    PQclear(r);
    return v;
}

/* SET refuses what the configuration file is refused for (checks of keys
 * together: the function list's syntax, the TLS protocol names), and the
 * running value stays. */
static void set_what_a_file_refuses(it_sluice_t *s) {
    PGconn *adm = console(s, "sl_scram");
    it_exec(adm, "SET stateless_functions = 'pg_sleep'");
    const char *m = error_of(adm, "SET stateless_functions = '*'", "22023");
    IT_ASSERT(strstr(m, "stateless_functions"), "the error names the key: \"%s\"", m);
    IT_ASSERT(!strcmp(config_value(adm, "stateless_functions"), "pg_sleep"),
              "the running value stays: \"%s\"", config_value(adm, "stateless_functions"));
    m = error_of(adm, "SET server_tls_protocols = 'tlsv0.9'", "22023");
    IT_ASSERT(strstr(m, "server_tls_protocols"), "the error names the key: \"%s\"", m);
    IT_ASSERT(!strcmp(config_value(adm, "server_tls_protocols"), "secure"),
              "the running value stays: \"%s\"", config_value(adm, "server_tls_protocols"));
    /* A good value still goes through, and clients are served. */
    it_exec(adm, "SET stateless_functions = 'public.*, pg_sleep'");
    PGconn *c = it_connect(s, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 3"), "3"), "a client is served");
    PQfinish(c);
    PQfinish(adm);
}

/* The value of column in the row whose first column is name (static). */
static const char *row_value(PGconn *c, const char *sql, const char *name, const char *column) {
    static char v[64];
    PGresult *r = PQexec(c, sql);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    int k = PQfnumber(r, column);
    IT_ASSERT(k >= 0, "%s has %s", sql, column);
    v[0] = '\0';
    for (int i = 0; i < PQntuples(r); i++)
        if (!strcmp(PQgetvalue(r, i, 0), name)) snprintf(v, sizeof v, "%s", PQgetvalue(r, i, k));
    PQclear(r);
    IT_ASSERT(v[0], "%s has a row for %s", sql, name);
    return v;
}

/* SHOW DATABASES and SHOW USERS show the client caps that apply (the
 * database's or user's own, else the global one) and the clients they
 * count: logged in, not a client still authenticating. */
static void caps_shown(void) {
    it_sluice_t s;
    it_sluice_start(
        &s, OPTS "max_db_client_connections = 5\n[users]\nsl_md5 = max_user_client_connections=1\n",
        "capped = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
        "max_db_client_connections=2\n");
    PGconn *adm = console(&s, "sl_scram");
    PGconn *a = it_connect_db(&s, "sl_scram", "capped", NULL);
    PGconn *b = it_connect_db(&s, "sl_md5", "capped", NULL);
    IT_ASSERT(PQstatus(a) == CONNECTION_OK && PQstatus(b) == CONNECTION_OK, "two clients: %s%s",
              PQerrorMessage(a), PQerrorMessage(b));
    /* A third only says who it is: it has not authenticated (SCRAM). */
    int pending = it_raw_startup(&s, "sl_scram", "capped");
    char sasl[256]; /* AuthenticationSASL: sluice has read the startup */
    IT_ASSERT(recv(pending, sasl, sizeof sasl, 0) > 0 && sasl[0] == 'R', "asked to authenticate");
    IT_ASSERT(!strcmp(row_value(adm, "SHOW DATABASES", "capped", "max_client_connections"), "2"),
              "the database's own cap: %s",
              row_value(adm, "SHOW DATABASES", "capped", "max_client_connections"));
    IT_ASSERT(
        !strcmp(row_value(adm, "SHOW DATABASES", "sluice_test", "max_client_connections"), "5"),
        "the global cap");
    IT_ASSERT(
        !strcmp(row_value(adm, "SHOW DATABASES", "capped", "current_client_connections"), "2"),
        "two clients logged in: %s",
        row_value(adm, "SHOW DATABASES", "capped", "current_client_connections"));
    IT_ASSERT(!strcmp(row_value(adm, "SHOW USERS", "sl_md5", "max_user_client_connections"), "1"),
              "the user's own cap: %s",
              row_value(adm, "SHOW USERS", "sl_md5", "max_user_client_connections"));
    IT_ASSERT(!strcmp(row_value(adm, "SHOW USERS", "sl_scram", "current_client_connections"), "1"),
              "one sl_scram client logged in (the console is none): %s",
              row_value(adm, "SHOW USERS", "sl_scram", "current_client_connections"));
    close(pending);
    PQfinish(a);
    PQfinish(b);
    PQfinish(adm);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "sluice exits cleanly (no sanitizer report)");
}

/* An unknown command is echoed shortened: never cut inside a character. */
static void unknown_command_utf8(it_sluice_t *s) {
    PGconn *st = console(s, "sl_md5");
    char sql[256] = "-";
    for (int i = 0; i < 60; i++)
        strcat(sql, "\xc3\xbc");
    const char *m = error_of(st, sql, "42601");
    IT_ASSERT(strstr(m, "unknown admin console command"), "the error says why: \"%s\"", m);
    IT_ASSERT(utf8_ok(m), "and is valid UTF-8: \"%s\"", m);
    PQfinish(st);
}

/* A client's bytes that are not UTF-8 (an application_name, a database
 * name that the '*' entry makes a pool of) do not make SHOW CLIENTS, SHOW
 * POOLS or SHOW DATABASES undecodable for drivers, nor /metrics refused by
 * Prometheus: each such byte is shown as '?'. */
static void client_bytes_not_utf8(void) {
    it_sluice_t s;
    int mport = it_free_port();
    char opts[512];
    snprintf(opts, sizeof opts, OPTS "metrics_listen = 127.0.0.1:%d\n", mport);
    it_sluice_start(&s, opts, "* = host=127.0.0.1 port={PRIMARY}\n");
    /* A pool that has had a backend logs clients in without one: the
     * name is not checked by PostgreSQL then. */
    PGconn *warm = it_connect(&s, "sl_scram", NULL);
    it_exec(warm, "SELECT 1");
    PQfinish(warm);
    PGconn *app = it_connect(&s, "sl_scram", "application_name='app\xff\xfe'");
    IT_ASSERT(PQstatus(app) == CONNECTION_OK, "login: %s", PQerrorMessage(app));
    /* Its pool stays (autodb_idle_timeout) after the backend refuses it. */
    char ci[256];
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d user=sl_scram password=scram_pw dbname='no\xff\xc3"
             "db'",
             s.port);
    PQfinish(PQconnectdb(ci)); /* logs in, then the backend refuses the name */
    PGconn *adm = console(&s, "sl_md5");
    const char *shows[] = {"SHOW CLIENTS", "SHOW POOLS", "SHOW DATABASES", "SHOW STATS"};
    for (size_t i = 0; i < sizeof shows / sizeof *shows; i++) {
        PGresult *r = PQexec(adm, shows[i]);
        IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", shows[i],
                  PQresultErrorMessage(r));
        bool seen = false;
        for (int row = 0; row < PQntuples(r); row++)
            for (int c = 0; c < PQnfields(r); c++) {
                const char *v = PQgetvalue(r, row, c);
                IT_ASSERT(utf8_ok(v), "%s row %d column %s is not UTF-8: \"%s\"", shows[i], row,
                          PQfname(r, c), v);
                seen |= strstr(v, "app??") || strstr(v, "no??db");
            }
        IT_ASSERT(seen, "%s shows the client's bytes as '?'", shows[i]);
        PQclear(r);
    }
    static char resp[1 << 20];
    it_scrape(mport, resp, sizeof resp);
    IT_ASSERT(utf8_ok(resp), "/metrics is UTF-8");
    IT_ASSERT(strstr(resp, "database=\"no??db\""), "and labels the pool with '?'");
    PQfinish(adm);
    PQfinish(app);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "sluice exits cleanly (no sanitizer report)");
}

/* A server a client holds in session pooling carries its SETs, which
 * session pooling never needs to track: when the pool's mode changes to
 * transaction (SET pool_mode, RELOAD), that server must not go to another
 * client while the first is connected, nor unreset after it leaves. */
static void mode_change_keeps_sessions(void) {
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = session\ndefault_pool_size = 2\nadmin_users = sl_scram\n"
                    "query_wait_timeout = 10\n",
                    NULL);
    PGconn *a = it_connect(&s, "sl_scram", NULL);
    it_exec(a, "SET search_path = a_private_schema, public");
    char pid_a[16];
    snprintf(pid_a, sizeof pid_a, "%s", it_value(a, "SELECT pg_backend_pid()"));
    PGconn *adm = console(&s, "sl_scram");
    it_exec(adm, "SET pool_mode = transaction");
    it_exec(a, "SELECT 1"); /* a transaction ends in a transaction-mode pool now */
    PGconn *b = it_connect(&s, "sl_scram", NULL);
    IT_ASSERT(strcmp(it_value(b, "SELECT pg_backend_pid()"), pid_a) != 0,
              "another client gets another server than the session client's");
    IT_ASSERT(!strstr(it_value(b, "SHOW search_path"), "a_private_schema"),
              "and none of its settings");
    IT_ASSERT(!strcmp(it_value(a, "SELECT pg_backend_pid()"), pid_a) &&
                  strstr(it_value(a, "SHOW search_path"), "a_private_schema"),
              "the session client keeps its server and settings");
    PQfinish(a); /* its server goes back to a transaction-mode pool */
    PQfinish(b);
    for (int i = 0; i < 4; i++) {
        PGconn *c = it_connect(&s, "sl_scram", NULL);
        IT_ASSERT(!strstr(it_value(c, "SHOW search_path"), "a_private_schema"),
                  "a later client sees none of the session client's settings");
        PQfinish(c);
    }
    /* Back and forth inside one transaction: the SET sent while the pool
     * was in session mode was not analysed either. */
    PGconn *d = it_connect(&s, "sl_scram", NULL);
    it_exec(d, "BEGIN");
    it_exec(adm, "SET pool_mode = session");
    it_exec(d, "SET search_path = d_private_schema, public");
    it_exec(adm, "SET pool_mode = transaction");
    it_exec(d, "COMMIT");
    for (int i = 0; i < 4; i++) {
        PGconn *c = it_connect(&s, "sl_scram", NULL);
        IT_ASSERT(!strstr(it_value(c, "SHOW search_path"), "d_private_schema"),
                  "another client sees none of the settings made during the switch");
        PQfinish(c);
    }
    PQfinish(d);
    PQfinish(adm);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "sluice exits cleanly (no sanitizer report)");
}

/* Runs the prepared statement name (no parameters); asserts it answers v. */
static void exec_prepared(PGconn *c, const char *name, const char *v, const char *why) {
    PGresult *r = PQexecPrepared(c, name, 0, NULL, NULL, NULL, 0);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), v), "%s: %s",
              why, PQresultErrorMessage(r));
    PQclear(r);
}

static void prepare(PGconn *c, const char *name, const char *sql) {
    PGresult *r = PQprepare(c, name, sql, 0, NULL);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "prepare %s: %s", name,
              PQresultErrorMessage(r));
    PQclear(r);
}

/* A change of max_prepared_statements (SET, RELOAD) leaves the prepared
 * statements of connected clients working: tracked ones stay tracked,
 * untracked ones (made while it was 0) stay the client's own. */
static void ps_setting_change(it_sluice_t *s) {
    PGconn *adm = console(s, "sl_scram");
    PGconn *a = it_connect(s, "sl_scram", NULL);
    prepare(a, "a_st", "SELECT 41");
    exec_prepared(a, "a_st", "41", "tracked statement");
    it_exec(adm, "SET max_prepared_statements = 0");
    exec_prepared(a, "a_st", "41", "still there after SET max_prepared_statements = 0");
    PGconn *b = it_connect(s, "sl_scram", NULL);
    prepare(b, "b_st", "SELECT 42"); /* untracked: b keeps its server */
    exec_prepared(b, "b_st", "42", "untracked statement");
    it_exec(adm, "SET max_prepared_statements = 200");
    exec_prepared(b, "b_st", "42", "still there after SET max_prepared_statements = 200");
    exec_prepared(a, "a_st", "41", "and the tracked one too");
    PQfinish(b);
    PQfinish(a);
    PQfinish(adm);
}

int main(int argc, char **argv) {
    it_init("it_attack_console");
    it_sluice_t s;
    it_sluice_start(&s, OPTS, NULL);
    const char *only = argc > 1 ? argv[1] : NULL;
    if (!only || !strcmp(only, "set_long_value")) set_long_value(&s);
    if (!only || !strcmp(only, "unknown_command_utf8")) unknown_command_utf8(&s);
    if (!only || !strcmp(only, "set_what_a_file_refuses")) set_what_a_file_refuses(&s);
    if (!only || !strcmp(only, "ps_setting_change")) ps_setting_change(&s);
    if (!only || !strcmp(only, "caps_shown")) caps_shown();
    if (!only || !strcmp(only, "client_bytes_not_utf8")) client_bytes_not_utf8();
    if (!only || !strcmp(only, "mode_change_keeps_sessions")) mode_change_keeps_sessions();
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "sluice exits cleanly (no sanitizer report)");
    return it_done();
}
