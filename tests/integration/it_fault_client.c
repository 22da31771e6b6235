/* Fault matrix, clients that misbehave, on a pool of ONE (so that a server
 * left dirty or stuck is the next client's):
 *  - a client that asks for a 1 GB result and never reads it: sluice's RSS
 *    grows by less than RSS_MAX_KB and the backend is throttled (it waits
 *    in ClientWrite: sluice stopped reading from it); once the client goes,
 *    the next client is served;
 *  - a client that disconnects in the middle of a COPY FROM STDIN (no row
 *    of it lands) and of a COPY TO STDOUT: the next client is served;
 *  - 10,000 connections at once to a sluice with max_client_conn = 100 (the
 *    test raises its RLIMIT_NOFILE and sluice's to the hard limit): each
 *    one is admitted or refused (53300, or closed) within FLOOD_S, no more
 *    than max_client_conn are admitted, the admitted ones query, sluice
 *    stays up and serves a new client once they are gone. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define RSS_MAX_KB (64 * 1024) /* growth allowed while 1 GB waits behind the client */
#define FLOOD 10000            /* connections at once */
#define FLOOD_MAX_CLIENT 100   /* that sluice's max_client_conn */
#define FLOOD_S 30.0           /* bound for every connection to learn its fate */

static it_sluice_t sl;

static long rss_kb(void) {
    return it_sluice_status_kb(&sl, "VmRSS");
}

static void next_client_served(const char *after) {
    PGconn *c = it_connect_db(&sl, "sl_scram", "sluice_test", "connect_timeout=10");
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "after %s: connect: %s", after, PQerrorMessage(c));
    PGresult *r = PQexec(c, "SELECT 'served', current_setting('transaction_isolation')");
    IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "after %s: the next client is served: %s",
              after, PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
}

static void never_reads(void) {
    long rss0 = rss_kb();
    int fd = it_raw_login(&sl, "sl_scram", "sluice_test");
    int small = 4096; /* a small receive buffer: the client's kernel holds little */
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    it_wire_t w = {0};
    it_wire_query(&w, "SELECT repeat('x', 1000) FROM generate_series(1, 1000000) /*never_read*/");
    IT_ASSERT(write(fd, w.b, (size_t)w.n) == w.n, "send");
    PGconn *d = it_direct();
    double deadline = it_now() + 20;
    const char *wait = "";
    while (strcmp(wait, "ClientWrite") != 0) {
        IT_ASSERT(it_now() < deadline, "the backend is throttled (wait_event %s)", wait);
        usleep(50000);
        wait = it_value(d, "SELECT coalesce(max(wait_event), 'none') FROM pg_stat_activity WHERE "
                           "query LIKE '%/*never_read*/' AND state = 'active'");
    }
    /* Held a while: nothing grows meanwhile. */
    usleep(1000000);
    long rss1 = rss_kb();
    printf("never read: backend waits in ClientWrite; sluice RSS %ld -> %ld kB\n", rss0, rss1);
    IT_ASSERT(rss1 - rss0 < RSS_MAX_KB, "RSS grew by %ld kB", rss1 - rss0);
    IT_ASSERT(!strcmp(it_value(d, "SELECT wait_event FROM pg_stat_activity WHERE query LIKE "
                                  "'%/*never_read*/' AND state = 'active'"),
                      "ClientWrite"),
              "still throttled");
    close(fd);
    next_client_served("a client that never read");
    PQfinish(d);
}

static void copy_in_gone(void) {
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    it_exec(c, "DROP TABLE IF EXISTS it_fault_copy");
    it_exec(c, "CREATE TABLE it_fault_copy (x int)");
    PGresult *r = PQexec(c, "COPY it_fault_copy FROM STDIN");
    IT_ASSERT(PQresultStatus(r) == PGRES_COPY_IN, "copy in: %s", PQerrorMessage(c));
    PQclear(r);
    for (int i = 0; i < 10000; i++)
        IT_ASSERT(PQputCopyData(c, "1\n", 2) == 1, "put");
    PQflush(c);
    shutdown(PQsocket(c), SHUT_RDWR); /* gone without CopyDone or CopyFail */
    PQfinish(c);
    next_client_served("a client gone mid-COPY in");
    c = it_connect(&sl, "sl_scram", NULL);
    IT_ASSERT(!strcmp(it_value(c, "SELECT count(*) FROM it_fault_copy"), "0"),
              "no row of the broken COPY");
    it_exec(c, "DROP TABLE it_fault_copy");
    PQfinish(c);
}

static void copy_out_gone(void) {
    PGconn *c = it_connect(&sl, "sl_scram", NULL);
    PGresult *r =
        PQexec(c, "COPY (SELECT repeat('y', 1000) FROM generate_series(1, 1000000)) TO STDOUT");
    IT_ASSERT(PQresultStatus(r) == PGRES_COPY_OUT, "copy out: %s", PQerrorMessage(c));
    PQclear(r);
    char *buf;
    for (int i = 0; i < 1000; i++) {
        IT_ASSERT(PQgetCopyData(c, &buf, 0) > 0, "copy data");
        PQfreemem(buf);
    }
    shutdown(PQsocket(c), SHUT_RDWR);
    PQfinish(c);
    double t0 = it_now();
    next_client_served("a client gone mid-COPY out");
    printf("after a client gone mid-COPY out, the next was served in %.2f s\n", it_now() - t0);
}

/* ---- 10,000 at once ---- */

enum fate { F_CONNECTING, F_SENT, F_ADMITTED, F_REFUSED, F_CLOSED };

static int nonblocking_connect(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    IT_ASSERT(fd >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    IT_ASSERT(rc == 0 || errno == EINPROGRESS, "connect: %s", strerror(errno));
    return fd;
}

static int startup_packet(char *pkt) {
    int n = 8;
    n += sprintf(pkt + n, "user") + 1;
    n += sprintf(pkt + n, "sl_scram") + 1;
    n += sprintf(pkt + n, "database") + 1;
    n += sprintf(pkt + n, "sluice_test") + 1;
    pkt[n++] = 0;
    uint32_t l = htonl((uint32_t)n), v = htonl(196608);
    memcpy(pkt, &l, 4), memcpy(pkt + 4, &v, 4);
    return n;
}

/* What the first bytes say, without consuming them. */
static enum fate peek_fate(int fd) {
    char b[512];
    ssize_t n = recv(fd, b, sizeof b, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return F_SENT;
    if (n <= 0) return F_CLOSED;
    if (b[0] == 'R') return F_ADMITTED;
    IT_ASSERT(b[0] == 'E' && memmem(b, (size_t)n, "53300", 5),
              "a refused connection gets 53300 (got type %c)", b[0]);
    return F_REFUSED;
}

static void flood(void) {
    struct rlimit lim;
    getrlimit(RLIMIT_NOFILE, &lim);
    lim.rlim_cur = lim.rlim_max;
    IT_ASSERT(setrlimit(RLIMIT_NOFILE, &lim) == 0, "setrlimit: %s", strerror(errno));
    int conns = FLOOD;
    if (lim.rlim_cur < (rlim_t)FLOOD + 200) conns = (int)lim.rlim_cur - 200;
    it_sluice_t s;
    char opts[256];
    snprintf(opts, sizeof opts,
             "auth_type = trust\nmax_client_conn = %d\nlisten_backlog = 4096\n"
             "default_pool_size = 2\npool_mode = transaction\n",
             FLOOD_MAX_CLIENT);
    it_sluice_start(&s, opts, NULL);
    IT_ASSERT(prlimit(s.pid, RLIMIT_NOFILE, &lim, NULL) == 0, "prlimit: %s", strerror(errno));
    int *fds = calloc((size_t)conns, sizeof *fds);
    enum fate *fate = calloc((size_t)conns, sizeof *fate);
    struct pollfd *pf = calloc((size_t)conns, sizeof *pf);
    char pkt[128];
    int plen = startup_packet(pkt);
    double t0 = it_now();
    for (int i = 0; i < conns; i++)
        fds[i] = nonblocking_connect(s.port);
    int open = conns, count[5] = {0};
    while (open > 0) {
        IT_ASSERT(it_now() - t0 < FLOOD_S, "%d of %d connections have no answer after %.0f s", open,
                  conns, FLOOD_S);
        int np = 0;
        for (int i = 0; i < conns; i++)
            if (fate[i] < F_ADMITTED)
                pf[np++] = (struct pollfd){.fd = fds[i],
                                           .events = fate[i] == F_CONNECTING ? POLLOUT : POLLIN};
        IT_ASSERT(poll(pf, (nfds_t)np, 200) >= 0, "poll: %s", strerror(errno));
        for (int k = 0, i = 0; k < np; k++) {
            while (fds[i] != pf[k].fd)
                i++;
            if (!pf[k].revents) continue;
            if (fate[i] == F_CONNECTING) {
                int err = 0;
                socklen_t el = sizeof err;
                getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &el);
                if (err || send(fds[i], pkt, (size_t)plen, MSG_NOSIGNAL) != plen) {
                    fate[i] = F_CLOSED; /* reset at connect: refused too */
                } else {
                    fate[i] = F_SENT;
                    continue;
                }
            } else {
                fate[i] = peek_fate(fds[i]);
                if (fate[i] == F_SENT) continue;
            }
            count[fate[i]]++;
            open--;
        }
    }
    double took = it_now() - t0;
    printf("%d connections at once, max_client_conn %d: %d admitted, %d refused with 53300, %d "
           "closed, all within %.1f s\n",
           conns, FLOOD_MAX_CLIENT, count[F_ADMITTED], count[F_REFUSED], count[F_CLOSED], took);
    IT_ASSERT(count[F_ADMITTED] >= 1 && count[F_ADMITTED] <= FLOOD_MAX_CLIENT,
              "admitted %d (at most max_client_conn)", count[F_ADMITTED]);
    IT_ASSERT(waitpid(s.pid, NULL, WNOHANG) == 0, "sluice is up");
    /* The admitted ones work. */
    int queried = 0;
    for (int i = 0; i < conns && queried < 5; i++) {
        if (fate[i] != F_ADMITTED) continue;
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) & ~O_NONBLOCK);
        struct timeval tv = {.tv_sec = 10};
        setsockopt(fds[i], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        char body[256];
        int t;
        while ((t = it_raw_read_msg(fds[i], body, sizeof body)) != 'Z')
            IT_ASSERT(t > 0, "an admitted client's login completes");
        it_wire_t w = {0};
        it_wire_query(&w, "SELECT 'admitted'");
        char v[64] = "";
        const char *types = it_wire_exchange(fds[i], &w, 10, v, sizeof v);
        IT_ASSERT(!strcmp(types, "TDCZ") && !strcmp(v, "admitted"),
                  "an admitted client queries: %s", types);
        queried++;
    }
    for (int i = 0; i < conns; i++)
        close(fds[i]);
    free(fds), free(fate), free(pf);
    PGconn *c = NULL;
    double deadline = it_now() + 10;
    do {
        PQfinish(c);
        usleep(100000);
        c = it_connect_db(&s, "sl_scram", "sluice_test", "connect_timeout=5");
    } while (PQstatus(c) != CONNECTION_OK && it_now() < deadline);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "a new client once they are gone: %s",
              PQerrorMessage(c));
    IT_ASSERT(!strcmp(it_value(c, "SELECT 'after the flood'"), "after the flood"), "and queries");
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
}

int main(void) {
    it_init("it_fault_client");
    it_sluice_start(&sl,
                    "auth_type = trust\npool_mode = transaction\ndefault_pool_size = "
                    "1\nquery_wait_timeout = 20\n",
                    NULL);
    copy_in_gone();
    copy_out_gone();
    never_reads();
    IT_ASSERT(it_sluice_stop(&sl, SIGTERM) == 0, "exit");
    flood();
    return it_done();
}
