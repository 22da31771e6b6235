/* Limits and lifecycle: query_wait_timeout, max_client_conn, statement mode,
 * a backend that refuses sluice's login, idle_transaction_timeout, SIGTERM
 * (graceful) and SIGQUIT (immediate). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static void wait_timeout(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 1\n",
                    NULL);
    PGconn *a = it_connect(&s, "sl_scram", NULL);
    PGconn *b = it_connect(&s, "sl_scram", NULL);
    it_exec(a, "BEGIN"); /* holds the only server */
    double t0 = it_now();
    it_fails_with(b, "SELECT 1", "query_wait_timeout");
    double took = it_now() - t0;
    IT_ASSERT(took >= 0.9 && took < 3.0, "timed out after %.2f s", took);
    it_exec(a, "COMMIT");
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 3"), "3"), "pool usable after the timeout");
    PQfinish(a), PQfinish(b), PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void client_limit(void) {
    it_sluice_t s;
    it_sluice_start(&s, "max_client_conn = 2\n", NULL);
    PGconn *a = it_connect(&s, "sl_scram", NULL);
    PGconn *b = it_connect(&s, "sl_scram", NULL);
    PGconn *c = it_connect_db(&s, "sl_scram", "sluice_test", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD &&
                  strstr(PQerrorMessage(c), "no more connections allowed (max_client_conn)"),
              "third client refused: %s", PQerrorMessage(c));
    PQfinish(c);
    PQfinish(b);
    usleep(100000);
    c = it_connect(&s, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 1"), "1"), "a slot frees up");
    PQfinish(a), PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static char notice_text[1024];
static void keep_notice(void *arg, const char *msg) {
    (void)arg;
    snprintf(notice_text, sizeof notice_text, "%s", msg);
}

static void statement_mode(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = statement\n", NULL);
    PGconn *a = it_connect(&s, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(a, "SELECT 5"), "5"), "single statements work");
    PQsetNoticeProcessor(a, keep_notice, NULL);
    PQclear(PQexec(a, "BEGIN"));
    PGresult *r = PQexec(a, "SELECT 1");
    /* The FATAL follows BEGIN's reply: libpq shows it as a notice or error. */
    IT_ASSERT(PQresultStatus(r) != PGRES_TUPLES_OK &&
                  (strstr(PQerrorMessage(a), "statement pooling mode") ||
                   strstr(notice_text, "statement pooling mode")),
              "transaction refused with a clear message: %s / %s", PQerrorMessage(a), notice_text);
    PQclear(r);
    PQfinish(a);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void backend_login_fails(void) {
    it_sluice_t s;
    it_sluice_start(&s, "query_wait_timeout = 30\n",
                    "badpw = host=127.0.0.1 port={PRIMARY} dbname=sluice_test password=wrong");
    double t0 = it_now();
    PGconn *c = it_connect_db(&s, "sl_scram", "badpw", NULL);
    double took = it_now() - t0;
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD && strstr(PQerrorMessage(c), "server login failed"),
              "clear error: %s", PQerrorMessage(c));
    IT_ASSERT(took < 5, "no hang (%.1f s)", took);
    PQfinish(c);
    IT_ASSERT(it_log_count(&s, "backend connection failed") == 1, "logged");
    /* Within server_login_retry (15 s) the next client gets the same error at
     * once, without another login attempt at the backend. */
    t0 = it_now();
    c = it_connect_db(&s, "sl_scram", "badpw", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD && strstr(PQerrorMessage(c), "server login failed"),
              "same error during server_login_retry: %s", PQerrorMessage(c));
    IT_ASSERT(it_now() - t0 < 1, "answered at once");
    PQfinish(c);
    IT_ASSERT(it_log_count(&s, "backend connection failed") == 1, "no second backend login");
    IT_ASSERT(it_log_count(&s, "password=wrong") == 0, "no password in the log");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void idle_in_transaction(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\nidle_transaction_timeout = 0.5\n", NULL);
    PGconn *a = it_connect(&s, "sl_scram", NULL);
    it_exec(a, "BEGIN");
    usleep(1200000);
    it_fails_with(a, "SELECT 1", "idle_transaction_timeout");
    PQfinish(a);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* Whether no backend runs query (text) within 3 s. */
static bool sleeps_end(PGconn *d, const char *query) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE query = '%s' AND state = 'active'",
             query);
    for (double deadline = it_now() + 3; it_now() < deadline; usleep(50000))
        if (!strcmp(it_value(d, sql), "0")) return true;
    return false;
}

static void client_timeouts(void) {
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = transaction\nquery_timeout = 0.5\nclient_idle_timeout = 0.6\n"
                    "client_login_timeout = 0.5\n",
                    NULL);
    /* A query running past query_timeout: 57014 and the client is closed. */
    PGconn *a = it_connect(&s, "sl_scram", NULL);
    double t0 = it_now();
    PGresult *r = PQexec(a, "SELECT pg_sleep(10)");
    double took = it_now() - t0;
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR && strstr(PQerrorMessage(a), "query_timeout"),
              "query_timeout: %s", PQerrorMessage(a));
    IT_ASSERT(took < 3, "query_timeout after %.2f s", took);
    PQclear(r);
    PQfinish(a);
    /* Its backend stops too: sluice cancels the query before it closes
     * the server (PostgreSQL would not notice the close until the sleep
     * ended, and the next test would find it still running). */
    PGconn *d = it_direct();
    IT_ASSERT(sleeps_end(d, "SELECT pg_sleep(10)"),
              "the backend of a query past query_timeout was cancelled");
    /* So does the backend of a client that vanishes mid-query (its socket
     * shut, no Terminate). */
    PGconn *g = it_connect(&s, "sl_scram", NULL);
    IT_ASSERT(PQsendQuery(g, "SELECT pg_sleep(9)"), "send");
    usleep(200000);
    shutdown(PQsocket(g), SHUT_RDWR);
    PQfinish(g);
    IT_ASSERT(sleeps_end(d, "SELECT pg_sleep(9)"),
              "the backend of a client gone mid-query was cancelled");
    PQfinish(d);
    /* An idle client is closed after client_idle_timeout. */
    PGconn *b = it_connect(&s, "sl_scram", NULL);
    usleep(1300000);
    r = PQexec(b, "SELECT 1");
    IT_ASSERT(PQresultStatus(r) != PGRES_TUPLES_OK, "idle client was closed");
    PQclear(r);
    PQfinish(b);
    IT_ASSERT(it_log_count(&s, "client_idle_timeout") >= 1, "idle close logged");
    /* A client that never finishes its login is closed with an error. */
    int fd = it_raw_connect(&s);
    char body[256];
    t0 = it_now();
    int t = it_raw_read_msg(fd, body, sizeof body);
    IT_ASSERT(t == 'E' && it_now() - t0 < 3, "client_login_timeout error (%d)", t);
    close(fd);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void graceful_and_fast(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\n", NULL);
    PGconn *busy = it_connect(&s, "sl_scram", NULL);
    PGconn *idle = it_connect(&s, "sl_scram", NULL);
    it_exec(busy, "BEGIN");
    it_exec(busy, "SELECT 1");
    kill(s.pid, SIGTERM);
    usleep(300000);
    /* New clients are refused, the open transaction can finish. */
    PGconn *late = it_connect_db(&s, "sl_scram", "sluice_test", NULL);
    IT_ASSERT(PQstatus(late) == CONNECTION_BAD, "no new clients during shutdown");
    PQfinish(late);
    IT_ASSERT(!strcmp(it_value(busy, "SELECT 'in tx'"), "in tx"), "transaction goes on");
    PGresult *r = PQexec(busy, "COMMIT");
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "commit during shutdown: %s",
              PQerrorMessage(busy));
    PQclear(r);
    PQfinish(busy), PQfinish(idle);
    int rc = it_sluice_stop(&s, SIGTERM);
    IT_ASSERT(rc == 0, "graceful exit 0 (got %d)", rc);

    it_sluice_start(&s, "pool_mode = session\n", NULL);
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    it_exec(c, "BEGIN");
    double t0 = it_now();
    IT_ASSERT(it_sluice_stop(&s, SIGQUIT) == 0, "immediate exit 0");
    IT_ASSERT(it_now() - t0 < 2, "SIGQUIT is immediate (as PgBouncer 1.23+)");
    PQfinish(c);
}

int main(void) {
    it_init("it_limits");
    wait_timeout();
    client_limit();
    statement_mode();
    backend_login_fails();
    idle_in_transaction();
    client_timeouts();
    graceful_and_fast();
    return it_done();
}
