/* TLS towards clients with OpenSSL 3 on the client's own non-blocking
 * socket: the context built from the client_tls_* settings, the handshake
 * and read/write wrappers that report what the socket must wait for.
 * Backend TLS is libpq's; this module only maps protocol names for it. No
 * libuv here. */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "sluice/config.h"
#include "sluice/err.h"

/* What a TLS call needs before it can go on. */
enum sl_tls_want { SL_TLS_WANT_NONE = 0, SL_TLS_WANT_READ = 1, SL_TLS_WANT_WRITE = 2 };

/* Parses a *_tls_protocols value (tlsv1.0 ... tlsv1.3, all, secure, legacy;
 * separated by commas, colons or spaces) into an OpenSSL version range. */
int sl_tls_parse_protocols(const char *s, int *min_version, int *max_version) SL_MUST_USE;
/* libpq's spelling of a version ("TLSv1.2"). */
const char *sl_tls_version_name(int version);

/* The context for client connections from cfg, or NULL: with err set when
 * the settings are wrong (a file that does not load, an unknown protocol or
 * cipher), with err empty when client_tls_sslmode = disable. */
SSL_CTX *sl_tls_client_ctx(const sl_config_t *cfg, char *err, size_t errlen);

/* One step of the server side of a handshake: 1 when done, 0 when it must
 * wait (*want says for what), -1 on failure (err says why). */
int sl_tls_accept(SSL *ssl, int *want, char *err, size_t errlen);
/* Like read(2)/send(2): bytes moved, 0 at a clean end, -EAGAIN (then *want
 * says what to wait for) or -EIO. */
ssize_t sl_tls_read(SSL *ssl, void *p, size_t n, int *want);
ssize_t sl_tls_write(SSL *ssl, const void *p, size_t n, int *want);
/* The subject common name of the peer's certificate into buf; false when
 * there is none. */
bool sl_tls_peer_cn(SSL *ssl, char *buf, size_t cap);

#endif
