/* Read/write splitting against the fixture's primary and two streaming
 * replicas: where reads and writes land, balance, read-your-writes (and
 * that stale reads do happen without it), lag, latency-aware balancing
 * behind a delaying relay, and a replica stopped under load. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "delay.h"
#include "harness.h"

#define RW_DB                                                                                      \
    "rw = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "                                       \
    "replicas=127.0.0.1:{REPLICA1},127.0.0.1:{REPLICA2}\n"

static void set_replay(bool pause) {
    int ports[] = {it_cl.replica1, it_cl.replica2};
    for (int i = 0; i < 2; i++) {
        PGconn *r = it_direct_port(ports[i]);
        PQclear(
            PQexec(r, pause ? "SELECT pg_wal_replay_pause()" : "SELECT pg_wal_replay_resume()"));
        PQfinish(r);
    }
}

static void resume_all(void) {
    set_replay(false);
}

/* The port the statement's first column reports, or -1 on error. */
static int port_of(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    int port = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1
                   ? atoi(PQgetvalue(r, 0, PQnfields(r) - 1))
                   : -1;
    PQclear(r);
    return port;
}

static bool is_replica(int port) {
    return port == it_cl.replica1 || port == it_cl.replica2;
}

/* Waits until the replicas have replayed everything the primary has now. */
static void wait_replicas(void) {
    PGconn *d = it_direct();
    char lsn[64], sql[160];
    snprintf(lsn, sizeof lsn, "%s", it_value(d, "SELECT pg_current_wal_insert_lsn()"));
    PQfinish(d);
    int ports[] = {it_cl.replica1, it_cl.replica2};
    for (int i = 0; i < 2; i++) {
        PGconn *r = it_direct_port(ports[i]);
        snprintf(sql, sizeof sql, "SELECT pg_last_wal_replay_lsn() >= '%s'", lsn);
        double deadline = it_now() + 20;
        while (strcmp(it_value(r, sql), "t") != 0) {
            IT_ASSERT(it_now() < deadline, "replica on port %d did not catch up", ports[i]);
            usleep(20000);
        }
        PQfinish(r);
    }
}

static void setup(void) {
    PGconn *d = it_direct();
    it_exec(d, "DROP TABLE IF EXISTS rt; DROP SEQUENCE IF EXISTS rs");
    it_exec(d, "CREATE TABLE rt (id bigint PRIMARY KEY, pad text)");
    it_exec(d, "CREATE SEQUENCE rs");
    it_exec(d, "CREATE OR REPLACE FUNCTION sl_touch() RETURNS int LANGUAGE sql AS 'SELECT 1'");
    it_exec(d, "GRANT ALL ON rt, rs TO PUBLIC");
    PQfinish(d);
    wait_replicas();
}

/* Reads until one lands on a replica: the route has seen its backends. */
static void wait_routing(PGconn *c) {
    double deadline = it_now() + 10;
    while (!is_replica(port_of(c, "SELECT inet_server_port()")))
        IT_ASSERT(it_now() < deadline, "reads never reached a replica");
}

static void placement(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\nstats_period = 1\n",
                    RW_DB "rw_primary = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
                          "routing=primary replicas=127.0.0.1:{REPLICA1}\n"
                          "rw_stmt = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
                          "pool_mode=statement replicas=127.0.0.1:{REPLICA1}\n"
                          "rw_ro = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
                          "routing=replica replicas=127.0.0.1:{REPLICA1},127.0.0.1:{REPLICA2}\n");
    PGconn *c = it_connect_db(&s, "sl_scram", "rw", NULL);
    wait_routing(c);

    /* 1,000 autocommit reads: every one on a replica, shared evenly. */
    int n1 = 0, n2 = 0;
    for (int i = 0; i < 1000; i++) {
        PGresult *r = PQexec(c, "SELECT pg_is_in_recovery(), inet_server_port()");
        IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "read %d: %s", i, PQerrorMessage(c));
        IT_ASSERT(!strcmp(PQgetvalue(r, 0, 0), "t"), "read %d ran on a primary", i);
        int port = atoi(PQgetvalue(r, 0, 1));
        n1 += port == it_cl.replica1;
        n2 += port == it_cl.replica2;
        PQclear(r);
    }
    printf("1000 reads: replica1 %d, replica2 %d\n", n1, n2);
    IT_ASSERT(n1 + n2 == 1000, "all reads on replicas");
    IT_ASSERT(n1 >= 400 && n1 <= 600 && n2 >= 400 && n2 <= 600,
              "both replicas within 20%% of an even share (%d, %d)", n1, n2);

    /* Extended protocol: unnamed and named statements are reads too. */
    PGresult *r = PQexecParams(c, "SELECT inet_server_port() WHERE $1::int = 1", 1, NULL,
                               (const char *[]){"1"}, NULL, NULL, 0);
    IT_ASSERT(is_replica(atoi(PQgetvalue(r, 0, 0))), "extended-protocol read on a replica");
    PQclear(r);
    PQclear(PQprepare(c, "rd", "SELECT inet_server_port()", 0, NULL));
    for (int i = 0; i < 4; i++) {
        r = PQexecPrepared(c, "rd", 0, NULL, NULL, NULL, 0);
        IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "prepared read: %s", PQerrorMessage(c));
        IT_ASSERT(is_replica(atoi(PQgetvalue(r, 0, 0))), "prepared read on a replica");
        PQclear(r);
    }

    /* Writes, and reads that are writes, on the primary. */
    const char *writes[] = {
        "INSERT INTO rt VALUES (1, 'a') RETURNING inet_server_port()",
        "SELECT inet_server_port() FROM rt FOR UPDATE",
        "SELECT inet_server_port() FROM rt FOR SHARE",
        "SELECT nextval('rs'), inet_server_port()",
        "SELECT setval('rs', 10), inet_server_port()",
        "WITH x AS (INSERT INTO rt VALUES (2, 'b') RETURNING id) SELECT inet_server_port() FROM x",
        "WITH x AS (UPDATE rt SET pad = 'c' WHERE id = 2 RETURNING id) "
        "SELECT inet_server_port() FROM x",
        "SELECT pg_advisory_xact_lock(7), inet_server_port()",
        "/* sluice:primary */ SELECT inet_server_port()",
    };
    for (size_t i = 0; i < sizeof writes / sizeof *writes; i++)
        IT_ASSERT(port_of(c, writes[i]) == it_cl.primary, "on the primary: %s", writes[i]);
    PQclear(
        PQprepare(c, "wr", "INSERT INTO rt VALUES (3, 'p') RETURNING inet_server_port()", 0, NULL));
    r = PQexecPrepared(c, "wr", 0, NULL, NULL, NULL, 0);
    IT_ASSERT(atoi(PQgetvalue(r, 0, 0)) == it_cl.primary, "a prepared write on the primary");
    PQclear(r);

    /* A transaction block stays where it started: BEGIN on the primary,
     * BEGIN READ ONLY on a replica. */
    it_exec(c, "BEGIN");
    IT_ASSERT(port_of(c, "SELECT inet_server_port()") == it_cl.primary, "BEGIN: primary");
    IT_ASSERT(port_of(c, "SELECT inet_server_port()") == it_cl.primary, "stays on the primary");
    it_exec(c, "COMMIT");
    wait_replicas();
    usleep(100000); /* past the read-your-writes fence of the writes above */
    it_exec(c, "BEGIN READ ONLY");
    int p1 = port_of(c, "SELECT inet_server_port()");
    IT_ASSERT(is_replica(p1), "BEGIN READ ONLY: a replica (%d)", p1);
    IT_ASSERT(port_of(c, "SELECT inet_server_port()") == p1, "the block stays on its replica");
    it_exec(c, "COMMIT");
    /* The hint also waives read-your-writes: right after a write. */
    it_exec(c, "INSERT INTO rt VALUES (4, 'h')");
    IT_ASSERT(is_replica(port_of(c, "/* sluice:replica */ SELECT inet_server_port()")),
              "replica hint");
    /* Without it, read-your-writes: the read sees the write, on the primary
     * or on a replica a health check has seen replay it (a check may
     * complete between the two statements: then the replica is right). */
    int seen = port_of(c, "SELECT inet_server_port() FROM rt WHERE id = 4");
    IT_ASSERT(seen == it_cl.primary || is_replica(seen),
              "without it, a read right after a write sees the write (%d)", seen);
    PQfinish(c);
    /* The stats line says where transactions went. */
    long nreads = it_stats_value(&s, "replica_reads"), nwrites = it_stats_value(&s, "writes");
    IT_ASSERT(nreads >= 1000 && nwrites >= 10, "stats: replica_reads=%ld writes=%ld", nreads,
              nwrites);

    /* Statement pooling routes each statement (wait_routing: reads on the
     * replica). */
    c = it_connect_db(&s, "sl_scram", "rw_stmt", NULL);
    wait_routing(c);
    IT_ASSERT(port_of(c, "INSERT INTO rt VALUES (5, 's') RETURNING inet_server_port()") ==
                  it_cl.primary,
              "statement pooling: a write on the primary");
    PQfinish(c);

    /* routing = primary and routing = replica. */
    c = it_connect_db(&s, "sl_scram", "rw_primary", NULL);
    for (int i = 0; i < 20; i++)
        IT_ASSERT(port_of(c, "SELECT inet_server_port()") == it_cl.primary, "routing = primary");
    PQfinish(c);
    c = it_connect_db(&s, "sl_scram", "rw_ro", NULL);
    wait_routing(c);
    for (int i = 0; i < 20; i++)
        IT_ASSERT(is_replica(port_of(c, "SELECT inet_server_port()")), "routing = replica");
    IT_ASSERT(!strcmp(it_fails(c, "INSERT INTO rt VALUES (99, 'x')"), "25006"),
              "routing = replica: a write fails as read-only");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* ---- a write sent while a replica still serves a read ---- */

static int pipeline_port(PGconn *c, int *ports, int n) {
    int got = 0;
    for (;;) {
        PGresult *r = PQgetResult(c);
        if (!r) continue; /* end of one query's results */
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            if (got == n) return got;
            continue;
        }
        if (st == PGRES_TUPLES_OK && got < n)
            ports[got++] = atoi(PQgetvalue(r, 0, PQnfields(r) - 1));
        else if (st != PGRES_TUPLES_OK)
            IT_ASSERT(false, "pipelined query failed: %s", PQresultErrorMessage(r));
        PQclear(r);
    }
}

/* Sends a write (row id) and a read after it as two pipelined requests,
 * then reads the ports of the three requests pipelined so far (a read
 * already sent first) and checks where each ran: the read on a replica
 * (first, what it did), the write on the primary (second) and the read
 * after it there too (read-your-writes). */
static void write_then_read(PGconn *c, int id, const char *first, const char *second,
                            void (*before_reading)(void *), void *arg) {
    char sql[200];
    snprintf(sql, sizeof sql,
             "INSERT INTO rt VALUES (%d, 'p') ON CONFLICT (id) DO UPDATE SET pad = 'q' "
             "RETURNING inet_server_port()",
             id);
    PQsendQueryParams(c, sql, 0, NULL, NULL, NULL, NULL, 0);
    PQpipelineSync(c);
    PQsendQueryParams(c, "SELECT inet_server_port()", 0, NULL, NULL, NULL, NULL, 0);
    PQpipelineSync(c);
    PQflush(c);
    if (before_reading) before_reading(arg);
    int ports[3];
    pipeline_port(c, ports, 1);
    pipeline_port(c, ports + 1, 1);
    pipeline_port(c, ports + 2, 1);
    IT_ASSERT(is_replica(ports[0]), "the first read %s on a replica (%d)", first, ports[0]);
    IT_ASSERT(ports[1] == it_cl.primary, "the write sent %s ran on the primary (%d)", second,
              ports[1]);
    IT_ASSERT(ports[2] == it_cl.primary, "the read after it, read-your-writes: primary (%d)",
              ports[2]);
    PQexitPipelineMode(c);
}

static void pipelined_once(const char *opts) {
    it_sluice_t s;
    it_sluice_start(&s, opts, RW_DB);
    PGconn *c = it_connect_db(&s, "sl_scram", "rw", NULL);
    wait_routing(c);
    usleep(100000);
    IT_ASSERT(PQenterPipelineMode(c) == 1, "pipeline mode");
    /* A slow read goes out alone and is routed to a replica ... */
    PQsendQueryParams(c, "SELECT pg_sleep(0.3), inet_server_port()", 0, NULL, NULL, NULL, NULL, 0);
    PQpipelineSync(c);
    PQflush(c);
    usleep(100000);
    /* ... then, while it runs there, a write and another read. */
    write_then_read(c, -9, "ran", "meanwhile", NULL, NULL);
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void pipelined(void) {
    pipelined_once("pool_mode = transaction\n");
    pipelined_once("pool_mode = transaction\nmax_prepared_statements = 0\n");
}

/* Lets the replica's only server go a moment after the write was sent. */
static void commit_later(void *a) {
    usleep(300000);
    it_exec(a, "COMMIT");
}

/* A write pipelined while the client still waits for a replica's server
 * (its pool of one held by another client) is held behind the barrier too,
 * not sent to the replica with the read once the server comes. */
static void waiting_write(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 1\n",
                    "one = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
                    "replicas=127.0.0.1:{REPLICA1}\n");
    PGconn *a = it_connect_db(&s, "sl_scram", "one", NULL);
    wait_routing(a);
    it_exec(a, "BEGIN READ ONLY");
    IT_ASSERT(is_replica(port_of(a, "SELECT inet_server_port()")),
              "the replica's only server is held in a read-only transaction");
    PGconn *c = it_connect_db(&s, "sl_scram", "one", NULL);
    IT_ASSERT(PQenterPipelineMode(c) == 1, "pipeline mode");
    PQsendQueryParams(c, "SELECT inet_server_port()", 0, NULL, NULL, NULL, NULL, 0);
    PQpipelineSync(c);
    PQflush(c);
    usleep(300000); /* the read waits for the replica's server */
    write_then_read(c, -11, "waited for and ran", "while it waited", commit_later, a);
    PQfinish(c), PQfinish(a);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* A client that logs in through a replica (the primary's pool never
 * connected) still gets fresh-login settings, not another client's. */
static void replica_login_settings(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 1\n",
                    "ro = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
                    "replicas=127.0.0.1:{REPLICA1} routing=replica\n");
    PGconn *d = it_direct_port(it_cl.replica1);
    char tz[64];
    snprintf(tz, sizeof tz, "%s", it_value(d, "SHOW TimeZone"));
    PQfinish(d);
    PGconn *a = it_connect_db(&s, "sl_scram", "ro", NULL);
    it_exec(a, "SET TimeZone = 'Asia/Tokyo'");
    IT_ASSERT(!strcmp(it_value(a, "SHOW TimeZone"), "Asia/Tokyo"), "the client's own setting");
    PGconn *b = it_connect_db(&s, "sl_scram", "ro", NULL);
    IT_ASSERT(!strcmp(it_value(b, "SHOW TimeZone"), tz), "another client sees the default (%s)",
              tz);
    IT_ASSERT(!strcmp(it_value(a, "SHOW TimeZone"), "Asia/Tokyo"), "and the first keeps its own");
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* ---- read-your-writes ---- */

typedef struct ryw_arg {
    it_sluice_t *s;
    int id, iters;
    long missing, replica_reads, errors;
} ryw_arg_t;

static atomic_bool stop_pauser;

static void *pauser(void *arg) {
    (void)arg;
    while (!atomic_load(&stop_pauser)) {
        set_replay(true);
        usleep(250000);
        set_replay(false);
        usleep(250000);
    }
    return NULL;
}

static void *ryw_client(void *arg) {
    ryw_arg_t *a = arg;
    PGconn *c = it_connect_db(a->s, "sl_scram", "rw", NULL);
    for (int k = 0; k < a->iters; k++) {
        long id = 1000000L * (a->id + 1) + k;
        char sql[200];
        snprintf(sql, sizeof sql, "INSERT INTO rt VALUES (%ld, 'x')", id);
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) a->errors++;
        PQclear(r);
        /* Now and then the reader waits a little: long enough for its fence
         * to be known, so replicas that replayed past it serve it. */
        if (k % 10 == 9) usleep(50000);
        snprintf(sql, sizeof sql,
                 "SELECT (SELECT count(*) FROM rt WHERE id = %ld), inet_server_port()", id);
        r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            a->errors++;
        } else {
            if (strcmp(PQgetvalue(r, 0, 0), "1") != 0) a->missing++;
            if (is_replica(atoi(PQgetvalue(r, 0, 1)))) a->replica_reads++;
        }
        PQclear(r);
    }
    PQfinish(c);
    return NULL;
}

static void ryw_run(it_sluice_t *s, int iters, bool pausing, ryw_arg_t *total) {
    pthread_t t[20], p;
    ryw_arg_t a[20];
    memset(total, 0, sizeof *total);
    atomic_store(&stop_pauser, false);
    if (pausing) pthread_create(&p, NULL, pauser, NULL);
    for (int i = 0; i < 20; i++) {
        a[i] = (ryw_arg_t){.s = s, .id = i, .iters = iters};
        pthread_create(&t[i], NULL, ryw_client, &a[i]);
    }
    for (int i = 0; i < 20; i++) {
        pthread_join(t[i], NULL);
        total->missing += a[i].missing;
        total->replica_reads += a[i].replica_reads;
        total->errors += a[i].errors;
    }
    atomic_store(&stop_pauser, true);
    if (pausing) pthread_join(p, NULL);
    resume_all();
}

static void read_your_writes(void) {
    it_sluice_t s;
    PGconn *d = it_direct();
    it_exec(d, "TRUNCATE rt");
    PQfinish(d);
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 10\n", RW_DB);
    PGconn *c = it_connect_db(&s, "sl_scram", "rw", NULL);
    wait_routing(c);
    PQfinish(c);
    ryw_arg_t t;
    ryw_run(&s, 500, true, &t);
    printf("read_your_writes on: 10000 inserts, %ld missing, %ld reads served by replicas, %ld "
           "errors\n",
           t.missing, t.replica_reads, t.errors);
    IT_ASSERT(t.errors == 0, "no errors (%ld)", t.errors);
    IT_ASSERT(t.missing == 0, "every row written is read back (%ld missing)", t.missing);
    IT_ASSERT(t.replica_reads > 0, "replicas past the fence served some reads");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");

    /* Without it, a reader right after its write on a paused replica does
     * not see its row: the test above can fail. */
    d = it_direct();
    it_exec(d, "TRUNCATE rt");
    PQfinish(d);
    wait_replicas();
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 10\nread_your_writes = 0\n",
                    RW_DB);
    c = it_connect_db(&s, "sl_scram", "rw", NULL);
    wait_routing(c);
    PQfinish(c);
    set_replay(true);
    ryw_run(&s, 20, false, &t);
    printf("read_your_writes off, replay paused: 400 inserts, %ld missing\n", t.missing);
    IT_ASSERT(t.missing > 0, "stale reads happen without read_your_writes");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* ---- lag ---- */

static int count_on(PGconn *c, int port, int n) {
    int hits = 0;
    for (int i = 0; i < n; i++)
        hits += port_of(c, "SELECT inet_server_port()") == port;
    return hits;
}

/* Replay paused on the replica at `port` while `wal` runs on the primary:
 * it is logged lagging once and gets none of `n` reads; resumed, its
 * catching up is logged and it serves at least `back` of n reads again. */
static void lag_round(it_sluice_t *s, PGconn *c, int port, const char *wal, int n, int back) {
    char lagging[80], caught[80];
    snprintf(lagging, sizeof lagging, "replica 127.0.0.1:%d is lagging", port);
    snprintf(caught, sizeof caught, "replica 127.0.0.1:%d caught up", port);
    int seen = it_log_count(s, lagging), seen_up = it_log_count(s, caught);
    PGconn *r = it_direct_port(port), *d = it_direct();
    it_value(r, "SELECT pg_wal_replay_pause()");
    it_exec(d, wal);
    IT_ASSERT(it_log_wait(s, lagging, seen + 1, 10) == seen + 1,
              "the lag of %d is noticed and logged once", port);
    int on = count_on(c, port, n);
    IT_ASSERT(on == 0, "no reads on the lagging replica (%d of %d)", on, n);
    it_value(r, "SELECT pg_wal_replay_resume()");
    IT_ASSERT(it_log_wait(s, caught, seen_up + 1, 10) == seen_up + 1, "catching up is logged");
    on = count_on(c, port, n);
    IT_ASSERT(on >= back, "reads return to the replica once caught up (%d of %d)", on, n);
    PQfinish(r), PQfinish(d);
}

static void lag(void) {
    wait_replicas();
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\nmax_replica_lag = 256kB\n",
                    RW_DB "rw_ro = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
                          "replicas=127.0.0.1:{REPLICA1},127.0.0.1:{REPLICA2} routing=replica\n");
    PGconn *c = it_connect_db(&s, "sl_scram", "rw", NULL);
    wait_routing(c);
    IT_ASSERT(count_on(c, it_cl.replica1, 40) > 0, "replica1 serves reads at first");
    lag_round(&s, c, it_cl.replica1,
              "INSERT INTO rt SELECT g, repeat('x', 1000) FROM generate_series(-3000, -1) g", 100,
              30);

    /* Both replicas behind: reads go to the primary, said once. */
    const char *none = "no replica can take reads";
    int seen_none = it_log_count(&s, none),
        seen_back = it_log_count(&s, "replicas take reads again");
    set_replay(true);
    PGconn *d = it_direct();
    it_exec(d, "INSERT INTO rt SELECT g, repeat('y', 1000) FROM generate_series(-6000, -3001) g");
    PQfinish(d);
    double deadline = it_now() + 10;
    while (count_on(c, it_cl.primary, 1) == 0)
        IT_ASSERT(it_now() < deadline, "reads fall back to the primary");
    IT_ASSERT(count_on(c, it_cl.primary, 50) == 50, "all reads on the primary meanwhile");
    IT_ASSERT(it_log_count(&s, none) == seen_none + 1, "said once");
    /* A read-only alias reads from the primary now, and still never writes. */
    PGconn *ro = it_connect_db(&s, "sl_scram", "rw_ro", NULL);
    deadline = it_now() + 5; /* its route is new: until its first checks, replicas look fine */
    while (count_on(ro, it_cl.primary, 1) == 0)
        IT_ASSERT(it_now() < deadline, "the read-only alias reads from the primary");
    IT_ASSERT(count_on(ro, it_cl.primary, 5) == 5, "the read-only alias reads from the primary");
    IT_ASSERT(!strcmp(it_fails(ro, "INSERT INTO rt VALUES (-8888, 'ro')"), "25006"),
              "but a write through it is refused");
    PQfinish(ro);
    set_replay(false);
    deadline = it_now() + 10;
    while (count_on(c, it_cl.primary, 1) == 1)
        IT_ASSERT(it_now() < deadline, "reads return to the replicas");
    IT_ASSERT(count_on(c, it_cl.primary, 20) == 0, "reads on replicas again");
    IT_ASSERT(it_log_count(&s, "replicas take reads again") == seen_back + 1,
              "and that is said once too");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* The same with a time limit: a replica with WAL received but not replayed
 * for longer than max_replica_lag_time. */
static void lag_time(void) {
    wait_replicas();
    it_sluice_t s;
    it_sluice_start(
        &s, "pool_mode = transaction\nmax_replica_lag = 0\nmax_replica_lag_time = 0.5\n", RW_DB);
    PGconn *c = it_connect_db(&s, "sl_scram", "rw", NULL);
    wait_routing(c);
    lag_round(&s, c, it_cl.replica2, "INSERT INTO rt VALUES (-7777, 'lag')", 50, 1);
    PGconn *d = it_direct();
    it_exec(d, "DELETE FROM rt WHERE id = -7777");
    PQfinish(d), PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* Replaces the first `from` in sluice's config file with `to`. */
static void rewrite_ini(const it_sluice_t *s, const char *from, const char *to) {
    char text[8192], out[8400];
    FILE *f = fopen(s->ini, "r");
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    const char *hit = strstr(text, from);
    IT_ASSERT(hit, "'%s' is in the config", from);
    snprintf(out, sizeof out, "%.*s%s%s", (int)(hit - text), text, to, hit + strlen(from));
    f = fopen(s->ini, "w");
    fputs(out, f);
    fclose(f);
}

/* Session pooling routes the connection once; a reload changes the
 * replica list of a running sluice. */
static void session_and_reload(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = session\n",
                    "rw = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
                    "replicas=127.0.0.1:{REPLICA1}\n"
                    "rw_ro = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
                    "replicas=127.0.0.1:{REPLICA1} routing=replica\n");
    PGconn *c = it_connect_db(&s, "sl_scram", "rw", NULL);
    for (int i = 0; i < 5; i++)
        IT_ASSERT(port_of(c, "SELECT inet_server_port()") == it_cl.primary,
                  "session pooling, routing = auto: the primary");
    PQfinish(c);
    c = it_connect_db(&s, "sl_scram", "rw_ro", NULL);
    for (int i = 0; i < 5; i++)
        IT_ASSERT(port_of(c, "SELECT inet_server_port()") == it_cl.replica1,
                  "session pooling, routing = replica: the replica, for the whole session");
    PQfinish(c);

    /* Reload with a second replica and transaction pooling. */
    char from[64], to[128];
    snprintf(from, sizeof from, "replicas=127.0.0.1:%d\n", it_cl.replica1);
    snprintf(to, sizeof to, "replicas=127.0.0.1:%d,127.0.0.1:%d\n", it_cl.replica1, it_cl.replica2);
    rewrite_ini(&s, from, to);
    rewrite_ini(&s, "pool_mode = session", "pool_mode = transaction");
    kill(s.pid, SIGHUP);
    /* Each worker with a route of the database (one or, with workers, the
     * checker's and the client's) says so. */
    IT_ASSERT(it_log_wait(&s, "replica list changed", 1, 5) >= 1, "the new list is taken");
    c = it_connect_db(&s, "sl_scram", "rw", NULL);
    wait_routing(c);
    IT_ASSERT(count_on(c, it_cl.replica2, 40) > 0, "the added replica takes reads");

    /* Reload without replicas: a connected client's reads go to the primary. */
    rewrite_ini(&s, to, "\n");
    kill(s.pid, SIGHUP);
    IT_ASSERT(it_log_wait(&s, "replicas removed from the config", 1, 5) >= 1, "taken");
    /* With workers, each takes the reload itself: the client's may come a
     * moment after the line another one logged. */
    double deadline = it_now() + 5;
    while (port_of(c, "SELECT inet_server_port()") != it_cl.primary)
        IT_ASSERT(it_now() < deadline, "the client's worker took the reload");
    IT_ASSERT(count_on(c, it_cl.primary, 20) == 20, "reads on the primary");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* write_functions: a call to a listed function makes a SELECT a write, and
 * a reload that changes the list applies to statements already seen. */
static void write_functions_setting(void) {
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\n", RW_DB);
    PGconn *c = it_connect_db(&s, "sl_scram", "rw", NULL);
    wait_routing(c);
    const char *q = "SELECT sl_touch(), inet_server_port()";
    IT_ASSERT(is_replica(port_of(c, q)), "not listed: a read");
    rewrite_ini(&s, "pool_mode = transaction",
                "pool_mode = transaction\nwrite_functions = sl_touch");
    kill(s.pid, SIGHUP);
    IT_ASSERT(it_log_wait(&s, "configuration reloaded", 1, 5) == 1, "reloaded");
    IT_ASSERT(is_replica(port_of(c, "SELECT abs(1), inet_server_port()")), "others still read");
    IT_ASSERT(port_of(c, q) == it_cl.primary, "listed: the primary");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* ---- load: many clients reading ---- */

typedef struct load_arg {
    it_sluice_t *s;
    atomic_bool *stop;
    atomic_long *errors;
    long on[3]; /* primary, replica1, replica2 */
} load_arg_t;

static void *load_client(void *arg) {
    load_arg_t *a = arg;
    PGconn *c = it_connect_db(a->s, "sl_scram", "rw", NULL);
    while (!atomic_load(a->stop)) {
        int port = port_of(c, "SELECT inet_server_port()");
        if (port < 0) {
            if (atomic_fetch_add(a->errors, 1) < 3)
                fprintf(stderr, "load client error: %s", PQerrorMessage(c));
            if (PQstatus(c) != CONNECTION_OK) {
                PQfinish(c);
                c = it_connect_db(a->s, "sl_scram", "rw", NULL);
            }
            continue;
        }
        a->on[port == it_cl.replica1 ? 1 : port == it_cl.replica2 ? 2 : 0]++;
    }
    PQfinish(c);
    return NULL;
}

typedef struct load {
    pthread_t t[20];
    load_arg_t a[20];
    atomic_bool stop;
    atomic_long errors;
} load_t;

static void load_start(load_t *l, it_sluice_t *s) {
    atomic_store(&l->stop, false);
    atomic_store(&l->errors, 0);
    for (int i = 0; i < 20; i++) {
        l->a[i] = (load_arg_t){.s = s, .stop = &l->stop, .errors = &l->errors};
        pthread_create(&l->t[i], NULL, load_client, &l->a[i]);
    }
}

static void load_counts(load_t *l, long on[3]) {
    on[0] = on[1] = on[2] = 0;
    for (int i = 0; i < 20; i++)
        for (int k = 0; k < 3; k++)
            on[k] += l->a[i].on[k];
}

static void load_reset(load_t *l) {
    for (int i = 0; i < 20; i++)
        memset(l->a[i].on, 0, sizeof l->a[i].on);
    atomic_store(&l->errors, 0);
}

static void load_stop(load_t *l) {
    atomic_store(&l->stop, true);
    for (int i = 0; i < 20; i++)
        pthread_join(l->t[i], NULL);
}

/* ---- latency-aware balancing ---- */

static void latency(void) {
    /* Both replicas behind a relay, so that they are alike when fast. */
    it_delay_t *fast = it_delay_start(it_cl.replica1), *slow = it_delay_start(it_cl.replica2);
    it_delay_set(slow, 10);
    char dbs[300];
    snprintf(dbs, sizeof dbs,
             "rw = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
             "replicas=127.0.0.1:%d,127.0.0.1:%d load_balance=latency\n",
             it_delay_port(fast), it_delay_port(slow));
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\ndefault_pool_size = 10\n", dbs);
    PGconn *c = it_connect_db(&s, "sl_scram", "rw", NULL);
    wait_routing(c);
    PQfinish(c);
    load_t l;
    load_start(&l, &s);
    sleep(1);
    load_reset(&l);
    sleep(3);
    long on[3];
    load_counts(&l, on);
    double slow_share = (double)on[2] / (double)(on[1] + on[2] + 1);
    printf("latency, replica2 behind 10 ms each way: replica1 %ld, replica2 %ld reads (%.1f%%)\n",
           on[1], on[2], 100 * slow_share);
    IT_ASSERT(on[2] > 0, "the slow replica still gets some reads");
    IT_ASSERT(slow_share < 0.2, "the slow replica gets a clearly smaller share (%.1f%%)",
              100 * slow_share);
    it_delay_set(slow, 0);
    sleep(2);
    /* Back to a fair share (it was under 1 % while slow). Latencies on two
     * cores shared with other work are noisy, so a 3 s window may be
     * skewed by a burst of load: up to five windows get the chance. */
    double share = 0;
    for (int w = 0; w < 5; w++) {
        load_reset(&l);
        sleep(3);
        load_counts(&l, on);
        share = (double)on[2] / (double)(on[1] + on[2] + 1);
        printf("latency, both fast (window %d): replica1 %ld, replica2 %ld reads (%.1f%%)\n", w,
               on[1], on[2], 100 * share);
        if (share > 0.2 && share < 0.8) break;
    }
    load_stop(&l);
    IT_ASSERT(share > 0.2 && share < 0.8, "about equal shares once it is fast again (%.1f%%)",
              100 * share);
    IT_ASSERT(atomic_load(&l.errors) == 0, "no errors");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* A full pool is no failure of its backend: query_wait_timeout on a busy
 * replica ejects nothing. */
static void busy(void) {
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 0.3\n"
                    "health_check_failures = 1\n",
                    RW_DB);
    PGconn *a = it_connect_db(&s, "sl_scram", "rw", NULL);
    PGconn *b = it_connect_db(&s, "sl_scram", "rw", NULL);
    PGconn *c = it_connect_db(&s, "sl_scram", "rw", NULL);
    wait_routing(c);
    it_exec(a, "BEGIN READ ONLY");
    it_exec(b, "BEGIN READ ONLY");
    int pa = port_of(a, "SELECT inet_server_port()"), pb = port_of(b, "SELECT inet_server_port()");
    IT_ASSERT(is_replica(pa) && is_replica(pb) && pa != pb, "one block on each replica");
    IT_ASSERT(!strcmp(it_fails(c, "SELECT 1"), "08P01"),
              "a read waiting for a full pool times out");
    IT_ASSERT(it_log_count(&s, "ejected") == 0, "and no backend is ejected for it");
    it_exec(a, "COMMIT");
    it_exec(b, "COMMIT");
    IT_ASSERT(is_replica(port_of(c, "SELECT inet_server_port()")), "reads go on");
    PQfinish(a), PQfinish(b), PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* A replica that hangs (every byte held 2 s) fails its checks by
 * health_check_timeout and is ejected; it is back once it answers. */
static void hang(void) {
    it_delay_t *relay = it_delay_start(it_cl.replica2);
    char dbs[300];
    snprintf(dbs, sizeof dbs,
             "rw = host=127.0.0.1 port={PRIMARY} dbname=sluice_test "
             "replicas=127.0.0.1:{REPLICA1},127.0.0.1:%d\n",
             it_delay_port(relay));
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = transaction\nhealth_check_timeout = 0.5\n"
                    "health_check_period = 0.2\nhealth_check_failures = 2\n",
                    dbs);
    PGconn *c = it_connect_db(&s, "sl_scram", "rw", NULL);
    wait_routing(c);
    IT_ASSERT(count_on(c, it_cl.replica2, 20) > 0, "the relayed replica serves reads");
    it_delay_set(relay, 2000);
    char needle[80];
    snprintf(needle, sizeof needle, "127.0.0.1:%d ejected", it_delay_port(relay));
    IT_ASSERT(it_log_wait(&s, needle, 1, 10) >= 1, "a hanging replica is ejected");
    IT_ASSERT(it_log_count(&s, "health check got no answer within 0.5 s") >= 1, "timeouts said");
    double t0 = it_now();
    IT_ASSERT(count_on(c, it_cl.replica2, 20) == 0, "no reads wait on it");
    IT_ASSERT(it_now() - t0 < 1.5, "reads are not slowed down (%.2f s)", it_now() - t0);
    it_delay_set(relay, 0);
    snprintf(needle, sizeof needle, "127.0.0.1:%d answers again", it_delay_port(relay));
    IT_ASSERT(it_log_wait(&s, needle, 1, 10) >= 1, "re-admitted when it answers");
    double deadline = it_now() + 5;
    while (count_on(c, it_cl.replica2, 10) == 0)
        IT_ASSERT(it_now() < deadline, "reads return to it");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* ---- a replica stopped and started under load ---- */

static void pg_ctl_replica1(const char *action) {
    it_pg_ctl(it_cl.sockdir, "replica1", action);
}

static void restart_replica1(void) {
    pg_ctl_replica1("start");
}

static void health(void) {
    it_sluice_t s;
    it_sluice_start(&s,
                    "pool_mode = transaction\ndefault_pool_size = 10\n"
                    "health_check_period = 0.2\nhealth_check_failures = 2\n",
                    RW_DB);
    PGconn *c = it_connect_db(&s, "sl_scram", "rw", NULL);
    wait_routing(c);
    PQfinish(c);
    load_t l;
    load_start(&l, &s);
    sleep(1);
    it_on_fail(restart_replica1);
    pg_ctl_replica1("-m immediate stop");
    char needle[80];
    snprintf(needle, sizeof needle, "127.0.0.1:%d ejected", it_cl.replica1);
    IT_ASSERT(it_log_wait(&s, needle, 1, 10) >= 1, "the stopped replica is ejected");
    long before = atomic_load(&l.errors);
    load_reset(&l);
    sleep(2);
    long on[3];
    load_counts(&l, on);
    printf("replica1 stopped: %ld errors before its ejection, then %ld; reads replica1 %ld, "
           "replica2 %ld, primary %ld\n",
           before, atomic_load(&l.errors), on[1], on[2], on[0]);
    IT_ASSERT(atomic_load(&l.errors) == 0, "no errors after the ejection (%ld)",
              atomic_load(&l.errors));
    /* Reads in flight when it stopped, and new ones sent to it before the
     * ejection, were retried on the other replica. Only a read whose reply
     * had begun may fail (without the retry, 8 to 10 of them failed here). */
    IT_ASSERT(before <= 3, "reads caught by the stop were retried elsewhere (%ld errors)", before);
    printf("reads retried: %d in flight, %d at connect\n",
           it_log_count(&s, "went away before answering"),
           it_log_count(&s, "could not be reached"));
    IT_ASSERT(on[1] == 0 && on[2] > 0, "reads go to the other replica");
    pg_ctl_replica1("start");
    it_on_fail(NULL);
    snprintf(needle, sizeof needle, "127.0.0.1:%d answers again", it_cl.replica1);
    IT_ASSERT(it_log_wait(&s, needle, 1, 15) >= 1, "re-admitted after restart");
    sleep(1);
    load_reset(&l);
    sleep(2);
    load_counts(&l, on);
    load_stop(&l);
    printf("replica1 restarted: reads replica1 %ld, replica2 %ld, errors %ld\n", on[1], on[2],
           atomic_load(&l.errors));
    IT_ASSERT(on[1] > 0, "traffic returns to the restarted replica");
    IT_ASSERT(atomic_load(&l.errors) == 0, "no errors after re-admission");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

int main(void) {
    it_init("it_route");
    it_on_fail(resume_all);
    setup();
    placement();
    pipelined();
    waiting_write();
    replica_login_settings();
    read_your_writes();
    lag();
    lag_time();
    it_on_fail(NULL);
    session_and_reload();
    write_functions_setting();
    latency();
    busy();
    hang();
    health();
    return it_done();
}
