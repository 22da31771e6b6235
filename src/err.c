/* Text for the SL_E* codes, generated from the list in err.h. */
#include "sluice/err.h"

#include <errno.h>
#include <sys/socket.h>

const char *sl_strerror(int err) {
    switch (err) {
    case SL_OK:
        return "success";
#define SL_ERR_CASE(name, text)                                                                    \
    case SL_E##name:                                                                               \
        return text;
        SL_ERR_LIST(SL_ERR_CASE)
#undef SL_ERR_CASE
    default:
        return "unknown error";
    }
}

int sl_socket_errno(int fd) {
    int err = 0;
    socklen_t el = sizeof err;
    if (fd < 0) return EBADF;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && err) return err;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return errno;
    return n == 0 ? EPIPE : ECONNRESET;
}
