/* State is location, in a live sluice: the stats line counts clients and
 * servers by walking the lists they sit on, and those counts follow a
 * client holding a transaction (active, with an active server), a client
 * queued behind it (waiting) and one doing nothing (idle), then all idle
 * once the transaction ends. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

/* The counts of one stats line each: a key read later sees a later line. */
static void expect(const it_sluice_t *s, const char *key, long want, const char *when) {
    long got = it_stats_value(s, key);
    IT_ASSERT(got == want, "%s: %s=%ld, expected %ld", when, key, got, want);
}

static void states(void) {
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 30\n"
                    "stats_period = 1\n",
                    NULL);
    PGconn *a = it_connect(&s, "sl_scram", NULL);
    PGconn *b = it_connect(&s, "sl_scram", NULL);
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    it_exec(a, "BEGIN");
    it_exec(a, "SELECT 1");
    /* b's request waits for the only server, which a holds. */
    IT_ASSERT(PQsendQuery(b, "SELECT 2") == 1, "send: %s", PQerrorMessage(b));
    const char *when = "a in a transaction, b queued, c idle";
    expect(&s, "cl_active", 1, when);
    expect(&s, "cl_waiting", 1, when);
    expect(&s, "cl_idle", 1, when);
    expect(&s, "sv_active", 1, when);
    expect(&s, "sv_idle", 0, when);
    expect(&s, "cl_login", 0, when);

    it_exec(a, "COMMIT");
    PGresult *r;
    while ((r = PQgetResult(b)) != NULL) {
        IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "b's query: %s", PQerrorMessage(b));
        PQclear(r);
    }
    when = "every transaction over";
    expect(&s, "cl_idle", 3, when);
    expect(&s, "cl_active", 0, when);
    expect(&s, "cl_waiting", 0, when);
    expect(&s, "sv_idle", 1, when);
    expect(&s, "sv_active", 0, when);

    PQfinish(c);
    expect(&s, "cl_idle", 2, "c gone");
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

int main(void) {
    it_init("it_state");
    states();
    return it_done();
}
