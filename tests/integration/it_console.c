/* The admin console through libpq: who may enter and run what (a
 * stats_users member's RELOAD, SET and KILL_CLIENT refused with 42501 and
 * without effect), SHOW POOLS, CLIENTS and SERVERS after known traffic on
 * a pool of one server with clients waiting, typed columns, counters,
 * RELOAD of a broken file, SET, KILL_CLIENT, the Unix-socket peer login,
 * the extended protocol refused, and several statements in one Query. */
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define OPTS                                                                                       \
    "pool_mode = transaction\ndefault_pool_size = 1\nadmin_users = sl_scram\n"                     \
    "stats_users = sl_md5\nstats_period = 1\n"

static PGconn *console(const it_sluice_t *s, const char *user) {
    PGconn *c = it_connect_db(s, user, "pgbouncer", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "console login as %s: %s", user, PQerrorMessage(c));
    return c;
}

static int find_row(const PGresult *r, const char *c1, const char *v1, const char *c2,
                    const char *v2) {
    for (int i = 0; i < PQntuples(r); i++)
        if (!strcmp(PQgetvalue(r, i, it_col(r, c1)), v1) &&
            (!c2 || !strcmp(PQgetvalue(r, i, it_col(r, c2)), v2)))
            return i;
    return -1;
}

/* The row of SHOW CLIENTS result r that is connection c, or -1. Its id
 * column is not c's BackendKeyData pid: that pid holds only the id's low
 * bits, next to the worker's index (cancelkey.h). Over TCP the row is the
 * one whose port is c's own end of the connection; over the Unix socket,
 * the one whose id has the pid's low bits (the test makes fewer than 1024
 * clients, so they name one). */
static int client_row(const PGresult *r, PGconn *c) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    IT_ASSERT(getsockname(PQsocket(c), (struct sockaddr *)&ss, &len) == 0, "getsockname");
    int port = ss.ss_family == AF_INET    ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
               : ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                          : -1;
    long low = PQbackendPID(c) & 0x3FF;
    for (int i = 0; i < PQntuples(r); i++) {
        if (port >= 0 ? atoi(PQgetvalue(r, i, it_col(r, "port"))) == port
                      : !strcmp(PQgetvalue(r, i, it_col(r, "addr")), "unix") &&
                            (atol(PQgetvalue(r, i, it_col(r, "id"))) & 0x3FF) == low)
            return i;
    }
    return -1;
}

/* Connection c's client id (SHOW CLIENTS id, C-<id>, KILL_CLIENT's
 * argument) as text, looked up with console connection adm. */
static const char *client_id(PGconn *adm, PGconn *c) {
    static char id[16];
    PGresult *r = PQexec(adm, "SHOW CLIENTS");
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "SHOW CLIENTS: %s", PQresultErrorMessage(r));
    int row = client_row(r, c);
    IT_ASSERT(row >= 0, "connection with BackendKeyData pid %d listed", PQbackendPID(c));
    snprintf(id, sizeof id, "%s", PQgetvalue(r, row, it_col(r, "id")));
    PQclear(r);
    return id;
}

static long num(const PGresult *r, int row, const char *name) {
    return atol(PQgetvalue(r, row, it_col(r, name)));
}

static const char *config_value(PGconn *c, const char *key) {
    static char v[256];
    PGresult *r = it_show(c, "SHOW CONFIG");
    int i = find_row(r, "key", key, NULL, NULL);
    IT_ASSERT(i >= 0, "SHOW CONFIG has %s", key);
    snprintf(v, sizeof v, "%s", PQgetvalue(r, i, 1));
    PQclear(r);
    return v;
}

/* A failing console command: its SQLSTATE. */
static const char *fails(PGconn *c, const char *sql) {
    static char code[8];
    PGresult *r = PQexec(c, sql);
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR, "%s should fail", sql);
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(code, sizeof code, "%s", st ? st : "");
    PQclear(r);
    return code;
}

static void access_control(it_sluice_t *s) {
    PGconn *app = it_connect(s, "sl_scram", NULL);
    it_exec(app, "SELECT 1");
    PGconn *st = console(s, "sl_md5");
    PGresult *r = it_show(st, "SHOW POOLS");
    PQclear(r);
    char sql[64];
    snprintf(sql, sizeof sql, "KILL_CLIENT %s", client_id(st, app));
    IT_ASSERT(!strcmp(fails(st, sql), "42501"), "stats user's KILL_CLIENT refused");
    IT_ASSERT(!strcmp(it_value(app, "SELECT 2"), "2"), "the client it named still works");
    int reloads = it_log_count(s, "configuration reloaded");
    IT_ASSERT(!strcmp(fails(st, "RELOAD"), "42501"), "stats user's RELOAD refused");
    IT_ASSERT(it_log_count(s, "configuration reloaded") == reloads, "and nothing was reloaded");
    IT_ASSERT(!strcmp(fails(st, "SET query_wait_timeout = 3"), "42501"),
              "stats user's SET refused");
    IT_ASSERT(!strcmp(config_value(st, "query_wait_timeout"), "120"), "and nothing was set");
    IT_ASSERT(!strcmp(fails(st, "SHUTDOWN"), "42501"), "stats user's SHUTDOWN refused");
    IT_ASSERT(!strcmp(fails(st, "SHOW FDS"), "42501"), "SHOW FDS is for admin_users");
    IT_ASSERT(!strcmp(it_value(app, "SELECT 3"), "3"), "sluice still serves");
    PQfinish(st);
    /* A user in neither list: refused at login, after its password. */
    PGconn *x = it_connect_db(s, "sl_tls", "pgbouncer", NULL);
    IT_ASSERT(PQstatus(x) == CONNECTION_BAD && strstr(PQerrorMessage(x), "admin_users"),
              "a user in neither list is refused: %s", PQerrorMessage(x));
    PQfinish(x);
    /* A wrong password is a wrong password, console or not. */
    char ci[256];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d dbname=pgbouncer user=sl_scram password=no",
             s->port);
    x = PQconnectdb(ci);
    IT_ASSERT(PQstatus(x) == CONNECTION_BAD && strstr(PQerrorMessage(x), "password"),
              "wrong password refused: %s", PQerrorMessage(x));
    PQfinish(x);
    PQfinish(app);
}

/* A pool of one server: A holds it in a transaction, three clients wait. */
static void pools_clients_servers(it_sluice_t *s) {
    PGconn *a = it_connect(s, "sl_scram", NULL);
    it_exec(a, "BEGIN");
    const char *be = it_value(a, "SELECT pg_backend_pid()");
    char backend_pid[16];
    snprintf(backend_pid, sizeof backend_pid, "%s", be);
    PGconn *w[3];
    for (int i = 0; i < 3; i++) {
        w[i] = it_connect(s, "sl_scram", NULL);
        IT_ASSERT(PQsendQuery(w[i], "SELECT 42"), "send");
    }
    PGconn *adm = console(s, "sl_scram");
    /* The three requests reach sluice soon; poll for them. */
    PGresult *r = NULL;
    int row = -1;
    double deadline = it_now() + 10;
    for (;;) {
        r = it_show(adm, "SHOW POOLS");
        row = find_row(r, "database", "sluice_test", "user", "sl_scram");
        if (row >= 0 && num(r, row, "cl_waiting") == 3) break;
        IT_ASSERT(it_now() < deadline, "three clients wait (cl_waiting=%ld)",
                  row >= 0 ? num(r, row, "cl_waiting") : -1);
        PQclear(r);
        usleep(20000);
    }
    IT_ASSERT(num(r, row, "cl_active") == 1, "A is active (%ld)", num(r, row, "cl_active"));
    IT_ASSERT(num(r, row, "sv_active") == 1, "its server is active");
    IT_ASSERT(num(r, row, "sv_idle") == 0 && num(r, row, "sv_login") == 0, "no other server");
    IT_ASSERT(num(r, row, "maxwait") * 1000000 + num(r, row, "maxwait_us") > 0,
              "the oldest waiter has waited");
    IT_ASSERT(!strcmp(PQgetvalue(r, row, it_col(r, "pool_mode")), "transaction"), "pool_mode");
    IT_ASSERT(PQgetisnull(r, row, it_col(r, "load_balance_hosts")), "load_balance_hosts is NULL");
    /* Typed columns: integers are int8, names text. */
    IT_ASSERT(PQftype(r, it_col(r, "cl_waiting")) == 20, "cl_waiting is int8 (%u)",
              PQftype(r, it_col(r, "cl_waiting")));
    IT_ASSERT(PQftype(r, it_col(r, "maxwait_us")) == 20, "maxwait_us is int8");
    IT_ASSERT(PQftype(r, it_col(r, "database")) == 25, "database is text");
    static const char *const pool_cols[] = {"database",
                                            "user",
                                            "cl_active",
                                            "cl_waiting",
                                            "cl_active_cancel_req",
                                            "cl_waiting_cancel_req",
                                            "sv_active",
                                            "sv_active_cancel",
                                            "sv_being_canceled",
                                            "sv_idle",
                                            "sv_used",
                                            "sv_tested",
                                            "sv_login",
                                            "maxwait",
                                            "maxwait_us",
                                            "pool_mode",
                                            "load_balance_hosts"};
    IT_ASSERT(PQnfields(r) == 17, "SHOW POOLS has PgBouncer's 17 columns (%d)", PQnfields(r));
    for (int i = 0; i < 17; i++)
        IT_ASSERT(!strcmp(PQfname(r, i), pool_cols[i]), "column %d is %s, not %s", i, pool_cols[i],
                  PQfname(r, i));
    PQclear(r);

    r = it_show(adm, "SHOW CLIENTS");
    IT_ASSERT(PQnfields(r) == 21 && !strcmp(PQfname(r, 20), "id"), "21 columns ending in id");
    int ra = client_row(r, a);
    IT_ASSERT(ra >= 0, "A is listed (BackendKeyData pid %d)", PQbackendPID(a));
    char id[16];
    snprintf(id, sizeof id, "%s", PQgetvalue(r, ra, it_col(r, "id")));
    IT_ASSERT(!strcmp(PQgetvalue(r, ra, it_col(r, "state")), "active"), "A is active");
    IT_ASSERT(!strcmp(PQgetvalue(r, ra, it_col(r, "type")), "C"), "type C");
    char link[24];
    snprintf(link, sizeof link, "%s", PQgetvalue(r, ra, it_col(r, "link")));
    IT_ASSERT(!strncmp(link, "S-", 2), "A is linked to a server (%s)", link);
    int waiting = 0, own = -1;
    for (int i = 0; i < PQntuples(r); i++) {
        if (!strcmp(PQgetvalue(r, i, it_col(r, "state")), "waiting")) {
            waiting++;
            IT_ASSERT(PQgetisnull(r, i, it_col(r, "link")), "a waiting client has no link");
        }
        if (!strcmp(PQgetvalue(r, i, it_col(r, "database")), "pgbouncer")) own = i;
    }
    IT_ASSERT(waiting == 3, "three waiting clients listed (%d)", waiting);
    IT_ASSERT(own >= 0, "the console's own connection is listed");
    IT_ASSERT(PQftype(r, it_col(r, "port")) == 20 && PQftype(r, it_col(r, "id")) == 20, "int8");
    IT_ASSERT(PQftype(r, it_col(r, "connect_time")) == 1114, "connect_time is a timestamp");
    PQclear(r);

    r = it_show(adm, "SHOW SERVERS");
    IT_ASSERT(PQntuples(r) == 1, "one server (%d)", PQntuples(r));
    IT_ASSERT(!strcmp(PQgetvalue(r, 0, it_col(r, "state")), "active"), "it is active");
    IT_ASSERT(!strcmp(PQgetvalue(r, 0, it_col(r, "ptr")), link), "it is A's link (%s vs %s)",
              PQgetvalue(r, 0, it_col(r, "ptr")), link);
    char clink[24];
    snprintf(clink, sizeof clink, "C-%s", id);
    IT_ASSERT(!strcmp(PQgetvalue(r, 0, it_col(r, "link")), clink), "linked to A");
    IT_ASSERT(!strcmp(PQgetvalue(r, 0, it_col(r, "remote_pid")), backend_pid),
              "remote_pid is the backend's pid (%s vs %s)",
              PQgetvalue(r, 0, it_col(r, "remote_pid")), backend_pid);
    PQclear(r);

    it_exec(a, "COMMIT");
    for (int i = 0; i < 3; i++) {
        PGresult *q;
        const char *v = NULL;
        while ((q = PQgetResult(w[i]))) {
            if (PQresultStatus(q) == PGRES_TUPLES_OK) v = PQgetvalue(q, 0, 0);
            IT_ASSERT(v && !strcmp(v, "42"), "waiter %d got its answer", i);
            PQclear(q);
        }
        PQfinish(w[i]);
    }
    r = it_show(adm, "SHOW POOLS");
    row = find_row(r, "database", "sluice_test", "user", "sl_scram");
    IT_ASSERT(num(r, row, "cl_waiting") == 0 && num(r, row, "sv_idle") == 1, "all served");
    PQclear(r);
    PQfinish(a);
    PQfinish(adm);
}

/* Known traffic moves the counters by as much. */
static void counters(it_sluice_t *s) {
    PGconn *adm = console(s, "sl_scram");
    PGresult *r = it_show(adm, "SHOW STATS_TOTALS");
    int row = find_row(r, "database", "sluice_test", NULL, NULL);
    IT_ASSERT(row >= 0, "sluice_test has stats");
    long x0 = num(r, row, "xact_count"), q0 = num(r, row, "query_count");
    long a0 = num(r, row, "server_assignment_count"), l0 = num(r, row, "client_login_count");
    long recv0 = num(r, row, "bytes_received");
    long p0 = num(r, row, "client_parse_count"), sp0 = num(r, row, "server_parse_count");
    long b0 = num(r, row, "bind_count");
    IT_ASSERT(PQftype(r, it_col(r, "xact_count")) == 1700, "STATS counters are numeric");
    PQclear(r);
    PGconn *c = it_connect(s, "sl_scram", NULL);
    for (int i = 0; i < 50; i++)
        it_exec(c, "SELECT 1");
    it_exec(c, "BEGIN");
    it_exec(c, "SELECT 1");
    it_exec(c, "COMMIT");
    /* The extended protocol: one Parse, three Binds (and Executes). */
    PGresult *p = PQprepare(c, "st", "SELECT $1::int", 0, NULL);
    IT_ASSERT(PQresultStatus(p) == PGRES_COMMAND_OK, "prepare: %s", PQresultErrorMessage(p));
    PQclear(p);
    for (int i = 0; i < 3; i++) {
        const char *v = "7";
        p = PQexecPrepared(c, "st", 1, &v, NULL, NULL, 0);
        IT_ASSERT(PQresultStatus(p) == PGRES_TUPLES_OK, "execute: %s", PQresultErrorMessage(p));
        PQclear(p);
    }
    /* A pipeline of five executions up to one Sync is one request: one
     * query, as PgBouncer counts and as the query-time histogram sees it. */
    IT_ASSERT(PQenterPipelineMode(c), "pipeline mode");
    for (int i = 0; i < 5; i++) {
        const char *v = "8";
        IT_ASSERT(PQsendQueryPrepared(c, "st", 1, &v, NULL, NULL, 0), "send execute");
    }
    IT_ASSERT(PQpipelineSync(c), "sync");
    for (int got = 0; got < 5;) {
        p = PQgetResult(c);
        if (!p) continue; /* the end of one execution's results */
        IT_ASSERT(PQresultStatus(p) == PGRES_TUPLES_OK, "pipelined execute: %s",
                  PQresultErrorMessage(p));
        got++;
        PQclear(p);
    }
    for (double end = it_now() + 10; it_now() < end;) { /* NULLs between, then the Sync */
        p = PQgetResult(c);
        bool sync = p && PQresultStatus(p) == PGRES_PIPELINE_SYNC;
        PQclear(p);
        if (sync) break;
    }
    IT_ASSERT(PQexitPipelineMode(c), "leave pipeline mode: %s", PQerrorMessage(c));
    PQfinish(c);
    r = it_show(adm, "SHOW STATS_TOTALS");
    row = find_row(r, "database", "sluice_test", NULL, NULL);
    /* 50 + BEGIN..COMMIT + three executions + one pipeline (sluice answers
     * the Parse itself, with no server: the statement goes to one at its
     * first Bind) */
    IT_ASSERT(num(r, row, "xact_count") - x0 == 55, "55 transactions (%ld)",
              num(r, row, "xact_count") - x0);
    IT_ASSERT(num(r, row, "query_count") - q0 == 57, "57 queries (%ld)",
              num(r, row, "query_count") - q0);
    IT_ASSERT(num(r, row, "server_assignment_count") - a0 == 55, "55 assignments (%ld)",
              num(r, row, "server_assignment_count") - a0);
    IT_ASSERT(num(r, row, "client_parse_count") - p0 == 1, "one Parse from the client (%ld)",
              num(r, row, "client_parse_count") - p0);
    IT_ASSERT(num(r, row, "server_parse_count") - sp0 >= 1, "at least one Parse to a server");
    IT_ASSERT(num(r, row, "bind_count") - b0 == 8, "eight Binds (%ld)",
              num(r, row, "bind_count") - b0);
    IT_ASSERT(num(r, row, "client_login_count") - l0 == 1, "one login");
    /* 'Q', length, "SELECT 1\0": 14 bytes each, plus BEGIN/COMMIT and Terminate. */
    IT_ASSERT(num(r, row, "bytes_received") - recv0 >= 50 * 14, "bytes received counted");
    IT_ASSERT(num(r, row, "query_time") > 0 &&
                  num(r, row, "xact_time") >= num(r, row, "query_time") / 2,
              "times counted");
    PQclear(r);
    /* Averages: after the next stats_period the last period's rates show. */
    double deadline = it_now() + 5;
    long avg = 0;
    while (it_now() < deadline && avg == 0) {
        usleep(200000);
        r = it_show(adm, "SHOW STATS");
        row = find_row(r, "database", "sluice_test", NULL, NULL);
        avg = num(r, row, "avg_xact_time");
        PQclear(r);
    }
    IT_ASSERT(avg > 0, "avg_xact_time shows the period's average");
    PQfinish(adm);
}

/* The errors count of class cls for database db in SHOW ERRORS (0: none). */
static long errors_of(PGconn *adm, const char *db, const char *cls) {
    PGresult *r = it_show(adm, "SHOW ERRORS");
    int row = find_row(r, "database", db, "class", cls);
    long n = row >= 0 ? num(r, row, "count") : 0;
    PQclear(r);
    return n;
}

/* ErrorResponses sent to clients, by SQLSTATE class: the server's relayed
 * (division by zero, 22012), sluice's own (a failed login, 28P01). */
static void errors(it_sluice_t *s) {
    PGconn *adm = console(s, "sl_scram");
    long d0 = errors_of(adm, "sluice_test", "22"), a0 = errors_of(adm, "*", "28");
    long t0 = errors_of(adm, "*", "22");
    PGconn *c = it_connect(s, "sl_scram", NULL);
    for (int i = 0; i < 3; i++)
        IT_ASSERT(!strcmp(it_fails(c, "SELECT 1/0"), "22012"), "division by zero");
    PQfinish(c);
    char ci[256];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d dbname=sluice_test user=sl_scram password=no",
             s->port);
    PGconn *x = PQconnectdb(ci);
    IT_ASSERT(PQstatus(x) == CONNECTION_BAD, "wrong password refused");
    PQfinish(x);
    IT_ASSERT(errors_of(adm, "sluice_test", "22") - d0 == 3, "three class 22 errors for the db");
    IT_ASSERT(errors_of(adm, "*", "22") - t0 == 3, "and in the total");
    IT_ASSERT(it_log_wait(s, "password authentication failed", 1, 5) >= 1, "login failed");
    IT_ASSERT(errors_of(adm, "*", "28") - a0 == 1, "one class 28 error (%ld)",
              errors_of(adm, "*", "28") - a0);
    PQfinish(adm);
}

static void reload_and_set(it_sluice_t *s) {
    PGconn *adm = console(s, "sl_scram");
    /* SET: a reloadable key changes, others are refused clearly. */
    PGresult *r = PQexec(adm, "SET query_wait_timeout = 7");
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "SET: %s", PQresultErrorMessage(r));
    PQclear(r);
    IT_ASSERT(!strcmp(config_value(adm, "query_wait_timeout"), "7"), "SHOW CONFIG shows it");
    IT_ASSERT(!strcmp(fails(adm, "SET listen_port = 1"), "55P02"), "listen_port needs a restart");
    IT_ASSERT(!strcmp(fails(adm, "SET no_such_key = 1"), "42704"), "unknown key");
    IT_ASSERT(!strcmp(fails(adm, "SET default_pool_size = lots"), "22023"), "bad value");
    IT_ASSERT(!strcmp(config_value(adm, "default_pool_size"), "1"), "unchanged");

    /* RELOAD of a broken file: the running configuration stays. */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp %s %s.good && echo 'default_pool_size = lots' >> %s", s->ini,
             s->ini, s->ini);
    IT_ASSERT(system(cmd) == 0, "break the file");
    r = PQexec(adm, "RELOAD");
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR, "RELOAD of a broken file fails");
    const char *msg = PQresultErrorMessage(r);
    IT_ASSERT(strstr(msg, "default_pool_size") && strstr(msg, "sluice.ini:"),
              "the error names the key and file:line: %s", msg);
    PQclear(r);
    IT_ASSERT(!strcmp(config_value(adm, "default_pool_size"), "1"), "running config stays");
    PGconn *c = it_connect(s, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 5"), "5"), "and serves");
    PQfinish(c);
    /* A good file: RELOAD applies it (and the file's value replaces SET's). */
    snprintf(cmd, sizeof cmd, "cp %s.good %s && echo 'default_pool_size = 2' >> %s", s->ini, s->ini,
             s->ini);
    IT_ASSERT(system(cmd) == 0, "fix the file");
    r = PQexec(adm, "RELOAD");
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "RELOAD: %s", PQresultErrorMessage(r));
    PQclear(r);
    IT_ASSERT(!strcmp(config_value(adm, "default_pool_size"), "2"), "reloaded");
    IT_ASSERT(!strcmp(config_value(adm, "query_wait_timeout"), "120"), "from the file");
    /* Rights follow the running config: a stats user taken out of
     * stats_users loses its open session at its next command. */
    PGconn *st = console(s, "sl_md5");
    PQclear(it_show(st, "SHOW VERSION"));
    r = PQexec(adm, "SET stats_users = ''");
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "SET stats_users: %s",
              PQresultErrorMessage(r));
    PQclear(r);
    r = PQexec(st, "SHOW VERSION");
    IT_ASSERT(PQresultStatus(r) != PGRES_TUPLES_OK && strstr(PQerrorMessage(st), "no longer"),
              "a removed stats user's session is closed: %s", PQerrorMessage(st));
    PQclear(r);
    PQfinish(st);
    r = PQexec(adm, "SET stats_users = 'sl_md5'");
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "SET stats_users back");
    PQclear(r);
    PQfinish(adm);
}

static void kill_client(it_sluice_t *s) {
    PGconn *adm = console(s, "sl_scram");
    PGconn *c = it_connect(s, "sl_scram", NULL);
    it_exec(c, "SELECT 1");
    char sql[64], id[16];
    snprintf(id, sizeof id, "%s", client_id(adm, c));
    snprintf(sql, sizeof sql, "KILL_CLIENT %s", id);
    PGresult *r = PQexec(adm, sql);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "KILL_CLIENT: %s", PQresultErrorMessage(r));
    PQclear(r);
    r = PQexec(c, "SELECT 1");
    IT_ASSERT(PQresultStatus(r) != PGRES_TUPLES_OK, "the killed client is gone");
    PQclear(r);
    r = it_show(adm, "SHOW CLIENTS");
    IT_ASSERT(find_row(r, "id", id, NULL, NULL) < 0, "and no longer listed");
    PQclear(r);
    PQfinish(c);
    IT_ASSERT(!strcmp(fails(adm, "KILL_CLIENT 999999"), "42704"), "no such client");
    snprintf(sql, sizeof sql, "KILL_CLIENT %s", client_id(adm, adm));
    IT_ASSERT(!strcmp(fails(adm, sql), "42601"), "not itself");
    IT_ASSERT(!strcmp(fails(adm, "KILL_CLIENT"), "42601"), "an id is needed");
    PQfinish(adm);
}

static void peer_and_protocol(it_sluice_t *s) {
    /* The Unix socket as the OS user running sluice: no password, admin. */
    char ci[512];
    snprintf(ci, sizeof ci, "host=%s port=%d dbname=pgbouncer user=pgbouncer", s->dir, s->port);
    PGconn *p = PQconnectdb(ci);
    IT_ASSERT(PQstatus(p) == CONNECTION_OK, "peer login: %s", PQerrorMessage(p));
    PGresult *r = it_show(p, "SHOW FDS"); /* admin only: the peer is admin */
    PQclear(r);
    r = it_show(p, "SHOW CLIENTS");
    int row = client_row(r, p);
    IT_ASSERT(row >= 0 && !strcmp(PQgetvalue(r, row, it_col(r, "addr")), "unix"),
              "listed with addr unix");
    PQclear(r);
    /* Several statements in one Query: each runs, each has its result. */
    IT_ASSERT(PQsendQuery(p, "SHOW VERSION; SHOW STATE;"), "send");
    int results = 0;
    while ((r = PQgetResult(p))) {
        IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "result %d", results);
        if (results == 0) IT_ASSERT(!strncmp(PQgetvalue(r, 0, 0), "sluice ", 7), "version first");
        results++;
        PQclear(r);
    }
    IT_ASSERT(results == 2, "two results (%d)", results);
    /* An unknown command lists the valid ones. */
    r = PQexec(p, "FROB");
    IT_ASSERT(strstr(PQresultErrorMessage(r), "KILL_CLIENT") &&
                  strstr(PQresultErrorMessage(r), "RELOAD"),
              "the error lists the commands: %s", PQresultErrorMessage(r));
    PQclear(r);
    /* The extended protocol is refused and the connection closed. */
    /* The first result is sluice's FATAL (PQprepare would keep only the
     * last one, libpq's own "server closed the connection"). */
    IT_ASSERT(PQsendPrepare(p, "", "SHOW POOLS", 0, NULL), "send Parse");
    r = PQgetResult(p);
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR, "Parse refused");
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    IT_ASSERT(st && !strcmp(st, "0A000"), "with 0A000 (%s)", st ? st : "none");
    PQclear(r);
    while ((r = PQgetResult(p)))
        PQclear(r);
    r = PQexec(p, "SHOW VERSION");
    IT_ASSERT(PQresultStatus(r) != PGRES_TUPLES_OK, "and the connection is closed");
    PQclear(r);
    PQfinish(p);
    /* Another OS user on the Unix socket gets no such pass: the password
     * exchange, which it cannot pass without one. */
    if (getuid() == 0) {
        struct passwd *pg = getpwnam("postgres");
        IT_ASSERT(pg, "no postgres user");
        IT_ASSERT(chmod(s->dir, 0755) == 0, "chmod");
        pid_t pid = fork();
        if (pid == 0) {
            if (setgid(pg->pw_gid) != 0 || setuid(pg->pw_uid) != 0) _exit(2);
            PGconn *o = PQconnectdb(ci);
            bool refused = PQstatus(o) == CONNECTION_BAD && strstr(PQerrorMessage(o), "password");
            if (!refused) fprintf(stderr, "other uid: %s\n", PQerrorMessage(o));
            _exit(refused ? 0 : 1);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        IT_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "another OS user on the Unix socket is asked for a password (status %d)", st);
    }
    /* Over TCP the same user gets no such pass. */
    PGconn *t = it_connect_db(s, "pgbouncer", "pgbouncer", NULL);
    IT_ASSERT(PQstatus(t) == CONNECTION_BAD, "no peer login over TCP");
    PQfinish(t);
    /* Nor does another user name on the Unix socket: the log's user= is
     * who logged in. */
    snprintf(ci, sizeof ci, "host=%s port=%d dbname=pgbouncer user=anyone", s->dir, s->port);
    t = PQconnectdb(ci);
    IT_ASSERT(PQstatus(t) == CONNECTION_BAD, "no peer login under another user name");
    PQfinish(t);
}

/* What a console user (a stats user too) may not do to sluice: a message
 * length near UINT32_MAX (it once wrapped the bounds check and read 4 GiB
 * past the buffer), and one Query of hundreds of statements (it once built
 * one unbounded reply on the loop). */
static void hostile_console(void) {
    it_sluice_t s;
    it_sluice_start(&s, "auth_type = trust\nstats_users = st\nclient_idle_timeout = 1.5\n", NULL);
    uint32_t lens[] = {0xFFFFFFFFu, 0xFFFFFFFEu, 0x7FFFFFFFu};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        int fd = it_raw_login(&s, "st", "pgbouncer");
        unsigned char q[5 + 11] = {'Q', (unsigned char)(lens[i] >> 24),
                                   (unsigned char)(lens[i] >> 16), (unsigned char)(lens[i] >> 8),
                                   (unsigned char)lens[i]};
        memcpy(q + 5, "SHOW POOLS", 11);
        IT_ASSERT(write(fd, q, sizeof q) == (ssize_t)sizeof q, "write");
        char body[512];
        int t = it_raw_read_msg(fd, body, sizeof body);
        IT_ASSERT(t == 'E', "length %#x: an ErrorResponse (got %d)", lens[i], t);
        close(fd);
    }
    /* Still up, and a Query of too many statements is refused after the
     * first ones, with a clear error. */
    char ci[256];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=st dbname=pgbouncer", s.port);
    PGconn *c = PQconnectdb(ci);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "sluice still up: %s", PQerrorMessage(c));
    char many[8000] = "";
    for (int i = 0; i < 300; i++)
        strcat(many, "SHOW CLIENTS;");
    IT_ASSERT(PQsendQuery(c, many), "send");
    int tuples = 0, errors = 0;
    PGresult *r;
    while ((r = PQgetResult(c))) {
        if (PQresultStatus(r) == PGRES_TUPLES_OK) tuples++;
        if (PQresultStatus(r) == PGRES_FATAL_ERROR) {
            errors++;
            const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            IT_ASSERT(st && !strcmp(st, "54000") && strstr(PQresultErrorMessage(r), "statements"),
                      "54000 naming the statements: %s", PQresultErrorMessage(r));
        }
        PQclear(r);
    }
    IT_ASSERT(tuples == 16 && errors == 1, "16 results then one error (%d, %d)", tuples, errors);
    r = it_show(c, "SHOW VERSION");
    PQclear(r);
    /* client_idle_timeout applies to console clients too (they have no
     * pool whose value would). */
    usleep(3000000);
    r = PQexec(c, "SHOW VERSION");
    IT_ASSERT(PQresultStatus(r) != PGRES_TUPLES_OK, "an idle console client is closed");
    PQclear(r);
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* xact_count of db in SHOW STATS_TOTALS (-1: no row). */
static long xacts_of(PGconn *adm, const char *db) {
    PGresult *r = it_show(adm, "SHOW STATS_TOTALS");
    int row = find_row(r, "database", db, NULL, NULL);
    long n = row >= 0 ? num(r, row, "xact_count") : -1;
    PQclear(r);
    return n;
}

/* A database's totals never go back when one of its automatic pools is
 * freed (Prometheus would read that as a counter reset). */
static void retired_pools(void) {
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = transaction\nautodb_idle_timeout = 1\nadmin_users = sl_scram\n",
                    "* = host=127.0.0.1 port={PRIMARY}");
    PGconn *keep = it_connect_db(&s, "sl_md5", "template1", NULL); /* the database stays */
    IT_ASSERT(PQstatus(keep) == CONNECTION_OK, "sl_md5: %s", PQerrorMessage(keep));
    it_exec(keep, "SELECT 1");
    PGconn *c = it_connect_db(&s, "sl_scram", "template1", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "sl_scram: %s", PQerrorMessage(c));
    for (int i = 0; i < 5; i++)
        it_exec(c, "SELECT 1");
    PQfinish(c);
    PGconn *adm = console(&s, "sl_scram");
    long before = xacts_of(adm, "template1");
    IT_ASSERT(before >= 6, "six transactions counted (%ld)", before);
    IT_ASSERT(it_log_wait(&s, "pool removed after autodb_idle_timeout", 1, 10) == 1,
              "sl_scram's pool of template1 removed");
    long after = xacts_of(adm, "template1");
    IT_ASSERT(after >= before, "template1's transactions went back from %ld to %ld", before, after);
    PQfinish(keep);
    PQfinish(adm);
    IT_ASSERT(it_sluice_stop(&s, SIGINT) == 0, "exit");
}

/* Waits up to secs for sluice to exit on its own; its exit status, or -1
 * if it still runs (it_sluice_stop reaps it and forgets it either way). */
static int wait_exit(it_sluice_t *s, double secs) {
    double deadline = it_now() + secs;
    char path[64], stat[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)s->pid);
    while (it_now() < deadline) {
        FILE *f = fopen(path, "r");
        size_t n = f ? fread(stat, 1, sizeof stat - 1, f) : 0;
        if (f) fclose(f);
        stat[n] = '\0';
        const char *close_paren = strrchr(stat, ')');
        if (!close_paren || close_paren[2] == 'Z') return it_sluice_stop(s, 0);
        usleep(20000);
    }
    it_sluice_stop(s, SIGKILL);
    return -1;
}

static void shutdown_cmd(it_sluice_t *s) {
    PGconn *adm = console(s, "sl_scram");
    PGresult *r = PQexec(adm, "SHUTDOWN");
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "SHUTDOWN: %s", PQresultErrorMessage(r));
    PQclear(r);
    IT_ASSERT(wait_exit(s, 10) == 0, "sluice exited after SHUTDOWN, with status 0");
    PQfinish(adm);
}

/* SHUTDOWN WAIT_FOR_CLIENTS: no new clients; the connected ones carry on
 * (transactions included) until they leave, then sluice exits. */
static void shutdown_wait_for_clients(void) {
    it_sluice_t s;
    it_sluice_start(&s, OPTS, NULL);
    PGconn *app = it_connect(&s, "sl_scram", NULL);
    it_exec(app, "BEGIN");
    PGconn *adm = console(&s, "sl_scram");
    PGresult *r = PQexec(adm, "SHUTDOWN WAIT_FOR_CLIENTS");
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "SHUTDOWN WAIT_FOR_CLIENTS: %s",
              PQresultErrorMessage(r));
    PQclear(r);
    r = it_show(adm, "SHOW STATE");
    IT_ASSERT(find_row(r, "key", "active", "value", "no") >= 0, "SHOW STATE says not active");
    PQclear(r);
    usleep(100000); /* the listeners close after the command's round */
    PGconn *late = it_connect_db(&s, "sl_scram", "sluice_test", NULL);
    IT_ASSERT(PQstatus(late) == CONNECTION_BAD, "no new clients");
    PQfinish(late);
    IT_ASSERT(!strcmp(it_value(app, "SELECT 6"), "6"), "the connected client carries on");
    it_exec(app, "COMMIT");
    usleep(300000);
    IT_ASSERT(kill(s.pid, 0) == 0, "sluice waits for its clients");
    PQfinish(app);
    PQfinish(adm);
    IT_ASSERT(wait_exit(&s, 10) == 0, "sluice exits once its clients are gone, with status 0");
}

/* The console over TLS, as client_tls_sslmode requires for every
 * database; pkt_buf at its least, so that SHOW CONFIG's reply is several
 * buffers long and goes out in pieces as the socket takes them. */
static void over_tls(void) {
    char opts[2048], ca[400], extra[600];
    snprintf(ca, sizeof ca, "%s/ca.crt", it_cl.tlsdir);
    snprintf(opts, sizeof opts,
             OPTS "pkt_buf = 2048\nclient_tls_sslmode = require\nclient_tls_cert_file = "
                  "%s/server.crt\nclient_tls_key_file = %s/server.key\n",
             it_cl.tlsdir, it_cl.tlsdir);
    it_sluice_t s;
    it_sluice_start(&s, opts, NULL);
    snprintf(extra, sizeof extra,
             "host=localhost hostaddr=127.0.0.1 sslmode=verify-full "
             "sslrootcert=%s",
             ca);
    PGconn *adm = it_connect_db(&s, "sl_scram", "pgbouncer", extra);
    IT_ASSERT(PQstatus(adm) == CONNECTION_OK && PQsslInUse(adm), "console over TLS: %s",
              PQerrorMessage(adm));
    PGresult *r = it_show(adm, "SHOW CONFIG");
    size_t bytes = 0;
    for (int i = 0; i < PQntuples(r); i++)
        for (int j = 0; j < PQnfields(r); j++)
            bytes += (size_t)PQgetlength(r, i, j);
    IT_ASSERT(bytes > 2048, "SHOW CONFIG is longer than a buffer (%zu bytes)", bytes);
    IT_ASSERT(!strcmp(config_value(adm, "pkt_buf"), "2048"), "SHOW CONFIG whole");
    PQclear(r);
    r = it_show(adm, "SHOW CLIENTS");
    int row = client_row(r, adm);
    IT_ASSERT(row >= 0 && !strncmp(PQgetvalue(r, row, it_col(r, "tls")), "TLSv1.", 6),
              "its tls column names the protocol");
    PQclear(r);
    PQfinish(adm);
    PGconn *plain = it_connect_db(&s, "sl_scram", "pgbouncer", "sslmode=disable");
    IT_ASSERT(PQstatus(plain) == CONNECTION_BAD && strstr(PQerrorMessage(plain), "TLS required"),
              "plain text refused for the console too: %s", PQerrorMessage(plain));
    PQfinish(plain);
    it_sluice_stop(&s, SIGTERM);
}

/* Many Queries pipelined while the client reads nothing: the replies
 * (about 10 MB) outgrow the socket buffers, so sluice must stop at
 * EAGAIN, read no further Query meanwhile, and resume when the socket
 * drains; every reply arrives whole and in order. */
static void pipelined(void) {
    it_sluice_t s;
    it_sluice_start(&s, OPTS "pkt_buf = 2048\nauth_type = trust\n", NULL);
    int fd = it_raw_login(&s, "sl_scram", "pgbouncer");
    enum { BATCH = 300, ROUNDS = 10, N = BATCH * ROUNDS };
    static it_wire_t w;
    w.n = 0;
    for (int i = 0; i < BATCH; i++)
        it_wire_msg(&w, 'Q', i % 2 ? "SHOW CONFIG" : "SHOW VERSION", i % 2 ? 12 : 13);
    /* 54 kB of queries fit in the socket buffers; 10 MB of replies do not. */
    for (int k = 0; k < ROUNDS; k++)
        IT_ASSERT(write(fd, w.b, (size_t)w.n) == w.n, "send %d queries", BATCH);
    usleep(300000); /* sluice fills the socket and waits */
    int ready = 0, rowdesc = 0, complete = 0, errors = 0, t;
    char body[256];
    while (ready < N && (t = it_raw_read_msg(fd, body, sizeof body)) > 0) {
        ready += t == 'Z';
        rowdesc += t == 'T';
        complete += t == 'C';
        errors += t == 'E';
        if (t == 'T')
            IT_ASSERT(rowdesc % 2 ? !strcmp(body + 2, "version") : !strcmp(body + 2, "key"),
                      "reply %d is its query's", rowdesc);
    }
    IT_ASSERT(ready == N && rowdesc == N && complete == N && errors == 0,
              "%d replies whole (ReadyForQuery %d, RowDescription %d, CommandComplete %d, "
              "errors %d)",
              N, ready, rowdesc, complete, errors);
    close(fd);
    it_sluice_stop(&s, SIGTERM);
}

/* SHOW REPLICAS and SHOW ROUTING for a database with two replicas: each
 * backend's role and health as its checks see them, and where reads and
 * writes went. */
static void replicas(void) {
    it_sluice_t s;
    it_sluice_start(&s, OPTS "health_check_period = 0.1\n",
                    "rw = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
                    "replicas=127.0.0.1:{REPLICA1},127.0.0.1:{REPLICA2}\n");
    PGconn *c = it_connect_db(&s, "sl_scram", "rw", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "connect rw: %s", PQerrorMessage(c));
    PGconn *adm = console(&s, "sl_scram");
    /* Wait for the checks to admit all three backends. */
    PGresult *r = NULL;
    double deadline = it_now() + 15;
    for (;;) {
        r = it_show(adm, "SHOW REPLICAS");
        int up = 0;
        for (int i = 0; i < PQntuples(r); i++)
            up += !strcmp(PQgetvalue(r, i, it_col(r, "healthy")), "yes");
        if (PQntuples(r) == 3 && up == 3) break;
        IT_ASSERT(it_now() < deadline, "three healthy backends (%d rows, %d up)", PQntuples(r), up);
        PQclear(r);
        usleep(100000);
    }
    int primary = find_row(r, "role", "primary", NULL, NULL);
    IT_ASSERT(primary >= 0 && num(r, primary, "backend") == 0, "backend 0 is the primary");
    char port[16];
    snprintf(port, sizeof port, "127.0.0.1:%d", it_cl.replica1);
    int r1 = find_row(r, "address", port, NULL, NULL);
    IT_ASSERT(r1 >= 0 && !strcmp(PQgetvalue(r, r1, it_col(r, "role")), "replica"),
              "replica 1 listed as a replica");
    PQclear(r);
    for (int i = 0; i < 10; i++)
        it_value(c, "SELECT 1");
    it_exec(c, "CREATE TEMP TABLE IF NOT EXISTS t_console (x int)");
    PQfinish(c);
    r = it_show(adm, "SHOW ROUTING");
    int row = find_row(r, "database", "rw", NULL, NULL);
    IT_ASSERT(row >= 0, "SHOW ROUTING lists rw");
    IT_ASSERT(!strcmp(PQgetvalue(r, row, it_col(r, "routing")), "auto"), "routing auto");
    IT_ASSERT(num(r, row, "backends") == 3 && num(r, row, "healthy_backends") == 3, "3 backends");
    IT_ASSERT(num(r, row, "replica_reads") + num(r, row, "primary_reads") == 10,
              "ten reads routed (%ld + %ld)", num(r, row, "replica_reads"),
              num(r, row, "primary_reads"));
    IT_ASSERT(num(r, row, "replica_reads") >= 1, "replicas served reads");
    IT_ASSERT(num(r, row, "writes") == 1, "one write (%ld)", num(r, row, "writes"));
    PQclear(r);
    r = it_show(adm, "SHOW REPLICAS");
    long reads = 0;
    for (int i = 0; i < PQntuples(r); i++)
        reads += num(r, i, "reads_routed");
    IT_ASSERT(reads == 10, "reads_routed sums to ten (%ld)", reads);
    PQclear(r);
    /* After a write, the replicas report the position they replayed (a
     * fresh standby may report none before its first record). */
    deadline = it_now() + 10;
    for (;;) {
        r = it_show(adm, "SHOW REPLICAS");
        r1 = find_row(r, "address", port, NULL, NULL);
        if (!PQgetisnull(r, r1, it_col(r, "replay_lsn")) &&
            !PQgetisnull(r, r1, it_col(r, "lag_bytes")))
            break;
        IT_ASSERT(it_now() < deadline, "replica 1 reports its replay position and lag");
        PQclear(r);
        usleep(100000);
    }
    unsigned hi, lo;
    IT_ASSERT(sscanf(PQgetvalue(r, r1, it_col(r, "replay_lsn")), "%X/%X", &hi, &lo) == 2,
              "replay_lsn is an LSN: %s", PQgetvalue(r, r1, it_col(r, "replay_lsn")));
    PQclear(r);
    PQfinish(adm);
    it_sluice_stop(&s, SIGTERM);
}

int main(void) {
    it_init("it_console");
    it_sluice_t s;
    it_sluice_start(&s, OPTS, NULL);
    access_control(&s);
    pools_clients_servers(&s);
    counters(&s);
    errors(&s);
    reload_and_set(&s);
    kill_client(&s);
    peer_and_protocol(&s);
    hostile_console();
    retired_pools();
    shutdown_cmd(&s);
    shutdown_wait_for_clients();
    if (it_cl.tlsdir[0]) over_tls();
    pipelined();
    replicas();
    return it_done();
}
