/* Startup details a raw client sees, compared with what PostgreSQL 15 does:
 * a 3.2 startup with "_pq_." protocol options is answered with
 * NegotiateProtocolVersion (3.0, the options listed) before authentication
 * and the options never reach the server as settings; a second SSLRequest
 * inside TLS is refused with 08P01; --check and reload refuse a libpq value
 * libpq itself would only refuse when connecting; replicas on the '*' entry
 * serve every database it makes. */
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static uint32_t be32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

/* A startup packet of the given version with NULL-ended name/value pairs. */
static int build_startup(char *pkt, size_t cap, uint32_t version, const char *const *kv) {
    size_t n = 8;
    for (int i = 0; kv[i]; i++)
        n += (size_t)snprintf(pkt + n, cap - n, "%s", kv[i]) + 1;
    pkt[n++] = 0;
    uint32_t l = htonl((uint32_t)n), v = htonl(version);
    memcpy(pkt, &l, 4), memcpy(pkt + 4, &v, 4);
    return (int)n;
}

/* Sends a simple query on a raw connection; returns the first column of
 * its first row ("(null)" for NULL, "" for none) after ReadyForQuery. */
static const char *raw_value(int fd, const char *sql) {
    static char val[256];
    char q[512];
    uint32_t l = htonl((uint32_t)(4 + strlen(sql) + 1));
    q[0] = 'Q';
    memcpy(q + 1, &l, 4);
    memcpy(q + 5, sql, strlen(sql) + 1);
    size_t n = 5 + strlen(sql) + 1;
    IT_ASSERT(write(fd, q, n) == (ssize_t)n, "send query");
    val[0] = '\0';
    char body[1024];
    int t;
    while ((t = it_raw_read_msg(fd, body, sizeof body)) != 'Z') {
        IT_ASSERT(t > 0 && t != 'E', "query %s failed: %s", sql, t == 'E' ? body + 1 : "closed");
        if (t == 'D' && !val[0]) {
            int32_t len = (int32_t)be32(body + 2);
            if (len < 0)
                snprintf(val, sizeof val, "(null)");
            else
                snprintf(val, sizeof val, "%.*s", len, body + 6);
        }
    }
    return val;
}

/* Protocol 3.2 with two "_pq_." options: the first answer is
 * NegotiateProtocolVersion offering 3.0 and naming both, login goes on,
 * and the options are not settings of the session. */
static void negotiate(void) {
    it_sluice_t s;
    it_sluice_start(&s, "auth_type = trust\npool_mode = session\n", NULL);
    int fd = it_raw_connect(&s);
    IT_ASSERT(fd >= 0, "raw connect");
    const char *kv[] = {"user", "sl_scram",         "database",    "sluice_test", "_pq_.it_probe",
                        "on",   "application_name", "it_protocol", "_pq_.other",  "x",
                        NULL};
    char pkt[512];
    int n = build_startup(pkt, sizeof pkt, 196610, kv);
    IT_ASSERT(write(fd, pkt, (size_t)n) == n, "startup");
    char body[512];
    memset(body, 0, sizeof body);
    int t = it_raw_read_msg(fd, body, sizeof body);
    IT_ASSERT(t == 'v', "first answer to a 3.2 startup is NegotiateProtocolVersion, got '%c'",
              t > 0 ? t : '?');
    IT_ASSERT(be32(body) == 196608, "newest version offered: %u, want 196608 (3.0)", be32(body));
    IT_ASSERT(be32(body + 4) == 2, "options listed: %u, want 2", be32(body + 4));
    IT_ASSERT(!strcmp(body + 8, "_pq_.it_probe"), "first option: %s", body + 8);
    IT_ASSERT(!strcmp(body + 8 + strlen("_pq_.it_probe") + 1, "_pq_.other"), "second option");
    while ((t = it_raw_read_msg(fd, body, sizeof body)) != 'Z')
        IT_ASSERT(t > 0 && t != 'E', "login after negotiation: '%c' %s", t > 0 ? t : '?',
                  t == 'E' ? body + 1 : "");
    IT_ASSERT(!strcmp(raw_value(fd, "SELECT current_setting('_pq_.it_probe', true)"), "(null)"),
              "a _pq_ option was applied as a setting");
    IT_ASSERT(!strcmp(raw_value(fd, "SHOW application_name"), "it_protocol"),
              "ordinary startup parameters still applied");
    close(fd);

    /* 3.1 with no options: negotiated down with an empty list. */
    const char *plain[] = {"user", "sl_scram", "database", "sluice_test", NULL};
    fd = it_raw_connect(&s);
    n = build_startup(pkt, sizeof pkt, 196609, plain);
    IT_ASSERT(write(fd, pkt, (size_t)n) == n, "startup");
    t = it_raw_read_msg(fd, body, sizeof body);
    IT_ASSERT(t == 'v' && be32(body) == 196608 && be32(body + 4) == 0,
              "3.1: NegotiateProtocolVersion with no options, got '%c'", t > 0 ? t : '?');
    while ((t = it_raw_read_msg(fd, body, sizeof body)) != 'Z')
        IT_ASSERT(t > 0, "login 3.1");
    IT_ASSERT(!strcmp(raw_value(fd, "SELECT 6 * 7"), "42"), "query after 3.1 login");
    close(fd);

    /* 3.0 needs no negotiation; 4.0 stays refused. */
    fd = it_raw_connect(&s);
    n = build_startup(pkt, sizeof pkt, 196608, plain);
    IT_ASSERT(write(fd, pkt, (size_t)n) == n, "startup");
    t = it_raw_read_msg(fd, body, sizeof body);
    IT_ASSERT(t == 'R', "3.0: authentication first, got '%c'", t > 0 ? t : '?');
    close(fd);
    fd = it_raw_connect(&s);
    n = build_startup(pkt, sizeof pkt, 4u << 16, plain);
    IT_ASSERT(write(fd, pkt, (size_t)n) == n, "startup");
    t = it_raw_read_msg(fd, body, sizeof body);
    IT_ASSERT(t == 'E' && memmem(body, sizeof body, "C0A000", 7), "4.0 refused with 0A000");
    close(fd);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static const char *tls_file(const char *name) {
    static char buf[4][400];
    static int i;
    char *b = buf[i++ % 4];
    snprintf(b, 400, "%s/%s", it_cl.tlsdir, name);
    return b;
}

/* Reads one message through TLS; returns its type (-1 on close). */
static int tls_read_msg(SSL *ssl, char *body, int cap) {
    unsigned char hdr[5];
    int got = 0;
    while (got < 5) {
        int r = SSL_read(ssl, hdr + got, 5 - got);
        if (r <= 0) return -1;
        got += r;
    }
    uint32_t len = be32((const char *)hdr + 1);
    if (len < 4 || len - 4 > (uint32_t)cap) return -1;
    got = 0;
    while (got < (int)len - 4) {
        int r = SSL_read(ssl, body + got, (int)len - 4 - got);
        if (r <= 0) return -1;
        got += r;
    }
    return hdr[0];
}

/* Inside the TLS session an SSLRequest again: PostgreSQL calls it a
 * protocol violation; sluice used to answer 'N' and wait for more. */
static void ssl_inside_tls(void) {
    IT_ASSERT(it_cl.tlsdir[0], "the cluster was started without TLS (CLUSTER_TLS=1)");
    it_sluice_t s;
    char opts[2048];
    snprintf(opts, sizeof opts,
             "auth_type = trust\nclient_tls_sslmode = require\n"
             "client_tls_cert_file = %s\nclient_tls_key_file = %s\nclient_tls_ca_file = %s\n",
             tls_file("server.crt"), tls_file("server.key"), tls_file("ca.crt"));
    it_sluice_start(&s, opts, NULL);
    int fd = it_raw_connect(&s);
    IT_ASSERT(fd >= 0, "raw connect");
    static const unsigned char req[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
    IT_ASSERT(write(fd, req, 8) == 8, "SSLRequest");
    char answer = 0;
    IT_ASSERT(read(fd, &answer, 1) == 1 && answer == 'S', "TLS offered: '%c'", answer);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    IT_ASSERT(ctx && SSL_CTX_load_verify_locations(ctx, tls_file("ca.crt"), NULL) == 1, "CA");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    IT_ASSERT(SSL_connect(ssl) == 1, "TLS handshake: %s", ERR_error_string(ERR_get_error(), NULL));
    IT_ASSERT(SSL_write(ssl, req, 8) == 8, "second SSLRequest inside TLS");
    char body[512] = "";
    int t = tls_read_msg(ssl, body, sizeof body - 1);
    IT_ASSERT(t == 'E', "second SSLRequest refused with an error, got '%c'", t > 0 ? t : '?');
    IT_ASSERT(t != 'E' || memmem(body, sizeof body, "C08P01", 7), "SQLSTATE 08P01");
    IT_ASSERT(t != 'E' || memmem(body, sizeof body, "unsupported frontend protocol",
                                 strlen("unsupported frontend protocol")),
              "message names the protocol violation");
    /* And the connection is closed. */
    char more;
    IT_ASSERT(SSL_read(ssl, &more, 1) <= 0, "connection closed after the refusal");
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    IT_ASSERT(it_log_wait(&s, "inside an encrypted connection", 1, 5) == 1, "refusal logged");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* Runs `sluice --check` on text; returns its exit status and its output. */
static int run_check(const char *text, char *out, size_t cap) {
    char path[] = "/tmp/it_protocol-XXXXXX";
    int fd = mkstemp(path);
    IT_ASSERT(fd >= 0, "temp file");
    IT_ASSERT(write(fd, text, strlen(text)) == (ssize_t)strlen(text), "write config");
    close(fd);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' --check '%s' 2>&1", getenv("SLUICE_BIN"), path);
    FILE *p = popen(cmd, "r");
    IT_ASSERT(p, "popen");
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    unlink(path);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* A libpq value libpq would only reject at connect time (sslmode=bogus)
 * fails --check with file:line, and a reload keeps the running config. */
static void check_values(void) {
    char out[2048];
    const char *bad = "[databases]\n"
                      "ok = host=127.0.0.1 sslmode=require\n"
                      "app = host=127.0.0.1 sslmode=bogus\n"
                      "[sluice]\nlisten_addr = 127.0.0.1\nauth_type = trust\n";
    int st = run_check(bad, out, sizeof out);
    IT_ASSERT(st != 0, "--check accepted sslmode=bogus: %s", out);
    IT_ASSERT(strstr(out, ":3: database 'app': sslmode: invalid value 'bogus'"),
              "--check names file:line and the key: %s", out);
    const char *good = "[databases]\n"
                       "ok = host=127.0.0.1 sslmode=verify-full target_session_attrs=read-write\n"
                       "[sluice]\nlisten_addr = 127.0.0.1\nauth_type = trust\n";
    st = run_check(good, out, sizeof out);
    IT_ASSERT(st == 0, "--check refused valid values: %s", out);

    it_sluice_t s;
    it_sluice_start(&s, "auth_type = trust\n", NULL);
    FILE *f = fopen(s.ini, "a");
    fprintf(f, "[databases]\nbad = host=127.0.0.1 sslmode=bogus\n");
    fclose(f);
    kill(s.pid, SIGHUP);
    IT_ASSERT(it_log_wait(&s, "sslmode: invalid value 'bogus'", 1, 5) == 1,
              "reload refused the bad value");
    IT_ASSERT(it_log_count(&s, "configuration reloaded") == 0, "bad config not loaded");
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "still serving: %s", PQerrorMessage(c));
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* Where a read ran: 't' on a standby, 'f' on the primary, NULL on error. */
static const char *recovery_of(PGconn *c, const char *sql) {
    static char v[8];
    PGresult *r = PQexec(c, sql);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok) snprintf(v, sizeof v, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return ok ? v : NULL;
}

static void drop_autodb(void) {
    PGconn *d = it_direct();
    PQclear(PQexec(d, "DROP DATABASE IF EXISTS sl_autodb WITH (FORCE)"));
    PQfinish(d);
}

/* replicas= on the '*' entry: a database with no entry of its own gets
 * the entry's replicas and routing, reads go to the standbys and writes to
 * the primary; the route goes away with its pools after
 * autodb_idle_timeout and comes back on the next login. */
static void star_replicas(void) {
    drop_autodb();
    PGconn *d = it_direct();
    it_exec(d, "CREATE DATABASE sl_autodb");
    PQfinish(d);
    it_on_fail(drop_autodb);
    /* The standbys replay the new database before anyone reads from it. */
    int ports[] = {it_cl.replica1, it_cl.replica2};
    for (int i = 0; i < 2; i++) {
        PGconn *r = it_direct_port(ports[i]);
        double deadline = it_now() + 20;
        while (strcmp(it_value(r, "SELECT count(*) FROM pg_database WHERE datname = 'sl_autodb'"),
                      "1") != 0) {
            IT_ASSERT(it_now() < deadline, "replica %d never saw sl_autodb", ports[i]);
            usleep(20000);
        }
        PQfinish(r);
    }
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\nautodb_idle_timeout = 1\n",
                    "* = host=127.0.0.1 port={PRIMARY} routing=auto load_balance=round_robin "
                    "replicas=127.0.0.1:{REPLICA1},127.0.0.1:{REPLICA2}\n");
    PGconn *c = it_connect_db(&s, "sl_scram", "sl_autodb", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "login through '*': %s", PQerrorMessage(c));
    double deadline = it_now() + 10;
    const char *v;
    while (!(v = recovery_of(c, "SELECT pg_is_in_recovery()")) || strcmp(v, "t") != 0)
        IT_ASSERT(it_now() < deadline, "reads through '*' never reached a replica (last: %s)",
                  v ? v : PQerrorMessage(c));
    int on_replica = 0, seen1 = 0, seen2 = 0;
    for (int i = 0; i < 100; i++) {
        PGresult *r = PQexec(c, "SELECT pg_is_in_recovery(), inet_server_port()");
        IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "read %d: %s", i, PQerrorMessage(c));
        on_replica += !strcmp(PQgetvalue(r, 0, 0), "t");
        seen1 |= atoi(PQgetvalue(r, 0, 1)) == it_cl.replica1;
        seen2 |= atoi(PQgetvalue(r, 0, 1)) == it_cl.replica2;
        PQclear(r);
    }
    IT_ASSERT(on_replica == 100, "reads on replicas: %d of 100", on_replica);
    IT_ASSERT(seen1 && seen2, "both replicas of the '*' entry take reads");
    v = recovery_of(c, "/* sluice:primary */ SELECT pg_is_in_recovery()");
    IT_ASSERT(v && !strcmp(v, "f"), "a write goes to the primary: %s", v ? v : PQerrorMessage(c));
    IT_ASSERT(it_log_count(&s, "route db=sl_autodb") > 0 &&
                  it_log_count(&s, "(from the '*' entry)") == 1,
              "the route says where its replicas came from");
    PQfinish(c);

    /* Unused: the route closes with its pools, and the next login makes a
     * new one. */
    IT_ASSERT(it_log_wait(&s, "route closed after autodb_idle_timeout", 1, 15) == 1,
              "idle '*' route closed");
    IT_ASSERT(it_log_wait(&s, "pool removed after autodb_idle_timeout", 1, 15) >= 1,
              "its pools removed");
    c = it_connect_db(&s, "sl_scram", "sl_autodb", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "login again: %s", PQerrorMessage(c));
    deadline = it_now() + 10;
    while (!(v = recovery_of(c, "SELECT pg_is_in_recovery()")) || strcmp(v, "t") != 0)
        IT_ASSERT(it_now() < deadline, "reads after the route came back never reached a replica");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    drop_autodb();
}

int main(void) {
    it_init("it_protocol");
    negotiate();
    ssl_inside_tls();
    check_values();
    star_replicas();
    return it_done();
}
