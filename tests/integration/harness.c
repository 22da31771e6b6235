/* Integration test harness. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

it_cluster_t it_cl;
static const char *test_name = "it";
static it_sluice_t *running[8];
static int checks;
static char *dirs[64]; /* sluice dirs made by this test, removed when it passes */
static int ndirs;
/* Set by it_sluice_start_at for the it_sluice_start it calls: the sluice's
 * directory (made by the caller) and port (shared). */
static const char *start_dir;
static int start_port;

double it_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* SLUICE_TEST_WRAPPER: a command line sluice is run under (valgrind ...),
 * split at spaces; NULL when unset. Under it sluice is slower and must be
 * given time to exit cleanly, so that the wrapper can report. */
static const char *wrapper(void) {
    const char *w = getenv("SLUICE_TEST_WRAPPER");
    return w && *w ? w : NULL;
}

/* Seconds a wrapped sluice may take where a plain one takes one. */
static double slow_factor(void) {
    return wrapper() ? 10.0 : 1.0;
}

static void dump_logs(void) {
    for (int i = 0; i < 8; i++) {
        if (!running[i]) continue;
        fprintf(stderr, "---- last lines of %s ----\n", running[i]->log);
        char cmd[512];
        snprintf(cmd, sizeof cmd, "tail -n 40 '%s' >&2", running[i]->log);
        if (system(cmd) != 0) fprintf(stderr, "(no log)\n");
    }
}

/* Under a wrapper, an immediate shutdown (SIGQUIT) first, so that the
 * wrapper sees sluice exit and reports leaks; SIGKILL if it hangs. */
static void quit_wrapped(pid_t pid) {
    kill(pid, SIGQUIT);
    double deadline = it_now() + 60;
    while (waitpid(pid, NULL, WNOHANG) == 0) {
        if (it_now() > deadline) {
            fprintf(stderr, "%s: wrapped sluice %d did not exit within 60 s of SIGQUIT\n",
                    test_name, (int)pid);
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return;
        }
        usleep(50000);
    }
}

static void kill_all(void) {
    for (int i = 0; i < 8; i++)
        if (running[i] && running[i]->pid > 0) {
            if (wrapper()) {
                quit_wrapped(running[i]->pid);
                running[i]->pid = 0;
                continue;
            }
            kill(running[i]->pid, SIGKILL);
            waitpid(running[i]->pid, NULL, 0);
            running[i]->pid = 0;
        }
}

static void (*on_fail)(void);

void it_on_fail(void (*fn)(void)) {
    on_fail = fn;
}

void it_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: FAIL at %s:%d: ", test_name, file, line);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    dump_logs();
    kill_all();
    if (on_fail) {
        void (*fn)(void) = on_fail;
        on_fail = NULL;
        fn();
    }
    exit(1);
}

void it_init(const char *name) {
    test_name = name;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    const char *envf = getenv("SLUICE_CLUSTER_ENV");
    IT_ASSERT(envf, "SLUICE_CLUSTER_ENV not set (run through ctest)");
    FILE *f = fopen(envf, "r");
    IT_ASSERT(f, "cannot read %s: the cluster fixture did not start", envf);
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *eq = strchr(line, '=');
        if (!eq) continue;
        *eq = 0;
        if (!strcmp(line, "SOCKDIR")) snprintf(it_cl.sockdir, sizeof it_cl.sockdir, "%s", eq + 1);
        if (!strcmp(line, "PRIMARY_PORT")) it_cl.primary = atoi(eq + 1);
        if (!strcmp(line, "REPLICA1_PORT")) it_cl.replica1 = atoi(eq + 1);
        if (!strcmp(line, "REPLICA2_PORT")) it_cl.replica2 = atoi(eq + 1);
        if (!strcmp(line, "TLS_DIR")) snprintf(it_cl.tlsdir, sizeof it_cl.tlsdir, "%s", eq + 1);
    }
    fclose(f);
    IT_ASSERT(it_cl.primary > 0, "cluster env incomplete");
}

int it_free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    IT_ASSERT(bind(fd, (struct sockaddr *)&a, sizeof a) == 0, "bind: %s", strerror(errno));
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

void it_scrape(int port, char *resp, size_t cap) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    IT_ASSERT(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect to metrics port");
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const char *req = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    IT_ASSERT(send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req), "send");
    size_t n = 0;
    for (ssize_t r; n < cap - 1 && (r = read(fd, resp + n, cap - 1 - n)) > 0;)
        n += (size_t)r;
    resp[n] = '\0';
    close(fd);
    IT_ASSERT(!strncmp(resp, "HTTP/1.1 200", 12), "scrape answered: %.40s", resp);
}

int it_raw_connect(const it_sluice_t *s) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)s->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static bool read_full(int fd, void *p, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r <= 0) return false;
        got += (size_t)r;
    }
    return true;
}

int it_raw_startup(const it_sluice_t *s, const char *user, const char *db) {
    int fd = it_raw_connect(s);
    IT_ASSERT(fd >= 0, "raw connect");
    char pkt[256];
    int n = 8;
    n += snprintf(pkt + n, sizeof pkt - (size_t)n, "user") + 1;
    n += snprintf(pkt + n, sizeof pkt - (size_t)n, "%s", user) + 1;
    n += snprintf(pkt + n, sizeof pkt - (size_t)n, "database") + 1;
    n += snprintf(pkt + n, sizeof pkt - (size_t)n, "%s", db) + 1;
    pkt[n++] = 0;
    uint32_t l = htonl((uint32_t)n), v = htonl(196608);
    memcpy(pkt, &l, 4), memcpy(pkt + 4, &v, 4);
    IT_ASSERT(write(fd, pkt, (size_t)n) == n, "startup");
    return fd;
}

int it_raw_login(const it_sluice_t *s, const char *user, const char *db) {
    int fd = it_raw_startup(s, user, db);
    char body[256];
    int t;
    while ((t = it_raw_read_msg(fd, body, sizeof body)) != 'Z')
        IT_ASSERT(t > 0, "raw login");
    return fd;
}

void it_wire_msg(it_wire_t *w, char type, const void *body, int len) {
    IT_ASSERT(w->n + 5 + len <= (int)sizeof w->b, "test message buffer too small");
    w->b[w->n++] = type;
    uint32_t l = htonl((uint32_t)len + 4);
    memcpy(w->b + w->n, &l, 4);
    memcpy(w->b + w->n + 4, body, (size_t)len);
    w->n += 4 + len;
}

void it_wire_parse(it_wire_t *w, const char *name, const char *sql) {
    char b[sizeof w->b];
    int n = snprintf(b, sizeof b, "%s", name) + 1;
    n += snprintf(b + n, sizeof b - (size_t)n - 2, "%s", sql) + 1;
    b[n++] = 0, b[n++] = 0; /* no parameter types */
    it_wire_msg(w, 'P', b, n);
}

void it_wire_bind_exec(it_wire_t *w, const char *name) {
    char b[256];
    int n = 1; /* unnamed portal */
    b[0] = 0;
    n += snprintf(b + n, sizeof b - (size_t)n - 6, "%s", name) + 1;
    memset(b + n, 0, 6); /* no formats, no parameters, no result formats */
    it_wire_msg(w, 'B', b, n + 6);
    it_wire_msg(w, 'E', "\0\0\0\0", 5);
}

static void wire_statement(it_wire_t *w, char type, const char *name) {
    char b[256];
    int n = snprintf(b, sizeof b, "S%s", name) + 1;
    it_wire_msg(w, type, b, n);
}

void it_wire_describe(it_wire_t *w, const char *name) {
    wire_statement(w, 'D', name);
}

void it_wire_close(it_wire_t *w, const char *name) {
    wire_statement(w, 'C', name);
}

void it_wire_sync(it_wire_t *w) {
    it_wire_msg(w, 'S', "", 0);
}

void it_wire_query(it_wire_t *w, const char *sql) {
    it_wire_msg(w, 'Q', sql, (int)strlen(sql) + 1);
}

const char *it_wire_exchange(int fd, it_wire_t *w, double secs, char *value, size_t cap) {
    static __thread char types[128];
    IT_ASSERT(write(fd, w->b, (size_t)w->n) == w->n, "send");
    w->n = 0;
    struct timeval tv = {.tv_sec = (time_t)secs,
                         .tv_usec = (suseconds_t)((secs - (time_t)secs) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    size_t o = 0;
    char body[1024];
    for (int t = 0; t != 'Z' && o + 2 < sizeof types;) {
        t = it_raw_read_msg(fd, body, sizeof body);
        types[o++] = t > 0 ? (char)t : '-';
        if (t <= 0) break;
        if (t == 'D' && value) {
            uint32_t len;
            memcpy(&len, body + 2, 4);
            snprintf(value, cap, "%.*s", (int)ntohl(len), body + 6);
        }
        for (int i = 0; t == 'E' && value && i < (int)sizeof body - 1 && body[i];) {
            body[sizeof body - 1] = '\0';
            if (body[i] == 'M') snprintf(value, cap, "%s", body + i + 1);
            i += (int)strlen(body + i) + 1;
        }
    }
    types[o] = '\0';
    return types;
}

double it_proc_cpu(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    IT_ASSERT(f, "cannot read %s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name, which is in parentheses (and may hold
     * spaces): state is field 3, utime 14, stime 15. */
    const char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    IT_ASSERT(p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) ==
                       2,
              "malformed %s", path);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

int it_raw_read_msg(int fd, char *body, int cap) {
    unsigned char hdr[5];
    if (!read_full(fd, hdr, 5)) return -1;
    uint32_t len = (uint32_t)hdr[1] << 24 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 8 | hdr[4];
    if (len < 4 || len > 1 << 20) return -1;
    char *tmp = malloc(len);
    if (!read_full(fd, tmp, len - 4)) {
        free(tmp);
        return -1;
    }
    int k = (int)(len - 4) < cap ? (int)(len - 4) : cap;
    memcpy(body, tmp, (size_t)k);
    free(tmp);
    return hdr[0];
}

/* Replaces {PRIMARY}, {REPLICA1}, {REPLICA2} with the cluster's ports. */
static char *expand(const char *in) {
    size_t cap = (in ? strlen(in) : 0) * 2 + 64;
    char *out = calloc(1, cap);
    size_t o = 0;
    for (const char *p = in; p && *p;) {
        const char *names[] = {"{PRIMARY}", "{REPLICA1}", "{REPLICA2}"};
        int ports[] = {it_cl.primary, it_cl.replica1, it_cl.replica2};
        int hit = -1;
        for (int i = 0; i < 3; i++)
            if (!strncmp(p, names[i], strlen(names[i]))) hit = i;
        if (hit >= 0) {
            o += (size_t)snprintf(out + o, cap - o, "%d", ports[hit]);
            p += strlen(names[hit]);
        } else {
            out[o++] = *p++;
        }
    }
    return out;
}

/* Runs bin on ini, under SLUICE_TEST_WRAPPER when it is set (in the child:
 * its copy of the wrapper's words is never freed, exec replaces it). */
static void exec_sluice(const char *bin, const char *ini) {
    const char *w = wrapper();
    if (!w) {
        execl(bin, bin, ini, (char *)NULL);
        return;
    }
    /* The wrapper may name its report after the test: valgrind's
     * --log-file=DIR/%q{SLUICE_TEST_NAME}.%p.vg */
    setenv("SLUICE_TEST_NAME", test_name, 1);
    char *words = strdup(w), *argv[64], *save = NULL;
    int n = 0;
    for (char *t = strtok_r(words, " ", &save); t && n < 61; t = strtok_r(NULL, " ", &save))
        argv[n++] = t;
    argv[n++] = (char *)bin, argv[n++] = (char *)ini, argv[n] = NULL;
    execvp(argv[0], argv);
}

/* Forks sluice on s->ini and waits until it accepts. Returns false if it
 * exited because its port was taken meanwhile (the caller retries). */
static bool launch(it_sluice_t *s) {
    const char *bin = getenv("SLUICE_BIN");
    IT_ASSERT(bin, "SLUICE_BIN not set");
    pid_t pid = fork();
    if (pid == 0) {
        exec_sluice(bin, s->ini);
        _exit(127);
    }
    s->pid = pid;
    for (int i = 0; i < 8; i++)
        if (!running[i]) {
            running[i] = s;
            break;
        }
    double deadline = it_now() + 10 * slow_factor();
    while (it_now() < deadline) {
        int fd = it_raw_connect(s);
        if (fd >= 0) {
            close(fd);
            return true;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            for (int i = 0; i < 8; i++)
                if (running[i] == s) running[i] = NULL;
            if (it_log_count(s, "cannot listen") > 0) return false;
            it_fail(__FILE__, __LINE__, "sluice exited at start (status %d)", st);
        }
        usleep(20000);
    }
    it_fail(__FILE__, __LINE__, "sluice did not accept within %.0f s", 10 * slow_factor());
    return false;
}

/* The log goes to SLUICE_TEST_LOG_DIR when it is set (CTest sets it to one
 * directory of the build, which is kept, so that tests/check_secrets.py can
 * read every log of the run), else into the sluice's own temp dir. */
static void log_path(it_sluice_t *s) {
    static int seq; /* sluices started by this process */
    const char *d = getenv("SLUICE_TEST_LOG_DIR");
    if (!d || !*d) {
        snprintf(s->log, sizeof s->log, "%s/sluice.log", s->dir);
        return;
    }
    mkdir(d, 0755);
    snprintf(s->log, sizeof s->log, "%s/%s.%d.%d.log", d, test_name, (int)getpid(), seq++);
}

/* verbose = SLUICE_TEST_VERBOSE before the test's own options (which may
 * set it again), so that chosen tests run at the highest verbosity. */
static const char *verbose_line(void) {
    static char line[32];
    const char *v = getenv("SLUICE_TEST_VERBOSE");
    if (!v || !*v) return "";
    snprintf(line, sizeof line, "verbose = %d\n", atoi(v));
    return line;
}

/* Whether opts sets key (at the start of one of its lines). */
static bool sets_key(const char *opts, const char *key) {
    size_t n = strlen(key);
    for (const char *p = opts; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!strncmp(p, key, n) && (p[n] == ' ' || p[n] == '=' || p[n] == '\t')) return true;
    }
    return false;
}

/* The workers of a sluice whose test does not choose: SLUICE_TEST_WORKERS
 * when set (a "workers = N" line in every config), else sluice's own
 * default (no line: one per online CPU, so two on the 2-core CI machine
 * and the threaded path is what the suite tests). NULL: no line. */
static const char *test_workers(void) {
    const char *v = getenv("SLUICE_TEST_WORKERS");
    return v && *v ? v : NULL;
}

int it_workers(void) {
    const char *v = test_workers();
    long n = v ? atol(v) : 0;
    /* As sl_workers_wanted: 0 is one per online CPU, capped at what a
     * cancel key can name (64). */
    if (n <= 0) n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    return n > 64 ? 64 : (int)n;
}

void it_sluice_start(it_sluice_t *s, const char *opts_in, const char *dbs_in) {
    char *opts = expand(opts_in), *dbs = expand(dbs_in);
    char workers[64] = "";
    if (!sets_key(opts, "workers") && test_workers())
        snprintf(workers, sizeof workers, "workers = %s\n", test_workers());
    memset(s, 0, sizeof *s);
    snprintf(s->dir, sizeof s->dir, "%s", start_dir ? start_dir : "/tmp/sluice-it-XXXXXX");
    IT_ASSERT(start_dir || mkdtemp(s->dir), "mkdtemp: %s", strerror(errno));
    if (ndirs < 64 && !start_dir) dirs[ndirs++] = strdup(s->dir);
    snprintf(s->ini, sizeof s->ini, "%s/sluice.ini", s->dir);
    log_path(s);
    char path[400];
    snprintf(path, sizeof path, "%s/userlist.txt", s->dir);
    FILE *u = fopen(path, "w");
    fprintf(u, "\"sl_scram\" \"scram_pw\"\n\"sl_md5\" \"md5_pw\"\n\"postgres\" \"unused\"\n"
               "\"sl_tls\" \"tls_pw\"\n");
    fclose(u);
    /* A port found free can be taken by another socket before sluice binds
     * it: then try another. */
    for (int attempt = 0;; attempt++) {
        s->port = start_port ? start_port : it_free_port();
        FILE *f = fopen(s->ini, "w");
        fprintf(f,
                "[databases]\n"
                "sluice_test = host=127.0.0.1 port=%d\n"
                "postgres = host=127.0.0.1 port=%d\n"
                "%s\n"
                "[sluice]\n"
                "listen_addr = 127.0.0.1\n"
                "listen_port = %d\n"
                "unix_socket_dir = %s\n"
                "logfile = %s\n"
                "auth_type = scram-sha-256\n"
                "auth_file = %s\n"
                "%s"
                "%s"
                "%s\n",
                it_cl.primary, it_cl.primary, dbs ? dbs : "", s->port, s->dir, s->log, path,
                verbose_line(), workers, opts ? opts : "");
        fclose(f);
        if (launch(s)) break;
        IT_ASSERT(attempt < 3, "sluice could not bind a free port");
        fprintf(stderr, "port %d was taken before sluice bound it; retrying\n", s->port);
        unlink(s->log);
    }
    free(opts), free(dbs);
}

void it_sluice_start_at(it_sluice_t *s, const char *dir, int port, const char *opts,
                        const char *dbs) {
    start_dir = dir, start_port = port;
    it_sluice_start(s, opts, dbs);
    start_dir = NULL, start_port = 0;
    /* The port answered, but maybe through another sluice sharing it. */
    IT_ASSERT(it_log_wait(s, "started pid", 1, 10) == 1, "sluice did not start in %s", dir);
}

void it_dir_remove_on_pass(const char *dir) {
    if (ndirs < 64) dirs[ndirs++] = strdup(dir);
}

int it_sluice_stop(it_sluice_t *s, int sig) {
    if (s->pid <= 0) return -1;
    kill(s->pid, sig);
    int st = 0;
    double deadline = it_now() + 30 * slow_factor();
    while (waitpid(s->pid, &st, WNOHANG) == 0) {
        if (it_now() > deadline) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
            s->pid = 0;
            it_fail(__FILE__, __LINE__, "sluice did not exit within %.0f s of signal %d",
                    30 * slow_factor(), sig);
        }
        usleep(20000);
    }
    s->pid = 0;
    for (int i = 0; i < 8; i++)
        if (running[i] == s) running[i] = NULL;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

PGresult *it_show(PGconn *c, const char *what) {
    PGresult *r = PQexec(c, what);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", what, PQresultErrorMessage(r));
    return r;
}

int it_col(const PGresult *r, const char *name) {
    int i = PQfnumber(r, name);
    IT_ASSERT(i >= 0, "column %s missing", name);
    return i;
}

long it_sluice_status_kb(const it_sluice_t *s, const char *field) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)s->pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, field, n) && line[n] == ':') kb = atol(line + n + 1);
    if (f) fclose(f);
    return kb;
}

long it_sluice_vmhwm_kb(const it_sluice_t *s) {
    return it_sluice_status_kb(s, "VmHWM");
}

int it_log_count(const it_sluice_t *s, const char *needle) {
    FILE *f = fopen(s->log, "r");
    if (!f) return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

int it_log_wait(const it_sluice_t *s, const char *needle, int atleast, double secs) {
    double deadline = it_now() + secs;
    int n;
    while ((n = it_log_count(s, needle)) < atleast && it_now() < deadline)
        usleep(20000);
    return n;
}

long it_stats_value(const it_sluice_t *s, const char *key) {
    /* The stats line comes every stats_period: wait for one after now. */
    int before = it_log_count(s, "msg=\"stats: ");
    double deadline = it_now() + 5;
    while (it_log_count(s, "msg=\"stats: ") == before && it_now() < deadline)
        usleep(50000);
    FILE *f = fopen(s->log, "r");
    if (!f) return -1;
    char line[4096], pat[128];
    snprintf(pat, sizeof pat, " %s=", key);
    long v = -1;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "msg=\"stats: ") ? strstr(line, pat) : NULL;
        if (p) v = atol(p + strlen(pat));
    }
    fclose(f);
    return v;
}

PGconn *it_connect_db(const it_sluice_t *s, const char *user, const char *db, const char *extra) {
    const char *pw = !strcmp(user, "sl_md5")   ? "md5_pw"
                     : !strcmp(user, "sl_tls") ? "tls_pw"
                                               : "scram_pw";
    char ci[1024];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d dbname=%s user=%s password=%s %s", s->port, db,
             user, pw, extra ? extra : "");
    return PQconnectdb(ci);
}

PGconn *it_connect(const it_sluice_t *s, const char *user, const char *extra) {
    PGconn *c = it_connect_db(s, user, "sluice_test", extra);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "connect as %s failed: %s", user, PQerrorMessage(c));
    return c;
}

int it_worker_of(PGconn *c) {
    return (int)(((uint32_t)PQbackendPID(c) >> 10) & 0x3F);
}

PGconn *it_connect_on_worker(const it_sluice_t *s, const char *user, const char *db, int worker) {
    for (int i = 0; i < 64; i++) {
        PGconn *c = it_connect_db(s, user, db, NULL);
        IT_ASSERT(PQstatus(c) == CONNECTION_OK, "connect as %s failed: %s", user,
                  PQerrorMessage(c));
        if (it_worker_of(c) == worker) return c;
        PQfinish(c);
    }
    IT_ASSERT(false, "64 connections of %s: none landed on worker %d", user, worker);
    return NULL;
}

static char own_pg[64];

const char *it_own_pg_dir(void) {
    return own_pg;
}

void it_own_pg_remove(void) {
    if (!own_pg[0]) return;
    char cmd[400];
    snprintf(cmd, sizeof cmd,
             "cd / && %s /usr/lib/postgresql/15/bin/pg_ctl -D %s/pg -m immediate -w stop "
             ">/dev/null 2>&1; rm -rf %s",
             getuid() == 0 ? "runuser -u postgres --" : "", own_pg, own_pg);
    if (system(cmd) != 0) fprintf(stderr, "removing %s failed\n", own_pg);
    own_pg[0] = '\0';
}

int it_own_pg_create(const char *tmpl, const char *conf, const char *hba) {
    snprintf(own_pg, sizeof own_pg, "%s", tmpl);
    IT_ASSERT(mkdtemp(own_pg), "mkdtemp %s", tmpl);
    it_on_fail(it_own_pg_remove);
    int port = it_free_port();
    char cmd[4096];
    int n = snprintf(cmd, sizeof cmd,
                     "chmod 755 %s && { [ \"$(id -u)\" != 0 ] || chown postgres %s; } && cd / && "
                     "%s /usr/lib/postgresql/15/bin/initdb -D %s/pg -U postgres -A trust "
                     "--no-sync >%s/initdb.log 2>&1 && "
                     "printf \"port = %d\\nlisten_addresses = '127.0.0.1'\\n"
                     "unix_socket_directories = '%s'\\nfsync = off\\nlog_min_messages = "
                     "warning\\n%s\" >>%s/pg/postgresql.conf",
                     own_pg, own_pg, getuid() == 0 ? "runuser -u postgres --" : "", own_pg, own_pg,
                     port, own_pg, conf ? conf : "", own_pg);
    if (hba)
        snprintf(cmd + n, sizeof cmd - (size_t)n, " && printf '%s' >%s/pg/pg_hba.conf", hba,
                 own_pg);
    IT_ASSERT(system(cmd) == 0, "initdb failed: see %s/initdb.log", own_pg);
    it_pg_ctl(own_pg, "pg", "start");
    return port;
}

void it_pg_ctl(const char *dir, const char *node, const char *action) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd,
             "cd / && %s /usr/lib/postgresql/15/bin/pg_ctl -D %s/%s -l %s/%s.log -w %s "
             ">/dev/null 2>&1",
             getuid() == 0 ? "runuser -u postgres --" : "", dir, node, dir, node, action);
    IT_ASSERT(system(cmd) == 0, "pg_ctl %s %s", action, node);
}

PGconn *it_direct(void) {
    return it_direct_port(it_cl.primary);
}

PGconn *it_direct_port(int port) {
    char ci[512];
    snprintf(ci, sizeof ci, "host=%s port=%d dbname=sluice_test user=postgres", it_cl.sockdir,
             port);
    PGconn *c = PQconnectdb(ci);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "direct connect failed: %s", PQerrorMessage(c));
    return c;
}

const char *it_value(PGconn *c, const char *sql) {
    static _Thread_local char buf[4096]; /* per thread: tests run clients in threads */
    PGresult *r = PQexec(c, sql);
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    IT_ASSERT(PQntuples(r) > 0, "%s: no rows", sql);
    snprintf(buf, sizeof buf, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    checks++;
    return buf;
}

void it_exec(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    IT_ASSERT(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
    checks++;
}

const char *it_fails(PGconn *c, const char *sql) {
    static _Thread_local char code[8];
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    IT_ASSERT(st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK, "%s: expected an error", sql);
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(code, sizeof code, "%s", s ? s : "none");
    PQclear(r);
    checks++;
    return code;
}

void it_fails_with(PGconn *c, const char *sql, const char *needle) {
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    IT_ASSERT(st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK, "%s: expected an error", sql);
    IT_ASSERT(strstr(PQerrorMessage(c), needle), "%s: error lacks '%s': %s", sql, needle,
              PQerrorMessage(c));
    checks++;
}

int it_done(void) {
    kill_all();
    /* Passed: the logs are not needed any more. */
    for (int i = 0; i < ndirs; i++) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dirs[i]);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dirs[i]);
        free(dirs[i]);
    }
    printf("%s: passed\n", test_name);
    return 0;
}

/* ---- shared workloads ---- */

void it_copy_round_trip(PGconn *c, const char *table) {
    char sql[128];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s", table);
    it_exec(c, sql);
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id int, name text)", table);
    it_exec(c, sql);
    snprintf(sql, sizeof sql, "COPY %s FROM STDIN", table);
    PGresult *r = PQexec(c, sql);
    IT_ASSERT(PQresultStatus(r) == PGRES_COPY_IN, "copy in: %s", PQerrorMessage(c));
    PQclear(r);
    char line[64];
    for (int i = 0; i < 100000; i++) {
        int n = snprintf(line, sizeof line, "%d\tname %d\n", i, i);
        IT_ASSERT(PQputCopyData(c, line, n) == 1, "put copy data");
    }
    IT_ASSERT(PQputCopyEnd(c, NULL) == 1, "copy end");
    r = PQgetResult(c);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "copy in result: %s", PQerrorMessage(c));
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    IT_ASSERT(!strcmp(it_value(c, sql), "100000"), "rows in");
    snprintf(sql, sizeof sql, "SELECT sum(id) FROM %s", table);
    IT_ASSERT(!strcmp(it_value(c, sql), "4999950000"), "sum in");

    snprintf(sql, sizeof sql, "COPY %s TO STDOUT", table);
    r = PQexec(c, sql);
    IT_ASSERT(PQresultStatus(r) == PGRES_COPY_OUT, "copy out: %s", PQerrorMessage(c));
    PQclear(r);
    long rows = 0, sum = 0;
    char *buf;
    int n;
    while ((n = PQgetCopyData(c, &buf, 0)) > 0) {
        rows++;
        sum += atol(buf);
        PQfreemem(buf);
    }
    IT_ASSERT(n == -1, "copy out ended cleanly");
    r = PQgetResult(c);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "copy out result");
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    IT_ASSERT(rows == 100000 && sum == 4999950000L, "rows out %ld sum %ld", rows, sum);
    /* A failed COPY IN leaves the connection usable. */
    snprintf(sql, sizeof sql, "COPY %s FROM STDIN", table);
    r = PQexec(c, sql);
    PQclear(r);
    PQputCopyData(c, "1\tx\n", 4);
    PQputCopyEnd(c, "client gave up");
    r = PQgetResult(c);
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR, "copy fail reported");
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    IT_ASSERT(!strcmp(it_value(c, sql), "100000"), "no partial copy");
    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    it_exec(c, sql);
}

void it_stream_400mb(PGconn *c) {
    /* 200,000 rows of 1,000 bytes, read as it arrives (COPY streams). */
    PGresult *r = PQexec(c, "COPY (SELECT repeat('x', 1000) FROM generate_series(1, 200000)) "
                            "TO STDOUT");
    IT_ASSERT(PQresultStatus(r) == PGRES_COPY_OUT, "stream: %s", PQerrorMessage(c));
    PQclear(r);
    long long bytes = 0;
    char *buf;
    int n;
    while ((n = PQgetCopyData(c, &buf, 0)) > 0) {
        bytes += n;
        PQfreemem(buf);
    }
    while ((r = PQgetResult(c)))
        PQclear(r);
    IT_ASSERT(bytes == 200000LL * 1001, "streamed %lld bytes", bytes);
    /* And a plain SELECT result of 200 MB in single-row mode. */
    IT_ASSERT(PQsendQuery(c, "SELECT repeat('y', 1000) FROM generate_series(1, 200000)"), "send");
    PQsetSingleRowMode(c);
    long rows = 0;
    while ((r = PQgetResult(c))) {
        if (PQresultStatus(r) == PGRES_SINGLE_TUPLE)
            rows++;
        else
            IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "select: %s", PQerrorMessage(c));
        PQclear(r);
    }
    IT_ASSERT(rows == 200000, "rows %ld", rows);
}
