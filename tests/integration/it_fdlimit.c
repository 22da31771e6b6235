/* Running out of file descriptors: sluice under RLIMIT_NOFILE = 64 gets 100
 * connections. Accepting must not spin (little CPU, a handful of log lines
 * while they are held), the clients it has no descriptor for are told so
 * (53300), and once they are gone a normal client connects and queries. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"

#define LIMIT 64
#define CONNS 100
#define HOLD_S 3.0

static long file_size(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

int main(void) {
    it_init("it_fdlimit");
    it_sluice_t s;
    it_sluice_start(&s, "max_client_conn = 1000\n", NULL);
    struct rlimit lim = {.rlim_cur = LIMIT, .rlim_max = LIMIT};
    IT_ASSERT(prlimit(s.pid, RLIMIT_NOFILE, &lim, NULL) == 0, "prlimit: %s", strerror(errno));

    int fds[CONNS];
    for (int i = 0; i < CONNS; i++) {
        fds[i] = it_raw_connect(&s);
        IT_ASSERT(fds[i] >= 0, "connect %d: the backlog should take it", i);
    }
    const char *needle = "could not be accepted";
    double cpu0 = it_proc_cpu(s.pid);
    long log0 = file_size(s.log);
    int lines0 = it_log_count(&s, "Too many open files");
    usleep((useconds_t)(HOLD_S * 1e6));
    double cpu = it_proc_cpu(s.pid) - cpu0;
    long grown = file_size(s.log) - log0;
    int lines = it_log_count(&s, "Too many open files") - lines0;
    printf("while %d connections were held for %.0f s: %.2f s CPU, log +%ld bytes, %d lines "
           "about EMFILE\n",
           CONNS, HOLD_S, cpu, grown, lines);
    IT_ASSERT(cpu < 0.5, "sluice used %.2f s CPU in %.0f s at the fd limit: accept spins", cpu,
              HOLD_S);
    IT_ASSERT(lines <= 5, "%d log lines about EMFILE in %.0f s: the log floods", lines, HOLD_S);
    IT_ASSERT(it_log_count(&s, needle) >= 1, "the fd exhaustion is reported");

    /* The last connections found no descriptor: they were told why. */
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fds[CONNS - 1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char body[512] = "";
    int type = it_raw_read_msg(fds[CONNS - 1], body, sizeof body - 1);
    IT_ASSERT(type == 'E', "a client over the limit gets an ErrorResponse (got %d)", type);
    IT_ASSERT(memmem(body, sizeof body, "53300", 5) && memmem(body, sizeof body, "too many", 8),
              "the error is 53300 and says why");

    for (int i = 0; i < CONNS; i++)
        close(fds[i]);
    /* Descriptors come free as sluice sees the connections close. */
    PGconn *c = NULL;
    double deadline = it_now() + 10;
    for (;;) {
        c = it_connect_db(&s, "sl_scram", "sluice_test", "connect_timeout=5");
        if (PQstatus(c) == CONNECTION_OK || it_now() > deadline) break;
        PQfinish(c);
        usleep(200000);
    }
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "a client connects once descriptors are free: %s",
              PQerrorMessage(c));
    IT_ASSERT(!strcmp(it_value(c, "SELECT 41 + 1"), "42"), "and queries");
    PQfinish(c);
    IT_ASSERT(it_log_wait(&s, "works again", 1, 5) >= 1, "the recovery is logged");
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    return it_done();
}
