/* Transaction pooling and session state: LISTEN, temp tables, SQL PREPARE
 * pin a client to its server until the state is gone; pin_session_state =
 * error refuses them; DISCARD ALL makes sluice re-apply the client's
 * settings. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static bool got_notify(PGconn *c, const char *payload, double secs) {
    double deadline = it_now() + secs;
    while (it_now() < deadline) {
        PQconsumeInput(c);
        PGnotify *n = PQnotifies(c);
        if (n) {
            bool ok = !strcmp(n->extra, payload);
            PQfreemem(n);
            return ok;
        }
        usleep(20000);
    }
    return false;
}

static void pins(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 2\nquery_wait_timeout = 1\n"
                        "stats_period = 1\n", NULL);
    PGconn *l = it_connect(&s, "sl_scram", NULL);
    PGconn *t = it_connect(&s, "sl_scram", NULL);
    it_exec(l, "LISTEN it_ch");
    it_exec(t, "CREATE TEMP TABLE it_tmp (a int)");
    /* Both servers are pinned now: a third client logs in (that needs no
     * server) but cannot get one. */
    PGconn *x = it_connect(&s, "sl_scram", NULL);
    it_fails_with(x, "SELECT 1", "query_wait_timeout");
    PQfinish(x);
    for (int i = 0; i < 20; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "INSERT INTO it_tmp VALUES (%d)", i);
        it_exec(t, sql);
    }
    IT_ASSERT(!strcmp(it_value(t, "SELECT count(*) FROM it_tmp"), "20"), "temp table kept");
    /* UNLISTEN * frees l's server for others. */
    it_exec(l, "UNLISTEN *");
    PGconn *n = it_connect(&s, "sl_scram", NULL);
    for (int i = 0; i < 20; i++) it_exec(n, "SELECT 1");
    /* DISCARD ALL frees t's server (and drops its temp table). */
    it_exec(t, "DISCARD ALL");
    IT_ASSERT(!strcmp(it_fails(t, "SELECT count(*) FROM it_tmp"), "42P01"), "DISCARD ALL dropped it");
    /* A listener stays pinned while another client runs 50 transactions. */
    it_exec(l, "LISTEN it_ch");
    for (int i = 0; i < 50; i++) it_exec(n, "SELECT 3");
    it_exec(n, "NOTIFY it_ch, 'fifty transactions later'");
    IT_ASSERT(got_notify(l, "fifty transactions later", 5), "pinned listener got the NOTIFY");
    IT_ASSERT(it_log_count(&s, "query_wait_timeout") == 1, "only the probe client timed out");
    /* Pins are counted by reason in the stats line. */
    IT_ASSERT(it_stats_value(&s, "listen") == 2, "two LISTEN pins counted");
    IT_ASSERT(it_stats_value(&s, "temp_object") == 1, "one temp table pin counted");
    IT_ASSERT(it_stats_value(&s, "advisory_lock") == 0, "no advisory lock pin");
    PQfinish(l), PQfinish(t), PQfinish(n);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void refused(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\npin_session_state = error\n", NULL);
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    const char *stmts[] = {"LISTEN it_ch", "CREATE TEMP TABLE it_t2 (a int)",
                           "PREPARE p AS SELECT 1", "SELECT pg_advisory_lock(42)"};
    for (size_t i = 0; i < sizeof stmts / sizeof *stmts; i++) {
        it_fails_with(c, stmts[i], "pin_session_state = error");
        IT_ASSERT(!strcmp(it_value(c, "SELECT 'usable'"), "usable"), "still usable");
        /* The same through the extended protocol (what JDBC and most
         * drivers send): an error in its place, the connection goes on. */
        PGresult *r = PQexecParams(c, stmts[i], 0, NULL, NULL, NULL, NULL, 0);
        IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR &&
                      strstr(PQresultErrorMessage(r), "pin_session_state = error"),
                  "extended %s refused: %s", stmts[i], PQresultErrorMessage(r));
        PQclear(r);
        IT_ASSERT(!strcmp(it_value(c, "SELECT 'usable'"), "usable"), "still usable");
    }
    /* In a pipeline: what comes before runs, what follows up to the Sync is
     * skipped, as after any error. */
    IT_ASSERT(PQenterPipelineMode(c) == 1, "pipeline");
    IT_ASSERT(PQsendQueryParams(c, "SELECT 1", 0, NULL, NULL, NULL, NULL, 0), "send");
    IT_ASSERT(PQsendQueryParams(c, "LISTEN it_ch", 0, NULL, NULL, NULL, NULL, 0), "send");
    IT_ASSERT(PQsendQueryParams(c, "SELECT 2", 0, NULL, NULL, NULL, NULL, 0), "send");
    IT_ASSERT(PQpipelineSync(c), "sync");
    ExecStatusType want[] = {PGRES_TUPLES_OK, PGRES_FATAL_ERROR, PGRES_PIPELINE_ABORTED};
    for (int i = 0; i < 3; i++) {
        PGresult *r = PQgetResult(c);
        IT_ASSERT(PQresultStatus(r) == want[i], "pipeline result %d: %s %s", i,
                  PQresStatus(PQresultStatus(r)), PQresultErrorMessage(r));
        PQclear(r);
        IT_ASSERT(PQgetResult(c) == NULL, "end of result %d", i);
    }
    PGresult *r = PQgetResult(c);
    IT_ASSERT(PQresultStatus(r) == PGRES_PIPELINE_SYNC, "sync result");
    PQclear(r);
    IT_ASSERT(PQexitPipelineMode(c) == 1, "exit pipeline");
    IT_ASSERT(!strcmp(it_value(c, "SELECT 'usable'"), "usable"), "usable after the pipeline");
    IT_ASSERT(it_log_count(&s, "closing") == 0, "no connection was closed");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void discard_reapplies(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 1\n", NULL);
    PGconn *c = it_connect(&s, "sl_scram", "options='-c statement_timeout=4321'");
    IT_ASSERT(!strcmp(it_value(c, "SHOW statement_timeout"), "4321ms"), "applied");
    it_exec(c, "DISCARD ALL");
    IT_ASSERT(!strcmp(it_value(c, "SHOW statement_timeout"), "4321ms"),
              "re-applied after DISCARD ALL");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* The same through the extended protocol (what JDBC and most drivers use). */
static void ext(PGconn *c, const char *sql) {
    PGresult *r = PQexecParams(c, sql, 0, NULL, NULL, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    IT_ASSERT(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

static void extended_protocol(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 1\n",
                    NULL);
    PGconn *e = it_connect(&s, "sl_scram", NULL);
    ext(e, "LISTEN it_ext");
    PGconn *f = it_connect(&s, "sl_scram", NULL);       /* logins need no server */
    it_fails_with(f, "SELECT 1", "query_wait_timeout"); /* LISTEN pinned the only server */
    PQfinish(f);
    ext(e, "UNLISTEN *");
    f = it_connect(&s, "sl_scram", NULL);
    ext(e, "SET statement_timeout = 2468");
    ext(f, "SELECT 1");
    ext(f, "SET statement_timeout = 1357");
    PGresult *r = PQexecParams(e, "SHOW statement_timeout", 0, NULL, NULL, NULL, NULL, 0);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "2468ms"),
              "extended-protocol SET carried: %s", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(e), PQfinish(f);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

int main(void) {
    it_init("it_pin");
    extended_protocol();
    pins();
    refused();
    discard_reapplies();
    return it_done();
}
