/* Failures: cancel, a backend killed mid-query, a client gone inside a
 * transaction, garbage and oversized packets. The proxy stays up and the next
 * client works every time. */
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "delay.h"
#include "harness.h"

static it_sluice_t sl;

static void send_cancel(PGconn *c) {
    PGcancel *pc = PQgetCancel(c);
    char err[256];
    IT_ASSERT(PQcancel(pc, err, sizeof err), "cancel sent: %s", err);
    PQfreeCancel(pc);
}

/* The next result of c is a cancel's 57014 (what: for the message), within
 * limit seconds of t0; the rest of its results are drained. */
static void expect_cancelled(PGconn *c, const char *what, double t0, double limit) {
    PGresult *r = PQgetResult(c);
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    IT_ASSERT(code && !strcmp(code, "57014"), "%s, got %s", what,
              code                                   ? code
              : PQresultStatus(r) == PGRES_TUPLES_OK ? "a result"
                                                     : "none");
    IT_ASSERT(it_now() - t0 < limit, "%s promptly (%.1f s)", what, it_now() - t0);
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
}

static void cancel_sleep(void) {
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    char pid[32];
    snprintf(pid, sizeof pid, "%s", it_value(c, "SELECT pg_backend_pid()::text"));
    IT_ASSERT(PQsendQuery(c, "SELECT pg_sleep(30)"), "send");
    usleep(300000);
    double t0 = it_now();
    send_cancel(c);
    PGresult *r = PQgetResult(c);
    double took = it_now() - t0;
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    IT_ASSERT(code && !strcmp(code, "57014"), "cancelled with 57014, got %s", code ? code : "none");
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    printf("cancel took %.3f s\n", took);
    IT_ASSERT(took < 2.0, "cancel took %.2f s", took);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 'alive'"), "alive"), "usable after cancel");
    /* The cancelled server was closed, not pooled: PostgreSQL signals a
     * backend twice for one cancel, and the late signal would otherwise
     * cancel whatever query that server runs next, maybe another client's. */
    IT_ASSERT(strcmp(it_value(c, "SELECT pg_backend_pid()::text"), pid) != 0,
              "the cancelled backend (%s) is not used again", pid);

    /* A cancel with a wrong key does nothing. */
    IT_ASSERT(PQsendQuery(c, "SELECT pg_sleep(1), 'finished'"), "send");
    usleep(200000);
    int fd = it_raw_connect(&sl);
    unsigned char pkt[16];
    uint32_t v[4] = {htonl(16), htonl(80877102), htonl((uint32_t)PQbackendPID(c)), htonl(12345)};
    memcpy(pkt, v, 16);
    IT_ASSERT(write(fd, pkt, 16) == 16, "send stale cancel");
    char b[8];
    IT_ASSERT(read(fd, b, sizeof b) == 0, "cancel connection closed without reply");
    close(fd);
    r = PQgetResult(c);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 1), "finished"),
              "query not cancelled by a wrong key: %s", PQerrorMessage(c));
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    PQfinish(c);
}

/* A cancel for a query still waiting for a server drops it at once. */
static void cancel_waiting(void) {
    PGconn *a = it_connect(&sl, "sl_scram", NULL), *a2 = it_connect(&sl, "sl_scram", NULL);
    PGconn *b = it_connect(&sl, "sl_scram", NULL);
    it_exec(a, "BEGIN"); /* pool_size = 2: both servers held */
    it_exec(a2, "BEGIN");
    IT_ASSERT(PQsendQuery(b, "SELECT 'waited'"), "send");
    usleep(300000);
    double t0 = it_now();
    send_cancel(b);
    expect_cancelled(b, "waiting query cancelled", t0, 2);
    it_exec(a, "COMMIT");
    it_exec(a2, "COMMIT");
    IT_ASSERT(!strcmp(it_value(b, "SELECT 'after'"), "after"), "usable after the cancel");
    PQfinish(a), PQfinish(a2), PQfinish(b);
}

/* A cancel that comes while the client's server is linked and still being
 * given the client's settings (the SET, slowed by a delayed link to the
 * backend) drops the request as for a waiting client: 57014 at once, the
 * server back in the pool, the client and the other client usable. */
static void cancel_during_setup(void) {
    it_delay_t *d = it_delay_start(it_cl.primary);
    char db[160];
    snprintf(db, sizeof db, "slowdb = host=127.0.0.1 port=%d dbname=sluice_test", it_delay_port(d));
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 1\n", db);
    PGconn *other = it_connect_db(&s, "sl_scram", "slowdb", "application_name=other_app");
    PGconn *c = it_connect_db(&s, "sl_scram", "slowdb", "application_name=victim_app");
    it_exec(other, "SELECT 1"); /* the one server now carries other_app */
    it_delay_set(d, 400);       /* the victim's SET takes at least 800 ms */
    IT_ASSERT(PQsendQuery(c, "SELECT pg_sleep(5)"), "send");
    usleep(250 * 1000);
    double t0 = it_now();
    send_cancel(c);
    /* Promptly: not after pg_sleep's 5 s. */
    expect_cancelled(c, "cancelled during its server's setup", t0, 3);
    it_delay_set(d, 0);
    IT_ASSERT(!strcmp(it_value(c, "SHOW application_name"), "victim_app"),
              "the cancelled client is usable and keeps its setting");
    IT_ASSERT(!strcmp(it_value(other, "SHOW application_name"), "other_app"),
              "the other client is served, with its own setting");
    IT_ASSERT(it_log_count(&s, "refused client state change") == 0, "no state slip");
    PQfinish(other), PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void backend_killed(void) {
    PGconn *c = it_connect(&sl, "sl_scram", "application_name=victim");
    IT_ASSERT(PQsendQuery(c, "SELECT pg_sleep(20)"), "send");
    PGconn *d = it_direct();
    double deadline = it_now() + 5;
    int killed = 0;
    while (!killed && it_now() < deadline) {
        killed = atoi(it_value(d, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                  "WHERE query = 'SELECT pg_sleep(20)' AND state = 'active'"));
        usleep(50000);
    }
    IT_ASSERT(killed == 1, "terminated the backend");
    PGresult *r = PQgetResult(c);
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR && code &&
                  (!strcmp(code, "57P01") || !strcmp(code, "08006")),
              "client got an error, code %s", code ? code : "none");
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "client still connected");
    IT_ASSERT(!strcmp(it_value(c, "SELECT 'fresh server'"), "fresh server"),
              "next transaction on a fresh server");
    PQfinish(c);
    PQfinish(d);
}

static void client_gone_in_transaction(void) {
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    it_exec(c, "DROP TABLE IF EXISTS it_gone");
    it_exec(c, "CREATE TABLE it_gone (x int)");
    it_exec(c, "BEGIN");
    it_exec(c, "INSERT INTO it_gone VALUES (1)");
    /* Vanish without Terminate: close the socket under libpq. */
    shutdown(PQsocket(c), SHUT_RDWR);
    PQfinish(c);
    /* pool_size = 2: the next clients must get clean servers. */
    PGconn *a = it_connect(&sl, "sl_scram", NULL);
    PGconn *b = it_connect(&sl, "sl_scram", NULL);
    it_exec(a, "BEGIN");
    it_exec(b, "BEGIN");
    IT_ASSERT(!strcmp(it_value(a, "SELECT count(*) FROM it_gone"), "0"), "insert rolled back");
    IT_ASSERT(!strcmp(it_value(b, "SELECT count(*) FROM it_gone"), "0"), "insert rolled back");
    it_exec(a, "COMMIT");
    it_exec(b, "COMMIT");
    PGconn *d = it_direct();
    IT_ASSERT(!strcmp(it_value(d, "SELECT count(*) FROM pg_stat_activity WHERE usename = "
                                  "'sl_scram' AND state LIKE 'idle in transaction%'"),
                      "0"),
              "no dirty server left");
    PQfinish(d);
    it_exec(a, "DROP TABLE it_gone");
    PQfinish(a), PQfinish(b);
}

/* Sends raw bytes as a new connection; returns the first reply's SQLSTATE. */
static const char *raw_reply_code(const void *p, size_t n) {
    static char code[8];
    int fd = it_raw_connect(&sl);
    IT_ASSERT(fd >= 0, "raw connect");
    IT_ASSERT(write(fd, p, n) == (ssize_t)n, "raw write");
    char body[512] = {0};
    int t = it_raw_read_msg(fd, body, sizeof body - 1);
    snprintf(code, sizeof code, "none");
    if (t == 'E')
        for (int i = 0; i < 500; i++)
            if (body[i] == 'C') {
                snprintf(code, sizeof code, "%s", body + i + 1);
                break;
            }
    char rest[64];
    IT_ASSERT(read(fd, rest, sizeof rest) == 0, "connection closed after the error");
    close(fd);
    return code;
}

static void bad_input(void) {
    unsigned char p[64] = {0};
    /* GSSENCRequest and SSLRequest are declined with 'N', then login goes on. */
    int fd = it_raw_connect(&sl);
    uint32_t gss[2] = {htonl(8), htonl(80877104)};
    IT_ASSERT(write(fd, gss, 8) == 8, "gssenc request");
    char one = 0;
    IT_ASSERT(read(fd, &one, 1) == 1 && one == 'N', "GSSENCRequest answered N");
    uint32_t ssl[2] = {htonl(8), htonl(80877103)};
    IT_ASSERT(write(fd, ssl, 8) == 8, "ssl request");
    IT_ASSERT(read(fd, &one, 1) == 1 && one == 'N', "SSLRequest answered N");
    close(fd);
    /* length 4 */
    p[3] = 4;
    IT_ASSERT(!strcmp(raw_reply_code(p, 8), "08P01"), "short length");
    /* 1 MB startup packet */
    p[1] = 0x10, p[3] = 0;
    IT_ASSERT(!strcmp(raw_reply_code(p, 8), "08P01"), "oversized startup");
    /* protocol 2.0 */
    memset(p, 0, sizeof p);
    p[3] = 9, p[5] = 2;
    IT_ASSERT(!strcmp(raw_reply_code(p, 9), "0A000"), "protocol 2");
    /* no user */
    memset(p, 0, sizeof p);
    memcpy(p + 8, "database\0x\0", 11);
    p[3] = 20, p[5] = 3;
    IT_ASSERT(!strcmp(raw_reply_code(p, 20), "28000"), "missing user");
    /* random garbage */
    unsigned char g[256];
    srand(7);
    for (int i = 0; i < 256; i++)
        g[i] = (unsigned char)rand();
    g[0] = 0, g[1] = 0, g[2] = 1, g[3] = 0; /* length 256, garbage body */
    const char *code = raw_reply_code(g, sizeof g);
    IT_ASSERT(strcmp(code, "none") != 0, "garbage startup gets an error");
    /* An oversized message after login, over max_packet_size. */
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    char *big = malloc(300000);
    memset(big, 'a', 299999);
    big[299999] = 0;
    char *sql = malloc(300100);
    snprintf(sql, 300100, "SELECT '%s'", big);
    PGresult *r = PQexec(c, sql);
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR &&
                  strstr(PQerrorMessage(c), "max_packet_size"),
              "oversized query refused: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    free(big), free(sql);
    /* The proxy is still fine. */
    c = it_connect(&sl, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 'still up'"), "still up"), "proxy up after bad input");
    PQfinish(c);
}

int main(void) {
    it_init("it_failure");
    it_sluice_start(
        &sl, "pool_mode = transaction\ndefault_pool_size = 2\nmax_packet_size = 100000\n", NULL);
    cancel_sleep();
    cancel_waiting();
    cancel_during_setup();
    backend_killed();
    client_gone_in_transaction();
    bad_input();
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
    return it_done();
}
