/* What the kernel charges a proxy on this machine, for reading the floor
 * figures: the CPU of one bare system call, of the calls a poll loop makes
 * (epoll_ctl, epoll_wait with nothing ready, a read that finds nothing),
 * and of a blocking round trip between two processes (a write that wakes
 * the peer, a read that sleeps until the peer answers) over a Unix socket
 * pair and over loopback TCP. A proxy's transaction is about two such round
 * trips (client and server) plus its own code, so when a round trip costs
 * tens of microseconds of CPU, the kernel is most of any proxy's cost and
 * ratios between proxies move towards 1.
 *
 *   kernel_cost [ROUNDS]      (default 200000 calls, a tenth as many round trips)
 *
 * Prints one line per figure: microseconds of this process's CPU
 * (user + system, getrusage) per call or per round trip. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static double cpu_now(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void report(const char *what, double cpu0, long n) {
    printf("%-44s %8.2f us\n", what, (cpu_now() - cpu0) * 1e6 / (double)n);
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* The echoing peer of a round trip: reads 64 bytes, writes them back, n times. */
static pid_t echo_peer(int fd, long n) {
    pid_t p = fork();
    if (p < 0) die("fork");
    if (p == 0) {
        char b[64];
        for (long i = 0; i < n; i++)
            if (read(fd, b, sizeof b) != (ssize_t)sizeof b ||
                write(fd, b, sizeof b) != (ssize_t)sizeof b)
                _exit(1);
        _exit(0);
    }
    return p;
}

static void round_trips(const char *what, int mine, int peer, long n) {
    pid_t p = echo_peer(peer, n);
    close(peer);
    char b[64] = {0};
    double c0 = cpu_now();
    for (long i = 0; i < n; i++)
        if (write(mine, b, sizeof b) != (ssize_t)sizeof b ||
            read(mine, b, sizeof b) != (ssize_t)sizeof b)
            die("round trip");
    report(what, c0, n);
    close(mine);
    waitpid(p, NULL, 0);
}

/* A connected loopback TCP pair with TCP_NODELAY, as proxies set it. */
static void tcp_pair(int sv[2]) {
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof a;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) < 0 || listen(l, 1) < 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) < 0)
        die("listen");
    sv[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (sv[0] < 0 || connect(sv[0], (struct sockaddr *)&a, sizeof a) < 0) die("connect");
    sv[1] = accept(l, NULL, NULL);
    if (sv[1] < 0) die("accept");
    close(l);
    setsockopt(sv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(sv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 200000;
    if (n < 10) n = 10;
    double c0 = cpu_now();
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    report("bare system call (getppid)", c0, n);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) < 0) die("socketpair");
    int ep = epoll_create1(0);
    struct epoll_event e = {.events = EPOLLIN, .data.fd = sv[0]};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sv[0], &e) < 0) die("epoll");
    c0 = cpu_now();
    for (long i = 0; i < n; i++) {
        e.events = i & 1 ? EPOLLIN : EPOLLIN | EPOLLOUT;
        epoll_ctl(ep, EPOLL_CTL_MOD, sv[0], &e);
    }
    report("epoll_ctl (MOD)", c0, n);
    /* Back to EPOLLIN alone whatever n was: the socket is always writable,
     * and an armed EPOLLOUT would make the next line time a ready event. */
    e.events = EPOLLIN;
    epoll_ctl(ep, EPOLL_CTL_MOD, sv[0], &e);
    c0 = cpu_now();
    for (long i = 0; i < n; i++)
        epoll_wait(ep, &e, 1, 0);
    report("epoll_wait, nothing ready", c0, n);
    char b[64];
    c0 = cpu_now();
    for (long i = 0; i < n; i++)
        if (recv(sv[0], b, sizeof b, 0) >= 0) die("recv");
    report("read, nothing there (EAGAIN)", c0, n);
    close(ep), close(sv[0]), close(sv[1]);

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("socketpair");
    round_trips("round trip, Unix socket (write, sleep, read)", sv[0], sv[1], n / 10);
    tcp_pair(sv);
    round_trips("round trip, loopback TCP (write, sleep, read)", sv[0], sv[1], n / 10);
    return 0;
}
