/* Integration test harness: the cluster from the CTest fixture, a sluice
 * started per test with its own config on a free port, libpq helpers, and
 * assertions that print sluice's log when they fail. */
#ifndef SLUICE_IT_HARNESS_H
#define SLUICE_IT_HARNESS_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <sys/types.h>

typedef struct it_cluster {
    char sockdir[256];
    int primary, replica1, replica2;
    char tlsdir[256]; /* test CA and certificates; empty when the cluster has no TLS */
} it_cluster_t;

typedef struct it_sluice {
    pid_t pid;
    int port;
    char dir[256];
    char ini[320];
    char log[320];
} it_sluice_t;

extern it_cluster_t it_cl;

void it_init(const char *name);
/* Starts sluice. `dbs` is appended to [databases] (sluice_test and postgres
 * point at the primary already) and `opts` to [sluice]. From the
 * environment: SLUICE_TEST_LOG_DIR, where its log goes (CTest: build/
 * test-logs, read by tests/check_secrets.py); SLUICE_TEST_VERBOSE, a
 * verbose level set before opts; SLUICE_TEST_WRAPPER, a command sluice runs
 * under ("valgrind --error-exitcode=99 ...", given SLUICE_TEST_NAME). */
void it_sluice_start(it_sluice_t *s, const char *opts, const char *dbs);
/* The workers a sluice runs when its test's options do not set them
 * (SLUICE_TEST_WORKERS, else sluice's default: one per online CPU). */
int it_workers(void);
/* Starts sluice as it_sluice_start does, but in dir (the caller's; the
 * Unix socket is made there) on port, which another sluice may share
 * (so_reuseport): for instances that must know each other's addresses
 * before they start. Waits for its "started" log line too, since the port
 * may answer through the other sluice. */
void it_sluice_start_at(it_sluice_t *s, const char *dir, int port, const char *opts,
                        const char *dbs);
/* Removes dir (and what is in it) when the test passes, as the harness
 * does with the directories it makes. */
void it_dir_remove_on_pass(const char *dir);
/* Sends sig and waits; returns the exit status (or 128+signal). */
int it_sluice_stop(it_sluice_t *s, int sig);
long it_sluice_vmhwm_kb(const it_sluice_t *s);
/* Runs a query that must return rows (SHOW on the console, say); the
 * result is the caller's to PQclear. */
PGresult *it_show(PGconn *c, const char *what);
/* The index of column name in r; the test fails when r has none. */
int it_col(const PGresult *r, const char *name);
/* A field of sluice's /proc/<pid>/status in kB (field without its colon:
 * "VmRSS", "VmHWM"); -1 when it cannot be read. */
long it_sluice_status_kb(const it_sluice_t *s, const char *field);

/* Under AddressSanitizer (a test is built as sluice is) RSS says little:
 * its quarantine keeps freed memory and its shadow adds more. Tests print
 * RSS figures and check their bounds only when IT_RSS_CHECKED. */
#if defined(__SANITIZE_ADDRESS__)
#define IT_RSS_CHECKED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define IT_RSS_CHECKED 0
#endif
#endif
#ifndef IT_RSS_CHECKED
#define IT_RSS_CHECKED 1
#endif
/* Count of lines in sluice's log containing needle. */
int it_log_count(const it_sluice_t *s, const char *needle);

/* Waits up to secs for at least `atleast` log lines with needle (a client
 * can see a refusal before sluice has logged it); returns the count. */
int it_log_wait(const it_sluice_t *s, const char *needle, int atleast, double secs);
/* The value of key=N in the next stats line sluice logs (set stats_period
 * = 1), or -1. */
long it_stats_value(const it_sluice_t *s, const char *key);

PGconn *it_connect(const it_sluice_t *s, const char *user, const char *extra);
/* The worker a client of sluice is on (its BackendKeyData names it:
 * cancelkey.h, bits 15..10 of the process id). */
int it_worker_of(PGconn *c);
/* A client of user to db (as it_connect_db) on worker `worker`: the kernel
 * spreads connections over the workers' sockets, so new ones are opened
 * (and the others closed) until one lands there; fails the test after 64. */
PGconn *it_connect_on_worker(const it_sluice_t *s, const char *user, const char *db, int worker);
PGconn *it_connect_db(const it_sluice_t *s, const char *user, const char *db, const char *extra);
/* Superuser connection straight to the primary, or to the server on port. */
PGconn *it_direct(void);
PGconn *it_direct_port(int port);
/* Runs pg_ctl on cluster dir's node (primary, replica1, ...) as the
 * postgres user when run as root; asserts it succeeded. */
void it_pg_ctl(const char *dir, const char *node, const char *action);
/* A PostgreSQL of the test's own, for tests that restart it (restarting
 * the fixture's would disturb tests beside it): initdb in a new temp dir
 * made from tmpl ("/tmp/sluice-x-XXXXXX"; the node is DIR/pg, its log
 * DIR/pg.log), conf appended to postgresql.conf, hba as pg_hba.conf (NULL:
 * initdb's, trust), started on a free port, which it returns. One per
 * process; it_own_pg_remove stops and removes it, also on a failure. */
int it_own_pg_create(const char *tmpl, const char *conf, const char *hba);
const char *it_own_pg_dir(void);
void it_own_pg_remove(void);
/* Runs fn once if the test fails (to undo changes to the shared cluster). */
void it_on_fail(void (*fn)(void));
/* Runs sql, asserts success, returns row 0 col 0 (a per-thread static buffer). */
const char *it_value(PGconn *c, const char *sql);
void it_exec(PGconn *c, const char *sql);
/* Runs sql expecting failure; returns the SQLSTATE (static buffer). */
const char *it_fails(PGconn *c, const char *sql);
/* Runs sql expecting failure with needle in the error message. */
void it_fails_with(PGconn *c, const char *sql, const char *needle);
int it_free_port(void);
double it_now(void);
/* Opens a raw TCP connection to sluice. */
int it_raw_connect(const it_sluice_t *s);
/* GET /metrics from the metrics endpoint on 127.0.0.1:port: the whole
 * answer in resp (NUL-terminated); fails the test unless it is a 200. */
void it_scrape(int port, char *resp, size_t cap);
/* A raw connection that sent a StartupMessage (protocol 3.0) for user and
 * db and read nothing yet. */
int it_raw_startup(const it_sluice_t *s, const char *user, const char *db);
/* A raw connection logged in as user to db (sluice with auth_type = trust),
 * read up to its first ReadyForQuery. */
int it_raw_login(const it_sluice_t *s, const char *user, const char *db);
/* Protocol messages built byte by byte, to be written to a raw connection. */
typedef struct it_wire {
    char b[8192];
    int n; /* bytes in b */
} it_wire_t;
void it_wire_msg(it_wire_t *w, char type, const void *body, int len);
/* Parse of name (the unnamed statement: "") with no parameter types. */
void it_wire_parse(it_wire_t *w, const char *name, const char *sql);
/* Bind of statement name to the unnamed portal, no parameters, and Execute. */
void it_wire_bind_exec(it_wire_t *w, const char *name);
/* Describe and Close of a statement; Sync. */
void it_wire_describe(it_wire_t *w, const char *name);
void it_wire_close(it_wire_t *w, const char *name);
void it_wire_sync(it_wire_t *w);
void it_wire_query(it_wire_t *w, const char *sql);
/* Writes w (and empties it), then reads replies up to ReadyForQuery within
 * secs each: their types in order ("CZ", "TDCZ"; a '-' where the connection
 * closed or nothing came), the first column of the last DataRow or the
 * message of the last ErrorResponse into value (may be NULL). */
const char *it_wire_exchange(int fd, it_wire_t *w, double secs, char *value, size_t cap);
/* CPU seconds (user + system) process pid has used so far. */
double it_proc_cpu(pid_t pid);
/* Reads the first message of a raw connection; returns its type and copies
 * up to cap bytes of body. */
int it_raw_read_msg(int fd, char *body, int cap);

/* 100k rows COPY IN to a new table, counted and summed, COPY OUT, a failed
 * COPY IN that leaves the connection usable; the table is dropped. */
void it_copy_round_trip(PGconn *c, const char *table);
/* 200 MB as COPY OUT and 200 MB as a single-row-mode SELECT, all checked. */
void it_stream_400mb(PGconn *c);

void it_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define IT_ASSERT(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) it_fail(__FILE__, __LINE__, __VA_ARGS__);                                     \
    } while (0)

int it_done(void);

#endif
