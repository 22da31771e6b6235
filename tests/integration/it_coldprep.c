/* Synchronous preparers on a cold pool (no statement accepted by any server
 * yet, every server busy): pgbench -M prepared with an explicit transaction
 * per script, 16 clients over 5 servers, must not deadlock (no failed
 * transaction, no aborted client); a Parse + Sync
 * is answered without a server, with PostgreSQL's own error when the text
 * is not valid SQL, and a statement the server rejects for another reason
 * (an unknown table) reports that error at its first Bind. */
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static it_sluice_t sl;

/* ---- pgbench ---- */

static void write_script(const char *path, const char *begin) {
    FILE *f = fopen(path, "w");
    IT_ASSERT(f, "script file %s", path);
    fprintf(f,
            "\\set aid random(1, 100000)\n"
            "%s;\n"
            "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"
            "END;\n",
            begin);
    fclose(f);
}

/* pgbench -M prepared prepares each statement synchronously the first time
 * a client runs it, inside a thread that also holds other clients'
 * transactions open. A statement first prepared by a client between
 * transactions, while five servers sit idle in transaction after BEGIN
 * for clients of the same thread, must not need a server: it would never
 * get one (query_wait_timeout). `second`: one pgbench thread, and a
 * second script, chosen about once in 50 transactions, whose BEGIN is a
 * text not seen before: it is first prepared while the thread's other
 * clients hold every server, which on the code before sluice answered new
 * statements alone made pgbench abort clients within seconds. Without it:
 * the brief's command (two threads, one script), which got by before only
 * because each new text was first prepared by a client holding a server.
 * A fresh sluice each time: the pool is cold when pgbench starts. */
static void pgbench_cold(bool second) {
    it_sluice_start(&sl, "pool_mode = transaction\ndefault_pool_size = 5\nquery_wait_timeout = 5\n",
                    NULL);
    char cmd[1400], out[8192], one[300], two[300];
    snprintf(one, sizeof one, "%s/tx.sql", sl.dir);
    snprintf(two, sizeof two, "%s/tx2.sql", sl.dir);
    write_script(one, "BEGIN");
    write_script(two, "BEGIN ISOLATION LEVEL READ COMMITTED");
    snprintf(cmd, sizeof cmd,
             "PGPASSWORD=scram_pw pgbench -n -h 127.0.0.1 -p %d -U sl_scram -c 16 -j %d -T 10 "
             "-M prepared -f %s%s%s%s sluice_test 2>&1",
             sl.port, second ? 1 : 2, one, second ? "@50 -f " : "", second ? two : "",
             second ? "@1" : "");
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int rc = pclose(p);
    printf("%s\n%s\n", cmd, out);
    IT_ASSERT(rc == 0, "pgbench exited %d", rc);
    IT_ASSERT(strstr(out, "number of failed transactions: 0 (0.000%)"), "failed transactions");
    IT_ASSERT(!strstr(out, "aborted"), "aborted clients");
    IT_ASSERT(it_log_count(&sl, "query_wait_timeout") == 0, "no client timed out waiting");
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

/* ---- the wire ---- */

/* Logs in on port (sluice, or the primary itself) without TLS. */
static int raw_login(int port, const char *user) {
    it_sluice_t at = {.port = port};
    return it_raw_login(&at, user, "sluice_test");
}

/* Sends w and reads the replies up to ReadyForQuery: their types in order
 * ("1Z", "EZ"), and the fields of the last ErrorResponse, one "Xvalue" per
 * line, into err. */
static const char *exchange(int fd, it_wire_t *w, char *err, size_t cap) {
    static char types[64];
    IT_ASSERT(write(fd, w->b, (size_t)w->n) == w->n, "send");
    w->n = 0;
    int o = 0, t;
    char body[1024];
    if (err) err[0] = 0;
    do {
        memset(body, 0, sizeof body);
        t = it_raw_read_msg(fd, body, sizeof body - 1);
        IT_ASSERT(t > 0, "reply (got so far: %.*s)", o, types);
        types[o++] = (char)t;
        if (t == 'E' && err) {
            size_t e = 0;
            for (const char *f = body; *f && e + 2 < cap; f += strlen(f) + 1)
                e += (size_t)snprintf(err + e, cap - e, "%s\n", f);
        }
    } while (t != 'Z' && o < 60);
    types[o] = 0;
    return types;
}

/* One field ("C", "M", "P") of an error as exchange() wrote it. */
static const char *field(const char *err, char code) {
    static char v[256];
    for (const char *l = err; *l; l = strchr(l, '\n') + 1) {
        if (*l != code) continue;
        int n = (int)(strchr(l, '\n') - l - 1);
        snprintf(v, sizeof v, "%.*s", n, l + 1);
        return v;
    }
    return "";
}

/* The error PostgreSQL itself gives w's messages, for comparison. With
 * `no_line`, without the L field (the source line of the server's build;
 * sluice's parser is another build of the same scanner and leaves it out). */
static void direct_error(it_wire_t *w, char *err, size_t cap, bool no_line) {
    int d = raw_login(it_cl.primary, "postgres");
    const char *got = exchange(d, w, err, cap);
    IT_ASSERT(!strcmp(got, "EZ"), "direct: replies %s, want EZ", got);
    close(d);
    for (char *l = err; no_line && *l; l = strchr(l, '\n') + 1) {
        if (*l != 'L') continue;
        char *next = strchr(l, '\n') + 1;
        memmove(l, next, strlen(next) + 1);
        return;
    }
}

/* b holds the only server in a transaction for the whole test: a Parse
 * that needed a server would wait until query_wait_timeout. */
static void wire_cold(void) {
    it_sluice_start(&sl,
                    "pool_mode = transaction\ndefault_pool_size = 1\nquery_wait_timeout = 3\n"
                    "auth_type = trust\n",
                    NULL);
    PGconn *d = it_direct();
    it_exec(d, "DROP TABLE IF EXISTS it_cold_nosuch");
    PQfinish(d);
    int a = raw_login(sl.port, "sl_scram"), b = raw_login(sl.port, "sl_scram");
    it_wire_t w = {.n = 0};
    char err[1024], want[1024];
    it_wire_msg(&w, 'Q', "BEGIN", 6);
    IT_ASSERT(!strcmp(exchange(b, &w, NULL, 0), "CZ"), "b begins");

    /* A valid statement no server has seen: prepared without one. */
    it_wire_parse(&w, "good", "SELECT 41 + 1"), it_wire_sync(&w);
    const char *got = exchange(a, &w, err, sizeof err);
    IT_ASSERT(!strcmp(got, "1Z"), "new statement on a cold pool: replies %s (%s)", got, err);

    /* A syntax error: PostgreSQL's error at the Parse, field for field
     * (SQLSTATE 42601, message, position, source file and routine),
     * and the rest of the batch skipped up to the Sync. */
    it_wire_parse(&w, "bad", "SELECT 1 FROMM t"), it_wire_parse(&w, "after", "SELECT 2"),
        it_wire_sync(&w);
    direct_error(&w, want, sizeof want, true);
    it_wire_parse(&w, "bad", "SELECT 1 FROMM t"), it_wire_parse(&w, "after", "SELECT 2"),
        it_wire_sync(&w);
    got = exchange(a, &w, err, sizeof err);
    IT_ASSERT(!strcmp(got, "EZ"), "syntax error: replies %s, want EZ (%s)", got, err);
    IT_ASSERT(!strcmp(field(err, 'C'), "42601"), "SQLSTATE %s", field(err, 'C'));
    IT_ASSERT(!strcmp(err, want), "syntax error as PostgreSQL reports it:\n%s\nwant:\n%s", err,
              want);
    /* An unterminated literal: another of the scanner's errors. */
    it_wire_parse(&w, "bad2", "SELECT 'abc"), it_wire_sync(&w);
    direct_error(&w, want, sizeof want, true);
    it_wire_parse(&w, "bad2", "SELECT 'abc"), it_wire_sync(&w);
    got = exchange(a, &w, err, sizeof err);
    IT_ASSERT(!strcmp(got, "EZ") && !strcmp(err, want),
              "unterminated literal: replies %s:\n%s\nwant:\n%s", got, err, want);

    /* An unknown table is a valid statement to the parser: answered, and
     * the server's 42P01 comes at the first Bind, as PostgreSQL words it at
     * the Parse. */
    it_wire_parse(&w, "nosuch", "SELECT * FROM it_cold_nosuch"), it_wire_sync(&w);
    direct_error(&w, want, sizeof want, false);
    it_wire_parse(&w, "nosuch", "SELECT * FROM it_cold_nosuch"), it_wire_sync(&w);
    got = exchange(a, &w, err, sizeof err);
    IT_ASSERT(!strcmp(got, "1Z"), "unknown table at the Parse: replies %s (%s)", got, err);

    it_wire_msg(&w, 'Q', "COMMIT", 7);
    IT_ASSERT(!strcmp(exchange(b, &w, NULL, 0), "CZ"), "b commits");
    it_wire_bind_exec(&w, "good"), it_wire_sync(&w);
    got = exchange(a, &w, err, sizeof err);
    IT_ASSERT(!strcmp(got, "2DCZ"), "the statement prepared without a server runs: %s", got);
    it_wire_bind_exec(&w, "nosuch"), it_wire_sync(&w);
    got = exchange(a, &w, err, sizeof err);
    IT_ASSERT(!strcmp(got, "EZ"), "unknown table at the Bind: replies %s", got);
    IT_ASSERT(!strcmp(field(err, 'C'), "42P01"), "SQLSTATE %s", field(err, 'C'));
    IT_ASSERT(!strcmp(err, want), "42P01 as PostgreSQL reports it:\n%s\nwant:\n%s", err, want);
    /* The failed names were never created, as in PostgreSQL. */
    it_wire_bind_exec(&w, "bad"), it_wire_sync(&w);
    got = exchange(a, &w, err, sizeof err);
    IT_ASSERT(!strcmp(got, "EZ") && !strcmp(field(err, 'C'), "26000"),
              "a statement whose Parse failed does not exist: %s %s", got, field(err, 'C'));

    /* A batch that needs a server anyway (Parse, Describe, Sync: what
     * drivers send) goes to one whole: the error comes at the Parse. */
    it_wire_parse(&w, "nosuch2", "SELECT * FROM it_cold_nosuch"), it_wire_describe(&w, "nosuch2");
    it_wire_sync(&w);
    got = exchange(a, &w, err, sizeof err);
    IT_ASSERT(!strcmp(got, "EZ") && !strcmp(field(err, 'C'), "42P01"),
              "Parse/Describe/Sync of an unknown table: %s %s", got, field(err, 'C'));
    /* Two statements in one Parse: the server's own refusal. */
    it_wire_parse(&w, "two", "SELECT 1; SELECT 2"), it_wire_sync(&w);
    got = exchange(a, &w, err, sizeof err);
    IT_ASSERT(!strcmp(got, "EZ") && strstr(err, "cannot insert multiple commands"),
              "two statements: %s %s", got, err);
    close(a), close(b);
    IT_ASSERT(it_log_count(&sl, "query_wait_timeout") == 0, "no client timed out waiting");
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
}

int main(void) {
    it_init("it_coldprep");
    wire_cold();
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             "PGPASSWORD=scram_pw pgbench -i -s 1 -q -h 127.0.0.1 -p %d -U sl_scram sluice_test "
             ">/dev/null 2>&1",
             it_cl.primary);
    IT_ASSERT(system(cmd) == 0, "pgbench -i");
    pgbench_cold(false);
    pgbench_cold(true);
    return it_done();
}
