/* An idle sluice with one replicated database wakes for its health checks
 * as often as lsn_poll_period says, not every few milliseconds. Measured as
 * sluice's voluntary context switches (each time its loop blocks) over 2 s
 * with lsn_poll_period = 0.5: about ten a second with two backends checked
 * twice a second each, where a fixed 5 ms tick made two hundred. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static long ctxt_switches(pid_t pid) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    IT_ASSERT(f, "cannot read %s", path);
    long n = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "voluntary_ctxt_switches: %ld", &n) == 1) break;
    fclose(f);
    IT_ASSERT(n >= 0, "no voluntary_ctxt_switches in %s", path);
    return n;
}

int main(void) {
    it_init("it_idlewake");
    it_sluice_t s;
    it_sluice_start(&s, "lsn_poll_period = 0.5\nhealth_check_period = 1\n",
                    "rw = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
                    "replicas=127.0.0.1:{REPLICA1}\n");
    /* The first client of the database starts its health checks. */
    PGconn *c = it_connect_db(&s, "sl_scram", "rw", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    IT_ASSERT(!strcmp(it_value(c, "SELECT 1"), "1"), "query");
    PQfinish(c);
    usleep(1000000); /* the check connections are up */
    long before = ctxt_switches(s.pid);
    usleep(2000000);
    double per_s = (double)(ctxt_switches(s.pid) - before) / 2.0;
    printf("idle with lsn_poll_period = 0.5: %.0f wakeups/s\n", per_s);
    /* Expected about 10 (timer, two answers, janitor); the threshold leaves
     * room for a loaded machine and still fails a tick of a few ms. */
    IT_ASSERT(per_s < 60, "%.0f wakeups/s idle with lsn_poll_period = 0.5", per_s);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    return it_done();
}
