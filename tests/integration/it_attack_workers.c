/* An operator's RECONNECT and KILL against two workers whose one server
 * goes back and forth (pool_size = 1, transaction pooling, one client on
 * each worker running statements without a pause): the server is between
 * the workers, on neither's lists, a good part of the time. Each command
 * must reach it there too: once it has returned, no statement may run on a
 * backend that served one before it.
 *  1. RECONNECT, then WAIT_CLOSE, 150 times. Before the fix a server caught
 *     in motion was not marked, landed on the other worker and went on
 *     serving with its old backend connection.
 *  2. KILL and RESUME, in one console query (every other worker frozen
 *     throughout) or as two, 150 times; each client connects again to its
 *     worker when KILL closes it. Before the fix a server caught in motion
 *     landed after the RESUME, in a pool no longer paused, and served on. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define ROUNDS 150        /* of each command */
#define MAX_BACKENDS 4096 /* seen: one or two per round */

static it_sluice_t sl;

/* Backends seen, by pid, and the round before which each was seen (0: not
 * yet), which retires it. Only under mu. A pid is given out again only
 * after the kernel's whole pid range (32,768 or more) has gone round,
 * thousands of times what this test's few hundred backends take. The
 * statement is the cheapest that names its backend: the longer it holds
 * the server, the less often a command finds the server moving. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char key[64];
    int retired;
} seen[MAX_BACKENDS];
static int nseen;
/* The last round whose command returned: a statement sent after that must
 * not meet a backend retired in this round or before. */
static atomic_int round_done;
static atomic_bool stop, killing;
static atomic_int violations, statements, killed;

static int seen_index(const char *key) {
    for (int i = 0; i < nseen; i++)
        if (!strcmp(seen[i].key, key)) return i;
    if (nseen == MAX_BACKENDS) return -1;
    snprintf(seen[nseen].key, sizeof seen[nseen].key, "%s", key);
    seen[nseen].retired = 0;
    return nseen++;
}

/* A client of sluice_test on worker `want`, or NULL after 64 tries (the
 * kernel spreads connections over the workers' sockets). */
static PGconn *connect_on(int want) {
    for (int i = 0; i < 64; i++) {
        PGconn *c = it_connect_db(&sl, "sl_scram", "sluice_test", NULL);
        if (PQstatus(c) == CONNECTION_OK && it_worker_of(c) == want) return c;
        PQfinish(c);
    }
    return NULL;
}

typedef struct runner {
    int worker;
    PGconn *c;
    pthread_t th;
} runner_t;

static const char *const whoami = "SELECT pg_backend_pid()";

static void *run_main(void *arg) {
    runner_t *r = arg;
    while (!atomic_load(&stop)) {
        if (!r->c && !(r->c = connect_on(r->worker))) {
            fprintf(stderr, "no client on worker %d after a KILL\n", r->worker);
            atomic_fetch_add(&violations, 1000);
            break;
        }
        int sent_after = atomic_load(&round_done);
        PGresult *res = PQexec(r->c, whoami);
        if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
            if (!atomic_load(&killing)) { /* RECONNECT: clients see nothing */
                fprintf(stderr, "worker %d's client: %s", r->worker, PQresultErrorMessage(res));
                atomic_fetch_add(&violations, 1000);
                PQclear(res);
                break;
            }
            /* KILL closed it ("killed by an administrator", 57P01). */
            PQclear(res);
            PQfinish(r->c);
            r->c = NULL;
            atomic_fetch_add(&killed, 1);
            continue;
        }
        char key[64];
        snprintf(key, sizeof key, "%s", PQgetvalue(res, 0, 0));
        PQclear(res);
        atomic_fetch_add(&statements, 1);
        pthread_mutex_lock(&mu);
        int i = seen_index(key);
        if (i < 0) {
            fprintf(stderr, "more than %d backends seen\n", MAX_BACKENDS);
            atomic_fetch_add(&violations, 1000);
        } else if (seen[i].retired && seen[i].retired <= sent_after) {
            fprintf(stderr,
                    "backend %s, seen before round %d, served a statement sent after that "
                    "round's command returned\n",
                    key, seen[i].retired);
            atomic_fetch_add(&violations, 1);
        }
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

/* Waits until the clients ran `want` more statements: a new backend logged
 * in (a RECONNECT now would close it while it connects) and the server
 * moved for a while, so that the next command finds it anywhere. */
static void let_it_move(int round, int want) {
    int from = atomic_load(&statements);
    double t0 = it_now();
    while (atomic_load(&statements) - from < want && atomic_load(&violations) == 0 &&
           it_now() - t0 < 10.0)
        usleep(200);
    IT_ASSERT(atomic_load(&statements) - from >= want || atomic_load(&violations) > 0,
              "statements run after round %d (%d in 10 s)", round, atomic_load(&statements) - from);
}

/* Every backend seen so far existed before round r's command. */
static int retire_seen(int r) {
    int n = 0;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < nseen; i++)
        if (!seen[i].retired) seen[i].retired = r, n++;
    pthread_mutex_unlock(&mu);
    return n;
}

int main(void) {
    it_init("it_attack_workers");
    it_sluice_start(&sl,
                    "workers = 2\npool_mode = transaction\ndefault_pool_size = 1\n"
                    "admin_users = sl_scram\n",
                    NULL);
    runner_t run[2];
    for (int i = 0; i < 2; i++) {
        run[i].worker = i;
        run[i].c = connect_on(i);
        IT_ASSERT(run[i].c, "a client on worker %d", i);
    }
    it_value(run[0].c, "SELECT 1");
    PGconn *adm = it_connect_db(&sl, "sl_scram", "pgbouncer", NULL);
    for (int i = 0; i < 2; i++)
        pthread_create(&run[i].th, NULL, run_main, &run[i]);
    int retired[2] = {0, 0};
    double t0 = it_now(), t1 = 0;
    for (int r = 1; r <= 2 * ROUNDS && atomic_load(&violations) == 0; r++) {
        let_it_move(r - 1, 10 + r % 13);
        bool kill = r > ROUNDS;
        retired[kill] += retire_seen(r);
        if (!kill) {
            it_exec(adm, "RECONNECT sluice_test");
            it_exec(adm, "WAIT_CLOSE sluice_test");
        } else {
            if (!t1) t1 = it_now();
            atomic_store(&killing, true);
            if (r % 4)
                it_exec(adm, "KILL sluice_test; RESUME sluice_test");
            else
                it_exec(adm, "KILL sluice_test"), it_exec(adm, "RESUME sluice_test");
        }
        atomic_store(&round_done, r);
    }
    let_it_move(2 * ROUNDS, 20); /* the last round's backends are checked too */
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(run[i].th, NULL);
    /* How often RECONNECT caught the server between the workers, from its
     * log line (10 to 20 % of rounds here: told, not asserted, as it depends
     * on the machine's load; the check below is what fails without it). */
    int caught = it_log_count(&sl, "RECONNECT sluice_test:") - it_log_count(&sl, "(0 between");
    printf("(1) %d backends retired by %d RECONNECTs in %.1f s; %d of them caught the server "
           "between the workers\n",
           retired[0], ROUNDS, t1 - t0, caught);
    printf("(2) %d backends retired by %d KILLs in %.1f s, %d clients killed\n", retired[1], ROUNDS,
           it_now() - t1, atomic_load(&killed));
    printf("%d statements in all, %d served by a backend retired before they were sent\n",
           atomic_load(&statements), atomic_load(&violations));
    IT_ASSERT(atomic_load(&violations) == 0,
              "no backend from before a RECONNECT or KILL serves a statement sent after it "
              "returned");
    IT_ASSERT(retired[0] >= ROUNDS / 2 && retired[1] >= ROUNDS / 2,
              "backends were retired (%d, %d)", retired[0], retired[1]);
    /* Still one server at most, and the proxy serves. */
    PGresult *res = it_show(adm, "SHOW SERVERS");
    int rows = 0;
    for (int i = 0; i < PQntuples(res); i++)
        rows += !strcmp(PQgetvalue(res, i, it_col(res, "database")), "sluice_test");
    PQclear(res);
    IT_ASSERT(rows <= 1, "a pool of one has at most one server (%d)", rows);
    PGconn *c = run[0].c ? run[0].c : connect_on(0);
    IT_ASSERT(c, "a client after the KILLs");
    it_value(c, "SELECT 1");
    PQfinish(c);
    if (run[1].c) PQfinish(run[1].c);
    PQfinish(adm);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
    return it_done();
}
