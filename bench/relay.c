/* The floor of sluice's design, for the benchmarks: a bare epoll relay.
 * Each accepted client gets its own upstream TCP connection to PostgreSQL,
 * and bytes are copied both ways with no parsing, no pooling, no TLS and no
 * authentication of its own (the client logs in to PostgreSQL through it).
 * What a proxy on one epoll loop cannot do with less: a read and a write per
 * message batch in each direction, plus epoll_wait. bench/floor.sh compares
 * sluice's and PgBouncer's CPU per transaction with this one's.
 *
 *   relay LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT
 *
 * Listens on 127.0.0.1. Level-triggered epoll; a write that does not go out
 * whole is kept in the direction's buffer, the source stops being read and
 * the destination is watched for EPOLLOUT until it drains (backpressure, as
 * in any proxy). SIGINT or SIGTERM ends it. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_BYTES 16384 /* per direction: PgBouncer's default pkt_buf is 4096, sluice's 16384 */

typedef struct end end_t;

/* One direction's pending bytes: what the destination did not take yet. */
typedef struct {
    char data[BUF_BYTES];
    size_t off, len; /* bytes [off, off + len) still to write */
} pending_t;

/* One socket of a pair. Both ends of a pair are allocated together. */
struct end {
    int fd;
    end_t *peer;       /* the other socket of the pair */
    pending_t to_peer; /* read from this end, not yet written to peer */
    unsigned watch;    /* the epoll events registered now */
};

typedef struct pair {
    end_t client, server;   /* client first: a pair's address is its client end's */
    struct pair *next_dead; /* closed in this batch of events, freed after it */
} pair_t;

static volatile sig_atomic_t stop;
static int ep;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

/* The events an end must be watched for: readable unless its bytes still
 * wait for the peer, writable while the peer's bytes wait for it. */
static void rewatch(end_t *e) {
    unsigned want = (e->to_peer.len ? 0 : EPOLLIN) | (e->peer->to_peer.len ? EPOLLOUT : 0);
    if (want == e->watch) return;
    struct epoll_event ev = {.events = want, .data.ptr = e};
    epoll_ctl(ep, EPOLL_CTL_MOD, e->fd, &ev);
    e->watch = want;
}

static pair_t *dead; /* pairs closed during this batch: later events may still name them */

static void pair_close(pair_t *p) {
    if (p->client.fd < 0) return;
    close(p->client.fd); /* close removes them from the epoll set */
    close(p->server.fd);
    p->client.fd = p->server.fd = -1;
    p->next_dead = dead;
    dead = p;
}

static pair_t *pair_of(end_t *e) {
    return e->peer < e ? (pair_t *)(void *)e->peer : (pair_t *)(void *)e;
}

/* Writes what e read and kept; false when the peer's socket failed. */
static int drain(end_t *e) {
    pending_t *b = &e->to_peer;
    while (b->len) {
        ssize_t w = send(e->peer->fd, b->data + b->off, b->len, MSG_NOSIGNAL);
        if (w < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 1 : 0;
        b->off += (size_t)w;
        b->len -= (size_t)w;
    }
    b->off = 0;
    return 1;
}

/* e is readable: read once and write it straight to the peer. */
static int pump(end_t *e) {
    pending_t *b = &e->to_peer;
    ssize_t r = recv(e->fd, b->data, sizeof b->data, 0);
    if (r == 0) return 0;
    if (r < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
    b->off = 0;
    b->len = (size_t)r;
    return drain(e);
}

static int connect_upstream(const struct sockaddr_in *to) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* A blocking connect on loopback: the bench connects its clients once. */
    if (connect(fd, (const struct sockaddr *)to, sizeof *to) < 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void add(end_t *e) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = e};
    e->watch = EPOLLIN;
    epoll_ctl(ep, EPOLL_CTL_ADD, e->fd, &ev);
}

static void on_accept(int lfd, const struct sockaddr_in *up) {
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
        if (cfd < 0) return;
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int sfd = connect_upstream(up);
        pair_t *p = sfd >= 0 ? calloc(1, sizeof *p) : NULL;
        if (!p) {
            fprintf(stderr, "relay: upstream connect: %s\n", strerror(errno));
            close(cfd);
            if (sfd >= 0) close(sfd);
            continue;
        }
        p->client = (end_t){.fd = cfd, .peer = &p->server};
        p->server = (end_t){.fd = sfd, .peer = &p->client};
        add(&p->client);
        add(&p->server);
    }
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT\n", argv[0]);
        return 2;
    }
    struct sockaddr_in up = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[3]))};
    struct sockaddr_in me = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    if (inet_pton(AF_INET, argv[2], &up.sin_addr) != 1) {
        fprintf(stderr, "relay: %s is not an IPv4 address\n", argv[2]);
        return 2;
    }
    inet_pton(AF_INET, "127.0.0.1", &me.sin_addr);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&me, sizeof me) < 0 || listen(lfd, 1024) < 0) {
        fprintf(stderr, "relay: listen on port %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    ep = epoll_create1(0);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &lev);

    struct epoll_event evs[256];
    while (!stop) {
        int n = epoll_wait(ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            end_t *e = evs[i].data.ptr;
            if (!e) {
                on_accept(lfd, &up);
                continue;
            }
            if (e->fd < 0) continue; /* its pair closed earlier in this batch */
            unsigned got = evs[i].events;
            int ok = 1;
            if (got & EPOLLOUT) ok = drain(e->peer);
            if (ok && (got & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !e->to_peer.len) ok = pump(e);
            if (!ok) {
                pair_close(pair_of(e));
                continue;
            }
            rewatch(e);
            rewatch(e->peer);
        }
        while (dead) {
            pair_t *p = dead;
            dead = p->next_dead;
            free(p);
        }
    }
    return 0;
}
