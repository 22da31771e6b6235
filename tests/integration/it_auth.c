/* Client authentication: trust, md5, scram-sha-256 and plain; success and
 * failure; unknown users fail exactly like wrong passwords; a SCRAM verifier
 * in auth_file works; an md5 hash in auth_file works for md5. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static void expect_login(const it_sluice_t *s, const char *user, const char *pw, bool ok,
                         const char *what) {
    char ci[512];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d dbname=sluice_test user=%s password=%s",
             s->port, user, pw);
    PGconn *c = PQconnectdb(ci);
    if (ok) {
        IT_ASSERT(PQstatus(c) == CONNECTION_OK, "%s: %s", what, PQerrorMessage(c));
        IT_ASSERT(!strcmp(it_value(c, "SELECT current_user"), user), "%s: backend user", what);
    } else {
        IT_ASSERT(PQstatus(c) == CONNECTION_BAD, "%s: login should fail", what);
        char want[128];
        snprintf(want, sizeof want, "password authentication failed for user \"%s\"", user);
        IT_ASSERT(strstr(PQerrorMessage(c), want), "%s: message was: %s", what, PQerrorMessage(c));
    }
    PQfinish(c);
}

/* The SQLSTATE of a failed login, read from the raw protocol through libpq's
 * error text is not possible: check 28P01 via a raw md5 exchange instead. */
static void raw_wrong_password_code(const it_sluice_t *s) {
    int fd = it_raw_connect(s);
    IT_ASSERT(fd >= 0, "raw connect");
    unsigned char pkt[128];
    size_t n = 8;
    const char *kv[] = {"user", "nobody_here", "database", "sluice_test"};
    for (int i = 0; i < 4; i++) {
        memcpy(pkt + n, kv[i], strlen(kv[i]) + 1);
        n += strlen(kv[i]) + 1;
    }
    pkt[n++] = 0;
    pkt[0] = 0, pkt[1] = 0, pkt[2] = (unsigned char)(n >> 8), pkt[3] = (unsigned char)n;
    pkt[4] = 0, pkt[5] = 3, pkt[6] = 0, pkt[7] = 0;
    IT_ASSERT(write(fd, pkt, n) == (ssize_t)n, "send startup");
    char body[512];
    int t = it_raw_read_msg(fd, body, sizeof body);
    IT_ASSERT(t == 'R', "auth request for unknown user (got %d)", t);
    /* md5 auth: any 35-byte answer */
    unsigned char pm[64] = {'p', 0, 0, 0, 40};
    memcpy(pm + 5, "md500000000000000000000000000000000", 36);
    IT_ASSERT(write(fd, pm, 41) == 41, "send password");
    memset(body, 0, sizeof body);
    t = it_raw_read_msg(fd, body, sizeof body);
    IT_ASSERT(t == 'E', "error after wrong password (got %d)", t);
    bool has = false;
    for (int i = 0; i < (int)sizeof body - 6; i++)
        if (body[i] == 'C' && !memcmp(body + i + 1, "28P01", 5)) has = true;
    IT_ASSERT(has, "SQLSTATE 28P01");
    close(fd);
}

/* auth_file holds only what PostgreSQL stores (a SCRAM verifier, an md5
 * hash), no password anywhere: sluice logs in to the backend itself, with
 * the ClientKey the client's own SCRAM proof revealed (pass-through) or the
 * md5 hash. Transaction pooling, several servers, cancel. */
static void passthrough(void) {
    PGconn *d = it_direct();
    char verifier[512], md5[64];
    snprintf(verifier, sizeof verifier, "%s",
             it_value(d, "SELECT rolpassword FROM pg_authid WHERE rolname = 'sl_scram'"));
    snprintf(md5, sizeof md5, "%s",
             it_value(d, "SELECT rolpassword FROM pg_authid WHERE rolname = 'sl_md5'"));
    PQfinish(d);
    IT_ASSERT(!strncmp(md5, "md5", 3), "sl_md5 has an md5 hash: %s", md5);
    it_sluice_t s;
    char opts[1200], path[400];
    snprintf(path, sizeof path, "/tmp/sluice-it-userlist-%d.txt", (int)getpid());
    FILE *f = fopen(path, "w");
    fprintf(f, "\"sl_scram\" \"%s\"\n\"sl_md5\" \"%s\"\n", verifier, md5);
    fclose(f);
    snprintf(opts, sizeof opts,
             "auth_type = scram-sha-256\nauth_file = %s\npool_mode = transaction\n"
             "default_pool_size = 2\n",
             path);
    it_sluice_start(&s, opts, NULL);
    PGconn *c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = it_connect(&s, i % 2 ? "sl_md5" : "sl_scram", NULL);
        it_exec(c[i], "BEGIN");
        IT_ASSERT(!strcmp(it_value(c[i], "SELECT current_user"), i % 2 ? "sl_md5" : "sl_scram"),
                  "runs on the backend as its user");
        it_exec(c[i], "COMMIT");
    }
    for (int round = 0; round < 20; round++)
        for (int i = 0; i < 4; i++)
            it_exec(c[i], "SELECT 1");
    /* A cancel reaches a server sluice logged in to itself. */
    IT_ASSERT(PQsendQuery(c[0], "SELECT pg_sleep(30)"), "send");
    usleep(300000);
    PGcancel *pc = PQgetCancel(c[0]);
    char err[256];
    IT_ASSERT(PQcancel(pc, err, sizeof err), "cancel sent: %s", err);
    PQfreeCancel(pc);
    PGresult *r = PQgetResult(c[0]);
    IT_ASSERT(r && !strcmp(PQresultErrorField(r, PG_DIAG_SQLSTATE)
                               ? PQresultErrorField(r, PG_DIAG_SQLSTATE)
                               : "",
                           "57014"),
              "canceled: %s", PQresultErrorMessage(r));
    PQclear(r);
    while ((r = PQgetResult(c[0])))
        PQclear(r);
    for (int i = 0; i < 4; i++)
        PQfinish(c[i]);
    /* A wrong password still fails at sluice, before any backend login. */
    PGconn *bad = it_connect_db(&s, "sl_scram", "sluice_test", "password=wrong");
    IT_ASSERT(PQstatus(bad) == CONNECTION_BAD && strstr(PQerrorMessage(bad), "password"),
              "wrong password: %s", PQerrorMessage(bad));
    PQfinish(bad);
    IT_ASSERT(it_log_count(&s, "scram_pw") == 0 && it_log_count(&s, "md5_pw") == 0 &&
                  it_log_count(&s, verifier) == 0,
              "no secret in the log");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    unlink(path);
}

/* auth_user + auth_query: roles created in PostgreSQL after sluice started
 * log in (SCRAM and md5) with no file change, their queries run as them;
 * wrong passwords and unknown users fail alike; a dropped role cannot log
 * in once the cached answer expires. With auth_cache_ttl = 0 (every client
 * login asks again) the backend login still has the answer the client
 * logged in with. */
static void auth_query(const char *ttl) {
    PGconn *d = it_direct();
    it_exec(d, "DROP ROLE IF EXISTS sl_aq_scram");
    it_exec(d, "DROP ROLE IF EXISTS sl_aq_md5");
    it_sluice_t s;
    char opts[160];
    snprintf(opts, sizeof opts,
             "auth_type = scram-sha-256\nauth_user = postgres\nauth_cache_ttl = %s\n"
             "pool_mode = transaction\n",
             ttl);
    it_sluice_start(&s, opts, NULL);
    it_exec(d, "SET password_encryption = 'scram-sha-256'");
    it_exec(d, "CREATE ROLE sl_aq_scram LOGIN PASSWORD 'aq_pw'");
    it_exec(d, "SET password_encryption = 'md5'");
    it_exec(d, "CREATE ROLE sl_aq_md5 LOGIN PASSWORD 'aq_md5_pw'");
    const char *users[] = {"sl_aq_scram", "sl_aq_md5"}, *pws[] = {"aq_pw", "aq_md5_pw"};
    for (int i = 0; i < 2; i++) {
        char extra[64];
        snprintf(extra, sizeof extra, "password=%s", pws[i]);
        PGconn *c = it_connect_db(&s, users[i], "sluice_test", extra);
        IT_ASSERT(PQstatus(c) == CONNECTION_OK, "%s via auth_query (ttl %s): %s", users[i], ttl,
                  PQerrorMessage(c));
        IT_ASSERT(!strcmp(it_value(c, "SELECT current_user"), users[i]), "runs as %s (ttl %s)",
                  users[i], ttl);
        PQfinish(c);
        c = it_connect_db(&s, users[i], "sluice_test", "password=wrong");
        IT_ASSERT(PQstatus(c) == CONNECTION_BAD &&
                      strstr(PQerrorMessage(c), "password authentication failed"),
                  "%s with a wrong password: %s", users[i], PQerrorMessage(c));
        PQfinish(c);
    }
    PGconn *c = it_connect_db(&s, "sl_aq_nobody", "sluice_test", "password=x");
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD &&
                  strstr(PQerrorMessage(c), "password authentication failed"),
              "unknown user fails like a wrong password: %s", PQerrorMessage(c));
    PQfinish(c);
    it_exec(d, "DROP ROLE sl_aq_scram");
    usleep((useconds_t)(atof(ttl) * 1e6) + 200 * 1000); /* auth_cache_ttl */
    c = it_connect_db(&s, "sl_aq_scram", "sluice_test", "password=aq_pw");
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD, "a dropped role cannot log in any more");
    PQfinish(c);
    IT_ASSERT(it_log_count(&s, "aq_pw") == 0 && it_log_count(&s, "aq_md5_pw") == 0,
              "no password in the log");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    it_exec(d, "DROP ROLE sl_aq_md5");
    PQfinish(d);
}

int main(void) {
    it_init("it_auth");
    it_sluice_t s;

    it_sluice_start(&s, "auth_type = scram-sha-256\n", NULL);
    expect_login(&s, "sl_scram", "scram_pw", true, "scram ok");
    expect_login(&s, "sl_scram", "wrong", false, "scram wrong password");
    expect_login(&s, "ghost", "whatever", false, "scram unknown user");
    /* md5 user (hash known only as md5 by the backend) logs in to sluice with SCRAM */
    expect_login(&s, "sl_md5", "md5_pw", true, "scram for md5 backend user");
    IT_ASSERT(it_log_count(&s, "scram_pw") == 0 && it_log_count(&s, "md5_pw") == 0,
              "no password in the log");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");

    it_sluice_start(&s, "auth_type = md5\n", NULL);
    expect_login(&s, "sl_md5", "md5_pw", true, "md5 ok");
    expect_login(&s, "sl_md5", "nope", false, "md5 wrong password");
    expect_login(&s, "ghost", "nope", false, "md5 unknown user");
    raw_wrong_password_code(&s);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");

    it_sluice_start(&s, "auth_type = trust\n", NULL);
    expect_login(&s, "sl_scram", "anything", true, "trust");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");

    it_sluice_start(&s, "auth_type = plain\n", NULL);
    expect_login(&s, "sl_scram", "scram_pw", true, "plain ok");
    expect_login(&s, "sl_scram", "bad", false, "plain wrong");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");

    /* auth_file with a SCRAM verifier (client side) and an md5 hash; the
     * backend password comes from the database's connection string. */
    PGconn *d = it_direct();
    char verifier[512];
    snprintf(verifier, sizeof verifier, "%s",
             it_value(d, "SELECT rolpassword FROM pg_authid WHERE rolname = 'sl_scram'"));
    PQfinish(d);
    it_sluice_start(&s, "auth_type = scram-sha-256\n",
                    "scramdb = host=127.0.0.1 port={PRIMARY} dbname=sluice_test password=scram_pw");
    char path[400];
    snprintf(path, sizeof path, "%s/userlist.txt", s.dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "\"sl_scram\" \"%s\"\n\"sl_md5\" \"md5%s\"\n", verifier,
            "00000000000000000000000000000000");
    fclose(f);
    kill(s.pid, SIGHUP); /* reload picks up the new auth_file */
    double deadline = it_now() + 5;
    while (it_log_count(&s, "configuration reloaded") == 0 && it_now() < deadline)
        usleep(20000);
    IT_ASSERT(it_log_count(&s, "configuration reloaded") == 1, "reload logged");
    PGconn *c = it_connect_db(&s, "sl_scram", "scramdb", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "verifier login: %s", PQerrorMessage(c));
    IT_ASSERT(!strcmp(it_value(c, "SELECT current_user"), "sl_scram"), "user");
    PQfinish(c);
    c = it_connect_db(&s, "sl_scram", "scramdb", "password=wrong");
    IT_ASSERT(PQstatus(c) == CONNECTION_BAD, "verifier rejects a wrong password");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    passthrough();
    auth_query("1");
    auth_query("0");
    return it_done();
}
