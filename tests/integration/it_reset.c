/* RESET lands on the client's own startup values in every pool mode. Two
 * clients with different DateStyle and TimeZone (one from PGDATESTYLE/PGTZ
 * as pg_regress sets them, one from options=-c) share one server; RESET x,
 * SET x TO DEFAULT, SET x = DEFAULT, RESET ALL, DISCARD ALL, in and out of
 * transactions, rolled back, through the extended protocol and pipelined:
 * SHOW, the ParameterStatus libpq saw and the command tags must be what
 * PostgreSQL gives a client connected straight to it. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static it_sluice_t sl;

typedef struct who {
    const char *name;
    const char *ds, *tz; /* the startup values, as the server spells them */
} who_t;

static const who_t A = {"A (PGDATESTYLE/PGTZ)", "Postgres, MDY", "America/New_York"};
static const who_t B = {"B (options=-c)", "SQL, DMY", "Asia/Tokyo"};

static PGconn *connect_as(const who_t *w) {
    if (w == &A) {
        setenv("PGDATESTYLE", "Postgres, MDY", 1);
        setenv("PGTZ", "America/New_York", 1);
        PGconn *c = it_connect(&sl, "sl_scram", NULL);
        unsetenv("PGDATESTYLE");
        unsetenv("PGTZ");
        return c;
    }
    return it_connect(&sl, "sl_scram",
                      "options='-c DateStyle=SQL,\\\\ DMY -c TimeZone=Asia/Tokyo'");
}

/* Runs sql (one command) and checks its tag. */
static void run(PGconn *c, const char *sql, const char *tag) {
    PGresult *r = PQexec(c, sql);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
              "%s: %s", sql, PQerrorMessage(c));
    IT_ASSERT(!strcmp(PQcmdStatus(r), tag), "%s: tag %s, want %s", sql, PQcmdStatus(r), tag);
    PQclear(r);
}

/* SHOW and the ParameterStatus libpq holds (right after the last reply:
 * nothing more is read) both say ds and tz. */
static void expect(PGconn *c, const who_t *w, const char *ds, const char *tz, const char *after) {
    const char *ps_ds = PQparameterStatus(c, "DateStyle"),
               *ps_tz = PQparameterStatus(c, "TimeZone");
    IT_ASSERT(ps_ds && !strcmp(ps_ds, ds),
              "%s after %s: ParameterStatus DateStyle \"%s\", want \"%s\"", w->name, after,
              ps_ds ? ps_ds : "(none)", ds);
    IT_ASSERT(ps_tz && !strcmp(ps_tz, tz),
              "%s after %s: ParameterStatus TimeZone \"%s\", want \"%s\"", w->name, after,
              ps_tz ? ps_tz : "(none)", tz);
    const char *v = it_value(c, "SHOW datestyle");
    IT_ASSERT(!strcmp(v, ds), "%s after %s: SHOW datestyle \"%s\", want \"%s\"", w->name, after, v,
              ds);
    v = it_value(c, "SHOW timezone");
    IT_ASSERT(!strcmp(v, tz), "%s after %s: SHOW timezone \"%s\", want \"%s\"", w->name, after, v,
              tz);
}

static void expect_own(PGconn *c, const who_t *w, const char *after) {
    expect(c, w, w->ds, w->tz, after);
}

/* RESET x, SET x TO DEFAULT, SET x = DEFAULT, outside transactions. */
static void resets(PGconn *c, const who_t *w) {
    expect_own(c, w, "login");
    run(c, "SET datestyle = 'ISO, YMD'", "SET");
    run(c, "SET timezone = 'UTC'", "SET");
    expect(c, w, "ISO, YMD", "UTC", "SET");
    run(c, "RESET datestyle", "RESET");
    expect(c, w, w->ds, "UTC", "RESET datestyle");
    run(c, "RESET TIME ZONE", "RESET");
    expect_own(c, w, "RESET TIME ZONE");
    run(c, "SET datestyle = 'German'", "SET");
    run(c, "SET datestyle TO DEFAULT", "SET");
    expect_own(c, w, "SET datestyle TO DEFAULT");
    run(c, "SET timezone = 'UTC'", "SET");
    run(c, "SET timezone = DEFAULT", "SET");
    expect_own(c, w, "SET timezone = DEFAULT");
}

/* RESET ALL and DISCARD ALL; a SET after RESET ALL in the same query keeps
 * its value; a RESET in a query that fails is rolled back with it. */
static void reset_all(PGconn *c, const who_t *w) {
    run(c, "SET datestyle = 'ISO, YMD'", "SET");
    run(c, "SET timezone = 'UTC'", "SET");
    run(c, "RESET ALL", "RESET");
    expect_own(c, w, "RESET ALL");
    run(c, "SET datestyle = 'ISO, YMD'", "SET");
    run(c, "SET timezone = 'UTC'", "SET");
    run(c, "SET work_mem = '7MB'", "SET");
    run(c, "DISCARD ALL", "DISCARD ALL");
    expect_own(c, w, "DISCARD ALL");
    /* What it SET and did not give at login goes back to the server's. */
    const char *wm = it_value(c, "SHOW work_mem");
    IT_ASSERT(!strcmp(wm, "4MB"), "%s: work_mem %s after DISCARD ALL, want 4MB", w->name, wm);
    PGresult *r = PQexec(c, "SET datestyle = 'German'; RESET ALL; SET timezone = 'UTC'");
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK && !strcmp(PQcmdStatus(r), "SET"),
              "RESET ALL; SET: %s", PQerrorMessage(c));
    PQclear(r);
    expect(c, w, w->ds, "UTC", "RESET ALL; SET timezone");
    run(c, "RESET timezone", "RESET");
    run(c, "SET datestyle = 'ISO, YMD'", "SET");
    r = PQexec(c, "RESET datestyle; SELECT 1/0");
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR, "1/0 fails");
    PQclear(r);
    expect(c, w, "ISO, YMD", w->tz, "a failed RESET");
    run(c, "RESET datestyle", "RESET");
}

/* In a transaction: visible right after the RESET, gone with a ROLLBACK,
 * kept with a COMMIT. */
static void in_transaction(PGconn *c, const who_t *w) {
    run(c, "SET datestyle = 'German'", "SET");
    run(c, "BEGIN", "BEGIN");
    run(c, "RESET datestyle", "RESET");
    expect_own(c, w, "BEGIN; RESET datestyle");
    run(c, "ROLLBACK", "ROLLBACK");
    expect(c, w, "German, DMY", w->tz, "ROLLBACK of a RESET");
    run(c, "BEGIN", "BEGIN");
    run(c, "RESET ALL", "RESET");
    run(c, "COMMIT", "COMMIT");
    expect_own(c, w, "COMMIT of RESET ALL");
}

/* Extended protocol (unnamed statement), and a RESET pipelined ahead of
 * a SHOW: the SHOW must not run before the value is back. */
static void extended(PGconn *c, const who_t *w) {
    run(c, "SET datestyle = 'ISO, YMD'", "SET");
    PGresult *r = PQexecParams(c, "RESET datestyle", 0, NULL, NULL, NULL, NULL, 0);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK && !strcmp(PQcmdStatus(r), "RESET"),
              "extended RESET: %s", PQerrorMessage(c));
    PQclear(r);
    expect_own(c, w, "extended RESET");
    run(c, "SET datestyle = 'ISO, YMD'", "SET");
    IT_ASSERT(PQenterPipelineMode(c), "pipeline mode");
    IT_ASSERT(PQsendQueryParams(c, "RESET datestyle", 0, NULL, NULL, NULL, NULL, 0), "send");
    IT_ASSERT(PQpipelineSync(c), "sync");
    IT_ASSERT(PQsendQueryParams(c, "SHOW datestyle", 0, NULL, NULL, NULL, NULL, 0), "send");
    IT_ASSERT(PQpipelineSync(c), "sync");
    char shown[64] = "";
    int syncs = 0;
    while (syncs < 2) {
        r = PQgetResult(c);
        if (!r) continue;
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) syncs++;
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            snprintf(shown, sizeof shown, "%s", PQgetvalue(r, 0, 0));
        IT_ASSERT(PQresultStatus(r) != PGRES_FATAL_ERROR, "pipeline: %s", PQerrorMessage(c));
        PQclear(r);
    }
    IT_ASSERT(PQexitPipelineMode(c), "exit pipeline mode");
    IT_ASSERT(!strcmp(shown, w->ds), "%s: SHOW pipelined after RESET gave \"%s\", want \"%s\"",
              w->name, shown, w->ds);
    expect_own(c, w, "pipelined RESET");
}

/* One server for both clients; in transaction and statement pooling the
 * two take turns on it. */
static void shared_pool(const char *mode) {
    char opts[256];
    snprintf(opts, sizeof opts, "pool_mode = %s\ndefault_pool_size = 1\n", mode);
    it_sluice_start(&sl, opts, NULL);
    bool tx = strcmp(mode, "statement") != 0;
    if (!strcmp(mode, "session")) {
        /* One after the other on the same server. */
        const who_t *order[] = {&A, &B, &A};
        for (int i = 0; i < 3; i++) {
            PGconn *c = connect_as(order[i]);
            resets(c, order[i]);
            reset_all(c, order[i]);
            in_transaction(c, order[i]);
            extended(c, order[i]);
            PQfinish(c);
        }
    } else {
        PGconn *a = connect_as(&A), *b = connect_as(&B);
        resets(a, &A);
        resets(b, &B);
        reset_all(b, &B);
        reset_all(a, &A);
        if (tx) {
            in_transaction(a, &A);
            in_transaction(b, &B);
        }
        extended(b, &B);
        extended(a, &A);
        expect_own(a, &A, "the other client's turn");
        PQfinish(a);
        PQfinish(b);
    }
    printf("%s pooling: RESET lands on each client's startup values\n", mode);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

/* sluice's own set_config after a RESET fails inside the client's
 * transaction (its startup value names a text search configuration dropped
 * meanwhile): the transaction is aborted, and the client must be told so,
 * not shown 'T' until its COMMIT silently rolls back. */
static void failed_fixup(void) {
    it_sluice_start(&sl, "pool_mode = session\ndefault_pool_size = 1\n", NULL);
    /* The one server logs in with the pool's values, not this client's. */
    PGconn *first = it_connect(&sl, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(first, "SELECT 'first'"), "first"), "first client");
    PQfinish(first);
    PGconn *d = it_direct();
    it_exec(d, "DROP TEXT SEARCH CONFIGURATION IF EXISTS public.sl_reset_ts");
    it_exec(d, "CREATE TEXT SEARCH CONFIGURATION public.sl_reset_ts (COPY = english)");
    PGconn *c =
        it_connect(&sl, "sl_scram", "options='-c default_text_search_config=public.sl_reset_ts'");
    IT_ASSERT(!strcmp(it_value(c, "SHOW default_text_search_config"), "public.sl_reset_ts"),
              "startup value applied");
    /* Dropped before the transaction starts, so that its catalog lookups
     * see the drop. */
    it_exec(d, "DROP TEXT SEARCH CONFIGURATION public.sl_reset_ts");
    run(c, "BEGIN", "BEGIN");
    PGresult *r = PQexec(c, "RESET default_text_search_config");
    PGTransactionStatusType ts = PQtransactionStatus(c);
    printf("failed fix-up: RESET gave %s, transaction status %d (%s)\n",
           PQresStatus(PQresultStatus(r)), (int)ts, PQerrorMessage(c));
    IT_ASSERT(ts == PQTRANS_INERROR, "the client sees its transaction aborted (status %d)",
              (int)ts);
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR, "and an error saying why");
    PQclear(r);
    r = PQexec(c, "ROLLBACK");
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "rollback: %s", PQerrorMessage(c));
    PQclear(r);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 'usable'"), "usable"), "usable after");
    PQfinish(c);
    PQfinish(d);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

int main(void) {
    it_init("it_reset");
    failed_fixup();
    shared_pool("session");
    shared_pool("transaction");
    shared_pool("statement");
    return it_done();
}
