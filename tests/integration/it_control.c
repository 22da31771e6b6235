/* Operating sluice without dropping anyone:
 *  (a) rolling restart: 8 threads connect, run 3 queries and disconnect in
 *      a loop, and 4 long-lived transaction-pooled clients run
 *      BEGIN/SELECT/COMMIT, through sluice A (so_reuseport = 1). Sluice B
 *      starts on the same port (and takes over the Unix socket path), A
 *      gets SIGTERM, stops accepting, closes its long-lived clients between
 *      transactions after shutdown_grace_period and exits once they are
 *      gone. No connection is refused and no query fails; the long-lived
 *      clients, which check a connection before each transaction as client
 *      pools do, reconnect to B; B's Unix socket file survives A's exit.
 *  (b) PAUSE/RESUME (SIGUSR1/SIGUSR2) around a real `pg_ctl restart -m
 *      fast` of a throwaway PostgreSQL, through a pool of ONE server and 6
 *      clients querying in a loop: no query completes while paused, none
 *      fails, and afterwards they run on a new backend.
 *  (c) sd_notify: with NOTIFY_SOCKET set, sluice sends READY=1 once it
 *      listens, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1 on SIGTERM.
 *  (d) the console's controls: RECONNECT replaces idle servers at once and
 *      a busy one after its transaction, which WAIT_CLOSE waits for;
 *      PAUSE db returns only once the open transaction ended, a query sent
 *      meanwhile waits until RESUME; SUSPEND holds a query until RESUME;
 *      KILL closes the database's clients with 57P01 and holds new ones
 *      until RESUME; DISABLE refuses new clients of that database only
 *      while connected ones carry on, until ENABLE; an unknown database is
 *      an error.
 *  (e) shutdown modes: SIGINT closes an idle client at once and a busy one
 *      after its COMMIT, then exits; under SIGTERM a session-pooled client
 *      stays past shutdown_grace_period (its session state would be lost)
 *      and a second SIGTERM ends sluice at once. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static atomic_bool stop;
static atomic_long n_tx, n_connects, n_errors, n_moved;
static char first_error[512];
static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static char conninfo[512];

static void record_error(const char *what, PGconn *c) {
    atomic_fetch_add(&n_errors, 1);
    pthread_mutex_lock(&err_lock);
    if (!first_error[0])
        snprintf(first_error, sizeof first_error, "%s: %s", what, c ? PQerrorMessage(c) : "");
    pthread_mutex_unlock(&err_lock);
}

static bool query_ok(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return true;
    record_error(sql, c);
    return false;
}

/* Connects, runs three queries, disconnects, again. */
static void *short_lived(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        PGconn *c = PQconnectdb(conninfo);
        if (PQstatus(c) != CONNECTION_OK) {
            record_error("connect", c);
            PQfinish(c);
            continue;
        }
        atomic_fetch_add(&n_connects, 1);
        for (int i = 0; i < 3 && query_ok(c, "SELECT 1"); i++)
            atomic_fetch_add(&n_tx, 1);
        PQfinish(c);
    }
    return NULL;
}

/* A FATAL notice (57P01) a closing sluice sent with the last
 * ReadyForQuery: the connection is gone for the next transaction. */
static void notice_cb(void *arg, const PGresult *r) {
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && !strcmp(sev, "FATAL")) *(bool *)arg = true;
}

static PGconn *connect_watched(bool *closed) {
    *closed = false;
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        record_error("connect (long-lived)", c);
        return c;
    }
    PQsetNoticeReceiver(c, notice_cb, closed);
    return c;
}

/* A client pool's check before it hands out a connection: anything the
 * server sent meanwhile is read; a FATAL or EOF means reconnect. */
static bool still_usable(PGconn *c, const bool *closed) {
    if (PQstatus(c) != CONNECTION_OK || *closed) return false;
    if (!PQconsumeInput(c)) return false;
    (void)PQisBusy(c); /* parses what arrived: a FATAL shows as a notice */
    return PQstatus(c) == CONNECTION_OK && !*closed;
}

static void *long_lived(void *arg) {
    (void)arg;
    bool closed;
    PGconn *c = connect_watched(&closed);
    while (!atomic_load(&stop)) {
        if (!still_usable(c, &closed)) {
            PQfinish(c);
            atomic_fetch_add(&n_moved, 1);
            c = connect_watched(&closed);
            if (PQstatus(c) != CONNECTION_OK) continue;
        }
        if (query_ok(c, "BEGIN") && query_ok(c, "SELECT pg_backend_pid()") && query_ok(c, "COMMIT"))
            atomic_fetch_add(&n_tx, 1);
        usleep(5000);
    }
    PQfinish(c);
    return NULL;
}

/* Starts a second sluice with a's config (same port, same Unix socket
 * directory) and its own log. */
static void start_twin(const it_sluice_t *a, it_sluice_t *b) {
    memset(b, 0, sizeof *b);
    snprintf(b->dir, sizeof b->dir, "/tmp/sluice-it-XXXXXX");
    IT_ASSERT(mkdtemp(b->dir), "mkdtemp");
    snprintf(b->ini, sizeof b->ini, "%s/sluice.ini", b->dir);
    snprintf(b->log, sizeof b->log, "%s/sluice.log", b->dir);
    b->port = a->port;
    FILE *in = fopen(a->ini, "r"), *out = fopen(b->ini, "w");
    IT_ASSERT(in && out, "copy %s", a->ini);
    char line[1024];
    while (fgets(line, sizeof line, in)) {
        if (!strncmp(line, "logfile", 7))
            fprintf(out, "logfile = %s\n", b->log);
        else
            fputs(line, out);
    }
    fclose(in), fclose(out);
    const char *bin = getenv("SLUICE_BIN");
    b->pid = fork();
    if (b->pid == 0) {
        execl(bin, bin, b->ini, (char *)NULL);
        _exit(127);
    }
    IT_ASSERT(it_log_wait(b, "started pid", 1, 10) == 1,
              "the second sluice did not start on port %d (so_reuseport)", b->port);
}

/* Lets a closing listener hand the connections in its queue to another
 * listener of the port (Linux 5.14+), as the README's recipe says. */
static char migrate_old[8];
static void migrate_req(bool on) {
    const char *path = "/proc/sys/net/ipv4/tcp_migrate_req";
    FILE *f = fopen(path, "r+");
    if (!f) return;
    if (on && !fgets(migrate_old, sizeof migrate_old, f)) migrate_old[0] = 0;
    rewind(f);
    fputs(on ? "1\n" : migrate_old, f);
    fclose(f);
}

static pid_t twin_pid;
/* On failure: the second sluice goes, the sysctl goes back. */
static void undo_rolling(void) {
    if (twin_pid > 0) kill(twin_pid, SIGKILL);
    migrate_req(false);
}

static void rolling_restart(void) {
    it_sluice_t a, b;
    char opts[256];
    /* metrics_listen too: its port is shared like the pooler's. */
    snprintf(opts, sizeof opts,
             "pool_mode = transaction\nso_reuseport = 1\nshutdown_grace_period = 1\n"
             "max_client_conn = 200\nmetrics_listen = 127.0.0.1:%d\n",
             it_free_port());
    it_sluice_start(&a, opts, NULL);
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d dbname=sluice_test user=sl_scram password=scram_pw "
             "connect_timeout=10",
             a.port);
    migrate_req(true);
    it_on_fail(undo_rolling);
    pthread_t th[12];
    for (int i = 0; i < 12; i++)
        pthread_create(&th[i], NULL, i < 8 ? short_lived : long_lived, NULL);
    usleep(800000);
    start_twin(&a, &b);
    twin_pid = b.pid;
    usleep(500000);
    long tx_before = atomic_load(&n_tx);
    double t0 = it_now();
    int rc = it_sluice_stop(&a, SIGTERM);
    double took = it_now() - t0;
    usleep(500000);
    atomic_store(&stop, true);
    for (int i = 0; i < 12; i++)
        pthread_join(th[i], NULL);
    migrate_req(false);
    printf("rolling restart: %ld transactions, %ld connections, %ld long-lived clients moved, "
           "A exited %.1f s after SIGTERM\n",
           atomic_load(&n_tx), atomic_load(&n_connects), atomic_load(&n_moved), took);
    IT_ASSERT(atomic_load(&n_errors) == 0, "%ld failures through the restart; first: %s",
              atomic_load(&n_errors), first_error);
    IT_ASSERT(rc == 0, "A exits 0 once drained (got %d)", rc);
    IT_ASSERT(it_log_count(&a, "shutdown (wait for clients)") == 1, "A drained");
    IT_ASSERT(it_log_count(&a, "shutdown_grace_period passed") >= 4,
              "A closed its 4 long-lived clients between transactions");
    IT_ASSERT(atomic_load(&n_moved) >= 4, "the long-lived clients moved to B");
    IT_ASSERT(atomic_load(&n_tx) > tx_before, "traffic went on during the restart");
    IT_ASSERT(it_log_count(&b, "login ok") > 0, "B served clients");
    char path[400];
    snprintf(path, sizeof path, "%s/.s.PGSQL.%d", a.dir, a.port);
    struct stat st;
    IT_ASSERT(stat(path, &st) == 0, "A left B's Unix socket %s in place", path);
    PGconn *u = it_connect_db(&b, "sl_scram", "sluice_test", NULL);
    IT_ASSERT(PQstatus(u) == CONNECTION_OK, "B serves after A left: %s", PQerrorMessage(u));
    PQfinish(u);
    IT_ASSERT(it_sluice_stop(&b, SIGTERM) == 0, "B exits");
    twin_pid = 0;
}

/* ---- (b) PAUSE and RESUME around a PostgreSQL restart ---- */

static int pg_port;

/* Written by one thread, read by others: atomic (ThreadSanitizer). */
static _Atomic double last_done[6]; /* it_now() of each client's last completed query */
static _Atomic double paused_from, paused_until;
static atomic_long during_pause;

static void *pause_client(void *arg) {
    int idx = (int)(long)arg;
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) record_error("connect", c);
    while (!atomic_load(&stop) && PQstatus(c) == CONNECTION_OK) {
        if (!query_ok(c, "SELECT 1")) break;
        double now = it_now();
        last_done[idx] = now;
        double from = paused_from, until = paused_until;
        if (from > 0 && now > from && (until == 0 || now < until))
            atomic_fetch_add(&during_pause, 1);
        atomic_fetch_add(&n_tx, 1);
    }
    PQfinish(c);
    return NULL;
}

static void pause_restart(void) {
    pg_port = it_own_pg_create("/tmp/sluice-pause-XXXXXX", NULL, NULL); /* trust */
    char dbs[256];
    snprintf(dbs, sizeof dbs,
             "pdb = host=127.0.0.1 port=%d dbname=postgres user=postgres "
             "pool_size=1",
             pg_port);
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\nquery_wait_timeout = 60\n", dbs);
    snprintf(conninfo, sizeof conninfo,
             "host=127.0.0.1 port=%d dbname=pdb user=sl_scram password=scram_pw", s.port);
    PGconn *probe = PQconnectdb(conninfo);
    IT_ASSERT(PQstatus(probe) == CONNECTION_OK, "connect: %s", PQerrorMessage(probe));
    char pid_before[32];
    snprintf(pid_before, sizeof pid_before, "%s", it_value(probe, "SELECT pg_backend_pid()"));
    atomic_store(&stop, false);
    atomic_store(&n_errors, 0);
    atomic_store(&n_tx, 0);
    first_error[0] = 0;
    pthread_t th[6];
    for (long i = 0; i < 6; i++)
        pthread_create(&th[i], NULL, pause_client, (void *)i);
    usleep(300000);
    kill(s.pid, SIGUSR1);
    IT_ASSERT(it_log_wait(&s, "PAUSE done", 1, 20) == 1, "PAUSE completes");
    /* From here no server exists: a query that completes now did not wait.
     * The margin covers a query that completed just before and was
     * counted late by its thread. */
    paused_from = it_now() + 0.2;
    it_pg_ctl(it_own_pg_dir(), "pg", "restart -m fast");
    usleep(300000);
    long done_paused = atomic_load(&n_tx);
    paused_until = it_now();
    kill(s.pid, SIGUSR2);
    double t_resume = it_now();
    /* Every client completes a query after RESUME. */
    for (int i = 0; i < 6; i++)
        while (last_done[i] < t_resume && it_now() - t_resume < 20 && !atomic_load(&n_errors))
            usleep(10000);
    atomic_store(&stop, true);
    for (int i = 0; i < 6; i++)
        pthread_join(th[i], NULL);
    printf("pause: %ld queries; %ld completed while paused\n", atomic_load(&n_tx),
           atomic_load(&during_pause));
    IT_ASSERT(atomic_load(&n_errors) == 0, "%ld clients failed across the restart; first: %s",
              atomic_load(&n_errors), first_error);
    IT_ASSERT(atomic_load(&during_pause) == 0, "no query completes while paused");
    IT_ASSERT(atomic_load(&n_tx) > done_paused, "queries go on after RESUME");
    for (int i = 0; i < 6; i++)
        IT_ASSERT(last_done[i] >= t_resume, "client %d ran a query after RESUME", i);
    const char *pid_after = it_value(probe, "SELECT pg_backend_pid()");
    IT_ASSERT(strcmp(pid_before, pid_after) != 0, "a new backend after the restart (%s)",
              pid_after);
    PQfinish(probe);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    it_own_pg_remove();
}

/* ---- (c) sd_notify ---- */

/* Reads notification datagrams until one contains want, within secs. */
static bool notified(int fd, const char *want, double secs, char *seen, size_t cap) {
    double end = it_now() + secs;
    while (it_now() < end) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        char buf[512];
        ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        if (n <= 0) continue;
        buf[n] = 0;
        size_t len = strlen(seen);
        snprintf(seen + len, cap - len, "[%s] ", buf);
        if (strstr(buf, want)) return true;
    }
    return false;
}

static void sd_notify_protocol(void) {
    char path[108];
    snprintf(path, sizeof path, "/tmp/sluice-notify-%d", (int)getpid());
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    IT_ASSERT(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0, "bind %s", path);
    setenv("NOTIFY_SOCKET", path, 1);
    it_sluice_t s;
    it_sluice_start(&s, NULL, NULL);
    unsetenv("NOTIFY_SOCKET");
    char seen[2048] = "";
    IT_ASSERT(notified(fd, "READY=1", 5, seen, sizeof seen), "READY=1 once listening: %s", seen);
    IT_ASSERT(strstr(seen, "MAINPID="), "MAINPID sent: %s", seen);
    seen[0] = 0;
    kill(s.pid, SIGHUP);
    IT_ASSERT(notified(fd, "RELOADING=1", 5, seen, sizeof seen), "RELOADING=1: %s", seen);
    IT_ASSERT(strstr(seen, "MONOTONIC_USEC="), "MONOTONIC_USEC with RELOADING: %s", seen);
    IT_ASSERT(notified(fd, "READY=1", 5, seen, sizeof seen), "READY=1 after reload: %s", seen);
    seen[0] = 0;
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    kill(s.pid, SIGTERM);
    IT_ASSERT(notified(fd, "STOPPING=1", 5, seen, sizeof seen), "STOPPING=1: %s", seen);
    IT_ASSERT(
        notified(fd, "STATUS=shutting down: 1 client(s) still connected", 5, seen, sizeof seen),
        "STATUS while a client stays: %s", seen);
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, 0) == 0, "exit once the client left");
    close(fd);
    unlink(path);
}

/* ---- (d) console controls ---- */

static PGconn *admin_conn(const it_sluice_t *s) {
    PGconn *a = it_connect_db(s, "sl_scram", "pgbouncer", NULL);
    IT_ASSERT(PQstatus(a) == CONNECTION_OK, "console: %s", PQerrorMessage(a));
    return a;
}

/* Runs a console command and expects its CommandComplete tag. */
static void admin_ok(PGconn *a, const char *cmd) {
    PGresult *r = PQexec(a, cmd);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "%s: %s", cmd, PQerrorMessage(a));
    PQclear(r);
}

/* True while c's query sent with PQsendQuery has not been answered
 * within secs. */
static bool still_busy(PGconn *c, double secs) {
    double end = it_now() + secs;
    while (it_now() < end) {
        IT_ASSERT(PQconsumeInput(c), "consume: %s", PQerrorMessage(c));
        if (!PQisBusy(c)) return false;
        usleep(10000);
    }
    return true;
}

/* Waits (up to 10 s) for the answer to c's sent query and expects success. */
static void answered_ok(PGconn *c, const char *what) {
    IT_ASSERT(!still_busy(c, 10), "%s: no answer within 10 s", what);
    PGresult *r;
    bool ok = true;
    while ((r = PQgetResult(c))) {
        ExecStatusType st = PQresultStatus(r);
        ok = ok && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
        PQclear(r);
    }
    IT_ASSERT(ok, "%s: %s", what, PQerrorMessage(c));
}

/* The value of column col in the row of SHOW what whose first column is key. */
static const char *show_value(PGconn *a, const char *what, const char *key, const char *col) {
    static char buf[64];
    char sql[64];
    snprintf(sql, sizeof sql, "SHOW %s", what);
    PGresult *r = PQexec(a, sql);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(a));
    int c = PQfnumber(r, col);
    IT_ASSERT(c >= 0, "%s has no column %s", sql, col);
    buf[0] = 0;
    for (int i = 0; i < PQntuples(r); i++)
        if (!strcmp(PQgetvalue(r, i, 0), key)) snprintf(buf, sizeof buf, "%s", PQgetvalue(r, i, c));
    PQclear(r);
    return buf;
}

static int backend_gone(PGconn *direct, const char *pid) {
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", pid);
    for (int i = 0; i < 100; i++) {
        if (!strcmp(it_value(direct, sql), "0")) return 1;
        usleep(50000);
    }
    return 0;
}

static void console_controls(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\nadmin_users = sl_scram\n", NULL);
    PGconn *a = admin_conn(&s), *direct = it_direct();
    PGconn *c1 = it_connect(&s, "sl_scram", NULL), *c2 = it_connect(&s, "sl_scram", NULL);
    char pid1[32], pid2[32];
    /* c2 holds one server in a transaction, c1 then uses (and releases) another. */
    it_exec(c2, "BEGIN");
    snprintf(pid2, sizeof pid2, "%s", it_value(c2, "SELECT pg_backend_pid()"));
    snprintf(pid1, sizeof pid1, "%s", it_value(c1, "SELECT pg_backend_pid()"));
    IT_ASSERT(strcmp(pid1, pid2) != 0, "two servers");

    /* RECONNECT: the idle server goes now, the busy one after its
     * transaction; nobody sees an error. */
    admin_ok(a, "RECONNECT sluice_test");
    IT_ASSERT(strcmp(it_value(c1, "SELECT pg_backend_pid()"), pid1) != 0,
              "a new server after RECONNECT");
    IT_ASSERT(backend_gone(direct, pid1), "the idle server was closed");
    IT_ASSERT(!strcmp(it_value(c2, "SELECT pg_backend_pid()"), pid2),
              "the open transaction keeps its server");
    IT_ASSERT(PQsendQuery(a, "WAIT_CLOSE sluice_test"), "send");
    IT_ASSERT(still_busy(a, 0.3), "WAIT_CLOSE waits for the server in a transaction");
    it_exec(c2, "COMMIT");
    answered_ok(a, "WAIT_CLOSE");
    IT_ASSERT(backend_gone(direct, pid2), "the server closed after its transaction");
    IT_ASSERT(strcmp(it_value(c2, "SELECT pg_backend_pid()"), pid2) != 0, "c2 on a new server");

    /* PAUSE returns once the transaction ends; a query waits until RESUME. */
    it_exec(c2, "BEGIN");
    it_exec(c2, "SELECT 1");
    IT_ASSERT(PQsendQuery(a, "PAUSE sluice_test"), "send");
    IT_ASSERT(still_busy(a, 0.3), "PAUSE waits for the open transaction");
    it_exec(c2, "COMMIT");
    answered_ok(a, "PAUSE");
    IT_ASSERT(PQsendQuery(c1, "SELECT 1"), "send");
    IT_ASSERT(still_busy(c1, 0.3), "a query waits while paused");
    IT_ASSERT(!strcmp(show_value(a, "DATABASES", "sluice_test", "paused"), "1"),
              "SHOW DATABASES says paused");
    PGconn *other = it_connect_db(&s, "sl_scram", "postgres", NULL);
    IT_ASSERT(!strcmp(it_value(other, "SELECT 'other'"), "other"), "other databases go on");
    PQfinish(other);
    admin_ok(a, "RESUME sluice_test");
    answered_ok(c1, "query after RESUME");

    /* SUSPEND: nothing is read until RESUME; the console still is. */
    admin_ok(a, "SUSPEND");
    IT_ASSERT(PQsendQuery(c1, "SELECT 1"), "send");
    IT_ASSERT(still_busy(c1, 0.3), "a query waits while suspended");
    IT_ASSERT(!strcmp(show_value(a, "STATE", "suspended", "value"), "yes"),
              "SHOW STATE says suspended");
    IT_ASSERT(!strcmp(show_value(a, "STATE", "active", "value"), "no"),
              "and not active, as PgBouncer says");
    admin_ok(a, "RESUME");
    answered_ok(c1, "query after SUSPEND/RESUME");

    /* DISABLE: new clients of the database are refused, others are not. */
    admin_ok(a, "DISABLE sluice_test");
    PGconn *late = it_connect_db(&s, "sl_scram", "sluice_test", NULL);
    IT_ASSERT(PQstatus(late) == CONNECTION_BAD && strstr(PQerrorMessage(late), "is disabled"),
              "DISABLE refuses new clients: %s", PQerrorMessage(late));
    PQfinish(late);
    IT_ASSERT(!strcmp(it_value(c1, "SELECT 'on'"), "on"), "connected clients carry on");
    IT_ASSERT(!strcmp(show_value(a, "DATABASES", "sluice_test", "disabled"), "1"),
              "SHOW DATABASES says disabled");
    late = it_connect_db(&s, "sl_scram", "postgres", NULL);
    IT_ASSERT(PQstatus(late) == CONNECTION_OK, "another database: %s", PQerrorMessage(late));
    PQfinish(late);
    admin_ok(a, "ENABLE sluice_test");
    late = it_connect(&s, "sl_scram", NULL);
    PQfinish(late);

    /* KILL: the database's clients are closed with 57P01, even inside a
     * transaction; new ones wait until RESUME. */
    it_exec(c2, "BEGIN");
    admin_ok(a, "KILL sluice_test");
    PGresult *r = PQexec(c2, "SELECT 1");
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR && strstr(PQerrorMessage(c2), "KILL"),
              "KILL closes the client: %s", PQerrorMessage(c2));
    PQclear(r);
    IT_ASSERT(PQstatus(c1) == CONNECTION_OK, "libpq notices the close on use");
    r = PQexec(c1, "SELECT 1");
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR, "the idle client was closed too");
    PQclear(r);
    IT_ASSERT(it_log_count(&s, "killed by an administrator (KILL)") >= 2, "both logged");
    PQfinish(c1);
    c1 = it_connect(&s, "sl_scram", NULL);
    IT_ASSERT(PQsendQuery(c1, "SELECT 1"), "send");
    IT_ASSERT(still_busy(c1, 0.3), "a killed database waits for RESUME");
    admin_ok(a, "RESUME");
    answered_ok(c1, "query after KILL/RESUME");

    /* Errors. */
    r = PQexec(a, "PAUSE nosuchdb");
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR &&
                  strstr(PQerrorMessage(a), "no such database: nosuchdb"),
              "PAUSE of an unknown database: %s", PQerrorMessage(a));
    PQclear(r);
    r = PQexec(a, "DISABLE");
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR && strstr(PQerrorMessage(a), "needs a "),
              "DISABLE without a name: %s", PQerrorMessage(a));
    PQclear(r);

    /* A PAUSE still waiting for a transaction ends when a RESUME comes
     * first (with an error saying so), and one whose console leaves is
     * dropped: neither stays held or checked for good. */
    PGconn *b = admin_conn(&s);
    PQfinish(c2); /* KILL closed it */
    c2 = it_connect(&s, "sl_scram", NULL);
    it_exec(c2, "BEGIN");
    it_exec(c2, "SELECT 1");
    IT_ASSERT(PQsendQuery(a, "PAUSE sluice_test"), "send");
    IT_ASSERT(still_busy(a, 0.3), "PAUSE waits for the open transaction");
    admin_ok(b, "RESUME sluice_test");
    IT_ASSERT(!still_busy(a, 5), "the PAUSE is answered after RESUME");
    r = PQgetResult(a);
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR && strstr(PQerrorMessage(a), "canceled"),
              "PAUSE canceled by RESUME: %s", PQerrorMessage(a));
    PQclear(r);
    while ((r = PQgetResult(a)))
        PQclear(r);
    IT_ASSERT(strstr(it_value(a, "SHOW VERSION"), "sluice"), "the console goes on");
    IT_ASSERT(PQsendQuery(b, "PAUSE sluice_test"), "send");
    IT_ASSERT(still_busy(b, 0.3), "PAUSE waits again");
    PQfinish(b);
    IT_ASSERT(it_log_wait(&s, "PAUSE dropped", 1, 5) == 1,
              "the PAUSE of a console that left is dropped");
    admin_ok(a, "RESUME sluice_test");
    it_exec(c2, "COMMIT");
    PQfinish(c1), PQfinish(c2), PQfinish(a), PQfinish(direct);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* A query that waits through a PAUSE longer than query_wait_timeout gets an
 * error that names the pause, not the pool size. */
static void pause_wait_timeout(void) {
    it_sluice_t s;
    it_sluice_start(
        &s, "pool_mode = transaction\nquery_wait_timeout = 0.5\nadmin_users = sl_scram\n", NULL);
    PGconn *a = admin_conn(&s), *c = it_connect(&s, "sl_scram", NULL);
    admin_ok(a, "PAUSE");
    it_fails_with(c, "SELECT 1", "the database is paused (PAUSE)");
    admin_ok(a, "RESUME");
    PQfinish(c), PQfinish(a);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* ---- (e) shutdown modes ---- */

/* The status code of GET path on 127.0.0.1:port, or -1. */
static int http_status(int port, const char *path) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    char req[128], resp[256] = "";
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\n\r\n", path);
    int code = -1;
    if (write(fd, req, (size_t)n) == n && read(fd, resp, sizeof resp - 1) > 12)
        code = atoi(resp + 9);
    close(fd);
    return code;
}

static void shutdown_modes(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\n", NULL);
    PGconn *busy = it_connect(&s, "sl_scram", NULL), *idle = it_connect(&s, "sl_scram", NULL);
    it_exec(busy, "BEGIN");
    it_exec(busy, "SELECT 1");
    kill(s.pid, SIGINT);
    IT_ASSERT(it_log_wait(&s, "shutdown (wait for servers)", 1, 5) == 1, "SIGINT logged");
    IT_ASSERT(!strcmp(it_value(busy, "SELECT 'still'"), "still"), "the transaction goes on");
    /* The FATAL follows COMMIT's ReadyForQuery: libpq shows it as a notice
     * then, and the next query finds the connection closed. */
    bool closed = false;
    PQsetNoticeReceiver(busy, notice_cb, &closed);
    it_exec(busy, "COMMIT");
    IT_ASSERT(closed, "the busy client is told after its COMMIT");
    PGresult *r = PQexec(busy, "SELECT 1");
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR, "the busy client was closed");
    PQclear(r);
    it_fails_with(idle, "SELECT 1", "shutting down");
    IT_ASSERT(it_log_count(&s, "sluice is shutting down; reconnect later") == 2, "both closed");
    PQfinish(busy), PQfinish(idle);
    IT_ASSERT(it_sluice_stop(&s, 0) == 0, "SIGINT: exit 0 once the clients are gone");

    int mport = it_free_port();
    char opts[160];
    snprintf(opts, sizeof opts,
             "pool_mode = session\nshutdown_grace_period = 0.2\nmetrics_listen = 127.0.0.1:%d\n",
             mport);
    it_sluice_start(&s, opts, NULL);
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    IT_ASSERT(http_status(mport, "/ready") == 200, "/ready before the shutdown");
    kill(s.pid, SIGTERM);
    IT_ASSERT(it_log_wait(&s, "shutdown (wait for clients)", 1, 5) == 1, "SIGTERM logged");
    IT_ASSERT(http_status(mport, "/ready") == 503, "/ready says 503 while draining");
    usleep(700000);             /* past the grace period and a janitor tick */
    for (int i = 0; i < 2; i++) /* the second: not closed after the first either */
        IT_ASSERT(!strcmp(it_value(c, "SELECT 'kept'"), "kept"), "a session client stays");
    double t0 = it_now();
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "second SIGTERM: exit 0");
    IT_ASSERT(it_now() - t0 < 10, "a second SIGTERM is immediate");
    it_fails_with(c, "SELECT 1", "shutting down");
    PQfinish(c);
}

int main(void) {
    it_init("it_control");
    console_controls();
    pause_wait_timeout();
    shutdown_modes();
    sd_notify_protocol();
    rolling_restart();
    pause_restart();
    return it_done();
}
