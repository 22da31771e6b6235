/* Two workers and what crosses between them (ledger.h, pool.c):
 *  1. pool_size = 1 in transaction pooling, one client on each worker
 *     running statements in a loop: the one server goes back and forth
 *     (both clients see the same backend pid), and SHOW SERVERS, SHOW
 *     POOLS, SHOW LISTS and /metrics, sampled in turn all the while, count
 *     it every time, also while it is between the two workers (on
 *     neither's lists: the ledger lists it then).
 *  2. max_db_connections = 1: a client of one pool (sl_md5) leaves its
 *     server idle on one worker; a client of another pool of the same
 *     database (sl_scram) on the other worker is served at once, because
 *     the other worker closes that idle server to make room, as one worker
 *     does for its own pools (PgBouncer's eviction). Without it the
 *     client would wait out query_wait_timeout. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define MAX_TRIES 64 /* connections tried to land one on a given worker */

static it_sluice_t sl;

/* A client of user to database sluice_test on worker `want` (>= 0), or on
 * any worker but `-1 - want` (< 0): the kernel spreads connections over
 * the workers' sockets, so new ones are opened until one lands there. */
static PGconn *connect_on(const char *user, int want) {
    for (int i = 0; i < MAX_TRIES; i++) {
        PGconn *c = it_connect(&sl, user, NULL);
        int w = it_worker_of(c);
        if (want >= 0 ? w == want : w != -1 - want) return c;
        PQfinish(c);
    }
    IT_ASSERT(false, "%d connections of %s: none landed where wanted (%d)", MAX_TRIES, user, want);
    return NULL;
}

/* ---- 1. a moving server stays in SHOW SERVERS ---- */

typedef struct runner {
    PGconn *c;
    pthread_t th;
    int pids[2]; /* the backend pids it saw (the first two different ones) */
    int npids;
    int runs;
} runner_t;

static atomic_bool stop;

static void *run_main(void *arg) {
    runner_t *r = arg;
    while (!atomic_load(&stop)) {
        PGresult *res = PQexec(r->c, "SELECT pg_backend_pid()");
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            fprintf(stderr, "SELECT pg_backend_pid(): %s", PQresultErrorMessage(res));
            PQclear(res);
            break;
        }
        int pid = atoi(PQgetvalue(res, 0, 0));
        PQclear(res);
        if (r->npids == 0 || (r->npids == 1 && r->pids[0] != pid)) r->pids[r->npids++] = pid;
        r->runs++;
    }
    return NULL;
}

/* Rows of SHOW SERVERS for sluice_test / sl_scram. */
static int server_rows(PGconn *adm) {
    PGresult *r = it_show(adm, "SHOW SERVERS");
    int n = 0;
    for (int i = 0; i < PQntuples(r); i++)
        n += !strcmp(PQgetvalue(r, i, it_col(r, "database")), "sluice_test") &&
             !strcmp(PQgetvalue(r, i, it_col(r, "user")), "sl_scram");
    PQclear(r);
    return n;
}

/* SHOW POOLS's servers of sluice_test / sl_scram, every state summed. */
static int pool_servers(PGconn *adm) {
    PGresult *r = it_show(adm, "SHOW POOLS");
    static const char *cols[] = {"sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"};
    int n = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        if (strcmp(PQgetvalue(r, i, it_col(r, "database")), "sluice_test") ||
            strcmp(PQgetvalue(r, i, it_col(r, "user")), "sl_scram"))
            continue;
        for (size_t k = 0; k < sizeof cols / sizeof *cols; k++)
            n += atoi(PQgetvalue(r, i, it_col(r, cols[k])));
    }
    PQclear(r);
    return n;
}

/* SHOW LISTS's used_servers. */
static int list_servers(PGconn *adm) {
    PGresult *r = it_show(adm, "SHOW LISTS");
    int n = -1;
    for (int i = 0; i < PQntuples(r); i++)
        if (!strcmp(PQgetvalue(r, i, 0), "used_servers")) n = atoi(PQgetvalue(r, i, 1));
    PQclear(r);
    return n;
}

/* The sluice_servers gauges of sluice_test's primary pool, summed over
 * their states, from GET /metrics on port mport. */
static int metric_servers(int mport) {
    static char resp[1 << 20];
    it_scrape(mport, resp, sizeof resp);
    int n = 0;
    for (char *line = strstr(resp, "\nsluice_servers{"); line;
         line = strstr(line + 1, "\nsluice_servers{")) {
        char *end = strchr(line + 1, '\n');
        if (end) *end = '\0';
        if (strstr(line, "database=\"sluice_test\"") && strstr(line, "user=\"sl_scram\""))
            n += atoi(strrchr(line, ' ') + 1);
        if (end) *end = '\n';
    }
    return n;
}

static void moving_server_listed(void) {
    int mport = it_free_port();
    char opts[256];
    snprintf(opts, sizeof opts,
             "workers = 2\npool_mode = transaction\ndefault_pool_size = 1\n"
             "admin_users = sl_scram\nmetrics_listen = 127.0.0.1:%d\n",
             mport);
    it_sluice_start(&sl, opts, NULL);
    runner_t run[2] = {{.c = connect_on("sl_scram", 0)}, {.c = connect_on("sl_scram", 1)}};
    /* The server exists before the sampling starts. */
    it_value(run[0].c, "SELECT 1");
    PGconn *adm = it_connect_db(&sl, "sl_scram", "pgbouncer", NULL);
    atomic_store(&stop, false);
    for (int i = 0; i < 2; i++)
        pthread_create(&run[i].th, NULL, run_main, &run[i]);
    /* Each view in turn: SHOW SERVERS, SHOW POOLS, SHOW LISTS, /metrics. */
    static const char *views[] = {"SHOW SERVERS", "SHOW POOLS", "SHOW LISTS", "/metrics"};
    int samples = 0, missed = 0, extra = 0, view_missed[4] = {0}, view_samples[4] = {0};
    double t0 = it_now();
    /* A pause between samples: each freezes both workers, and back to
     * back they would leave the clients little time to move the server. */
    while (it_now() - t0 < 4.0 && samples < 4000) {
        int v = samples % 4;
        int n = v == 0   ? server_rows(adm)
                : v == 1 ? pool_servers(adm)
                : v == 2 ? list_servers(adm)
                         : metric_servers(mport);
        missed += n == 0;
        view_missed[v] += n == 0;
        view_samples[v]++;
        extra += n > 1;
        samples++;
        usleep(500);
    }
    for (int v = 0; v < 4; v++)
        printf("(1) %s: %d of %d samples without the server\n", views[v], view_missed[v],
               view_samples[v]);
    atomic_store(&stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(run[i].th, NULL);
    printf("(1) %d samples of the four views: %d without the server, %d with more; %d and %d "
           "statements on workers 0 and 1; pids %d / %d\n",
           samples, missed, extra, run[0].runs, run[1].runs, run[0].pids[0], run[1].pids[0]);
    IT_ASSERT(run[0].runs >= 5 && run[1].runs >= 5, "both clients ran statements (%d, %d)",
              run[0].runs, run[1].runs);
    /* One backend for both: the server went from worker to worker. */
    IT_ASSERT(run[0].pids[0] == run[1].pids[0] && run[0].npids == 1 && run[1].npids == 1,
              "both workers' clients used the one backend (pids %d, %d)", run[0].pids[0],
              run[1].pids[0]);
    IT_ASSERT(samples >= 50, "SHOW SERVERS answered %d times", samples);
    for (int v = 0; v < 4; v++)
        IT_ASSERT(view_missed[v] == 0,
                  "%s counts the pool's one server every time, also while it moves "
                  "between the workers: %d of %d samples missed it",
                  views[v], view_missed[v], view_samples[v]);
    IT_ASSERT(extra == 0, "never two servers for a pool of one (%d samples had more)", extra);
    PQfinish(adm);
    PQfinish(run[0].c), PQfinish(run[1].c);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

/* ---- 2. eviction across workers under max_db_connections ---- */

static int backends_of(PGconn *d, const char *user) {
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pg_stat_activity WHERE usename = '%s' AND datname = "
             "'sluice_test'",
             user);
    return atoi(it_value(d, sql));
}

static void evict_across_workers(PGconn *direct) {
    it_sluice_start(&sl,
                    "workers = 2\npool_mode = transaction\nmax_db_connections = 1\n"
                    "query_wait_timeout = 5\nauth_type = md5\nverbose = 1\n", /* server closes are
                                                                                 logged at debug */
                    NULL);
    /* sl_scram's pool learns what a fresh login reports (one server,
     * then idle), so that its later logins on any worker need none. */
    PGconn *first = it_connect(&sl, "sl_scram", NULL);
    it_value(first, "SELECT 1");
    PQfinish(first);
    /* sl_md5's pool then gets the database's one server (making room the
     * same way), idle after the statement, on its client's worker. */
    PGconn *holder = it_connect(&sl, "sl_md5", NULL);
    int hw = it_worker_of(holder);
    it_value(holder, "SELECT 1");
    IT_ASSERT(backends_of(direct, "sl_md5") == 1, "sl_md5's pool holds the database's server");
    /* sl_scram's client on the other worker: nothing there to close. */
    PGconn *asker = connect_on("sl_scram", -1 - hw);
    int evicted = it_log_count(&sl, "making room for another worker's pool");
    double t0 = it_now();
    PGresult *r = PQexec(asker, "SELECT 1");
    double took = it_now() - t0;
    printf("(2) sl_md5 on worker %d, sl_scram on worker %d: served in %.3f s: %s\n", hw,
           it_worker_of(asker), took,
           PQresultStatus(r) == PGRES_TUPLES_OK ? "ok" : PQresultErrorMessage(r));
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK,
              "a client waiting at max_db_connections on one worker is served when another "
              "worker holds an idle server of another pool of the database: %s",
              PQresultErrorMessage(r));
    PQclear(r);
    /* Well under query_wait_timeout (5 s): served by the eviction, not by
     * a timeout of some other kind. */
    IT_ASSERT(took < 4.0, "served in %.2f s", took);
    IT_ASSERT(it_log_wait(&sl, "making room for another worker's pool", evicted + 1, 5) ==
                  evicted + 1,
              "the other worker closed its idle server to make room");
    /* Its backend exits once it reads the Terminate. */
    int left = 1;
    for (double t = it_now(); (left = backends_of(direct, "sl_md5")) > 0 && it_now() - t < 5;)
        usleep(20000);
    IT_ASSERT(left == 0, "sl_md5's idle server was closed (%d backend(s) left)", left);
    PQfinish(holder), PQfinish(asker);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

int main(void) {
    it_init("it_workers_move");
    PGconn *direct = it_direct();
    moving_server_listed();
    evict_across_workers(direct);
    PQfinish(direct);
    return it_done();
}
