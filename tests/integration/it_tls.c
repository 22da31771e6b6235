/* TLS on both sides, with the throwaway CA the cluster fixture made:
 * verify-full from libpq to sluice, plain text refused under require,
 * client certificates under verify-ca, backend TLS to a role the primary
 * only admits over TLS, a wrong backend root CA, large results through TLS
 * on both sides, a reload with a bad certificate, and plain bytes after an
 * SSLRequest. */
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "delay.h"
#include "harness.h"

static char opts[2048];

static const char *tls_file(const char *name) {
    static char buf[8][400];
    static int i;
    char *b = buf[i++ % 8];
    snprintf(b, 400, "%s/%s", it_cl.tlsdir, name);
    return b;
}

static char more_dbs[256]; /* [databases] lines added by the next start() */

static void start(it_sluice_t *s, const char *mode, const char *extra) {
    snprintf(opts, sizeof opts,
             "pool_mode = transaction\n"
             "client_tls_sslmode = %s\n"
             "client_tls_cert_file = %s\nclient_tls_key_file = %s\nclient_tls_ca_file = %s\n"
             "%s",
             mode, tls_file("server.crt"), tls_file("server.key"), tls_file("ca.crt"),
             extra ? extra : "");
    char dbs[512];
    snprintf(dbs, sizeof dbs,
             "tlsdb = host=localhost port={PRIMARY} dbname=sluice_test\n"
             "plaindb = host=localhost port={PRIMARY} dbname=sluice_test sslmode=disable\n%s",
             more_dbs);
    it_sluice_start(s, opts, dbs);
}

static PGconn *tls_connect(const it_sluice_t *s, const char *user, const char *db,
                           const char *extra) {
    char ci[1024];
    snprintf(ci, sizeof ci, "host=localhost hostaddr=127.0.0.1 sslrootcert=%s %s",
             tls_file("ca.crt"), extra);
    return it_connect_db(s, user, db, ci);
}

static void client_side(void) {
    it_sluice_t s;
    start(&s, "require", NULL);
    /* verify-full: the certificate is checked against the CA and the name. */
    PGconn *c = tls_connect(&s, "sl_scram", "sluice_test", "sslmode=verify-full");
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "verify-full: %s", PQerrorMessage(c));
    IT_ASSERT(PQsslInUse(c), "TLS in use");
    const char *proto = PQsslAttribute(c, "protocol");
    IT_ASSERT(proto && (!strcmp(proto, "TLSv1.3") || !strcmp(proto, "TLSv1.2")), "protocol %s",
              proto ? proto : "?");
    IT_ASSERT(!strcmp(it_value(c, "SELECT 6 * 7"), "42"), "query over TLS");
    PQfinish(c);
    /* Plain text is refused with a message that says what to do. */
    c = it_connect_db(&s, "sl_scram", "sluice_test", "sslmode=disable");
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD && strstr(PQerrorMessage(c), "TLS required"),
              "plain text refused: %s", PQerrorMessage(c));
    PQfinish(c);
    /* A name that is not in the certificate fails verify-full. */
    char ci[1024];
    snprintf(ci, sizeof ci,
             "host=db.example hostaddr=127.0.0.1 port=%d dbname=sluice_test user=sl_scram "
             "password=scram_pw sslmode=verify-full sslrootcert=%s",
             s.port, tls_file("ca.crt"));
    c = PQconnectdb(ci);
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD && strstr(PQerrorMessage(c), "does not match"),
              "wrong host name refused by verify-full: %s", PQerrorMessage(c));
    PQfinish(c);
    /* An SSLRequest followed by plain bytes is refused (they were not
     * protected by the handshake). */
    int fd = it_raw_connect(&s);
    unsigned char req[16] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f, 'Q', 0, 0, 0, 5, 'x'};
    IT_ASSERT(write(fd, req, 14) == 14, "send");
    char body[256] = "";
    int t = it_raw_read_msg(fd, body, sizeof body - 1);
    (void)t;
    close(fd);
    IT_ASSERT(it_log_wait(&s, "received unencrypted data after the SSL request", 1, 5) == 1,
              "plain bytes after SSLRequest refused");
    /* A reload with a certificate that does not load keeps the running
     * context and says why. */
    FILE *f = fopen(s.ini, "a");
    fprintf(f, "client_tls_cert_file = %s/missing.crt\n", it_cl.tlsdir);
    fclose(f);
    kill(s.pid, SIGHUP);
    IT_ASSERT(it_log_wait(&s, "client TLS settings refused", 1, 5) == 1, "bad reload logged");
    c = tls_connect(&s, "sl_scram", "sluice_test", "sslmode=verify-full");
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "TLS still works after the bad reload: %s",
              PQerrorMessage(c));
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* SIGHUP turns client TLS on: the files are read then, no restart. */
static void reload_enables_tls(void) {
    it_sluice_t s;
    start(&s, "disable", NULL);
    PGconn *c = tls_connect(&s, "sl_scram", "sluice_test", "sslmode=prefer");
    IT_ASSERT(PQstatus(c) == CONNECTION_OK && !PQsslInUse(c), "plain text while disabled: %s",
              PQerrorMessage(c));
    PQfinish(c);
    FILE *f = fopen(s.ini, "a");
    fprintf(f, "client_tls_sslmode = require\n");
    fclose(f);
    kill(s.pid, SIGHUP);
    IT_ASSERT(it_log_wait(&s, "configuration reloaded", 1, 5) == 1, "reloaded");
    c = tls_connect(&s, "sl_scram", "sluice_test", "sslmode=verify-full");
    IT_ASSERT(PQstatus(c) == CONNECTION_OK && PQsslInUse(c), "TLS after the reload: %s",
              PQerrorMessage(c));
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void client_certs(void) {
    it_sluice_t s;
    start(&s, "verify-ca", NULL);
    char extra[1024];
    snprintf(extra, sizeof extra, "sslmode=verify-full sslcert=%s sslkey=%s",
             tls_file("client.crt"), tls_file("client.key"));
    PGconn *c = tls_connect(&s, "sl_scram", "sluice_test", extra);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "client certificate from the CA: %s",
              PQerrorMessage(c));
    IT_ASSERT(!strcmp(it_value(c, "SELECT 1"), "1"), "query");
    PQfinish(c);
    snprintf(extra, sizeof extra, "sslmode=verify-full sslcert=%s sslkey=%s",
             tls_file("otherclient.crt"), tls_file("otherclient.key"));
    c = tls_connect(&s, "sl_scram", "sluice_test", extra);
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD, "certificate from another CA refused");
    PQfinish(c);
    c = tls_connect(&s, "sl_scram", "sluice_test", "sslmode=verify-full sslcert=/nonexistent");
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD, "no certificate refused");
    PQfinish(c);
    IT_ASSERT(it_log_wait(&s, "TLS handshake failed", 2, 5) >= 2, "refusals logged with a reason");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void backend(void) {
    it_sluice_t s;
    char extra[1024];
    snprintf(extra, sizeof extra, "server_tls_sslmode = verify-full\nserver_tls_ca_file = %s\n",
             tls_file("ca.crt"));
    start(&s, "require", extra);
    /* sl_tls is admitted by the primary only over TLS (hostssl). */
    PGconn *c = tls_connect(&s, "sl_tls", "tlsdb", "sslmode=verify-full");
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "backend TLS login: %s", PQerrorMessage(c));
    IT_ASSERT(!strcmp(it_value(c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"), "t"),
              "the backend connection is encrypted");
    /* A database's own sslmode overrides server_tls_sslmode: in plain text
     * the primary refuses sl_tls (hostnossl ... reject). */
    PGconn *p = tls_connect(&s, "sl_tls", "plaindb", "sslmode=verify-full");
    IT_ASSERT(PQstatus(p) == CONNECTION_BAD && strstr(PQerrorMessage(p), "no encryption"),
              "per-database sslmode=disable used: %s", PQerrorMessage(p));
    PQfinish(p);
    /* 100k rows in and out, and 2 x 200 MB of results, through TLS both ways. */
    it_copy_round_trip(c, "it_tls_copy");
    it_stream_400mb(c);
    /* A slow reader: sluice's TLS writes meet a full socket again and again
     * (SSL_write retried after EAGAIN) and the backend is held back. */
    PGresult *r = PQexec(c, "COPY (SELECT i, repeat('z', 200) FROM generate_series(1, 100000) i) "
                            "TO STDOUT");
    IT_ASSERT(PQresultStatus(r) == PGRES_COPY_OUT, "slow copy: %s", PQerrorMessage(c));
    PQclear(r);
    long rows = 0, sum = 0;
    char *buf;
    int n;
    while ((n = PQgetCopyData(c, &buf, 0)) > 0) {
        sum += atol(buf);
        PQfreemem(buf);
        if (++rows % 2000 == 0) usleep(20000);
    }
    while ((r = PQgetResult(c)))
        PQclear(r);
    IT_ASSERT(rows == 100000 && sum == 5000050000L, "slow reader got every row: %ld %ld", rows,
              sum);
    long hwm = it_sluice_vmhwm_kb(&s);
    printf("sluice VmHWM after 400 MB through TLS on both sides: %ld kB\n", hwm);
    /* Under ASan each worker adds what ASan keeps per thread and what its
     * quarantine holds of the memory the worker freed, none of it live:
     * measured 57 MB with one worker and 69 MB with two, against 14.1 and
     * 14.2 MB in a plain build, and 36.4 and 36.9 MB under ASan with
     * quarantine_size_mb=0 (idle after start: 27.4 and 32.0 MB, 12.0 and
     * 12.0 MB plain). So the bound grows by 16 MB per worker past the
     * first under ASan only. */
    long bound_kb = 64 * 1024 + (IT_RSS_CHECKED ? 0 : 16 * 1024 * (it_workers() - 1));
    IT_ASSERT(hwm > 0 && hwm < bound_kb, "bounded memory: %ld kB (bound %ld kB)", hwm, bound_kb);
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");

    /* A wrong root CA for the backend: a clear error, not a hang. */
    snprintf(extra, sizeof extra, "server_tls_sslmode = verify-full\nserver_tls_ca_file = %s\n",
             tls_file("otherca.crt"));
    start(&s, "require", extra);
    double t0 = it_now();
    c = tls_connect(&s, "sl_tls", "tlsdb", "sslmode=verify-full");
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD &&
                  strstr(PQerrorMessage(c), "certificate verify failed"),
              "wrong backend CA reported: %s", PQerrorMessage(c));
    IT_ASSERT(it_now() - t0 < 10, "no hang");
    IT_ASSERT(it_log_wait(&s, "certificate verify failed", 1, 5) >= 1, "logged with the reason");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* auth_type = hba: cert authentication for sl_scram over TLS, md5 for
 * sl_md5 only without TLS, everything else from 127.0.0.1 rejected. */
static void hba(void) {
    it_sluice_t s;
    char path[400], extra[1024];
    snprintf(path, sizeof path, "%s/it_hba.conf", it_cl.tlsdir);
    FILE *f = fopen(path, "w");
    fprintf(f, "# sluice test\n"
               "hostssl sluice_test sl_scram 127.0.0.1/32 cert\n"
               "hostnossl all sl_md5 127.0.0.1 255.255.255.255 md5\n"
               "host all all 127.0.0.0/8 reject\n");
    fclose(f);
    snprintf(extra, sizeof extra, "auth_type = hba\nauth_hba_file = %s\n", path);
    start(&s, "prefer", extra);
    char ci[1024];
    snprintf(ci, sizeof ci, "sslmode=verify-full sslcert=%s sslkey=%s password=wrong",
             tls_file("client.crt"), tls_file("client.key"));
    PGconn *c = tls_connect(&s, "sl_scram", "sluice_test", ci);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "cert authentication: %s", PQerrorMessage(c));
    IT_ASSERT(!strcmp(it_value(c, "SELECT current_user"), "sl_scram"), "runs as sl_scram");
    PQfinish(c);
    c = tls_connect(&s, "sl_scram", "sluice_test", "sslmode=verify-full");
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD &&
                  strstr(PQerrorMessage(c), "certificate authentication failed"),
              "no certificate, no login: %s", PQerrorMessage(c));
    PQfinish(c);
    c = it_connect_db(&s, "sl_md5", "sluice_test", "sslmode=disable");
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "md5 without TLS: %s", PQerrorMessage(c));
    PQfinish(c);
    c = tls_connect(&s, "sl_md5", "sluice_test", "sslmode=require password=md5_pw");
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD && strstr(PQerrorMessage(c), "auth_hba_file"),
              "hostnossl: sl_md5 over TLS refused: %s", PQerrorMessage(c));
    PQfinish(c);
    c = it_connect_db(&s, "sl_scram", "postgres", "sslmode=disable");
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD && strstr(PQerrorMessage(c), "a reject line"),
              "rejected by database: %s", PQerrorMessage(c));
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    /* A malformed line: sluice --check names file and line. */
    f = fopen(path, "a");
    fprintf(f, "host all all 127.0.0.1/33 md5\n");
    fclose(f);
    char cmd[1200], out[1024] = "";
    snprintf(cmd, sizeof cmd, "%s --check %s 2>&1", getenv("SLUICE_BIN"), s.ini);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int rc = pclose(p);
    IT_ASSERT(rc != 0 && strstr(out, "it_hba.conf:5: invalid mask length \"33\""), "--check: %s",
              out);
}

/* sluice's own backend login (auth_file has only the SCRAM verifier) over
 * TLS: verify-full to the hostssl-only role works, a wrong CA does not. */
static void own_login_tls(void) {
    PGconn *d = it_direct();
    char verifier[512], path[400], extra[1400];
    snprintf(verifier, sizeof verifier, "%s",
             it_value(d, "SELECT rolpassword FROM pg_authid WHERE rolname = 'sl_tls'"));
    PQfinish(d);
    snprintf(path, sizeof path, "%s/own-userlist.txt", it_cl.tlsdir);
    FILE *f = fopen(path, "w");
    fprintf(f, "\"sl_tls\" \"%s\"\n", verifier);
    fclose(f);
    const char *cas[] = {"ca.crt", "otherca.crt"};
    /* cutdb reaches the primary through a relay that cuts its first two
     * connections in the middle of the TLS handshake, as a restarting
     * backend does: sluice retries while the client waits, and the login
     * goes through on the third. */
    it_delay_t *relay = it_delay_start(it_cl.primary);
    snprintf(more_dbs, sizeof more_dbs, "cutdb = host=localhost port=%d dbname=sluice_test\n",
             it_delay_port(relay));
    for (int i = 0; i < 2; i++) {
        it_sluice_t s;
        snprintf(extra, sizeof extra,
                 "auth_file = %s\nserver_tls_sslmode = verify-full\nserver_tls_ca_file = %s\n",
                 path, tls_file(cas[i]));
        start(&s, "require", extra);
        PGconn *c = tls_connect(&s, "sl_tls", "tlsdb", "sslmode=verify-full");
        if (i == 0) {
            IT_ASSERT(PQstatus(c) == CONNECTION_OK, "own login over TLS: %s", PQerrorMessage(c));
            IT_ASSERT(
                !strcmp(it_value(c, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"),
                        "t"),
                "encrypted");
            IT_ASSERT(!strcmp(it_value(c, "SELECT current_user"), "sl_tls"), "as sl_tls");
            it_delay_cut(relay, 2);
            PGconn *cut = tls_connect(&s, "sl_tls", "cutdb", "sslmode=verify-full");
            IT_ASSERT(PQstatus(cut) == CONNECTION_OK,
                      "a handshake cut twice is retried, the login goes through: %s",
                      PQerrorMessage(cut));
            IT_ASSERT(!strcmp(it_value(cut, "SELECT 'through'"), "through"), "and queries run");
            IT_ASSERT(it_log_count(&s, "retrying while clients wait") >= 1,
                      "the cut is logged as one to retry");
            PQfinish(cut);
        } else {
            IT_ASSERT(PQstatus(c) == CONNECTION_BAD &&
                          strstr(PQerrorMessage(c), "certificate verify failed"),
                      "own login with a wrong CA: %s", PQerrorMessage(c));
        }
        PQfinish(c);
        IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    }
}

int main(void) {
    it_init("it_tls");
    IT_ASSERT(it_cl.tlsdir[0], "the cluster was started without TLS (CLUSTER_TLS=1)");
    client_side();
    reload_enables_tls();
    client_certs();
    backend();
    hba();
    own_login_tls();
    return it_done();
}
