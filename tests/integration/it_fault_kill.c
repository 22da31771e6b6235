/* Fault matrix, backends killed: a PostgreSQL of the test's own (kill -9 of
 * a backend makes the postmaster restart every backend, which must not
 * disturb the shared cluster) behind one sluice, and each backend phase hit
 * with pg_terminate_backend (kill -9 for mid-query, inside a transaction,
 * idle in the pool, mid-COPY in and auth: each costs a crash restart of
 * the server, and for sluice it differs only in the missing FATAL before
 * the EOF; set IT_FAULT_KILL9_ALL=1 for every phase): login (connect, auth, through
 * a slow relay so that the login can be caught), idle in the pool, mid-query,
 * inside a transaction, mid-COPY in and out, mid-result, sluice's own reset
 * (session mode, a slow server_reset_query), SET replay (transaction mode,
 * carried settings), server_check_query, auth_query, and a replica health
 * check on the shared cluster. Each time the affected client gets an error
 * with a SQLSTATE, a bystander running meanwhile gets none (on the same pool
 * for pg_terminate_backend; on the shared cluster for kill -9, which ends
 * every backend of the own server), and a following query succeeds.
 * Then 1,000 terminations in rounds of 10 (mid-query, inside a transaction,
 * idle in the pool) and sluice's open fds and RSS are back to their start. */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "delay.h"
#include "harness.h"

#define SLOW_MS 150  /* the relay's delay per chunk in front of fkslow */
#define EVENTS 1000  /* terminations in the churn loop */
#define PER_ROUND 10 /* terminations per round */
#define FD_SLACK 2   /* fds that may differ (a log reopen, a resolver socket) */
#define RSS_SLACK_KB (4 * 1024)

static it_sluice_t sl;
static int pg_port;
static it_delay_t *slow;

static void drain(PGconn *c);

enum how { TERM, KILL9 };
static const char *const how_name[] = {"pg_terminate_backend", "kill -9"};

/* Superuser connection to the own server over its Unix socket (trust). */
static PGconn *own_direct(void) {
    char ci[256];
    snprintf(ci, sizeof ci, "host=%s port=%d dbname=postgres user=postgres connect_timeout=5",
             it_own_pg_dir(), pg_port);
    return PQconnectdb(ci);
}

static PGconn *own(void) {
    PGconn *d = NULL;
    double deadline = it_now() + 30;
    for (;;) {
        d = own_direct();
        if (PQstatus(d) == CONNECTION_OK) return d;
        IT_ASSERT(it_now() < deadline, "own PostgreSQL back: %s", PQerrorMessage(d));
        PQfinish(d);
        usleep(100000);
    }
}

static PGconn *client(const char *db, const char *extra) {
    PGconn *c = it_connect_db(&sl, "sl_scram", db, extra);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "connect to %s: %s", db, PQerrorMessage(c));
    return c;
}

/* ---- killing ---- */

/* Waits for a backend matching `where` (a pg_stat_activity condition) and
 * kills it; returns its pid. */
static int kill_where(PGconn *d, enum how how, const char *where) {
    char sql[1024];
    snprintf(sql, sizeof sql,
             "SELECT coalesce(min(pid), 0) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
             "AND %s",
             where);
    double deadline = it_now() + 15;
    int pid = 0;
    while (!(pid = atoi(it_value(d, sql)))) {
        IT_ASSERT(it_now() < deadline, "no backend where %s", where);
        usleep(10000);
    }
    if (how == KILL9) {
        IT_ASSERT(kill(pid, SIGKILL) == 0, "kill -9 %d", pid);
    } else {
        snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", pid);
        it_value(d, sql);
    }
    return pid;
}

/* A backend still logging in is not in pg_stat_activity with a user yet:
 * once the startup packet came, its process title says "postgres: <user>
 * <db> 127.0.0.1(port) authentication"; before, it has the postmaster's
 * command line (needle NULL: such a child of the postmaster). */
static int postmaster_pid(void) {
    char path[128], line[64] = "";
    snprintf(path, sizeof path, "%s/pg/postmaster.pid", it_own_pg_dir());
    FILE *f = fopen(path, "r");
    if (f && !fgets(line, sizeof line, f)) line[0] = '\0';
    if (f) fclose(f);
    return atoi(line);
}

static int parent_of(int pid) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    int ppid = 0;
    return p && sscanf(p + 2, "%*c %d", &ppid) == 1 ? ppid : 0;
}

static int pid_by_title(const char *needle) {
    int pm = postmaster_pid();
    DIR *dir = opendir("/proc");
    struct dirent *e;
    int found = 0;
    while (!found && dir && (e = readdir(dir))) {
        int pid = atoi(e->d_name);
        if (pid <= 0 || pid == pm) continue;
        char path[64], buf[512];
        snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        /* Children of this test's postmaster only: another test may run
         * a PostgreSQL with the same roles beside it. */
        if ((needle ? !strncmp(buf, "postgres: ", 10) && strstr(buf, needle) != NULL
                    : strstr(buf, "/bin/postgres") != NULL) &&
            parent_of(pid) == pm)
            found = pid;
    }
    if (dir) closedir(dir);
    return found;
}

/* After kill -9 the postmaster ends every backend and recovers. It learns
 * of the death a moment later: d, opened before the kill, ends when the
 * restart has begun; then wait for the server to accept again. */
static PGconn *settle(PGconn *d, enum how how) {
    if (how == TERM) return d;
    double deadline = it_now() + 15;
    for (;;) {
        PGresult *r = PQexec(d, "SELECT 1");
        bool alive = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (!alive) break;
        IT_ASSERT(it_now() < deadline, "the postmaster restarts after kill -9");
        usleep(20000);
    }
    PQfinish(d);
    return own();
}

/* ---- the bystander: a client looping short queries meanwhile ---- */

typedef struct bystander {
    const char *db;
    atomic_bool stop;
    atomic_long queries, errors;
    char first_error[256];
    pthread_t t;
} bystander_t;

static void *bystander_main(void *arg) {
    bystander_t *b = arg;
    PGconn *c = client(b->db, NULL);
    while (!atomic_load(&b->stop)) {
        PGresult *r = PQexec(c, "SELECT 'bystander'");
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            if (atomic_fetch_add(&b->errors, 1) == 0)
                snprintf(b->first_error, sizeof b->first_error, "%s", PQerrorMessage(c));
        }
        atomic_fetch_add(&b->queries, 1);
        PQclear(r);
        usleep(2000);
    }
    PQfinish(c);
    return NULL;
}

static void bystander_start(bystander_t *b, const char *db) {
    memset(b, 0, sizeof *b);
    b->db = db;
    pthread_create(&b->t, NULL, bystander_main, b);
    /* It holds its own server from now on (pool_size 2: the victim the other). */
    while (atomic_load(&b->queries) < 3)
        usleep(5000);
}

static void bystander_stop(bystander_t *b, const char *phase) {
    atomic_store(&b->stop, true);
    pthread_join(b->t, NULL);
    IT_ASSERT(atomic_load(&b->errors) == 0, "%s: the bystander on %s got %ld errors: %s", phase,
              b->db, atomic_load(&b->errors), b->first_error);
}

/* The affected client's error: a SQLSTATE of the connection class (08) or
 * of an operator intervention (57P0x) with a message. Two cases show as a
 * closed connection instead, as they would without sluice:
 * - an error that came while the client waited for nothing (idle in a
 *   transaction): libpq keeps only the FATAL's text, sluice's ("server
 *   connection lost ...; reconnect and retry") or PostgreSQL's
 *   ("terminating connection ...");
 * - a backend killed while its socket is full stops in the middle of a
 *   message (PostgreSQL cannot send its FATAL then); sluice cannot append
 *   an error to half a message, so in a stream (`cut_ok`) the connection
 *   just closes. */
static void expect_error(PGconn *c, PGresult *r, const char *phase, enum how how, bool cut_ok) {
    const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = PQerrorMessage(c);
    if (code && (!strncmp(code, "08", 2) || !strncmp(code, "57P0", 4)) && *msg) return;
    bool closed = PQstatus(c) == CONNECTION_BAD;
    bool told = strstr(msg, "server connection lost") || strstr(msg, "terminating connection");
    bool cut = cut_ok && strstr(msg, "closed the connection") && !strstr(msg, "synchroniz");
    IT_ASSERT(!code && closed && (told || cut),
              "%s (%s): the client gets a connection error with a SQLSTATE, got %s: %s", phase,
              how_name[how], code ? code : "none", msg);
}

/* A following query works: on the same connection when sluice kept it, or
 * on a new one when it closed it (session mode, or a broken COPY). */
static void next_query_ok(PGconn **c, const char *db, const char *phase) {
    if (PQstatus(*c) != CONNECTION_OK) {
        PQfinish(*c);
        *c = client(db, NULL);
    }
    PGresult *r = PQexec(*c, "SELECT 'refilled'");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        /* The error of a lost server may come before the next query's turn. */
        PQclear(r);
        if (PQstatus(*c) != CONNECTION_OK) {
            PQfinish(*c);
            *c = client(db, NULL);
        }
        r = PQexec(*c, "SELECT 'refilled'");
    }
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: a following query works: %s", phase,
              PQerrorMessage(*c));
    PQclear(r);
}

static void drain(PGconn *c) {
    PGresult *r;
    while ((r = PQgetResult(c)))
        PQclear(r);
}

/* ---- the phases ---- */

static void mid_query(enum how how) {
    bystander_t b;
    bystander_start(&b, how == TERM ? "fk" : "sluice_test");
    PGconn *c = client("fk", NULL), *d = own();
    IT_ASSERT(PQsendQuery(c, "SELECT pg_sleep(30) /*victim*/"), "send");
    kill_where(d, how, "query LIKE '%/*victim*/' AND state = 'active'");
    PGresult *r = PQgetResult(c);
    expect_error(c, r, "mid-query", how, false);
    PQclear(r);
    drain(c);
    d = settle(d, how);
    next_query_ok(&c, "fk", "mid-query");
    bystander_stop(&b, "mid-query");
    PQfinish(c), PQfinish(d);
}

static void in_transaction(enum how how) {
    bystander_t b;
    bystander_start(&b, how == TERM ? "fk" : "sluice_test");
    PGconn *c = client("fk", NULL), *d = own();
    it_exec(c, "BEGIN");
    it_exec(c, "INSERT INTO fault_t VALUES (1) /*victim_tx*/");
    kill_where(d, how, "query LIKE '%/*victim_tx*/' AND state = 'idle in transaction'");
    d = settle(d, how);
    PGresult *r = PQexec(c, "INSERT INTO fault_t VALUES (2)");
    expect_error(c, r, "inside a transaction", how, false);
    PQclear(r);
    next_query_ok(&c, "fk", "inside a transaction");
    IT_ASSERT(!strcmp(it_value(d, "SELECT count(*) FROM fault_t"), "0"),
              "inside a transaction: nothing of it was committed");
    bystander_stop(&b, "inside a transaction");
    PQfinish(c), PQfinish(d);
}

static void idle_in_pool(enum how how) {
    bystander_t b;
    bystander_start(&b, "sluice_test");
    PGconn *c = client("fk", "application_name=idle_victim"), *d = own();
    it_exec(c, "SELECT 1 /*idle_victim*/");
    /* Servers of fk: the one that ran it is idle now. */
    int closed = it_log_count(&sl, "backend sent an error while idle");
    int lost = it_log_count(&sl, "closing server connection");
    kill_where(d, how, "query LIKE '%/*idle_victim*/' AND state = 'idle'");
    d = settle(d, how);
    /* sluice notices an idle server's end by itself (its FATAL, or EOF). */
    if (how == TERM)
        IT_ASSERT(it_log_wait(&sl, "backend sent an error while idle", closed + 1, 10) > closed,
                  "idle in the pool: the terminated server is noticed");
    (void)lost;
    next_query_ok(&c, "fk", "idle in the pool");
    bystander_stop(&b, "idle in the pool");
    PQfinish(c), PQfinish(d);
}

static void mid_copy_in(enum how how) {
    bystander_t b;
    bystander_start(&b, how == TERM ? "fk" : "sluice_test");
    PGconn *c = client("fk", NULL), *d = own();
    PGresult *r = PQexec(c, "COPY fault_t FROM STDIN /*victim_copy_in*/");
    IT_ASSERT(PQresultStatus(r) == PGRES_COPY_IN, "copy in: %s", PQerrorMessage(c));
    PQclear(r);
    for (int i = 0; i < 1000; i++)
        IT_ASSERT(PQputCopyData(c, "7\n", 2) == 1, "put");
    PQflush(c);
    kill_where(d, how, "query LIKE '%/*victim_copy_in*/'");
    /* More rows: the writes may fail or not, the end must report it. */
    for (int i = 0; i < 1000 && PQputCopyData(c, "8\n", 2) == 1; i++)
        usleep(100);
    PQputCopyEnd(c, NULL);
    r = PQgetResult(c);
    expect_error(c, r, "mid-COPY in", how, false);
    PQclear(r);
    drain(c);
    d = settle(d, how);
    next_query_ok(&c, "fk", "mid-COPY in");
    IT_ASSERT(!strcmp(it_value(d, "SELECT count(*) FROM fault_t"), "0"),
              "mid-COPY in: no row of the broken COPY");
    bystander_stop(&b, "mid-COPY in");
    PQfinish(c), PQfinish(d);
}

/* Reads a large result (COPY out or rows) until a few MB came, kills, reads on. */
static void mid_stream(enum how how, bool copy) {
    const char *phase = copy ? "mid-COPY out" : "mid-result";
    bystander_t b;
    bystander_start(&b, how == TERM ? "fk" : "sluice_test");
    PGconn *c = client("fk", NULL), *d = own();
    const char *sql = copy ? "COPY (SELECT repeat('x', 1000) FROM generate_series(1, 2000000)) TO "
                             "STDOUT /*victim_stream*/"
                           : "SELECT repeat('x', 1000) FROM generate_series(1, 2000000) "
                             "/*victim_stream*/";
    IT_ASSERT(PQsendQuery(c, sql), "send");
    if (!copy) PQsetSingleRowMode(c);
    long got = 0;
    bool killed = false;
    PGresult *err = NULL;
    for (;;) {
        if (copy) {
            PGresult *r = PQgetResult(c);
            if (PQresultStatus(r) != PGRES_COPY_OUT) {
                err = r;
                break;
            }
            PQclear(r);
            char *buf;
            int n;
            while ((n = PQgetCopyData(c, &buf, 0)) > 0) {
                PQfreemem(buf);
                if (++got == 2000 && !killed)
                    kill_where(d, how, "query LIKE '%/*victim_stream*/'"), killed = true;
            }
            err = PQgetResult(c);
            break;
        }
        PGresult *r = PQgetResult(c);
        if (!r || PQresultStatus(r) != PGRES_SINGLE_TUPLE) {
            err = r;
            break;
        }
        PQclear(r);
        if (++got == 2000 && !killed)
            kill_where(d, how, "query LIKE '%/*victim_stream*/'"), killed = true;
    }
    IT_ASSERT(killed && got < 2000000, "%s: killed after %ld rows", phase, got);
    expect_error(c, err, phase, how, true);
    PQclear(err);
    drain(c);
    d = settle(d, how);
    next_query_ok(&c, "fk", phase);
    bystander_stop(&b, phase);
    PQfinish(c), PQfinish(d);
}

/* Session mode: the client leaves, sluice runs server_reset_query (slow
 * here), the backend is killed during it; the next client, on a pool of
 * one, gets a fresh server. */
static void during_reset(enum how how) {
    PGconn *c = client("fks", NULL), *d = own();
    it_exec(c, "SELECT 1");
    PQfinish(c);
    kill_where(d, how, "query LIKE '%/*sluice_reset*/' AND state = 'active'");
    d = settle(d, how);
    c = client("fks", NULL);
    next_query_ok(&c, "fks", "during the reset");
    PQfinish(c), PQfinish(d);
}

/* Transaction mode: the victim carries application_name; another client
 * with another one used the only server of fkslow last, so the victim's
 * transaction begins with a SET, slowed down by the relay and killed. */
static void during_set_replay(enum how how) {
    PGconn *other = client("fkslow", "application_name=other_app");
    PGconn *c = client("fkslow", "application_name=victim_app"), *d = own();
    it_exec(other, "SELECT 1");
    IT_ASSERT(PQsendQuery(c, "SELECT 'victim after replay'"), "send");
    kill_where(d, how, "usename = 'sl_slow' AND query LIKE '%set_config(%victim_app%'");
    PGresult *r = PQgetResult(c);
    /* The SET was sluice's own: the client may get its answer from a new
     * server, else an error that says the server was lost. */
    if (PQresultStatus(r) != PGRES_TUPLES_OK) expect_error(c, r, "during SET replay", how, false);
    PQclear(r);
    drain(c);
    d = settle(d, how);
    next_query_ok(&c, "fkslow", "during SET replay");
    IT_ASSERT(!strcmp(it_value(c, "SHOW application_name"), "victim_app"),
              "during SET replay: the client's setting holds on the new server");
    PQfinish(other), PQfinish(c), PQfinish(d);
}

/* server_check_query (slow) runs before a server idle for over
 * server_check_delay is reused; its backend is killed during the check:
 * the waiting client gets another server, no error. */
static void during_check(enum how how) {
    PGconn *c = client("fkslow", NULL), *d = own();
    bool killed = false;
    for (int attempt = 0; attempt < 3 && !killed; attempt++) {
        it_exec(c, "SELECT 1");
        usleep(1200 * 1000); /* server_check_delay */
        IT_ASSERT(PQsendQuery(c, "SELECT 'after check'"), "send");
        /* The check runs unless the server is new (then again). */
        char sql[256];
        int pid = 0;
        snprintf(sql, sizeof sql,
                 "SELECT coalesce(min(pid), 0) FROM pg_stat_activity WHERE usename = 'sl_slow' "
                 "AND query LIKE '%%/*sluice_check*/' AND state = 'active'");
        while (!(pid = atoi(it_value(d, sql))) && PQconsumeInput(c) && PQisBusy(c))
            usleep(5000);
        if (pid) {
            if (how == KILL9) {
                IT_ASSERT(kill(pid, SIGKILL) == 0, "kill -9 %d", pid);
            } else {
                snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", pid);
                it_value(d, sql);
            }
            killed = true;
        }
        PGresult *r = PQgetResult(c);
        IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK,
                  "during server_check_query (%s): the client gets another server, not: %s",
                  how_name[how], PQerrorMessage(c));
        PQclear(r);
        drain(c);
        d = settle(d, how);
    }
    IT_ASSERT(killed, "during server_check_query: a check was caught");
    next_query_ok(&c, "fkslow", "during server_check_query");
    PQfinish(c), PQfinish(d);
}

/* A login of sluice's to fkslow, slowed by the relay, killed while the
 * backend waits for the startup packet (connect) or for the SCRAM
 * exchange (auth). */
static void during_login(enum how how, bool auth) {
    const char *phase = auth ? "during auth" : "during connect";
    PGconn *d = own(), *c = client("fkslow", NULL);
    /* The login is caught in its window (the relay's delay); should the
     * query find a server all the same (a login that raced ahead), again. */
    bool killed = false;
    for (int attempt = 0; attempt < 5 && !killed; attempt++) {
        /* fkslow's only server goes, and sluice sees it go (through the
         * slow relay), so that the query below needs a new login. */
        int idle_lost = it_log_count(&sl, "backend sent an error while idle");
        if (atoi(it_value(d, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE usename = 'sl_slow'")) > 0)
            it_log_wait(&sl, "backend sent an error while idle", idle_lost + 1, 5);
        IT_ASSERT(PQsendQuery(c, "SELECT 'logged in'"), "send");
        const char *needle = auth ? "sl_slow postgres 127.0.0.1(" : NULL;
        int pid = 0;
        while (!(pid = pid_by_title(needle)) && PQconsumeInput(c) && PQisBusy(c))
            usleep(2000);
        if (pid) {
            /* Before its startup packet a backend has no PGPROC for
             * pg_terminate_backend: SIGTERM is what that function sends. */
            IT_ASSERT(kill(pid, how == KILL9 ? SIGKILL : SIGTERM) == 0, "kill %d", pid);
            killed = true;
        }
        PGresult *r = PQgetResult(c);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) expect_error(c, r, phase, how, false);
        PQclear(r);
        drain(c);
        d = settle(d, how);
        next_query_ok(&c, "fkslow", phase);
    }
    IT_ASSERT(killed, "%s: a login was caught", phase);
    PQfinish(c), PQfinish(d);
}

/* auth_query (slowed by a pg_sleep in it) for a user not in auth_file, its
 * backend killed: the login fails saying the lookup failed (not that the
 * password was wrong), the next succeeds. */
typedef struct login {
    char ci[256];
    PGconn *c;
} login_t;

static void *login_main(void *arg) {
    login_t *l = arg;
    l->c = PQconnectdb(l->ci);
    return NULL;
}

static void during_auth_query(enum how how) {
    usleep(400 * 1000); /* auth_cache_ttl: sl_aq is looked up again */
    PGconn *d = own();
    login_t l;
    snprintf(l.ci, sizeof l.ci,
             "host=127.0.0.1 port=%d dbname=fk user=sl_aq password=aq_pw connect_timeout=20",
             sl.port);
    pthread_t t;
    pthread_create(&t, NULL, login_main, &l);
    kill_where(d, how, "query LIKE '%/*sluice_authq*/%' AND state = 'active'");
    pthread_join(t, NULL);
    /* Not "password authentication failed": the password was right. */
    if (PQstatus(l.c) != CONNECTION_OK)
        IT_ASSERT(strstr(PQerrorMessage(l.c), "password lookup (auth_query) failed"),
                  "during auth_query (%s): the login fails saying why: %s", how_name[how],
                  PQerrorMessage(l.c));
    PQfinish(l.c);
    d = settle(d, how);
    PGconn *c = it_connect_db(&sl, "sl_aq", "fk", "password=aq_pw");
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "during auth_query: the next login works: %s",
              PQerrorMessage(c));
    next_query_ok(&c, "fk", "during auth_query");
    PQfinish(c), PQfinish(d);
}

/* Replica health checks of a database on the shared cluster: their
 * connections terminated again and again; reads keep their answers. */
static void during_health(void) {
    bystander_t b;
    bystander_start(&b, "rep");
    PGconn *d = it_direct();
    for (int i = 0; i < 5; i++) {
        kill_where(d, TERM, "query LIKE '%pg_is_in_recovery%' AND usename = 'sl_scram'");
        usleep(300000);
    }
    bystander_stop(&b, "during health checks");
    PQfinish(d);
}

/* ---- 1,000 terminations, then fds and RSS ---- */

static long rss_kb(void) {
    return it_sluice_status_kb(&sl, "VmRSS");
}

/* sluice's open fds less its server connections to the own PostgreSQL
 * (the pool refills to a size of its choosing): what must not grow. */
static int fds_less_servers(PGconn *d) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int)sl.pid);
    DIR *dir = opendir(path);
    int n = 0;
    struct dirent *e;
    while (dir && (e = readdir(dir)))
        if (e->d_name[0] != '.') n++;
    if (dir) closedir(dir);
    return n - atoi(it_value(d, "SELECT count(*) FROM pg_stat_activity WHERE client_addr IS NOT "
                                "NULL AND backend_type = 'client backend'"));
}

static long log_size(void) {
    FILE *f = fopen(sl.log, "r");
    long n = 0;
    if (f && fseek(f, 0, SEEK_END) == 0) n = ftell(f);
    if (f) fclose(f);
    return n;
}

/* Waits up to secs for `atleast` lines with needle in the log past byte
 * `from` (the log grows by every round: reading all of it each time would
 * cost more than the round). */
static bool log_wait_from(long from, const char *needle, int atleast, double secs) {
    double deadline = it_now() + secs;
    for (;;) {
        FILE *f = fopen(sl.log, "r");
        int n = 0;
        char line[4096];
        if (f && fseek(f, from, SEEK_SET) == 0)
            while (fgets(line, sizeof line, f))
                if (strstr(line, needle)) n++;
        if (f) fclose(f);
        if (n >= atleast) return true;
        if (it_now() > deadline) return false;
        usleep(5000);
    }
}

/* One round: 4 clients mid-query, 3 inside a transaction, 3 whose servers
 * are idle in the pool, all terminated at once: the first two kinds get an
 * error, the last none (sluice sees their servers go while pooled). */
static void churn_round(PGconn *cl[PER_ROUND], PGconn *d, int *events) {
    for (int i = 0; i < PER_ROUND; i++)
        if (!cl[i] || PQstatus(cl[i]) != CONNECTION_OK) {
            PQfinish(cl[i]);
            cl[i] = client("fkchurn", NULL);
        }
    for (int i = 4; i < 7; i++) {
        it_exec(cl[i], "BEGIN");
        it_exec(cl[i], "SELECT 'tx' /*churn*/");
    }
    for (int i = 0; i < 4; i++)
        IT_ASSERT(PQsendQuery(cl[i], "SELECT pg_sleep(30) /*churn*/"), "send");
    const char *where = "SELECT count(*) FILTER (WHERE state = 'active'), count(*) FILTER (WHERE "
                        "state = 'idle in transaction'), count(*) FILTER (WHERE state = 'idle') "
                        "FROM pg_stat_activity WHERE query LIKE '%/*churn*/'";
    double deadline = it_now() + 10;
    int idle = 0;
    /* Last, once every mid-query client has its server, so that no other
     * client of the round takes theirs: with several workers a server
     * idle on one is handed to another whose client still waits for a
     * login, and the server that login brings stays idle with no query. */
    for (bool sent = false;;) {
        PGresult *r = PQexec(d, where);
        IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "churn: %s", PQerrorMessage(d));
        bool busy = atoi(PQgetvalue(r, 0, 0)) == 4 && atoi(PQgetvalue(r, 0, 1)) == 3;
        idle = atoi(PQgetvalue(r, 0, 2));
        PQclear(r);
        if (busy && !sent) {
            /* The three idle clients' queries run one after another, likely
             * on one server: at least one server is idle in the pool. */
            for (int i = 7; i < PER_ROUND; i++)
                it_exec(cl[i], "SELECT 'idle' /*churn*/");
            sent = true;
            continue;
        }
        if (busy && idle >= 1) break;
        IT_ASSERT(it_now() < deadline, "churn: round ready");
    }
    long from = log_size();
    int n = atoi(it_value(d, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE query LIKE '%/*churn*/'"));
    IT_ASSERT(n == 7 + idle, "churn: %d backends terminated, %d expected", n, 7 + idle);
    *events += n;
    for (int i = 0; i < 4; i++) {
        PGresult *r = PQgetResult(cl[i]);
        expect_error(cl[i], r, "churn, mid-query", TERM, false);
        PQclear(r);
        drain(cl[i]);
    }
    for (int i = 4; i < 7; i++) {
        PGresult *r = PQexec(cl[i], "SELECT 'after'");
        expect_error(cl[i], r, "churn, inside a transaction", TERM, false);
        PQclear(r);
    }
    IT_ASSERT(log_wait_from(from, "backend sent an error while idle", idle, 10),
              "churn: the idle servers' end is noticed");
}

static void churn(void) {
    PGconn *cl[PER_ROUND] = {0}, *d = own();
    int events = 0;
    churn_round(cl, d, &events); /* warm-up: buffers, free lists, the pool's keys */
    for (int i = 0; i < PER_ROUND; i++)
        PQfinish(cl[i]), cl[i] = NULL;
    usleep(200000);
    int fd0 = fds_less_servers(d);
    long rss0 = rss_kb();
    double t0 = it_now();
    events = 0;
    while (events < EVENTS)
        churn_round(cl, d, &events);
    for (int i = 0; i < PER_ROUND; i++) {
        next_query_ok(&cl[i], "fkchurn", "after the churn");
        PQfinish(cl[i]);
    }
    /* The clients' closes reach sluice asynchronously. */
    int fd1 = 0;
    double deadline = it_now() + 5;
    do {
        usleep(100000);
        fd1 = fds_less_servers(d);
    } while (fd1 > fd0 + FD_SLACK && it_now() < deadline);
    long rss1 = rss_kb();
    printf("churn: %d terminations in %.1f s; fds less servers %d -> %d; RSS %ld -> %ld kB\n",
           events, it_now() - t0, fd0, fd1, rss0, rss1);
    IT_ASSERT(fd1 <= fd0 + FD_SLACK, "fds back to their start: %d -> %d", fd0, fd1);
    if (IT_RSS_CHECKED)
        IT_ASSERT(rss1 - rss0 <= RSS_SLACK_KB, "RSS back to its start: %ld -> %ld kB", rss0, rss1);
    PQfinish(d);
}

int main(void) {
    it_init("it_fault_kill");
    double t_start = it_now();
    pg_port = it_own_pg_create("/tmp/sluice-fault-XXXXXX", "max_connections = 60\n",
                               "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n");
    PGconn *d = own();
    it_exec(d, "CREATE ROLE sl_scram LOGIN PASSWORD 'scram_pw'");
    it_exec(d, "CREATE ROLE sl_slow LOGIN PASSWORD 'slow_pw'");
    it_exec(d, "CREATE ROLE sl_aq LOGIN PASSWORD 'aq_pw'");
    it_exec(d, "ALTER ROLE postgres PASSWORD 'unused'");
    it_exec(d, "CREATE TABLE fault_t (x int)");
    it_exec(d, "GRANT ALL ON fault_t TO sl_scram");
    PQfinish(d);
    slow = it_delay_start(pg_port);
    it_delay_set(slow, SLOW_MS);
    char dbs[1024];
    snprintf(dbs, sizeof dbs,
             "fk = host=127.0.0.1 port=%d dbname=postgres pool_size=2\n"
             "fks = host=127.0.0.1 port=%d dbname=postgres pool_size=1 pool_mode=session\n"
             "fkslow = host=127.0.0.1 port=%d dbname=postgres user=sl_slow password=slow_pw "
             "pool_size=1\n"
             "fkchurn = host=127.0.0.1 port=%d dbname=postgres pool_size=12\n"
             "rep = host=127.0.0.1 port={PRIMARY} dbname=sluice_test replicas=127.0.0.1:{REPLICA1} "
             "routing=replica\n",
             pg_port, pg_port, it_delay_port(slow), pg_port);
    it_sluice_start(
        &sl,
        "pool_mode = transaction\nserver_login_retry = 0.2\n"
        "server_reset_query = SELECT pg_sleep(0.5) /*sluice_reset*/\n"
        "server_check_delay = 1\nserver_check_query = SELECT pg_sleep(0.3) /*sluice_check*/\n"
        "auth_user = postgres\nauth_cache_ttl = 0.3\nauth_query = SELECT usename, passwd FROM "
        "pg_shadow, "
        "pg_sleep(0.5) WHERE usename = $1 /*sluice_authq*/\nhealth_check_period = 0.2\n",
        dbs);
    for (int h = TERM; h <= KILL9; h++) {
        enum how how = (enum how)h;
        printf("-- %s (%.1f s)\n", how_name[how], it_now() - t_start);
        mid_query(how);
        in_transaction(how);
        idle_in_pool(how);
        mid_copy_in(how);
        during_login(how, true);
        /* kill -9 costs a crash restart of the server each (about 2 s):
         * the phases where it differs from a termination for sluice (no
         * FATAL, just EOF) above; the others with pg_terminate_backend. */
        if (how == KILL9 && !getenv("IT_FAULT_KILL9_ALL")) continue;
        mid_stream(how, true);
        mid_stream(how, false);
        during_reset(how);
        during_set_replay(how);
        during_check(how);
        during_login(how, false);
        during_auth_query(how);
    }
    printf("-- health (%.1f s)\n", it_now() - t_start);
    during_health();
    printf("-- churn (%.1f s)\n", it_now() - t_start);
    churn();
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
    it_own_pg_remove();
    return it_done();
}
