/* workers = 4: the kernel spreads clients over the workers' sockets. A
 * cancel works for a client of every worker, whichever worker the cancel's
 * own connection lands on (the key names the client's worker, which gets
 * the request); the console, on one worker, sees the clients of all (SHOW
 * CLIENTS lists each once with an id of its own, SHOW POOLS sums them);
 * replica health checks run once per backend, not once per worker; RELOAD
 * and SET reach every worker; SIGTERM stops them all. */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define NWORKERS 4
#define PER_WORKER 2 /* clients per worker that run a pg_sleep and are cancelled */
#define MAX_CLIENTS 48

#define OPTS                                                                                       \
    "workers = 4\npool_mode = transaction\ndefault_pool_size = 40\nadmin_users = sl_scram\n"

static it_sluice_t sl;
static PGconn *cl[MAX_CLIENTS];
static int ncl;

/* The worker a client's BackendKeyData names (cancelkey.h: bits 15..10 of
 * the process id). */
static int worker_of(PGconn *c) {
    return (int)(((uint32_t)PQbackendPID(c) >> 10) & 0x3F);
}

/* Opens clients until every worker has at least PER_WORKER of them. */
static void spread_clients(int *per) {
    memset(per, 0, sizeof(int) * NWORKERS);
    for (;;) {
        bool enough = true;
        for (int w = 0; w < NWORKERS; w++)
            enough = enough && per[w] >= PER_WORKER;
        if (enough) return;
        IT_ASSERT(ncl < MAX_CLIENTS, "%d clients did not reach every one of %d workers", ncl,
                  NWORKERS);
        PGconn *c = it_connect(&sl, "sl_scram", NULL);
        int w = worker_of(c);
        IT_ASSERT(w >= 0 && w < NWORKERS, "client's key names worker %d of %d", w, NWORKERS);
        per[w]++;
        cl[ncl++] = c;
    }
}

/* SHOW CLIENTS lists every client of every worker, each id once, and SHOW
 * POOLS counts them all in one row. */
static void console_sees_all(PGconn *adm) {
    PGresult *r = it_show(adm, "SHOW CLIENTS");
    int app = 0, ncon = 0;
    uint32_t ids[MAX_CLIENTS + 8];
    for (int i = 0; i < PQntuples(r); i++) {
        uint32_t id = (uint32_t)atol(PQgetvalue(r, i, it_col(r, "id")));
        for (int k = 0; k < app + ncon; k++)
            IT_ASSERT(ids[k] != id, "SHOW CLIENTS lists id %u twice", id);
        if (app + ncon < (int)(sizeof ids / sizeof *ids)) ids[app + ncon] = id;
        if (!strcmp(PQgetvalue(r, i, it_col(r, "database")), "sluice_test"))
            app++;
        else
            ncon++;
    }
    PQclear(r);
    IT_ASSERT(app == ncl, "SHOW CLIENTS lists %d clients of sluice_test, %d are connected", app,
              ncl);
    IT_ASSERT(ncon == 1, "SHOW CLIENTS lists %d console clients", ncon);
    r = it_show(adm, "SHOW POOLS");
    int row = -1;
    for (int i = 0; i < PQntuples(r); i++)
        if (!strcmp(PQgetvalue(r, i, it_col(r, "database")), "sluice_test") &&
            !strcmp(PQgetvalue(r, i, it_col(r, "user")), "sl_scram")) {
            IT_ASSERT(row < 0, "SHOW POOLS has two rows for sluice_test/sl_scram");
            row = i;
        }
    IT_ASSERT(row >= 0, "SHOW POOLS has a row for sluice_test/sl_scram");
    long active = atol(PQgetvalue(r, row, it_col(r, "cl_active")));
    IT_ASSERT(active == ncl, "SHOW POOLS cl_active = %ld, %d clients are connected", active, ncl);
    PQclear(r);
    r = it_show(adm, "SHOW LISTS");
    for (int i = 0; i < PQntuples(r); i++)
        if (!strcmp(PQgetvalue(r, i, 0), "used_clients"))
            IT_ASSERT(atol(PQgetvalue(r, i, 1)) == ncl + 1, "SHOW LISTS used_clients = %s",
                      PQgetvalue(r, i, 1));
    PQclear(r);
}

/* Backends of the test running its pg_sleep, straight from the primary. */
static int sleeping(PGconn *direct) {
    return atoi(it_value(direct, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                                 "AND query = 'SELECT pg_sleep(10)'"));
}

/* PER_WORKER clients of each worker run pg_sleep(10); each is cancelled
 * from a new connection (PQcancel), which lands on any worker: every query
 * ends with 57014 within a second of its cancel. */
static void cancel_everywhere(void) {
    PGconn *run[NWORKERS * PER_WORKER];
    int per[NWORKERS] = {0}, n = 0;
    for (int i = 0; i < ncl && n < NWORKERS * PER_WORKER; i++) {
        int w = worker_of(cl[i]);
        if (per[w] == PER_WORKER) continue;
        per[w]++;
        run[n++] = cl[i];
        IT_ASSERT(PQsendQuery(cl[i], "SELECT pg_sleep(10)"), "send: %s", PQerrorMessage(cl[i]));
    }
    PGconn *direct = it_direct();
    double deadline = it_now() + 5;
    while (sleeping(direct) < n) {
        IT_ASSERT(it_now() < deadline, "only %d of %d queries reached the primary",
                  sleeping(direct), n);
        usleep(20000);
    }
    PQfinish(direct);
    for (int i = 0; i < n; i++) {
        double t0 = it_now();
        PGcancel *pc = PQgetCancel(run[i]);
        char err[256];
        IT_ASSERT(PQcancel(pc, err, sizeof err), "cancel sent: %s", err);
        PQfreeCancel(pc);
        PGresult *r = PQgetResult(run[i]);
        double took = it_now() - t0;
        const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        IT_ASSERT(code && !strcmp(code, "57014"),
                  "the query of a client of worker %d ends with 57014 (got %s after %.1f s)",
                  worker_of(run[i]), code ? code : "success", took);
        IT_ASSERT(took < 1.0, "the cancel of a client of worker %d took %.2f s", worker_of(run[i]),
                  took);
        PQclear(r);
        while ((r = PQgetResult(run[i])))
            PQclear(r);
        /* The client carries on. */
        IT_ASSERT(!strcmp(it_value(run[i], "SELECT 7"), "7"), "client usable after its cancel");
    }
}

/* Health checks of the backends of `rw` (primary and two replicas) run
 * once per backend, not once per worker: with clients of rw on every
 * worker, each backend has one check connection. Every worker's clients
 * still read from the replicas. */
static int checks_on(int port) {
    PGconn *d = it_direct_port(port);
    int n = atoi(it_value(d, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'sl_scram' "
                             "AND query LIKE 'SELECT pg_is_in_recovery(), CASE%'"));
    PQfinish(d);
    return n;
}

static void health_once(void) {
    PGconn *rw[NWORKERS] = {NULL};
    int have = 0, tries = 0;
    while (have < NWORKERS) {
        IT_ASSERT(tries++ < MAX_CLIENTS, "rw clients did not reach every worker");
        PGconn *c = it_connect_db(&sl, "sl_scram", "rw", NULL);
        IT_ASSERT(PQstatus(c) == CONNECTION_OK, "rw: %s", PQerrorMessage(c));
        int w = worker_of(c);
        if (rw[w]) {
            PQfinish(c);
            continue;
        }
        rw[w] = c;
        have++;
        /* A read routes: this worker's route of rw exists from here. */
        it_value(c, "SELECT 1");
    }
    int ports[] = {it_cl.primary, it_cl.replica1, it_cl.replica2};
    double deadline = it_now() + 10;
    for (int i = 0; i < 3; i++) {
        while (checks_on(ports[i]) < 1) {
            IT_ASSERT(it_now() < deadline, "backend %d is never checked", i);
            usleep(50000);
        }
    }
    /* A few check periods: none more appears. */
    for (int k = 0; k < 10; k++) {
        for (int i = 0; i < 3; i++) {
            int n = checks_on(ports[i]);
            IT_ASSERT(n == 1, "backend %d has %d health check connections with %d workers", i, n,
                      NWORKERS);
        }
        usleep(100000);
    }
    /* Reads of every worker's clients reach a replica. */
    for (int w = 0; w < NWORKERS; w++) {
        bool replica = false;
        for (int k = 0; k < 20 && !replica; k++)
            replica = !strcmp(it_value(rw[w], "SELECT pg_is_in_recovery()"), "t");
        IT_ASSERT(replica, "reads of worker %d never reach a replica", w);
        PQfinish(rw[w]);
    }
}

/* RELOAD reads the file once for every worker and says so once. */
static void reload_once(PGconn *adm) {
    PGresult *r = PQexec(adm, "RELOAD");
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "RELOAD: %s", PQresultErrorMessage(r));
    PQclear(r);
    int n = it_log_count(&sl, "configuration reloaded");
    IT_ASSERT(n == 1, "a RELOAD of %d workers is logged once (%d lines)", NWORKERS, n);
}

/* SET on the console's worker changes the settings of every worker: with
 * client_idle_timeout = 1 each worker's janitor closes its idle clients. */
static void set_reaches_every_worker(PGconn *adm) {
    PGresult *r = PQexec(adm, "SET client_idle_timeout = 1");
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "SET: %s", PQresultErrorMessage(r));
    PQclear(r);
    usleep(2500000);
    for (int i = 0; i < ncl; i++) {
        r = PQexec(cl[i], "SELECT 1");
        IT_ASSERT(PQresultStatus(r) != PGRES_TUPLES_OK,
                  "a client of worker %d idle past client_idle_timeout = 1 is still open",
                  worker_of(cl[i]));
        PQclear(r);
    }
}

/* workers = 0 (the default) runs one loop per online CPU, at most 64, and
 * the start line says how many. */
static void zero_is_online_cpus(void) {
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cpus > 64) cpus = 64;
    it_sluice_t s;
    it_sluice_start(&s, "workers = 0\n", NULL);
    char line[96];
    snprintf(line, sizeof line, "workers=%ld (workers = 0: one per online CPU)", cpus);
    IT_ASSERT(it_log_wait(&s, line, 1, 5) >= 1, "workers = 0 started %ld workers", cpus);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

int main(void) {
    it_init("it_workers");
    zero_is_online_cpus();
    it_sluice_start(&sl, OPTS,
                    "rw = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
                    "replicas=127.0.0.1:{REPLICA1},127.0.0.1:{REPLICA2}\n");
    int per[NWORKERS];
    spread_clients(per);
    printf("%d clients: %d %d %d %d per worker\n", ncl, per[0], per[1], per[2], per[3]);
    PGconn *adm = it_connect_db(&sl, "sl_scram", "pgbouncer", NULL);
    IT_ASSERT(PQstatus(adm) == CONNECTION_OK, "console: %s", PQerrorMessage(adm));
    console_sees_all(adm);
    cancel_everywhere();
    console_sees_all(adm);
    health_once();
    reload_once(adm);
    set_reaches_every_worker(adm);
    PQfinish(adm);
    for (int i = 0; i < ncl; i++)
        PQfinish(cl[i]);
    /* SIGTERM: every worker drains and the process exits. */
    int st = it_sluice_stop(&sl, SIGTERM);
    IT_ASSERT(st == 0, "sluice exits 0 after SIGTERM with 4 workers (status %d)", st);
    return it_done();
}
