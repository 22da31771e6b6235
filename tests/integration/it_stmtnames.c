/* Errors about a named prepared statement name the client's statement. In
 * transaction pooling sluice prepares statements on its servers under its
 * own names (sluice_<n>); the errors the server words with that name
 * (a Bind with the wrong number of parameters, a statement the server lost)
 * must reach the client as PostgreSQL would have worded them direct. Each
 * sequence runs twice, direct and through sluice, and every reply (state,
 * SQLSTATE, message, detail, hint, context) must be the same. */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

typedef struct trace {
    char text[8192]; /* one line per reply */
    size_t len;
} trace_t;

static void add(trace_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(trace_t *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(t->text + t->len, sizeof t->text - t->len, fmt, ap);
    va_end(ap);
    IT_ASSERT(n >= 0 && (size_t)n < sizeof t->text - t->len, "trace buffer too small");
    t->len += (size_t)n;
}

static const char *field(const PGresult *r, int code) {
    const char *v = PQresultErrorField(r, code);
    return v ? v : "";
}

/* Records a result: its status, and for an error every field a client
 * shows; then frees it. */
static void note(trace_t *t, const char *step, PGresult *r) {
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR)
        add(t, "%s: %s %s: %s | detail: %s | hint: %s | context: %s\n", step,
            field(r, PG_DIAG_SEVERITY_NONLOCALIZED), field(r, PG_DIAG_SQLSTATE),
            field(r, PG_DIAG_MESSAGE_PRIMARY), field(r, PG_DIAG_MESSAGE_DETAIL),
            field(r, PG_DIAG_MESSAGE_HINT), field(r, PG_DIAG_CONTEXT));
    else
        add(t, "%s: %s %s\n", step, PQresStatus(st),
            st == PGRES_TUPLES_OK && PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
}

static void exec_note(trace_t *t, PGconn *c, const char *sql) {
    note(t, sql, PQexec(c, sql));
}

/* An odd name, quoted as PostgreSQL quotes it (not at all). */
#define ODD "Odd \"name\" s1"

/* Bind with too few and too many parameters, alone and in a transaction. */
static void bind_count(PGconn *c, trace_t *t) {
    note(t, "prepare", PQprepare(c, ODD, "SELECT $1::int AS v", 1, NULL));
    const char *two[2] = {"7", "8"};
    note(t, "no parameter", PQexecPrepared(c, ODD, 0, NULL, NULL, NULL, 0));
    note(t, "two parameters", PQexecPrepared(c, ODD, 2, two, NULL, NULL, 0));
    note(t, "one parameter", PQexecPrepared(c, ODD, 1, two, NULL, NULL, 0));
    exec_note(t, c, "BEGIN");
    note(t, "in a transaction, no parameter", PQexecPrepared(c, ODD, 0, NULL, NULL, NULL, 0));
    note(t, "then one", PQexecPrepared(c, ODD, 1, two, NULL, NULL, 0));
    exec_note(t, c, "ROLLBACK");
    note(t, "after the rollback", PQexecPrepared(c, ODD, 1, two, NULL, NULL, 0));
}

/* The same, pipelined: Parse, a Bind that fails, a Describe and a Bind
 * skipped after it, one Sync. */
static void bind_count_pipelined(PGconn *c, trace_t *t) {
    IT_ASSERT(PQenterPipelineMode(c) == 1, "pipeline mode");
    const char *one[1] = {"5"};
    IT_ASSERT(PQsendPrepare(c, "p1", "SELECT $1::int AS v", 1, NULL) == 1, "send");
    IT_ASSERT(PQsendQueryPrepared(c, "p1", 0, NULL, NULL, NULL, 0) == 1, "send");
    IT_ASSERT(PQsendDescribePrepared(c, "p1") == 1, "send");
    IT_ASSERT(PQsendQueryPrepared(c, "p1", 1, one, NULL, NULL, 0) == 1, "send");
    IT_ASSERT(PQpipelineSync(c) == 1, "sync");
    IT_ASSERT(PQsendQueryPrepared(c, "p1", 1, one, NULL, NULL, 0) == 1, "send");
    IT_ASSERT(PQpipelineSync(c) == 1, "sync");
    /* Every result and every end of one, up to the second Sync's. */
    for (int i = 0, syncs = 0; syncs < 2; i++) {
        IT_ASSERT(i < 30, "pipeline results do not end");
        PGresult *r = PQgetResult(c);
        if (!r) {
            add(t, "end\n");
            continue;
        }
        if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) syncs++;
        note(t, "pipeline", r);
    }
    IT_ASSERT(PQexitPipelineMode(c) == 1, "exit pipeline mode: %s", PQerrorMessage(c));
}

/* A statement the server lost (DEALLOCATE ALL inside a DO block, which
 * sluice cannot see) within one transaction: Describe, then Bind. */
static void lost_statement(PGconn *c, trace_t *t) {
    const char *one[1] = {"3"};
    note(t, "prepare", PQprepare(c, "s2", "SELECT $1::int * 2 AS v", 1, NULL));
    for (int v = 0; v < 2; v++) {
        exec_note(t, c, "BEGIN");
        note(t, "execute", PQexecPrepared(c, "s2", 1, one, NULL, NULL, 0));
        exec_note(t, c, "DO $$BEGIN EXECUTE 'DEALLOCATE ALL'; END$$");
        if (v == 0)
            note(t, "describe", PQdescribePrepared(c, "s2"));
        else
            note(t, "execute again", PQexecPrepared(c, "s2", 1, one, NULL, NULL, 0));
        exec_note(t, c, "ROLLBACK");
        if (v == 0)
            note(t, "prepare again", PQprepare(c, "s2", "SELECT $1::int * 2 AS v", 1, NULL));
    }
}

/* A statement whose plan can no longer run: the table changed under it. */
static void plan_changed(PGconn *c, trace_t *t) {
    note(t, "prepare", PQprepare(c, "s3", "SELECT * FROM stn_t", 0, NULL));
    note(t, "execute", PQexecPrepared(c, "s3", 0, NULL, NULL, NULL, 0));
    exec_note(t, c, "ALTER TABLE stn_t ADD COLUMN b int");
    note(t, "execute after ALTER", PQexecPrepared(c, "s3", 0, NULL, NULL, NULL, 0));
    note(t, "describe after ALTER", PQdescribePrepared(c, "s3"));
}

/* A name the client never prepared, and one it closed. */
static void unknown_names(PGconn *c, trace_t *t) {
    note(t, "describe", PQdescribePrepared(c, "never"));
    note(t, "execute", PQexecPrepared(c, "never", 0, NULL, NULL, NULL, 0));
    note(t, "prepare", PQprepare(c, "s4", "SELECT 4", 0, NULL));
    exec_note(t, c, "DEALLOCATE s4");
    note(t, "execute closed", PQexecPrepared(c, "s4", 0, NULL, NULL, NULL, 0));
}

/* DEALLOCATE sent over the extended protocol (what PQexecParams sends: an
 * unnamed Parse, Bind, Describe, Execute) drops the statement, as in SQL. */
static void dealloc_extended(PGconn *c, trace_t *t) {
    note(t, "prepare", PQprepare(c, "b", "SELECT 'b'::text", 0, NULL));
    note(t, "execute", PQexecPrepared(c, "b", 0, NULL, NULL, NULL, 0));
    note(t, "DEALLOCATE b", PQexecParams(c, "DEALLOCATE b", 0, NULL, NULL, NULL, NULL, 0));
    note(t, "execute dropped", PQexecPrepared(c, "b", 0, NULL, NULL, NULL, 0));
    note(t, "DEALLOCATE b again", PQexecParams(c, "DEALLOCATE b", 0, NULL, NULL, NULL, NULL, 0));
    note(t, "prepare again", PQprepare(c, "b", "SELECT 'b2'::text", 0, NULL));
    note(t, "execute", PQexecPrepared(c, "b", 0, NULL, NULL, NULL, 0));
    /* Prepared as the unnamed statement, described, then run, in one
     * transaction (through sluice a client's unnamed statement lasts as
     * long as its link to a server). */
    exec_note(t, c, "BEGIN");
    note(t, "prepare unnamed", PQprepare(c, "", "DEALLOCATE PREPARE b", 0, NULL));
    note(t, "describe unnamed", PQdescribePrepared(c, ""));
    note(t, "execute unnamed", PQexecPrepared(c, "", 0, NULL, NULL, NULL, 0));
    note(t, "execute dropped", PQexecPrepared(c, "b", 0, NULL, NULL, NULL, 0));
    exec_note(t, c, "ROLLBACK");
    exec_note(t, c, "BEGIN");
    note(t, "prepare unnamed", PQprepare(c, "", "DEALLOCATE PREPARE b", 0, NULL));
    note(t, "execute unnamed again", PQexecPrepared(c, "", 0, NULL, NULL, NULL, 0));
    exec_note(t, c, "ROLLBACK");
    note(t, "prepare", PQprepare(c, "b", "SELECT 'b3'::text", 0, NULL));
    /* In a transaction that fails after it: the statement stays dropped
     * (DEALLOCATE is not transactional). */
    exec_note(t, c, "BEGIN");
    note(t, "DEALLOCATE b", PQexecParams(c, "DEALLOCATE b", 0, NULL, NULL, NULL, NULL, 0));
    exec_note(t, c, "SELECT 1/0");
    exec_note(t, c, "ROLLBACK");
    note(t, "execute dropped", PQexecPrepared(c, "b", 0, NULL, NULL, NULL, 0));
}

/* Names longer than 63 bytes: PostgreSQL keys statements by their first
 * 63 bytes, so names that agree there are one statement. */
#define LONG63 "long_name_012345678901234567890123456789012345678901234567890123"
static void long_names(PGconn *c, trace_t *t) {
    note(t, "prepare", PQprepare(c, LONG63 "_first", "SELECT 'long'::text", 0, NULL));
    note(t, "execute other tail", PQexecPrepared(c, LONG63 "_second", 0, NULL, NULL, NULL, 0));
    note(t, "describe other tail", PQdescribePrepared(c, LONG63 "_third"));
    exec_note(t, c, "DEALLOCATE " LONG63 "_sql");
    note(t, "execute dropped", PQexecPrepared(c, LONG63 "_first", 0, NULL, NULL, NULL, 0));
    note(t, "prepare", PQprepare(c, LONG63 "_x", "SELECT 'long2'::text", 0, NULL));
    exec_note(t, c, "DEALLOCATE \"" LONG63 "_y\"");
    note(t, "execute closed", PQexecPrepared(c, LONG63 "_x", 0, NULL, NULL, NULL, 0));
}

/* A client's own protocol-level names may look like sluice's: they are
 * the client's, mapped as any other. */
static void pooler_like_names(PGconn *c, trace_t *t) {
    note(t, "prepare sluice_1", PQprepare(c, "sluice_1", "SELECT 'mine 1'::text", 0, NULL));
    note(t, "prepare sluice_2", PQprepare(c, "sluice_2", "SELECT 'mine 2'::text", 0, NULL));
    note(t, "execute sluice_1", PQexecPrepared(c, "sluice_1", 0, NULL, NULL, NULL, 0));
    note(t, "describe sluice_2", PQdescribePrepared(c, "sluice_2"));
    note(t, "execute sluice_2", PQexecPrepared(c, "sluice_2", 0, NULL, NULL, NULL, 0));
    note(t, "execute never sluice_3", PQexecPrepared(c, "sluice_3", 0, NULL, NULL, NULL, 0));
    note(t, "describe never sluice_4", PQdescribePrepared(c, "sluice_4"));
}

typedef struct sequence {
    const char *name;
    void (*run)(PGconn *c, trace_t *t);
} sequence_t;

static const sequence_t sequences[] = {
    {"Bind with the wrong number of parameters", bind_count},
    {"the same, pipelined", bind_count_pipelined},
    {"a statement the server lost", lost_statement},
    {"a plan that can no longer run", plan_changed},
    {"names the client never prepared or closed", unknown_names},
    {"DEALLOCATE over the extended protocol", dealloc_extended},
    {"names longer than 63 bytes", long_names},
    {"a client's own names that look like sluice's", pooler_like_names},
};

/* Raw protocol, everything in one write: a Bind that fails, then a Close
 * of its statement before the server has answered the Bind (sluice answers
 * the Close itself at once). The error still names the client's statement.
 * Returns the replies and the error message, as one line. */
static void closed_in_flight(const it_sluice_t *to, const char *user, char *out, size_t cap) {
    int fd = it_raw_login(to, user, "sluice_test");
    it_wire_t w = {.n = 0};
    char err[256] = "";
    it_wire_parse(&w, "s5", "SELECT $1::int AS v");
    it_wire_sync(&w);
    const char *first = it_wire_exchange(fd, &w, 5, NULL, 0);
    snprintf(out, cap, "%s", first);
    it_wire_bind_exec(&w, "s5");
    it_wire_sync(&w);
    it_wire_close(&w, "s5");
    it_wire_sync(&w);
    size_t n = strlen(out);
    snprintf(out + n, cap - n, " %s", it_wire_exchange(fd, &w, 5, err, sizeof err));
    n = strlen(out);
    snprintf(out + n, cap - n, " %s: %s", it_wire_exchange(fd, &w, 5, NULL, 0), err);
    close(fd);
}

/* ---- Named statements changed in a stretch PostgreSQL skips ----
 *
 * After an ErrorResponse in the extended protocol PostgreSQL skips every
 * message up to the next Sync: a Close, a Parse or a DEALLOCATE there
 * changes nothing. Raw batches, each ending in a Sync, run direct and
 * through sluice; the replies (types, and the last value or error message
 * of each batch) must be the same. */

/* What makes the server skip the rest of a batch. */
enum fault { F_BIND, F_EXECUTE, F_PARSE };
static const char *const fault_names[] = {"a Bind of an unknown statement",
                                          "an Execute that fails", "a Parse with a syntax error"};

static void add_fault(it_wire_t *w, enum fault f) {
    if (f == F_BIND) it_wire_bind_exec(w, "nope");
    if (f == F_EXECUTE) {
        it_wire_parse(w, "", "SELECT 1/0");
        it_wire_bind_exec(w, "");
    }
    if (f == F_PARSE) it_wire_parse(w, "bad", "SELEC 1");
}

/* How a run goes. */
typedef struct skip_run {
    enum fault fault;
    bool skipped;   /* the fault comes first in its batch, else last */
    bool pipelined; /* every batch written at once, else each answered in turn */
    bool query;     /* the batch has a DEALLOCATE (else sluice may answer all
                       of it without a server, syntax error included) */
} skip_run_t;

/* The batches of a run: s6 and s9 prepared, then one batch with the fault
 * before (skipped) or after (done) a Close of s6, Parses of new names s7
 * and s8 (s8 with s6's text, which the server may have already), a
 * DEALLOCATE of s9 and a re-Parse of s9 with other text (or a Close and
 * a re-Parse); then each name used. Batch i is added to w; *zs is the
 * ReadyForQuery count it gets. Returns the number of batches. */
static int skip_batches(it_wire_t *w, int *zs, const void *run, int i) {
    const skip_run_t *r = run;
    switch (i) {
    case 0:
        it_wire_parse(w, "s6", "SELECT 6");
        it_wire_parse(w, "s9", "SELECT 9");
        break;
    case 1:
        if (r->skipped) add_fault(w, r->fault);
        it_wire_close(w, "s6");
        it_wire_parse(w, "s7", "SELECT 7");
        it_wire_parse(w, "s8", "SELECT 6");
        if (r->query)
            it_wire_query(w, "DEALLOCATE s9");
        else
            it_wire_close(w, "s9");
        it_wire_parse(w, "s9", "SELECT 99");
        if (!r->skipped) add_fault(w, r->fault);
        break;
    default: {
        static const char *const use[] = {"s6", "s7", "s8", "s9", "bad"};
        it_wire_bind_exec(w, use[i - 2]);
        break;
    }
    }
    it_wire_sync(w);
    /* A DEALLOCATE that runs has a ReadyForQuery of its own. */
    *zs = i == 1 && !r->skipped && r->query ? 2 : 1;
    return 7;
}

/* Adds batch i of a run to w and sets *zs to the ReadyForQuery count it
 * gets; returns the number of batches. */
typedef int (*batches_fn)(it_wire_t *w, int *zs, const void *run, int i);

/* Runs the batches on a raw connection to `to`: each written and answered
 * in turn, or all written at once (pipelined). The replies, batch by batch. */
static void run_batches(const it_sluice_t *to, batches_fn add, const void *run, bool pipelined,
                        char *out, size_t cap) {
    int fd = it_raw_login(to, "postgres", "sluice_test");
    it_wire_t w = {.n = 0};
    int zs[8], n = add(&w, &zs[0], run, 0);
    IT_ASSERT(n <= 8, "too many batches");
    w.n = 0;
    size_t o = 0;
    out[0] = '\0';
    if (pipelined)
        for (int i = 0; i < n; i++) add(&w, &zs[i], run, i);
    for (int i = 0; i < n; i++) {
        if (!pipelined) add(&w, &zs[i], run, i);
        for (int z = 0; z < zs[i]; z++) {
            char value[256] = "";
            const char *types = it_wire_exchange(fd, &w, 10, value, sizeof value);
            int k = snprintf(out + o, cap - o, "%s%s%s%s", o ? " " : "", types, *value ? ":" : "",
                             value);
            IT_ASSERT(k >= 0 && (size_t)k < cap - o, "reply trace too long");
            o += (size_t)k;
        }
    }
    close(fd);
}

static void run_skip(const it_sluice_t *to, const skip_run_t *r, char *out, size_t cap) {
    run_batches(to, skip_batches, r, r->pipelined, out, cap);
}

/* Every fault, skipped and done, with and without the DEALLOCATE, batch
 * by batch and pipelined: direct, through `s` (warm: the server has the
 * statements from the runs before) and through a sluice of its own (cold:
 * no server, no statement known). Returns how many runs differ; *runs: how
 * many ran. */
static int skip_runs(const it_sluice_t *s, int *runs) {
    it_sluice_t direct = {.port = it_cl.primary};
    int differ = 0;
    *runs = 0;
    for (int f = F_BIND; f <= F_PARSE; f++)
        for (int v = 0; v < 6; v++) {
            skip_run_t r = {.fault = (enum fault)f,
                            .skipped = v < 2 || v >= 4,
                            .pipelined = v % 2,
                            .query = v < 4};
            char want[1024], got[1024], cold[1024];
            run_skip(&direct, &r, want, sizeof want);
            run_skip(s, &r, got, sizeof got);
            it_sluice_t fresh;
            it_sluice_start(&fresh,
                            "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 1\n",
                            NULL);
            run_skip(&fresh, &r, cold, sizeof cold);
            IT_ASSERT(it_sluice_stop(&fresh, SIGTERM) == 0, "exit");
            printf("---- %s, %s, %s, %s ----\n%s\n", fault_names[f],
                   r.skipped ? "changes skipped" : "changes done",
                   r.query ? "with a DEALLOCATE" : "Parse and Close only",
                   r.pipelined ? "pipelined" : "batch by batch", want);
            fflush(stdout);
            if (strcmp(want, got) != 0) {
                differ++;
                fprintf(stderr, "warm pool: through sluice %s\n", got);
            }
            if (strcmp(want, cold) != 0) {
                differ++;
                fprintf(stderr, "cold pool: through sluice %s\n", cold);
            }
            *runs += 2;
        }
    return differ;
}

/* ---- DEALLOCATE ALL and DISCARD ALL ----
 *
 * Either drops every prepared statement of the session when it runs, and
 * only then: skipped after an error, or failing (in an aborted
 * transaction; DISCARD ALL in a transaction block or after another
 * statement of the same Query), it drops nothing; once it ran, a rollback
 * does not bring the statements back. Each form runs after s6 is
 * prepared, with a Parse of s7 right behind it in the same batch, alone
 * or after a fault that makes PostgreSQL skip the batch; then s6 and s7
 * are used. */

/* Bind of statement stmt to portal, no parameters, and Execute of it. */
static void bind_exec_portal(it_wire_t *w, const char *portal, const char *stmt) {
    char b[256];
    int n = snprintf(b, sizeof b, "%s", portal) + 1;
    n += snprintf(b + n, sizeof b - (size_t)n - 6, "%s", stmt) + 1;
    memset(b + n, 0, 6); /* no formats, no parameters, no result formats */
    it_wire_msg(w, 'B', b, n + 6);
    n = snprintf(b, sizeof b, "%s", portal) + 1;
    memset(b + n, 0, 4); /* every row */
    it_wire_msg(w, 'E', b, n + 4);
}

typedef struct drop_form {
    const char *name;
    const char *queries[3]; /* Queries in turn, or NULL */
    const char *stmt;       /* else: Parse of this name with DEALLOCATE ALL ... */
    const char *portal;     /* ... bound to this portal and executed */
} drop_form_t;

static const drop_form_t drop_forms[] = {
    {"DEALLOCATE ALL", {"DEALLOCATE ALL"}, NULL, NULL},
    {"DEALLOCATE PREPARE ALL", {"deallocate prepare all;"}, NULL, NULL},
    {"DISCARD ALL", {"DISCARD ALL"}, NULL, NULL},
    {"DEALLOCATE ALL in a Query of two statements", {"SELECT 1; DEALLOCATE ALL"}, NULL, NULL},
    {"DISCARD ALL after another statement of its Query (refused)",
     {"SELECT 1; DISCARD ALL"},
     NULL,
     NULL},
    {"DEALLOCATE ALL as the unnamed statement", {NULL}, "", ""},
    {"DEALLOCATE ALL as a named statement, named portal", {NULL}, "dall", "dp"},
    {"DEALLOCATE ALL in a transaction that fails later",
     {"BEGIN; DEALLOCATE ALL; SELECT 1/0", "ROLLBACK"},
     NULL,
     NULL},
    {"DEALLOCATE ALL in an aborted transaction (refused)",
     {"BEGIN; SELECT 1/0", "DEALLOCATE ALL", "ROLLBACK"},
     NULL,
     NULL},
    {"DISCARD ALL in a transaction block (refused)",
     {"BEGIN", "DISCARD ALL", "ROLLBACK"},
     NULL,
     NULL},
};

typedef struct drop_run {
    const drop_form_t *form;
    bool skipped;   /* a Bind of an unknown statement comes first in the batch */
    bool pipelined; /* every batch written at once, else each answered in turn */
} drop_run_t;

static int drop_batches(it_wire_t *w, int *zs, const void *run, int i) {
    const drop_run_t *r = run;
    const drop_form_t *f = r->form;
    int queries = 0;
    switch (i) {
    case 0:
        it_wire_parse(w, "s6", "SELECT 6");
        break;
    case 1:
        if (r->skipped) it_wire_bind_exec(w, "nope");
        for (; queries < 3 && f->queries[queries]; queries++)
            it_wire_query(w, f->queries[queries]);
        if (f->stmt) {
            it_wire_parse(w, f->stmt, "DEALLOCATE ALL");
            bind_exec_portal(w, f->portal, f->stmt);
        }
        it_wire_parse(w, "s7", "SELECT 7"); /* pipelined right behind it */
        break;
    case 2:
        it_wire_bind_exec(w, "s6");
        break;
    default:
        it_wire_bind_exec(w, "s7");
        break;
    }
    it_wire_sync(w);
    /* Queries PostgreSQL does not skip have a ReadyForQuery each. */
    *zs = 1 + (r->skipped ? 0 : queries);
    return 4;
}

/* Every form, skipped and not, batch by batch and pipelined: direct,
 * through `s` (warm) and through a sluice of its own (cold). Returns how
 * many runs differ; *runs: how many ran. */
static int drop_runs(const it_sluice_t *s, int *runs) {
    it_sluice_t direct = {.port = it_cl.primary};
    int differ = 0;
    *runs = 0;
    for (size_t f = 0; f < sizeof drop_forms / sizeof *drop_forms; f++)
        for (int v = 0; v < 4; v++) {
            drop_run_t r = {.form = &drop_forms[f], .skipped = v < 2, .pipelined = v % 2};
            char want[1024], got[1024], cold[1024];
            run_batches(&direct, drop_batches, &r, r.pipelined, want, sizeof want);
            run_batches(s, drop_batches, &r, r.pipelined, got, sizeof got);
            it_sluice_t fresh;
            it_sluice_start(&fresh,
                            "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 1\n",
                            NULL);
            run_batches(&fresh, drop_batches, &r, r.pipelined, cold, sizeof cold);
            IT_ASSERT(it_sluice_stop(&fresh, SIGTERM) == 0, "exit");
            printf("---- %s, %s, %s ----\n%s\n", r.form->name,
                   r.skipped ? "skipped after an error" : "not skipped",
                   r.pipelined ? "pipelined" : "batch by batch", want);
            fflush(stdout);
            if (strcmp(want, got) != 0) {
                differ++;
                fprintf(stderr, "%s: warm pool: through sluice %s\n", r.form->name, got);
            }
            if (strcmp(want, cold) != 0) {
                differ++;
                fprintf(stderr, "%s: cold pool: through sluice %s\n", r.form->name, cold);
            }
            *runs += 2;
        }
    return differ;
}

/* An error the server sends before the Sync of its batch (the client sent
 * a Flush): the Parse and the Close that follow it up to the Sync are
 * skipped by PostgreSQL, so s7 stays unknown and s6 open. The replies up
 * to the error, then batch by batch. */
static void error_before_sync(const it_sluice_t *to, char *out, size_t cap) {
    int fd = it_raw_login(to, "postgres", "sluice_test");
    it_wire_t w = {.n = 0};
    it_wire_parse(&w, "s6", "SELECT 6");
    it_wire_sync(&w);
    size_t o = (size_t)snprintf(out, cap, "%s", it_wire_exchange(fd, &w, 10, NULL, 0));
    it_wire_bind_exec(&w, "nope");
    it_wire_msg(&w, 'H', "", 0);
    IT_ASSERT(write(fd, w.b, (size_t)w.n) == w.n, "send");
    w.n = 0;
    char body[1024];
    int t = it_raw_read_msg(fd, body, sizeof body);
    o += (size_t)snprintf(out + o, cap - o, " %c", t > 0 ? t : '-');
    it_wire_parse(&w, "s7", "SELECT 7");
    it_wire_close(&w, "s6");
    it_wire_sync(&w);
    o += (size_t)snprintf(out + o, cap - o, " %s", it_wire_exchange(fd, &w, 10, NULL, 0));
    static const char *const use[] = {"s6", "s7"};
    for (int i = 0; i < 2; i++) {
        char value[256] = "";
        it_wire_bind_exec(&w, use[i]);
        it_wire_sync(&w);
        const char *types = it_wire_exchange(fd, &w, 10, value, sizeof value);
        o += (size_t)snprintf(out + o, cap - o, " %s:%s", types, value);
        IT_ASSERT(o < cap, "reply trace too long");
    }
    close(fd);
}

/* ---- sluice's own statement names ----
 *
 * A fresh sluice with one server: the first statement a client prepares
 * is sluice_1 there. Another client's SQL must not reach it (DEALLOCATE
 * would break the first client's statement, EXECUTE run it, PREPARE
 * replace it), whatever the spelling; neither may its Bind or Describe of
 * a name it never prepared. */
static void pooler_namespace(void) {
    it_sluice_t s;
    it_sluice_start(&s, "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 1\n",
                    NULL);
    PGconn *a = it_connect_db(&s, "postgres", "sluice_test", NULL);
    PGresult *r = PQprepare(a, "victim", "SELECT 'victim'::text", 0, NULL);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "prepare: %s", PQerrorMessage(a));
    PQclear(r);
    PQclear(PQexecPrepared(a, "victim", 0, NULL, NULL, NULL, 0)); /* now on the server */
    PGconn *b = it_connect_db(&s, "postgres", "sluice_test", NULL);
    const char *name = it_value(b, "SELECT name FROM pg_prepared_statements "
                                   "WHERE statement = 'SELECT ''victim''::text'");
    IT_ASSERT(!strcmp(name, "sluice_1"), "sluice's name for the statement: %s", name);
    static const char *const attacks[] = {
        "DEALLOCATE sluice_1",
        "/* a comment */ deallocate PREPARE \"sluice_1\"",
        "DEALLOCATE SLUICE_1;",
        "EXECUTE sluice_1",
        "EXPLAIN EXECUTE sluice_1",
        "CREATE TEMP TABLE stolen AS EXECUTE sluice_1",
        "PREPARE sluice_1 AS SELECT 'evil'::text",
        "SELECT 1; DEALLOCATE sluice_1",
    };
    for (size_t i = 0; i < sizeof attacks / sizeof *attacks; i++) {
        const char *code = it_fails(b, attacks[i]);
        IT_ASSERT(!strcmp(code, "42501"), "%s: SQLSTATE %s, want 42501", attacks[i], code);
        r = PQexecParams(b, attacks[i], 0, NULL, NULL, NULL, NULL, 0);
        const char *x = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR && x && !strcmp(x, "42501") &&
                      strstr(PQresultErrorMessage(r), "belong to the connection pooler"),
                  "extended %s: %s %s", attacks[i], PQresStatus(PQresultStatus(r)),
                  PQresultErrorMessage(r));
        PQclear(r);
    }
    it_fails_with(b, "DEALLOCATE sluice_1", "names starting with \"sluice_\"");
    /* Protocol level: a name B never prepared, in sluice's namespace. */
    int fd = it_raw_login(&s, "postgres", "sluice_test");
    it_wire_t w = {.n = 0};
    char msg[256] = "";
    it_wire_bind_exec(&w, "sluice_1");
    it_wire_sync(&w);
    const char *got = it_wire_exchange(fd, &w, 5, msg, sizeof msg);
    IT_ASSERT(!strcmp(got, "EZ") && !strcmp(msg, "prepared statement \"sluice_1\" does not exist"),
              "Bind of sluice_1 never prepared: %s %s", got, msg);
    it_wire_describe(&w, "sluice_1");
    it_wire_sync(&w);
    got = it_wire_exchange(fd, &w, 5, msg, sizeof msg);
    IT_ASSERT(!strcmp(got, "EZ") && strstr(msg, "\"sluice_1\" does not exist"),
              "Describe of sluice_1 never prepared: %s %s", got, msg);
    close(fd);
    /* The statement is sluice's still, and A's. */
    IT_ASSERT(!strcmp(it_value(b, "SELECT count(*) FROM pg_prepared_statements WHERE name = "
                                  "'sluice_1' AND statement = 'SELECT ''victim''::text'"),
                      "1"),
              "sluice_1 is still the victim's text");
    r = PQexecPrepared(a, "victim", 0, NULL, NULL, NULL, 0);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK && !strcmp(PQgetvalue(r, 0, 0), "victim"),
              "the victim's statement runs: %s", PQerrorMessage(a));
    PQclear(r);
    printf("---- sluice's names: %zu SQL spellings refused (simple and extended), Bind and "
           "Describe answered as PostgreSQL does ----\n",
           sizeof attacks / sizeof *attacks);
    PQfinish(a), PQfinish(b);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* A statement dropped behind sluice's back (by SQL in a DO block, which
 * sluice cannot read) is prepared again at its next use: the client sees
 * "does not exist" once, not until the server is reset. */
static void self_heal(void) {
    it_sluice_t s;
    it_sluice_start(&s, "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 1\n",
                    NULL);
    PGconn *c = it_connect_db(&s, "postgres", "sluice_test", NULL);
    PGresult *r = PQprepare(c, "h", "SELECT 'healed'::text", 0, NULL);
    PQclear(r);
    it_exec(c, "BEGIN");
    it_exec(c, "SAVEPOINT sp");
    PQclear(PQexecPrepared(c, "h", 0, NULL, NULL, NULL, 0)); /* now on the server */
    it_exec(c, "DO $$BEGIN EXECUTE 'DEALLOCATE ' || (SELECT name FROM pg_prepared_statements "
               "WHERE statement = 'SELECT ''healed''::text'); END$$");
    int errors = 0;
    const char *last = "";
    for (int i = 0; i < 3; i++) {
        r = PQexecPrepared(c, "h", 0, NULL, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            errors++;
            const char *x = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            IT_ASSERT(x && !strcmp(x, "26000") &&
                          strstr(PQresultErrorMessage(r), "prepared statement \"h\""),
                      "the error names the client's statement: %s", PQresultErrorMessage(r));
            PQclear(r);
            it_exec(c, "ROLLBACK TO SAVEPOINT sp");
            continue;
        }
        last = PQgetvalue(r, 0, 0);
        IT_ASSERT(!strcmp(last, "healed"), "runs its text: %s", last);
        PQclear(r);
    }
    it_exec(c, "COMMIT");
    printf("---- a statement the server lost: %d error(s) in 3 uses ----\n", errors);
    IT_ASSERT(errors <= 1, "the client saw 'does not exist' %d times", errors);
    IT_ASSERT(it_log_count(&s, "server lost prepared statement") >= 1, "logged");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

/* A's unnamed statement stays on the server after A's transaction: B, on
 * the same single server, must not run it (nor Describe it) without
 * parsing its own. B's own unnamed statement works as direct: in one batch,
 * in a batch after, pipelined, in its next transaction (the same server
 * comes back), and not after a Parse an error skipped. */
static void unnamed_leak(void) {
    it_sluice_t s;
    it_sluice_start(&s, "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 1\n",
                    NULL);
    it_sluice_t direct = {.port = it_cl.primary};
    int a = it_raw_login(&s, "postgres", "sluice_test");
    it_wire_t w = {.n = 0};
    char v[256] = "";
    it_wire_parse(&w, "", "SELECT 'A secret'::text");
    it_wire_sync(&w);
    IT_ASSERT(!strcmp(it_wire_exchange(a, &w, 5, NULL, 0), "1Z"), "A parses");
    static const char *const cases[] = {"Bind alone", "Describe alone", "Parse then Bind",
                                        "Parse, Sync, Bind", "Parse skipped, Sync, Bind",
                                        "Execute of the unnamed portal",
                                        "Parse, Sync; Bind in the next transaction"};
    for (int k = 0; k < 7; k++) {
        char want[512], got[512];
        for (int via = 0; via < 2; via++) {
            int fd = it_raw_login(via ? &s : &direct, "postgres", "sluice_test");
            char *out = via ? got : want;
            if (k == 2 || k == 3 || k == 6) it_wire_parse(&w, "", "SELECT 'B own'::text");
            if (k == 4) {
                it_wire_bind_exec(&w, "nope"); /* fails: the Parse after it is skipped */
                it_wire_parse(&w, "", "SELECT 'B skipped'::text");
            }
            if (k == 3 || k == 4) it_wire_sync(&w);
            out[0] = '\0';
            if (k == 6) { /* answered first: the server goes back to the pool */
                it_wire_sync(&w);
                snprintf(out, 512, "%s:", it_wire_exchange(fd, &w, 5, NULL, 0));
            }
            if (k == 1)
                it_wire_describe(&w, "");
            else if (k == 5)
                it_wire_msg(&w, 'E', "\0\0\0\0", 5);
            else
                it_wire_bind_exec(&w, "");
            it_wire_sync(&w);
            /* Everything in one write: the last batch's replies are read. */
            int batches = k == 3 || k == 4 ? 2 : 1;
            for (int i = 0; i < batches; i++) {
                const char *types = it_wire_exchange(fd, &w, 5, v, sizeof v);
                size_t n = strlen(out);
                snprintf(out + n, 512 - n, "%s%s:%s", n ? " " : "", types, v);
                v[0] = '\0';
            }
            close(fd);
        }
        printf("---- unnamed, %s: %s ----\n", cases[k], got);
        IT_ASSERT(!strstr(got, "A secret"), "%s: B sees A's unnamed statement: %s", cases[k], got);
        IT_ASSERT(!strcmp(want, got), "%s: through sluice %s, direct %s", cases[k], got, want);
    }
    close(a);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

static void fresh_table(PGconn *d) {
    it_exec(d, "SET client_min_messages = warning; DROP TABLE IF EXISTS stn_t; "
               "CREATE TABLE stn_t (a int)");
}

int main(void) {
    it_init("it_stmtnames");
    it_sluice_t s;
    /* One server: a statement is prepared once there, as it is direct. */
    it_sluice_start(&s, "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 1\n",
                    NULL);
    PGconn *d = it_direct();
    int differ = 0;
    for (size_t i = 0; i < sizeof sequences / sizeof *sequences; i++) {
        trace_t direct = {.len = 0}, pooled = {.len = 0};
        fresh_table(d);
        PGconn *c = it_direct();
        sequences[i].run(c, &direct);
        PQfinish(c);
        fresh_table(d);
        c = it_connect_db(&s, "postgres", "sluice_test", NULL);
        IT_ASSERT(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
        sequences[i].run(c, &pooled);
        PQfinish(c);
        printf("---- %s ----\n%s", sequences[i].name, pooled.text);
        if (strcmp(direct.text, pooled.text) != 0) {
            differ++;
            fprintf(stderr, "%s: replies through sluice differ from direct.\ndirect:\n%s\n",
                    sequences[i].name, direct.text);
        }
    }
    /* The direct server takes postgres over TCP without a password. */
    it_sluice_t direct = {.port = it_cl.primary};
    char want[512], got[512];
    closed_in_flight(&direct, "postgres", want, sizeof want);
    closed_in_flight(&s, "postgres", got, sizeof got);
    printf("---- a statement closed while its Bind's error is on the way ----\n%s\n", got);
    if (strcmp(want, got) != 0) {
        differ++;
        fprintf(stderr, "closed in flight: through sluice %s, direct %s\n", got, want);
    }
    char cold[512];
    it_sluice_t fresh;
    error_before_sync(&direct, want, sizeof want);
    error_before_sync(&s, got, sizeof got);
    it_sluice_start(&fresh, "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 1\n",
                    NULL);
    error_before_sync(&fresh, cold, sizeof cold);
    IT_ASSERT(it_sluice_stop(&fresh, SIGTERM) == 0, "exit");
    printf("---- an error before the Sync of its batch ----\n%s\n", want);
    if (strcmp(want, got) != 0 || strcmp(want, cold) != 0) {
        differ++;
        fprintf(stderr, "error before the Sync: through sluice %s (warm), %s (cold)\n", got,
                cold);
    }
    pooler_namespace();
    self_heal();
    unnamed_leak();
    int runs, skips = skip_runs(&s, &runs);
    int drop_count, drops = drop_runs(&s, &drop_count);
    IT_ASSERT(differ == 0, "%d of %zu sequences differ", differ,
              sizeof sequences / sizeof *sequences + 2);
    IT_ASSERT(skips == 0, "%d of %d runs with changes in a skipped stretch differ", skips, runs);
    IT_ASSERT(drops == 0, "%d of %d runs with DEALLOCATE ALL or DISCARD ALL differ", drops,
              drop_count);
    it_exec(d, "DROP TABLE stn_t");
    PQfinish(d);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    return it_done();
}
