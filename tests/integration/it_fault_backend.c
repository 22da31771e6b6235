/* Fault matrix, a misbehaving backend: fake_pg.py on loopback behind one
 * database per fault (the database name picks it), and sluice_test beside
 * them on the real primary. At login: a reset, garbage, a stall
 * (server_connect_timeout must fire), an ErrorResponse without SQLSTATE, a
 * ParameterStatus without its NULs. During a query: a reset, garbage, a
 * stall mid-message (query_timeout must fire), an ErrorResponse without
 * SQLSTATE, a ParameterStatus without NULs, and a DataRow cut off by the
 * close (the client must see the close, never an error glued to half a
 * row). Each time the client gets an error and sluice logs why; a client
 * looping on sluice_test meanwhile gets none. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static it_sluice_t sl;
static pid_t fake_pid;

static void fake_stop(void) {
    if (fake_pid > 0) kill(fake_pid, SIGKILL), waitpid(fake_pid, NULL, 0);
    fake_pid = 0;
}

/* Starts fake_pg.py; returns the port it printed. */
static int fake_start(void) {
    int p[2];
    IT_ASSERT(pipe(p) == 0, "pipe");
    fake_pid = fork();
    if (fake_pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        execl("/usr/bin/python3", "python3", FAKE_PG, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    it_on_fail(fake_stop);
    char line[32] = "";
    FILE *f = fdopen(p[0], "r");
    IT_ASSERT(f && fgets(line, sizeof line, f), "fake_pg.py printed its port");
    fclose(f);
    return atoi(line);
}

/* ---- the bystander on the real primary ---- */

static atomic_bool stop;
static atomic_long by_queries, by_errors;
static char by_error[256];

static void *bystander(void *arg) {
    (void)arg;
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    while (!atomic_load(&stop)) {
        PGresult *r = PQexec(c, "SELECT 'bystander'");
        if (PQresultStatus(r) != PGRES_TUPLES_OK && atomic_fetch_add(&by_errors, 1) == 0)
            snprintf(by_error, sizeof by_error, "%s", PQerrorMessage(c));
        PQclear(r);
        atomic_fetch_add(&by_queries, 1);
        usleep(5000);
    }
    PQfinish(c);
    return NULL;
}

/* ---- the faults ---- */

/* Login and `SELECT 'fault'` on db: some error must come (at login or at
 * the query), within secs; returns its text. */
static const char *fault_error(const char *db, double secs, char *code, size_t cap) {
    static char text[512];
    double t0 = it_now();
    PGconn *c = it_connect_db(&sl, "sl_scram", db, "connect_timeout=20");
    snprintf(code, cap, "none");
    if (PQstatus(c) == CONNECTION_OK) {
        /* The first result holds the error's fields (PQexec's last may be
         * libpq's own about the close that follows a FATAL). */
        IT_ASSERT(PQsendQuery(c, "SELECT 'fault'"), "%s: send", db);
        PGresult *r = PQgetResult(c);
        IT_ASSERT(PQresultStatus(r) != PGRES_TUPLES_OK, "%s: the query got an error", db);
        const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (s) snprintf(code, cap, "%s", s);
        PQclear(r);
        while ((r = PQgetResult(c)))
            PQclear(r);
    }
    snprintf(text, sizeof text, "%s", PQerrorMessage(c));
    text[strcspn(text, "\n")] = '\0';
    PQfinish(c);
    double took = it_now() - t0;
    printf("%-15s %.2f s  %s: %s\n", db, took, code, text);
    IT_ASSERT(*text, "%s: the client is told why", db);
    IT_ASSERT(took < secs, "%s: the error came after %.1f s (bound %.0f s)", db, took, secs);
    return text;
}

static void expect(const char *db, double secs, const char *want_code, const char *needle) {
    char code[8];
    const char *text = fault_error(db, secs, code, sizeof code);
    if (want_code)
        IT_ASSERT(!strcmp(code, want_code), "%s: SQLSTATE %s, got %s (%s)", db, want_code, code,
                  text);
    if (needle) IT_ASSERT(strstr(text, needle), "%s: the error says '%s': %s", db, needle, text);
    /* sluice is up and sluice_test unharmed */
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 'up'"), "up"), "%s: sluice is up", db);
    PQfinish(c);
}

/* A DataRow cut off by the backend's close reaches a raw client as
 * RowDescription, then (part of the row and) the close: never an
 * ErrorResponse glued to half a row, which the client would read as the
 * rest of that row and then lose sync. */
static void cut_row(void) {
    int fd = it_raw_login(&sl, "sl_scram", "q_cut");
    it_wire_t w = {0};
    it_wire_query(&w, "SELECT 'fault'");
    const char *types = it_wire_exchange(fd, &w, 5, NULL, 0);
    printf("%-15s reply %s\n", "q_cut", types);
    IT_ASSERT(!strcmp(types, "T-"), "q_cut: RowDescription, then the close (got %s)", types);
    close(fd);
}

/* A pooled server whose backend says FATAL while idle, and keeps its
 * socket open (mute) a while: the next client must get another server, not
 * that one. */
static void idle_fatal(void) {
    PGconn *a = it_connect_db(&sl, "sl_scram", "q_idle_fatal", NULL);
    IT_ASSERT(PQstatus(a) == CONNECTION_OK, "q_idle_fatal: connect: %s", PQerrorMessage(a));
    it_exec(a, "SELECT 'fault'");
    PQfinish(a); /* its server is reset, then idle: then the FATAL comes */
    IT_ASSERT(it_log_wait(&sl, "backend sent an error while idle", 1, 5) >= 1,
              "q_idle_fatal: sluice saw the FATAL");
    double t0 = it_now();
    PGconn *b = it_connect_db(&sl, "sl_scram", "q_idle_fatal", NULL);
    IT_ASSERT(PQstatus(b) == CONNECTION_OK, "q_idle_fatal: connect: %s", PQerrorMessage(b));
    PGresult *r = PQexec(b, "SELECT 'next'");
    printf("%-15s next client %s in %.2f s\n", "q_idle_fatal",
           PQresultStatus(r) == PGRES_TUPLES_OK ? "served" : PQerrorMessage(b), it_now() - t0);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK,
              "q_idle_fatal: the next client gets another server: %s", PQerrorMessage(b));
    PQclear(r);
    PQfinish(b);
}

int main(void) {
    it_init("it_fault_backend");
    int port = fake_start();
    char dbs[4096] = "";
    const char *names[] = {"login_reset",    "login_garbage", "login_stall", "login_nocode",
                           "login_ps_nonul", "q_reset",       "q_garbage",   "q_stall",
                           "q_nocode",       "q_ps_nonul",    "q_cut",       "q_idle_fatal"};
    size_t o = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        o += (size_t)snprintf(dbs + o, sizeof dbs - o,
                              "%s = host=127.0.0.1 port=%d dbname=%s user=fake sslmode=disable "
                              "pool_mode=session\n",
                              names[i], port, names[i]);
    /* With a password in the entry sluice logs in itself, not through
     * libpq: the login faults once more that way. */
    for (size_t i = 0; i < 5; i++)
        o += (size_t)snprintf(dbs + o, sizeof dbs - o,
                              "own_%s = host=127.0.0.1 port=%d dbname=%s user=fake password=pw "
                              "sslmode=disable pool_mode=session\n",
                              names[i], port, names[i]);
    it_sluice_start(&sl,
                    "auth_type = trust\nserver_connect_timeout = 2\nquery_timeout = 2\n"
                    "server_login_retry = 1\nquery_wait_timeout = 10\n",
                    dbs);
    pthread_t t;
    pthread_create(&t, NULL, bystander, NULL);
    while (atomic_load(&by_queries) < 3)
        usleep(5000);

    expect("login_reset", 12, NULL, "server login failed");
    expect("login_garbage", 12, NULL, "server login failed");
    expect("login_stall", 12, NULL, "server_connect_timeout");
    expect("login_nocode", 12, NULL, "without SQLSTATE");
    expect("login_ps_nonul", 12, NULL, NULL);
    expect("own_login_reset", 12, NULL, "server login failed");
    expect("own_login_garbage", 1.5, NULL, "malformed message during login");
    expect("own_login_stall", 12, NULL, "server_connect_timeout");
    expect("own_login_nocode", 12, NULL, "without SQLSTATE");
    expect("own_login_ps_nonul", 12, NULL, "malformed ParameterStatus");
    expect("q_reset", 5, "08006", NULL);
    expect("q_garbage", 5, "08P01", NULL);
    IT_ASSERT(it_log_count(&sl, "backend sent a malformed message (type") == 1,
              "q_garbage: logged");
    /* Stalled in the middle of a message: the client sees the close (an
     * error cannot follow half a message), sluice says why. */
    expect("q_stall", 6, NULL, "closed the connection");
    IT_ASSERT(it_log_count(&sl, "query_timeout") >= 1, "q_stall: sluice logs query_timeout");
    expect("q_nocode", 5, NULL, "without SQLSTATE");
    IT_ASSERT(it_log_count(&sl, "ErrorResponse without SQLSTATE: it will not be reused") == 1,
              "q_nocode: sluice logs it and does not reuse that server");
    expect("q_ps_nonul", 5, "08P01", NULL);
    IT_ASSERT(it_log_count(&sl, "malformed ParameterStatus (") == 1, "q_ps_nonul: sluice logs it");
    cut_row();
    idle_fatal();

    atomic_store(&stop, true);
    pthread_join(t, NULL);
    IT_ASSERT(atomic_load(&by_errors) == 0, "the client on sluice_test got %ld errors: %s",
              atomic_load(&by_errors), by_error);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
    fake_stop();
    return it_done();
}
