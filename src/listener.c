/* Listening sockets and accept (see listener.h). */
#include "sluice/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "sluice/log.h"
#include "sluice/proto.h"
#include "sluice/session.h"

static void format_peer(const struct sockaddr_storage *ss, char *out, size_t cap) {
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
    } else {
        snprintf(out, cap, "unix");
        return;
    }
    snprintf(out, cap, ss->ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
}

/* Running out of file descriptors: accept4 fails with EMFILE (this process)
 * or ENFILE (the system) and the listening socket stays readable, so a
 * listener that only logged and returned would be called again at once,
 * spinning a core and flooding the log. Instead the listener stops watching
 * its socket for SL_ACCEPT_RETRY_MS; then it accepts again, and if it still
 * cannot, turns the clients waiting away with a clear error and pauses
 * again. It reports at most once per SL_ACCEPT_REPORT_MS, and once more
 * when accepting works again.
 *
 * Turning away needs a descriptor: one spare, kept open on /dev/null, is
 * given up for the time of one accept (PgBouncer does the same). A client
 * left in the backlog instead would wait without a word, and libpq has no
 * connect timeout unless one is set: it would hang until sluice had a
 * descriptor free again, and once the backlog is full new connections are
 * not even answered. The error says what is going on and the client can try
 * again, as it does for max_client_conn. */
#define SL_ACCEPT_RETRY_MS 250
#define SL_ACCEPT_REPORT_MS 10000
#define SL_ACCEPT_BATCH 64         /* accepts per wakeup, so other connections get their turn */
#define SL_ACCEPT_CLOSE_BATCHES 16 /* batches taken from the backlog before a listener closes */

static const char turn_away_msg[] =
    "sluice has no file descriptor left for a new connection (too many open files): try again "
    "later";

/* The workers' listeners take descriptors from one table: a worker's accept
 * could take the number another worker's spare just gave up, leaving that
 * worker no spare and the clients in its backlog without a word while the
 * process stays at its limit. Accepting and the spare's hand-over are
 * serialized across workers; an accept is rare next to the relay's I/O. */
static pthread_mutex_t fd_lock = PTHREAD_MUTEX_INITIALIZER;

static int locked_accept(int lfd, struct sockaddr *sa, socklen_t *len) {
    pthread_mutex_lock(&fd_lock);
    int fd = accept4(lfd, sa, len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int e = errno;
    pthread_mutex_unlock(&fd_lock);
    errno = e;
    return fd;
}

static void open_spare(sl_listener_t *l) {
    if (l->spare_fd < 0) l->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* Says FATAL 53300 to a client sluice cannot serve, and closes it. What the
 * client sent already is read first: closing a socket with unread bytes
 * resets the connection, and the reset could reach the client before the
 * error does. A client that asked for TLS first gets the error in answer to
 * that request: libpq 15 then says only "server sent an error response
 * during SSL exchange" (it shows no text it cannot authenticate); answering
 * 'N' and the error at once does not work either, libpq drops the error. */
static void turn_away(int fd) {
    uint8_t in[1024], msg[256];
    sl_buf_t b = {.data = msg, .cap = sizeof msg};
    (void)!recv(fd, in, sizeof in, MSG_DONTWAIT);
    if (sl_proto_put_error(&b, "FATAL", "53300", turn_away_msg) == SL_OK)
        (void)!send(fd, sl_buf_rptr(&b), sl_buf_len(&b), MSG_DONTWAIT | MSG_NOSIGNAL);
    close(fd);
}

/* Accepts and turns away the clients waiting on l, one at a time through the
 * spare descriptor. Returns how many. */
static int turn_away_waiting(sl_listener_t *l) {
    int n = 0;
    while (n < SL_ACCEPT_BATCH && l->spare_fd >= 0) {
        pthread_mutex_lock(&fd_lock);
        close(l->spare_fd);
        l->spare_fd = -1;
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        int e = errno;
        if (fd >= 0) {
            turn_away(fd);
            n++;
        }
        open_spare(l);
        pthread_mutex_unlock(&fd_lock);
        if (fd < 0 && e != EINTR) break; /* none left, or not even one descriptor */
    }
    return n;
}

static const char *exhaustion_advice(int e) {
    return e == ENFILE   ? "raise the system's limit (fs.file-max) or lower max_client_conn"
           : e == EMFILE ? "raise the open-files limit (ulimit -n / LimitNOFILE) or lower "
                           "max_client_conn"
                         : "check the system's memory and socket buffers";
}

static const char *errno_name(int e) {
    return e == ENFILE ? " (ENFILE)" : e == EMFILE ? " (EMFILE)" : "";
}

static void report_exhaustion(sl_listener_t *l) {
    int e = l->last_errno;
    sl_log_warn(NULL,
                "accept on %s: %s%s; %llu connections could not be accepted in the last %d s; %s",
                l->desc, strerror(e), errno_name(e), (unsigned long long)l->turned_away,
                SL_ACCEPT_REPORT_MS / 1000, exhaustion_advice(e));
    l->turned_away = 0;
    l->report_ms = sl_now_ms(&l->w->core);
}

static void maybe_report(sl_listener_t *l) {
    if (l->turned_away == 0) return;
    if (l->report_ms == 0 || sl_now_ms(&l->w->core) - l->report_ms >= SL_ACCEPT_REPORT_MS)
        report_exhaustion(l);
}

/* The end of a shortage: said once, also when it was too short to have
 * been reported (clients were kept waiting meanwhile). */
static void accepted_again(sl_listener_t *l) {
    int e = l->last_errno;
    l->exhausted = false;
    sl_log_warn(NULL,
                "accept on %s works again after %s%s; %llu connections could not be accepted "
                "since the last report; %s",
                l->desc, strerror(e), errno_name(e), (unsigned long long)l->turned_away,
                exhaustion_advice(e));
    l->turned_away = 0;
    l->report_ms = 0;
}

static void pause_accepting(sl_listener_t *l, int err, bool waited);

/* Errors of one connection that accept4 reports (see accept(2)): that
 * connection is gone, the next one may be fine. */
static bool transient_accept_error(int err) {
    switch (err) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
    case EPERM: /* refused by a firewall rule */
        return true;
    default:
        return false;
    }
}

/* Accepts what is waiting, up to a batch. waited: the listener was paused,
 * so clients still waiting have had time to send their first packet. False
 * when it paused for a shortage. */
static bool accept_batch(sl_listener_t *l, bool waited) {
    for (int i = 0; i < SL_ACCEPT_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = locked_accept(l->fd, (struct sockaddr *)&ss, &len);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
            if (transient_accept_error(errno)) continue;
            /* EMFILE, ENFILE, ENOBUFS, ENOMEM and anything unforeseen: the
             * socket stays readable, so carrying on would spin. */
            pause_accepting(l, errno, waited);
            return false;
        }
        if (l->exhausted) accepted_again(l);
        if (ss.ss_family != AF_UNIX) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        }
        char peer[64];
        format_peer(&ss, peer, sizeof peer);
        sl_session_accept(&l->w->core, fd, peer);
    }
    return true;
}

static void accept_cb(uv_poll_t *h, int status, int events) {
    (void)events;
    sl_listener_t *l = h->data;
    if (status < 0) {
        sl_log_error(NULL, "listener %s: %s", l->desc, uv_strerror(status));
        return;
    }
    accept_batch(l, false);
}

static void retry_cb(uv_timer_t *t) {
    sl_listener_t *l = t->data;
    pthread_mutex_lock(&fd_lock);
    open_spare(l);
    pthread_mutex_unlock(&fd_lock);
    if (accept_batch(l, true)) uv_poll_start(&l->poll, UV_READABLE, accept_cb);
}

/* accept4 failed for want of descriptors or memory: the socket is not
 * watched until the retry timer. Clients that waited for it are turned
 * away; one that has just arrived is left for the retry: descriptors may
 * have come free by then, and if not, it has sent its first packet, which
 * turn_away reads before it closes the socket. */
static void pause_accepting(sl_listener_t *l, int err, bool waited) {
    l->last_errno = err;
    l->exhausted = true;
    if (waited) {
        int n = err == EMFILE || err == ENFILE ? turn_away_waiting(l) : 0;
        l->turned_away += n > 0 ? (uint64_t)n : 1;
        maybe_report(l);
    }
    uv_poll_stop(&l->poll);
    uv_timer_start(&l->retry, retry_cb, SL_ACCEPT_RETRY_MS, 0);
}

static int add_listener(sl_worker_t *w, int fd, const char *desc, const char *path, char *err,
                        size_t errlen) {
    sl_listener_t *l = calloc(1, sizeof *l);
    if (!l || uv_poll_init(w->core.loop, &l->poll, fd) != 0) {
        free(l);
        close(fd);
        snprintf(err, errlen, "cannot watch listener %s", desc);
        return SL_EIO;
    }
    l->w = w;
    l->fd = fd;
    l->poll.data = l;
    uv_timer_init(w->core.loop, &l->retry);
    l->retry.data = l;
    l->open_handles = 2;
    l->spare_fd = -1;
    open_spare(l);
    snprintf(l->desc, sizeof l->desc, "%s", desc);
    snprintf(l->unix_path, sizeof l->unix_path, "%s", path ? path : "");
    uv_poll_start(&l->poll, UV_READABLE, accept_cb);
    l->next = w->listeners;
    w->listeners = l;
    if (w->place.index == 0) sl_log_info(NULL, "listening on %s", desc); /* once */
    return SL_OK;
}

/* With several workers each binds its own socket with SO_REUSEPORT (the
 * kernel spreads connections over them), which would also let another
 * process of the same user share the port. Without so_reuseport that
 * must not happen silently: worker 0 first binds a probe without the
 * option, which fails if anything listens there already. */
static int probe_free(const struct addrinfo *ai, const char *desc, char *err, size_t errlen) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0) return SL_OK; /* the real socket will say why */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    int rc = bind(fd, ai->ai_addr, ai->ai_addrlen);
    int e = errno;
    close(fd);
    if (rc == 0 || e != EADDRINUSE) return SL_OK;
    snprintf(err, errlen,
             "cannot listen on %s: %s (another process has it; set so_reuseport = 1 to share it "
             "on purpose)",
             desc, strerror(e));
    return SL_EIO;
}

static int listen_tcp(sl_worker_t *w, const char *host, char *err, size_t errlen) {
    char port[16];
    snprintf(port, sizeof port, "%d", w->core.cfg->listen_port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    bool any = strcmp(host, "*") == 0;
    int gai = getaddrinfo(any ? NULL : host, port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "listen_addr %s: %s", host, gai_strerror(gai));
        return SL_ECONFIG;
    }
    int opened = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) continue;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        char desc[160];
        format_peer((struct sockaddr_storage *)ai->ai_addr, desc, sizeof desc);
        bool shared = w->place.count > 1;
        if (shared && !w->core.cfg->so_reuseport && w->place.index == 0 &&
            probe_free(ai, desc, err, errlen) != SL_OK) {
            close(fd);
            freeaddrinfo(res);
            return SL_EIO;
        }
        /* so_reuseport: a second sluice (the next version, in a rolling
         * restart) binds the same address and port while this one runs;
         * the kernel spreads new connections over both. The workers of one
         * sluice share the port the same way. */
        if ((w->core.cfg->so_reuseport || shared) &&
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
            snprintf(err, errlen, "so_reuseport: setsockopt SO_REUSEPORT: %s", strerror(errno));
            close(fd);
            freeaddrinfo(res);
            return SL_EIO;
        }
        if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
            listen(fd, w->core.cfg->listen_backlog) != 0) {
            snprintf(err, errlen, "cannot listen on %s: %s", desc, strerror(errno));
            close(fd);
            /* An address family the host lacks (no IPv6) is not fatal for '*'. */
            if (any && errno == EADDRNOTAVAIL) continue;
            freeaddrinfo(res);
            return SL_EIO;
        }
        if (add_listener(w, fd, desc, NULL, err, errlen) < 0) {
            freeaddrinfo(res);
            return SL_EIO;
        }
        opened++;
    }
    freeaddrinfo(res);
    if (!opened) {
        if (!*err) snprintf(err, errlen, "listen_addr %s: no usable address", host);
        return SL_EIO;
    }
    return SL_OK;
}

/* Workers after the first share worker 0's Unix socket: Unix sockets have
 * no SO_REUSEPORT, and each worker watching its own dup of one socket
 * still spreads the Unix clients over every worker (whichever wakes first
 * accepts; the others find nothing and go back to sleep). */
static int share_unix(sl_worker_t *w, const char *path, char *err, size_t errlen) {
    int fd = fcntl(w->place.unix_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot share %s with worker %d: %s", path, w->place.index,
                 strerror(errno));
        return SL_EIO;
    }
    int rc = add_listener(w, fd, path, path, err, errlen);
    struct stat st;
    if (rc == SL_OK && stat(path, &st) == 0) {
        w->listeners->unix_dev = st.st_dev;
        w->listeners->unix_ino = st.st_ino;
    }
    return rc;
}

int sl_listener_unix_fd(const sl_worker_t *w) {
    for (const sl_listener_t *l = w->listeners; l; l = l->next)
        if (l->unix_path[0]) return l->fd;
    return -1;
}

static int listen_unix(sl_worker_t *w, char *err, size_t errlen) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path, sizeof sa.sun_path, "%s/.s.PGSQL.%d",
                     w->core.cfg->unix_socket_dir, w->core.cfg->listen_port);
    if (n < 0 || (size_t)n >= sizeof sa.sun_path) {
        snprintf(err, errlen, "unix_socket_dir too long: %s", w->core.cfg->unix_socket_dir);
        return SL_ECONFIG;
    }
    if (w->place.unix_fd >= 0) return share_unix(w, sa.sun_path, err, errlen);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return SL_EIO;
    }
    /* A socket file left by a crashed sluice would block bind. A live one
     * answers connect: then another instance owns the port, unless
     * so_reuseport says instances share it: then this one takes the path
     * over (new Unix clients come here; the other keeps those it has). */
    int probe = w->core.cfg->so_reuseport ? -1 : socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
        close(probe);
        close(fd);
        snprintf(err, errlen, "%s is in use by another running server", sa.sun_path);
        return SL_EIO;
    }
    if (probe >= 0) close(probe);
    unlink(sa.sun_path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(fd, w->core.cfg->listen_backlog) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", sa.sun_path, strerror(errno));
        close(fd);
        return SL_EIO;
    }
    chmod(sa.sun_path, 0777);
    struct stat st;
    int rc = add_listener(w, fd, sa.sun_path, sa.sun_path, err, errlen);
    if (rc == SL_OK && stat(sa.sun_path, &st) == 0) {
        w->listeners->unix_dev = st.st_dev;
        w->listeners->unix_ino = st.st_ino;
    }
    return rc;
}

int sl_listener_open_all(sl_worker_t *w, char *err, size_t errlen) {
    err[0] = '\0';
    char *list = strdup(w->core.cfg->listen_addr);
    if (!list) return SL_ENOMEM;
    int rc = SL_OK;
    char *save = NULL;
    for (char *tok = strtok_r(list, ", ", &save); tok && rc == SL_OK;
         tok = strtok_r(NULL, ", ", &save))
        rc = listen_tcp(w, tok, err, errlen);
    free(list);
    if (rc == SL_OK && *w->core.cfg->unix_socket_dir) rc = listen_unix(w, err, errlen);
    return rc;
}

void sl_listener_suspend_all(sl_worker_t *w, bool suspend) {
    for (sl_listener_t *l = w->listeners; l; l = l->next) {
        if (suspend) {
            uv_poll_stop(&l->poll);
            uv_timer_stop(&l->retry);
        } else {
            uv_poll_start(&l->poll, UV_READABLE, accept_cb);
        }
    }
}

static void listener_closed_cb(uv_handle_t *h) {
    sl_listener_t *l = h->data;
    if (--l->open_handles > 0) return;
    close(l->fd);
    if (l->spare_fd >= 0) close(l->spare_fd);
    free(l);
}

/* The socket file is this listener's still (with so_reuseport, a newer
 * sluice may have bound the path since: its file must stay). */
static bool owns_path(const sl_listener_t *l) {
    struct stat st;
    return stat(l->unix_path, &st) == 0 && st.st_dev == l->unix_dev && st.st_ino == l->unix_ino;
}

void sl_listener_close_all(sl_worker_t *w) {
    sl_listener_t *l = w->listeners;
    while (l) {
        sl_listener_t *next = l->next;
        /* Connections the kernel completed but sluice did not accept yet
         * would be reset by the close: they are taken first (a draining
         * sluice serves them like the others). */
        for (int i = 0; i < SL_ACCEPT_CLOSE_BATCHES && !l->exhausted; i++)
            if (!accept_batch(l, false)) break;
        if (l->unix_path[0] && owns_path(l)) unlink(l->unix_path);
        uv_poll_stop(&l->poll);
        uv_close((uv_handle_t *)&l->poll, listener_closed_cb);
        uv_timer_stop(&l->retry);
        uv_close((uv_handle_t *)&l->retry, listener_closed_cb);
        l = next;
    }
    w->listeners = NULL;
}
