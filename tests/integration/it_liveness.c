/* Liveness: closing one client never runs another client's close on the
 * same stack. The case that used to spin: client A's transaction is ended
 * by idle_transaction_timeout from the janitor's walk over the clients;
 * releasing its server wakes the pool, whose backend login had failed, and
 * failing the next client (B, right after A on the walk) while the walk held
 * a pointer to it looped forever at 100 % CPU, accepting nobody. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static it_sluice_t sl;

static char b_error[512];

/* Client B (the same user, so the same pool): needs a second backend, whose
 * login fails. Whatever sluice answers, it must answer. */
static void *client_b(void *arg) {
    (void)arg;
    PGconn *b = it_connect_db(&sl, "alice", "lim", "connect_timeout=10");
    if (PQstatus(b) != CONNECTION_OK) {
        snprintf(b_error, sizeof b_error, "login: %s", PQerrorMessage(b));
    } else {
        PGresult *r = PQexec(b, "SELECT 1");
        snprintf(b_error, sizeof b_error, "query: %s",
                 PQresultStatus(r) == PGRES_TUPLES_OK ? "succeeded" : PQerrorMessage(b));
        PQclear(r);
    }
    PQfinish(b);
    return NULL;
}

static void undo_role(void) {
    PGconn *d = it_direct();
    PQclear(PQexec(d, "DROP ROLE IF EXISTS sl_live"));
    PQfinish(d);
}

static void close_inside_walk(void) {
    PGconn *d = it_direct();
    it_exec(d, "DROP ROLE IF EXISTS sl_live");
    it_exec(d, "CREATE ROLE sl_live LOGIN PASSWORD 'limit_pw'");
    it_on_fail(undo_role);
    it_sluice_start(&sl,
                    "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 2\n"
                    "idle_transaction_timeout = 1\nserver_login_retry = 30\n",
                    "lim = host=127.0.0.1 port={PRIMARY} dbname=sluice_test user=sl_live "
                    "password=limit_pw\nfine = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
                    "user=sl_scram password=scram_pw\n");
    /* A holds the role's only connection, idle in a transaction. */
    PGconn *a = it_connect_db(&sl, "alice", "lim", NULL);
    IT_ASSERT(PQstatus(a) == CONNECTION_OK, "A connects: %s", PQerrorMessage(a));
    it_exec(a, "BEGIN");
    it_exec(a, "SELECT 1");
    /* Any new backend login now fails for good (a wrong password is not
     * retried), while A's server keeps B waiting. */
    it_exec(d, "ALTER ROLE sl_live PASSWORD 'changed'");
    pthread_t tb;
    pthread_create(&tb, NULL, client_b, NULL);
    IT_ASSERT(it_log_wait(&sl, "password authentication failed", 1, 5) >= 1,
              "the second backend login was refused");
    /* A's idle_transaction_timeout fires from the janitor's walk. */
    IT_ASSERT(it_log_wait(&sl, "idle_transaction_timeout", 1, 5) >= 1, "A timed out");
    pthread_join(tb, NULL);
    printf("client B was told: %s\n", b_error);
    IT_ASSERT(strstr(b_error, "password authentication failed"), "B got the login failure: %s",
              b_error);
    /* sluice still runs its loop: it accepts and serves, and does not spin. */
    double cpu0 = it_proc_cpu(sl.pid), t0 = it_now();
    PGconn *c = it_connect_db(&sl, "carol", "fine", "connect_timeout=3");
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "a new client connects: %s", PQerrorMessage(c));
    IT_ASSERT(!strcmp(it_value(c, "SELECT 'served'"), "served"), "and is served");
    usleep(1000000);
    double used = it_proc_cpu(sl.pid) - cpu0, wall = it_now() - t0;
    printf("sluice CPU over %.2f s after the close: %.3f s\n", wall, used);
    IT_ASSERT(used < 0.3 * wall, "sluice used %.2f s of CPU in %.2f s: spinning", used, wall);
    PQfinish(c);
    PQfinish(a);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "clean exit");
    it_exec(d, "DROP ROLE sl_live");
    PQfinish(d);
}

int main(void) {
    it_init("it_liveness");
    close_inside_walk();
    return it_done();
}
