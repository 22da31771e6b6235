/* Session state sluice cannot read in a statement's text never reaches the
 * next client of a server: set_config() with computed arguments, functions
 * that are not built-ins (which may call set_config() or create temp
 * tables), also in a named statement run again in later transactions,
 * setseed(), and statements too long to analyse (SET, PREPARE, LISTEN,
 * advisory locks, WITH HOLD cursors beyond pkt_buf). What sluice can
 * read is carried instead: set_config() with constant arguments and SET
 * SESSION CHARACTERISTICS stay with the client that ran them, on whichever
 * server its next transaction gets, and with no other client. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static it_sluice_t shared;

/* Objects the clients use: a schema to point search_path at, a table to
 * write, and functions that make session state out of sight. */
static void setup_objects(void) {
    PGconn *d = it_direct();
    it_exec(d, "DROP SCHEMA IF EXISTS opq_leak CASCADE; CREATE SCHEMA opq_leak; "
               "GRANT USAGE ON SCHEMA opq_leak TO sl_scram; "
               "DROP TABLE IF EXISTS opq_w; CREATE TABLE opq_w (id int PRIMARY KEY, n int); "
               "INSERT INTO opq_w SELECT g, 0 FROM generate_series(0, 99) g; "
               "GRANT ALL ON opq_w TO sl_scram; "
               "CREATE OR REPLACE FUNCTION opq_set(v text) RETURNS text LANGUAGE plpgsql AS "
               "$$BEGIN PERFORM set_config('myapp.secret', v, false); "
               "PERFORM set_config('search_path', 'opq_leak', false); RETURN v; END$$; "
               "CREATE OR REPLACE FUNCTION opq_temp() RETURNS int LANGUAGE plpgsql AS "
               "$$BEGIN CREATE TEMP TABLE IF NOT EXISTS opq_secret (s text); "
               "INSERT INTO opq_secret VALUES ('mine'); RETURN 1; END$$; "
               "GRANT EXECUTE ON FUNCTION opq_set(text), opq_temp() TO sl_scram");
    PQfinish(d);
}

static void drop_objects(void) {
    PGconn *d = it_direct();
    it_exec(d, "DROP SCHEMA opq_leak CASCADE; DROP TABLE opq_w; DROP FUNCTION opq_set(text); "
               "DROP FUNCTION opq_temp()");
    PQfinish(d);
}

/* ---- many clients, one server ---- */

/* Everything a client could inherit from an earlier one, as one string. */
static const char look_sql[] =
    "SELECT concat_ws('|', current_setting('search_path'), "
    "coalesce(current_setting('myapp.secret', true), ''), "
    "current_setting('default_transaction_read_only'), "
    "current_setting('default_transaction_isolation'), "
    "current_setting('default_transaction_deferrable'), "
    "(SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()), "
    "(SELECT count(*) FROM pg_prepared_statements WHERE name NOT LIKE 'sluice_%'), "
    "(SELECT count(*) FROM pg_listening_channels()), "
    "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()), "
    "(SELECT count(*) FROM pg_cursors)), random()::text";

static char baseline[512];
static char seeded[64][32]; /* the first random() values after setseed(0.5) */
static atomic_int leaks, looks, writes_failed, carried_wrong, leaker_errors;
static atomic_bool stop_looking;

static bool is_seeded(const char *v) {
    for (int i = 0; i < 64; i++)
        if (!strcmp(seeded[i], v)) return true;
    return false;
}

/* A client that never changes anything: what it sees must be a fresh
 * session's, and it must be able to write. */
static void *looker(void *arg) {
    int id = (int)(intptr_t)arg;
    PGconn *c = it_connect_db(&shared, "sl_scram", "sluice_test", NULL);
    char upd[128];
    snprintf(upd, sizeof upd, "UPDATE opq_w SET n = n + 1 WHERE id = %d", id);
    while (!atomic_load(&stop_looking)) {
        PGresult *r = PQexec(c, look_sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            atomic_fetch_add(&looks, 1);
            const char *seen = PQgetvalue(r, 0, 0), *rnd = PQgetvalue(r, 0, 1);
            if (strcmp(seen, baseline) != 0 || is_seeded(rnd)) {
                if (atomic_fetch_add(&leaks, 1) < 5)
                    fprintf(stderr, "looker %d saw another client's state: %s (random %s)\n", id,
                            seen, rnd);
            }
        } else if (atomic_fetch_add(&leaker_errors, 1) < 5) {
            fprintf(stderr, "looker %d: %s", id, PQerrorMessage(c));
        }
        PQclear(r);
        r = PQexec(c, upd);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && atomic_fetch_add(&writes_failed, 1) < 5)
            fprintf(stderr, "looker %d could not write: %s", id, PQerrorMessage(c));
        PQclear(r);
    }
    PQfinish(c);
    return NULL;
}

enum kind {
    K_SET_CONFIG,        /* carried */
    K_CHARACTERISTICS,   /* carried */
    K_SET_CONFIG_EXPR,   /* opaque */
    K_FUNCTION_SET,      /* opaque */
    K_FUNCTION_TEMP,     /* opaque */
    K_SETSEED,           /* the server is closed */
    K_LONG,              /* unvetted */
    K_PREPARED_FUNCTION, /* opaque at each Bind, not only at its Parse */
    K_PREPARED_SET,      /* carried at each Bind */
    K_KINDS
};

/* Runs sql as its own transaction; false (and a message) if it failed. */
static bool run(PGconn *c, const char *sql, int id) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok && atomic_fetch_add(&leaker_errors, 1) < 5)
        fprintf(stderr, "client %d: %.60s...: %s", id, sql, PQerrorMessage(c));
    PQclear(r);
    return ok;
}

/* A statement longer than pkt_buf (8192 bytes): sluice streams it through
 * without reading it. Round r picks which state it makes. */
static char *long_statement(int id, int round) {
    static const char *const make[] = {
        "SET search_path = opq_leak; SELECT set_config('myapp.secret', 'long', false)",
        "PREPARE opq_p%d_%d AS SELECT 1",
        "LISTEN opq_chan_%d_%d",
        "SELECT pg_advisory_lock(%d%03d)",
        "BEGIN; DECLARE opq_cur_%d_%d CURSOR WITH HOLD FOR SELECT 1; COMMIT",
    };
    size_t pad = 10000;
    char *sql = malloc(pad + 256);
    memcpy(sql, "/* ", 3);
    memset(sql + 3, 'x', pad);
    int n = 3 + (int)pad;
    n += sprintf(sql + n, " */ ");
    sprintf(sql + n, make[round % 5], id, round);
    return sql;
}

/* A named statement parsed in one transaction and run in later ones, each
 * perhaps on another server than its Parse. */
static void prepared(PGconn *c, int id, bool set) {
    const char *sql = set ? "SELECT pg_catalog.set_config('myapp.secret', $1, false)"
                          : "SELECT opq_set($1)";
    PGresult *r = PQprepare(c, "opq_stmt", sql, 1, NULL);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    for (int i = 0; ok && i < 2; i++) {
        char v[32];
        snprintf(v, sizeof v, "prep_%d_%d", id, i);
        const char *vals[] = {v};
        r = PQexecPrepared(c, "opq_stmt", 1, vals, NULL, NULL, 0);
        ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        if (ok && set && strcmp(it_value(c, "SELECT current_setting('myapp.secret')"), v))
            atomic_fetch_add(&carried_wrong, 1);
    }
    if (!ok && atomic_fetch_add(&leaker_errors, 1) < 5)
        fprintf(stderr, "client %d: prepared %s: %s", id, sql, PQerrorMessage(c));
}

/* Makes state of one kind per connection, checks that it still has what
 * sluice carries in its next transaction, and leaves without cleaning up. */
static void *leaker(void *arg) {
    int id = (int)(intptr_t)arg;
    for (int round = 0; round < 18; round++) {
        PGconn *c = it_connect_db(&shared, "sl_scram", "sluice_test", NULL);
        if (PQstatus(c) != CONNECTION_OK) {
            atomic_fetch_add(&leaker_errors, 1);
            PQfinish(c);
            continue;
        }
        char sql[256];
        enum kind k = (enum kind)((id + round) % K_KINDS);
        switch (k) {
        case K_SET_CONFIG:
            snprintf(sql, sizeof sql,
                     "SELECT set_config('search_path', 'opq_leak', false), "
                     "pg_catalog.set_config('myapp.secret', 'mine_%d', false)",
                     id);
            if (!run(c, sql, id)) break;
            snprintf(sql, sizeof sql, "mine_%d", id);
            if (strcmp(it_value(c, "SELECT current_setting('search_path')"), "opq_leak") ||
                strcmp(it_value(c, "SELECT current_setting('myapp.secret')"), sql))
                atomic_fetch_add(&carried_wrong, 1);
            break;
        case K_CHARACTERISTICS:
            if (!run(c,
                     "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, "
                     "READ ONLY, DEFERRABLE",
                     id))
                break;
            if (strcmp(it_value(c, "SELECT concat_ws(',', current_setting('transaction_read_only'), "
                                   "current_setting('transaction_isolation'), "
                                   "current_setting('transaction_deferrable'))"),
                       "on,serializable,on"))
                atomic_fetch_add(&carried_wrong, 1);
            break;
        case K_SET_CONFIG_EXPR:
            run(c,
                "SELECT set_config(n, v, false) FROM (VALUES ('myapp.secret', 'expr'), "
                "('search_path', 'opq_leak')) s(n, v)",
                id);
            break;
        case K_FUNCTION_SET:
            run(c, "SELECT opq_set('function')", id);
            break;
        case K_FUNCTION_TEMP:
            run(c, "SELECT opq_temp()", id);
            break;
        case K_SETSEED:
            run(c, "SELECT setseed(0.5)", id);
            break;
        case K_LONG: {
            char *big = long_statement(id, round);
            run(c, big, id);
            free(big);
            break;
        }
        case K_PREPARED_FUNCTION:
        case K_PREPARED_SET:
            prepared(c, id, k == K_PREPARED_SET);
            break;
        case K_KINDS:
            break;
        }
        PQfinish(c); /* no DISCARD, no RESET */
    }
    return NULL;
}

static void one_server_many_clients(void) {
    it_sluice_start(&shared, "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 1\n",
                    NULL);
    PGconn *d = it_direct();
    it_exec(d, "SELECT setseed(0.5)");
    PGresult *r = PQexec(d, "SELECT random()::text FROM generate_series(1, 64)");
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 64, "seeded values");
    for (int i = 0; i < 64; i++) snprintf(seeded[i], sizeof seeded[i], "%s", PQgetvalue(r, i, 0));
    PQclear(r);
    PQfinish(d);
    PGconn *b = it_connect_db(&shared, "sl_scram", "sluice_test", NULL);
    r = PQexec(b, look_sql);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "baseline: %s", PQerrorMessage(b));
    snprintf(baseline, sizeof baseline, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(b);
    printf("a fresh session looks like: %s\n", baseline);

    pthread_t lk[4], lv[10];
    for (int i = 0; i < 4; i++) pthread_create(&lk[i], NULL, looker, (void *)(intptr_t)i);
    for (int i = 0; i < 10; i++) pthread_create(&lv[i], NULL, leaker, (void *)(intptr_t)i);
    for (int i = 0; i < 10; i++) pthread_join(lv[i], NULL);
    usleep(300000);
    atomic_store(&stop_looking, true);
    for (int i = 0; i < 4; i++) pthread_join(lk[i], NULL);
    printf("180 clients left state of 9 kinds on one server: %d of %d looks saw some, %d writes "
           "failed, %d carried settings missing, %d errors\n",
           atomic_load(&leaks), atomic_load(&looks), atomic_load(&writes_failed),
           atomic_load(&carried_wrong), atomic_load(&leaker_errors));
    IT_ASSERT(atomic_load(&looks) > 20, "the lookers ran (%d)", atomic_load(&looks));
    IT_ASSERT(atomic_load(&leaks) == 0, "%d looks saw another client's session state",
              atomic_load(&leaks));
    IT_ASSERT(atomic_load(&writes_failed) == 0,
              "%d writes failed: SET SESSION CHARACTERISTICS reached other clients",
              atomic_load(&writes_failed));
    IT_ASSERT(atomic_load(&carried_wrong) == 0,
              "%d times a client lost a setting it made in its previous transaction",
              atomic_load(&carried_wrong));
    IT_ASSERT(atomic_load(&leaker_errors) == 0, "no statement failed (%d)",
              atomic_load(&leaker_errors));
    IT_ASSERT(it_sluice_stop(&shared, SIGTERM) == 0, "exit");
}

/* ---- what is carried follows the client to another server ---- */

static void carried_to_another_server(void) {
    it_sluice_t s;
    it_sluice_start(&s, "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 2\n",
                    NULL);
    PGconn *a = it_connect_db(&s, "sl_scram", "sluice_test", NULL);
    /* On a's worker: the two share that worker's idle servers (with two
     * workers each would otherwise keep reusing its own worker's). */
    PGconn *other = it_connect_on_worker(&s, "sl_scram", "sluice_test", it_worker_of(a));
    it_exec(a, "SELECT set_config('myapp.secret', 'carried', false), "
               "set_config('search_path', 'opq_leak, public', false)");
    it_exec(a, "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, "
               "READ ONLY");
    int first = atoi(it_value(a, "SELECT pg_backend_pid()"));
    int moved = 0;
    for (int i = 0; i < 6; i++) {
        /* The other client holds a server in a transaction: a's next one
         * may have to take the other server. */
        it_exec(other, "BEGIN");
        it_value(other, "SELECT pg_backend_pid()");
        PGresult *r = PQexec(a, "SELECT pg_backend_pid(), current_setting('myapp.secret'), "
                                "current_setting('search_path'), "
                                "current_setting('transaction_isolation'), "
                                "current_setting('transaction_read_only')");
        IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "a: %s", PQerrorMessage(a));
        if (atoi(PQgetvalue(r, 0, 0)) != first) moved++;
        IT_ASSERT(!strcmp(PQgetvalue(r, 0, 1), "carried") &&
                      !strcmp(PQgetvalue(r, 0, 2), "opq_leak, public") &&
                      !strcmp(PQgetvalue(r, 0, 3), "repeatable read") &&
                      !strcmp(PQgetvalue(r, 0, 4), "on"),
                  "a's settings on its server: %s, %s, %s, %s", PQgetvalue(r, 0, 1),
                  PQgetvalue(r, 0, 2), PQgetvalue(r, 0, 3), PQgetvalue(r, 0, 4));
        PQclear(r);
        IT_ASSERT(!strcmp(it_fails(a, "UPDATE opq_w SET n = 0 WHERE id = 99"), "25006"),
                  "a's transactions are read only");
        /* ... and the other client's are not, on the server a left. */
        it_exec(other, "COMMIT");
        it_exec(other, "UPDATE opq_w SET n = n + 1 WHERE id = 98");
        IT_ASSERT(!strcmp(it_value(other, "SELECT coalesce(current_setting('myapp.secret', "
                                          "true), '') || current_setting('transaction_isolation')"),
                          "read committed"),
                  "the other client has a fresh session");
    }
    printf("a's settings followed it; it changed servers %d times in 6 transactions\n", moved);
    IT_ASSERT(moved > 0, "a never changed servers: the test proves nothing");
    PQfinish(a);
    PQfinish(other);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* A superuser pool: SET SESSION AUTHORIZATION stays with the client that
 * ran it and never reaches the next client of its server. */
static void session_authorization(void) {
    it_sluice_t s;
    it_sluice_start(&s, "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 1\n",
                    NULL);
    for (int round = 0; round < 3; round++) {
        PGconn *a = it_connect_db(&s, "postgres", "sluice_test", NULL);
        IT_ASSERT(PQstatus(a) == CONNECTION_OK, "postgres through sluice: %s", PQerrorMessage(a));
        it_exec(a, "SET SESSION AUTHORIZATION sl_scram");
        IT_ASSERT(!strcmp(it_value(a, "SELECT session_user"), "sl_scram"), "a keeps its identity");
        PQfinish(a);
        PGconn *b = it_connect_db(&s, "postgres", "sluice_test", NULL);
        const char *who = it_value(b, "SELECT session_user || ',' || current_user");
        IT_ASSERT(!strcmp(who, "postgres,postgres"), "the next client runs as %s", who);
        PQfinish(b);
    }
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

int main(void) {
    it_init("it_opaque");
    it_on_fail(drop_objects);
    setup_objects();
    one_server_many_clients();
    carried_to_another_server();
    session_authorization();
    drop_objects();
    return it_done();
}
