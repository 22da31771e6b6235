/* Fault matrix, clients that misbehave, on a pool of ONE (so that a server
 * left dirty or stuck is the next client's):
 *  - a client that asks for a 1 GB result and never reads it: sluice's RSS
 *    grows by less than RSS_MAX_KB and the backend is throttled (it waits
 *    in ClientWrite: sluice stopped reading from it); once the client goes,
 *    the next client is served;
 *  - a client that disconnects in the middle of a COPY FROM STDIN (no row
 *    of it lands) and of a COPY TO STDOUT: the next client is served. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

#define RSS_MAX_KB (64 * 1024) /* growth allowed while 1 GB waits behind the client */

static it_sluice_t sl;

static long rss_kb(void) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)sl.pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

static void next_client_served(const char *after) {
    PGconn *c = it_connect_db(&sl, "sl_scram", "sluice_test", "connect_timeout=10");
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "after %s: connect: %s", after, PQerrorMessage(c));
    PGresult *r = PQexec(c, "SELECT 'served', current_setting('transaction_isolation')");
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "after %s: the next client is served: %s",
              after, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

static void never_reads(void) {
    long rss0 = rss_kb();
    int fd = it_raw_login(&sl, "sl_scram", "sluice_test");
    int small = 4096; /* a small receive buffer: the client's kernel holds little */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    it_wire_t w = {0};
    it_wire_query(&w, "SELECT repeat('x', 1000) FROM generate_series(1, 1000000) /*never_read*/");
    IT_ASSERT(write(fd, w.b, (size_t)w.n) == w.n, "send");
    PGconn *d = it_direct();
    double deadline = it_now() + 20;
    const char *wait = "";
    while (strcmp(wait, "ClientWrite") != 0) {
        IT_ASSERT(it_now() < deadline, "the backend is throttled (wait_event %s)", wait);
        usleep(50000);
        wait = it_value(d, "SELECT coalesce(max(wait_event), 'none') FROM pg_stat_activity WHERE "
                           "query LIKE '%/*never_read*/' AND state = 'active'");
    }
    /* Held a while: nothing grows meanwhile. */
    usleep(1000000);
    long rss1 = rss_kb();
    printf("never read: backend waits in ClientWrite; sluice RSS %ld -> %ld kB\n", rss0, rss1);
    IT_ASSERT(rss1 - rss0 < RSS_MAX_KB, "RSS grew by %ld kB", rss1 - rss0);
    IT_ASSERT(!strcmp(it_value(d, "SELECT wait_event FROM pg_stat_activity WHERE query LIKE "
                                  "'%/*never_read*/' AND state = 'active'"),
                      "ClientWrite"),
              "still throttled");
    close(fd);
    next_client_served("a client that never read");
    PQfinish(d);
}

static void copy_in_gone(void) {
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    it_exec(c, "DROP TABLE IF EXISTS it_fault_copy");
    it_exec(c, "CREATE TABLE it_fault_copy (x int)");
    PGresult *r = PQexec(c, "COPY it_fault_copy FROM STDIN");
    IT_ASSERT(PQresultStatus(r) == PGRES_COPY_IN, "copy in: %s", PQerrorMessage(c));
    PQclear(r);
    for (int i = 0; i < 10000; i++)
        IT_ASSERT(PQputCopyData(c, "1\n", 2) == 1, "put");
    PQflush(c);
    shutdown(PQsocket(c), SHUT_RDWR); /* gone without CopyDone or CopyFail */
    PQfinish(c);
    next_client_served("a client gone mid-COPY in");
    c = it_connect(&sl, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(c, "SELECT count(*) FROM it_fault_copy"), "0"),
              "no row of the broken COPY");
    it_exec(c, "DROP TABLE it_fault_copy");
    PQfinish(c);
}

static void copy_out_gone(void) {
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    PGresult *r =
        PQexec(c, "COPY (SELECT repeat('y', 1000) FROM generate_series(1, 1000000)) TO STDOUT");
    IT_ASSERT(PQresultStatus(r) == PGRES_COPY_OUT, "copy out: %s", PQerrorMessage(c));
    PQclear(r);
    char *buf;
    for (int i = 0; i < 1000; i++) {
        IT_ASSERT(PQgetCopyData(c, &buf, 0) > 0, "copy data");
        PQfreemem(buf);
    }
    shutdown(PQsocket(c), SHUT_RDWR);
    PQfinish(c);
    double t0 = it_now();
    next_client_served("a client gone mid-COPY out");
    printf("after a client gone mid-COPY out, the next was served in %.2f s\n", it_now() - t0);
}

int main(void) {
    it_init("it_fault_client");
    it_sluice_start(&sl,
                    "auth_type = trust\npool_mode = transaction\ndefault_pool_size = "
                    "1\nquery_wait_timeout = 20\n",
                    NULL);
    copy_in_gone();
    copy_out_gone();
    never_reads();
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
    return it_done();
}
