/* An operator's RECONNECT against two workers whose one server goes back
 * and forth (pool_size = 1, transaction pooling, one client on each worker
 * running statements without a pause): the server is between the workers,
 * on neither's lists, a good part of the time. RECONNECT must reach it
 * there too: once WAIT_CLOSE has returned, no statement may run on a
 * backend that served one before the RECONNECT. Before the fix a server
 * caught in motion was not marked, landed on the other worker and went on
 * serving with its old backend connection. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define ROUNDS 150
#define MAX_PIDS 4096 /* backends seen: one or two per round */

static it_sluice_t sl;

/* Backends seen (pid and start time: a pid alone may be reused), and the
 * RECONNECT round after which each is retired (0: not yet). Only under mu. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char key[64];
    int retired;
} seen[MAX_PIDS];
static int nseen;
/* The last round whose WAIT_CLOSE returned: a statement sent after that
 * must not meet a backend retired in this round or before. */
static atomic_int round_done;
static atomic_bool stop;
static atomic_int violations, statements;

static int seen_index(const char *key) {
    for (int i = 0; i < nseen; i++)
        if (!strcmp(seen[i].key, key)) return i;
    if (nseen == MAX_PIDS) return -1;
    snprintf(seen[nseen].key, sizeof seen[nseen].key, "%s", key);
    seen[nseen].retired = 0;
    return nseen++;
}

static const char *const whoami = "SELECT pid || ' started ' || backend_start FROM "
                                  "pg_stat_activity WHERE pid = pg_backend_pid()";

static void *runner(void *arg) {
    PGconn *c = arg;
    while (!atomic_load(&stop)) {
        int sent_after = atomic_load(&round_done);
        PGresult *res = PQexec(c, whoami);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            fprintf(stderr, "which backend: %s", PQresultErrorMessage(res));
            PQclear(res);
            atomic_fetch_add(&violations, 1000); /* a client error fails the test too */
            break;
        }
        char key[64];
        snprintf(key, sizeof key, "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        atomic_fetch_add(&statements, 1);
        pthread_mutex_lock(&mu);
        int i = seen_index(key);
        if (i < 0) {
            fprintf(stderr, "more than %d backends seen\n", MAX_PIDS);
            atomic_fetch_add(&violations, 1000);
        } else if (seen[i].retired && seen[i].retired <= sent_after) {
            fprintf(stderr,
                    "backend %s, retired by RECONNECT round %d, served a statement sent after "
                    "round %d's WAIT_CLOSE returned\n",
                    key, seen[i].retired, sent_after);
            atomic_fetch_add(&violations, 1);
        }
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static PGconn *connect_on(const char *user, int want) {
    for (int i = 0; i < 64; i++) {
        PGconn *c = it_connect(&sl, user, NULL);
        if (it_worker_of(c) == want) return c;
        PQfinish(c);
    }
    IT_ASSERT(false, "64 connections of %s: none landed on worker %d", user, want);
    return NULL;
}

int main(void) {
    it_init("it_attack_workers");
    it_sluice_start(&sl,
                    "workers = 2\npool_mode = transaction\ndefault_pool_size = 1\n"
                    "admin_users = sl_scram\n",
                    NULL);
    PGconn *a = connect_on("sl_scram", 0), *b = connect_on("sl_scram", 1);
    it_value(a, "SELECT 1");
    PGconn *adm = it_connect_db(&sl, "sl_scram", "pgbouncer", NULL);
    pthread_t th[2];
    pthread_create(&th[0], NULL, runner, a);
    pthread_create(&th[1], NULL, runner, b);
    int retired_total = 0;
    for (int r = 1; r <= ROUNDS && atomic_load(&violations) == 0; r++) {
        /* Every backend seen so far existed before this RECONNECT. */
        pthread_mutex_lock(&mu);
        for (int i = 0; i < nseen; i++)
            if (!seen[i].retired) seen[i].retired = r, retired_total++;
        pthread_mutex_unlock(&mu);
        it_exec(adm, "RECONNECT sluice_test");
        it_exec(adm, "WAIT_CLOSE sluice_test");
        atomic_store(&round_done, r);
        /* A new backend logs in (a RECONNECT now would close it while it
         * connects), then it serves and moves for a while: a few more
         * statements each round, so that RECONNECT finds it anywhere. */
        int from = atomic_load(&statements), want = 10 + r % 13;
        double t0 = it_now();
        while (atomic_load(&statements) - from < want && it_now() - t0 < 10.0)
            usleep(200);
        IT_ASSERT(atomic_load(&statements) - from >= want,
                  "statements run after RECONNECT round %d (%d in 10 s)", r,
                  atomic_load(&statements) - from);
    }
    atomic_store(&stop, true);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    printf("%d statements, %d backends retired by %d RECONNECTs, %d served after their "
           "WAIT_CLOSE\n",
           atomic_load(&statements), retired_total, ROUNDS, atomic_load(&violations));
    IT_ASSERT(retired_total >= ROUNDS / 2, "backends were retired (%d)", retired_total);
    IT_ASSERT(atomic_load(&violations) == 0,
              "no retired backend serves a statement sent after WAIT_CLOSE returned");
    /* How often RECONNECT caught the server between the workers, from its
     * log line (2 to 7 % of rounds here: told, not asserted, as it depends
     * on the machine's load; the check above is what fails without it). */
    int caught = it_log_count(&sl, "RECONNECT sluice_test:") - it_log_count(&sl, "(0 between");
    printf("%d of %d RECONNECTs caught the server between the workers\n", caught, ROUNDS);
    /* Still one server at most, and the proxy serves. */
    PGresult *r = it_show(adm, "SHOW SERVERS");
    int rows = 0;
    for (int i = 0; i < PQntuples(r); i++)
        rows += !strcmp(PQgetvalue(r, i, it_col(r, "database")), "sluice_test");
    PQclear(r);
    IT_ASSERT(rows <= 1, "a pool of one has at most one server (%d)", rows);
    it_value(a, "SELECT 1");
    PQfinish(adm);
    PQfinish(a);
    PQfinish(b);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
    return it_done();
}
