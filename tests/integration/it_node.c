/* A real driver other than libpq: node-postgres, which prepares a named
 * statement once per connection and then only binds it, through
 * transaction pooling over 3 servers. The statements must have been shared
 * on the servers (prepared there by sluice, not per client). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

int main(void) {
    it_init("it_node");
    const char *script = getenv("SLUICE_NODE_SCRIPT");
    IT_ASSERT(script, "SLUICE_NODE_SCRIPT not set");
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 3\n", NULL);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "node %s %d 2>&1", script, s.port);
    IT_ASSERT(system(cmd) == 0, "node-postgres run failed (see its output above)");
    /* What the servers hold: sluice's names for the driver's statements. */
    PGconn *c = it_connect(&s, "sl_scram", NULL);
    it_exec(c, "BEGIN");
    int n = atoi(it_value(c, "SELECT count(*) FROM pg_prepared_statements "
                             "WHERE name LIKE 'sluice\\_%' AND statement LIKE '%$1::int + 1%'"));
    IT_ASSERT(n == 1, "plus-one prepared once on this server under sluice's name, got %d", n);
    it_exec(c, "COMMIT");
    PQfinish(c);
    IT_ASSERT(it_log_count(&s, "level=error") == 0, "no errors logged");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    return it_done();
}
