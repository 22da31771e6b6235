/* Transaction pooling: 200 concurrent clients over pool_size = 10 all
 * complete, while PostgreSQL never sees more than 10 backends for the user;
 * per-client TimeZone (startup parameter and options=-c) and
 * application_name survive server sharing. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define NCLIENTS 200
static it_sluice_t sl;
static atomic_int done_ok, started, stop_monitor;
static int max_backends;

static void *client_main(void *arg) {
    long i = (long)arg;
    PGconn *c = it_connect_db(&sl, "sl_scram", "sluice_test", NULL);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "client %ld: %s", i, PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    atomic_fetch_add(&started, 1);
    bool ok = true;
    for (int k = 0; k < 5 && ok; k++) {
        PGresult *r = PQexec(c, "BEGIN");
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        char sql[128];
        snprintf(sql, sizeof sql, "SELECT %ld * 1000 + %d, pg_sleep(0.005)", i, k);
        r = PQexec(c, sql);
        char want[32];
        snprintf(want, sizeof want, "%ld", i * 1000 + k);
        ok = ok && PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), want);
        PQclear(r);
        r = PQexec(c, "COMMIT");
        ok = ok && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
    }
    if (ok) atomic_fetch_add(&done_ok, 1);
    else fprintf(stderr, "client %ld: %s", i, PQerrorMessage(c));
    PQfinish(c);
    return NULL;
}

static void *monitor_main(void *arg) {
    (void)arg;
    PGconn *d = it_direct();
    while (!atomic_load(&stop_monitor)) {
        int n = atoi(it_value(d, "SELECT count(*) FROM pg_stat_activity WHERE usename = "
                                 "'sl_scram' AND datname = 'sluice_test'"));
        if (n > max_backends) max_backends = n;
        usleep(2000);
    }
    PQfinish(d);
    return NULL;
}

static void many_clients(void) {
    it_sluice_start(&sl, "pool_mode = transaction\ndefault_pool_size = 10\nmax_client_conn = 400\n",
                    NULL);
    pthread_t mon, th[NCLIENTS];
    pthread_create(&mon, NULL, monitor_main, NULL);
    for (long i = 0; i < NCLIENTS; i++) pthread_create(&th[i], NULL, client_main, (void *)i);
    for (int i = 0; i < NCLIENTS; i++) pthread_join(th[i], NULL);
    atomic_store(&stop_monitor, 1);
    pthread_join(mon, NULL);
    printf("%d/%d clients completed; at most %d backends\n", atomic_load(&done_ok), NCLIENTS,
           max_backends);
    IT_ASSERT(atomic_load(&done_ok) == NCLIENTS, "only %d of %d clients completed",
              atomic_load(&done_ok), NCLIENTS);
    IT_ASSERT(max_backends <= 10, "saw %d backends for the user, pool_size is 10", max_backends);
    IT_ASSERT(max_backends >= 2, "pool was used concurrently (%d)", max_backends);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

static void per_client_parameters(void) {
    it_sluice_start(&sl, "pool_mode = transaction\ndefault_pool_size = 1\n", NULL);
    /* One server, three clients with different settings, interleaved. */
    PGconn *a = it_connect(&sl, "sl_scram", "application_name=app_a options='-c TimeZone=Asia/Tokyo'");
    PGconn *b = it_connect(&sl, "sl_scram", "application_name=app_b");
    PGconn *c = it_connect(&sl, "sl_scram", "options='-c extra_float_digits=1 -c statement_timeout=4321'");
    PQclear(PQexec(b, "SET TimeZone = 'America/New_York'")); /* reported: tracked per client */
    for (int round = 0; round < 3; round++) {
        IT_ASSERT(!strcmp(it_value(a, "SHOW TimeZone"), "Asia/Tokyo"), "a TimeZone");
        IT_ASSERT(!strcmp(it_value(b, "SHOW TimeZone"), "America/New_York"), "b TimeZone");
        IT_ASSERT(!strcmp(it_value(a, "SELECT current_setting('application_name')"), "app_a"),
                  "a application_name");
        IT_ASSERT(!strcmp(it_value(b, "SELECT current_setting('application_name')"), "app_b"),
                  "b application_name");
        IT_ASSERT(!strcmp(it_value(c, "SHOW extra_float_digits"), "1"), "c extra_float_digits");
        IT_ASSERT(!strcmp(it_value(c, "SHOW statement_timeout"), "4321ms"), "c statement_timeout");
        IT_ASSERT(!strcmp(it_value(a, "SHOW statement_timeout"), "0"),
                  "a does not inherit c's statement_timeout");
        const char *cv = it_value(c, "SELECT current_setting('application_name')");
        IT_ASSERT(!strcmp(cv, ""), "c has no application_name from others: '%s'", cv);
        IT_ASSERT(!strcmp(it_value(a, "SELECT pg_backend_pid() = (SELECT pg_backend_pid())"),
                          "t"), "same server");
    }
    /* The TimeZone as a startup parameter too (libpq sends PGTZ so). */
    setenv("PGTZ", "Europe/Paris", 1);
    PGconn *e = it_connect(&sl, "sl_scram", NULL);
    unsetenv("PGTZ");
    IT_ASSERT(!strcmp(it_value(e, "SHOW TimeZone"), "Europe/Paris"), "startup TimeZone");
    IT_ASSERT(!strcmp(it_value(a, "SHOW TimeZone"), "Asia/Tokyo"), "a still Tokyo");
    IT_ASSERT(!strcmp(it_value(e, "SHOW TimeZone"), "Europe/Paris"), "e still Paris");
    /* An invalid setting: the login is answered from the pool's cached
     * parameters, so the server's refusal ends the connection at its first
     * request. */
    PGconn *bad = it_connect_db(&sl, "sl_scram", "sluice_test", "options='-c TimeZone=Mars/Base'");
    IT_ASSERT(PQstatus(bad) == CONNECTION_OK, "login answered: %s", PQerrorMessage(bad));
    it_fails_with(bad, "SELECT 1", "TimeZone");
    IT_ASSERT(PQstatus(bad) == CONNECTION_BAD, "bad TimeZone ends the connection");
    PQfinish(bad);
    PQfinish(a), PQfinish(b), PQfinish(c), PQfinish(e);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

/* Settings changed with SQL SET follow each client across servers; a SET in
 * a rolled-back transaction does not stick, one in a committed one does. */
static void sql_set_carried(void) {
    it_sluice_start(&sl,
                    "pool_mode = transaction\ndefault_pool_size = 1\n"
                    "track_extra_parameters = IntervalStyle, default_transaction_read_only\n",
                    NULL);
    PGconn *a = it_connect(&sl, "sl_scram", NULL), *b = it_connect(&sl, "sl_scram", NULL);
    it_exec(a, "SET search_path TO pg_catalog, public");
    it_exec(a, "SET statement_timeout = '1234ms'");
    it_exec(a, "SET DateStyle = 'SQL, DMY'");
    it_exec(a, "SET TIME ZONE 'Asia/Kolkata'");
    it_exec(b, "SET search_path = public");
    it_exec(b, "SET statement_timeout TO 5678");
    it_exec(b, "BEGIN");
    it_exec(b, "SET work_mem = '9MB'");
    it_exec(b, "ROLLBACK");
    it_exec(b, "BEGIN");
    it_exec(b, "SET work_mem = '7MB'");
    it_exec(b, "COMMIT");
    for (int round = 0; round < 3; round++) {
        IT_ASSERT(!strcmp(it_value(a, "SELECT current_schemas(false)::text"), "{pg_catalog,public}"),
                  "a search_path");
        IT_ASSERT(!strcmp(it_value(b, "SELECT current_schemas(false)::text"), "{public}"),
                  "b search_path");
        const char *ast = it_value(a, "SHOW statement_timeout");
        IT_ASSERT(!strcmp(ast, "1234ms"), "a statement_timeout: %s", ast);
        IT_ASSERT(!strcmp(it_value(b, "SHOW statement_timeout"), "5678ms"), "b statement_timeout");
        IT_ASSERT(!strcmp(it_value(a, "SHOW DateStyle"), "SQL, DMY"), "a DateStyle");
        IT_ASSERT(strcmp(it_value(b, "SHOW DateStyle"), "SQL, DMY") != 0, "b DateStyle");
        IT_ASSERT(!strcmp(it_value(a, "SHOW TimeZone"), "Asia/Kolkata"), "a TimeZone");
        IT_ASSERT(!strcmp(it_value(b, "SHOW work_mem"), "7MB"), "b committed SET kept");
        IT_ASSERT(strcmp(it_value(a, "SHOW work_mem"), "7MB") != 0, "a without b's work_mem");
    }
    /* A reported parameter changed without SET, followed because it is in
     * track_extra_parameters. */
    it_exec(a, "SELECT set_config('default_transaction_read_only', 'on', false)");
    for (int round = 0; round < 2; round++) {
        IT_ASSERT(!strcmp(it_value(a, "SHOW default_transaction_read_only"), "on"), "a tracked");
        IT_ASSERT(!strcmp(it_value(b, "SHOW default_transaction_read_only"), "off"), "b not");
    }
    it_exec(b, "RESET ALL");
    IT_ASSERT(!strcmp(it_value(b, "SHOW statement_timeout"), "0"), "RESET ALL carried");
    IT_ASSERT(!strcmp(it_value(a, "SHOW statement_timeout"), "1234ms"), "a unaffected");
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

int main(void) {
    it_init("it_txpool");
    sql_set_carried();
    per_client_parameters();
    many_clients();
    return it_done();
}
