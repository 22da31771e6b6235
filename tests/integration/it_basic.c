/* Simple and extended queries, errors, notices, the Unix socket, the `*`
 * database, session mode keeping SET, and --check. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <signal.h>

#include "harness.h"

static int notices;
static void on_notice(void *arg, const PGresult *r) {
    (void)arg;
    if (strstr(PQresultErrorMessage(r), "hello from plpgsql")) notices++;
}

static void queries(const it_sluice_t *s) {
    PGconn *c = it_connect(s, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 1 + 1"), "2"), "arithmetic");
    IT_ASSERT(!strcmp(it_value(c, "SELECT current_user"), "sl_scram"), "backend user");
    /* several statements in one Query */
    PGresult *r = PQexec(c, "SELECT 1; SELECT 'two'");
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "two"),
              "multi-statement: %s", PQerrorMessage(c));
    PQclear(r);
    /* extended protocol with parameters, binary result */
    const char *vals[] = {"20", "22"};
    r = PQexecParams(c, "SELECT $1::int + $2::int", 2, NULL, vals, NULL, NULL, 0);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "42"),
              "extended: %s", PQerrorMessage(c));
    PQclear(r);
    /* an error, then the connection still works */
    IT_ASSERT(!strcmp(it_fails(c, "SELECT * FROM no_such_table"), "42P01"), "error code");
    IT_ASSERT(!strcmp(it_value(c, "SELECT 'after error'"), "after error"), "after error");
    /* NOTICE passes through */
    PQsetNoticeReceiver(c, on_notice, NULL);
    it_exec(c, "DO $$BEGIN RAISE NOTICE 'hello from plpgsql'; END$$");
    IT_ASSERT(notices == 1, "notice relayed (%d)", notices);
    /* server parameters a real backend reports */
    const char *must[] = {"server_version", "server_encoding", "client_encoding", "DateStyle",
                          "TimeZone", "integer_datetimes", "standard_conforming_strings",
                          "IntervalStyle", "application_name", "is_superuser",
                          "session_authorization"};
    for (size_t i = 0; i < sizeof must / sizeof *must; i++)
        IT_ASSERT(PQparameterStatus(c, must[i]) != NULL, "ParameterStatus %s missing", must[i]);
    IT_ASSERT(PQbackendPID(c) > 0, "BackendKeyData");
    PQfinish(c);
}

static void unix_socket_and_fallback(const it_sluice_t *s) {
    char ci[512];
    snprintf(ci, sizeof ci, "host=%s port=%d dbname=sluice_test user=sl_scram password=scram_pw",
             s->dir, s->port);
    PGconn *c = PQconnectdb(ci);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "unix socket: %s", PQerrorMessage(c));
    IT_ASSERT(!strcmp(it_value(c, "SELECT 7"), "7"), "query over unix socket");
    PQfinish(c);
    /* template1 is not listed: served by '*' with the client's dbname */
    c = it_connect_db(s, "sl_scram", "template1", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "fallback db: %s", PQerrorMessage(c));
    IT_ASSERT(!strcmp(it_value(c, "SELECT current_database()"), "template1"), "fallback dbname");
    PQfinish(c);
}

static void session_mode(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = session\ndefault_pool_size = 1\n", NULL);
    PGconn *c = it_connect(&s, "sl_scram", "options='-c search_path=pg_catalog,public'");
    const char *sp = it_value(c, "SELECT current_schemas(false)");
    IT_ASSERT(!strcmp(sp, "{pg_catalog,public}"), "startup options applied in session mode: %s",
              sp);
    /* LISTEN/NOTIFY pass through in session mode. */
    PGconn *n = it_direct();
    it_exec(c, "LISTEN it_channel");
    it_exec(n, "NOTIFY it_channel, 'payload'");
    PGnotify *note = NULL;
    double deadline = it_now() + 5;
    while (!note && it_now() < deadline) {
        PQconsumeInput(c);
        note = PQnotifies(c);
        if (!note) usleep(20000);
    }
    IT_ASSERT(note && !strcmp(note->extra, "payload"), "notification delivered");
    PQfreemem(note);
    PQfinish(n);
    it_exec(c, "SET work_mem = '7MB'");
    it_exec(c, "SELECT 1");
    IT_ASSERT(!strcmp(it_value(c, "SHOW work_mem"), "7MB"), "session keeps SET");
    PQfinish(c);
    /* the next client on the same (single) server gets a reset session */
    c = it_connect(&s, "sl_scram", NULL);
    IT_ASSERT(strcmp(it_value(c, "SHOW work_mem"), "7MB") != 0, "server_reset_query ran");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "clean exit");
}

static void command_line(void) {
    char cmd[600], out[256] = "";
    snprintf(cmd, sizeof cmd, "\"%s\" --version", getenv("SLUICE_BIN"));
    FILE *p = popen(cmd, "r");
    IT_ASSERT(p && fgets(out, sizeof out, p), "--version output");
    IT_ASSERT(pclose(p) == 0 && !strncmp(out, "sluice ", 7), "--version: %s", out);
    snprintf(cmd, sizeof cmd, "\"%s\" --help >/dev/null", getenv("SLUICE_BIN"));
    IT_ASSERT(system(cmd) == 0, "--help exits 0");
    snprintf(cmd, sizeof cmd, "\"%s\" --bogus 2>/dev/null", getenv("SLUICE_BIN"));
    IT_ASSERT(WEXITSTATUS(system(cmd)) == 1, "unknown option exits 1");

    /* -d: daemon with pidfile; SIGTERM stops it and removes the pidfile. */
    it_sluice_t s;
    it_sluice_start(&s, NULL, NULL);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    FILE *f = fopen(s.ini, "a");
    fprintf(f, "pidfile = %s/sluice.pid\n", s.dir);
    fclose(f);
    snprintf(cmd, sizeof cmd, "\"%s\" -d %s", getenv("SLUICE_BIN"), s.ini);
    IT_ASSERT(system(cmd) == 0, "-d returns 0");
    char pidpath[400];
    snprintf(pidpath, sizeof pidpath, "%s/sluice.pid", s.dir);
    int pid = 0;
    double deadline = it_now() + 5;
    while (it_now() < deadline) {
        f = fopen(pidpath, "r");
        if (f && fscanf(f, "%d", &pid) == 1 && pid > 0) {
            fclose(f);
            break;
        }
        if (f) fclose(f);
        usleep(20000);
    }
    IT_ASSERT(pid > 0, "pidfile written");
    deadline = it_now() + 5;
    PGconn *c = NULL;
    while (it_now() < deadline) {
        c = it_connect_db(&s, "sl_scram", "sluice_test", NULL);
        if (PQstatus(c) == CONNECTION_OK) break;
        PQfinish(c);
        c = NULL;
        usleep(50000);
    }
    IT_ASSERT(c, "daemon accepts");
    IT_ASSERT(!strcmp(it_value(c, "SELECT 'daemon'"), "daemon"), "daemon serves");
    PQfinish(c);
    kill(pid, SIGTERM);
    deadline = it_now() + 10;
    while (kill(pid, 0) == 0 && it_now() < deadline) usleep(20000);
    IT_ASSERT(kill(pid, 0) != 0, "daemon stopped");
    IT_ASSERT(access(pidpath, F_OK) != 0, "pidfile removed");
}

static void check_flag(void) {
    char path[] = "/tmp/sluice-check-XXXXXX";
    int fd = mkstemp(path);
    const char *bad = "[sluice]\nauth_type = trust\nlisten_port = 70000\n";
    IT_ASSERT(write(fd, bad, strlen(bad)) > 0, "write");
    close(fd);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "\"%s\" --check %s 2>%s.err", getenv("SLUICE_BIN"), path, path);
    int rc = system(cmd);
    IT_ASSERT(WEXITSTATUS(rc) == 1, "--check on a bad file exits 1 (got %d)", rc);
    char errpath[600], line[512] = "";
    snprintf(errpath, sizeof errpath, "%s.err", path);
    FILE *f = fopen(errpath, "r");
    IT_ASSERT(f && fgets(line, sizeof line, f), "error output");
    fclose(f);
    char want[128];
    snprintf(want, sizeof want, "%s:3: listen_port", path);
    IT_ASSERT(strstr(line, want), "error names file:line: %s", line);
    unlink(path), unlink(errpath);
}

int main(void) {
    it_init("it_basic");
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\n", "* = host=127.0.0.1 port={PRIMARY}");
    queries(&s);
    unix_socket_and_fallback(&s);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "clean exit");
    session_mode();
    check_flag();
    command_line();
    return it_done();
}
