/* Global caps and servers moving between loops (ledger.h), white-box: two
 * sl_loop_t on two threads share one ledger and the same pool config
 * against the fixture's primary, as two workers would.
 *  1. pool_size = 1: loop A holds the only server (a SET application_name
 *     and a statement prepared under its shared-id name), loop B asks for
 *     one; A gives it back and B gets THE SAME backend (same pid), the
 *     statement runs on it from B's cache, and its reported parameters
 *     are there; the primary never has a second backend of that user.
 *  2. The same pool, both loops asking over and over at once: never more
 *     than one backend, on the primary or in the ledger, and the server
 *     goes back and forth.
 *  3. pool_size = 2 + reserve_pool_size = 1, ten requesters on each loop:
 *     never more than 3 backends (the reserve is taken by compare-and-swap
 *     too), the cap is reached, and every request is served.
 *  4. max_db_client_connections = 3 counts the logins of both loops.
 *  5. max_client_conn = 2 counts the clients of both loops.
 *  6. A permanent login failure loop A met (a role that may not log in)
 *     is recorded for both loops; once the backend is known to answer
 *     again (sl_pool_backend_up, as health checks call it on every loop)
 *     and the cause is fixed, loop B logs in at once instead of learning
 *     the old failure again for the rest of server_login_retry. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"
#include "sluice/ledger.h"
#include "sluice/log.h"
#include "sluice/pool.h"
#include "sluice/server.h"
#include "sluice/session.h"

#define ROLE1 "sl_ledger1"
#define ROLE2 "sl_ledger2"
#define ROLE3 "sl_ledger3"

typedef struct tloop {
    sl_loop_t l;
    sl_config_t *cfg; /* owned */
    pthread_t th;
    uv_async_t keep; /* keeps the loop running until the test stops it */
} tloop_t;

static tloop_t loops[2];
static sl_ledger_t *ledger;

/* ---- running code on a loop's thread (through its inbox) ---- */

typedef struct job {
    sl_loop_msg_t msg;
    void (*fn)(tloop_t *t, void *arg);
    tloop_t *t;
    void *arg;
} job_t;

static void job_run(sl_loop_t *l, sl_loop_msg_t *m, bool live) {
    (void)l;
    job_t *j = sl_container_of(m, job_t, msg);
    if (live) j->fn(j->t, j->arg);
    free(j);
}

static void on_loop(tloop_t *t, void (*fn)(tloop_t *, void *), void *arg) {
    job_t *j = calloc(1, sizeof *j);
    j->msg.run = job_run;
    j->fn = fn, j->t = t, j->arg = arg;
    IT_ASSERT(sl_loop_post(&t->l, &j->msg), "loop %d refused a message", t->l.worker_index);
}

static void *loop_main(void *arg) {
    tloop_t *t = arg;
    uv_run(t->l.loop, UV_RUN_DEFAULT);
    return NULL;
}

static void stop_fn(tloop_t *t, void *arg) {
    (void)arg;
    sl_pool_close_all(&t->l);
    sl_conn_kicks_close(&t->l.kicks);
    uv_close((uv_handle_t *)&t->keep, NULL);
    sl_loop_close(&t->l);
}

static void keep_cb(uv_async_t *h) {
    (void)h;
}

static bool wait_for(atomic_int *v, int want, double secs) {
    double end = it_now() + secs;
    while (atomic_load(v) < want && it_now() < end)
        usleep(1000);
    return atomic_load(v) >= want;
}

static int backends(PGconn *d, const char *user) {
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE usename = '%s'", user);
    return atoi(it_value(d, sql));
}

/* The first column of the first row of the server's last internal query. */
static void row_value(const sl_server_t *s, char *out, size_t cap) {
    out[0] = '\0';
    if (!s->row || s->row_len < 6) return;
    uint32_t n = sl_be32(s->row + 2);
    if (n == 0xffffffffu || 6 + n > s->row_len) return;
    snprintf(out, cap, "%.*s", (int)n, (const char *)s->row + 6);
}

/* ---- 1. one server handed from A to B ---- */

static const uint8_t stmt_body[] = "SELECT 40 + 2\0\0"; /* text, NUL, no parameter types */
#define STMT_LEN ((uint32_t)sizeof stmt_body - 1)

static struct {
    sl_waiter_t wa, wb;
    sl_server_t *sa;  /* A's server while A holds it */
    uint32_t stmt_id; /* the statement's id in A (shared) */
    int pid_a, pid_b;
    atomic_int held;      /* A set up its server */
    atomic_int requested; /* B queued its request */
    atomic_int done;      /* B checked the server */
    char app[64], answer[64], shown[64], failure[200];
    bool on_b, cached;
    sl_ledger_pool_t *lp;
} h;

static void a_prepared(sl_server_t *s, const char *err, const char *code) {
    (void)code;
    IT_ASSERT(!err, "PREPARE on A: %s", err);
    atomic_store(&h.held, 1);
    (void)s;
}

static void a_set(sl_server_t *s, const char *err, const char *code) {
    (void)code;
    IT_ASSERT(!err, "SET on A: %s", err);
    /* The way prepare.c keeps a client's statement: interned, prepared
     * under its sluice_<id> name, in the server's cache. */
    sl_stmt_t *st = sl_stmt_intern(&s->w->stmts, stmt_body, STMT_LEN);
    IT_ASSERT(st && sl_stmt_cache_add(&s->stmts, st) == SL_OK, "stmt cache");
    h.stmt_id = st->id;
    char name[32], sql[96];
    sl_stmt_name(st, name, sizeof name);
    sl_stmt_unref(&s->w->stmts, st);
    snprintf(sql, sizeof sql, "PREPARE %s AS SELECT 40 + 2", name);
    IT_ASSERT(sl_server_query(s, sql, a_prepared) == SL_OK, "query");
}

static void a_got(sl_waiter_t *wt, sl_server_t *s, const char *err, const char *code) {
    (void)wt, (void)code;
    IT_ASSERT(s, "A got no server: %s", err);
    h.sa = s;
    h.pid_a = PQbackendPID(s->conn);
    IT_ASSERT(sl_server_query(s, "SET application_name = 'ledger_moved'", a_set) == SL_OK, "q");
}

static void a_hold(tloop_t *t, void *arg) {
    (void)arg;
    char err[200];
    sl_pool_t *p = sl_pool_get(&t->l, "ledgerdb", ROLE1, err, sizeof err);
    IT_ASSERT(p, "pool on A: %s", err);
    h.lp = p->lp; /* NULL: each loop counts alone (what this test catches) */
    h.wa.cb = a_got;
    sl_pool_request(p, &h.wa);
}

static void a_release(tloop_t *t, void *arg) {
    (void)t, (void)arg;
    sl_pool_release(h.sa, true);
}

static void b_shown(sl_server_t *s, const char *err, const char *code) {
    (void)code;
    IT_ASSERT(!err, "SHOW on B: %s", err);
    row_value(s, h.shown, sizeof h.shown);
    sl_pool_release(s, true);
    atomic_store(&h.done, 1);
}

static void b_executed(sl_server_t *s, const char *err, const char *code) {
    (void)code;
    snprintf(h.failure, sizeof h.failure, "%s", err ? err : "");
    row_value(s, h.answer, sizeof h.answer);
    IT_ASSERT(sl_server_query(s, "SHOW application_name", b_shown) == SL_OK, "q");
}

static void b_got(sl_waiter_t *wt, sl_server_t *s, const char *err, const char *code) {
    (void)wt, (void)code;
    IT_ASSERT(s, "B got no server: %s", err);
    h.pid_b = PQbackendPID(s->conn);
    h.on_b = s->w == &loops[1].l;
    const char *app = sl_params_get(&s->reported, "application_name");
    snprintf(h.app, sizeof h.app, "%s", app ? app : "(none)");
    /* B's registry knows the statement under the same id, and the cache
     * that came with the server has it: B runs it without a Parse. */
    sl_stmt_t *st = sl_stmt_intern(&s->w->stmts, stmt_body, STMT_LEN);
    h.cached = st && st->id == h.stmt_id && sl_stmt_cache_use(&s->stmts, st);
    char name[32], sql[64];
    sl_stmt_name(st, name, sizeof name);
    sl_stmt_unref(&s->w->stmts, st);
    snprintf(sql, sizeof sql, "EXECUTE %s", name);
    IT_ASSERT(sl_server_query(s, sql, b_executed) == SL_OK, "q");
}

static void b_want(tloop_t *t, void *arg) {
    (void)arg;
    char err[200];
    sl_pool_t *p = sl_pool_get(&t->l, "ledgerdb", ROLE1, err, sizeof err);
    IT_ASSERT(p, "pool on B: %s", err);
    h.wb.cb = b_got;
    sl_pool_request(p, &h.wb);
    atomic_store(&h.requested, 1);
}

static void handover(PGconn *d) {
    on_loop(&loops[0], a_hold, NULL);
    IT_ASSERT(wait_for(&h.held, 1, 10), "A set up its server");
    on_loop(&loops[1], b_want, NULL);
    IT_ASSERT(wait_for(&h.requested, 1, 5), "B asked");
    /* B waits: the cap is global, so it opens nothing. A second login
     * would show within a few hundred ms on this machine; B's waiter is
     * published in the ledger by then. */
    double end = it_now() + 0.5;
    while (it_now() < end) {
        IT_ASSERT(backends(d, ROLE1) == 1 && !atomic_load(&h.done),
                  "one backend while B waits (%d%s)", backends(d, ROLE1),
                  atomic_load(&h.done) ? ", and B was served" : "");
        usleep(20000);
    }
    IT_ASSERT(h.lp && atomic_load(&h.lp->slot[1].waiting) == 1, "B's waiter is published");
    IT_ASSERT(sl_ledger_read(&h.lp->servers) == 1, "the ledger counts one server");
    on_loop(&loops[0], a_release, NULL);
    IT_ASSERT(wait_for(&h.done, 1, 10), "B got the server and checked it");
    IT_ASSERT(h.on_b, "the server runs on B's loop");
    IT_ASSERT(h.pid_a == h.pid_b, "the same backend moved (pid %d on A, %d on B)", h.pid_a,
              h.pid_b);
    IT_ASSERT(h.cached, "the prepared statement came with it in its cache");
    IT_ASSERT(!h.failure[0] && !strcmp(h.answer, "42"),
              "the statement prepared on A runs on B: %s%s", h.answer, h.failure);
    IT_ASSERT(!strcmp(h.app, "ledger_moved"), "reported parameters kept: %s", h.app);
    IT_ASSERT(!strcmp(h.shown, "ledger_moved"), "the session's application_name is there: %s",
              h.shown);
    IT_ASSERT(backends(d, ROLE1) == 1, "still one backend");
    printf("handover: pid %d moved from loop 0 to loop 1 with statement sluice_%u\n", h.pid_b,
           h.stmt_id);
}

/* ---- 2 and 3: requesters on both loops at once ---- */

typedef struct req {
    sl_waiter_t wt;
    tloop_t *t;
    sl_pool_t *pool;
    const char *sql;
    int rounds; /* requests still to make */
    int served;
} req_t;

static atomic_int reqs_done, ledger_max, stray_pid;
static int only_pid; /* phase 2: the one backend's pid */

static void req_next(req_t *r);

static void req_done(sl_server_t *s, const char *err, const char *code);

/* Which requester a server runs a query for, per loop (only that loop's
 * thread touches its table). */
typedef struct running {
    sl_server_t *s;
    req_t *r;
} running_t;
static running_t running[2][16];

static void running_set(int loop, sl_server_t *s, req_t *r) {
    for (int i = 0; i < 16; i++)
        if (!running[loop][i].s) {
            running[loop][i] = (running_t){s, r};
            return;
        }
    IT_ASSERT(0, "more servers in use on a loop than the test expects");
}

static req_t *running_take(int loop, sl_server_t *s) {
    for (int i = 0; i < 16; i++)
        if (running[loop][i].s == s) {
            req_t *r = running[loop][i].r;
            running[loop][i].s = NULL;
            return r;
        }
    return NULL;
}

static void req_got(sl_waiter_t *wt, sl_server_t *s, const char *err, const char *code) {
    (void)code;
    req_t *r = sl_container_of(wt, req_t, wt);
    IT_ASSERT(s, "request not served: %s", err);
    int n = r->pool->lp ? sl_ledger_read(&r->pool->lp->servers) : 0, m = atomic_load(&ledger_max);
    while (n > m && !atomic_compare_exchange_weak(&ledger_max, &m, n))
        ;
    if (only_pid && PQbackendPID(s->conn) != only_pid) atomic_store(&stray_pid, 1);
    r->served++;
    running_set(r->t->l.worker_index, s, r);
    IT_ASSERT(sl_server_query(s, r->sql, req_done) == SL_OK, "query");
}

static void req_done(sl_server_t *s, const char *err, const char *code) {
    (void)code;
    IT_ASSERT(!err, "query: %s", err);
    req_t *r = running_take(s->w->worker_index, s);
    IT_ASSERT(r, "a query finished for no requester");
    sl_pool_release(s, true);
    req_next(r);
}

static void req_next(req_t *r) {
    if (r->rounds-- == 0) {
        atomic_fetch_add(&reqs_done, 1);
        return;
    }
    sl_pool_request(r->pool, &r->wt);
}

typedef struct burst {
    const char *db, *user, *sql;
    int nreq, rounds;
    req_t *reqs; /* nreq, owned by the test */
} burst_t;

static void burst_start(tloop_t *t, void *arg) {
    burst_t *b = arg;
    char err[200];
    sl_pool_t *p = sl_pool_get(&t->l, b->db, b->user, err, sizeof err);
    IT_ASSERT(p, "pool: %s", err);
    for (int i = 0; i < b->nreq; i++) {
        req_t *r = &b->reqs[i];
        r->t = t, r->pool = p, r->sql = b->sql, r->rounds = b->rounds;
        r->wt.cb = req_got;
        req_next(r);
    }
}

static uint64_t moved(const char *db, const char *user) {
    uint64_t n = 0;
    for (int i = 0; i < 2; i++) {
        char err[200];
        /* Read after the loops went quiet: no other thread touches the pools. */
        sl_pool_t *p = sl_pool_get(&loops[i].l, db, user, err, sizeof err);
        if (p) n += p->lp_moved_in;
    }
    return n;
}

/* Both loops run nreq requesters of rounds requests each; the primary's
 * backends of user are sampled all along. Returns the most seen. */
static int race(PGconn *d, const char *db, const char *user, const char *sql, int nreq,
                int rounds) {
    atomic_store(&reqs_done, 0);
    atomic_store(&ledger_max, 0);
    burst_t b[2];
    for (int i = 0; i < 2; i++) {
        b[i] = (burst_t){db, user, sql, nreq, rounds, calloc((size_t)nreq, sizeof(req_t))};
        on_loop(&loops[i], burst_start, &b[i]);
    }
    int most = 0;
    double end = it_now() + 40;
    while (atomic_load(&reqs_done) < 2 * nreq && it_now() < end) {
        int n = backends(d, user);
        if (n > most) most = n;
        usleep(5000);
    }
    IT_ASSERT(atomic_load(&reqs_done) == 2 * nreq, "all requesters finished (%d of %d)",
              atomic_load(&reqs_done), 2 * nreq);
    int served = 0;
    for (int i = 0; i < 2; i++) {
        for (int k = 0; k < nreq; k++)
            served += b[i].reqs[k].served;
        free(b[i].reqs);
    }
    IT_ASSERT(served == 2 * nreq * rounds, "every request served (%d of %d)", served,
              2 * nreq * rounds);
    return most;
}

/* ---- 4: client caps ---- */

typedef struct admits {
    int n;  /* admits (n > 0) or leaves (n < 0) to make */
    int ok; /* admits that passed */
    char refusal[200];
    atomic_int done;
} admits_t;

static void admits_fn(tloop_t *t, void *arg) {
    admits_t *a = arg;
    char err[200], detail[200];
    sl_pool_t *p = sl_pool_get(&t->l, "ledgerdb3", ROLE2, err, sizeof err);
    IT_ASSERT(p, "pool: %s", err);
    for (int i = 0; i < a->n; i++) {
        const char *no = sl_pool_admit(p, detail, sizeof detail);
        if (no)
            snprintf(a->refusal, sizeof a->refusal, "%s", no);
        else
            a->ok++;
    }
    for (int i = 0; i < -a->n; i++)
        sl_pool_leave(p);
    atomic_store(&a->done, 1);
}

/* Runs n admits (or -n leaves) on loop i; returns how many admits passed. */
static int admit_on(int i, int n, char *refusal, size_t cap) {
    admits_t a = {.n = n};
    on_loop(&loops[i], admits_fn, &a);
    IT_ASSERT(wait_for(&a.done, 1, 5), "loop %d answered", i);
    if (refusal) snprintf(refusal, cap, "%s", a.refusal);
    return a.ok;
}

static void client_caps(void) {
    char why[200];
    IT_ASSERT(admit_on(0, 2, NULL, 0) == 2, "two logins on loop 0");
    IT_ASSERT(admit_on(1, 2, why, sizeof why) == 1, "one more on loop 1, then the cap");
    IT_ASSERT(strstr(why, "max_db_client_connections"), "refused by the database's cap: %s", why);
    admit_on(0, -1, NULL, 0);
    IT_ASSERT(admit_on(1, 1, NULL, 0) == 1, "a login left on loop 0 makes room on loop 1");
    admit_on(0, -1, NULL, 0);
    admit_on(1, -2, NULL, 0);
    IT_ASSERT(admit_on(1, 3, NULL, 0) == 3, "all of them gone: three fit again");
    admit_on(1, -3, NULL, 0);
    printf("max_db_client_connections = 3 held over both loops\n");
}

/* ---- 5: max_client_conn ---- */

static void accept_fn(tloop_t *t, void *arg) {
    sl_session_accept(&t->l, (int)(intptr_t)arg, "unix");
}

static void sync_fn(tloop_t *t, void *arg) {
    (void)t;
    atomic_store((atomic_int *)arg, 1);
}

/* Waits until loop i ran everything posted to it before. */
static void sync_loop(int i) {
    atomic_int done = 0;
    on_loop(&loops[i], sync_fn, &done);
    IT_ASSERT(wait_for(&done, 1, 5), "loop %d answered", i);
}

/* A client of loop i (over a socket pair): the test's end. */
static int client_on(int i) {
    int sv[2];
    IT_ASSERT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
    struct timeval tv = {.tv_sec = 5};
    setsockopt(sv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    on_loop(&loops[i], accept_fn, (void *)(intptr_t)sv[0]);
    return sv[1];
}

/* Sends a StartupMessage and returns what answers it: the SQLSTATE of an
 * ErrorResponse, else the message type ("R": the login goes on). */
static const char *startup_reply(int fd) {
    static char code[6];
    uint8_t pkt[128];
    const char params[] = "user\0" ROLE1 "\0database\0ledgerdb\0";
    uint32_t n = 8 + (uint32_t)sizeof params; /* params' own NUL ends the list */
    sl_put_be32(pkt, n);
    sl_put_be32(pkt + 4, 196608);
    memcpy(pkt + 8, params, sizeof params);
    IT_ASSERT(write(fd, pkt, n) == (ssize_t)n, "startup written");
    char body[512] = "";
    int type = it_raw_read_msg(fd, body, sizeof body - 1);
    snprintf(code, sizeof code, "%c", type > 0 ? type : '-');
    if (type == 'E')
        for (char *f = body; *f && f < body + sizeof body - 1; f += strlen(f) + 1)
            if (f[0] == 'C') snprintf(code, sizeof code, "%s", f + 1);
    return code;
}

static void client_cap(void) {
    int a1 = client_on(0), a2 = client_on(0);
    sync_loop(0);
    int b = client_on(1);
    const char *code = startup_reply(b);
    IT_ASSERT(!strcmp(code, "53300"),
              "a third client on loop 1 is over max_client_conn = 2 of "
              "both loops: %s",
              code);
    close(b);
    close(a1); /* loop 0 sees it go, and the count of both loops drops */
    double end = it_now() + 5;
    do {
        b = client_on(1);
        code = startup_reply(b);
        close(b);
    } while (!strcmp(code, "53300") && it_now() < end && usleep(20000) == 0);
    IT_ASSERT(!strcmp(code, "R"), "with a client gone from loop 0, loop 1 takes one: %s", code);
    close(a2);
    printf("max_client_conn = 2 held over both loops\n");
}

/* ---- 6: a recorded failure forgotten when the backend is up again ---- */

static struct {
    sl_waiter_t wt;
    char error[200];
    int got; /* 1: a server, -1: an error */
    atomic_int done;
} f6;

static void f6_got(sl_waiter_t *wt, sl_server_t *s, const char *err, const char *code) {
    (void)wt, (void)code;
    snprintf(f6.error, sizeof f6.error, "%s", err ? err : "");
    f6.got = s ? 1 : -1;
    if (s) sl_pool_release(s, true);
    atomic_store(&f6.done, 1);
}

static void f6_request(tloop_t *t, void *arg) {
    (void)arg;
    char err[200];
    sl_pool_t *p = sl_pool_get(&t->l, "ledgerdb", ROLE3, err, sizeof err);
    IT_ASSERT(p, "pool: %s", err);
    f6.wt.cb = f6_got;
    sl_pool_request(p, &f6.wt);
}

static void f6_backend_up(tloop_t *t, void *arg) {
    (void)arg;
    sl_pool_backend_up(&t->l, "ledgerdb", 0);
    atomic_store(&f6.done, 1);
}

/* Runs fn on loop i and waits for it to set f6.done. */
static void f6_on(int i, void (*fn)(tloop_t *, void *)) {
    atomic_store(&f6.done, 0);
    on_loop(&loops[i], fn, NULL);
    IT_ASSERT(wait_for(&f6.done, 1, 10), "loop %d answered", i);
}

static void failure_forgotten(PGconn *d) {
    it_exec(d, "ALTER ROLE " ROLE3 " NOLOGIN");
    f6_on(0, f6_request);
    IT_ASSERT(f6.got == -1 && strstr(f6.error, "not permitted to log in"),
              "loop 0: a role that may not log in fails at once: %s", f6.error);
    it_exec(d, "ALTER ROLE " ROLE3 " LOGIN");
    for (int i = 0; i < 2; i++)
        f6_on(i, f6_backend_up);
    f6_on(1, f6_request);
    printf("after the backend is up again, loop 1: %s\n", f6.got == 1 ? "served" : f6.error);
    IT_ASSERT(f6.got == 1,
              "loop 1 logs in once the backend is up again, not failing with loop 0's recorded "
              "failure: %s",
              f6.error);
}

static void setup_loop(tloop_t *t, int index, const char *ini) {
    char err[512];
    t->cfg = sl_config_load_string("ledger.ini", ini, err, sizeof err);
    IT_ASSERT(t->cfg, "config: %s", err);
    IT_ASSERT(sl_loop_init(&t->l, t->cfg, err, sizeof err) == SL_OK, "loop: %s", err);
    sl_conn_kicks_init(&t->l.kicks, t->l.loop);
    t->l.worker_index = index;
    IT_ASSERT(sl_ledger_attach(ledger, &t->l) == SL_OK, "attach");
    uv_async_init(t->l.loop, &t->keep, keep_cb);
}

int main(void) {
    it_init("ledger");
    if (getenv("LEDGER_DEBUG"))
        sl_log_set_level(SL_LOG_DEBUG);
    else
        sl_log_set_level(SL_LOG_WARN);
    PGconn *d = it_direct();
    it_exec(d, "DO $$BEGIN CREATE ROLE " ROLE1 " LOGIN; EXCEPTION WHEN duplicate_object THEN "
               "NULL; END$$");
    it_exec(d, "DO $$BEGIN CREATE ROLE " ROLE2 " LOGIN; EXCEPTION WHEN duplicate_object THEN "
               "NULL; END$$");
    it_exec(d, "DO $$BEGIN CREATE ROLE " ROLE3 " NOLOGIN; EXCEPTION WHEN duplicate_object THEN "
               "NULL; END$$");
    IT_ASSERT(backends(d, ROLE1) == 0 && backends(d, ROLE2) == 0, "no backend of ours yet");

    char ini[1024];
    snprintf(ini, sizeof ini,
             "[databases]\n"
             "ledgerdb = host=%s port=%d dbname=postgres pool_size=1\n"
             "ledgerdb3 = host=%s port=%d dbname=postgres pool_size=2 reserve_pool_size=1 "
             "max_db_client_connections=3\n"
             "[sluice]\n"
             "pool_mode = transaction\n"
             "reserve_pool_timeout = 0.01\n"
             "max_client_conn = 2\n"
             "auth_type = trust\n",
             it_cl.sockdir, it_cl.primary, it_cl.sockdir, it_cl.primary);
    ledger = sl_ledger_new(2);
    IT_ASSERT(ledger, "ledger");
    for (int i = 0; i < 2; i++)
        setup_loop(&loops[i], i, ini);
    for (int i = 0; i < 2; i++)
        pthread_create(&loops[i].th, NULL, loop_main, &loops[i]);

    handover(d);

    /* 2: the one server goes back and forth while both loops ask. */
    only_pid = h.pid_b;
    uint64_t before = moved("ledgerdb", ROLE1);
    int most = race(d, "ledgerdb", ROLE1, "SELECT 1", 2, 1500);
    int in_ledger = atomic_load(&ledger_max);
    uint64_t moves = moved("ledgerdb", ROLE1) - before;
    printf("race, pool_size 1: %d backends at most on the primary, %d in the ledger, %llu "
           "moves\n",
           most, in_ledger, (unsigned long long)moves);
    IT_ASSERT(most == 1 && in_ledger == 1,
              "pool_size = 1 over two loops: 1 backend (saw %d, "
              "ledger %d)",
              most, in_ledger);
    IT_ASSERT(!atomic_load(&stray_pid), "every request got the one backend");
    IT_ASSERT(moves >= 2, "the server moved between the loops (%llu)", (unsigned long long)moves);
    only_pid = 0;

    /* 3: pool_size = 2 + reserve 1, ten requesters per loop. */
    most = race(d, "ledgerdb3", ROLE2, "SELECT pg_sleep(0.02)", 10, 5);
    in_ledger = atomic_load(&ledger_max);
    printf("pool_size 2 + reserve 1, 2 x 10 requesters: %d backends at most, %d in the ledger\n",
           most, in_ledger);
    IT_ASSERT(most <= 3 && in_ledger <= 3,
              "pool_size 2 + reserve 1 over two loops: at most 3 backends "
              "(saw %d, ledger %d)",
              most, in_ledger);
    IT_ASSERT(in_ledger == 3, "the cap was reached (%d)", in_ledger);

    client_caps();
    client_cap();
    failure_forgotten(d);

    for (int i = 0; i < 2; i++)
        on_loop(&loops[i], stop_fn, NULL);
    for (int i = 0; i < 2; i++)
        pthread_join(loops[i].th, NULL);
    for (int i = 0; i < 2; i++) {
        IT_ASSERT(uv_loop_close(loops[i].l.loop) == 0, "loop %d closed all its handles", i);
        sl_loop_destroy(&loops[i].l);
        sl_config_free(loops[i].cfg);
    }
    sl_ledger_free(ledger);
    double end = it_now() + 5;
    while ((backends(d, ROLE1) || backends(d, ROLE2) || backends(d, ROLE3)) && it_now() < end)
        usleep(20000);
    IT_ASSERT(!backends(d, ROLE1) && !backends(d, ROLE2) && !backends(d, ROLE3),
              "every server closed at the end");
    PQfinish(d);
    return it_done();
}
