/* conn: the I/O layer client and backend sockets share, on a real libuv
 * loop and real sockets. A poll error (libuv stops the handle) leaves
 * nothing that believes the handle is still armed: the owner's next wish
 * re-arms it. A TLS read that waits for writability is woken by
 * writability. Decrypted bytes inside TLS, which poll cannot see, reach the
 * owner through a kick. */
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sluice/conn.h"
#include "sluice/tls.h"
#include "unit/check.h"

static uv_loop_t loop;
static sl_conn_kicks_t kicks;

typedef struct owner {
    sl_conn_t cn;
    int errors;    /* poll errors seen */
    int reads;     /* events delivered as readable */
    bool rearm;    /* after an error, ask for the same events again */
    bool one_byte; /* on readable: read one byte, then want more */
    char got[64];  /* bytes read one at a time */
    int ngot;
    int closed; /* handles through their close callback */
} owner_t;

static void event_cb(sl_conn_t *cn, int status, int events) {
    owner_t *o = cn->data;
    if (status < 0) {
        o->errors++;
        if (o->rearm) sl_conn_update(cn, false, true);
        return;
    }
    if (events & UV_READABLE) o->reads++;
    if (o->one_byte && (events & UV_READABLE)) {
        char b;
        if (sl_conn_read(cn, &b, 1) == 1 && o->ngot < (int)sizeof o->got) o->got[o->ngot++] = b;
        sl_conn_update(cn, true, false);
    }
}

static void closed_cb(sl_conn_t *cn) {
    ((owner_t *)cn->data)->closed++;
}

static void run_until(const int *counter, int target) {
    for (int i = 0; i < 200 && *counter < target; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
}

static void finish(owner_t *o) {
    sl_conn_detach(&o->cn);
    run_until(&o->closed, 1);
    ASSERT_EQ(o->closed, 1);
    ASSERT_EQ(o->cn.handles, 0);
}

/* A pipe whose reader is gone raises POLLERR on its write end, each time
 * the end is polled: libuv reports it as an error and stops the handle. */
static void test_poll_error_rearms(void) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
    close(p[0]);
    owner_t o = {.rearm = true};
    sl_conn_init(&o.cn, &loop, &kicks, event_cb, closed_cb, &o);
    ASSERT_EQ(sl_conn_attach(&o.cn, p[1]), SL_OK);
    sl_conn_update(&o.cn, false, true);
    run_until(&o.errors, 3);
    /* One error only would mean the wish after it was taken as armed. */
    ASSERT_TRUE(o.errors >= 3);
    ASSERT_EQ(o.cn.armed, UV_WRITABLE);
    ASSERT_TRUE(o.cn.attached && uv_is_active((uv_handle_t *)&kicks.ep_poll));
    o.rearm = false;
    finish(&o);
    close(p[1]); /* only once no handle watches it */
}

/* A descriptor the epoll set refuses (a regular file: EPERM; in real life
 * ENOMEM or fs.epoll.max_user_watches): its owner gets a poll error a loop
 * round later instead of waiting for an event that never comes. */
static void test_refused(void) {
    FILE *f = tmpfile();
    ASSERT_TRUE(f != NULL);
    int file = dup(fileno(f));
    fclose(f);
    owner_t o = {0};
    sl_conn_init(&o.cn, &loop, &kicks, event_cb, closed_cb, &o);
    ASSERT_EQ(sl_conn_attach(&o.cn, file), SL_OK);
    sl_conn_update(&o.cn, true, false);
    ASSERT_EQ(o.errors, 0); /* not inside the owner's own call */
    run_until(&o.errors, 1);
    ASSERT_EQ(o.errors, 1);
    ASSERT_EQ(o.cn.armed, 0);
    finish(&o);
    close(file);
}

/* A TLS read waiting for writability: the socket's writability wakes the
 * owner as readable, though no byte came in. */
static void test_tls_direction(void) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    owner_t o = {0};
    sl_conn_init(&o.cn, &loop, &kicks, event_cb, closed_cb, &o);
    ASSERT_EQ(sl_conn_attach(&o.cn, sv[0]), SL_OK);
    sl_conn_update(&o.cn, true, false);
    ASSERT_EQ(o.cn.armed, UV_READABLE);
    sl_conn_tls_wait(&o.cn, SL_TLS_WANT_WRITE);
    sl_conn_update(&o.cn, true, false);
    ASSERT_EQ(o.cn.armed, UV_READABLE | UV_WRITABLE);
    run_until(&o.reads, 1);
    ASSERT_EQ(o.reads, 1);
    sl_conn_tls_wait(&o.cn, SL_TLS_WANT_READ);
    sl_conn_update(&o.cn, true, false);
    ASSERT_EQ(o.cn.armed, UV_READABLE);
    finish(&o);
    close(sv[0]);
    close(sv[1]);
}

/* libpq moving to another socket while connecting: the close callback of
 * the old one is still owed when the new one must be watched. */
static void test_socket_switch(void) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    owner_t o = {0};
    sl_conn_init(&o.cn, &loop, &kicks, event_cb, closed_cb, &o);
    ASSERT_EQ(sl_conn_attach(&o.cn, sv[0]), SL_OK);
    ASSERT_EQ(sl_conn_attach(&o.cn, sv[0]), SL_OK); /* the same socket: the same attachment */
    ASSERT_EQ(o.cn.handles, 1);
    ASSERT_EQ(sl_conn_attach(&o.cn, sv[1]), SL_OK);
    ASSERT_EQ(o.cn.handles, 2);
    sl_conn_update(&o.cn, true, false);
    ASSERT_EQ(write(sv[0], "x", 1), 1);
    run_until(&o.reads, 1);
    ASSERT_EQ(o.reads, 1);  /* the new socket is the one watched */
    ASSERT_EQ(o.closed, 1); /* the old one's close callback ran meanwhile */
    sl_conn_detach(&o.cn);
    run_until(&o.closed, 2);
    ASSERT_EQ(o.cn.handles, 0);
    ASSERT_EQ(sl_conn_attach(&o.cn, sv[0]), SL_OK);
    ASSERT_EQ(o.cn.handles, 1);
    o.closed = 0;
    finish(&o);
    close(sv[0]);
    close(sv[1]);
}

/* A throwaway self-signed certificate for the TLS pair below. */
static SSL_CTX *server_ctx(void) {
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    ASSERT_TRUE(key && cert);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), 0);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"test", -1, -1, 0);
    X509_set_issuer_name(cert, name);
    ASSERT_TRUE(X509_sign(cert, key, EVP_sha256()) > 0);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    ASSERT_EQ(SSL_CTX_use_certificate(ctx, cert), 1);
    ASSERT_EQ(SSL_CTX_use_PrivateKey(ctx, key), 1);
    X509_free(cert);
    EVP_PKEY_free(key);
    return ctx;
}

/* One TLS record holds more than the owner reads per event: after the
 * first read the socket is empty and poll stays quiet, so the rest of the
 * record must come through kicks. */
static void test_tls_kick(void) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    SSL_CTX *sctx = server_ctx(), *cctx = SSL_CTX_new(TLS_client_method());
    SSL *srv = SSL_new(sctx), *cli = SSL_new(cctx);
    SSL_set_fd(srv, sv[0]);
    SSL_set_fd(cli, sv[1]);
    SSL_set_accept_state(srv);
    SSL_set_connect_state(cli);
    int done = 0;
    for (int i = 0; i < 100 && done != 3; i++) {
        if (!(done & 1) && SSL_do_handshake(srv) == 1) done |= 1;
        if (!(done & 2) && SSL_do_handshake(cli) == 1) done |= 2;
    }
    ASSERT_EQ(done, 3);
    const char msg[] = "sixteen bytes!!";
    ASSERT_EQ(SSL_write(cli, msg, (int)strlen(msg)), (int)strlen(msg));

    owner_t o = {.one_byte = true};
    sl_conn_init(&o.cn, &loop, &kicks, event_cb, closed_cb, &o);
    ASSERT_EQ(sl_conn_attach(&o.cn, sv[0]), SL_OK);
    o.cn.ssl = srv;
    sl_conn_update(&o.cn, true, false);
    run_until(&o.ngot, (int)strlen(msg));
    ASSERT_EQ(o.ngot, (int)strlen(msg));
    ASSERT_TRUE(o.ngot == (int)strlen(msg) && memcmp(o.got, msg, strlen(msg)) == 0);
    ASSERT_EQ(sl_conn_pending(&o.cn), 0);
    finish(&o);
    SSL_free(srv);
    SSL_free(cli);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    close(sv[0]);
    close(sv[1]);
}

int main(void) {
    uv_loop_init(&loop);
    sl_conn_kicks_init(&kicks, &loop);
    test_poll_error_rearms();
    test_refused();
    test_tls_direction();
    test_socket_switch();
    test_tls_kick();
    sl_conn_kicks_close(&kicks);
    uv_run(&loop, UV_RUN_NOWAIT);
    ASSERT_EQ(uv_loop_close(&loop), 0);
    return check_done("test_conn");
}
