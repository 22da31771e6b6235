/* Several instances (peering): two sluices, peer_id 1 and 2, share one TCP
 * port with so_reuseport (the kernel spreads connections between them, as
 * a load balancer would) and list each other's Unix socket in [peers].
 *  (a) 100 clients connect to the shared port, both instances get some
 *      (the peer_id in each client's BackendKeyData says which), each runs
 *      SELECT pg_sleep(10) and is cancelled with PQcancel, which opens a
 *      new connection to the shared port: about half of the cancels reach
 *      the other instance, which forwards them. Every query ends with
 *      57014 within 1 s of its cancel (sent 5 at a time).
 *  (b) a CancelRequest whose TTL is spent (0) naming the other peer is
 *      dropped, not forwarded: the query goes on; the same key with TTL 1
 *      is forwarded and its owner cancels it (a key of its own matches
 *      whatever its TTL).
 *  (c) a reload may change [peers] but not peer_id; peers that point at
 *      each other for peer 3 (a ring) pass a cancel naming 3 back and forth
 *      3 times (the TTL), then drop it; a peer missing from [peers] is
 *      dropped at once.
 *  (e) (run before d) a peer named by a host name, over TCP: looked up,
 *      forwarded, cancelled; a name that does not resolve is logged.
 *  (d) forwards to a peer that never answers are bounded (pool_size) and
 *      time out; an absent peer fails at once; a shutdown ends forwards in
 *      flight (and, under ASan, leaks nothing). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"

#define NCLIENTS 100
#define SLEEP_SQL "SELECT pg_sleep(10)"
#define CANCEL_BURST 5 /* cancels sent back to back before their queries end */

static char root[64], dir_a[96], dir_b[96];
static int port;

/* The [sluice] options and [peers] of the instance with id `id`; peers is
 * the [peers] section's lines. */
static void opts_for(char *out, size_t cap, int id, const char *dir, const char *peers) {
    snprintf(out, cap,
             "auth_type = trust\nso_reuseport = 1\npeer_id = %d\nunix_socket_dir = %s\n"
             "default_pool_size = 100\nmax_client_conn = 300\n[peers]\n%s",
             id, dir, peers);
}

/* The [peers] both instances share: 1 is A's Unix socket, 2 is B's. */
static void base_peers(char *out, size_t cap) {
    snprintf(out, cap, "1 = host=%s port=%d\n2 = host=%s port=%d\n", dir_a, port, dir_b, port);
}

/* Rewrites s's sluice.ini with peer_id and [peers] replaced, and reloads. */
static void reload_with(it_sluice_t *s, int id, const char *peers) {
    FILE *f = fopen(s->ini, "r");
    IT_ASSERT(f, "read %s", s->ini);
    char text[8192];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *cut = strstr(text, "peer_id = ");
    IT_ASSERT(cut, "no peer_id in %s", s->ini);
    *cut = '\0'; /* peer_id, then the rest of opts_for's lines, come last */
    char opts[2048];
    opts_for(opts, sizeof opts, id, s->dir, peers);
    f = fopen(s->ini, "w");
    fprintf(f, "%s%s", text, strstr(opts, "peer_id = "));
    fclose(f);
    kill(s->pid, SIGHUP);
}

static int unix_connect(const char *dir) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s/.s.PGSQL.%d", dir, port);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    IT_ASSERT(fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect %s: %s",
              a.sun_path, strerror(errno));
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static uint32_t be32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] << 24 | (uint32_t)u[1] << 16 | (uint32_t)u[2] << 8 | u[3];
}

static void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

/* Reads a login's replies up to ReadyForQuery from fd (a StartupMessage
 * sent); its BackendKeyData into *pid and *key. */
static void read_login(int fd, uint32_t *pid, uint32_t *key) {
    char body[256];
    int t;
    *pid = *key = 0;
    while ((t = it_raw_read_msg(fd, body, sizeof body)) != 'Z') {
        IT_ASSERT(t > 0 && t != 'E', "raw login failed");
        if (t == 'K') *pid = be32(body), *key = be32(body + 4);
    }
    IT_ASSERT(*pid != 0, "no BackendKeyData");
}

/* A raw client of the instance listening in dir, logged in; its
 * BackendKeyData into *pid and *key. */
static int login_at(const char *dir, uint32_t *pid, uint32_t *key) {
    int fd = unix_connect(dir);
    unsigned char pkt[128];
    int n = 8;
    n += snprintf((char *)pkt + n, sizeof pkt - (size_t)n, "user") + 1;
    n += snprintf((char *)pkt + n, sizeof pkt - (size_t)n, "sl_scram") + 1;
    n += snprintf((char *)pkt + n, sizeof pkt - (size_t)n, "database") + 1;
    n += snprintf((char *)pkt + n, sizeof pkt - (size_t)n, "sluice_test") + 1;
    pkt[n++] = 0;
    put32(pkt, (uint32_t)n), put32(pkt + 4, 196608);
    IT_ASSERT(write(fd, pkt, (size_t)n) == n, "startup");
    read_login(fd, pid, key);
    return fd;
}

/* A CancelRequest (pid, key) to the instance listening in dir; returns once
 * that instance closed the connection, as PQcancel does. */
static void cancel_at(const char *dir, uint32_t pid, uint32_t key) {
    int fd = unix_connect(dir);
    unsigned char pkt[16];
    put32(pkt, 16), put32(pkt + 4, 80877102), put32(pkt + 8, pid), put32(pkt + 12, key);
    IT_ASSERT(write(fd, pkt, 16) == 16, "cancel request");
    char c;
    IT_ASSERT(read(fd, &c, 1) == 0, "the cancel connection was not closed");
    close(fd);
}

/* Waits until n sessions of the primary run sql (the cancels that follow
 * must find them running, not still on their way). */
static void wait_running(PGconn *direct, const char *sql, int n) {
    char q[256];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = '%s'", sql);
    double deadline = it_now() + 8;
    int got = 0;
    while ((got = atoi(it_value(direct, q))) < n && it_now() < deadline)
        usleep(20000);
    IT_ASSERT(got >= n, "only %d of %d sessions run %s", got, n, sql);
}

/* Runs a query of 10 s on raw connection fd and waits until the primary
 * runs it. */
static void start_sleep(int fd, const char *sql) {
    it_wire_t w = {.n = 0};
    it_wire_query(&w, sql);
    IT_ASSERT(write(fd, w.b, (size_t)w.n) == w.n, "query");
    PGconn *direct = it_direct();
    wait_running(direct, sql, 1);
    PQfinish(direct);
}

static int peer_of(uint32_t pid) {
    return (int)(pid >> 16 & 0x3FFF);
}

typedef struct client {
    PGconn *conn;
    double cancelled_at, ended_at; /* it_now(); 0: not yet */
    char sqlstate[8];              /* of its query's result; "" if it succeeded */
} client_t;

/* Collects the results that came in; returns how many queries are still
 * running. */
static int sweep(client_t *cl) {
    int running = 0;
    for (int i = 0; i < NCLIENTS; i++) {
        client_t *c = &cl[i];
        if (c->ended_at > 0) continue;
        IT_ASSERT(PQconsumeInput(c->conn), "client %d: %s", i, PQerrorMessage(c->conn));
        if (PQisBusy(c->conn)) {
            running++;
            continue;
        }
        c->ended_at = it_now();
        for (PGresult *r; (r = PQgetResult(c->conn)) != NULL; PQclear(r)) {
            const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            if (!c->sqlstate[0]) snprintf(c->sqlstate, sizeof c->sqlstate, "%s", st ? st : "-");
        }
    }
    return running;
}

/* Waits until the queries of clients 0..upto-1 ended, or secs passed. */
static void wait_ended(client_t *cl, int upto, double secs) {
    double deadline = it_now() + secs;
    for (;;) {
        sweep(cl);
        struct pollfd pf[NCLIENTS];
        int n = 0;
        for (int i = 0; i < upto; i++)
            if (cl[i].ended_at == 0) pf[n++] = (struct pollfd){PQsocket(cl[i].conn), POLLIN, 0};
        if (n == 0 || it_now() >= deadline) return;
        poll(pf, (nfds_t)n, 20);
    }
}

static int by_value(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static void cancel_every_client(it_sluice_t *a, it_sluice_t *b) {
    static client_t cl[NCLIENTS];
    char ci[256];
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d dbname=sluice_test user=sl_scram connect_timeout=10", port);
    int on[3] = {0};
    for (int i = 0; i < NCLIENTS; i++) {
        cl[i].conn = PQconnectdb(ci);
        IT_ASSERT(PQstatus(cl[i].conn) == CONNECTION_OK, "client %d: %s", i,
                  PQerrorMessage(cl[i].conn));
        int peer = peer_of((uint32_t)PQbackendPID(cl[i].conn));
        IT_ASSERT(peer == 1 || peer == 2, "client %d: its key names peer %d", i, peer);
        on[peer]++;
    }
    printf("clients on instance 1: %d, on instance 2: %d\n", on[1], on[2]);
    IT_ASSERT(on[1] > 0 && on[2] > 0, "the kernel gave every client to one instance (%d, %d)",
              on[1], on[2]);
    for (int i = 0; i < NCLIENTS; i++)
        IT_ASSERT(PQsendQuery(cl[i].conn, SLEEP_SQL), "send: %s", PQerrorMessage(cl[i].conn));
    PGconn *direct = it_direct();
    wait_running(direct, SLEEP_SQL, NCLIENTS);
    PQfinish(direct);

    /* In bursts: PQcancel returns once sluice took the request, and 100
     * back to back would time the queue of cancels to PostgreSQL (each a
     * forked process there) on a loaded 2-core machine, not the forwarding. */
    for (int i = 0; i < NCLIENTS; i++) {
        PGcancel *pc = PQgetCancel(cl[i].conn);
        char err[256];
        cl[i].cancelled_at = it_now();
        IT_ASSERT(pc && PQcancel(pc, err, sizeof err), "PQcancel %d: %s", i, err);
        PQfreeCancel(pc);
        sweep(cl);
        if ((i + 1) % CANCEL_BURST == 0) wait_ended(cl, i + 1, 2);
    }
    wait_ended(cl, NCLIENTS, 3);
    int late = 0;
    double took[NCLIENTS];
    for (int i = 0; i < NCLIENTS; i++) {
        client_t *c = &cl[i];
        took[i] = c->ended_at > 0 ? c->ended_at - c->cancelled_at : 99;
        if (took[i] > 1.0 || strcmp(c->sqlstate, "57014") != 0) {
            fprintf(stderr, "client %d (peer %d): %s after %.2f s\n", i,
                    peer_of((uint32_t)PQbackendPID(c->conn)), c->sqlstate[0] ? c->sqlstate : "-",
                    took[i]);
            late++;
        }
    }
    char to_b[160], to_a[160];
    snprintf(to_b, sizeof to_b, "peer 2 forwarded to %s/.s.PGSQL.%d", dir_b, port);
    snprintf(to_a, sizeof to_a, "peer 1 forwarded to %s/.s.PGSQL.%d", dir_a, port);
    int forwarded = it_log_count(a, to_b) + it_log_count(b, to_a);
    qsort(took, NCLIENTS, sizeof *took, by_value);
    printf("cancels forwarded: %d by instance 1, %d by instance 2; cancel to 57014: median "
           "%.3f s, slowest %.3f s\n",
           it_log_count(a, to_b), it_log_count(b, to_a), took[NCLIENTS / 2], took[NCLIENTS - 1]);
    IT_ASSERT(late == 0, "%d of %d queries did not end with 57014 within 1 s of their cancel", late,
              NCLIENTS);
    IT_ASSERT(forwarded > 0, "no cancel went through the other instance");
    for (int i = 0; i < NCLIENTS; i++)
        PQfinish(cl[i].conn);
}

/* (b): the key of a client of B, sent to A with TTL 0, then with TTL 1. */
static void spent_ttl_not_forwarded(it_sluice_t *a) {
    uint32_t pid, key;
    int fd = login_at(dir_b, &pid, &key);
    IT_ASSERT(peer_of(pid) == 2, "B's key names peer %d", peer_of(pid));
    start_sleep(fd, "SELECT pg_sleep(10.5)");
    it_wire_t w = {.n = 0};

    cancel_at(dir_a, pid, key & ~0xC0u);
    IT_ASSERT(it_log_wait(a, "peer 2 dropped: its TTL is spent", 1, 5) == 1,
              "A did not drop a cancel whose TTL is spent");
    struct pollfd pf = {fd, POLLIN, 0};
    IT_ASSERT(poll(&pf, 1, 300) == 0, "the query ended after a cancel with TTL 0 (forwarded?)");

    double t0 = it_now();
    cancel_at(dir_a, pid, (key & ~0xC0u) | 0x40u);
    char msg[256] = "";
    const char *types = it_wire_exchange(fd, &w, 5, msg, sizeof msg);
    IT_ASSERT(strstr(types, "EZ") && strstr(msg, "canceling statement"),
              "a cancel with TTL 1 through A: got %s (%s)", types, msg);
    IT_ASSERT(it_now() - t0 < 2, "the forwarded cancel took %.1f s", it_now() - t0);
    close(fd);
}

/* (c): reloads, a ring for peer 3, a peer missing from [peers]. */
static void rings_end(it_sluice_t *a, it_sluice_t *b) {
    char peers[512], ring_a[1024], ring_b[1024];
    base_peers(peers, sizeof peers);
    snprintf(ring_a, sizeof ring_a, "%s3 = host=%s port=%d\n", peers, dir_b, port);
    snprintf(ring_b, sizeof ring_b, "%s3 = host=%s port=%d\n", peers, dir_a, port);
    /* peer_id is fixed: such a reload fails as a whole. */
    reload_with(a, 7, ring_a);
    IT_ASSERT(it_log_wait(a, "peer_id: cannot change from 1 to 7 on a running sluice", 1, 5) == 1,
              "a reload changed peer_id");
    IT_ASSERT(it_log_count(a, "configuration reloaded") == 0, "a reload changing peer_id passed");
    reload_with(a, 1, ring_a);
    reload_with(b, 2, ring_b);
    IT_ASSERT(it_log_wait(a, "configuration reloaded", 1, 5) == 1, "A did not reload");
    IT_ASSERT(it_log_wait(b, "configuration reloaded", 1, 5) == 1, "B did not reload");

    uint32_t pid = 3u << 16 | 5u, key = 0x12345678u | 0xC0u; /* peer 3, TTL 3 */
    cancel_at(dir_a, pid, key);
    const char *fwd = "cancel request for a client of peer 3 forwarded to";
    IT_ASSERT(it_log_wait(b, "peer 3 dropped: its TTL is spent", 1, 5) == 1,
              "the ring did not end at B after 3 hops");
    IT_ASSERT(it_log_wait(a, fwd, 2, 5) == 2 && it_log_wait(b, fwd, 1, 5) == 1,
              "hops: A %d (want 2), B %d (want 1)", it_log_count(a, fwd), it_log_count(b, fwd));
    /* Nothing more comes: the TTL is spent. */
    usleep(300000);
    IT_ASSERT(it_log_count(a, fwd) == 2 && it_log_count(b, fwd) == 1,
              "more hops than the TTL allows: A %d, B %d", it_log_count(a, fwd),
              it_log_count(b, fwd));
    IT_ASSERT(it_log_count(a, "peer 3 dropped") == 0, "A dropped a ring cancel");

    cancel_at(dir_a, 9u << 16 | 1u, key);
    IT_ASSERT(it_log_wait(a, "peer 9 dropped: peer 9 is not in [peers]", 1, 5) == 1,
              "a cancel for an unknown peer was not dropped");
}

/* (e): over TCP to a peer named by a host name, looked up off the loop
 * (every address it has, in order), and a name that does not resolve. */
static void by_host_name(it_sluice_t *a) {
    it_sluice_t c;
    it_sluice_start(&c, "auth_type = trust\npeer_id = 3\n", NULL);
    uint32_t pid, key;
    int fd = it_raw_startup(&c, "sl_scram", "sluice_test");
    read_login(fd, &pid, &key);
    IT_ASSERT(peer_of(pid) == 3, "C's key names peer %d", peer_of(pid));
    start_sleep(fd, "SELECT pg_sleep(10.2)");

    char peers[512], more[1024];
    base_peers(peers, sizeof peers);
    snprintf(more, sizeof more, "%s3 = host=localhost port=%d\n6 = host=no-such-host.invalid\n",
             peers, c.port);
    int reloads = it_log_count(a, "configuration reloaded");
    reload_with(a, 1, more);
    IT_ASSERT(it_log_wait(a, "configuration reloaded", reloads + 1, 5) == reloads + 1,
              "A did not reload");
    cancel_at(dir_a, pid, key);
    it_wire_t w = {.n = 0};
    char msg[256] = "";
    const char *types = it_wire_exchange(fd, &w, 5, msg, sizeof msg);
    IT_ASSERT(strstr(types, "EZ") && strstr(msg, "canceling statement"),
              "a cancel through A to localhost:%d: got %s (%s)", c.port, types, msg);
    char want[128];
    snprintf(want, sizeof want, "peer 3 forwarded to localhost:%d", c.port);
    IT_ASSERT(it_log_wait(a, want, 1, 5) == 1, "A did not log the forward to C");
    close(fd);

    cancel_at(dir_a, 6u << 16 | 1u, key);
    IT_ASSERT(it_log_wait(a, "peer 6 not forwarded:", 1, 8) == 1,
              "no log line for a peer whose name does not resolve");
    IT_ASSERT(it_sluice_stop(&c, SIGTERM) == 0, "C did not exit cleanly");
}

/* (d): a peer that takes requests but never closes (a socket of this test
 * that nobody accepts on) gets at most its pool_size of forwards at once,
 * each ended after SL_PEERS_TIMEOUT_MS (2 s), which frees its slot; a peer
 * that is not there fails at once. Leaves one forward in flight, for the
 * shutdown to end. Returns the black hole's socket. */
static int slow_peers_bounded(it_sluice_t *a) {
    char hole[80], gone[80], peers[512], more[1024];
    snprintf(hole, sizeof hole, "%s/hole", root);
    snprintf(gone, sizeof gone, "%s/gone", root);
    IT_ASSERT(mkdir(hole, 0700) == 0, "mkdir");
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s/.s.PGSQL.%d", hole, port);
    int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    IT_ASSERT(bind(lfd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(lfd, 16) == 0,
              "black hole: %s", strerror(errno));
    base_peers(peers, sizeof peers);
    snprintf(more, sizeof more, "%s4 = host=%s port=%d pool_size=2\n5 = host=%s port=%d\n", peers,
             hole, port, gone, port);
    int reloads = it_log_count(a, "configuration reloaded");
    reload_with(a, 1, more);
    IT_ASSERT(it_log_wait(a, "configuration reloaded", reloads + 1, 5) == reloads + 1,
              "A did not reload");

    /* pool_size counts per worker (each loop its own forwards), and the
     * kernel picks the worker of each cancel connection: 2W + 1 cancels
     * put 3 on one of W workers. The harness runs SLUICE_TEST_WORKERS,
     * else sluice's default (one per online CPU): it_workers says which. */
    int workers = it_workers(), sent = 2 * workers + 1;
    uint32_t key = 0x2345u | 0xC0u;
    for (int i = 0; i < sent; i++)
        cancel_at(dir_a, 4u << 16 | (uint32_t)i, key);
    /* Logged before the cancel connection closed: counted at once. */
    int dropped = it_log_count(a, "peer 4 dropped: ");
    IT_ASSERT(dropped >= 1 && it_log_count(a, "in flight (2 to that peer") == dropped,
              "of %d forwards to a peer of pool_size 2 on %d worker(s), %d were dropped", sent,
              workers, dropped);
    int forwards = sent - dropped;
    IT_ASSERT(it_log_wait(a, "did not close the connection within 2000 ms", forwards, 8) ==
                  forwards,
              "the forwards to a peer that never closes did not time out");
    cancel_at(dir_a, 4u << 16 | 99u, key); /* a slot is free again */
    IT_ASSERT(it_log_count(a, "peer 4 dropped") == dropped,
              "a forward was dropped after the timeouts");

    cancel_at(dir_a, 5u << 16 | 1u, key);
    char want[256];
    snprintf(want, sizeof want, "peer 5 not forwarded: cannot connect to %s/.s.PGSQL.%d", gone,
             port);
    IT_ASSERT(it_log_wait(a, want, 1, 5) == 1, "no log line for a peer that is not there");
    return lfd;
}

int main(void) {
    it_init("it_peers");
    snprintf(root, sizeof root, "/tmp/sluice-peers-XXXXXX");
    IT_ASSERT(mkdtemp(root), "mkdtemp: %s", strerror(errno));
    it_dir_remove_on_pass(root);
    snprintf(dir_a, sizeof dir_a, "%s/a", root);
    snprintf(dir_b, sizeof dir_b, "%s/b", root);
    IT_ASSERT(mkdir(dir_a, 0700) == 0 && mkdir(dir_b, 0700) == 0, "mkdir");
    port = it_free_port();

    char peers[1024], opts[2048];
    base_peers(peers, sizeof peers);
    it_sluice_t a, b;
    opts_for(opts, sizeof opts, 1, dir_a, peers);
    it_sluice_start_at(&a, dir_a, port, opts, NULL);
    opts_for(opts, sizeof opts, 2, dir_b, peers);
    it_sluice_start_at(&b, dir_b, port, opts, NULL);

    cancel_every_client(&a, &b);
    spent_ttl_not_forwarded(&a);
    rings_end(&a, &b);
    by_host_name(&a);
    int hole = slow_peers_bounded(&a);

    IT_ASSERT(it_sluice_stop(&a, SIGTERM) == 0, "A did not exit cleanly");
    IT_ASSERT(it_log_count(&a, "peer 4 not forwarded: sluice is shutting down") == 1,
              "the shutdown did not end the forward in flight");
    close(hole);
    IT_ASSERT(it_sluice_stop(&b, SIGTERM) == 0, "B did not exit cleanly");
    return it_done();
}
