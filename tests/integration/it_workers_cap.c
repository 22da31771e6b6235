/* workers = 4 and pool_size = 10 in transaction pooling: 200 clients run
 * short transactions for a few seconds while pg_stat_activity on the
 * primary is sampled every 20 ms; the backends of the pool never number
 * more than 10, all four workers serve clients, and every client gets its
 * transactions through. Each worker with a pool of its own would open up
 * to 10 (40 in all): the cap holds because the workers share it. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define NCLIENTS 200
#define POOL 10
#define RUN_SECS 4.0

static it_sluice_t sl;
static atomic_int connected, done_xacts, failed;
static atomic_bool go, stop;
static atomic_int per_worker[64];

static void *client_main(void *arg) {
    (void)arg;
    PGconn *c = it_connect_db(&sl, "sl_scram", "sluice_test", NULL);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(c));
        atomic_fetch_add(&failed, 1);
        PQfinish(c);
        return NULL;
    }
    atomic_fetch_add(&per_worker[((uint32_t)PQbackendPID(c) >> 10) & 0x3F], 1);
    atomic_fetch_add(&connected, 1);
    while (!atomic_load(&go))
        usleep(1000);
    int n = 0;
    while (!atomic_load(&stop)) {
        PGresult *r = PQexec(c, "BEGIN; SELECT pg_sleep(0.002); COMMIT");
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            fprintf(stderr, "transaction: %s", PQresultErrorMessage(r));
            atomic_fetch_add(&failed, 1);
            PQclear(r);
            break;
        }
        PQclear(r);
        n++;
    }
    atomic_fetch_add(&done_xacts, n > 0);
    PQfinish(c);
    return NULL;
}

/* Backends the pool has open on the primary (any state). */
static int backends(PGconn *direct) {
    return atoi(it_value(direct, "SELECT count(*) FROM pg_stat_activity WHERE usename = "
                                 "'sl_scram' AND datname = 'sluice_test'"));
}

int main(void) {
    it_init("it_workers_cap");
    it_sluice_start(&sl,
                    "workers = 4\npool_mode = transaction\ndefault_pool_size = 10\n"
                    "max_client_conn = 400\nquery_wait_timeout = 30\n",
                    NULL);
    PGconn *direct = it_direct();
    pthread_t th[NCLIENTS];
    for (int i = 0; i < NCLIENTS; i++)
        IT_ASSERT(pthread_create(&th[i], NULL, client_main, NULL) == 0, "thread %d", i);
    double deadline = it_now() + 30;
    while (atomic_load(&connected) + atomic_load(&failed) < NCLIENTS) {
        IT_ASSERT(it_now() < deadline, "%d of %d clients connected", atomic_load(&connected),
                  NCLIENTS);
        usleep(20000);
    }
    IT_ASSERT(atomic_load(&failed) == 0, "%d clients could not connect", atomic_load(&failed));
    int workers_used = 0;
    for (int w = 0; w < 4; w++)
        workers_used += atomic_load(&per_worker[w]) > 0;
    IT_ASSERT(workers_used == 4, "the clients reached %d of 4 workers", workers_used);
    atomic_store(&go, true);
    int most = 0, samples = 0;
    double end = it_now() + RUN_SECS;
    while (it_now() < end) {
        int n = backends(direct);
        if (n > most) most = n;
        samples++;
        IT_ASSERT(n <= POOL, "%d backends on the primary with pool_size = %d over 4 workers", n,
                  POOL);
        usleep(20000);
    }
    atomic_store(&stop, true);
    for (int i = 0; i < NCLIENTS; i++)
        pthread_join(th[i], NULL);
    printf("%d samples, at most %d backends; %d of %d clients ran transactions\n", samples, most,
           atomic_load(&done_xacts), NCLIENTS);
    IT_ASSERT(atomic_load(&failed) == 0, "%d clients failed", atomic_load(&failed));
    IT_ASSERT(atomic_load(&done_xacts) == NCLIENTS, "only %d of %d clients got a transaction",
              atomic_load(&done_xacts), NCLIENTS);
    IT_ASSERT(most >= POOL / 2, "the pool was used (at most %d backends)", most);
    PQfinish(direct);
    return it_done();
}
