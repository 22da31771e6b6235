/* Logins never wait for a server, and a partially received message never
 * gets or keeps one: 300 logins over a busy session pool, a login while the
 * only transaction-pooling server is in a transaction, the ParameterStatus
 * values a login reports, five clients stalled after one byte, and
 * client_partial_message_timeout. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"

/* Writes raw bytes on a libpq connection's socket, behind libpq's back. */
static void raw_send(PGconn *c, const void *p, size_t n) {
    IT_ASSERT(send(PQsocket(c), p, n, MSG_NOSIGNAL) == (ssize_t)n, "raw send: %s", strerror(errno));
}

/* Reads raw messages until one of type `want` arrives (its body copied
 * into body); returns 1, or -1 when the connection ended or stalled for
 * `secs`. */
static int raw_wait_msg(PGconn *c, int want, char *body, int cap, int secs) {
    struct timeval tv = {.tv_sec = secs};
    int fd = PQsocket(c);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK); /* libpq made it non-blocking */
    for (;;) {
        memset(body, 0, (size_t)cap);
        int t = it_raw_read_msg(PQsocket(c), body, cap - 1);
        if (t < 0) return -1;
        if (t == want) return 1;
    }
}

/* Waits until `want` backends of sl_scram run pg_sleep. */
static bool wait_sleepers(PGconn *d, int want, double secs) {
    double deadline = it_now() + secs;
    while (it_now() < deadline) {
        const char *n = it_value(d, "SELECT count(*) FROM pg_stat_activity WHERE usename = "
                                    "'sl_scram' AND query LIKE 'SELECT pg_sleep%'");
        if (atoi(n) >= want) return true;
        usleep(50000);
    }
    return false;
}

#define HOLDERS 10
#define CROWD 300
#define HOLD_SECS "12" /* longer than the crowd's connect_timeout */

static PGconn *holders[HOLDERS];

/* Waits for the holders' pg_sleep, then lets their servers go. */
static void *release_holders(void *arg) {
    (void)arg;
    for (int i = 0; i < HOLDERS; i++) {
        PGresult *r;
        while ((r = PQgetResult(holders[i])))
            PQclear(r);
        PQfinish(holders[i]);
    }
    return NULL;
}

enum { CR_CONNECTING, CR_QUERYING, CR_DONE };

typedef struct crowd_client {
    PGconn *conn;
    int state;
    PostgresPollingStatusType poll; /* what PQconnectPoll waits for */
    double started, connected;      /* it_now() */
} crowd_client_t;

/* One step of a client whose socket is ready; asserts on failure. */
static void crowd_step(crowd_client_t *cc, int i) {
    if (cc->state == CR_CONNECTING) {
        cc->poll = PQconnectPoll(cc->conn);
        IT_ASSERT(cc->poll != PGRES_POLLING_FAILED, "client %d: login failed: %s", i,
                  PQerrorMessage(cc->conn));
        if (cc->poll != PGRES_POLLING_OK) return;
        cc->connected = it_now();
        IT_ASSERT(PQsendQuery(cc->conn, "SELECT 'crowd'"), "client %d: send: %s", i,
                  PQerrorMessage(cc->conn));
        cc->state = CR_QUERYING;
        return;
    }
    IT_ASSERT(PQconsumeInput(cc->conn), "client %d: %s", i, PQerrorMessage(cc->conn));
    if (PQisBusy(cc->conn)) return;
    PGresult *r;
    while ((r = PQgetResult(cc->conn))) {
        IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "crowd"),
                  "client %d: query failed: %s", i, PQerrorMessage(cc->conn));
        PQclear(r);
    }
    PQfinish(cc->conn);
    cc->conn = NULL;
    cc->state = CR_DONE;
}

/* Session pooling, 10 servers all busy for 12 s: 300 clients connecting
 * with connect_timeout=10 all log in at once and then run their query as
 * servers come free. Before, each login waited for a server of its own. */
static void session_crowd(void) {
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = session\ndefault_pool_size = 10\nmax_client_conn = 400\n"
                    "query_wait_timeout = 60\nlog_connections = 0\nlog_disconnections = 0\n"
                    /* md5 rather than SCRAM: 300 logins on a loaded machine
                     * are then about pooling, not about CPU. */
                    "auth_type = md5\n",
                    NULL);
    PGconn *d = it_direct();
    for (int i = 0; i < HOLDERS; i++) {
        holders[i] = it_connect(&s, "sl_scram", NULL);
        IT_ASSERT(PQsendQuery(holders[i], "SELECT pg_sleep(" HOLD_SECS ")"), "holder %d", i);
    }
    IT_ASSERT(wait_sleepers(d, HOLDERS, 10), "the 10 holders run pg_sleep");
    pthread_t th;
    IT_ASSERT(pthread_create(&th, NULL, release_holders, NULL) == 0, "thread");

    static crowd_client_t cr[CROWD];
    char ci[512];
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d dbname=sluice_test user=sl_scram password=scram_pw "
             "connect_timeout=10",
             s.port);
    for (int i = 0; i < CROWD; i++) {
        cr[i] = (crowd_client_t){.conn = PQconnectStart(ci),
                                 .state = CR_CONNECTING,
                                 .poll = PGRES_POLLING_WRITING,
                                 .started = it_now()};
        IT_ASSERT(cr[i].conn && PQstatus(cr[i].conn) != CONNECTION_BAD, "client %d: start", i);
    }
    static struct pollfd pfd[CROWD];
    static int who[CROWD];
    double deadline = it_now() + 60, slowest = 0;
    for (int left = CROWD; left > 0;) {
        int n = 0;
        double now = it_now();
        IT_ASSERT(now < deadline, "%d clients not done after 60 s", left);
        for (int i = 0; i < CROWD; i++) {
            if (cr[i].state == CR_DONE) continue;
            /* libpq leaves connect_timeout to the caller of PQconnectPoll. */
            IT_ASSERT(cr[i].state != CR_CONNECTING || now - cr[i].started < 10,
                      "client %d: timeout expired (no login within connect_timeout=10)", i);
            bool wr = cr[i].state == CR_CONNECTING && cr[i].poll == PGRES_POLLING_WRITING;
            pfd[n] = (struct pollfd){.fd = PQsocket(cr[i].conn), .events = wr ? POLLOUT : POLLIN};
            who[n++] = i;
        }
        IT_ASSERT(poll(pfd, (nfds_t)n, 200) >= 0, "poll: %s", strerror(errno));
        for (int k = 0; k < n; k++) {
            if (!pfd[k].revents) continue;
            crowd_client_t *cc = &cr[who[k]];
            crowd_step(cc, who[k]);
            if (cc->state != CR_CONNECTING && cc->connected - cc->started > slowest)
                slowest = cc->connected - cc->started;
            if (cc->state == CR_DONE) left--;
        }
    }
    pthread_join(th, NULL);
    printf("session_crowd: %d logins over 10 busy servers, slowest %.2f s\n", CROWD, slowest);
    PQfinish(d);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* Transaction pooling, the only server in a transaction: a new client's
 * login completes at once; its first query waits and runs once the server
 * is free. Before, the login itself waited until query_wait_timeout. */
static void tx_busy_login(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 8\n",
                    NULL);
    PGconn *a = it_connect(&s, "sl_scram", NULL);
    it_exec(a, "BEGIN");
    it_value(a, "SELECT 1"); /* holds the only server */
    double t0 = it_now();
    PGconn *b = it_connect(&s, "sl_scram", "connect_timeout=10");
    double took = it_now() - t0;
    IT_ASSERT(took < 3, "login took %.2f s while the only server was busy", took);
    IT_ASSERT(PQsendQuery(b, "SELECT 'after'"), "send");
    usleep(500000);
    IT_ASSERT(PQconsumeInput(b) && PQisBusy(b), "the query waits for the server");
    it_exec(a, "COMMIT");
    PGresult *r = PQgetResult(b);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "after"),
              "first query runs once the server is free: %s", PQerrorMessage(b));
    PQclear(r);
    while ((r = PQgetResult(b)))
        PQclear(r);
    IT_ASSERT(!strcmp(it_value(b, "SELECT 2"), "2"), "and the next one");
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* A login answered from the pool's cache reports the client's own startup
 * values, and each client's server runs with them. */
static void param_status(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 1\n", NULL);
    PGconn *w = it_connect(&s, "sl_scram", NULL); /* fills the pool's cache */
    char deflt[64];
    snprintf(deflt, sizeof deflt, "%s", it_value(w, "SHOW DateStyle"));
    IT_ASSERT(strncmp(deflt, "Postgres", 8) != 0, "the cluster's DateStyle is not Postgres");
    setenv("PGDATESTYLE", "Postgres", 1);
    PGconn *p = it_connect(&s, "sl_scram", "application_name=login_p");
    unsetenv("PGDATESTYLE");
    PGconn *q = it_connect(&s, "sl_scram", "application_name=login_q");
    const char *ds = PQparameterStatus(p, "DateStyle");
    IT_ASSERT(ds && !strncmp(ds, "Postgres", 8), "p sees its DateStyle reported: %s", ds);
    IT_ASSERT(!strcmp(PQparameterStatus(p, "application_name"), "login_p"),
              "p sees its application_name reported");
    IT_ASSERT(!strcmp(PQparameterStatus(q, "DateStyle"), deflt), "q sees the pool's DateStyle");
    IT_ASSERT(!strcmp(PQparameterStatus(q, "application_name"), "login_q"),
              "q sees its application_name reported");
    IT_ASSERT(PQserverVersion(p) >= 150000 && PQparameterStatus(p, "server_encoding"),
              "the pool's other values are reported");
    IT_ASSERT(PQbackendPID(p) != PQbackendPID(q), "each client has its own BackendKeyData");
    /* All three share the one server. */
    for (int round = 0; round < 2; round++) {
        IT_ASSERT(!strncmp(it_value(p, "SHOW DateStyle"), "Postgres", 8), "p runs with its own");
        IT_ASSERT(!strcmp(it_value(q, "SHOW DateStyle"), deflt), "q runs with the default");
        IT_ASSERT(!strcmp(it_value(p, "SHOW application_name"), "login_p"), "p's name");
        IT_ASSERT(!strcmp(it_value(q, "SHOW application_name"), "login_q"), "q's name");
        IT_ASSERT(!strcmp(it_value(w, "SHOW DateStyle"), deflt), "w runs with the default");
    }
    PQfinish(w), PQfinish(p), PQfinish(q);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* Five clients send one byte of a message header and stall, a sixth half a
 * Query: none of them gets the only server, another client's query runs at
 * once, and a stalled client that sends the rest is served. Before, the
 * first one took the server for good. */
static void partial_header(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 10\n",
                    NULL);
    PGconn *stalled[5];
    for (int i = 0; i < 5; i++) {
        stalled[i] = it_connect(&s, "sl_scram", NULL);
        raw_send(stalled[i], "Q", 1);
    }
    /* And one the header and half the body of a Query (held until whole). */
    PGconn *half = it_connect(&s, "sl_scram", NULL);
    static const char head[] = "Q\0\0\0\x0dSELE";
    raw_send(half, head, sizeof head - 1);
    usleep(300000);
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    double t0 = it_now();
    IT_ASSERT(!strcmp(it_value(c, "SELECT 1"), "1"), "another client's query");
    double took = it_now() - t0;
    IT_ASSERT(took < 3, "SELECT 1 took %.2f s behind five stalled clients", took);
    /* The rest of the first stalled client's Query: "SELECT 7". */
    static const char rest[] = "\0\0\0\x0dSELECT 7";
    raw_send(stalled[0], rest, sizeof rest); /* with the string's NUL */
    char body[256];
    IT_ASSERT(raw_wait_msg(stalled[0], 'D', body, sizeof body, 5) > 0 && !memcmp(body + 6, "7", 1),
              "the completed Query is answered");
    IT_ASSERT(raw_wait_msg(stalled[0], 'Z', body, sizeof body, 5) > 0, "ReadyForQuery");
    IT_ASSERT(!strcmp(it_value(c, "SELECT 2"), "2"), "the server went back to the pool");
    /* A transaction that ends with only the first byte of the next header
     * in the input gives its server back too. */
    static const char whole_and_one[] = "Q\0\0\0\x0dSELECT 9\0Q";
    raw_send(stalled[0], whole_and_one, sizeof whole_and_one - 1); /* without the last NUL */
    IT_ASSERT(raw_wait_msg(stalled[0], 'Z', body, sizeof body, 5) > 0, "SELECT 9 answered");
    t0 = it_now();
    IT_ASSERT(!strcmp(it_value(c, "SELECT 3"), "3"), "the server is free for another client");
    took = it_now() - t0;
    IT_ASSERT(took < 3, "SELECT 3 took %.2f s behind a client with one byte pending", took);
    for (int i = 0; i < 5; i++)
        PQfinish(stalled[i]);
    PQfinish(half), PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* A client stalls in the middle of a message that streams to the only
 * server: client_partial_message_timeout closes it, its server is closed
 * (it got half a message), and the next client gets a working server. */
static void partial_timeout(void) {
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 20\n"
                    "client_partial_message_timeout = 1\n",
                    NULL);
    PGconn *x = it_connect(&s, "sl_scram", NULL);
    char pid[32];
    snprintf(pid, sizeof pid, "%s", it_value(x, "SELECT pg_backend_pid()"));
    /* A Query longer than the buffer streams through: header, then part of
     * its body. */
    enum { BODY = 100000, SENT = 2000 };
    static char msg[5 + SENT];
    msg[0] = 'Q';
    uint32_t len = 4 + BODY;
    msg[1] = (char)(len >> 24), msg[2] = (char)(len >> 16), msg[3] = (char)(len >> 8);
    msg[4] = (char)len;
    memcpy(msg + 5, "SELECT '", 8);
    memset(msg + 13, 'x', SENT - 8);
    double t0 = it_now();
    raw_send(x, msg, sizeof msg);
    PGconn *y = it_connect(&s, "sl_scram", NULL);
    IT_ASSERT(PQsendQuery(y, "SELECT 'next'"), "send");
    char body[1024];
    IT_ASSERT(raw_wait_msg(x, 'E', body, sizeof body, 10) > 0, "x gets an error");
    double took = it_now() - t0;
    bool named = false;
    for (int i = 0; i < (int)sizeof body - 32; i++)
        if (!memcmp(body + i, "client_partial_message_timeout", 30)) named = true;
    IT_ASSERT(named, "the error names client_partial_message_timeout");
    IT_ASSERT(took >= 0.9 && took < 6, "x closed after %.2f s", took);
    PGresult *r = PQgetResult(y);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "next"),
              "the next client is served: %s", PQerrorMessage(y));
    PQclear(r);
    while ((r = PQgetResult(y)))
        PQclear(r);
    IT_ASSERT(strcmp(it_value(y, "SELECT pg_backend_pid()"), pid) != 0,
              "the half-fed server was closed, not pooled");
    IT_ASSERT(it_log_count(&s, "client_partial_message_timeout") >= 1, "logged");
    PQfinish(x), PQfinish(y);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* A server that is slow to take a long message is no stalled client: while
 * sluice cannot pass the client's bytes on, it stops reading them, and that
 * time does not count toward client_partial_message_timeout. */
static void slow_server(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\nclient_partial_message_timeout = 1\n", NULL);
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    enum { BIG = 32 << 20 }; /* more than the sockets between client and server hold */
    char *big = malloc(BIG + 1);
    memset(big, 'b', BIG);
    big[BIG] = '\0';
    const char *params[1] = {big};
    IT_ASSERT(PQenterPipelineMode(c) == 1, "pipeline mode");
    double t0 = it_now();
    /* The server sleeps first: the Bind carrying `big` waits in sluice. */
    IT_ASSERT(PQsendQueryParams(c, "SELECT pg_sleep(3)", 0, NULL, NULL, NULL, NULL, 0), "send");
    IT_ASSERT(PQsendQueryParams(c, "SELECT length($1)", 1, NULL, params, NULL, NULL, 0), "send");
    IT_ASSERT(PQpipelineSync(c) == 1, "sync: %s", PQerrorMessage(c));
    PGresult *r = PQgetResult(c);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "pg_sleep: %s", PQerrorMessage(c));
    PQclear(r);
    IT_ASSERT(PQgetResult(c) == NULL, "end of the first result");
    r = PQgetResult(c);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) == BIG,
              "the long message went through: %s", PQerrorMessage(c));
    PQclear(r);
    IT_ASSERT(PQgetResult(c) == NULL, "end of the second result");
    r = PQgetResult(c);
    IT_ASSERT(PQresultStatus(r) == PGRES_PIPELINE_SYNC, "sync");
    PQclear(r);
    IT_ASSERT(it_now() - t0 >= 2.5, "the server did sleep");
    PQexitPipelineMode(c);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 'still here'"), "still here"), "the client stays");
    IT_ASSERT(it_log_count(&s, "client_partial_message_timeout") == 0, "no timeout");
    free(big);
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

int main(int argc, char **argv) {
    it_init("it_login");
    static const struct {
        const char *name;
        void (*fn)(void);
    } parts[] = {{"tx_busy_login", tx_busy_login},   {"param_status", param_status},
                 {"partial_header", partial_header}, {"partial_timeout", partial_timeout},
                 {"slow_server", slow_server},       {"session_crowd", session_crowd}};
    /* A part's name as argument runs that part alone. */
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        if (argc < 2 || !strcmp(argv[1], parts[i].name)) parts[i].fn();
    return it_done();
}
