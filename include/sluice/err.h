/* Error codes shared by every module: 0 is success, failures are negative
 * SL_E* values declared once below; sl_strerror() is generated from the same
 * list so a code and its text can never drift apart. */
#ifndef SLUICE_ERR_H
#define SLUICE_ERR_H

#define SL_ERR_LIST(X)                                                                             \
    X(NEEDMORE, "need more bytes")                                                                 \
    X(PROTO, "protocol violation")                                                                 \
    X(TOOBIG, "message too large")                                                                 \
    X(BADLEN, "invalid message length")                                                            \
    X(VERSION, "unsupported protocol version")                                                     \
    X(NOMEM, "out of memory")                                                                      \
    X(AUTH, "authentication failed")                                                               \
    X(CONFIG, "invalid configuration")                                                             \
    X(IO, "input/output error")                                                                    \
    X(NOSPACE, "buffer full")

enum sl_err {
    SL_OK = 0,
    SL_E_FIRST_ = -100,
#define SL_ERR_ENUM(name, text) SL_E##name,
    SL_ERR_LIST(SL_ERR_ENUM)
#undef SL_ERR_ENUM
};

#define SL_MUST_USE __attribute__((warn_unused_result))

const char *sl_strerror(int err);
/* The errno behind a failed poll of socket fd. libuv reports POLLERR as
 * UV_EBADF, which says nothing: the socket's pending error (a reset, a
 * refusal) does; without one, a peek tells EOF (EPIPE) from a reset. */
int sl_socket_errno(int fd);

#endif
