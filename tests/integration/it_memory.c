/* Memory never follows what a client sends: sluice's resident memory
 * (VmRSS, and VmHWM reset before each case through /proc/<pid>/clear_refs)
 * while one client sends a 100 MB simple Query, a 100 MB named Parse and a
 * 100 MB unnamed Parse through transaction pooling with statement tracking;
 * one client preparing 20,000 named statements (refused past
 * max_client_prepared_statements); and Query messages whose length field is
 * 0xFFFFFFFF or 0x80000003, refused with 08P01 before the server sees them.
 * A Query too long to analyse closes its server after the transaction.
 * 2,000 idle clients cost little each, and one of them keeps its session.
 * Set IT_MEMORY_ONLY=query|parse|many|length|unvetted|wire|idle to run one case. */
#include <arpa/inet.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "harness.h"

#define BIG (100u * 1000 * 1000) /* bytes of SQL text in the large messages */
#define PEAK_MAX_KB (16 * 1024)  /* the rise allowed while one is relayed */
#define KEEP_MAX_KB (4 * 1024)   /* what may stay afterwards */
#define MANY 20000               /* named statements one client tries */
#define CLIENT_MAX 10000         /* max_client_prepared_statements' default */
#define MANY_MAX_KB (32 * 1024)  /* documented bound on what 10,000 cost */
#define IDLE_CLIENTS 2000        /* idle clients held at once */
#define IDLE_MAX_BYTES 600       /* what each may cost at most (RSS): 992 before issue 13 */

static it_sluice_t sl;

static long status_kb(const char *field) {
    long kb = it_sluice_status_kb(&sl, field);
    IT_ASSERT(kb >= 0, "no %s in sluice's /proc status", field);
    return kb;
}

/* Resets VmHWM to the current RSS, so that it then shows this case's peak. */
static void reset_peak(void) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/clear_refs", (int)sl.pid);
    FILE *f = fopen(path, "w");
    IT_ASSERT(f && fputs("5", f) >= 0 && fclose(f) == 0, "cannot reset VmHWM through %s", path);
}

/* RSS settles once sluice has released what the last client used. */
static long settled_rss_kb(void) {
    long kb = status_kb("VmRSS");
    for (int i = 0; i < 20; i++) {
        usleep(50000);
        long now = status_kb("VmRSS");
        if (now == kb) break;
        kb = now;
    }
    return kb;
}

static void start_with(const char *more) {
    /* Defaults apart from the mode: statement tracking is on
     * (max_prepared_statements = 200). */
    char opts[256];
    snprintf(opts, sizeof opts,
             "pool_mode = transaction\ndefault_pool_size = 2\nauth_type = trust\n%s", more);
    it_sluice_start(&sl, opts, NULL);
    /* Warm up: a worker's buffers and the server connections exist. */
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 1"), "1"), "warm-up");
    PGresult *r = PQprepare(c, "warm", "SELECT 2", 0, NULL);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "warm-up prepare: %s", PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

static void start(void) {
    start_with("");
}

/* A clean exit (under AddressSanitizer: no leak either). */
static void stop(void) {
    int st = it_sluice_stop(&sl, SIGTERM);
    IT_ASSERT(st == 0, "sluice exited with status %d", st);
}

/* SELECT length('xxx...') with a literal of BIG bytes. */
static char *big_select(void) {
    const char *head = "SELECT length('", *tail = "')";
    size_t h = strlen(head), t = strlen(tail);
    char *sql = malloc(h + BIG + t + 1);
    IT_ASSERT(sql, "out of memory in the test");
    memcpy(sql, head, h);
    memset(sql + h, 'x', BIG);
    memcpy(sql + h + BIG, tail, t + 1);
    return sql;
}

typedef struct {
    long base, peak, after;
} rss_t;

static void report(const char *what, const rss_t *m) {
    printf("%s: baseline %ld kB, peak +%ld kB, retained +%ld kB\n", what, m->base,
           m->peak - m->base, m->after - m->base);
}

static void check_bounded(const char *what, const rss_t *m) {
    report(what, m);
    if (!IT_RSS_CHECKED) return;
    IT_ASSERT(m->peak - m->base < PEAK_MAX_KB, "%s: sluice's RSS rose by %ld kB (limit %d kB)",
              what, m->peak - m->base, PEAK_MAX_KB);
    IT_ASSERT(m->after - m->base < KEEP_MAX_KB,
              "%s: %ld kB stayed after the client left (limit %d kB)", what, m->after - m->base,
              KEEP_MAX_KB);
}

static void expect_length(PGresult *r, const char *what) {
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1, "%s: %s", what,
              PQresultErrorMessage(r));
    IT_ASSERT(strtoul(PQgetvalue(r, 0, 0), NULL, 10) == BIG, "%s: length %s, want %u", what,
              PQgetvalue(r, 0, 0), BIG);
    PQclear(r);
}

/* (a) A 100 MB simple Query streams through; the server's answer is right. */
static void big_query(void) {
    start();
    char *sql = big_select();
    rss_t m = {.base = settled_rss_kb()};
    reset_peak();
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    expect_length(PQexec(c, sql), "100 MB Query");
    IT_ASSERT(!strcmp(it_value(c, "SELECT 3"), "3"), "after the 100 MB Query");
    PQfinish(c);
    m.peak = status_kb("VmHWM");
    m.after = settled_rss_kb();
    free(sql);
    check_bounded("100 MB Query", &m);
    stop();
}

/* (b) A 100 MB named Parse is refused in its place (sluice would have to
 * keep its text to prepare it on other servers) with 54000 naming
 * max_rewrite_size, the connection stays usable, and the same 100 MB text
 * as an unnamed statement streams through and runs. */
static void big_parse(void) {
    start();
    char *sql = big_select();
    rss_t m = {.base = settled_rss_kb()};
    reset_peak();
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    PGresult *r = PQprepare(c, "big", sql, 0, NULL);
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR && state && !strcmp(state, "54000") &&
                  strstr(PQresultErrorMessage(r), "max_rewrite_size") &&
                  strstr(PQresultErrorMessage(r), "100000029 bytes"),
              "100 MB named Parse: %s %s", state ? state : "(no SQLSTATE)",
              PQresultErrorMessage(r));
    PQclear(r);
    IT_ASSERT(!strcmp(it_value(c, "SELECT 4"), "4"), "after the refused Parse");
    r = PQprepare(c, "small", "SELECT $1::int * 2", 0, NULL);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "prepare after: %s", PQerrorMessage(c));
    PQclear(r);
    const char *arg = "21";
    r = PQexecPrepared(c, "small", 1, &arg, NULL, NULL, 0);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "42"),
              "statement prepared after: %s", PQresultErrorMessage(r));
    PQclear(r);
    long named_peak = status_kb("VmHWM");
    expect_length(PQexecParams(c, sql, 0, NULL, NULL, NULL, NULL, 0), "100 MB unnamed Parse");
    PQfinish(c);
    m.peak = status_kb("VmHWM");
    m.after = settled_rss_kb();
    free(sql);
    printf("100 MB named Parse alone: peak +%ld kB\n", named_peak - m.base);
    check_bounded("100 MB named + unnamed Parse", &m);
    stop();
}

/* (c) 20,000 named statements from one client: the first 10,000 are
 * prepared, the next is refused with 53400 naming the key, RSS stays under
 * MANY_MAX_KB, and all of it goes when the client leaves. */
static void many_statements(void) {
    start();
    rss_t m = {.base = settled_rss_kb()};
    reset_peak();
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    int ok = 0;
    for (int i = 0; i < MANY; i++) {
        char name[32], sql[96];
        snprintf(name, sizeof name, "s%d", i);
        snprintf(sql, sizeof sql, "SELECT %d AS n, 'statement number %d of many' AS t", i, i);
        PGresult *r = PQprepare(c, name, sql, 0, NULL);
        if (PQresultStatus(r) == PGRES_COMMAND_OK) {
            ok++;
        } else {
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            IT_ASSERT(i == CLIENT_MAX && state && !strcmp(state, "53400") &&
                          strstr(PQresultErrorMessage(r), "max_client_prepared_statements"),
                      "statement %d: %s %s", i, state ? state : "", PQresultErrorMessage(r));
            PQclear(r);
            break;
        }
        PQclear(r);
    }
    IT_ASSERT(ok == CLIENT_MAX, "%d statements prepared, want %d then a refusal", ok, CLIENT_MAX);
    /* The earliest and the latest still work. */
    PGresult *r = PQexecPrepared(c, "s0", 0, NULL, NULL, NULL, 0);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "0"), "s0: %s",
              PQresultErrorMessage(r));
    PQclear(r);
    r = PQexecPrepared(c, "s9999", 0, NULL, NULL, NULL, 0);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "9999"),
              "s9999: %s", PQresultErrorMessage(r));
    PQclear(r);
    /* Deallocating one makes room for another. */
    it_exec(c, "DEALLOCATE s5");
    r = PQprepare(c, "again", "SELECT 'again'", 0, NULL);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "after a Close: %s", PQerrorMessage(c));
    PQclear(r);
    m.peak = status_kb("VmHWM");
    PQfinish(c);
    m.after = settled_rss_kb();
    report("10,000 named statements", &m);
    IT_ASSERT(!IT_RSS_CHECKED || m.peak - m.base < MANY_MAX_KB,
              "10,000 statements: RSS rose by %ld kB (limit %d kB)", m.peak - m.base, MANY_MAX_KB);
    IT_ASSERT(!IT_RSS_CHECKED || m.after - m.base < KEEP_MAX_KB, "10,000 statements: %ld kB stayed",
              m.after - m.base);
    stop();
}

/* ---- lengths no message may have ---- */

/* The fields of an ErrorResponse body: severity, code and message. */
static void error_fields(const char *body, int n, char *code, char *msg, size_t cap) {
    code[0] = msg[0] = 0;
    for (int i = 0; i < n && body[i];) {
        char f = body[i++];
        const char *v = body + i;
        if (f == 'C') snprintf(code, 8, "%s", v);
        if (f == 'M') snprintf(msg, cap, "%s", v);
        i += (int)strlen(v) + 1;
    }
}

/* Sends a Query header declaring `len`, then a little of a body, as a
 * client might before it gets the error. */
static void bad_length(uint32_t len, const char *want_len, bool linked) {
    int fd = it_raw_login(&sl, "sl_scram", "sluice_test");
    unsigned char m[5 + 64] = {'Q'};
    uint32_t be = htonl(len);
    memcpy(m + 1, &be, 4);
    memset(m + 5, 'x', 64);
    if (linked) {
        /* Inside a transaction: the header would go straight to its server. */
        unsigned char q[5 + 6] = {'Q', 0, 0, 0, 10};
        memcpy(q + 5, "BEGIN", 6);
        IT_ASSERT(write(fd, q, sizeof q) == (ssize_t)sizeof q, "BEGIN");
        char body[256];
        int t;
        while ((t = it_raw_read_msg(fd, body, sizeof body)) != 'Z')
            IT_ASSERT(t > 0, "BEGIN reply");
    }
    IT_ASSERT(write(fd, m, sizeof m) == (ssize_t)sizeof m, "bad header");
    char body[1024], code[8], msg[512];
    int t = it_raw_read_msg(fd, body, sizeof body - 1);
    IT_ASSERT(t == 'E', "length %#x: reply type %d, want an ErrorResponse", len, t);
    body[sizeof body - 1] = 0;
    error_fields(body, (int)sizeof body - 1, code, msg, sizeof msg);
    printf("length %#x%s: %s %s\n", len, linked ? " (in a transaction)" : "", code, msg);
    IT_ASSERT(!strcmp(code, "08P01") && strstr(msg, want_len),
              "length %#x: got %s \"%s\", want 08P01 stating %s", len, code, msg, want_len);
    IT_ASSERT(it_raw_read_msg(fd, body, sizeof body) < 0, "length %#x: connection not closed", len);
    close(fd);
}

static void lengths(void) {
    start();
    for (int linked = 0; linked < 2; linked++) {
        bad_length(0xFFFFFFFFu, "4294967296 bytes exceeds max_packet_size", linked);
        bad_length(0x80000003u, "2147483652 bytes exceeds max_packet_size", linked);
    }
    /* With the largest max_packet_size: PostgreSQL would read 0x80000003
     * as negative, and sluice still refuses it itself. */
    stop();
    start_with("max_packet_size = 2147483647\n");
    for (int linked = 0; linked < 2; linked++) {
        bad_length(0x80000003u, "2147483652 bytes exceeds the protocol's limit", linked);
        bad_length(0xFFFFFFFFu, "4294967296 bytes exceeds max_packet_size", linked);
    }
    /* sluice serves others, and the servers are fine. */
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    for (int i = 0; i < 4; i++)
        IT_ASSERT(!strcmp(it_value(c, "SELECT 5"), "5"), "after");
    PQfinish(c);
    IT_ASSERT(it_log_count(&sl, "invalid message length") == 0 &&
                  it_log_count(&sl, "server connection lost") == 0,
              "a server saw a bad header");
    stop();
}

/* ---- refusals in their place on the wire ---- */

/* Sends w and reads replies up to ReadyForQuery: their types, with each
 * ErrorResponse's SQLSTATE in parentheses, e.g. "1E(54000)Z". */
static const char *exchange(int fd, it_wire_t *w) {
    static char out[256];
    IT_ASSERT(write(fd, w->b, (size_t)w->n) == w->n, "send");
    w->n = 0;
    int o = 0, t;
    char body[1024], code[8], msg[512];
    do {
        t = it_raw_read_msg(fd, body, sizeof body - 1);
        IT_ASSERT(t > 0, "reply (got so far: %.*s)", o, out);
        out[o++] = (char)t;
        if (t == 'E') {
            body[sizeof body - 1] = 0;
            error_fields(body, (int)sizeof body - 1, code, msg, sizeof msg);
            o += snprintf(out + o, sizeof out - (size_t)o, "(%s)", code);
            printf("  error: %s %s\n", code, msg);
        }
    } while (t != 'Z' && o < 200);
    out[o] = 0;
    return out;
}

static void expect_wire(int fd, it_wire_t *w, const char *want, const char *what) {
    const char *got = exchange(fd, w);
    IT_ASSERT(!strcmp(got, want), "%s: replies %s, want %s", what, got, want);
}

/* With small bounds: a named Parse over max_rewrite_size and one past
 * max_client_prepared_statements are each answered with their error in
 * their place, the rest of the pipeline skipped up to Sync; an unnamed
 * Parse over max_rewrite_size runs; the statements before still work. */
static void wire_order(void) {
    start_with("max_rewrite_size = 1024\nmax_client_prepared_statements = 2\n");
    int fd = it_raw_login(&sl, "sl_scram", "sluice_test");
    it_wire_t w = {.n = 0};
    char big[2048];
    int n = snprintf(big, sizeof big, "SELECT length('");
    memset(big + n, 'y', 1500);
    snprintf(big + n + 1500, sizeof big - (size_t)n - 1500, "')");
    it_wire_parse(&w, "a", "SELECT 1"), it_wire_parse(&w, "big", big), it_wire_bind_exec(&w, "a");
    it_wire_sync(&w);
    expect_wire(fd, &w, "1E(54000)Z", "named Parse over max_rewrite_size");
    it_wire_parse(&w, "", big), it_wire_bind_exec(&w, ""), it_wire_sync(&w);
    expect_wire(fd, &w, "12DCZ", "unnamed Parse over max_rewrite_size");
    it_wire_parse(&w, "b", "SELECT 2"), it_wire_parse(&w, "c", "SELECT 3"),
        it_wire_bind_exec(&w, "b");
    it_wire_sync(&w);
    expect_wire(fd, &w, "1E(53400)Z", "third statement");
    /* Rebinding a name it holds is no new statement. */
    it_wire_parse(&w, "b", "SELECT 22"), it_wire_bind_exec(&w, "a"), it_wire_bind_exec(&w, "b");
    it_wire_sync(&w);
    expect_wire(fd, &w, "12DC2DCZ", "within the bound");
    /* A statement the server accepted before is answered by sluice alone
     * when no server is linked, but not past the bound. */
    it_wire_parse(&w, "d", "SELECT 1"), it_wire_sync(&w);
    expect_wire(fd, &w, "E(53400)Z", "known statement past the bound");
    close(fd);
    stop();
}

/* A Query longer than pkt_buf streams through unanalysed: the SET in it
 * is unknown to sluice, so its server must not serve the next client. */
static void unvetted(void) {
    start_with("default_pool_size = 1\n");
    PGconn *a = it_connect(&sl, "sl_scram", NULL);
    char sql[40000];
    int n = snprintf(sql, sizeof sql, "SET work_mem = '7MB'; SELECT length('");
    memset(sql + n, 'x', 30000);
    snprintf(sql + n + 30000, sizeof sql - (size_t)n - 30000, "')");
    PGresult *r = PQexec(a, sql);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "30000"),
              "long Query: %s", PQresultErrorMessage(r));
    PQclear(r);
    PQfinish(a);
    PGconn *b = it_connect(&sl, "sl_scram", NULL);
    const char *wm = it_value(b, "SHOW work_mem");
    IT_ASSERT(!strcmp(wm, "4MB"), "the next client got work_mem = %s from an unvetted server", wm);
    PQfinish(b);
    stop();
}

/* Idle clients are cheap (issue 13): sluice's RSS grows by less than
 * IDLE_MAX_BYTES per logged-in idle client that ran a query (992 bytes
 * before the clients' activity state, tag and poll handle were made to go
 * with idleness; 740 while a client that had run a query kept it). And
 * a client idle among them, whose activity state went back to its loop,
 * still has everything a session keeps: its SET, its prepared statement,
 * its cancel key, on a pool of ONE server that the others use meanwhile. */
static void idle_clients(void) {
    struct rlimit lim;
    getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = lim.rlim_max;
    IT_ASSERT(setrlimit(RLIMIT_NOFILE, &lim) == 0, "setrlimit: %s", strerror(errno));
    /* Without the RSS bound (sanitizers), a few hundred show the session part. */
    int n = IT_RSS_CHECKED ? IDLE_CLIENTS : IDLE_CLIENTS / 10;
    if (lim.rlim_cur < (rlim_t)n + 200) n = (int)lim.rlim_cur - 200;
    char opts[160];
    snprintf(opts, sizeof opts,
             "pool_mode = transaction\ndefault_pool_size = 1\nauth_type = trust\n"
             "max_client_conn = %d\nlog_connections = 0\nlog_disconnections = 0\n",
             n + 100);
    it_sluice_start(&sl, opts, NULL);
    IT_ASSERT(prlimit(sl.pid, RLIMIT_NOFILE, &lim, NULL) == 0, "prlimit: %s", strerror(errno));
    PGconn *keep = it_connect(&sl, "sl_scram", NULL);
    it_exec(keep, "SET statement_timeout = '12345'");
    PGresult *r = PQprepare(keep, "kept", "SELECT $1::int + 1", 0, NULL);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "prepare: %s", PQerrorMessage(keep));
    PQclear(r);
    /* Warm up the rest (a raw login, a worker's buffers) before the base. */
    int warm = it_raw_login(&sl, "sl_scram", "sluice_test");
    close(warm);
    long base = settled_rss_kb();
    int *fds = calloc((size_t)n, sizeof *fds);
    IT_ASSERT(fds, "out of memory");
    for (int i = 0; i < n; i++)
        fds[i] = it_raw_login(&sl, "sl_scram", "sluice_test");
    /* Each runs a query first: an idle client is one that was active, and
     * its activity state has to go back to the loop, not only a fresh
     * login's. */
    /* Ten at a time: they queue for the one server (one by one, each would
     * wait for the server to move between workers), and no more than ten
     * clients' buffers are in use at once, which the loop keeps for the
     * next active clients. */
    it_wire_t w0 = {0};
    char one[16];
    for (int i = 0; i < n; i += 10) {
        int end = i + 10 < n ? i + 10 : n;
        it_wire_query(&w0, "SELECT 1");
        for (int j = i; j < end; j++)
            IT_ASSERT(write(fds[j], w0.b, (size_t)w0.n) == w0.n, "idle client %d's query", j);
        w0.n = 0;
        for (int j = i; j < end; j++)
            IT_ASSERT(!strcmp(it_wire_exchange(fds[j], &w0, 30, one, sizeof one), "TDCZ") &&
                          !strcmp(one, "1"),
                      "idle client %d's query before it rests", j);
    }
    long after = settled_rss_kb();
    long per = (after - base) * 1024 / n;
    printf("%d idle clients: RSS %ld -> %ld kB, %ld bytes each\n", n, base, after, per);
    IT_ASSERT(!IT_RSS_CHECKED || per < IDLE_MAX_BYTES, "%ld bytes per idle client (at most %d)",
              per, IDLE_MAX_BYTES);

    /* Others take the one server, with settings of their own. */
    it_wire_t w = {0};
    char v[64];
    for (int i = 0; i < 5; i++) {
        it_wire_query(&w, "SET statement_timeout = '777'; SELECT 42");
        IT_ASSERT(!strcmp(it_wire_exchange(fds[i], &w, 10, v, sizeof v), "CTDCZ") &&
                      !strcmp(v, "42"),
                  "idle client %d runs a query", i);
    }
    IT_ASSERT(!strcmp(it_value(keep, "SHOW statement_timeout"), "12345ms"),
              "the SET of a client that was idle is kept: %s",
              it_value(keep, "SHOW statement_timeout"));
    const char *arg = "41";
    r = PQexecPrepared(keep, "kept", 1, &arg, NULL, NULL, 0);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "42"),
              "its prepared statement is kept: %s", PQerrorMessage(keep));
    PQclear(r);
    /* Its cancel key still names it. */
    IT_ASSERT(PQsendQuery(keep, "SELECT pg_sleep(20)"), "send: %s", PQerrorMessage(keep));
    usleep(300000);
    PGcancel *pc = PQgetCancel(keep);
    char err[256];
    IT_ASSERT(PQcancel(pc, err, sizeof err), "cancel sent: %s", err);
    PQfreeCancel(pc);
    r = PQgetResult(keep);
    IT_ASSERT(r && !strcmp(PQresultErrorField(r, PG_DIAG_SQLSTATE)
                               ? PQresultErrorField(r, PG_DIAG_SQLSTATE)
                               : "",
                           "57014"),
              "the cancel reached its query: %s", PQerrorMessage(keep));
    PQclear(r);
    while ((r = PQgetResult(keep)))
        PQclear(r);
    IT_ASSERT(!strcmp(it_value(keep, "SELECT 7"), "7"), "usable after the cancel");
    for (int i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
    PQfinish(keep);
    stop();
}

int main(void) {
    it_init("it_memory");
    const char *only = getenv("IT_MEMORY_ONLY");
    if (!only || !strcmp(only, "length")) lengths();
    if (!only || !strcmp(only, "wire")) wire_order();
    if (!only || !strcmp(only, "unvetted")) unvetted();
    if (!only || !strcmp(only, "query")) big_query();
    if (!only || !strcmp(only, "parse")) big_parse();
    if (!only || !strcmp(only, "many")) many_statements();
    if (!only || !strcmp(only, "idle")) idle_clients();
    return it_done();
}
