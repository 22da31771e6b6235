/* Failover on a cluster of its own (the shared one stays intact): the
 * primary stops, writes fail quickly with a clear error, a replica is
 * promoted, and writes go to it through the same sluice, without a restart
 * or a reload. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static char dir[64];
static int ports[3];

static void pg_ctl(const char *node, const char *action) {
    it_pg_ctl(dir, node, action);
}

static void cluster_stop(void) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s stop %s >/dev/null 2>&1; rm -rf %s", getenv("CLUSTER_SH"), dir,
             dir);
    if (system(cmd) != 0) fprintf(stderr, "cluster stop failed\n");
}

static void cluster_start(void) {
    snprintf(dir, sizeof dir, "/tmp/sluice-failover-XXXXXX");
    IT_ASSERT(mkdtemp(dir), "mkdtemp");
    const char *sh = getenv("CLUSTER_SH");
    IT_ASSERT(sh, "CLUSTER_SH not set (run through ctest)");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "CLUSTER_TLS=0 %s start %s >/dev/null", sh, dir);
    it_on_fail(cluster_stop);
    IT_ASSERT(system(cmd) == 0, "the failover cluster did not start: %s", cmd);
    snprintf(cmd, sizeof cmd, "%s/cluster.env", dir);
    FILE *f = fopen(cmd, "r");
    IT_ASSERT(f, "no cluster.env");
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "PRIMARY_PORT=", 13)) ports[0] = atoi(line + 13);
        if (!strncmp(line, "REPLICA1_PORT=", 14)) ports[1] = atoi(line + 14);
        if (!strncmp(line, "REPLICA2_PORT=", 14)) ports[2] = atoi(line + 14);
    }
    fclose(f);
}

static PGresult *try_exec(PGconn **c, it_sluice_t *s, const char *sql) {
    if (PQstatus(*c) != CONNECTION_OK) {
        char ci[256];
        snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d dbname=fo user=sl_scram password=scram_pw",
                 s->port);
        PQfinish(*c);
        *c = PQconnectdb(ci);
    }
    return PQexec(*c, sql);
}

int main(void) {
    it_init("it_failover");
    cluster_start();
    char dbs[300];
    snprintf(dbs, sizeof dbs,
             "fo = host=127.0.0.1 port=%d dbname=sluice_test "
             "replicas=127.0.0.1:%d,127.0.0.1:%d\n",
             ports[0], ports[1], ports[2]);
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = transaction\nhealth_check_period = 0.5\n"
                    "health_check_failures = 2\n",
                    dbs);
    PGconn *c = it_connect_db(&s, "sl_scram", "fo", NULL);
    it_exec(c, "CREATE TABLE fo_t (id int)");
    char want[16];
    snprintf(want, sizeof want, "%d", ports[0]);
    IT_ASSERT(
        !strcmp(it_value(c, "INSERT INTO fo_t VALUES (1) RETURNING inet_server_port()"), want),
        "writes go to the primary");

    /* Both replicas have the table and its row before the primary goes. */
    for (int i = 1; i <= 2; i++) {
        char ci[300];
        snprintf(ci, sizeof ci, "host=%s port=%d dbname=sluice_test user=postgres", dir, ports[i]);
        PGconn *d = PQconnectdb(ci);
        double deadline = it_now() + 20;
        for (;;) {
            PGresult *q = PQexec(d, "SELECT count(*) FROM fo_t");
            bool ok = PQresultStatus(q) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(q, 0, 0), "1");
            PQclear(q);
            if (ok) break;
            IT_ASSERT(it_now() < deadline, "replica %d did not catch up", i);
            usleep(20000);
        }
        PQfinish(d);
    }
    pg_ctl("primary", "-m immediate stop");
    /* A write now fails with a clear error, quickly. */
    double t0 = it_now();
    PGresult *r = try_exec(&c, &s, "INSERT INTO fo_t VALUES (2)");
    double took = it_now() - t0;
    printf("write with the primary down: %.2f s: %s", took, PQresultErrorMessage(r));
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR, "the write fails");
    IT_ASSERT(took < 3, "the error comes quickly (%.2f s)", took);
    PQclear(r);
    /* Once per route of the database that saw it: with workers, the client's
     * may say so too. */
    IT_ASSERT(it_log_wait(&s, "no primary is up", 1, 5) >= 1, "sluice notices and says so");
    /* The health checks run on the first worker, which publishes what they
     * saw to the others: the client's worker may learn it a moment later. */
    double noticed = it_now() + 5;
    for (;;) {
        r = try_exec(&c, &s, "INSERT INTO fo_t VALUES (2)");
        if (strstr(PQresultErrorMessage(r), "no primary is available") || it_now() > noticed)
            break;
        PQclear(r);
        usleep(50000);
    }
    printf("once noticed: %s", PQresultErrorMessage(r));
    IT_ASSERT(strstr(PQresultErrorMessage(r), "no primary is available"), "a clear error");
    PQclear(r);
    /* Reads still work, from the replicas. */
    r = try_exec(&c, &s, "SELECT count(*) FROM fo_t");
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "reads go on: %s", PQerrorMessage(c));
    PQclear(r);

    pg_ctl("replica1", "promote");
    t0 = it_now();
    snprintf(want, sizeof want, "%d", ports[1]);
    for (;;) {
        r = try_exec(&c, &s, "INSERT INTO fo_t VALUES (3) RETURNING inet_server_port()");
        bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        if (ok) IT_ASSERT(!strcmp(PQgetvalue(r, 0, 0), want), "the write ran on the promoted one");
        PQclear(r);
        if (ok) break;
        IT_ASSERT(it_now() - t0 < 5, "writes work again after the promotion");
        usleep(50000);
    }
    took = it_now() - t0;
    printf("writes succeed %.2f s after the promotion\n", took);
    IT_ASSERT(took <= 1.0 + 0.5, "within 2 health periods (%.2f s)", took);
    IT_ASSERT(it_log_count(&s, "was promoted") == 1, "the promotion is logged");
    IT_ASSERT(!strcmp(it_value(c, "SELECT count(*) FROM fo_t WHERE id = 3"), "1"),
              "the row is there");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    it_on_fail(NULL);
    cluster_stop();
    return it_done();
}
