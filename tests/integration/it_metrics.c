/* The metrics endpoint (metrics_listen) over raw sockets: what it answers
 * to well-formed and malformed requests, that its limits bite (head size,
 * head deadline, connections), that a stalled HTTP client blocks neither
 * other HTTP clients nor the proxy, /health when a database's primary does
 * not answer, and /ready during a SIGTERM drain. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"

static it_sluice_t sl;
static int mport; /* the metrics endpoint's port */

/* A connection to the endpoint from 127.0.0.<from> (every 127/8 address is
 * the loopback's: the endpoint counts connections per address). */
static int http_connect_from(int from) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in src = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK - 1 + (uint32_t)from)};
    IT_ASSERT(bind(fd, (struct sockaddr *)&src, sizeof src) == 0, "bind 127.0.0.%d: %s", from,
              strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)mport),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    IT_ASSERT(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect to metrics port: %s",
              strerror(errno));
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int http_connect(void) { return http_connect_from(1); }

/* Reads until the server closes (or 10 s pass); returns the status code of
 * the answer in resp, -1 if there was none. */
static int http_read(int fd, char *resp, size_t cap) {
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, resp + n, cap - 1 - n);
        if (r <= 0) break;
        n += (size_t)r;
        if (n == cap - 1) break;
    }
    resp[n] = '\0';
    int status = -1;
    if (sscanf(resp, "HTTP/1.1 %d", &status) != 1) status = -1;
    return status;
}

static int http_raw(const char *req, size_t len, char *resp, size_t cap) {
    int fd = http_connect();
    IT_ASSERT(send(fd, req, len, MSG_NOSIGNAL) == (ssize_t)len, "send request");
    int status = http_read(fd, resp, cap);
    close(fd);
    return status;
}

static int http(const char *req, char *resp, size_t cap) {
    return http_raw(req, strlen(req), resp, cap);
}

static const char *body_of(const char *resp) {
    const char *b = strstr(resp, "\r\n\r\n");
    return b ? b + 4 : "";
}

static char resp[1 << 20];

static void answers(void) {
    IT_ASSERT(http("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", resp, sizeof resp) == 200,
              "GET /metrics: %.200s", resp);
    IT_ASSERT(strstr(resp, "Content-Type: text/plain; version=0.0.4"), "content type: %.300s",
              resp);
    IT_ASSERT(strstr(resp, "\nsluice_info{version=\""), "no sluice_info: %.300s", resp);
    IT_ASSERT(strstr(resp, "# TYPE sluice_clients gauge\n"), "no client gauge");
    IT_ASSERT(http("HEAD /metrics HTTP/1.1\r\n\r\n", resp, sizeof resp) == 200, "HEAD /metrics");
    IT_ASSERT(*body_of(resp) == '\0', "HEAD has a body: %s", body_of(resp));
    IT_ASSERT(http("GET /ready HTTP/1.0\r\n\r\n", resp, sizeof resp) == 200, "ready: %s", resp);
    IT_ASSERT(!strcmp(body_of(resp), "ready\n"), "ready body: %s", body_of(resp));
    IT_ASSERT(http("GET /health?verbose=1 HTTP/1.1\r\n\r\n", resp, sizeof resp) == 200,
              "health before anything failed: %s", resp);
    /* Methods other than GET and HEAD, on any path. */
    const char *others[] = {"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                            "DELETE /health HTTP/1.1\r\n\r\n", "OPTIONS * HTTP/1.1\r\n\r\n",
                            "get /metrics HTTP/1.1\r\n\r\n"};
    for (size_t i = 0; i < sizeof others / sizeof *others; i++) {
        IT_ASSERT(http(others[i], resp, sizeof resp) == 405, "%.20s: %.100s", others[i], resp);
        IT_ASSERT(strstr(resp, "\r\nAllow: GET, HEAD\r\n"), "405 without Allow: %s", resp);
    }
    IT_ASSERT(http("GET /metricsx HTTP/1.1\r\n\r\n", resp, sizeof resp) == 404, "404: %s", resp);
    IT_ASSERT(http("GET / HTTP/1.1\r\n\r\n", resp, sizeof resp) == 404, "404 for /: %s", resp);
    printf("ok: GET, HEAD, 405 with Allow, 404\n");
}

static void malformed(void) {
    static const struct {
        const char *req;
        size_t len;
    } bad[] = {
#define R(s) {s, sizeof s - 1}
        R("GARBAGE\r\n\r\n"),
        R("GET /metrics\r\n\r\n"),
        R("GET /metrics HTTP/2.0\r\n\r\n"),
        R("GET  /metrics HTTP/1.1\r\n\r\n"),
        R("GET /metrics HTTP/1.1 \r\n\r\n"),
        R("GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n"),
        R("GET /metrics HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n"),
        R("GET /metrics HTTP/1.1\r\n: empty name\r\n\r\n"),
        R("GET /metrics HTTP/1.1\r\nX: a\x01z\r\n\r\n"),
        R("GET /me\0trics HTTP/1.1\r\n\r\n"),
        R("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"), /* a TLS ClientHello */
        R("\0\0\0\x08\x04\xd2\x16\x2f"),                   /* a PostgreSQL SSLRequest */
#undef R
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int st = http_raw(bad[i].req, bad[i].len, resp, sizeof resp);
        IT_ASSERT(st == 400, "malformed request %zu (%.20s): status %d, %.100s", i, bad[i].req, st,
                  resp);
    }
    /* A head over 8 KiB that never ends: 431 when the limit is reached. */
    static char big[9000];
    int n = snprintf(big, sizeof big, "GET /metrics HTTP/1.1\r\n");
    while (n + 20 < (int)sizeof big)
        n += snprintf(big + n, sizeof big - (size_t)n, "X-Pad: aaaaaaaaaa\r\n");
    IT_ASSERT(http_raw(big, (size_t)n, resp, sizeof resp) == 431, "oversized head: %.100s", resp);
    printf("ok: %zu malformed requests get 400, an oversized head 431\n", sizeof bad / sizeof *bad);
}

/* While one HTTP client stalls mid-request, other HTTP clients and the
 * proxy are served; the staller is closed at the head deadline, also when
 * it keeps sending a byte now and then. */
static void slow_loris(void) {
    int stalled = http_connect();
    IT_ASSERT(send(stalled, "GET /metr", 9, MSG_NOSIGNAL) == 9, "partial request");
    double t0 = it_now();
    IT_ASSERT(http("GET /health HTTP/1.1\r\n\r\n", resp, sizeof resp) == 200, "health: %s", resp);
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 41 + 1"), "42"), "query while an HTTP client stalls");
    PQfinish(c);
    IT_ASSERT(it_now() - t0 < 4, "others waited for the stalled client: %.1f s", it_now() - t0);
    /* The stalled one is closed at the deadline (5 s), not left open. */
    char b[64];
    ssize_t r = read(stalled, b, sizeof b);
    double waited = it_now() - t0;
    IT_ASSERT(r == 0 || (r < 0 && errno == ECONNRESET), "stalled client not closed (read %zd, %s)",
              r, strerror(errno));
    IT_ASSERT(waited > 3 && waited < 9, "stalled client closed after %.1f s", waited);
    close(stalled);

    /* A byte every 300 ms: the deadline is for the whole head, so the
     * trickle does not keep the connection. */
    int trickle = http_connect();
    fcntl(trickle, F_SETFL, O_NONBLOCK);
    const char *req = "GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    t0 = it_now();
    bool closed = false;
    for (size_t i = 0; req[i] && !closed; i++) {
        if (send(trickle, req + i, 1, MSG_NOSIGNAL) != 1) closed = true;
        usleep(300000);
        ssize_t k = read(trickle, b, sizeof b);
        if (k == 0 || (k < 0 && errno != EAGAIN)) closed = true;
    }
    IT_ASSERT(closed, "a client sending a byte every 300 ms kept its connection for %.1f s",
              it_now() - t0);
    IT_ASSERT(it_now() - t0 < 8, "trickling client closed only after %.1f s", it_now() - t0);
    close(trickle);
    printf("ok: a stalled client blocks nobody and is closed at the head deadline\n");
}

static void too_many(void) {
    /* At most 4 from one address: the 5th from 127.0.0.2 is refused, one
     * from another address is not. */
    int mine[4];
    for (int i = 0; i < 4; i++)
        mine[i] = http_connect_from(2);
    int fd = http_connect_from(2);
    int st = http_read(fd, resp, sizeof resp);
    close(fd);
    IT_ASSERT(st == 503 && strstr(resp, "from this address"), "5th from one address: %d %.100s",
              st, resp);
    fd = http_connect_from(3);
    IT_ASSERT(send(fd, "GET /ready HTTP/1.1\r\n\r\n", 23, MSG_NOSIGNAL) == 23, "send");
    IT_ASSERT(http_read(fd, resp, sizeof resp) == 200, "another address: %.100s", resp);
    close(fd);
    for (int i = 0; i < 4; i++)
        close(mine[i]);
    double until = it_now() + 5;
    while (http("GET /ready HTTP/1.1\r\n\r\n", resp, sizeof resp) != 200 && it_now() < until)
        usleep(50000);
    /* 16 in all from four addresses; the 17th is refused at once with
     * 503; the 16 stay open. */
    int fds[16];
    for (int i = 0; i < 16; i++)
        fds[i] = http_connect_from(2 + i / 4);
    double t0 = it_now();
    fd = http_connect_from(10);
    st = http_read(fd, resp, sizeof resp);
    close(fd);
    IT_ASSERT(st == 503 && strstr(resp, "too many connections"), "17th connection: %d %.100s", st,
              resp);
    IT_ASSERT(it_now() - t0 < 3, "17th connection refused after %.1f s", it_now() - t0);
    /* One of the 16 is still served. */
    IT_ASSERT(send(fds[0], "GET /ready HTTP/1.1\r\n\r\n", 23, MSG_NOSIGNAL) == 23, "send");
    IT_ASSERT(http_read(fds[0], resp, sizeof resp) == 200, "one of 16: %.100s", resp);
    for (int i = 0; i < 16; i++)
        close(fds[i]);
    /* Once they are gone, new connections are served again. */
    double deadline = it_now() + 5;
    while ((st = http("GET /ready HTTP/1.1\r\n\r\n", resp, sizeof resp)) != 200 &&
           it_now() < deadline)
        usleep(50000);
    IT_ASSERT(st == 200, "after closing the 16: %d", st);
    printf("ok: at most 4 connections from one address and 16 in all, one more gets 503 at "
           "once\n");
}

/* A database whose primary does not answer turns /health to 503 once
 * sluice has tried it, and its primary_up gauge to 0. */
static void health_dead_primary(void) {
    PGconn *c = it_connect_db(&sl, "sl_scram", "dead", "connect_timeout=10");
    IT_ASSERT(PQstatus(c) != CONNECTION_OK, "a login to the dead database worked");
    PQfinish(c);
    IT_ASSERT(http("GET /health HTTP/1.1\r\n\r\n", resp, sizeof resp) == 503, "health: %.300s",
              resp);
    char b[512];
    snprintf(b, sizeof b, "%s", body_of(resp));
    IT_ASSERT(strstr(b, "database dead: primary 127.0.0.1:") &&
                  strchr(b, '\n') == b + strlen(b) - 1,
              "health reason is not one line naming the database: %s", b);
    IT_ASSERT(http("GET /metrics HTTP/1.1\r\n\r\n", resp, sizeof resp) == 200, "metrics");
    IT_ASSERT(strstr(resp, "\nsluice_database_primary_up{database=\"dead\"} 0\n"),
              "primary_up of dead is not 0");
    IT_ASSERT(strstr(resp, "\nsluice_database_primary_up{database=\"sluice_test\"} 1\n"),
              "primary_up of sluice_test is not 1");
    printf("ok: /health 503 (%.*s) when a primary does not answer\n", (int)strlen(b) - 1, b);
}

/* SIGTERM with a client inside a transaction: sluice drains, /ready and
 * /health say 503 meanwhile, and it exits when the client is done. */
static void ready_during_drain(void) {
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    it_exec(c, "BEGIN");
    it_exec(c, "SELECT 1");
    kill(sl.pid, SIGTERM);
    IT_ASSERT(it_log_wait(&sl, "SIGTERM: graceful shutdown", 1, 5) == 1, "no drain logged");
    IT_ASSERT(http("GET /ready HTTP/1.1\r\n\r\n", resp, sizeof resp) == 503, "ready: %.200s", resp);
    IT_ASSERT(!strcmp(body_of(resp), "shutting down\n"), "ready body: %s", body_of(resp));
    IT_ASSERT(http("GET /health HTTP/1.1\r\n\r\n", resp, sizeof resp) == 503, "health: %s", resp);
    IT_ASSERT(http("GET /metrics HTTP/1.1\r\n\r\n", resp, sizeof resp) == 200, "metrics");
    IT_ASSERT(strstr(resp, "\nsluice_up 0\n"), "sluice_up is not 0 while draining");
    it_exec(c, "COMMIT");
    PQfinish(c);
    int st = it_sluice_stop(&sl, 0); /* waits for the exit the drain makes */
    IT_ASSERT(st == 0, "exit status %d after the drain", st);
    printf("ok: /ready 503 during the SIGTERM drain\n");
}

int main(void) {
    it_init("it_metrics");
    mport = it_free_port();
    char opts[256], dbs[256];
    snprintf(opts, sizeof opts, "metrics_listen = 127.0.0.1:%d\n", mport);
    /* a port nothing listens on: a free one, not bound */
    snprintf(dbs, sizeof dbs, "dead = host=127.0.0.1 port=%d dbname=sluice_test\n", it_free_port());
    it_sluice_start(&sl, opts, dbs);
    answers();
    malformed();
    slow_loris();
    too_many();
    health_dead_primary();
    ready_during_drain();
    return it_done();
}
