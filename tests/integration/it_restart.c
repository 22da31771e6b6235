/* A backend that resets logins, and PostgreSQL restarts under load, on a
 * throwaway server of its own (the shared cluster stays intact):
 *  (a) a loopback backend that resets sluice's first logins (at once, or
 *      after reading the first packet) and then relays to PostgreSQL: sluice's
 *      own login (auth_file holds a SCRAM verifier) answers the client within
 *      2 s of the backend behaving, not after server_connect_timeout;
 *  (b) pg_ctl restart -m immediate, then -m fast, under 10 clients looping
 *      short queries (libpq login and own login): a new client through sluice
 *      is answered within 2 s of PostgreSQL accepting again, and no client
 *      gets an error about the restart older than the last login attempt;
 *  (c) with the password in auth_file, sluice logs in itself too: the SCRAM
 *      keys are derived once for the pool, not by PBKDF2 per connection. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

static char dir[64]; /* the throwaway PostgreSQL: DIR/pg, its log DIR/pg.log */
static int pg_port;

static PGconn *pg_direct(const char *user) {
    char ci[256];
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d dbname=postgres user=%s password=scram_pw connect_timeout=2",
             pg_port, user);
    return PQconnectdb(ci);
}

/* initdb in a temp dir, as the fixture does: postgres trusted, everyone
 * else SCRAM over TCP. Roles: sl_scram (its password in auth_file: libpq
 * login) and sl_own (only its verifier in auth_file: sluice's own login). */
static void pg_create(void) {
    pg_port = it_own_pg_create("/tmp/sluice-restart-XXXXXX",
                               "max_connections = 100\\nsynchronous_commit = off\\n"
                               "full_page_writes = off\\n",
                               "local all all trust\\nhost all postgres 127.0.0.1/32 trust\\n"
                               "host all all 127.0.0.1/32 scram-sha-256\\n");
    snprintf(dir, sizeof dir, "%s", it_own_pg_dir());
    PGconn *d = pg_direct("postgres");
    IT_ASSERT(PQstatus(d) == CONNECTION_OK, "direct: %s", PQerrorMessage(d));
    it_exec(d, "SET password_encryption = 'scram-sha-256'");
    it_exec(d, "CREATE ROLE sl_scram LOGIN PASSWORD 'scram_pw'");
    it_exec(d, "CREATE ROLE sl_own LOGIN PASSWORD 'scram_pw'");
    PQfinish(d);
}

/* ---- (a) a backend that resets logins, then behaves ---- */

typedef struct resetter {
    int lfd, port;
    atomic_int resets_left;    /* logins still to reset */
    _Atomic double behaves_at; /* it_now() when it started relaying */
} resetter_t;

static void relay_pair(int a, int b) {
    char buf[16384];
    struct pollfd p[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0 && errno != EINTR) break;
        for (int i = 0; i < 2; i++) {
            if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t n = read(p[i].fd, buf, sizeof buf);
            if (n <= 0) goto out;
            if (write(p[1 - i].fd, buf, (size_t)n) != n) goto out;
        }
    }
out:
    close(a), close(b);
}

static void *relay_thread(void *arg) {
    int fd = (int)(intptr_t)arg;
    int up = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)pg_port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(up, (struct sockaddr *)&a, sizeof a) != 0) {
        close(up), close(fd);
        return NULL;
    }
    relay_pair(fd, up);
    return NULL;
}

/* Closes with an RST: SO_LINGER 0. */
static void reset_close(int fd) {
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
}

static void *resetter_thread(void *arg) {
    resetter_t *r = arg;
    for (int n = 0;; n++) {
        int fd = accept(r->lfd, NULL, NULL);
        if (fd < 0) return NULL;
        if (atomic_fetch_sub(&r->resets_left, 1) > 0) {
            /* The first at once; the others once sluice's login has begun
             * (its SSLRequest or StartupMessage came): the reset then
             * arrives as a poll error in the middle of the login. */
            if (n > 0) {
                char b[512];
                struct pollfd p = {.fd = fd, .events = POLLIN};
                if (poll(&p, 1, 2000) == 1) (void)!read(fd, b, sizeof b);
            }
            reset_close(fd);
            if (atomic_load(&r->resets_left) <= 0) atomic_store(&r->behaves_at, it_now());
            continue;
        }
        pthread_t t;
        pthread_create(&t, NULL, relay_thread, (void *)(intptr_t)fd);
        pthread_detach(t);
    }
}

static void resetter_start(resetter_t *r, int resets) {
    r->lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(r->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    IT_ASSERT(bind(r->lfd, (struct sockaddr *)&a, sizeof a) == 0 && listen(r->lfd, 64) == 0,
              "resetter listen: %s", strerror(errno));
    getsockname(r->lfd, (struct sockaddr *)&a, &len);
    r->port = ntohs(a.sin_port);
    atomic_store(&r->resets_left, resets);
    atomic_store(&r->behaves_at, 0.0);
    pthread_t t;
    pthread_create(&t, NULL, resetter_thread, r);
    pthread_detach(t);
}

static PGconn *through(const it_sluice_t *s, const char *db, const char *user) {
    char ci[256];
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d dbname=%s user=%s password=scram_pw connect_timeout=40",
             s->port, db, user);
    return PQconnectdb(ci);
}

/* Runs SELECT 1 on a new connection; true if it answered. */
static bool answered(const it_sluice_t *s, const char *db, const char *user, char *err,
                     size_t cap) {
    PGconn *c = through(s, db, user);
    bool ok = false;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, "SELECT 1");
        ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
    }
    snprintf(err, cap, "%s", ok ? "" : PQerrorMessage(c));
    PQfinish(c);
    return ok;
}

static void resetting_backend(const it_sluice_t *s, resetter_t *r) {
    double t0 = it_now();
    char err[512];
    bool ok = answered(s, "rsbad", "sl_own", err, sizeof err);
    double t1 = it_now(), behaves = atomic_load(&r->behaves_at);
    IT_ASSERT(ok, "through a backend that reset 3 logins: %s", err);
    IT_ASSERT(behaves > 0, "the resets happened");
    printf("(a) login reset 3 times: answered %.2f s after the client came, %.2f s after the "
           "backend behaved\n",
           t1 - t0, t1 - behaves);
    IT_ASSERT(t1 - behaves < 2.0, "answered within 2 s of the backend behaving (%.2f s)",
              t1 - behaves);
    IT_ASSERT(it_log_count(s, "bad file descriptor") == 0, "no 'bad file descriptor' in the log");
}

/* ---- (b) restarts under load ---- */

typedef struct load {
    const it_sluice_t *s;
    atomic_bool stop;
    atomic_long ok, errors;
    _Atomic double last_ok; /* it_now() of the latest answer */
    char last_err[10][256];
    pthread_t t[10];
} load_t;

typedef struct client_arg {
    load_t *l;
    int i;
} client_arg_t;

static client_arg_t args[10];

static void quiet(void *arg, const char *msg) {
    (void)arg, (void)msg;
}

static void *client_loop(void *arg) {
    client_arg_t *a = arg;
    load_t *l = a->l;
    const char *user = a->i % 2 ? "sl_own" : "sl_scram";
    PGconn *c = NULL;
    while (!atomic_load(&l->stop)) {
        if (!c) {
            c = through(l->s, "rs", user);
            PQsetNoticeProcessor(c, quiet, NULL); /* the restart's WARNINGs */
        }
        PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, "SELECT 1") : NULL;
        if (r && PQresultStatus(r) == PGRES_TUPLES_OK) {
            atomic_fetch_add(&l->ok, 1);
            atomic_store(&l->last_ok, it_now());
        } else {
            atomic_fetch_add(&l->errors, 1);
            snprintf(l->last_err[a->i], sizeof l->last_err[a->i], "%s", PQerrorMessage(c));
            PQfinish(c);
            c = NULL;
            usleep(10000);
        }
        PQclear(r);
    }
    PQfinish(c);
    return NULL;
}

typedef struct restarter {
    const char *mode;
    pthread_t t;
} restarter_t;

static void *restart_thread(void *arg) {
    restarter_t *r = arg;
    char action[64];
    snprintf(action, sizeof action, "-m %s restart", r->mode);
    it_pg_ctl(dir, "pg", action);
    return NULL;
}

static bool pg_accepts(void) {
    PGconn *c = pg_direct("postgres");
    bool ok = PQstatus(c) == CONNECTION_OK;
    if (ok) {
        PGresult *r = PQexec(c, "SELECT 1");
        ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
    }
    PQfinish(c);
    return ok;
}

static void restart_under_load(const it_sluice_t *s, const char *mode) {
    load_t *l = calloc(1, sizeof *l);
    l->s = s;
    for (int i = 0; i < 10; i++) {
        args[i] = (client_arg_t){l, i};
        pthread_create(&l->t[i], NULL, client_loop, &args[i]);
    }
    /* Running: the loaded test machine may take a moment to log 10 in. */
    double t_load = it_now();
    while (atomic_load(&l->ok) <= 10 && it_now() < t_load + 10)
        usleep(10000);
    IT_ASSERT(atomic_load(&l->ok) > 10, "the load runs (%ld answers, %ld errors)",
              atomic_load(&l->ok), atomic_load(&l->errors));
    printf("(b) 10 clients running after %.2f s\n", it_now() - t_load);
    restarter_t rs = {.mode = mode};
    pthread_create(&rs.t, NULL, restart_thread, &rs);
    /* Down, then accepting again, as a direct libpq client sees it. */
    double deadline = it_now() + 20;
    while (pg_accepts()) {
        IT_ASSERT(it_now() < deadline, "PostgreSQL never went down");
        usleep(5000);
    }
    double down = it_now();
    while (!pg_accepts()) {
        IT_ASSERT(it_now() < deadline, "PostgreSQL did not come back");
        usleep(5000);
    }
    double up = it_now();
    long errors_at_up = atomic_load(&l->errors);
    /* A new client at once: how long until it gets an answer. */
    char err[512];
    bool ok = answered(s, "rs", "sl_own", err, sizeof err);
    double new_client = it_now() - up;
    pthread_join(rs.t, NULL);
    /* The looping clients: the first answer after the restart. */
    while (atomic_load(&l->last_ok) < up - 0.05 && it_now() < up + 40)
        usleep(5000);
    double first = atomic_load(&l->last_ok) - up;
    sleep(1);
    long errors_after = atomic_load(&l->errors) - errors_at_up;
    atomic_store(&l->stop, true);
    for (int i = 0; i < 10; i++)
        pthread_join(l->t[i], NULL);
    printf("(b) restart -m %s: PostgreSQL down %.2f s; a new client through sluice answered "
           "%.2f s after PostgreSQL accepted again%s%s; the looping clients' first answer "
           "%.2f s after; client errors: %ld during the outage, %ld after it\n",
           mode, up - down, new_client, ok ? "" : " with an error: ", ok ? "" : err,
           first < 0 ? 0 : first, errors_at_up, errors_after);
    for (int i = 0; i < 10; i++)
        if (l->last_err[i][0]) printf("    client %d last error: %s", i, l->last_err[i]);
    IT_ASSERT(ok, "a new client after the restart -m %s gets an answer: %s", mode, err);
    IT_ASSERT(new_client < 2.0, "answered within 2 s of PostgreSQL accepting (%.2f s)", new_client);
    IT_ASSERT(first < 2.0, "the looping clients are answered within 2 s (%.2f s)", first);
    free(l);
}

/* Lines of sluice's log with both needles. */
static int log_count2(const it_sluice_t *s, const char *a, const char *b) {
    FILE *f = fopen(s->log, "r");
    char line[4096];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, a) && strstr(line, b)) n++;
    if (f) fclose(f);
    return n;
}

int main(void) {
    it_init("it_restart");
    pg_create();
    /* sl_own's verifier, the way PostgreSQL stores it: auth_file holds it
     * and no password, so sluice logs in itself with the ClientKey the
     * client's SCRAM proof reveals. */
    PGconn *d = pg_direct("postgres");
    char verifier[512];
    snprintf(verifier, sizeof verifier, "%s",
             it_value(d, "SELECT rolpassword FROM pg_authid WHERE rolname = 'sl_own'"));
    PQfinish(d);
    char path[400];
    snprintf(path, sizeof path, "%s/userlist.txt", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "\"sl_scram\" \"scram_pw\"\n\"sl_own\" \"%s\"\n", verifier);
    fclose(f);

    resetter_t r;
    resetter_start(&r, 3);
    char opts[600], dbs[400];
    snprintf(opts, sizeof opts,
             "auth_file = %s\npool_mode = transaction\ndefault_pool_size = 4\nverbose = 1\n", path);
    snprintf(dbs, sizeof dbs,
             "rs = host=127.0.0.1 port=%d dbname=postgres\n"
             "rsbad = host=127.0.0.1 port=%d dbname=postgres\n",
             pg_port, r.port);
    it_sluice_t s;
    it_sluice_start(&s, opts, dbs);
    resetting_backend(&s, &r);
    restart_under_load(&s, "immediate");
    restart_under_load(&s, "fast");
    /* One warning per streak of failures and one line per recovery, not
     * one per attempt: 3 streaks (a, b immediate, b fast) on at most 3
     * pools. */
    int failed = it_log_count(&s, "backend connection failed"),
        works = it_log_count(&s, "backend login works again");
    printf("log: %d failure streaks, %d recoveries\n", failed, works);
    IT_ASSERT(works >= 3 && failed <= 9, "a line per streak (%d) and per recovery (%d)", failed,
              works);
    /* (c) sl_scram's password is in auth_file: every backend login of its
     * pool (one per server, again after each restart) was sluice's own,
     * with the keys derived once per worker at most. Workers share the
     * keys through the ledger, but two workers whose first logins run at
     * the same moment each derive them: PBKDF2 runs on the event loop, and
     * waiting there for another worker's derivation would stall every
     * client of the loop for as long. */
    int own = log_count2(&s, "user=sl_scram", "sluice's own exchange"),
        derived = it_log_count(&s, "SCRAM keys derived");
    printf("(c) %d backend logins with a configured password, SCRAM keys derived %d time(s)\n", own,
           derived);
    IT_ASSERT(own >= 4 && derived >= 1 && derived <= it_workers(),
              "own logins (%d) with keys derived once per worker at most (%d, %d worker(s))", own,
              derived, it_workers());
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    it_on_fail(NULL);
    it_own_pg_remove();
    return it_done();
}
