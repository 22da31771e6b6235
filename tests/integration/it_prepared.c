/* Named prepared statements through transaction pooling: 50 libpq clients
 * over 5 servers, pipelined and not; statements shared per server; eviction
 * under max_prepared_statements; exact reply order on the wire for Close,
 * re-Parse and a pipeline cut short by an error; an injected Parse that
 * fails; DEALLOCATE ALL / DISCARD ALL from a client. */
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define NCLIENTS 50
#define NSTMTS 10
#define ROUNDS 100

static it_sluice_t sl;

static void prepare_all(PGconn *c, const char *prefix) {
    for (int k = 0; k < NSTMTS; k++) {
        char name[32], sql[64];
        snprintf(name, sizeof name, "%s%d", prefix, k);
        snprintf(sql, sizeof sql, "SELECT $1::int + %d", k);
        PGresult *r = PQprepare(c, name, sql, 1, NULL);
        IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "prepare %s: %s", name,
                  PQerrorMessage(c));
        PQclear(r);
    }
}

static void check_row(PGresult *r, int want, const char *what) {
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: %s", what,
              PQresultErrorMessage(r));
    IT_ASSERT(atoi(PQgetvalue(r, 0, 0)) == want, "%s: got %s, want %d", what,
              PQgetvalue(r, 0, 0), want);
}

/* One round: every statement once, one by one. */
static void round_plain(PGconn *c, const char *prefix, int i) {
    for (int k = 0; k < NSTMTS; k++) {
        char name[32], arg[16];
        snprintf(name, sizeof name, "%s%d", prefix, k);
        snprintf(arg, sizeof arg, "%d", i);
        const char *params[1] = {arg};
        PGresult *r = PQexecPrepared(c, name, 1, params, NULL, NULL, 0);
        check_row(r, i + k, name);
        PQclear(r);
    }
}

/* One round in libpq pipeline mode: every statement and an unnamed query,
 * one Sync. */
static void round_pipelined(PGconn *c, const char *prefix, int i) {
    IT_ASSERT(PQenterPipelineMode(c) == 1, "pipeline mode");
    char args[NSTMTS][16];
    for (int k = 0; k < NSTMTS; k++) {
        char name[32];
        snprintf(name, sizeof name, "%s%d", prefix, k);
        snprintf(args[k], sizeof args[k], "%d", i * 2 + k);
        const char *params[1] = {args[k]};
        IT_ASSERT(PQsendQueryPrepared(c, name, 1, params, NULL, NULL, 0) == 1, "send");
    }
    IT_ASSERT(PQsendQueryParams(c, "SELECT 7", 0, NULL, NULL, NULL, NULL, 0) == 1, "send");
    IT_ASSERT(PQpipelineSync(c) == 1, "sync");
    for (int k = 0; k <= NSTMTS; k++) {
        PGresult *r = PQgetResult(c);
        check_row(r, k < NSTMTS ? i * 2 + k + k : 7, "pipelined");
        PQclear(r);
        IT_ASSERT(PQgetResult(c) == NULL, "end of result");
    }
    PGresult *r = PQgetResult(c);
    IT_ASSERT(PQresultStatus(r) == PGRES_PIPELINE_SYNC, "sync result");
    PQclear(r);
    IT_ASSERT(PQexitPipelineMode(c) == 1, "exit pipeline mode");
}

static void *client_main(void *arg) {
    int id = (int)(intptr_t)arg;
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    prepare_all(c, "s");
    for (int i = 0; i < ROUNDS; i++) {
        if (i % 2)
            round_pipelined(c, "s", i + id);
        else
            round_plain(c, "s", i + id);
        if (i % 10 == 0) {
            const char *v = it_value(c, "SELECT 42");
            IT_ASSERT(!strcmp(v, "42"), "unnamed query gave %s (client %d, round %d)", v, id, i);
        }
    }
    PQfinish(c);
    return NULL;
}

/* Opens n clients that each hold a server in a transaction (so each sees a
 * different one) and returns, per server, how many sluice statements it has
 * and how often they ran. */
static void server_stats(int n, int *nstmts, long *runs) {
    PGconn *c[16];
    for (int i = 0; i < n; i++) {
        c[i] = it_connect(&sl, "sl_scram", NULL);
        it_exec(c[i], "BEGIN");
        PGresult *r = PQexec(c[i], "SELECT count(*), coalesce(sum(generic_plans + custom_plans), 0) "
                                   "FROM pg_prepared_statements WHERE name LIKE 'sluice\\_%'");
        IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "stats: %s", PQerrorMessage(c[i]));
        nstmts[i] = atoi(PQgetvalue(r, 0, 0));
        runs[i] = atol(PQgetvalue(r, 0, 1));
        PQclear(r);
    }
    for (int i = 0; i < n; i++) {
        it_exec(c[i], "COMMIT");
        PQfinish(c[i]);
    }
}

static void many_clients(void) {
    it_sluice_start(&sl, "pool_mode = transaction\ndefault_pool_size = 5\nmax_client_conn = 200\n"
                         "stats_period = 1\n", NULL);
    pthread_t th[NCLIENTS];
    for (int i = 0; i < NCLIENTS; i++)
        pthread_create(&th[i], NULL, client_main, (void *)(intptr_t)i);
    for (int i = 0; i < NCLIENTS; i++) pthread_join(th[i], NULL);
    int nst[5];
    long runs[5], total = 0;
    server_stats(5, nst, runs);
    for (int i = 0; i < 5; i++) {
        printf("server %d: %d sluice statements, run %ld times\n", i, nst[i], runs[i]);
        /* Shared: the 10 texts once per server, not once per client. */
        IT_ASSERT(nst[i] <= NSTMTS, "server %d holds %d statements", i, nst[i]);
        total += runs[i];
    }
    IT_ASSERT(total == (long)NCLIENTS * ROUNDS * NSTMTS, "%ld executions counted", total);
    /* Of the 500 named Parses, only the first of each text on each server
     * reached PostgreSQL. */
    long answered = it_stats_value(&sl, "parses_answered_by_sluice");
    IT_ASSERT(answered >= NCLIENTS * NSTMTS - 5 * NSTMTS, "Parses answered by sluice: %ld",
              answered);
    IT_ASSERT(it_log_count(&sl, "level=error") == 0, "no errors logged");
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

/* Statement pooling: a server per statement, named statements still work. */
static void statement_mode(void) {
    it_sluice_start(&sl, "pool_mode = statement\ndefault_pool_size = 2\n", NULL);
    PGconn *c[6];
    for (int i = 0; i < 6; i++) {
        c[i] = it_connect(&sl, "sl_scram", NULL);
        prepare_all(c[i], "st");
    }
    for (int round = 0; round < 10; round++)
        for (int i = 0; i < 6; i++) {
            round_plain(c[i], "st", round + i);
            round_pipelined(c[i], "st", round);
        }
    for (int i = 0; i < 6; i++) PQfinish(c[i]);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

static void eviction(void) {
    it_sluice_start(&sl, "pool_mode = transaction\ndefault_pool_size = 1\n"
                         "max_prepared_statements = 3\nstats_period = 1\n", NULL);
    PGconn *a = it_connect(&sl, "sl_scram", NULL), *b = it_connect(&sl, "sl_scram", NULL);
    prepare_all(a, "a");
    prepare_all(b, "b");
    for (int i = 0; i < 20; i++) {
        round_plain(a, "a", i);
        round_pipelined(b, "b", i);
    }
    int nst;
    long runs;
    server_stats(1, &nst, &runs);
    IT_ASSERT(nst <= 3, "max_prepared_statements = 3 kept: %d", nst);
    IT_ASSERT(it_stats_value(&sl, "statements_evicted") > 0, "evictions counted");
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

/* ---- the wire, byte for byte ---- */

/* Sends w, reads replies up to ReadyForQuery; returns their types, with
 * each DataRow's first column in parentheses, e.g. "12D(1)CZ". */
static const char *exchange(int fd, it_wire_t *w) {
    static char out[256];
    IT_ASSERT(write(fd, w->b, (size_t)w->n) == w->n, "send");
    w->n = 0;
    int o = 0, t;
    char body[512];
    do {
        t = it_raw_read_msg(fd, body, sizeof body);
        IT_ASSERT(t > 0, "reply (got so far: %.*s)", o, out);
        out[o++] = (char)t;
        if (t == 'D') {
            uint32_t len;
            memcpy(&len, body + 2, 4);
            o += sprintf(out + o, "(%.*s)", (int)ntohl(len), body + 6);
        }
    } while (t != 'Z' && o < 200);
    out[o] = 0;
    return out;
}

static void expect_wire(int fd, it_wire_t *w, const char *want, const char *what) {
    const char *got = exchange(fd, w);
    IT_ASSERT(!strcmp(got, want), "%s: replies %s, want %s", what, got, want);
}

static void wire(void) {
    it_sluice_start(&sl, "pool_mode = transaction\ndefault_pool_size = 1\nauth_type = trust\n",
                    NULL);
    int a = it_raw_login(&sl, "sl_scram", "sluice_test"),
        b = it_raw_login(&sl, "sl_scram", "sluice_test");
    it_wire_t w = {.n = 0};
    /* Parse, Bind, Close in one pipeline: sluice's CloseComplete lands in
     * its place between the server's replies. */
    it_wire_parse(&w, "one", "SELECT 1"), it_wire_parse(&w, "two", "SELECT 2");
    it_wire_bind_exec(&w, "one"), it_wire_close(&w, "one"), it_wire_bind_exec(&w, "two");
    it_wire_sync(&w);
    expect_wire(a, &w, "112D(1)C32D(2)CZ", "parse/bind/close pipeline");
    /* b prepares the same text under another name: answered by sluice
     * (the server has it), then bound on the same server. */
    it_wire_parse(&w, "mine", "SELECT 2"), it_wire_bind_exec(&w, "mine"), it_wire_sync(&w);
    expect_wire(b, &w, "12D(2)CZ", "shared statement");
    /* Close then re-Parse the name with another text. */
    it_wire_close(&w, "two"), it_wire_parse(&w, "two", "SELECT 22"), it_wire_bind_exec(&w, "two");
    it_wire_sync(&w);
    expect_wire(a, &w, "312D(22)CZ", "close and re-parse");
    /* A syntax error in the middle of a pipeline: the rest is skipped up to
     * Sync, and the statements before and after work. */
    it_wire_parse(&w, "ok", "SELECT 5"), it_wire_parse(&w, "bad", "SELEC 6"),
        it_wire_bind_exec(&w, "ok");
    it_wire_sync(&w);
    expect_wire(a, &w, "1EZ", "error mid-pipeline");
    it_wire_bind_exec(&w, "ok"), it_wire_sync(&w);
    expect_wire(a, &w, "2D(5)CZ", "after the error");
    it_wire_bind_exec(&w, "bad"), it_wire_sync(&w);
    expect_wire(a, &w, "EZ", "the failed statement");
    /* An unknown name is the server's own error, in the client's words. */
    it_wire_bind_exec(&w, "never"), it_wire_sync(&w);
    expect_wire(b, &w, "EZ", "unknown statement");
    /* Parse + Sync alone, of a statement the server accepted before, is
     * answered without a server while b holds the only one. */
    it_wire_msg(&w, 'Q', "BEGIN", 6);
    expect_wire(b, &w, "CZ", "b begins");
    it_wire_parse(&w, "again", "SELECT 22"), it_wire_sync(&w);
    expect_wire(a, &w, "1Z", "prepare without a server");
    it_wire_msg(&w, 'Q', "COMMIT", 7);
    expect_wire(b, &w, "CZ", "b commits");
    it_wire_bind_exec(&w, "again"), it_wire_sync(&w);
    expect_wire(a, &w, "2D(22)CZ", "bind after prepare without a server");
    /* Bind/Execute then Flush, no Sync: the implicit transaction is open on
     * the server, which must not serve b until a's Sync. */
    it_wire_bind_exec(&w, "again"), it_wire_msg(&w, 'H', "", 0);
    IT_ASSERT(write(a, w.b, (size_t)w.n) == w.n, "send");
    w.n = 0;
    char got[64];
    for (int i = 0; i < 3; i++) got[i] = (char)it_raw_read_msg(a, got + 8, 40);
    IT_ASSERT(got[0] == '2' && got[1] == 'D' && got[2] == 'C', "replies before Sync");
    it_wire_msg(&w, 'Q', "SELECT 3", 9);
    IT_ASSERT(write(b, w.b, (size_t)w.n) == w.n, "send");
    w.n = 0;
    struct pollfd pf = {.fd = b, .events = POLLIN};
    IT_ASSERT(poll(&pf, 1, 300) == 0, "b waits while a's implicit transaction is open");
    it_wire_sync(&w);
    expect_wire(a, &w, "Z", "a's Sync");
    expect_wire(b, &w, "TD(3)CZ", "b served after a's Sync");
    /* SQL DEALLOCATE of a protocol-level statement (what psycopg 3 sends)
     * is answered by sluice, which forgets the name; the server is free for
     * b right after. */
    it_wire_parse(&w, "dq", "SELECT 9"), it_wire_parse(&w, "Dq2", "SELECT 10"), it_wire_sync(&w);
    expect_wire(a, &w, "11Z", "prepare two");
    it_wire_msg(&w, 'Q', "DEALLOCATE dq", 14);
    expect_wire(a, &w, "CZ", "DEALLOCATE answered");
    it_wire_msg(&w, 'Q', "SELECT 5", 9);
    expect_wire(b, &w, "TD(5)CZ", "b served after a's DEALLOCATE");
    it_wire_msg(&w, 'Q', "deallocate prepare \"Dq2\";", 26);
    expect_wire(a, &w, "CZ", "DEALLOCATE PREPARE of a quoted name");
    it_wire_bind_exec(&w, "dq"), it_wire_sync(&w);
    expect_wire(a, &w, "EZ", "the deallocated statement is gone");
    /* Inside a transaction (a holds the server): answered in its place. */
    it_wire_msg(&w, 'Q', "BEGIN", 6);
    expect_wire(a, &w, "CZ", "a begins");
    it_wire_parse(&w, "dq3", "SELECT 11"), it_wire_sync(&w);
    expect_wire(a, &w, "1Z", "prepare in the transaction");
    it_wire_msg(&w, 'Q', "DEALLOCATE dq3", 15);
    it_wire_msg(&w, 'Q', "SELECT 12", 10);
    expect_wire(a, &w, "CZ", "DEALLOCATE in the transaction");
    expect_wire(a, &w, "TD(12)CZ", "and the query pipelined after it");
    it_wire_msg(&w, 'Q', "COMMIT", 7);
    expect_wire(a, &w, "CZ", "a commits");
    it_wire_msg(&w, 'Q', "DEALLOCATE nosuch", 18);
    expect_wire(a, &w, "EZ", "DEALLOCATE of an unknown name: PostgreSQL's error");
    /* Message type 0 is no frontend message (sluice uses it internally). */
    it_wire_msg(&w, 0, "x", 1);
    IT_ASSERT(write(a, w.b, (size_t)w.n) == w.n, "send");
    char body[256] = "";
    IT_ASSERT(it_raw_read_msg(a, body, sizeof body - 1) == 'E', "type 0 refused");
    IT_ASSERT(it_raw_read_msg(a, body, sizeof body - 1) < 0, "then the connection closes");
    IT_ASSERT(it_log_count(&sl, "invalid frontend message type 0") == 1, "logged");
    close(a), close(b);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

/* Malformed extended-protocol messages end that client with a clear FATAL;
 * sluice and its other clients carry on. */
static void garbage(void) {
    it_sluice_start(&sl, "pool_mode = transaction\ndefault_pool_size = 1\nauth_type = trust\n",
                    NULL);
    struct {
        char type;
        const char *body;
        int len;
        const char *why;
    } bad[] = {
        {'P', "name-without-end", 16, "malformed Parse message"},
        {'B', "\0stmt-without-end", 17, "malformed Bind message"},
        {'D', "Sname-without-end", 17, "malformed Describe message"},
        {'C', "S", 1, "malformed Close message"},
    };
    it_wire_t w = {.n = 0};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int fd = it_raw_login(&sl, "sl_scram", "sluice_test");
        it_wire_parse(&w, "ok", "SELECT 1"), it_wire_sync(&w);
        expect_wire(fd, &w, "1Z", "a statement before the garbage");
        it_wire_msg(&w, bad[i].type, bad[i].body, bad[i].len), it_wire_sync(&w);
        IT_ASSERT(write(fd, w.b, (size_t)w.n) == w.n, "send");
        w.n = 0;
        char body[512] = "";
        int t;
        while ((t = it_raw_read_msg(fd, body, sizeof body - 1)) > 0 && t != 'E') {
        }
        IT_ASSERT(t == 'E', "%s: an error, then the connection closes", bad[i].why);
        IT_ASSERT(it_raw_read_msg(fd, body, sizeof body - 1) < 0, "closed");
        close(fd);
        IT_ASSERT(it_log_count(&sl, bad[i].why) == 1, "logged: %s", bad[i].why);
        PGconn *c = it_connect(&sl, "sl_scram", NULL);
        IT_ASSERT(!strcmp(it_value(c, "SELECT 'still up'"), "still up"), "others go on");
        PQfinish(c);
    }
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

/* The server a client's statement was prepared on is gone and the table it
 * reads was dropped meanwhile: the injected Parse fails, and the client gets
 * that error for its own execution; once the table is back it works. */
static void injected_parse_fails(void) {
    it_sluice_start(&sl, "pool_mode = transaction\ndefault_pool_size = 1\nserver_lifetime = 1\n",
                    NULL);
    PGconn *d = it_direct();
    it_exec(d, "DROP TABLE IF EXISTS it_ps_t");
    it_exec(d, "CREATE TABLE it_ps_t (a int)");
    it_exec(d, "GRANT ALL ON it_ps_t TO sl_scram");
    it_exec(d, "INSERT INTO it_ps_t VALUES (3)");
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    PGresult *r = PQprepare(c, "q", "SELECT a FROM it_ps_t", 0, NULL);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "prepare: %s", PQerrorMessage(c));
    PQclear(r);
    r = PQexecPrepared(c, "q", 0, NULL, NULL, NULL, 0);
    check_row(r, 3, "first run");
    PQclear(r);
    it_exec(d, "DROP TABLE it_ps_t");
    /* server_lifetime retires the server; the next one lacks "q". */
    usleep(1300 * 1000);
    it_exec(c, "SELECT 1");
    r = PQexecPrepared(c, "q", 0, NULL, NULL, NULL, 0);
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR &&
                  strstr(PQresultErrorMessage(r), "it_ps_t"),
              "the injected Parse's error: %s", PQresultErrorMessage(r));
    PQclear(r);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 9"), "9"), "the connection goes on");
    it_exec(d, "CREATE TABLE it_ps_t (a int)");
    it_exec(d, "GRANT ALL ON it_ps_t TO sl_scram");
    it_exec(d, "INSERT INTO it_ps_t VALUES (4)");
    r = PQexecPrepared(c, "q", 0, NULL, NULL, NULL, 0);
    check_row(r, 4, "after the table is back");
    PQclear(r);
    it_exec(d, "DROP TABLE it_ps_t");
    PQfinish(c), PQfinish(d);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

/* DEALLOCATE ALL and DISCARD ALL drop the server's statements under
 * sluice's names too: sluice must notice, and other clients' statements
 * keep working (prepared again), while the client that ran them sees its
 * own statements gone, as PostgreSQL would. */
static void deallocate_all(void) {
    it_sluice_start(&sl, "pool_mode = transaction\ndefault_pool_size = 1\n", NULL);
    PGconn *a = it_connect(&sl, "sl_scram", NULL), *b = it_connect(&sl, "sl_scram", NULL);
    const char *reset[] = {"DEALLOCATE ALL", "DISCARD ALL"};
    for (int i = 0; i < 2; i++) {
        prepare_all(a, "a");
        prepare_all(b, "b");
        round_plain(b, "b", 1);
        it_exec(a, reset[i]);
        round_plain(b, "b", 2);
        PGresult *r = PQexecPrepared(a, "a1", 0, NULL, NULL, NULL, 0);
        IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR &&
                      strstr(PQresultErrorMessage(r), "\"a1\" does not exist"),
                  "%s dropped the client's statements: %s", reset[i], PQresultErrorMessage(r));
        PQclear(r);
    }
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

int main(void) {
    it_init("it_prepared");
    wire();
    garbage();
    injected_parse_fails();
    deallocate_all();
    eviction();
    statement_mode();
    many_clients();
    return it_done();
}
