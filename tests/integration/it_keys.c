/* The PgBouncer 1.24/1.25 keys: max_db_client_connections and
 * max_user_client_connections (global and per database / user, no slot
 * leaked by clients that leave mid-login, mid-wait or mid-transaction),
 * per-user pool_size / reserve_pool_size / query_wait_timeout /
 * query_timeout / client_idle_timeout, transaction_timeout,
 * query_wait_notify, server_check_query's empty-query default, and reloads
 * that apply to waiting clients at once and report every error. */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"

#define BOUNCER_WAIT_NOTICE                                                                        \
    "No server connection available in postgres backend, client being queued"

/* ---- helpers ---- */

/* Field f ('C' SQLSTATE, 'M' message) of an ErrorResponse body. */
static void error_field(const char *body, int n, char f, char *out, size_t cap) {
    out[0] = '\0';
    for (int i = 0; i < n && body[i];) {
        int len = (int)strnlen(body + i + 1, (size_t)(n - i - 1));
        if (body[i] == f) snprintf(out, cap, "%.*s", len, body + i + 1);
        i += len + 2;
    }
}

/* A raw login (sluice with auth_type = trust) to db as user: 'E' with the
 * error's SQLSTATE and message, 'Z' when logged in, 0 when nothing more
 * came within secs (still waiting), -1 when the connection closed. The
 * socket is returned in *fd (closed by the caller). */
static int raw_login(const it_sluice_t *s, const char *user, const char *db, double secs,
                     char *code, char *msg, int *fd) {
    *fd = it_raw_startup(s, user, db);
    struct timeval tv = {.tv_sec = (time_t)secs,
                         .tv_usec = (suseconds_t)((secs - (time_t)secs) * 1e6)};
    setsockopt(*fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char body[1024];
    for (;;) {
        memset(body, 0, sizeof body);
        errno = 0;
        int t = it_raw_read_msg(*fd, body, sizeof body - 1);
        if (t < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        if (t == 'E') {
            error_field(body, (int)sizeof body - 1, 'C', code, 6);
            error_field(body, (int)sizeof body - 1, 'M', msg, 256);
            return 'E';
        }
        if (t == 'Z') return 'Z';
    }
}

/* Asserts a login of user to db is refused with 53300 and PgBouncer's text
 * for the cap named `key`. */
static void expect_refused(const it_sluice_t *s, const char *user, const char *db,
                           const char *key) {
    char code[8], msg[256], want[128];
    int fd;
    int t = raw_login(s, user, db, 5, code, msg, &fd);
    close(fd);
    snprintf(want, sizeof want, "client connections exceeded (%s)", key);
    IT_ASSERT(t == 'E' && !strcmp(code, "53300") && !strcmp(msg, want),
              "%s to %s: expected 53300 '%s', got %c %s '%s'", user, db, want, t > 0 ? t : '-',
              t == 'E' ? code : "", t == 'E' ? msg : "");
}

static PGconn *login_ok(const it_sluice_t *s, const char *user, const char *db) {
    PGconn *c = it_connect_db(s, user, db, NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "%s to %s refused: %s", user, db, PQerrorMessage(c));
    IT_ASSERT(!strcmp(it_value(c, "SELECT 1"), "1"), "query");
    return c;
}

/* Waits up to secs for the result of a query sent with PQsendQuery; returns
 * its status (PGRES_FATAL_ERROR also when the connection broke), or -1 on
 * timeout. */
static int wait_result(PGconn *c, double secs) {
    double deadline = it_now() + secs;
    while (it_now() < deadline) {
        if (!PQconsumeInput(c)) return PGRES_FATAL_ERROR;
        if (!PQisBusy(c)) {
            PGresult *r = PQgetResult(c);
            int st = r ? (int)PQresultStatus(r) : PGRES_FATAL_ERROR;
            PQclear(r);
            while ((r = PQgetResult(c)) != NULL)
                PQclear(r);
            return st;
        }
        usleep(10000);
    }
    return -1;
}

/* Idle server connections of user on the primary: those of an idle pool
 * (a backend that an earlier part left running a sleep, its client gone,
 * is not idle). */
static int backends_of(const char *user) {
    PGconn *d = it_direct();
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE usename = '%s' AND state = 'idle' "
             "AND pid <> pg_backend_pid()",
             user);
    int n = atoi(it_value(d, sql));
    PQfinish(d);
    return n;
}

static void append_ini(const it_sluice_t *s, const char *text) {
    FILE *f = fopen(s->ini, "a");
    IT_ASSERT(f, "open %s", s->ini);
    fputs(text, f);
    fclose(f);
}

static int ini_lines(const it_sluice_t *s) {
    FILE *f = fopen(s->ini, "r");
    IT_ASSERT(f, "open %s", s->ini);
    int n = 0, ch, last = '\n';
    while ((ch = fgetc(f)) != EOF) {
        if (ch == '\n') n++;
        last = ch;
    }
    fclose(f);
    return n + (last != '\n');
}

/* Sends SIGHUP and waits for the reload's log line. */
static void reload(const it_sluice_t *s, const char *needle) {
    int before = it_log_count(s, needle);
    kill(s->pid, SIGHUP);
    IT_ASSERT(it_log_wait(s, needle, before + 1, 5) > before, "no '%s' after SIGHUP", needle);
}

/* ---- client caps ---- */

/* SHOW what (over the Unix socket: the OS user is admin) has value in
 * column col of the row named name. */
static void shows_cap(const it_sluice_t *s, const char *what, const char *name, const char *col,
                      const char *value) {
    char ci[512], sql[64];
    snprintf(ci, sizeof ci, "host=%s port=%d dbname=pgbouncer user=pgbouncer", s->dir, s->port);
    PGconn *a = PQconnectdb(ci);
    IT_ASSERT(PQstatus(a) == CONNECTION_OK, "console: %s", PQerrorMessage(a));
    snprintf(sql, sizeof sql, "SHOW %s", what);
    PGresult *r = PQexec(a, sql);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(a));
    int c = PQfnumber(r, col), row = -1;
    for (int i = 0; i < PQntuples(r); i++)
        if (!strcmp(PQgetvalue(r, i, 0), name)) row = i;
    IT_ASSERT(c >= 0 && row >= 0, "%s: no %s row or %s column", sql, name, col);
    IT_ASSERT(!strcmp(PQgetvalue(r, row, c), value), "%s %s %s: %s, expected %s", sql, name, col,
              PQgetvalue(r, row, c), value);
    PQclear(r);
    PQfinish(a);
}

static void client_caps(void) {
    it_sluice_t s;
    int dead = it_free_port(); /* nothing listens: logins there wait for a server */
    char dbs[512];
    snprintf(dbs, sizeof dbs,
             "capped = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
             "max_db_client_connections=2\n"
             "dead = host=127.0.0.1 port=%d dbname=sluice_test max_db_client_connections=1\n"
             "[users]\n"
             "sl_md5 = max_user_client_connections=1\n",
             dead);
    it_sluice_start(&s,
                    "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 1\n"
                    "max_db_client_connections = 3\nmax_user_client_connections = 6\n"
                    "query_wait_timeout = 30\n",
                    dbs);
    /* The global database cap: 3 clients of sluice_test, the 4th refused. */
    PGconn *c[3];
    for (int i = 0; i < 3; i++)
        c[i] = login_ok(&s, "sl_scram", "sluice_test");
    expect_refused(&s, "sl_scram", "sluice_test", "max_db_client_connections");
    /* A database's own cap wins: 2 for capped. */
    PGconn *d1 = login_ok(&s, "sl_scram", "capped"), *d2 = login_ok(&s, "sl_scram", "capped");
    expect_refused(&s, "sl_scram", "capped", "max_db_client_connections");
    /* A user's own cap: sl_md5 may have one client, whatever the database. */
    PGconn *m = login_ok(&s, "sl_md5", "postgres");
    expect_refused(&s, "sl_md5", "postgres", "max_user_client_connections");
    expect_refused(&s, "sl_md5", "capped", "max_db_client_connections");
    /* The global user cap counts across databases: sl_scram has 5, one more. */
    PGconn *p1 = login_ok(&s, "sl_scram", "postgres");
    expect_refused(&s, "sl_scram", "postgres", "max_user_client_connections");
    /* The console shows the caps and the counts they admit by. */
    shows_cap(&s, "DATABASES", "capped", "max_client_connections", "2");
    shows_cap(&s, "DATABASES", "capped", "current_client_connections", "2");
    shows_cap(&s, "DATABASES", "sluice_test", "max_client_connections", "3");
    shows_cap(&s, "DATABASES", "sluice_test", "current_client_connections", "3");
    shows_cap(&s, "USERS", "sl_md5", "max_user_client_connections", "1");
    shows_cap(&s, "USERS", "sl_md5", "current_client_connections", "1");
    shows_cap(&s, "USERS", "sl_scram", "max_user_client_connections", "6");
    shows_cap(&s, "USERS", "sl_scram", "current_client_connections", "6");
    IT_ASSERT(it_log_count(&s, "login refused: database capped has 2 clients, "
                               "max_db_client_connections = 2") >= 1,
              "the log says which cap and the count");

    /* Slots come back whatever the way out. Mid-transaction: */
    it_exec(c[0], "BEGIN");
    it_exec(c[0], "SELECT 1");
    PQfinish(c[0]);
    /* mid-wait: c[1] holds the only server, c[2] waits for it, then leaves */
    it_exec(c[1], "BEGIN");
    IT_ASSERT(PQsendQuery(c[2], "SELECT 1"), "send");
    usleep(300000);
    IT_ASSERT(wait_result(c[2], 0.1) == -1, "c[2] waits for the pool's only server");
    PQfinish(c[2]);
    PQfinish(c[1]); /* inside its transaction */
    /* mid-login: authenticated, waiting for the first server of dead */
    char code[8], msg[256];
    int fd, fd2;
    IT_ASSERT(raw_login(&s, "sl_scram", "dead", 0.5, code, msg, &fd) == 0,
              "login to dead waits for a server");
    expect_refused(&s, "sl_scram", "dead", "max_db_client_connections");
    close(fd); /* leaves while waiting */
    PQfinish(p1);
    usleep(200000);
    IT_ASSERT(raw_login(&s, "sl_scram", "dead", 0.5, code, msg, &fd2) == 0,
              "the slot of the client that left mid-login is free again (%s %s)", code, msg);
    close(fd2);
    /* Every slot of sluice_test is free again: exactly 3 fit. */
    for (int i = 0; i < 3; i++)
        c[i] = login_ok(&s, "sl_scram", "sluice_test");
    expect_refused(&s, "sl_scram", "sluice_test", "max_db_client_connections");
    PQfinish(m);
    usleep(100000);
    PQfinish(login_ok(&s, "sl_md5", "postgres"));
    for (int i = 0; i < 3; i++)
        PQfinish(c[i]);
    PQfinish(d1), PQfinish(d2);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* ---- per-user pool settings and timeouts ---- */

static void user_settings(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\nquery_wait_timeout = 30\n",
                    "sized = host=127.0.0.1 port={PRIMARY} dbname=sluice_test pool_size=3\n"
                    "[users]\n"
                    "sl_md5 = pool_size=1 query_wait_timeout=0.8 query_timeout=0.5 "
                    "client_idle_timeout=2\n");
    /* sl_scram's three log in first: on a loaded machine three SCRAM
     * logins can take longer than sl_md5's client_idle_timeout. */
    PGconn *x[3];
    for (int i = 0; i < 3; i++)
        x[i] = login_ok(&s, "sl_scram", "sized");
    /* sl_md5's pool_size (1) wins over the database's (3), as in PgBouncer,
     * and its query_wait_timeout (0.8 s) over the global 30 s. */
    PGconn *a = login_ok(&s, "sl_md5", "sized"), *b = login_ok(&s, "sl_md5", "sized");
    it_exec(a, "BEGIN");
    double t0 = it_now();
    it_fails_with(b, "SELECT 2", "query_wait_timeout");
    IT_ASSERT(it_now() - t0 < 5, "sl_md5's own query_wait_timeout (%.1f s)", it_now() - t0);
    it_exec(a, "COMMIT");
    PQfinish(b);
    /* sl_md5's query_timeout, at once: `a` idle longer than its
     * client_idle_timeout would be closed for that instead. */
    PGresult *r = PQexec(a, "SELECT pg_sleep(2)");
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR && strstr(PQerrorMessage(a), "query_timeout"),
              "sl_md5's query_timeout: %s", PQerrorMessage(a));
    PQclear(r);
    PQfinish(a);
    /* sl_scram has no entry: the database's pool_size, 3 at once. */
    for (int i = 0; i < 3; i++) {
        it_exec(x[i], "BEGIN");
        it_exec(x[i], "SELECT 1");
    }
    for (int i = 0; i < 3; i++)
        it_exec(x[i], "COMMIT");
    /* sl_scram runs as long as it likes. */
    IT_ASSERT(!strcmp(it_value(x[0], "SELECT pg_sleep(1)::text || 'ok'"), "ok"), "no timeout");
    /* sl_md5's client_idle_timeout; sl_scram stays. */
    PGconn *idle = login_ok(&s, "sl_md5", "sized");
    usleep(3500000);
    r = PQexec(idle, "SELECT 1");
    IT_ASSERT(PQresultStatus(r) != PGRES_TUPLES_OK, "sl_md5's idle client was closed");
    PQclear(r);
    PQfinish(idle);
    IT_ASSERT(!strcmp(it_value(x[1], "SELECT 3"), "3"), "sl_scram idle as long as it likes");
    for (int i = 0; i < 3; i++)
        PQfinish(x[i]);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");

    /* A user's reserve_pool_size: its second client gets a reserve server
     * after reserve_pool_timeout instead of waiting. */
    it_sluice_start(&s,
                    "pool_mode = transaction\nquery_wait_timeout = 30\n"
                    "reserve_pool_timeout = 0.3\n",
                    "[users]\nsl_md5 = pool_size=1 reserve_pool_size=1\n");
    a = login_ok(&s, "sl_md5", "sluice_test");
    b = login_ok(&s, "sl_md5", "sluice_test");
    it_exec(a, "BEGIN");
    t0 = it_now();
    IT_ASSERT(!strcmp(it_value(b, "SELECT 4"), "4"), "a reserve server");
    IT_ASSERT(it_now() - t0 < 10, "served from the reserve (%.1f s)", it_now() - t0);
    it_exec(a, "COMMIT");
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");

    /* A user's idle_transaction_timeout; sl_scram has none. */
    it_sluice_start(&s, "pool_mode = transaction\n",
                    "[users]\nsl_md5 = idle_transaction_timeout=0.5\n");
    a = login_ok(&s, "sl_md5", "sluice_test");
    b = login_ok(&s, "sl_scram", "sluice_test");
    it_exec(a, "BEGIN");
    it_exec(b, "BEGIN");
    usleep(1500000);
    it_fails_with(a, "SELECT 5", "idle_transaction_timeout");
    IT_ASSERT(!strcmp(it_value(b, "SELECT 6"), "6"), "sl_scram's transaction stays open");
    it_exec(b, "COMMIT");
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* ---- transaction_timeout ---- */

static void drop_table(void) {
    PGconn *d = it_direct();
    PQclear(PQexec(d, "DROP TABLE IF EXISTS it_keys_tt"));
    PQfinish(d);
}

static void transaction_timeout(void) {
    drop_table();
    PGconn *d = it_direct();
    it_exec(d, "CREATE TABLE it_keys_tt (x int)");
    it_exec(d, "GRANT ALL ON it_keys_tt TO PUBLIC");
    PQfinish(d);
    it_on_fail(drop_table);
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = transaction\ndefault_pool_size = 1\ntransaction_timeout = 0.5\n",
                    "[users]\nsl_md5 = transaction_timeout=0\n");
    /* An open transaction past transaction_timeout: the client is closed
     * and its transaction rolled back; the pool's one server goes on clean. */
    PGconn *a = login_ok(&s, "sl_scram", "sluice_test");
    it_exec(a, "BEGIN");
    it_exec(a, "INSERT INTO it_keys_tt VALUES (1)");
    usleep(1500000);
    PGresult *r = PQexec(a, "SELECT 1");
    IT_ASSERT(PQresultStatus(r) != PGRES_TUPLES_OK &&
                  strstr(PQerrorMessage(a), "transaction timeout"),
              "closed by transaction_timeout: %s", PQerrorMessage(a));
    PQclear(r);
    PQfinish(a);
    IT_ASSERT(it_log_wait(&s, "sqlstate 25P04", 1, 3) == 1, "logged with 25P04");
    PGconn *b = login_ok(&s, "sl_scram", "sluice_test");
    IT_ASSERT(!strcmp(it_value(b, "SELECT count(*) FROM it_keys_tt"), "0"),
              "the timed-out transaction was rolled back, not handed on");
    IT_ASSERT(!strcmp(it_value(b, "SELECT pg_current_xact_id_if_assigned() IS NULL"), "t"),
              "the next client is in no one's transaction");
    PQfinish(b);
    /* sl_md5 turned it off for itself. */
    PGconn *m = login_ok(&s, "sl_md5", "sluice_test");
    it_exec(m, "BEGIN");
    usleep(1200000);
    IT_ASSERT(!strcmp(it_value(m, "SELECT 5"), "5"), "sl_md5's transaction stays open");
    it_exec(m, "COMMIT");
    PQfinish(m);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    drop_table();
    it_on_fail(NULL);
}

/* ---- query_wait_notify ---- */

static int notices;
static char notice_text[512];
static void on_notice(void *arg, const PGresult *r) {
    (void)arg;
    notices++;
    snprintf(notice_text, sizeof notice_text, "%s %s", PQresultErrorField(r, PG_DIAG_SEVERITY),
             PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY));
}

static void wait_notify(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_notify = 0.3\n",
                    NULL);
    PGconn *a = login_ok(&s, "sl_scram", "sluice_test"),
           *b = login_ok(&s, "sl_scram", "sluice_test");
    PQsetNoticeReceiver(b, on_notice, NULL);
    for (int round = 1; round <= 2; round++) {
        it_exec(a, "BEGIN");
        IT_ASSERT(PQsendQuery(b, "SELECT 1"), "send");
        usleep(1300000); /* four times query_wait_notify: still one notice */
        it_exec(a, "COMMIT");
        IT_ASSERT(wait_result(b, 10) == PGRES_TUPLES_OK, "the waiter got its server");
        IT_ASSERT(notices == round, "one notice per wait (%d after wait %d)", notices, round);
        IT_ASSERT(!strcmp(notice_text, "NOTICE " BOUNCER_WAIT_NOTICE), "PgBouncer's text: %s",
                  notice_text);
    }
    /* No wait, no notice. */
    IT_ASSERT(!strcmp(it_value(b, "SELECT 2"), "2"), "query");
    IT_ASSERT(notices == 2, "no notice without a wait (%d)", notices);
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* ---- server_check_query ---- */

static void check_query(void) {
    /* The default, as PgBouncer's <empty>: an empty query checks a server
     * idle longer than server_check_delay before it is handed out. */
    it_sluice_t s;
    it_sluice_start(&s, "verbose = 1\nserver_check_delay = 0\npool_mode = transaction\n", NULL);
    PGconn *a = login_ok(&s, "sl_scram", "sluice_test");
    for (int i = 0; i < 3; i++)
        IT_ASSERT(!strcmp(it_value(a, "SELECT 7"), "7"), "query");
    IT_ASSERT(it_log_wait(&s, "server_check_query (an empty query) before reuse", 2, 3) >= 2,
              "the default checks with an empty query");
    PQfinish(a);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    /* Explicitly empty: no check. */
    it_sluice_start(&s,
                    "verbose = 1\nserver_check_delay = 0\npool_mode = transaction\n"
                    "server_check_query =\n",
                    NULL);
    a = login_ok(&s, "sl_scram", "sluice_test");
    for (int i = 0; i < 3; i++)
        IT_ASSERT(!strcmp(it_value(a, "SELECT 7"), "7"), "query");
    IT_ASSERT(it_log_count(&s, "server_check_query") == 0, "an empty value turns checks off");
    PQfinish(a);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* ---- reload ---- */

static void reload_applies(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 60\n",
                    NULL);
    /* 10 clients queued on a pool of one: a larger pool serves them now. */
    PGconn *a = login_ok(&s, "sl_md5", "sluice_test"), *w[10];
    for (int i = 0; i < 10; i++)
        w[i] = login_ok(&s, "sl_md5", "sluice_test");
    it_exec(a, "BEGIN");
    for (int i = 0; i < 10; i++)
        IT_ASSERT(PQsendQuery(w[i], "SELECT 1"), "send");
    usleep(300000);
    IT_ASSERT(wait_result(w[0], 0.1) == -1, "queued");
    append_ini(&s, "default_pool_size = 12\n");
    reload(&s, "configuration reloaded");
    for (int i = 0; i < 10; i++)
        IT_ASSERT(wait_result(w[i], 10) == PGRES_TUPLES_OK, "waiter %d served after the reload", i);
    it_exec(a, "COMMIT");
    /* A smaller pool: its surplus idle servers close at the reload, not
     * after server_idle_timeout. */
    /* (Waiters served early free their server for others: fewer than 10 may
     * have opened, but more than the one pool_size = 1 keeps.) */
    int opened = backends_of("sl_md5");
    IT_ASSERT(opened >= 2, "the larger pool opened servers (%d)", opened);
    append_ini(&s, "default_pool_size = 1\n");
    reload(&s, "configuration reloaded");
    /* Closed at once; a loaded machine may take a while to end the backends. */
    double deadline = it_now() + 10;
    while (backends_of("sl_md5") > 1 && it_now() < deadline)
        usleep(50000);
    IT_ASSERT(backends_of("sl_md5") <= 1, "surplus servers closed (%d left)",
              backends_of("sl_md5"));
    /* A shorter query_wait_timeout fails clients that waited past it. */
    it_exec(a, "BEGIN");
    for (int i = 0; i < 3; i++)
        IT_ASSERT(PQsendQuery(w[i], "SELECT 1"), "send");
    usleep(800000);
    append_ini(&s, "query_wait_timeout = 0.5\n");
    reload(&s, "configuration reloaded");
    for (int i = 0; i < 3; i++) {
        IT_ASSERT(wait_result(w[i], 3) == PGRES_FATAL_ERROR &&
                      strstr(PQerrorMessage(w[i]), "query_wait_timeout"),
                  "waiter %d failed at the reload: %s", i, PQerrorMessage(w[i]));
    }
    it_exec(a, "COMMIT");

    /* An invalid file: the running config stays, every error is logged
     * with its file:line. */
    int n = ini_lines(&s);
    append_ini(&s, "bogus_key = 1\n"
                   "default_pool_size = 0\n"
                   "[users]\n"
                   "sl_md5 = color=blue pool_size=x\n");
    reload(&s, "reload failed, keeping the running configuration: 4 errors");
    char want[4][512];
    snprintf(want[0], sizeof want[0], "%s:%d: unknown key 'bogus_key'", s.ini, n + 1);
    snprintf(want[1], sizeof want[1], "%s:%d: default_pool_size: invalid value '0'", s.ini, n + 2);
    snprintf(want[2], sizeof want[2], "%s:%d: user 'sl_md5': unknown key 'color'", s.ini, n + 4);
    snprintf(want[3], sizeof want[3], "%s:%d: pool_size: invalid value 'x'", s.ini, n + 4);
    for (int i = 0; i < 4; i++)
        IT_ASSERT(it_log_count(&s, want[i]) == 1, "logged: %s", want[i]);
    /* Still a pool of one with query_wait_timeout 0.5 s. */
    it_exec(a, "BEGIN");
    double t0 = it_now();
    it_fails_with(w[5], "SELECT 1", "query_wait_timeout");
    IT_ASSERT(it_now() - t0 < 5, "the running settings stayed (%.1f s)", it_now() - t0);
    it_exec(a, "COMMIT");
    for (int i = 0; i < 10; i++)
        PQfinish(w[i]);
    PQfinish(a);

    /* --check says every error too. */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s --check %s 2>&1", getenv("SLUICE_BIN"), s.ini);
    FILE *p = popen(cmd, "r");
    IT_ASSERT(p, "popen");
    char line[1024];
    int found = 0, lines = 0;
    while (fgets(line, sizeof line, p)) {
        lines++;
        for (int i = 0; i < 4; i++)
            found += strstr(line, want[i]) != NULL;
    }
    IT_ASSERT(pclose(p) != 0 && found == 4 && lines == 4, "--check: %d of 4 errors in %d lines",
              found, lines);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

int main(int argc, char **argv) {
    it_init("it_keys");
    static const struct {
        const char *name;
        void (*fn)(void);
    } parts[] = {{"client_caps", client_caps},
                 {"user_settings", user_settings},
                 {"transaction_timeout", transaction_timeout},
                 {"wait_notify", wait_notify},
                 {"check_query", check_query},
                 {"reload_applies", reload_applies}};
    /* it_keys [part]: one part alone. */
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        if (argc < 2 || !strcmp(argv[1], parts[i].name)) parts[i].fn();
    return it_done();
}
