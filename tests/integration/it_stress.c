/* Isolation under load (issue 11): 50 client threads share one pool of 2
 * servers in transaction pooling for SLUICE_STRESS_SECONDS (default 30).
 * Each thread loops: connect with its own startup parameters, make session
 * state of every kind sluice carries or pins (SET, set_config, a DO block
 * that sets a setting, protocol-level named statements whose names every
 * thread shares but whose texts return the thread's id, a temp table, SQL
 * PREPARE, LISTEN, a session advisory lock, a WITH HOLD cursor), commit and
 * roll back transactions, and after every step read back everything a
 * session can see: each value must be the thread's own, and nothing of
 * another thread may show. At random points a thread vanishes (FIN or RST
 * without Terminate, mid-transaction, with a query in flight, or a
 * Terminate inside a transaction); otherwise it cleans up. Any value of
 * another thread is a cross-client observation; any state of its own that
 * vanished, any unexpected error or notice, and any row of a transaction
 * that was not committed fail the test as well. SLUICE_STRESS_SEED repeats
 * a run's random choices. */
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define NTHREADS 50
#define LOCK_BASE 7700000 /* a thread's advisory lock key: LOCK_BASE + its id */
#define MAX_REPORTS 40    /* problems printed in full; all are counted */

static it_sluice_t sl;
static double deadline;
static unsigned base_seed;

static atomic_long n_checks, n_observed, n_lost, n_errors, n_iterations, n_clean, n_committed;
static atomic_long n_vanished[5];
static atomic_int n_reports;

static const char *const vanish_names[5] = {
    "FIN while idle", "RST while idle", "FIN inside a transaction",
    "Terminate inside a transaction", "FIN with a query in flight"};

/* What a thread's session must show: NULL for nothing. Strings are the
 * thread's own values; `loose` marks values that may also be gone. */
typedef struct model {
    char app[48];        /* application_name: startup value, then SET ones */
    char sp[48];         /* search_path, NULL-equivalent "" until SET */
    char owner[16];      /* sluice_test.owner (SET) */
    char cfg[16];        /* sluice_test.cfg (set_config(..., false)) */
    char dov[16];        /* sluice_test.do (set_config inside a DO block) */
    bool dov_loose;      /* DO state is not carried: may be gone after the transaction */
    bool settings_loose; /* after DISCARD ALL: settings own, default or gone */
    char cursors[24];    /* WITH HOLD cursor names */
    char prepared[8];    /* SQL PREPARE names */
    char chans[24];      /* LISTEN channels */
    char locks[16];      /* advisory lock keys held */
    char temps[8];       /* temp table names */
    bool named;          /* protocol-level statements q_owner and q_echo exist */
} model_t;

typedef struct th {
    int id;
    long iter;     /* iterations so far */
    long seq;      /* rows written so far: a row is (id, seq), or (id, -seq) when it
                      must never be committed */
    unsigned seed; /* rand_r state */
    PGconn *c;     /* owned; NULL between iterations */
    model_t m;
    char check_sql[1600];
    char tag[16]; /* "<id>": the value every setting of this thread carries */
} th_t;

/* Prints a problem (the first MAX_REPORTS) and counts it. */
static void report(atomic_long *counter, const th_t *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void report(atomic_long *counter, const th_t *t, const char *fmt, ...) {
    atomic_fetch_add(counter, 1);
    if (atomic_fetch_add(&n_reports, 1) >= MAX_REPORTS) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "thread %d iteration %ld: %s\n", t->id, t->iter, msg);
}

/* A notice means PostgreSQL saw something this thread did not do (a
 * transaction already open, say): nothing here raises one. */
static void notice_cb(void *arg, const PGresult *r) {
    th_t *t = arg;
    report(&n_errors, t, "unexpected notice: %s", PQresultErrorMessage(r));
}

/* Notifications go only to the thread's own channel, with its own id. */
static void drain_notifies(th_t *t, bool want_own) {
    bool own = false;
    PQconsumeInput(t->c);
    for (PGnotify *n; (n = PQnotifies(t->c)); PQfreemem(n)) {
        char chan[32];
        snprintf(chan, sizeof chan, "ch_%d", t->id);
        atomic_fetch_add(&n_checks, 1);
        if (strcmp(n->relname, chan) != 0 || strcmp(n->extra, t->tag) != 0)
            report(&n_observed, t, "notification on %s with payload %s", n->relname, n->extra);
        else
            own = true;
    }
    if (want_own && !own) report(&n_lost, t, "no notification of its own NOTIFY");
}

/* Runs sql expecting `want`; an error is reported and ends the iteration. */
static PGresult *run(th_t *t, const char *sql, ExecStatusType want) {
    PGresult *r = PQexec(t->c, sql);
    if (PQresultStatus(r) != want) {
        report(&n_errors, t, "%s: %s", sql, PQerrorMessage(t->c));
        PQclear(r);
        return NULL;
    }
    drain_notifies(t, false);
    return r;
}

static bool cmd(th_t *t, const char *sql) {
    PGresult *r = run(t, sql, PGRES_COMMAND_OK);
    bool ok = r != NULL;
    PQclear(r);
    return ok;
}

static bool cmdf(th_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool cmdf(th_t *t, const char *fmt, ...) {
    char sql[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    return cmd(t, sql);
}

/* Compares one value a session shows with the model: another value is a
 * cross-client observation, a missing one is lost state (unless loose).
 * `alt`: a value that is also the thread's own (its startup value, a
 * default), or NULL. */
static void expect(th_t *t, const char *what, const char *got, const char *want, bool loose,
                   const char *alt) {
    atomic_fetch_add(&n_checks, 1);
    if (got && !*got) got = NULL;
    if (want && !*want) want = NULL;
    if (got && want && !strcmp(got, want)) return;
    if (!got && !want) return;
    if (!got) {
        if (!loose) report(&n_lost, t, "%s: gone, want %s", what, want);
        return;
    }
    if (loose && alt && !strcmp(got, alt)) return;
    report(&n_observed, t, "%s: sees %s, want %s", what, got, want ? want : "nothing");
}

/* The one-row value of sql (a copy in buf), or false after reporting. */
static bool value(th_t *t, const char *sql, char *buf, size_t cap) {
    PGresult *r = run(t, sql, PGRES_TUPLES_OK);
    if (!r) return false;
    snprintf(buf, cap, "%s", PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? PQgetvalue(r, 0, 0) : "");
    PQclear(r);
    return true;
}

/* A protocol-level named statement: every thread prepares q_owner with a
 * text returning its own id, and q_echo with one shared text. */
static bool exec_named(th_t *t, const char *name, bool with_param) {
    const char *params[1] = {t->tag};
    PGresult *r =
        PQexecPrepared(t->c, name, with_param ? 1 : 0, with_param ? params : NULL, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        report(&n_errors, t, "execute %s: %s", name, PQerrorMessage(t->c));
        PQclear(r);
        return false;
    }
    expect(t, name, PQgetvalue(r, 0, 0), t->tag, false, NULL);
    PQclear(r);
    return true;
}

/* Reads everything of the session and compares it with the model. */
static bool check(th_t *t) {
    PGresult *r = run(t, t->check_sql, PGRES_TUPLES_OK);
    if (!r) return false;
    if (PQntuples(r) != 1 || PQnfields(r) != 11) {
        report(&n_observed, t, "the check query got %d rows of %d columns", PQntuples(r),
               PQnfields(r));
        PQclear(r);
        return false;
    }
    const model_t *m = &t->m;
    char start_app[32];
    snprintf(start_app, sizeof start_app, "start_%d", t->id);
    const char *v[11];
    for (int i = 0; i < 11; i++)
        v[i] = PQgetisnull(r, 0, i) ? NULL : PQgetvalue(r, 0, i);
    bool loose = m->settings_loose;
    expect(t, "application_name", v[0], m->app, loose, start_app);
    expect(t, "search_path", v[1], m->sp[0] ? m->sp : "\"$user\", public", loose,
           "\"$user\", public");
    expect(t, "sluice_test.owner", v[2], m->owner, loose, NULL);
    expect(t, "sluice_test.start (startup)", v[3], t->tag, false, NULL);
    expect(t, "sluice_test.cfg (set_config)", v[4], m->cfg, loose, NULL);
    expect(t, "sluice_test.do (DO block)", v[5], m->dov, loose || m->dov_loose, NULL);
    expect(t, "WITH HOLD cursors", v[6], m->cursors, false, NULL);
    expect(t, "SQL prepared statements", v[7], m->prepared, false, NULL);
    expect(t, "LISTEN channels", v[8], m->chans, false, NULL);
    expect(t, "advisory locks", v[9], m->locks, false, NULL);
    expect(t, "temp tables", v[10], m->temps, false, NULL);
    PQclear(r);
    const char *ps = PQparameterStatus(t->c, "application_name");
    expect(t, "application_name (ParameterStatus)", ps, m->app, loose, start_app);
    char buf[64];
    if (m->named && !(exec_named(t, "q_owner", false) && exec_named(t, "q_echo", true)))
        return false;
    if (m->temps[0]) {
        if (!value(t, "SELECT string_agg(owner::text, ',') FROM mine", buf, sizeof buf))
            return false;
        expect(t, "temp table rows", buf, t->tag, false, NULL);
    }
    if (m->prepared[0]) {
        if (!value(t, "EXECUTE sq", buf, sizeof buf)) return false;
        expect(t, "EXECUTE sq", buf, t->tag, false, NULL);
    }
    if (m->cursors[0]) {
        char sql[64];
        snprintf(sql, sizeof sql, "FETCH FIRST FROM cur_%d", t->id);
        if (!value(t, sql, buf, sizeof buf)) return false;
        expect(t, "FETCH from the cursor", buf, t->tag, false, NULL);
    }
    return true;
}

/* ---- vanishing ---- */

/* Ends the connection without cleaning up, in one of five ways. */
static void vanish(th_t *t) {
    int how = (int)(rand_r(&t->seed) % 5);
    atomic_fetch_add(&n_vanished[how], 1);
    if (how == 2 || how == 3) {
        /* A row that must never be committed. */
        (void)(cmd(t, "BEGIN") &&
               cmdf(t, "INSERT INTO stress_log VALUES (%d, %ld)", t->id, -++t->seq));
    } else if (how == 4) {
        (void)PQsendQuery(t->c, "SELECT pg_sleep(0.02)");
    }
    int fd = PQsocket(t->c);
    if (how == 1) {
        /* connect(AF_UNSPEC) disconnects a TCP socket with a reset. */
        struct sockaddr sa = {.sa_family = AF_UNSPEC};
        (void)connect(fd, &sa, sizeof sa);
    } else if (how != 3) {
        shutdown(fd, SHUT_RDWR); /* the Terminate PQfinish sends goes nowhere */
    }
    PQfinish(t->c);
    t->c = NULL;
}

/* Whether this step is where the thread vanishes (about one in 40). */
static bool vanishes_now(th_t *t) {
    if (rand_r(&t->seed) % 40 != 0) return false;
    vanish(t);
    return true;
}

/* ---- the steps of an iteration; each false ends it ---- */

static bool carried_settings(th_t *t) {
    model_t *m = &t->m;
    if (!cmdf(t, "SET sluice_test.owner = '%d'", t->id)) return false;
    snprintf(m->owner, sizeof m->owner, "%d", t->id);
    if (!check(t) || vanishes_now(t)) return false;
    if (!cmdf(t, "SET search_path = sp_%d, public", t->id)) return false;
    snprintf(m->sp, sizeof m->sp, "sp_%d, public", t->id);
    if (!check(t) || vanishes_now(t)) return false;
    char sql[80], got[16];
    snprintf(sql, sizeof sql, "SELECT set_config('sluice_test.cfg', '%d', false)", t->id);
    if (!value(t, sql, got, sizeof got)) return false;
    snprintf(m->cfg, sizeof m->cfg, "%d", t->id);
    return check(t) && !vanishes_now(t);
}

static bool named_statements(th_t *t) {
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT '%d'::text AS owner", t->id);
    const char *names[2] = {"q_owner", "q_echo"};
    const char *texts[2] = {sql, "SELECT $1::text AS echo"};
    for (int i = 0; i < 2; i++) {
        PGresult *r = PQprepare(t->c, names[i], texts[i], i, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            report(&n_errors, t, "prepare %s: %s", names[i], PQerrorMessage(t->c));
            PQclear(r);
            return false;
        }
        PQclear(r);
    }
    t->m.named = true;
    return check(t) && !vanishes_now(t);
}

/* A committed transaction that changes a setting and writes a row, and a
 * rolled-back one whose setting and row must both be gone. */
static bool transactions(th_t *t) {
    model_t *m = &t->m;
    char buf[256];
    long row = ++t->seq;
    if (!cmd(t, "BEGIN") || !cmdf(t, "SET application_name = 'app_%d_%ld'", t->id, t->iter) ||
        !cmdf(t, "INSERT INTO stress_log VALUES (%d, %ld)", t->id, row))
        return false;
    snprintf(m->app, sizeof m->app, "app_%d_%ld", t->id, t->iter);
    if (!check(t) || !cmd(t, "COMMIT")) return false;
    atomic_fetch_add(&n_committed, 1);
    if (!check(t) || vanishes_now(t)) return false;
    if (!cmd(t, "BEGIN") || !cmdf(t, "SET sluice_test.owner = 'rolled_back_%d'", t->id) ||
        !cmdf(t, "INSERT INTO stress_log VALUES (%d, %ld)", t->id, -row) || !cmd(t, "ROLLBACK"))
        return false;
    if (!check(t)) return false;
    snprintf(buf, sizeof buf,
             "SELECT count(*) FILTER (WHERE seq = %ld) || '/' || count(*) FILTER (WHERE seq = "
             "%ld) FROM stress_log WHERE owner = %d",
             row, -row, t->id);
    char got[32];
    if (!value(t, buf, got, sizeof got)) return false;
    expect(t, "committed/rolled-back rows", got, "1/0", false, NULL);
    return !vanishes_now(t);
}

/* A DO block that sets a setting: seen inside its transaction; after it
 * the server is reset (sluice cannot tell what a DO block did), so the
 * value may be gone, but never anyone else's. */
static bool do_block(th_t *t) {
    model_t *m = &t->m;
    bool in_tx = !m->temps[0] && !m->chans[0]; /* unpinned: in a transaction of its own */
    if (in_tx && !cmd(t, "BEGIN")) return false;
    if (!cmdf(t, "DO $$BEGIN PERFORM set_config('sluice_test.do', '%d', false); END$$", t->id))
        return false;
    snprintf(m->dov, sizeof m->dov, "%d", t->id);
    m->dov_loose = false;
    if (!check(t)) return false;
    if (in_tx && !cmd(t, "COMMIT")) return false;
    m->dov_loose = in_tx;
    return check(t) && !vanishes_now(t);
}

/* A NOTIFY to its own channel comes back before the ReadyForQuery (libpq
 * keeps it for PQnotifies): with the thread's id, and nothing else. */
static bool notify_self(th_t *t) {
    char sql[64];
    snprintf(sql, sizeof sql, "NOTIFY ch_%d, '%d'", t->id, t->id);
    PGresult *r = PQexec(t->c, sql);
    bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) report(&n_errors, t, "%s: %s", sql, PQerrorMessage(t->c));
    PQclear(r);
    if (ok) drain_notifies(t, true);
    return ok;
}

/* State that pins the client to its server. */
static bool pinned_state(th_t *t) {
    model_t *m = &t->m;
    if (!cmd(t, "CREATE TEMP TABLE mine (owner int)") ||
        !cmdf(t, "INSERT INTO mine VALUES (%d)", t->id))
        return false;
    snprintf(m->temps, sizeof m->temps, "mine");
    if (!check(t) || vanishes_now(t)) return false;
    if (!cmdf(t, "PREPARE sq AS SELECT '%d'::text", t->id)) return false;
    snprintf(m->prepared, sizeof m->prepared, "sq");
    if (!check(t) || vanishes_now(t)) return false;
    if (!cmdf(t, "LISTEN ch_%d", t->id)) return false;
    snprintf(m->chans, sizeof m->chans, "ch_%d", t->id);
    if (!notify_self(t) || !check(t) || vanishes_now(t)) return false;
    char sql[96], got[16];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%d)", LOCK_BASE + t->id);
    if (!value(t, sql, got, sizeof got)) return false;
    snprintf(m->locks, sizeof m->locks, "%d", LOCK_BASE + t->id);
    if (!check(t) || vanishes_now(t)) return false;
    if (!cmd(t, "BEGIN") ||
        !cmdf(t, "DECLARE cur_%d SCROLL CURSOR WITH HOLD FOR SELECT '%d'::text", t->id, t->id) ||
        !cmd(t, "COMMIT"))
        return false;
    snprintf(m->cursors, sizeof m->cursors, "cur_%d", t->id);
    return check(t) && !vanishes_now(t);
}

/* Undoes the state: per kind, then (half the time) DISCARD ALL, after which
 * settings may fall back to defaults and the protocol-level statements are
 * gone, as on a server of one's own. */
static bool clean_up(th_t *t) {
    model_t *m = &t->m;
    if (!cmd(t, "CLOSE ALL") || !cmd(t, "UNLISTEN *")) return false;
    char got[16];
    if (!value(t, "SELECT pg_advisory_unlock_all()", got, sizeof got) || !cmd(t, "DEALLOCATE sq") ||
        !cmd(t, "DROP TABLE mine"))
        return false;
    m->cursors[0] = m->chans[0] = m->locks[0] = m->prepared[0] = m->temps[0] = '\0';
    if (!check(t)) return false;
    if (rand_r(&t->seed) % 2) return true;
    if (!cmd(t, "DISCARD ALL")) return false;
    m->settings_loose = true;
    m->named = false;
    /* The client's statement names went with DISCARD ALL, as they would on
     * a server of its own. */
    PGresult *r = PQexecPrepared(t->c, "q_owner", 0, NULL, NULL, NULL, 0);
    const char *code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    atomic_fetch_add(&n_checks, 1);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        report(&n_observed, t, "q_owner still runs after DISCARD ALL and returns %s",
               PQgetvalue(r, 0, 0));
    else if (!code || strcmp(code, "26000") != 0 || !strstr(PQresultErrorMessage(r), "\"q_owner\""))
        report(&n_errors, t, "q_owner after DISCARD ALL: %s", PQresultErrorMessage(r));
    PQclear(r);
    for (int i = 0; i < 3; i++)
        if (!check(t)) return false;
    return true;
}

static void iteration(th_t *t) {
    char extra[160];
    snprintf(extra, sizeof extra,
             "application_name=start_%d options='-c sluice_test.start=%d -c lock_timeout=20s'",
             t->id, t->id);
    t->c = it_connect_db(&sl, "sl_scram", "sluice_test", extra);
    if (PQstatus(t->c) != CONNECTION_OK) {
        report(&n_errors, t, "connect: %s", PQerrorMessage(t->c));
        PQfinish(t->c);
        t->c = NULL;
        usleep(50000);
        return;
    }
    PQsetNoticeReceiver(t->c, notice_cb, t);
    memset(&t->m, 0, sizeof t->m);
    snprintf(t->m.app, sizeof t->m.app, "start_%d", t->id);
    bool whole = check(t) && !vanishes_now(t) && carried_settings(t) && named_statements(t) &&
                 transactions(t) && do_block(t) && pinned_state(t) && do_block(t);
    if (whole && t->c && rand_r(&t->seed) % 5 < 3) {
        vanish(t); /* most iterations end without cleaning up */
    } else if (whole && t->c && clean_up(t)) {
        atomic_fetch_add(&n_clean, 1);
        (void)(transactions(t) && check(t));
    }
    if (t->c) PQfinish(t->c);
    t->c = NULL;
}

static void *thread_main(void *arg) {
    th_t *t = arg;
    snprintf(t->tag, sizeof t->tag, "%d", t->id);
    snprintf(t->check_sql, sizeof t->check_sql,
             "SELECT current_setting('application_name'), current_setting('search_path'), "
             "current_setting('sluice_test.owner', true), current_setting('sluice_test.start', "
             "true), current_setting('sluice_test.cfg', true), current_setting('sluice_test.do', "
             "true), (SELECT string_agg(name, ',' ORDER BY name) FROM pg_cursors WHERE name LIKE "
             "'cur\\_%%'), (SELECT string_agg(name, ',' ORDER BY name) FROM "
             "pg_prepared_statements WHERE name NOT LIKE 'sluice\\_%%'), (SELECT string_agg(l, "
             "',' ORDER BY l) FROM pg_listening_channels() l), (SELECT string_agg(objid::text, "
             "',' ORDER BY objid) FROM pg_locks WHERE locktype = 'advisory' AND pid = "
             "pg_backend_pid()), (SELECT string_agg(relname::text, ',' ORDER BY relname) FROM "
             "pg_class WHERE relnamespace = pg_my_temp_schema())");
    while (it_now() < deadline) {
        t->iter++;
        iteration(t);
        atomic_fetch_add(&n_iterations, 1);
    }
    return NULL;
}

static void stress(void) {
    const char *secs_env = getenv("SLUICE_STRESS_SECONDS");
    const char *seed_env = getenv("SLUICE_STRESS_SEED");
    double secs = secs_env ? atof(secs_env) : 30;
    base_seed = seed_env ? (unsigned)strtoul(seed_env, NULL, 10) : (unsigned)time(NULL);
    printf("%d threads over a pool of 2 for %.0f s, seed %u (SLUICE_STRESS_SEED)\n", NTHREADS, secs,
           base_seed);
    PGconn *d = it_direct();
    it_exec(d, "SET client_min_messages = warning");
    it_exec(d, "DROP TABLE IF EXISTS stress_log; CREATE TABLE stress_log (owner int, seq bigint); "
               "GRANT ALL ON stress_log TO sl_scram");
    /* query_wait_notify off: 48 clients over a pool of 2 wait long enough
     * for sluice's own "client being queued" notice, and every notice
     * here must be PostgreSQL's. */
    it_sluice_start(&sl,
                    "auth_type = trust\npool_mode = transaction\ndefault_pool_size = 2\n"
                    "max_client_conn = 200\nquery_wait_notify = 0\n",
                    NULL);
    static th_t ts[NTHREADS];
    pthread_t tids[NTHREADS];
    deadline = it_now() + secs;
    for (int i = 0; i < NTHREADS; i++) {
        ts[i] = (th_t){.id = i + 1, .seed = base_seed * 7919u + (unsigned)i};
        pthread_create(&tids[i], NULL, thread_main, &ts[i]);
    }
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(tids[i], NULL);
    long uncommitted = atol(it_value(d, "SELECT count(*) FROM stress_log WHERE seq < 0"));
    long rows = atol(it_value(d, "SELECT count(*) FROM stress_log WHERE seq > 0"));
    printf("%ld iterations, %ld checks; %ld cleaned up, vanished: %ld %s, %ld %s, %ld %s, %ld "
           "%s, %ld %s\n",
           atomic_load(&n_iterations), atomic_load(&n_checks), atomic_load(&n_clean),
           atomic_load(&n_vanished[0]), vanish_names[0], atomic_load(&n_vanished[1]),
           vanish_names[1], atomic_load(&n_vanished[2]), vanish_names[2],
           atomic_load(&n_vanished[3]), vanish_names[3], atomic_load(&n_vanished[4]),
           vanish_names[4]);
    printf("cross-client observations %ld, lost state %ld, unexpected errors %ld; rows: %ld "
           "committed of %ld, %ld never committed\n",
           atomic_load(&n_observed), atomic_load(&n_lost), atomic_load(&n_errors), rows,
           atomic_load(&n_committed), uncommitted);
    IT_ASSERT(atomic_load(&n_iterations) >= NTHREADS, "every thread ran (%ld iterations)",
              atomic_load(&n_iterations));
    IT_ASSERT(atomic_load(&n_observed) == 0, "%ld cross-client observations",
              atomic_load(&n_observed));
    IT_ASSERT(atomic_load(&n_lost) == 0, "%ld checks found the client's own state gone",
              atomic_load(&n_lost));
    IT_ASSERT(atomic_load(&n_errors) == 0, "%ld unexpected errors", atomic_load(&n_errors));
    IT_ASSERT(uncommitted == 0, "%ld rows of transactions that never committed", uncommitted);
    IT_ASSERT(rows == atomic_load(&n_committed), "%ld rows for %ld commits", rows,
              atomic_load(&n_committed));
    IT_ASSERT(it_log_count(&sl, "released dirty") == 0, "no server went back dirty");
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
    it_exec(d, "DROP TABLE stress_log");
    PQfinish(d);
}

int main(void) {
    it_init("it_stress");
    stress();
    return it_done();
}
