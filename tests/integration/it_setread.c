/* SET read-back costs a round trip only where it must (issue 13): in
 * transaction pooling, a setting a client changes is carried to its next
 * server. PostgreSQL reports some settings itself (ParameterStatus:
 * application_name, DateStyle, TimeZone, ...), so sluice knows their new
 * values without asking; the others (work_mem, search_path, ...) it reads
 * back with current_setting() before the server goes back to the pool.
 *
 * The statements the backend saw are counted in the log of a PostgreSQL of
 * the test's own (log_statement = all), with a pool of one server that two
 * clients take in turns, so that every carried value must survive the
 * other client's use of the server. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

/* Lines of the test's PostgreSQL log that contain needle. */
static int pg_log_count(const char *needle) {
    char path[400], line[4096];
    snprintf(path, sizeof path, "%s/pg.log", it_own_pg_dir());
    FILE *f = fopen(path, "r");
    IT_ASSERT(f, "cannot read %s", path);
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

/* Read-backs the backend has run since the last call. A read-back runs
 * after the client has its ReadyForQuery, before the server goes back to
 * the pool: a query of the other client (pool of one server) waits for
 * it, so it is in the log once that query is answered. */
static int readbacks(PGconn *other) {
    static int seen;
    it_exec(other, "SELECT 1");
    int now = pg_log_count("current_setting(");
    int d = now - seen;
    seen = now;
    return d;
}

static void expect(PGconn *c, const char *sql, const char *want, const char *who) {
    const char *got = it_value(c, sql);
    IT_ASSERT(strcmp(got, want) == 0, "%s: %s gave '%s', want '%s'", who, sql, got, want);
}

int main(void) {
    it_init("it_setread");
    int port = it_own_pg_create("/tmp/sluice-setread-XXXXXX", "log_statement = all\\n", NULL);
    char dbs[300];
    snprintf(dbs, sizeof dbs,
             "own = host=127.0.0.1 port=%d dbname=postgres user=postgres pool_size=1\n", port);
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\n", dbs);

    PGconn *a = it_connect_db(&s, "sl_scram", "own", "application_name=start_a");
    PGconn *b = it_connect_db(&s, "sl_scram", "own", "application_name=start_b");
    it_exec(a, "SELECT 1");
    it_exec(b, "SELECT 1");
    (void)readbacks(b);

    /* Reported settings: no read-back, in a transaction of their own, inside
     * a block, several in one Query, set to the value they had. */
    it_exec(a, "SET application_name = 'app_a'");
    it_exec(a, "BEGIN; SET TimeZone = 'Asia/Tokyo'; COMMIT");
    it_exec(a, "SET DateStyle = 'German, DMY'; SET IntervalStyle = 'iso_8601'");
    it_exec(a, "SET application_name = 'app_a'");
    int reported = readbacks(b);
    printf("reported settings: %d read-back(s) for 4 transactions with SET\n", reported);
    IT_ASSERT(reported == 0, "%d read-back(s) of settings PostgreSQL reports", reported);

    /* A rolled-back SET of a reported setting leaves the client's value. */
    it_exec(a, "BEGIN; SET application_name = 'rolled_back'; ROLLBACK");
    IT_ASSERT(readbacks(b) == 0, "read-back after a rolled-back SET");

    /* Unreported settings are still read back, once per transaction. */
    it_exec(a, "SET work_mem = '7MB'");
    int unreported = readbacks(b);
    printf("unreported setting: %d read-back(s)\n", unreported);
    IT_ASSERT(unreported == 1, "%d read-back(s) of work_mem", unreported);
    /* Mixed: only the unreported one is read (one query). */
    it_exec(a, "SET application_name = 'app_a2'; SET search_path = pg_catalog, public");
    IT_ASSERT(readbacks(b) == 1, "a mixed SET reads back once");
    IT_ASSERT(pg_log_count("current_setting('application_name'") == 0,
              "application_name was read back");

    /* b takes the one server in between: each sees its own settings. */
    expect(b, "SHOW application_name", "start_b", "b");
    expect(b, "SHOW work_mem", "4MB", "b");
    expect(b, "SHOW DateStyle", "ISO, MDY", "b");
    expect(a, "SHOW application_name", "app_a2", "a");
    expect(b, "SHOW TimeZone",
           it_value(b, "SELECT reset_val FROM pg_settings WHERE name = 'TimeZone'"), "b");
    expect(a, "SHOW TimeZone", "Asia/Tokyo", "a");
    expect(b, "SHOW IntervalStyle", "postgres", "b");
    expect(a, "SHOW DateStyle", "German, DMY", "a");
    expect(a, "SHOW IntervalStyle", "iso_8601", "a");
    expect(b, "SHOW search_path", "\"$user\", public", "b");
    expect(a, "SHOW work_mem", "7MB", "a");
    expect(a, "SHOW search_path", "pg_catalog, public", "a");
    /* What libpq was told matches what the server has. */
    IT_ASSERT(strcmp(PQparameterStatus(a, "application_name"), "app_a2") == 0,
              "a's ParameterStatus application_name: %s", PQparameterStatus(a, "application_name"));

    /* RESET of a reported setting: back to the client's startup value. */
    it_exec(a, "RESET application_name");
    expect(b, "SHOW application_name", "start_b", "b");
    expect(a, "SHOW application_name", "start_a", "a");

    PQfinish(a);
    PQfinish(b);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    it_on_fail(NULL);
    it_own_pg_remove();
    return it_done();
}
