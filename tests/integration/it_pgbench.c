/* pgbench through transaction pooling: simple and extended protocol (20
 * clients over 5 servers, 6 s each) and named prepared statements (50
 * clients over 10 servers, 15 s): zero failed or aborted transactions. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static void run(const it_sluice_t *s, const char *mode, int clients, int seconds) {
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof cmd,
             "PGPASSWORD=scram_pw pgbench -h 127.0.0.1 -p %d -U sl_scram -c %d -j 2 -T %d -M %s "
             "sluice_test 2>&1",
             s->port, clients, seconds, mode);
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int rc = pclose(p);
    printf("pgbench -M %s:\n%s\n", mode, out);
    IT_ASSERT(rc == 0, "pgbench -M %s exited %d", mode, rc);
    IT_ASSERT(strstr(out, "number of failed transactions: 0 (0.000%)"), "failures in -M %s", mode);
    IT_ASSERT(!strstr(out, "aborted"), "aborted clients in -M %s", mode);
}

int main(void) {
    it_init("it_pgbench");
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "PGPASSWORD=scram_pw pgbench -i -s 1 -q -h 127.0.0.1 -p %d -U sl_scram sluice_test "
             ">/dev/null 2>&1",
             it_cl.primary);
    IT_ASSERT(system(cmd) == 0, "pgbench -i");
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 5\n", NULL);
    run(&s, "simple", 20, 6);
    run(&s, "extended", 20, 6);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    /* Each pgbench client prepares its statements once, on whichever server
     * it first gets, then only binds them by name. */
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 10\n", NULL);
    run(&s, "prepared", 50, 15);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    return it_done();
}
