/* Pool sizing and upkeep: min_pool_size, server_idle_timeout,
 * server_lifetime, reserve pool, max_db_connections, max_user_connections,
 * server_check_query, a host name resolved off the loop, IPv6, and
 * ignore_startup_parameters. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static int backends(PGconn *d, const char *user) {
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE usename = '%s' AND pid <> "
             "pg_backend_pid()",
             user);
    return atoi(it_value(d, sql));
}

static bool wait_backends(PGconn *d, const char *user, int want, double secs) {
    double deadline = it_now() + secs;
    while (it_now() < deadline) {
        if (backends(d, user) == want) return true;
        usleep(50000);
    }
    return false;
}

static void warm_and_idle(PGconn *d) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\nmin_pool_size = 3\ndefault_pool_size = 5\n", NULL);
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    PQfinish(c);
    IT_ASSERT(wait_backends(d, "sl_scram", 3, 5), "min_pool_size keeps 3 servers (have %d)",
              backends(d, "sl_scram"));
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    IT_ASSERT(wait_backends(d, "sl_scram", 0, 5), "servers closed at exit");

    it_sluice_start(&s, "pool_mode = transaction\nserver_idle_timeout = 0.5\n", NULL);
    PGconn *a = it_connect(&s, "sl_scram", NULL), *b = it_connect(&s, "sl_scram", NULL);
    it_exec(a, "BEGIN");
    it_exec(b, "BEGIN");
    IT_ASSERT(backends(d, "sl_scram") == 2, "two servers in use");
    it_exec(a, "COMMIT");
    it_exec(b, "COMMIT");
    IT_ASSERT(wait_backends(d, "sl_scram", 0, 5), "idle servers closed after server_idle_timeout");
    IT_ASSERT(!strcmp(it_value(a, "SELECT 1"), "1"), "a new server opens on demand");
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void lifetime(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\nserver_lifetime = 0.5\n", NULL);
    PGconn *a = it_connect(&s, "sl_scram", NULL);
    char pid1[32];
    snprintf(pid1, sizeof pid1, "%s", it_value(a, "SELECT pg_backend_pid()"));
    usleep(900000);
    const char *pid2 = it_value(a, "SELECT pg_backend_pid()");
    IT_ASSERT(strcmp(pid1, pid2) != 0, "server replaced after server_lifetime (%s)", pid1);
    PQfinish(a);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void reserve(void) {
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = transaction\ndefault_pool_size = 1\nreserve_pool_size = 1\n"
                    "reserve_pool_timeout = 0.3\nquery_wait_timeout = 10\n",
                    NULL);
    PGconn *a = it_connect(&s, "sl_scram", NULL), *b = it_connect(&s, "sl_scram", NULL);
    it_exec(a, "BEGIN");
    double t0 = it_now();
    IT_ASSERT(!strcmp(it_value(b, "SELECT 'reserve'"), "reserve"), "served from the reserve");
    double took = it_now() - t0;
    IT_ASSERT(took >= 0.25 && took < 3, "reserve used after reserve_pool_timeout (%.2f s)", took);
    it_exec(a, "COMMIT");
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void caps(PGconn *d) {
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = transaction\nmax_db_connections = 2\nquery_wait_timeout = 1\n"
                    "auth_type = md5\n",
                    NULL);
    PGconn *a = it_connect(&s, "sl_scram", NULL), *b = it_connect(&s, "sl_md5", NULL);
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    it_exec(a, "BEGIN");
    it_exec(b, "BEGIN");
    it_fails_with(c, "SELECT 1", "query_wait"); /* max_db_connections holds the third */
    IT_ASSERT(backends(d, "sl_scram") + backends(d, "sl_md5") == 2, "two backends for the db");
    PQfinish(a), PQfinish(b), PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");

    it_sluice_start(&s, "pool_mode = transaction\nmax_user_connections = 1\nquery_wait_timeout = 1\n",
                    NULL);
    a = it_connect(&s, "sl_scram", NULL);
    b = it_connect_db(&s, "sl_scram", "postgres", NULL);
    it_exec(a, "BEGIN");
    it_fails_with(b, "SELECT 1", "query_wait"); /* max_user_connections across databases */
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void check_query(PGconn *d) {
    it_exec(d, "DROP SEQUENCE IF EXISTS it_checks");
    it_exec(d, "CREATE SEQUENCE it_checks");
    it_exec(d, "GRANT ALL ON SEQUENCE it_checks TO sl_scram");
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = transaction\nserver_check_delay = 0\n"
                    "server_check_query = SELECT nextval('it_checks')\n",
                    NULL);
    PGconn *a = it_connect(&s, "sl_scram", NULL);
    for (int i = 0; i < 3; i++) it_exec(a, "SELECT 1");
    int n = atoi(it_value(d, "SELECT last_value FROM it_checks"));
    IT_ASSERT(n == 3, "server_check_query ran before each reuse (%d times, want 3)", n);
    IT_ASSERT(backends(d, "sl_scram") == 1, "checks did not open extra servers");
    PQfinish(a);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static bool have_ipv6(void) {
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0) return false;
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static void addressing(void) {
    it_sluice_t s;
    const char *opts = have_ipv6() ? "listen_addr = 127.0.0.1,::1\nignore_startup_parameters = "
                                     "application_name\n"
                                   : "ignore_startup_parameters = application_name\n";
    it_sluice_start(&s, opts,
                    "byname = host=localhost port={PRIMARY} dbname=sluice_test\n"
                    "fallover = host=127.0.0.1,127.0.0.1 port=1,{PRIMARY} dbname=sluice_test");
    /* A refused first address: libpq moves on to the next one. */
    PGconn *f = it_connect_db(&s, "sl_scram", "fallover", NULL);
    IT_ASSERT(PQstatus(f) == CONNECTION_OK, "second host after a refused one: %s",
              PQerrorMessage(f));
    IT_ASSERT(!strcmp(it_value(f, "SELECT 2"), "2"), "query via the second host");
    PQfinish(f);
    PGconn *c = it_connect_db(&s, "sl_scram", "byname", "application_name=dropped");
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "backend by host name: %s", PQerrorMessage(c));
    IT_ASSERT(!strcmp(it_value(c, "SELECT current_setting('application_name')"), ""),
              "ignored startup parameter not applied");
    PQfinish(c);
    if (have_ipv6()) {
        char ci[256];
        snprintf(ci, sizeof ci, "host=::1 port=%d dbname=sluice_test user=sl_scram password=scram_pw",
                 s.port);
        c = PQconnectdb(ci);
        IT_ASSERT(PQstatus(c) == CONNECTION_OK, "IPv6 listener: %s", PQerrorMessage(c));
        IT_ASSERT(!strcmp(it_value(c, "SELECT 6"), "6"), "query over IPv6");
        PQfinish(c);
    } else {
        printf("no IPv6 loopback here: IPv6 listener not tested\n");
    }
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* SIGHUP: existing pools take the new pool_size and connection settings. */
static void reload(PGconn *d) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 1\n",
                    NULL);
    PGconn *a = it_connect(&s, "sl_scram", NULL), *b = it_connect(&s, "sl_scram", NULL);
    it_exec(a, "BEGIN");
    PGresult *r = PQexec(b, "SELECT 1");
    IT_ASSERT(PQresultStatus(r) != PGRES_TUPLES_OK, "pool of 1 is full");
    PQclear(r);
    PQfinish(b);
    FILE *f = fopen(s.ini, "a");
    fprintf(f, "default_pool_size = 2\napplication_name_add_host_is_not_a_key = 1\n");
    fclose(f);
    kill(s.pid, SIGHUP); /* a bad key: the running config stays */
    double deadline = it_now() + 5;
    while (it_log_count(&s, "reload failed") == 0 && it_now() < deadline) usleep(20000);
    IT_ASSERT(it_log_count(&s, "reload failed") == 1, "bad reload refused and logged");
    /* Rewrite without the bad key, and with a changed connection string. */
    char cmd[800];
    snprintf(cmd, sizeof cmd,
             "sed -i -e '/application_name_add_host_is_not_a_key/d' "
             "-e 's/^sluice_test = host=127.0.0.1 port=\\([0-9]*\\)$/sluice_test = "
             "host=127.0.0.1 port=\\1 application_name=reloaded/' %s",
             s.ini);
    IT_ASSERT(system(cmd) == 0, "edit ini");
    char before[64], sql[256];
    snprintf(before, sizeof before, "%s", it_value(d, "SELECT now()::text"));
    kill(s.pid, SIGHUP);
    deadline = it_now() + 5;
    while (it_log_count(&s, "configuration reloaded") == 0 && it_now() < deadline) usleep(20000);
    IT_ASSERT(it_log_count(&s, "configuration reloaded") == 1, "reloaded");
    b = it_connect(&s, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(b, "SELECT 1"), "1"), "second server allowed after reload");
    IT_ASSERT(it_log_count(&s, "connection settings changed") >= 1, "settings change noticed");
    it_exec(a, "COMMIT");
    IT_ASSERT(!strcmp(it_value(b, "SELECT current_setting('application_name')"), "reloaded"),
              "new connection settings in use");
    /* The server made before the change is replaced once free. */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE usename = 'sl_scram' AND "
             "backend_start < '%s'",
             before);
    deadline = it_now() + 5;
    int old = 1;
    while (old > 0 && it_now() < deadline) {
        old = atoi(it_value(d, sql));
        usleep(50000);
    }
    IT_ASSERT(old == 0, "server from before the change closed (%d left)", old);
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* Pools made through '*' are freed after autodb_idle_timeout. */
static void autodb(PGconn *d) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\nautodb_idle_timeout = 0.3\n",
                    "* = host=127.0.0.1 port={PRIMARY}");
    for (int round = 0; round < 2; round++) {
        PGconn *c = it_connect_db(&s, "sl_scram", "template1", NULL);
        IT_ASSERT(PQstatus(c) == CONNECTION_OK, "auto database: %s", PQerrorMessage(c));
        IT_ASSERT(!strcmp(it_value(c, "SELECT current_database()"), "template1"), "template1");
        PQfinish(c);
        double deadline = it_now() + 5;
        while (it_log_count(&s, "pool removed after autodb_idle_timeout") <= round &&
               it_now() < deadline)
            usleep(20000);
        IT_ASSERT(it_log_count(&s, "pool removed after autodb_idle_timeout") == round + 1,
                  "unused auto pool removed");
    }
    IT_ASSERT(wait_backends(d, "sl_scram", 0, 5), "its servers closed");
    /* A listed database's pool stays. */
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    PQfinish(c);
    usleep(800000);
    IT_ASSERT(it_log_count(&s, "pool removed") == 2, "configured pool kept");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

int main(void) {
    it_init("it_pool");
    PGconn *d = it_direct();
    warm_and_idle(d);
    lifetime();
    reserve();
    caps(d);
    check_query(d);
    addressing();
    reload(d);
    autodb(d);
    PQfinish(d);
    return it_done();
}
