/* OpenSSL contexts and non-blocking I/O for client-facing TLS. */
#include "sluice/tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    int min, max;
} protocol_names[] = {
    {"tlsv1.0", TLS1_VERSION, TLS1_VERSION},   {"tlsv1.1", TLS1_1_VERSION, TLS1_1_VERSION},
    {"tlsv1.2", TLS1_2_VERSION, TLS1_2_VERSION}, {"tlsv1.3", TLS1_3_VERSION, TLS1_3_VERSION},
    {"all", TLS1_VERSION, TLS1_3_VERSION},     {"secure", TLS1_2_VERSION, TLS1_3_VERSION},
    {"legacy", TLS1_VERSION, TLS1_3_VERSION},
};

int sl_tls_parse_protocols(const char *s, int *min_version, int *max_version) {
    int lo = 0, hi = 0;
    char word[16];
    for (const char *p = s; *p;) {
        size_t n = strcspn(p, ", :");
        if (n > 0) {
            if (n >= sizeof word) return SL_ECONFIG;
            memcpy(word, p, n);
            word[n] = '\0';
            size_t i = 0;
            while (i < sizeof protocol_names / sizeof *protocol_names &&
                   strcasecmp(protocol_names[i].name, word) != 0)
                i++;
            if (i == sizeof protocol_names / sizeof *protocol_names) return SL_ECONFIG;
            if (!lo || protocol_names[i].min < lo) lo = protocol_names[i].min;
            if (protocol_names[i].max > hi) hi = protocol_names[i].max;
        }
        p += n;
        if (*p) p++;
    }
    if (!lo) return SL_ECONFIG;
    *min_version = lo, *max_version = hi;
    return SL_OK;
}

const char *sl_tls_version_name(int version) {
    switch (version) {
    case TLS1_VERSION: return "TLSv1";
    case TLS1_1_VERSION: return "TLSv1.1";
    case TLS1_2_VERSION: return "TLSv1.2";
    default: return "TLSv1.3";
    }
}

/* The first queued OpenSSL error as text (the queue is cleared). */
static const char *ossl_error(char *buf, size_t cap) {
    unsigned long e = ERR_get_error();
    if (!e) {
        snprintf(buf, cap, "unknown TLS error");
    } else {
        ERR_error_string_n(e, buf, cap);
    }
    ERR_clear_error();
    return buf;
}

static SSL_CTX *ctx_fail(SSL_CTX *ctx, char *err, size_t errlen, const char *fmt, const char *arg) {
    char why[256];
    char what[256];
    snprintf(what, sizeof what, fmt, arg);
    snprintf(err, errlen, "%s: %s", what, ossl_error(why, sizeof why));
    SSL_CTX_free(ctx);
    return NULL;
}

SSL_CTX *sl_tls_client_ctx(const sl_config_t *cfg, char *err, size_t errlen) {
    err[0] = '\0';
    if (cfg->client_tls_sslmode == SL_TLS_DISABLE) return NULL;
    if (!*cfg->client_tls_key_file || !*cfg->client_tls_cert_file) {
        snprintf(err, errlen, "client_tls_sslmode = %s needs client_tls_key_file and "
                              "client_tls_cert_file", sl_tls_mode_names[cfg->client_tls_sslmode]);
        return NULL;
    }
    int lo, hi;
    if (sl_tls_parse_protocols(cfg->client_tls_protocols, &lo, &hi) < 0) {
        snprintf(err, errlen, "client_tls_protocols: unknown value \"%s\" (use tlsv1.2, tlsv1.3, "
                              "secure, all, ...)", cfg->client_tls_protocols);
        return NULL;
    }
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return ctx_fail(NULL, err, errlen, "%s", "cannot create a TLS context");
    SSL_CTX_set_min_proto_version(ctx, lo);
    SSL_CTX_set_max_proto_version(ctx, hi);
    /* Writes behave like send(2) on a non-blocking socket. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->client_tls_cert_file) != 1)
        return ctx_fail(ctx, err, errlen, "client_tls_cert_file \"%s\" does not load",
                        cfg->client_tls_cert_file);
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->client_tls_key_file, SSL_FILETYPE_PEM) != 1)
        return ctx_fail(ctx, err, errlen, "client_tls_key_file \"%s\" does not load",
                        cfg->client_tls_key_file);
    if (SSL_CTX_check_private_key(ctx) != 1)
        return ctx_fail(ctx, err, errlen, "client_tls_key_file \"%s\" does not match the certificate",
                        cfg->client_tls_key_file);
    const char *ciphers = cfg->client_tls_ciphers;
    if (*ciphers && strcasecmp(ciphers, "default") != 0 &&
        SSL_CTX_set_cipher_list(ctx, ciphers) != 1)
        return ctx_fail(ctx, err, errlen, "client_tls_ciphers \"%s\" selects no cipher", ciphers);
    if (*cfg->client_tls13_ciphers &&
        SSL_CTX_set_ciphersuites(ctx, cfg->client_tls13_ciphers) != 1)
        return ctx_fail(ctx, err, errlen, "client_tls13_ciphers \"%s\" is not valid",
                        cfg->client_tls13_ciphers);
    /* OpenSSL 3 picks finite-field DH parameters by key size itself. */
    if (strcasecmp(cfg->client_tls_dheparams, "none") != 0) SSL_CTX_set_dh_auto(ctx, 1);
    const char *curve = cfg->client_tls_ecdhcurve;
    if (*curve && strcasecmp(curve, "auto") != 0 && strcasecmp(curve, "none") != 0 &&
        SSL_CTX_set1_groups_list(ctx, curve) != 1)
        return ctx_fail(ctx, err, errlen, "client_tls_ecdhcurve \"%s\" is not a known group", curve);
    const char *ca = cfg->client_tls_ca_file;
    if (*ca) {
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
            return ctx_fail(ctx, err, errlen, "client_tls_ca_file \"%s\" does not load", ca);
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(ca);
        if (names) SSL_CTX_set_client_CA_list(ctx, names);
    }
    if (cfg->client_tls_sslmode >= SL_TLS_VERIFY_CA) {
        if (!*ca) {
            SSL_CTX_free(ctx);
            snprintf(err, errlen, "client_tls_sslmode = %s needs client_tls_ca_file",
                     sl_tls_mode_names[cfg->client_tls_sslmode]);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    } else if (*ca) {
        /* A certificate is asked for (cert authentication) but not required. */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;
}

/* Maps an SSL_get_error() code; returns 0 to wait, -1 to fail. */
static int io_result(SSL *ssl, int rc, int *want) {
    switch (SSL_get_error(ssl, rc)) {
    case SSL_ERROR_WANT_READ: *want = SL_TLS_WANT_READ; return 0;
    case SSL_ERROR_WANT_WRITE: *want = SL_TLS_WANT_WRITE; return 0;
    default: return -1;
    }
}

int sl_tls_accept(SSL *ssl, int *want, char *err, size_t errlen) {
    *want = SL_TLS_WANT_NONE;
    ERR_clear_error();
    int rc = SSL_accept(ssl);
    if (rc == 1) return 1;
    if (io_result(ssl, rc, want) == 0) return 0;
    char why[256];
    long v = SSL_get_verify_result(ssl);
    if (v != X509_V_OK)
        snprintf(err, errlen, "TLS handshake failed: client certificate: %s",
                 X509_verify_cert_error_string(v));
    else
        snprintf(err, errlen, "TLS handshake failed: %s", ossl_error(why, sizeof why));
    ERR_clear_error();
    return -1;
}

ssize_t sl_tls_read(SSL *ssl, void *p, size_t n, int *want) {
    *want = SL_TLS_WANT_NONE;
    ERR_clear_error();
    int rc = SSL_read(ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
    if (rc > 0) return rc;
    int e = SSL_get_error(ssl, rc);
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    if (io_result(ssl, rc, want) == 0) return -EAGAIN;
    ERR_clear_error();
    return e == SSL_ERROR_SYSCALL && errno == 0 ? 0 : -EIO; /* EOF without close_notify */
}

ssize_t sl_tls_write(SSL *ssl, const void *p, size_t n, int *want) {
    *want = SL_TLS_WANT_NONE;
    if (n == 0) return 0;
    ERR_clear_error();
    int rc = SSL_write(ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
    if (rc > 0) return rc;
    if (io_result(ssl, rc, want) == 0) return -EAGAIN;
    ERR_clear_error();
    return -EIO;
}

bool sl_tls_peer_cn(SSL *ssl, char *buf, size_t cap) {
    X509 *cert = SSL_get1_peer_certificate(ssl);
    if (!cert) return false;
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, (int)cap);
    X509_free(cert);
    return n > 0;
}
