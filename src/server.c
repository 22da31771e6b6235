/* Backend connections: libpq's non-blocking connect on a uv_poll, sluice's
 * internal queries, and raw (optionally TLS) socket I/O for the relay. */
#include "sluice/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "sluice/ledger.h"
#include "sluice/log.h"
#include "sluice/tls.h"

/* Parameters PostgreSQL 15 reports with ParameterStatus (GUC_REPORT). */
static const char *const reported_names[] = {
    "application_name", "client_encoding",      "DateStyle",  "default_transaction_read_only",
    "in_hot_standby",   "integer_datetimes",    "IntervalStyle", "is_superuser",
    "server_encoding",  "server_version",       "session_authorization",
    "standard_conforming_strings", "TimeZone",  NULL};

static void server_event_cb(sl_conn_t *cn, int status, int events);
static void server_update_poll(sl_server_t *s);
static void sv_unlist(sl_server_t *s);

static void maybe_free(sl_server_t *s) {
    if (s->state != SL_SV_CLOSING || s->open_handles > 0 || s->sock.handles > 0) return;
    sv_unlist(s);
    if (s->conn) PQfinish(s->conn); /* sends Terminate, closes the socket */
    if (s->own_ssl) SSL_free(s->own_ssl); /* before its socket closes */
    if (s->own_socket && s->sock.fd >= 0) {
        (void)send(s->sock.fd, "X\0\0\0\4", 5, MSG_NOSIGNAL); /* Terminate, best effort */
        close(s->sock.fd);
    }
    if (s->login) OPENSSL_cleanse(s->login, sizeof *s->login); /* keys, password */
    free(s->login);
    free(s->own_tls);
    free(s->own_startup);
    sl_params_clear(&s->reported);
    sl_params_clear(&s->applied);
    sl_stmt_cache_clear(&s->stmts, &s->w->stmts);
    sl_stmt_carry_free(s->carry);
    free(s->qout);
    free(s->row);
    free(s);
}

/* A server leaving its loop: once the last of its handles there closed,
 * the owner may post it. */
static void maybe_moved(sl_server_t *s) {
    if (s->open_handles > 0 || s->sock.handles > 0) return;
    s->moving = false;
    s->moved(s);
}

static void handle_closed_cb(uv_handle_t *h) {
    sl_server_t *s = h->data;
    s->open_handles--;
    if (s->moving)
        maybe_moved(s);
    else
        maybe_free(s);
}

static void sock_closed_cb(sl_conn_t *cn) {
    sl_server_t *s = cn->data;
    if (s->moving)
        maybe_moved(s);
    else
        maybe_free(s);
}

/* What the backend socket waits for in the server's own states. While
 * ACTIVE, the linked client's relay says it (sl_client_update_poll). */
static void server_update_poll(sl_server_t *s) {
    bool rd = false, wr = false;
    switch (s->state) {
    case SL_SV_CONNECTING:
        if (!s->login) {
            rd = s->pq_wants == PGRES_POLLING_READING;
            wr = s->pq_wants == PGRES_POLLING_WRITING;
        } else if (!s->own_up) {
            wr = true; /* the TCP connect completes */
        } else {
            rd = true; /* a TLS handshake step waits as a read (sl_conn_tls_wait) */
            wr = s->qout != NULL;
        }
        break;
    case SL_SV_QUERY:
        rd = true;
        wr = s->qout != NULL;
        break;
    case SL_SV_IDLE: rd = true; break; /* the backend going away while pooled */
    case SL_SV_ACTIVE: return;
    case SL_SV_RESOLVING:
    case SL_SV_CLOSING:
    case SL_SV_NSTATES: break;
    }
    sl_conn_update(&s->sock, rd, wr);
}

/* An operation ended (login, query, timeout): nothing to wait for until the
 * owner starts the next one. */
static void server_wait_none(sl_server_t *s) { sl_conn_update(&s->sock, false, false); }

const char *const sl_server_state_names[] = {"resolving", "connecting", "query",
                                             "idle",      "active",     "closing"};

#define TO(st) (1u << (st))
/* Which states each state may move to. A connection only ever goes forward
 * through its login (an own login resolves again for its next address),
 * then between idle, active and sluice's own queries, and from anywhere but
 * CLOSING to CLOSING, once. Staying in a state is allowed (a retry of the
 * next address, a second query) except in CLOSING. */
static const unsigned sv_next[SL_SV_NSTATES] = {
    [SL_SV_RESOLVING] = TO(SL_SV_CONNECTING) | TO(SL_SV_CLOSING),
    [SL_SV_CONNECTING] = TO(SL_SV_RESOLVING) | TO(SL_SV_CONNECTING) | TO(SL_SV_QUERY) |
                         TO(SL_SV_IDLE) | TO(SL_SV_CLOSING),
    [SL_SV_QUERY] = TO(SL_SV_QUERY) | TO(SL_SV_IDLE) | TO(SL_SV_ACTIVE) | TO(SL_SV_CLOSING),
    [SL_SV_IDLE] = TO(SL_SV_IDLE) | TO(SL_SV_QUERY) | TO(SL_SV_ACTIVE) | TO(SL_SV_CLOSING),
    [SL_SV_ACTIVE] = TO(SL_SV_ACTIVE) | TO(SL_SV_QUERY) | TO(SL_SV_IDLE) | TO(SL_SV_CLOSING),
    [SL_SV_CLOSING] = 0,
};
#undef TO

void sl_server_lists_init(sl_server_lists_t *l) {
    for (int i = 0; i < SL_SV_NSTATES; i++) {
        sl_list_init(&l->in[i]);
        l->n[i] = 0;
    }
}

/* Takes the server off whatever list it is on, keeping the counts. */
static void sv_unlist(sl_server_t *s) {
    if (sl_list_empty(&s->node)) return; /* on no list (no home yet) */
    if (s->state == SL_SV_CLOSING)
        s->w->nservers_closing--;
    else if (s->home)
        s->home->n[s->state]--;
    sl_list_unlink(&s->node);
}

/* Puts the server on the list of its current state. */
static void sv_list(sl_server_t *s) {
    if (s->state == SL_SV_CLOSING) {
        sl_list_push_back(&s->w->servers_closing, &s->node);
        s->w->nservers_closing++;
        return;
    }
    if (!s->home) return;
    /* Idle ones most recently used first: keeps a warm core and lets the
     * rest idle out from the tail. */
    if (s->state == SL_SV_IDLE)
        sl_list_push_front(&s->home->in[s->state], &s->node);
    else
        sl_list_push_back(&s->home->in[s->state], &s->node);
    s->home->n[s->state]++;
}

void sl_server_adopt(sl_server_t *s, sl_server_lists_t *home) {
    if (s->state == SL_SV_CLOSING) return; /* failed at once: the loop's now */
    sv_unlist(s);
    s->home = home;
    sv_list(s);
}

bool sl_server_set_state(sl_server_t *s, enum sl_server_state st) {
    if ((unsigned)st >= SL_SV_NSTATES || !(sv_next[s->state] & (1u << st))) {
        sl_log_error(s->tag,
                     "internal error: refused server state change %s -> %s; the connection "
                     "stays %s (please report this with the log lines before it)",
                     sl_server_state_names[s->state],
                     (unsigned)st < SL_SV_NSTATES ? sl_server_state_names[st] : "?",
                     sl_server_state_names[s->state]);
        return false;
    }
    sv_unlist(s);
    s->state = st;
    if (st == SL_SV_CLOSING) s->home = NULL; /* the pool may go before the handles do */
    sv_list(s);
    if (st == SL_SV_IDLE) {
        s->idle_since_ms = sl_now_ms(s->w);
        s->link = NULL;
        s->io = NULL;
        server_update_poll(s);
    }
    return true;
}

/* Reports the outcome to the owner. transient: a failure a retry may cure
 * (the backend is not listening, went away, or is starting up or shutting
 * down): the owner retries rather than passing it on to clients at once. */
static void finish_as(sl_server_t *s, const char *err, const char *code, bool transient) {
    sl_server_done_cb done = s->done;
    s->done = NULL;
    s->fail_transient = transient;
    uv_timer_stop(&s->timer);
    if (done) done(s, err, code);
}

static void finish(sl_server_t *s, const char *err, const char *code) {
    finish_as(s, err, code, false);
}

/* SQLSTATEs of a backend that cannot take logins for a moment: 57P01
 * admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now (starting
 * up, in recovery, shutting down), 53300 too_many_connections. */
static bool transient_code(const char *code) {
    return code && (!strcmp(code, "57P01") || !strcmp(code, "57P02") || !strcmp(code, "57P03") ||
                    !strcmp(code, "53300"));
}


static void timeout_cb(uv_timer_t *t) {
    sl_server_t *s = t->data;
    const char *what = s->state == SL_SV_QUERY ? "internal query timed out"
                                               : "server_connect_timeout reached";
    server_wait_none(s);
    finish_as(s, what, "08006", s->state != SL_SV_QUERY);
}

/* ---- connect ---- */

static void fill_reported(sl_server_t *s) {
    for (int i = 0; reported_names[i]; i++) {
        const char *v = PQparameterStatus(s->conn, reported_names[i]);
        if (v && sl_params_set(&s->reported, reported_names[i], v) < 0) return;
    }
}

/* libpq's message on one line: with several addresses it has one line per
 * attempt, and the last one usually says what finally went wrong. */
static void one_line(const char *in, char *out, size_t cap) {
    size_t o = 0;
    for (const char *p = in; *p && o + 3 < cap; p++) {
        if (*p == '\t') continue;
        if (*p == '\n') {
            if (p[1] && o > 0) out[o++] = ';', out[o++] = ' ';
            continue;
        }
        out[o++] = *p;
    }
    out[o] = '\0';
}

static bool is_sqlstate(const char *p) {
    for (int i = 0; i < 5; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'A' && p[i] <= 'Z'))) return false;
    return p[5] == ':' && p[6] == ' ';
}

/* libpq's failure on one line and its SQLSTATE (else 08006). The verbose
 * error style is asked for only to learn the SQLSTATE: it and the LOCATION
 * lines are left out of the text. */
static void libpq_failure(PGconn *conn, char *msg, size_t cap, char code[6]) {
    const char *in = conn ? PQerrorMessage(conn) : "out of memory";
    char tmp[1024];
    size_t o = 0;
    snprintf(code, 6, "08006");
    for (const char *p = in; *p && o + 1 < sizeof tmp;) {
        if ((p == in || p[-1] == '\n') && !strncmp(p, "LOCATION:", 9)) {
            const char *nl = strchr(p, '\n');
            p = nl ? nl + 1 : p + strlen(p);
            continue;
        }
        if (p - in >= 3 && !memcmp(p - 3, ":  ", 3) && is_sqlstate(p)) {
            memcpy(code, p, 5);
            code[5] = '\0';
            p += 7;
            continue;
        }
        tmp[o++] = *p++;
    }
    tmp[o] = '\0';
    one_line(tmp, msg, cap);
}

/* libpq reports a failed connect only as text (no SQLSTATE): these say the
 * backend was not there or went away, which a retry may cure. */
static bool libpq_transient(const char *msg, const char *code) {
    if (strcmp(code, "08006") != 0) return transient_code(code);
    static const int errs[] = {ECONNREFUSED, ECONNRESET,  ECONNABORTED, ETIMEDOUT,
                               EHOSTUNREACH, ENETUNREACH, EPIPE};
    for (size_t i = 0; i < sizeof errs / sizeof *errs; i++)
        if (strstr(msg, strerror(errs[i]))) return true;
    /* A Unix socket gone while the server restarts (not a missing file). */
    if (strstr(msg, "on socket") && strstr(msg, strerror(ENOENT))) return true;
    return strstr(msg, "server closed the connection unexpectedly") ||
           strstr(msg, "timeout expired") || strstr(msg, "could not receive data from server");
}

static void libpq_failed(sl_server_t *s) {
    char msg[480], code[6];
    libpq_failure(s->conn, msg, sizeof msg, code);
    finish_as(s, msg, code, libpq_transient(msg, code));
}

static void connect_step(sl_server_t *s, PostgresPollingStatusType st) {
    if (st == PGRES_POLLING_OK) {
        /* Looked up once: the relay reads and writes through it. */
        s->sock.ssl = PQsslInUse(s->conn) ? (SSL *)PQsslStruct(s->conn, "OpenSSL") : NULL;
        fill_reported(s);
        s->tx_status = 'I';
        sl_log_debug(s->tag, "backend login ok pid=%d", PQbackendPID(s->conn));
        server_wait_none(s);
        finish(s, NULL, NULL);
        return;
    }
    if (st == PGRES_POLLING_FAILED) {
        server_wait_none(s);
        libpq_failed(s);
        return;
    }
    /* libpq may have moved to another socket (the next address). */
    if (sl_conn_attach(&s->sock, PQsocket(s->conn)) < 0) {
        finish(s, "cannot watch backend socket", "08006");
        return;
    }
    s->pq_wants = st;
    server_update_poll(s);
}

static void own_connect_next(sl_server_t *s, int failed);
static void own_login_step(sl_server_t *s, int status, int events);

static void start_libpq(sl_server_t *s, const char *const *keys, const char *const *vals,
                        const char *host, const char *hostaddr) {
    const char *k[72], *v[72];
    int n = 0;
    for (int i = 0; keys[i] && n < 68; i++) {
        if (hostaddr && (!strcmp(keys[i], "hostaddr") || !strcmp(keys[i], "host"))) continue;
        k[n] = keys[i], v[n] = vals[i], n++;
    }
    if (hostaddr) {
        k[n] = "host", v[n] = host, n++;
        k[n] = "hostaddr", v[n] = hostaddr, n++;
    }
    k[n] = NULL, v[n] = NULL;
    s->conn = PQconnectStartParams(k, v, 0);
    if (!s->conn || PQstatus(s->conn) == CONNECTION_BAD) {
        /* A refused connect to a local address fails right here. */
        libpq_failed(s);
        return;
    }
    /* Only so that a failed login carries its SQLSTATE (57P03 is retried,
     * 28P01 is not): see libpq_failure. */
    PQsetErrorVerbosity(s->conn, PQERRORS_VERBOSE);
    sl_server_set_state(s, SL_SV_CONNECTING);
    connect_step(s, PGRES_POLLING_WRITING);
}

/* What a lookup needs once it answers. The caller's parameters are only
 * borrowed for the call: a reload can free the pool's arrays (or a check's
 * or auth_query's connection can go) while the lookup runs, so the context
 * holds copies, in the same allocation, freed with it by resolved_cb. */
typedef struct resolve_ctx {
    uv_getaddrinfo_t req;
    sl_server_t *s;      /* borrowed: waits for this callback before it is freed */
    char **keys, **vals; /* owned copies, NULL-terminated; NULL for sluice's own login */
    char *host;          /* owned copy: the name being resolved */
} resolve_ctx_t;

/* One allocation: the context, the two pointer arrays, then the strings. */
static resolve_ctx_t *resolve_ctx_new(sl_server_t *s, const char *const *keys,
                                      const char *const *vals, const char *host) {
    size_t n = 0, bytes = strlen(host) + 1;
    for (; keys && keys[n]; n++)
        bytes += strlen(keys[n]) + strlen(vals[n]) + 2;
    size_t arrays = keys ? 2 * (n + 1) * sizeof(char *) : 0;
    resolve_ctx_t *ctx = calloc(1, sizeof *ctx + arrays + bytes);
    if (!ctx) return NULL;
    char *str = (char *)(ctx + 1) + arrays;
    ctx->s = s;
    ctx->req.data = ctx;
    if (keys) {
        ctx->keys = (char **)(ctx + 1);
        ctx->vals = ctx->keys + n + 1;
        for (size_t i = 0; i < n; i++) {
            ctx->keys[i] = strcpy(str, keys[i]), str += strlen(str) + 1;
            ctx->vals[i] = strcpy(str, vals[i]), str += strlen(str) + 1;
        }
    }
    ctx->host = strcpy(str, host);
    return ctx;
}

static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    resolve_ctx_t *ctx = req->data;
    sl_server_t *s = ctx->s;
    s->resolve = NULL;
    s->open_handles--;
    if (s->state == SL_SV_CLOSING) {
        uv_freeaddrinfo(res);
        free(ctx);
        maybe_free(s);
        return;
    }
    /* Every address, in resolver order: libpq tries them one by one, with
     * the name repeated so TLS can still check it. */
    char addrs[8 * (INET6_ADDRSTRLEN + 1)] = "", hosts[1024] = "";
    int count = 0;
    for (struct addrinfo *ai = status == 0 ? res : NULL; ai && count < 8; ai = ai->ai_next) {
        char addr[INET6_ADDRSTRLEN];
        const void *a = ai->ai_family == AF_INET6
                            ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                            : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
        if (!inet_ntop(ai->ai_family, a, addr, sizeof addr) || strstr(addrs, addr)) continue;
        if (strlen(hosts) + strlen(ctx->host) + 2 > sizeof hosts) break;
        snprintf(addrs + strlen(addrs), sizeof addrs - strlen(addrs), "%s%s", count ? "," : "",
                 addr);
        snprintf(hosts + strlen(hosts), sizeof hosts - strlen(hosts), "%s%s", count ? "," : "",
                 ctx->host);
        count++;
    }
    if (!count) {
        uv_freeaddrinfo(res);
        char msg[256];
        snprintf(msg, sizeof msg, "cannot resolve backend host %s: %s", ctx->host,
                 status ? uv_strerror(status) : "no address");
        free(ctx);
        finish(s, msg, "08001");
        return;
    }
    snprintf(s->host, sizeof s->host, "%s", addrs);
    if (s->login) {
        for (struct addrinfo *ai = status == 0 ? res : NULL; ai && s->naddrs < 4; ai = ai->ai_next)
            memcpy(&s->addrs[s->naddrs++], ai->ai_addr, ai->ai_addrlen);
        uv_freeaddrinfo(res);
        free(ctx);
        own_connect_next(s, 0);
        return;
    }
    uv_freeaddrinfo(res);
    start_libpq(s, (const char *const *)ctx->keys, (const char *const *)ctx->vals, hosts, addrs);
    free(ctx);
}

static bool is_numeric_host(const char *h) {
    unsigned char tmp[16];
    return inet_pton(AF_INET, h, tmp) == 1 || inet_pton(AF_INET6, h, tmp) == 1;
}

static sl_server_t *server_new(sl_loop_t *w, void *owner, const char *tag, sl_server_done_cb done) {
    sl_server_t *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    sl_list_init(&s->node);
    sl_stmt_cache_init(&s->stmts);
    s->w = w;
    s->owner = owner;
    /* With several loops, ids come from the ledger so that S-<id> names one
     * server in every log line and console row, whichever loop it is on. */
    s->id = w->ledger ? sl_ledger_server_id(w->ledger) : ++w->next_server_id;
    sl_conn_init(&s->sock, w->loop, &w->kicks, server_event_cb, sock_closed_cb, s);
    s->done = done;
    s->state = SL_SV_RESOLVING; /* the first state: on no list until a pool adopts it */
    s->connect_ms = sl_now_ms(w);
    s->scan.coll = s->coll;
    s->scan.coll_cap = sizeof s->coll;
    snprintf(s->tag, sizeof s->tag, "S-%u %s", s->id, tag);
    uv_timer_init(w->loop, &s->timer);
    s->timer.data = s;
    s->open_handles = 1;
    if (w->cfg->server_connect_timeout_ms > 0)
        uv_timer_start(&s->timer, timeout_cb, (uint64_t)w->cfg->server_connect_timeout_ms, 0);
    return s;
}

static const char *kv_get(const char *const *keys, const char *const *vals, const char *key) {
    for (int i = 0; keys[i]; i++)
        if (!strcmp(keys[i], key)) return vals[i];
    return NULL;
}

sl_server_t *sl_server_connect(sl_loop_t *w, void *owner, const char *const *keys,
                               const char *const *vals, const char *tag, sl_server_done_cb done) {
    sl_server_t *s = server_new(w, owner, tag, done);
    if (!s) return NULL;
    const char *host = NULL, *hostaddr = NULL;
    for (int i = 0; keys[i]; i++) {
        if (!strcmp(keys[i], "host")) host = vals[i];
        if (!strcmp(keys[i], "hostaddr")) hostaddr = vals[i];
    }
    snprintf(s->host, sizeof s->host, "%s", hostaddr ? hostaddr : host ? host : "default");
    /* A name is resolved off the loop, then handed to libpq as hostaddr so
     * that PQconnectPoll never blocks in getaddrinfo. */
    if (host && !hostaddr && host[0] != '/' && !strchr(host, ',') && !is_numeric_host(host)) {
        resolve_ctx_t *ctx = resolve_ctx_new(s, keys, vals, host);
        if (ctx) {
            struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
            if (uv_getaddrinfo(w->loop, &ctx->req, resolved_cb, host, NULL, &hints) == 0) {
                s->resolve = &ctx->req;
                s->open_handles++;
                return s;
            }
            free(ctx);
        }
    }
    start_libpq(s, keys, vals, NULL, NULL);
    return s;
}

/* ---- sluice's own login (no plaintext password: md5 hash, SCRAM keys) ---- */

static void query_flush(sl_server_t *s);

/* libpq's TLS settings, as the pool gave them, for sluice's own connect. */
struct sl_own_tls {
    int mode; /* enum sl_tls_mode */
    char host[256], rootcert[256], cert[256], key[256];
    int min_version, max_version;
};

static void own_tls_settings(sl_server_t *s, const char *const *keys, const char *const *vals,
                             const char *host) {
    struct sl_own_tls *t = s->own_tls;
    const char *mode = kv_get(keys, vals, "sslmode");
    t->mode = SL_TLS_PREFER; /* libpq's default */
    for (int i = 0; mode && sl_tls_mode_names[i]; i++)
        if (!strcmp(sl_tls_mode_names[i], mode)) t->mode = i;
    snprintf(t->host, sizeof t->host, "%s", host);
    const char *v;
    if ((v = kv_get(keys, vals, "sslrootcert"))) snprintf(t->rootcert, sizeof t->rootcert, "%s", v);
    if ((v = kv_get(keys, vals, "sslcert"))) snprintf(t->cert, sizeof t->cert, "%s", v);
    if ((v = kv_get(keys, vals, "sslkey"))) snprintf(t->key, sizeof t->key, "%s", v);
    int lo, hi;
    if ((v = kv_get(keys, vals, "ssl_min_protocol_version")) &&
        sl_tls_parse_protocols(v, &lo, &hi) == SL_OK)
        t->min_version = lo;
    if ((v = kv_get(keys, vals, "ssl_max_protocol_version")) &&
        sl_tls_parse_protocols(v, &lo, &hi) == SL_OK)
        t->max_version = hi;
}

/* Queues bytes to send before anything else queued later. */
static bool own_queue(sl_server_t *s, const void *p, uint32_t n) {
    uint8_t *q = realloc(s->qout, s->qout_len + n);
    if (!q) return false;
    memcpy(q + s->qout_len, p, n);
    s->qout = q;
    s->qout_len += n;
    return true;
}

enum { OWN_SSLREQUEST = 1, OWN_HANDSHAKE, OWN_LOGIN };

/* The login proper starts: queue the StartupMessage. */
static bool own_begin_login(sl_server_t *s) {
    s->own_phase = OWN_LOGIN;
    if (!own_queue(s, s->own_startup, s->own_startup_len)) {
        finish(s, "out of memory", "53200");
        return false;
    }
    return true;
}

/* The backend said 'S': a TLS client on the socket, checked as sslmode says. */
static bool own_start_tls(sl_server_t *s) {
    struct sl_own_tls *t = s->own_tls;
    char err[320] = "";
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) snprintf(err, sizeof err, "cannot create a TLS context");
    if (ctx && t->min_version) SSL_CTX_set_min_proto_version(ctx, t->min_version);
    if (ctx && t->max_version) SSL_CTX_set_max_proto_version(ctx, t->max_version);
    if (ctx && t->mode >= SL_TLS_VERIFY_CA) {
        if (!*t->rootcert || SSL_CTX_load_verify_locations(ctx, t->rootcert, NULL) != 1)
            snprintf(err, sizeof err, "sslmode=%s needs a root certificate that loads "
                     "(server_tls_ca_file / sslrootcert \"%.200s\")",
                     sl_tls_mode_names[t->mode], t->rootcert);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    if (ctx && !*err && *t->cert &&
        (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx, *t->key ? t->key : t->cert, SSL_FILETYPE_PEM) != 1))
        snprintf(err, sizeof err, "the client certificate or key for the backend does not load");
    if (ctx && !*err) {
        s->own_ssl = SSL_new(ctx);
        if (!s->own_ssl || SSL_set_fd(s->own_ssl, s->sock.fd) != 1) {
            snprintf(err, sizeof err, "out of memory for TLS");
        } else {
            SSL_set_connect_state(s->own_ssl);
            s->sock.ssl = s->own_ssl;
            bool named = t->host[0] != '/' && !is_numeric_host(t->host);
            if (named) SSL_set_tlsext_host_name(s->own_ssl, t->host);
            if (t->mode == SL_TLS_VERIFY_FULL) SSL_set1_host(s->own_ssl, t->host);
        }
    }
    SSL_CTX_free(ctx); /* the SSL keeps its own reference */
    if (*err) {
        finish(s, err, "08006");
        return false;
    }
    s->own_phase = OWN_HANDSHAKE;
    return true;
}

/* One handshake step; false when finished (failed) or waiting. */
static bool own_handshake(sl_server_t *s) {
    ERR_clear_error();
    errno = 0; /* read below when TLS reports a system error without a code */
    int rc = SSL_do_handshake(s->own_ssl);
    if (rc == 1) {
        sl_conn_tls_wait(&s->sock, SL_TLS_WANT_NONE); /* no step waits for writability now */
        sl_log_debug(s->tag, "backend TLS: %s", SSL_get_version(s->own_ssl));
        return own_begin_login(s);
    }
    int e = SSL_get_error(s->own_ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        sl_conn_tls_wait(&s->sock, e == SSL_ERROR_WANT_READ ? SL_TLS_WANT_READ : SL_TLS_WANT_WRITE);
        server_update_poll(s);
        return false;
    }
    char msg[320], why[200];
    long v = SSL_get_verify_result(s->own_ssl);
    unsigned long err = ERR_peek_error();
    /* The connection cut mid-handshake (a backend restarting, killed, its
     * host rebooting) is as a refused connect: a retry may cure it. A
     * certificate or protocol the backend and sluice do not agree on is not. */
    bool cut = v == X509_V_OK &&
               (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN ||
                (e == SSL_ERROR_SSL && ERR_GET_REASON(err) == SSL_R_UNEXPECTED_EOF_WHILE_READING));
    if (v != X509_V_OK)
        snprintf(why, sizeof why, "certificate verify failed: %s", X509_verify_cert_error_string(v));
    else if (err)
        ERR_error_string_n(err, why, sizeof why);
    else
        snprintf(why, sizeof why, "%s", errno ? strerror(errno) : "connection closed");
    snprintf(msg, sizeof msg, "TLS with the backend failed: %s", why);
    ERR_clear_error();
    finish_as(s, msg, "08006", cut);
    return false;
}

/* The one-byte answer to the SSLRequest; false when finished or waiting. */
static bool own_tls_answer(sl_server_t *s) {
    char c;
    ssize_t n = recv(s->sock.fd, &c, 1, 0);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return false;
    if (n <= 0) {
        /* Closed or reset before answering (killed, restarting, its
         * backlog full): as a refused connect, a retry may cure it. */
        finish_as(s,
                  n == 0 ? "backend closed the connection before answering the SSL request"
                         : strerror(errno),
                  "08006", true);
        return false;
    }
    if (c != 'S' && c != 'N') {
        finish(s, "backend answered the SSL request with something else", "08P01");
        return false;
    }
    if (c == 'S') return own_start_tls(s) && own_handshake(s);
    if (s->own_tls->mode >= SL_TLS_REQUIRE) {
        finish(s, "the backend does not accept TLS, and sslmode requires it", "08006");
        return false;
    }
    return own_begin_login(s);
}

sl_server_t *sl_server_connect_own(sl_loop_t *w, void *owner, const char *const *keys,
                                   const char *const *vals, const char *tag,
                                   const sl_login_secret_t *secret, sl_server_done_cb done) {
    sl_server_t *s = server_new(w, owner, tag, done);
    if (!s) return NULL;
    const char *host = kv_get(keys, vals, "host"), *port = kv_get(keys, vals, "port");
    const char *user = kv_get(keys, vals, "user"), *db = kv_get(keys, vals, "dbname");
    if (!host) host = "/var/run/postgresql";
    if (!port) port = "5432";
    snprintf(s->host, sizeof s->host, "%s", host);
    s->login = calloc(1, sizeof *s->login);
    uint8_t pkt[512];
    int n = s->login ? sl_login_start(s->login, user ? user : "", db ? db : "", secret, pkt,
                                      sizeof pkt)
                     : SL_ENOMEM;
    if (n < 0 || !(s->own_startup = malloc((size_t)n)) ||
        !(s->own_tls = calloc(1, sizeof *s->own_tls))) {
        finish(s, "out of memory", "53200");
        return s;
    }
    memcpy(s->own_startup, pkt, (size_t)n);
    s->own_startup_len = (uint32_t)n;
    own_tls_settings(s, keys, vals, host);
    sl_server_set_state(s, SL_SV_CONNECTING);
    if (host[0] == '/') {
        struct sockaddr_un *un = (struct sockaddr_un *)&s->addrs[0];
        un->sun_family = AF_UNIX;
        snprintf(un->sun_path, sizeof un->sun_path, "%s/.s.PGSQL.%s", host, port);
        s->naddrs = 1;
        own_connect_next(s, 0);
        return s;
    }
    resolve_ctx_t *ctx = resolve_ctx_new(s, NULL, NULL, host);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (ctx) {
        sl_server_set_state(s, SL_SV_RESOLVING);
        if (uv_getaddrinfo(w->loop, &ctx->req, resolved_cb, host, port, &hints) == 0) {
            s->resolve = &ctx->req;
            s->open_handles++;
            return s;
        }
        free(ctx);
    }
    finish(s, "cannot resolve the backend host", "08001");
    return s;
}

/* Stops watching and closes the socket tried last (the handle first:
 * libuv forgets fds by number). */
static void own_drop_socket(sl_server_t *s) {
    if (s->own_ssl) SSL_free(s->own_ssl); /* before its socket closes */
    s->own_ssl = NULL;
    s->sock.ssl = NULL;
    sl_conn_detach(&s->sock);
    if (s->own_socket && s->sock.fd >= 0) close(s->sock.fd);
    s->sock.fd = -1;
    s->own_socket = false;
}

/* Tries the next address; failed is the errno of the one tried last (0 if
 * none), reported if no address is left. */
static void own_connect_next(sl_server_t *s, int failed) {
    int last = failed;
    bool mid_login = s->own_up; /* the last one failed after connecting */
    if (s->own_up) sl_login_restart(s->login);
    own_drop_socket(s);
    while (s->addr_next < s->naddrs) {
        struct sockaddr *sa = (struct sockaddr *)&s->addrs[s->addr_next++];
        socklen_t len = sa->sa_family == AF_UNIX  ? sizeof(struct sockaddr_un)
                        : sa->sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                                   : sizeof(struct sockaddr_in6);
        int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            last = errno, mid_login = false;
            continue;
        }
        if (connect(fd, sa, len) != 0 && errno != EINPROGRESS) {
            last = errno, mid_login = false;
            close(fd);
            continue;
        }
        if (sl_conn_attach(&s->sock, fd) < 0) {
            close(fd);
            last = ENOMEM;
            continue;
        }
        s->own_socket = true;
        s->own_up = false;
        s->own_phase = 0;
        free(s->qout);
        s->qout = NULL;
        s->qout_len = s->qout_off = 0;
        sl_server_set_state(s, SL_SV_CONNECTING);
        /* The scanner starts afresh for this socket's login. */
        s->scan = (sl_scan_t){.coll = s->coll, .coll_cap = sizeof s->coll};
        server_update_poll(s);
        return;
    }
    char msg[320];
    if (mid_login)
        snprintf(msg, sizeof msg, "backend %.200s closed the connection during login: %s", s->host,
                 strerror(last));
    else
        snprintf(msg, sizeof msg, "cannot connect to backend %.200s: %s", s->host,
                 last ? strerror(last) : "no address");
    finish_as(s, msg, "08006", true);
}

#define OWN_LOGIN_MSG_MAX 30000 /* bytes: libpq's bound on a message that is not data */

/* Reads login replies and answers them; false once finished. */
static bool own_read(sl_server_t *s) {
    uint8_t buf[2048], reply[600];
    for (;;) {
        ssize_t n = sl_conn_read(&s->sock, buf, sizeof buf);
        if (n == -EAGAIN) return true;
        if (n <= 0) {
            /* Reset or closed mid-login (a backend restarting): retryable. */
            char msg[320];
            snprintf(msg, sizeof msg, "backend %.200s closed the connection during login%s%s",
                     s->host, n < 0 ? ": " : "", n < 0 ? strerror((int)-n) : "");
            finish_as(s, msg, "08006", true);
            return false;
        }
        for (size_t off = 0; off < (size_t)n;) {
            enum sl_scan_ev ev;
            off += sl_scan_feed(&s->scan, buf + off, (size_t)n - off, &ev);
            /* Only these types come during a login, none long (libpq's
             * bound): else it is garbage, and waiting for the rest of a
             * "message" of any length would last server_connect_timeout. */
            if (ev == SL_SCAN_START &&
                (!strchr("REvSKZN", s->scan.type) || s->scan.len > OWN_LOGIN_MSG_MAX))
                ev = SL_SCAN_ERROR;
            if (ev == SL_SCAN_ERROR) {
                finish(s, "backend sent a malformed message during login", "08P01");
                return false;
            }
            if (ev == SL_SCAN_START) s->scan.collect = true;
            if (ev != SL_SCAN_END) continue;
            if (s->scan.type == 'S') {
                sl_kv_t kv;
                if (!sl_scan_complete(&s->scan)) continue; /* longer than coll: not ours to keep */
                if (sl_proto_parse_param_status(s->coll, s->scan.coll_len, &kv) != SL_OK) {
                    finish(s, "backend sent a malformed ParameterStatus during login", "08P01");
                    return false;
                }
                sl_server_note_param(s, s->coll, s->scan.coll_len);
                continue;
            }
            size_t rlen = 0;
            enum sl_login_result r = sl_login_feed(s->login, s->scan.type, s->coll,
                                                   s->scan.coll_len, reply, sizeof reply, &rlen);
            if (r == SL_LOGIN_FAIL) {
                finish_as(s, s->login->error, s->login->code, transient_code(s->login->code));
                return false;
            }
            if (r == SL_LOGIN_DONE) {
                s->be_pid = s->login->backend_pid;
                s->be_key = s->login->backend_key;
                s->tx_status = 'I';
                sl_log_debug(s->tag, "backend login ok pid=%u (sluice's own exchange)", s->be_pid);
                server_wait_none(s);
                finish(s, NULL, NULL);
                return false;
            }
            if (rlen) {
                if (!own_queue(s, reply, (uint32_t)rlen)) {
                    finish(s, "out of memory", "53200");
                    return false;
                }
                query_flush(s);
                if (s->state != SL_SV_CONNECTING || !s->done) return false;
            }
        }
    }
}

static void own_login_step(sl_server_t *s, int status, int events) {
    if (status < 0) {
        /* A refused connect, or a reset in the middle of the login: the
         * connect failed after all. libuv stopped the handle; the next
         * address (if any) gets a new one. */
        int err = sl_socket_errno(s->sock.fd);
        sl_log_debug(s->tag, "backend address failed %s: %s",
                     s->own_up ? "during login" : "to connect", strerror(err));
        own_connect_next(s, err);
        return;
    }
    if (!s->own_up) {
        int err = 0;
        socklen_t el = sizeof err;
        if (getsockopt(s->sock.fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err) {
            sl_log_debug(s->tag, "connect to a backend address failed: %s", strerror(err));
            own_connect_next(s, err ? err : errno);
            return;
        }
        s->own_up = true;
        /* TLS first unless sslmode says no (allow: plain first, as libpq). */
        if (s->own_tls->mode >= SL_TLS_PREFER) {
            static const uint8_t req[8] = {0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f};
            s->own_phase = OWN_SSLREQUEST;
            if (!own_queue(s, req, sizeof req)) {
                finish(s, "out of memory", "53200");
                return;
            }
        } else if (!own_begin_login(s)) {
            return;
        }
    }
    if (s->own_phase == OWN_HANDSHAKE) {
        if (!own_handshake(s)) return;
        events |= UV_WRITABLE; /* the StartupMessage is queued now */
    }
    if (s->qout) {
        query_flush(s);
        if (s->state != SL_SV_CONNECTING || !s->done) return;
    }
    if (s->own_phase == OWN_SSLREQUEST && (events & UV_READABLE) && !s->qout) {
        if (!own_tls_answer(s)) return;
        if (s->qout) {
            query_flush(s);
            if (s->state != SL_SV_CONNECTING || !s->done) return;
        }
    }
    if (s->own_phase == OWN_LOGIN && (events & UV_READABLE) && !own_read(s)) return;
    server_update_poll(s);
}

/* ---- internal queries ---- */

static void query_flush(sl_server_t *s) {
    while (s->qout_off < s->qout_len) {
        ssize_t n = sl_conn_write(&s->sock, s->qout + s->qout_off, s->qout_len - s->qout_off);
        if (n == -EAGAIN) return;
        if (n <= 0) {
            bool login = s->state == SL_SV_CONNECTING;
            finish_as(s,
                      login ? "backend closed the connection during login"
                            : "lost connection to backend while sending a query",
                      "08006", login);
            return;
        }
        s->qout_off += (uint32_t)n;
    }
    free(s->qout);
    s->qout = NULL;
    s->qout_len = s->qout_off = 0;
}

int sl_server_query(sl_server_t *s, const char *sql, sl_server_done_cb done) {
    /* What the socket waited for before (a relay's wants) is over. */
    server_wait_none(s);
    size_t len = strlen(sql) + 1;
    free(s->qout);
    s->qout = malloc(len + 5);
    if (!s->qout) return SL_ENOMEM;
    s->qout[0] = 'Q';
    sl_put_be32(s->qout + 1, (uint32_t)(len + 4));
    memcpy(s->qout + 5, sql, len);
    s->qout_len = (uint32_t)(len + 5);
    s->qout_off = 0;
    s->done = done;
    s->error[0] = s->error_code[0] = '\0';
    free(s->row);
    s->row = NULL;
    s->row_len = 0;
    sl_server_set_state(s, SL_SV_QUERY);
    if (s->w->cfg->server_connect_timeout_ms > 0)
        uv_timer_start(&s->timer, timeout_cb, (uint64_t)s->w->cfg->server_connect_timeout_ms, 0);
    query_flush(s);
    if (s->state == SL_SV_QUERY && s->done) server_update_poll(s);
    return SL_OK;
}

void sl_server_note_param(sl_server_t *s, const uint8_t *body, uint32_t n) {
    sl_kv_t kv;
    if (sl_proto_parse_param_status(body, n, &kv) == SL_OK)
        (void)sl_params_set(&s->reported, kv.name, kv.value);
}

/* Reads backend bytes that belong to sluice (internal query, or unsolicited
 * messages while idle). Returns false if the server was finished or closed. */
static bool read_own(sl_server_t *s) {
    uint8_t buf[4096];
    for (;;) {
        ssize_t n = sl_conn_read(&s->sock, buf, sizeof buf);
        if (n == -EAGAIN) return true;
        if (n <= 0) {
            if (s->state == SL_SV_QUERY)
                finish(s, s->error[0] ? s->error : "backend closed the connection", "08006");
            else
                sl_server_close(s, "backend closed the connection");
            return false;
        }
        size_t off = 0;
        while (off < (size_t)n) {
            enum sl_scan_ev ev;
            off += sl_scan_feed(&s->scan, buf + off, (size_t)n - off, &ev);
            if (ev == SL_SCAN_ERROR) {
                sl_server_close(s, "backend sent a malformed message");
                return false;
            }
            if (ev == SL_SCAN_START)
                s->scan.collect = strchr("ESZD", s->scan.type) != NULL;
            if (ev != SL_SCAN_END || !s->scan.collect) continue;
            uint8_t t = s->scan.type;
            if (t == 'D' && !s->row && sl_scan_complete(&s->scan)) {
                s->row = malloc(s->scan.coll_len);
                if (s->row) memcpy(s->row, s->coll, s->scan.coll_len);
                s->row_len = s->row ? s->scan.coll_len : 0;
            } else if (t == 'S' && sl_scan_complete(&s->scan)) {
                sl_server_note_param(s, s->coll, s->scan.coll_len);
            } else if (t == 'E') {
                sl_error_fields_t ef;
                if (!s->error[0] && sl_proto_parse_error(s->coll, s->scan.coll_len, &ef) == 0) {
                    snprintf(s->error, sizeof s->error, "%s",
                             ef.message ? ef.message : "backend error");
                    snprintf(s->error_code, sizeof s->error_code, "%s",
                             ef.code ? ef.code : "XX000");
                }
                if (s->state != SL_SV_QUERY) {
                    /* A backend speaks unasked only to say it ends (a
                     * FATAL: terminated, shutting down); its close may
                     * come in a later read, and a client given it meanwhile
                     * would meet the reset. */
                    sl_log_info(s->tag, "backend sent an error while idle: %s", s->error);
                    sl_server_close(s, "backend sent an error while idle");
                    return false;
                }
            } else if (t == 'Z' && s->scan.coll_len == 1) {
                s->tx_status = (char)s->coll[0];
                if (s->state == SL_SV_QUERY) {
                    server_wait_none(s);
                    finish(s, s->error[0] ? s->error : NULL, s->error_code);
                    return false;
                }
            }
        }
        if (n < (ssize_t)sizeof buf && sl_conn_pending(&s->sock) == 0) return true;
    }
}

static void server_event_cb(sl_conn_t *cn, int status, int events) {
    sl_server_t *s = cn->data;
    switch (s->state) {
    case SL_SV_CONNECTING:
        if (s->login) {
            own_login_step(s, status, events);
            return;
        }
        /* libuv reports POLLERR (say, a refused connect) as a failed poll;
         * libpq reads the socket error itself and moves on to the next
         * address, so it decides. */
        (void)status;
        server_wait_none(s); /* stopped before libpq may close or switch its socket */
        connect_step(s, PQconnectPoll(s->conn));
        return;
    case SL_SV_QUERY:
        if (status < 0) {
            finish(s, strerror(sl_socket_errno(s->sock.fd)), "08006");
            return;
        }
        if (events & UV_WRITABLE) {
            query_flush(s);
            if (s->state != SL_SV_QUERY || !s->done) return;
            server_update_poll(s);
        }
        if (events & UV_READABLE) read_own(s);
        return;
    case SL_SV_IDLE:
        if (status < 0) {
            sl_server_close(s, strerror(sl_socket_errno(s->sock.fd)));
            return;
        }
        read_own(s);
        return;
    case SL_SV_ACTIVE:
        if (s->io) s->io(s, status, events);
        return;
    case SL_SV_RESOLVING:
    case SL_SV_CLOSING:
    case SL_SV_NSTATES:
        return;
    }
}

void sl_server_close(sl_server_t *s, const char *reason) {
    if (s->state == SL_SV_CLOSING) return;
    sl_log_debug(s->tag, "closing server connection: %s", reason);
    sl_server_set_state(s, SL_SV_CLOSING);
    if (s->on_close) s->on_close(s);
    s->done = NULL;
    s->io = NULL;
    sl_conn_detach(&s->sock);
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, handle_closed_cb);
    if (s->resolve) uv_cancel((uv_req_t *)s->resolve);
}

/* ---- moving to another loop ---- */

int sl_server_leave_loop(sl_server_t *s, sl_server_moved_cb moved) {
    if (s->state != SL_SV_IDLE || s->moving || s->link || s->qout || s->open_handles != 1 ||
        s->tx_status != 'I')
        return SL_ECONFIG;
    int rc = sl_stmt_cache_export(&s->stmts, &s->w->stmts, &s->carry);
    if (rc != SL_OK) return rc;
    sv_unlist(s);
    s->home = NULL;
    s->moving = true;
    s->moved = moved;
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, handle_closed_cb);
    /* libuv forgets the fd here, on this loop; the other loop watches it
     * with a handle of its own. */
    sl_conn_detach(&s->sock);
    return SL_OK;
}

int sl_server_join_loop(sl_server_t *s, sl_loop_t *w, void *owner) {
    int fd = s->sock.fd;
    SSL *ssl = s->sock.ssl;
    s->w = w;
    s->owner = owner;
    sl_conn_init(&s->sock, w->loop, &w->kicks, server_event_cb, sock_closed_cb, s);
    s->sock.fd = fd; /* closed by PQfinish (or by sluice, own_socket) if the attach fails */
    s->sock.ssl = ssl;
    uv_timer_init(w->loop, &s->timer);
    s->timer.data = s;
    s->open_handles = 1;
    int rc = sl_stmt_cache_import(&s->stmts, &w->stmts, s->carry);
    s->carry = NULL;
    if (sl_conn_attach(&s->sock, fd) != SL_OK) return SL_EIO;
    if (rc != SL_OK) return rc;
    /* Idle: reads, to see the backend go away. Without an owner it is
     * closed at once (its loop may be stopping: nothing new is armed). */
    if (owner) server_update_poll(s);
    return SL_OK;
}
