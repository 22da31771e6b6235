/* The delaying relay (see delay.h): a thread per connection. */
#include "delay.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

struct it_delay {
    atomic_int ms;
    atomic_int cut; /* connections still to cut (it_delay_cut) */
    int target, port, listener;
};

typedef struct conn {
    it_delay_t *d;
    int fd;
} conn_t;

void it_delay_set(it_delay_t *d, int ms) {
    atomic_store(&d->ms, ms);
}
void it_delay_cut(it_delay_t *d, int n) {
    atomic_store(&d->cut, n);
}
int it_delay_port(const it_delay_t *d) {
    return d->port;
}

static bool write_all(int fd, const char *p, ssize_t n) {
    while (n > 0) {
        ssize_t k = write(fd, p, (size_t)n);
        if (k <= 0) return false;
        p += k, n -= k;
    }
    return true;
}

static void *pipe_thread(void *arg) {
    conn_t *cn = arg;
    it_delay_t *dl = cn->d;
    int a = cn->fd;
    free(cn);
    int left = atomic_load(&dl->cut);
    while (left > 0 && !atomic_compare_exchange_weak(&dl->cut, &left, left - 1)) {
    }
    bool cut = left > 0;
    int client_chunks = 0;
    int b = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)dl->target)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(b, (struct sockaddr *)&sa, sizeof sa) == 0) {
        struct pollfd pf[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
        char *mine = malloc(65536);
        for (;;) {
            if (poll(pf, 2, -1) < 0) break;
            int from = (pf[0].revents & (POLLIN | POLLHUP | POLLERR)) ? 0 : 1;
            if (!(pf[from].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            ssize_t n = read(pf[from].fd, mine, 65536);
            if (n <= 0) break;
            if (from == 0 && ++client_chunks == 2 && cut) break;
            int d = atomic_load(&dl->ms);
            if (d > 0) usleep((useconds_t)d * 1000);
            if (!write_all(pf[1 - from].fd, mine, n)) break;
        }
        free(mine);
    }
    close(a);
    close(b);
    return NULL;
}

static void *accept_thread(void *arg) {
    it_delay_t *d = arg;
    for (;;) {
        int a = accept(d->listener, NULL, NULL);
        if (a < 0) continue;
        conn_t *cn = malloc(sizeof *cn);
        cn->d = d, cn->fd = a;
        pthread_t t;
        pthread_create(&t, NULL, pipe_thread, cn);
        pthread_detach(t);
    }
    return NULL;
}

it_delay_t *it_delay_start(int target) {
    it_delay_t *d = calloc(1, sizeof *d);
    d->target = target;
    int l = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    IT_ASSERT(bind(l, (struct sockaddr *)&sa, sizeof sa) == 0, "relay bind");
    IT_ASSERT(listen(l, 128) == 0, "relay listen");
    socklen_t len = sizeof sa;
    getsockname(l, (struct sockaddr *)&sa, &len);
    d->listener = l;
    d->port = ntohs(sa.sin_port);
    pthread_t t;
    pthread_create(&t, NULL, accept_thread, d);
    pthread_detach(t);
    return d;
}
