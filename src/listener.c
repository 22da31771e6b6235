/* Listening sockets and accept. */
#include "sluice/listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "sluice/client.h"
#include "sluice/log.h"

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

static void accept_cb(uv_poll_t *h, int status, int events) {
    (void)events;
    sl_listener_t *l = h->data;
    if (status < 0) {
        sl_log_error(NULL, "listener %s: %s", l->desc, uv_strerror(status));
        return;
    }
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                sl_log_warn(NULL, "accept on %s failed: %s", l->desc, strerror(errno));
            return;
        }
        if (ss.ss_family != AF_UNIX) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
        }
        char peer[64];
        format_peer(&ss, peer, sizeof peer);
        sl_client_accept(l->w, fd, peer);
    }
}

static int add_listener(sl_worker_t *w, int fd, const char *desc, const char *path, char *err,
                        size_t errlen) {
    sl_listener_t *l = calloc(1, sizeof *l);
    if (!l || uv_poll_init(w->loop, &l->poll, fd) != 0) {
        free(l);
        close(fd);
        snprintf(err, errlen, "cannot watch listener %s", desc);
        return SL_EIO;
    }
    l->w = w;
    l->fd = fd;
    l->poll.data = l;
    snprintf(l->desc, sizeof l->desc, "%s", desc);
    snprintf(l->unix_path, sizeof l->unix_path, "%s", path ? path : "");
    uv_poll_start(&l->poll, UV_READABLE, accept_cb);
    l->next = w->listeners;
    w->listeners = l;
    sl_log_info(NULL, "listening on %s", desc);
    return SL_OK;
}

static int listen_tcp(sl_worker_t *w, const char *host, char *err, size_t errlen) {
    char port[16];
    snprintf(port, sizeof port, "%d", w->cfg->listen_port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
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
        if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        char desc[160];
        format_peer((struct sockaddr_storage *)ai->ai_addr, desc, sizeof desc);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
            listen(fd, w->cfg->listen_backlog) != 0) {
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

static int listen_unix(sl_worker_t *w, char *err, size_t errlen) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int n = snprintf(sa.sun_path, sizeof sa.sun_path, "%s/.s.PGSQL.%d", w->cfg->unix_socket_dir,
                     w->cfg->listen_port);
    if (n < 0 || (size_t)n >= sizeof sa.sun_path) {
        snprintf(err, errlen, "unix_socket_dir too long: %s", w->cfg->unix_socket_dir);
        return SL_ECONFIG;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return SL_EIO;
    }
    /* A socket file left by a crashed sluice would block bind. A live one
     * answers connect: then another instance owns the port. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0) {
        close(probe);
        close(fd);
        snprintf(err, errlen, "%s is in use by another running server", sa.sun_path);
        return SL_EIO;
    }
    if (probe >= 0) close(probe);
    unlink(sa.sun_path);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(fd, w->cfg->listen_backlog) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", sa.sun_path, strerror(errno));
        close(fd);
        return SL_EIO;
    }
    chmod(sa.sun_path, 0777);
    return add_listener(w, fd, sa.sun_path, sa.sun_path, err, errlen);
}

int sl_listener_open_all(sl_worker_t *w, char *err, size_t errlen) {
    err[0] = '\0';
    char *list = strdup(w->cfg->listen_addr);
    if (!list) return SL_ENOMEM;
    int rc = SL_OK;
    char *save = NULL;
    for (char *tok = strtok_r(list, ", ", &save); tok && rc == SL_OK;
         tok = strtok_r(NULL, ", ", &save))
        rc = listen_tcp(w, tok, err, errlen);
    free(list);
    if (rc == SL_OK && *w->cfg->unix_socket_dir) rc = listen_unix(w, err, errlen);
    return rc;
}

static void listener_closed_cb(uv_handle_t *h) {
    sl_listener_t *l = h->data;
    close(l->fd);
    free(l);
}

void sl_listener_close_all(sl_worker_t *w) {
    sl_listener_t *l = w->listeners;
    while (l) {
        sl_listener_t *next = l->next;
        if (l->unix_path[0]) unlink(l->unix_path);
        uv_poll_stop(&l->poll);
        uv_close((uv_handle_t *)&l->poll, listener_closed_cb);
        l = next;
    }
    w->listeners = NULL;
}
