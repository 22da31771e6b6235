/* What sluice must refuse, checked from outside: every console command but
 * SHOW refused to a stats_users member (the list of commands read from the
 * running sluice, so that a new command is covered the day it is added),
 * the console refused to a user in neither list, HTTP methods, paths and
 * oversized heads on the metrics endpoint, TLS below 1.2 by default, and a
 * client that stalls inside or right after the TLS handshake closed by
 * client_login_timeout; health checks that log in with SCRAM keys. Runs at the highest verbosity
 * (CTest sets SLUICE_TEST_VERBOSE), so that check_secrets reads every line a SCRAM, md5 and TLS
 * login can log. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

/* ---- console ---- */

static PGconn *console(const it_sluice_t *s, const char *user, const char *db) {
    PGconn *c = it_connect_db(s, user, db, NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "console as %s: %s", user, PQerrorMessage(c));
    return c;
}

/* The SQLSTATE of the first failing statement of sql ("" if none failed). */
static const char *sqlstate(PGconn *c, const char *sql) {
    static char code[8];
    code[0] = '\0';
    IT_ASSERT(PQsendQuery(c, sql), "send %s: %s", sql, PQerrorMessage(c));
    PGresult *r;
    while ((r = PQgetResult(c))) {
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (PQresultStatus(r) == PGRES_FATAL_ERROR && !code[0])
            snprintf(code, sizeof code, "%s", st ? st : "none");
        PQclear(r);
    }
    return code;
}

/* The console's verbs, as its error for an unknown one lists them:
 * "... valid commands are SHOW, KILL_CLIENT, ... (SHOW HELP ...". */
static int console_verbs(PGconn *c, char verbs[][32], int cap) {
    PGresult *r = PQexec(c, "XYZZY");
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *p = msg ? strstr(msg, "valid commands are ") : NULL;
    IT_ASSERT(p, "the unknown-command error lists the commands: %s", msg ? msg : "(none)");
    p += strlen("valid commands are ");
    int n = 0;
    while (n < cap && *p && *p != ' ' && *p != '(') {
        size_t len = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ_");
        IT_ASSERT(len > 0 && len < 32, "verb list: %s", p);
        snprintf(verbs[n++], 32, "%.*s", (int)len, p);
        p += len;
        if (!strncmp(p, ", ", 2)) p += 2;
    }
    PQclear(r);
    return n;
}

/* The arguments each command takes, so that it is refused for who runs it
 * and not for a missing argument; a command not listed runs bare. */
static const char *args_of(const char *verb) {
    static const struct {
        const char *verb, *args;
    } a[] = {
        {"KILL_CLIENT", "1"},      {"DISABLE", "sluice_test"},    {"ENABLE", "sluice_test"},
        {"KILL", "sluice_test"},   {"PAUSE", "sluice_test"},      {"RECONNECT", "sluice_test"},
        {"RESUME", "sluice_test"}, {"WAIT_CLOSE", "sluice_test"}, {"SET", "query_wait_timeout = 3"},
    };
    for (size_t i = 0; i < sizeof a / sizeof *a; i++)
        if (!strcmp(a[i].verb, verb)) return a[i].args;
    return "";
}

static void lower(char *s) {
    for (; *s; s++)
        if (*s >= 'A' && *s <= 'Z') *s = (char)(*s - 'A' + 'a');
}

static void console_stats_user(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\nadmin_users = sl_scram\nstats_users = sl_md5\n",
                    NULL);
    PGconn *app = it_connect(&s, "sl_scram", NULL);
    it_exec(app, "SELECT 1");
    PGconn *st = console(&s, "sl_md5", "pgbouncer");
    char verbs[32][32];
    int n = console_verbs(st, verbs, 32);
    IT_ASSERT(n >= 10, "only %d console commands listed", n);
    int refused = 0;
    for (int i = 0; i < n; i++) {
        if (!strcmp(verbs[i], "SHOW")) continue;
        char sql[2200];
        /* As written, in lower case, and behind a SHOW that may run. */
        snprintf(sql, sizeof sql, "%s %s", verbs[i], args_of(verbs[i]));
        IT_ASSERT(!strcmp(sqlstate(st, sql), "42501"), "stats user's '%s' refused: %s", sql,
                  sqlstate(st, sql));
        lower(sql);
        IT_ASSERT(!strcmp(sqlstate(st, sql), "42501"), "stats user's '%s' refused", sql);
        snprintf(sql, sizeof sql, "SHOW VERSION; %s %s", verbs[i], args_of(verbs[i]));
        IT_ASSERT(!strcmp(sqlstate(st, sql), "42501"), "stats user's '%s' refused", sql);
        refused++;
    }
    /* The SHOW topics SHOW HELP marks "(admin_users)" are refused too. */
    IT_ASSERT(!strcmp(sqlstate(st, "SHOW FDS"), "42501"), "stats user's SHOW FDS refused");
    /* Nothing of it ran: sluice still serves, nothing paused or disabled,
     * nothing set, no refusal logged as a run. */
    IT_ASSERT(!strcmp(it_value(app, "SELECT 2"), "2"), "the app client still works");
    PGconn *fresh = it_connect(&s, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(fresh, "SELECT 3"), "3"), "a new client is served");
    PQfinish(fresh);
    IT_ASSERT(it_log_count(&s, "runs: ") == 0, "a refused command was run");
    IT_ASSERT(it_log_wait(&s, "(stats_users)", 3 * refused, 5) >= 3 * refused,
              "each refusal logged");
    /* The same commands do run for an admin user: the refusal was about
     * who asked (PAUSE and RESUME, harmless here). */
    PGconn *adm = console(&s, "sl_scram", "pgbouncer");
    IT_ASSERT(!sqlstate(adm, "PAUSE sluice_test")[0], "admin's PAUSE runs");
    IT_ASSERT(!sqlstate(adm, "RESUME sluice_test")[0], "admin's RESUME runs");
    PQfinish(adm);
    PQfinish(st);
    /* A user in neither list, with its right password: refused the console
     * under both its names. */
    const char *dbs[] = {"pgbouncer", "sluice"};
    for (int i = 0; i < 2; i++) {
        PGconn *x = it_connect_db(&s, "sl_tls", dbs[i], NULL);
        IT_ASSERT(PQstatus(x) == CONNECTION_BAD && strstr(PQerrorMessage(x), "admin_users"),
                  "a user in neither list is refused %s: %s", dbs[i], PQerrorMessage(x));
        PQfinish(x);
    }
    IT_ASSERT(!strcmp(it_value(app, "SELECT 4"), "4"), "sluice still serves");
    PQfinish(app);
    it_sluice_stop(&s, 9);
    printf("ok: %d console commands refused to a stats user (as written, lower case, after a "
           "SHOW), the console refused to a user in neither list\n",
           refused);
}

/* ---- HTTP ---- */

static int mport;

/* Sends req (len bytes) to the metrics endpoint, reads until it closes;
 * returns the status, or -1; the whole answer in resp. */
static int http_raw(const char *req, size_t len, char *resp, size_t cap) {
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)mport),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* The endpoint may listen a moment after the client port does. */
    int fd;
    double deadline = it_now() + 10;
    while (fd = socket(AF_INET, SOCK_STREAM, 0),
           connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        IT_ASSERT(it_now() < deadline, "connect to metrics: %s", strerror(errno));
        usleep(50000);
    }
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    /* A refusal may come (and the socket close) before all of req is sent. */
    (void)!send(fd, req, len, MSG_NOSIGNAL);
    size_t o = 0;
    ssize_t r;
    while (o + 1 < cap && (r = read(fd, resp + o, cap - 1 - o)) > 0)
        o += (size_t)r;
    resp[o] = '\0';
    close(fd);
    int status;
    return sscanf(resp, "HTTP/1.1 %d", &status) == 1 ? status : -1;
}

static int http(const char *req, char *resp, size_t cap) {
    return http_raw(req, strlen(req), resp, cap);
}

static void http_endpoint(void) {
    it_sluice_t s;
    mport = it_free_port();
    char opts[128];
    snprintf(opts, sizeof opts, "metrics_listen = 127.0.0.1:%d\n", mport);
    it_sluice_start(&s, opts, NULL);
    static char resp[1 << 16];
    IT_ASSERT(http("GET /metrics HTTP/1.1\r\n\r\n", resp, sizeof resp) == 200, "metrics: %.200s",
              resp);
    /* Methods other than GET and HEAD: 405. */
    const char *methods[] = {"PUT", "PATCH", "TRACE", "CONNECT", "PROPFIND"};
    for (size_t i = 0; i < sizeof methods / sizeof *methods; i++) {
        char req[128];
        snprintf(req, sizeof req, "%s /metrics HTTP/1.1\r\n\r\n", methods[i]);
        IT_ASSERT(http(req, resp, sizeof resp) == 405, "%s: %.200s", methods[i], resp);
    }
    /* Paths that are not exactly one of the three: never served, and the
     * request is not echoed back (no reflected markup). */
    const char *paths[] = {"/metrics/../metrics",
                           "//metrics",
                           "/METRICS",
                           "/health/",
                           "/%6detrics",
                           "/<script>x</script>",
                           "http://127.0.0.1/metrics"};
    for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
        char req[256];
        snprintf(req, sizeof req, "GET %s HTTP/1.1\r\n\r\n", paths[i]);
        int st = http(req, resp, sizeof resp);
        IT_ASSERT(st == 404 || st == 400, "GET %s: status %d, %.200s", paths[i], st, resp);
        IT_ASSERT(!strstr(resp, "<script>"), "GET %s: the path echoed: %.300s", paths[i], resp);
    }
    /* HTTP/2's preface: not a request sluice serves. */
    static const char h2[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    int st = http(h2, resp, sizeof resp);
    IT_ASSERT(st == 400 || st == 405, "HTTP/2 preface: %d %.200s", st, resp);
    /* Oversized heads: one header line of 16 KiB, and many short headers
     * that pass 8 KiB together, both complete: 431, not parsed. */
    static char big[32768];
    int n = snprintf(big, sizeof big, "GET /metrics HTTP/1.1\r\nX-Long: ");
    memset(big + n, 'a', 16384), n += 16384;
    n += snprintf(big + n, sizeof big - (size_t)n, "\r\n\r\n");
    IT_ASSERT(http_raw(big, (size_t)n, resp, sizeof resp) == 431, "a 16 KiB header: %.200s", resp);
    n = snprintf(big, sizeof big, "GET /metrics HTTP/1.1\r\n");
    for (int i = 0; n < 12000; i++)
        n += snprintf(big + n, sizeof big - (size_t)n, "X-H%d: v\r\n", i);
    n += snprintf(big + n, sizeof big - (size_t)n, "\r\n");
    IT_ASSERT(http_raw(big, (size_t)n, resp, sizeof resp) == 431, "12 KB of headers: %.200s", resp);
    /* Two requests on one connection: one answer, then the connection
     * closes (no second answer smuggled behind the first). */
    IT_ASSERT(
        http("GET /health HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n", resp, sizeof resp) == 200,
        "pipelined: %.200s", resp);
    IT_ASSERT(!strstr(resp + 4, "HTTP/1.1"), "one answer only: %.300s", resp);
    /* And sluice still serves both sides. */
    IT_ASSERT(http("GET /ready HTTP/1.1\r\n\r\n", resp, sizeof resp) == 200, "ready: %.200s", resp);
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 5"), "5"), "sluice still serves");
    PQfinish(c);
    it_sluice_stop(&s, 9);
    printf("ok: HTTP methods 405, odd paths 404/400 never echoed, HTTP/2 preface refused, "
           "oversized complete heads 431, one answer per connection\n");
}

/* ---- TLS ---- */

static const char *tls_file(const char *name) {
    static char buf[4][400];
    static int i;
    char *b = buf[i++ % 4];
    snprintf(b, 400, "%s/%s", it_cl.tlsdir, name);
    return b;
}

static void start_tls_sluice(it_sluice_t *s, const char *extra) {
    char opts[2048];
    snprintf(opts, sizeof opts,
             "client_tls_sslmode = allow\n"
             "client_tls_cert_file = %s\nclient_tls_key_file = %s\n%s",
             tls_file("server.crt"), tls_file("server.key"), extra ? extra : "");
    it_sluice_start(s, opts, NULL);
}

/* A raw connection that sent an SSLRequest and read sluice's 'S'. */
static int ssl_requested(const it_sluice_t *s) {
    int fd = it_raw_connect(s);
    IT_ASSERT(fd >= 0, "raw connect");
    uint32_t req[2] = {htonl(8), htonl(80877103)};
    IT_ASSERT(write(fd, req, 8) == 8, "SSLRequest");
    char yes = 0;
    IT_ASSERT(read(fd, &yes, 1) == 1 && yes == 'S', "SSLRequest answered %c", yes);
    return fd;
}

/* A TLS handshake with exactly version v (security level 0 on the client
 * side, so that only sluice can refuse it); returns the SSL on success or
 * NULL, and the reason OpenSSL gave in why. */
static SSL *handshake(const it_sluice_t *s, int v, char *why, size_t cap, int *fdp) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    IT_ASSERT(ctx, "SSL_CTX_new");
    SSL_CTX_set_security_level(ctx, 0);
    SSL_CTX_set_min_proto_version(ctx, v);
    SSL_CTX_set_max_proto_version(ctx, v);
    /* TLS 1.0 and 1.1 need the old ciphers back on the client side. */
    SSL_CTX_set_cipher_list(ctx, "ALL:@SECLEVEL=0");
    int fd = ssl_requested(s);
    SSL *ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    SSL_set_fd(ssl, fd);
    ERR_clear_error();
    if (SSL_connect(ssl) == 1) {
        *fdp = fd;
        return ssl;
    }
    snprintf(why, cap, "%s", ERR_reason_error_string(ERR_peek_last_error()) ?: "no reason");
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
    return NULL;
}

static void tls_versions(void) {
    it_sluice_t s;
    start_tls_sluice(&s, NULL);
    char why[256];
    int fd;
    const struct {
        int v;
        const char *name;
    } old[] = {{TLS1_VERSION, "TLSv1.0"}, {TLS1_1_VERSION, "TLSv1.1"}};
    for (int i = 0; i < 2; i++) {
        int before = it_log_count(&s, "TLS");
        SSL *ssl = handshake(&s, old[i].v, why, sizeof why, &fd);
        IT_ASSERT(!ssl, "a %s handshake succeeded by default", old[i].name);
        /* Refused for its version, by sluice (not for a cipher the client
         * lacked): sluice logs the reason. */
        IT_ASSERT(it_log_wait(&s, "TLS", before + 1, 5) > before, "the refusal is logged");
        printf("ok: %s refused (%s)\n", old[i].name, why);
    }
    IT_ASSERT(it_log_count(&s, "unsupported protocol") >= 2 ||
                  it_log_count(&s, "version too low") >= 2,
              "the refusals name the protocol version");
    /* The same client code gets TLS 1.2 and 1.3: the refusals were about
     * the version. */
    const int good[] = {TLS1_2_VERSION, TLS1_3_VERSION};
    for (int i = 0; i < 2; i++) {
        SSL *ssl = handshake(&s, good[i], why, sizeof why, &fd);
        IT_ASSERT(ssl, "a TLS 1.%d handshake failed: %s", 2 + i, why);
        SSL_free(ssl);
        close(fd);
    }
    it_sluice_stop(&s, 9);
}

/* Waits up to secs for the peer to close fd (read returns 0 or an error);
 * returns the seconds it took, or -1. */
static double closed_within(int fd, double secs) {
    struct timeval tv = {.tv_sec = (time_t)secs};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    double t0 = it_now();
    char buf[4096];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            return it_now() - t0;
        if (r < 0 && it_now() - t0 >= secs) return -1;
    }
}

static void tls_stalls(void) {
    it_sluice_t s;
    start_tls_sluice(&s, "client_login_timeout = 1\n");
    /* SSLRequest, 'S', then nothing: no ClientHello. */
    int fd = ssl_requested(&s);
    double took = closed_within(fd, 10);
    IT_ASSERT(took >= 0, "a client stalled before its ClientHello was not closed in 10 s");
    close(fd);
    printf("ok: stalled before the ClientHello, closed after %.1f s\n", took);
    /* Half a ClientHello: stalled inside the handshake. */
    fd = ssl_requested(&s);
    static const unsigned char hello_start[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00};
    IT_ASSERT(write(fd, hello_start, sizeof hello_start) == (ssize_t)sizeof hello_start, "send");
    took = closed_within(fd, 10);
    IT_ASSERT(took >= 0, "a client stalled inside the handshake was not closed in 10 s");
    close(fd);
    printf("ok: stalled inside the handshake, closed after %.1f s\n", took);
    /* A finished handshake, then no startup packet: closed, with an error
     * sent over TLS. */
    char why[256];
    SSL *ssl = handshake(&s, TLS1_3_VERSION, why, sizeof why, &fd);
    IT_ASSERT(ssl, "handshake: %s", why);
    double t0 = it_now();
    char body[512], hdr[5];
    int r = SSL_read(ssl, hdr, 5);
    IT_ASSERT(r <= 0 || hdr[0] == 'E', "no startup: got %c", hdr[0]);
    if (r > 0) {
        r = SSL_read(ssl, body, sizeof body - 1);
        body[r > 0 ? r : 0] = '\0';
        /* body: severity, SQLSTATE, message fields, NUL-separated */
        bool found = false;
        for (int i = 0; i < r; i += (int)strlen(body + i) + 1)
            if (strstr(body + i, "client_login_timeout")) found = true;
        IT_ASSERT(found, "the error names client_login_timeout");
    }
    IT_ASSERT(SSL_read(ssl, hdr, 1) <= 0, "closed after the error");
    IT_ASSERT(it_now() - t0 < 10, "closed within 10 s");
    printf("ok: stalled after the handshake, closed after %.1f s\n", it_now() - t0);
    SSL_free(ssl);
    close(fd);
    IT_ASSERT(it_log_wait(&s, "client_login_timeout", 3, 5) >= 3, "three timeouts logged");
    /* A TLS client that does log in is served. Its TLS handshake and
     * SCRAM exchange may take more than a second on a loaded machine (an
     * ASan build beside other builds): the console (over the Unix socket,
     * as the user running sluice) gives it longer first. */
    char ci[512];
    snprintf(ci, sizeof ci, "host=%s port=%d dbname=pgbouncer user=pgbouncer", s.dir, s.port);
    PGconn *adm = PQconnectdb(ci);
    IT_ASSERT(PQstatus(adm) == CONNECTION_OK, "console: %s", PQerrorMessage(adm));
    it_exec(adm, "SET client_login_timeout = 30");
    PQfinish(adm);
    snprintf(ci, sizeof ci, "sslmode=require sslrootcert=%s", tls_file("ca.crt"));
    PGconn *c = it_connect(&s, "sl_scram", ci);
    IT_ASSERT(PQsslInUse(c) && !strcmp(it_value(c, "SELECT 6"), "6"), "TLS client served");
    PQfinish(c);
    it_sluice_stop(&s, 9);
}

/* ---- health check logins ---- */

/* A replica's health check logs in with SCRAM keys derived from the
 * configured password. Its login used to point at a copy of the pool's
 * keys on a stack frame gone by the time the backend's server-first came:
 * read (and written) after return. Under ASan with
 * detect_stack_use_after_return (CTest sets it for this test) sluice died
 * there; valgrind saw a jump on uninitialised bytes. */
static void probe_login(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\nhealth_check_period = 0.2\n",
                    "rt = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
                    "replicas=127.0.0.1:{REPLICA1},127.0.0.1:{REPLICA2} routing=auto\n");
    PGconn *c = it_connect_db(&s, "sl_scram", "rt", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "connect rt: %s", PQerrorMessage(c));
    /* A read answered by a replica: its check logged in and admitted it. */
    double deadline = it_now() + 20;
    while (strcmp(it_value(c, "SELECT pg_is_in_recovery()"), "t") != 0) {
        IT_ASSERT(it_now() < deadline, "no read reached a replica in 20 s");
        usleep(100000);
    }
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "sluice exited cleanly after its checks");
    printf("ok: health checks logged in to both replicas, sluice exited cleanly\n");
}

int main(void) {
    it_init("it_security");
    IT_ASSERT(it_cl.tlsdir[0], "the cluster fixture has no TLS (CLUSTER_TLS=1)");
    console_stats_user();
    http_endpoint();
    tls_versions();
    tls_stalls();
    probe_login();
    return it_done();
}
