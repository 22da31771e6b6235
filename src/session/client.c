/* Client connections: accept, startup packet, authentication, the idle and
 * waiting states of transaction pooling, timeouts and the single close path.
 * Relaying bytes while linked to a server lives in relay.c. */
#include "session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sluice/authq.h"
#include "sluice/control.h"
#include "sluice/ledger.h"
#include "sluice/log.h"
#include "sluice/peers.h"
#include "sluice/strlist.h"
#include "sluice/tls.h"

/* query_wait_notify's NOTICE, PgBouncer's text (janitor.c), so that what
 * watches for it works unchanged. */
#define SL_WAIT_NOTICE "No server connection available in postgres backend, client being queued"

const char *const sl_client_state_names[] = {"login",   "auth",   "login_wait", "idle",
                                             "waiting", "active", "closing"};

static void client_event_cb(sl_conn_t *cn, int status, int events);

/* ---- activity state (sl_client_act_t) ---- */

/* At most this many spare activity states per loop: enough for the
 * clients that turn active in one loop round, bounded for memory. */
#define ACT_FREE_MAX 32

/* The resting copy idle clients point at: all zero, in pages of its own.
 * A write to it through an idle client is a bug (it would reach every idle
 * client). Debug builds (the sanitizer suite) map it read-only, so that
 * the write stops sluice where it happens; release builds keep serving,
 * and the janitor finds and undoes it (sl_session_tick_all). */
#ifdef NDEBUG
#define ACT_REST_PROT (PROT_READ | PROT_WRITE)
#else
#define ACT_REST_PROT PROT_READ
#endif
static sl_client_act_t *act_rest_new(void) {
    long page = sysconf(_SC_PAGESIZE);
    size_t len = ((sizeof(sl_client_act_t) + (size_t)page - 1) / (size_t)page) * (size_t)page;
    void *p = mmap(NULL, len, ACT_REST_PROT, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p; /* anonymous pages are zero */
}

static void act_rest_free(sl_client_act_t *r) {
    long page = sysconf(_SC_PAGESIZE);
    size_t len = ((sizeof(sl_client_act_t) + (size_t)page - 1) / (size_t)page) * (size_t)page;
    if (r) munmap(r, len);
}

bool sl_client_own_slow(sl_client_t *c) {
    sl_loop_t *w = c->w;
    sl_client_act_t *a = w->act_free;
    if (a) {
        w->act_free = a->next_free;
        w->act_nfree--;
        a->next_free = NULL; /* given back all zero: nothing else to set */
    } else if (!(a = calloc(1, sizeof *a))) {
        return false;
    }
    c->a = a;
    return true;
}

/* Gives c's activity state back once every field is at rest: what an idle
 * client reads then is what it read in its own copy. A copy left as
 * something else (a partial message, a setting read back later) stays. */
static void act_maybe_give(sl_client_t *c) {
    sl_client_act_t *a = c->a, *rest = c->w->act_rest;
    if (a == rest) return;
    /* Forms of "nothing" that are not all zero: an empty list that kept its
     * array, a framer between messages. */
    if (a->dirty.n == 0 && a->dirty.v) sl_params_clear(&a->dirty);
    if (a->fix_names.n == 0 && a->fix_names.v) sl_params_clear(&a->fix_names);
    if (a->scan_new == 0 && a->scan.hdr_len == 0 && !a->scan.in_body) a->scan = (sl_scan_t){0};
    /* Fields read only under a guard that is off now keep their last value
     * otherwise, and a client that ran one query would never give its copy
     * back. */
    if (a->pending == 0) a->query_ms = 0;
    if (a->dirty.n == 0) a->capturing = 0;
    if (!c->holding) a->hold_start = 0;
    if (!c->barrier) a->barrier_off = 0;
    if (!c->fix_fence) a->fix_fence_off = 0;
    if (a->fix == 0) a->fix_status = 0, a->fix_after = 0;
    if (!a->console_out) a->console_len = a->console_off = 0;
    if (!a->auth && !a->authq) a->auth_method = 0;
    if (memcmp(a, rest, sizeof *a) != 0) return;
    c->a = rest;
    if (c->w->act_nfree >= ACT_FREE_MAX) {
        free(a);
        return;
    }
    a->next_free = c->w->act_free;
    c->w->act_free = a;
    c->w->act_nfree++;
}

static bool buffers_take(sl_client_t *c) {
    if (!sl_client_own(c) || sl_buf_take(&c->w->bufs, &c->a->in) < 0 ||
        sl_buf_take(&c->w->bufs, &c->a->out) < 0) {
        sl_client_close(c, "out of memory for connection buffers");
        return false;
    }
    return true;
}

/* An idle client keeps no buffers: that is what makes idle clients cheap. */
static void buffers_maybe_give(sl_client_t *c) {
    if (c->state != SL_CL_IDLE || sl_buf_len(&c->a->in) || sl_buf_len(&c->a->out) ||
        sl_console_busy(c))
        return;
    sl_buf_give(&c->w->bufs, &c->a->in);
    sl_buf_give(&c->w->bufs, &c->a->out);
    act_maybe_give(c);
}

#define TO(st) (1u << (st))
/* Which states each state may move to: login forward only (a login ends
 * IDLE when its pool's cached parameters answer it, LOGIN_WAIT when a first
 * server must), then between idle, waiting and active (a read moved to
 * another backend waits again), and from anywhere to CLOSING once. An idle
 * client asks for a server before it gets one. Staying in a state is
 * allowed except in CLOSING. */
static const unsigned cl_next[SL_CL_NSTATES] = {
    [SL_CL_LOGIN] = TO(SL_CL_LOGIN) | TO(SL_CL_AUTH) | TO(SL_CL_LOGIN_WAIT) | TO(SL_CL_IDLE) |
                    TO(SL_CL_CLOSING),
    [SL_CL_AUTH] = TO(SL_CL_AUTH) | TO(SL_CL_LOGIN_WAIT) | TO(SL_CL_IDLE) | TO(SL_CL_CLOSING),
    [SL_CL_LOGIN_WAIT] =
        TO(SL_CL_LOGIN_WAIT) | TO(SL_CL_IDLE) | TO(SL_CL_ACTIVE) | TO(SL_CL_CLOSING),
    [SL_CL_IDLE] = TO(SL_CL_IDLE) | TO(SL_CL_WAITING) | TO(SL_CL_CLOSING),
    [SL_CL_WAITING] = TO(SL_CL_WAITING) | TO(SL_CL_IDLE) | TO(SL_CL_ACTIVE) | TO(SL_CL_CLOSING),
    [SL_CL_ACTIVE] = TO(SL_CL_ACTIVE) | TO(SL_CL_IDLE) | TO(SL_CL_WAITING) | TO(SL_CL_CLOSING),
    [SL_CL_CLOSING] = 0,
};
#undef TO

/* Sets the state and puts the client on the loop's list for it: a new
 * client, or one its setter just took off its old list. */
static void client_list(sl_client_t *c, enum sl_client_state st) {
    c->state = st;
    sl_list_push_back(&c->w->clients_in[st], &c->state_node);
    c->w->nclients_in[st]++;
}

bool sl_client_set_state(sl_client_t *c, enum sl_client_state st) {
    if ((unsigned)st >= SL_CL_NSTATES || !(cl_next[c->state] & (1u << st))) {
        sl_log_error(sl_client_tag(c),
                     "internal error: refused client state change %s -> %s; the connection "
                     "stays %s (please report this with the log lines before it)",
                     sl_client_state_names[c->state],
                     (unsigned)st < SL_CL_NSTATES ? sl_client_state_names[st] : "?",
                     sl_client_state_names[c->state]);
        return false;
    }
    if (st == SL_CL_WAITING && c->state != SL_CL_WAITING) c->wait_start_us = sl_now_us(c->w);
    /* query_wait_notify: one notice per wait. */
    if (st == SL_CL_WAITING && c->state != SL_CL_WAITING) c->wait_notified = false;
    sl_list_unlink(&c->state_node);
    c->w->nclients_in[c->state]--;
    client_list(c, st);
    if (st == SL_CL_IDLE) {
        c->last_io_ms = sl_now_ms(c->w);
        /* Nothing in flight: whatever answered the last request (a server
         * or sluice itself) ended the transaction. */
        if (c->a->pending == 0 && c->a->xact_ms) c->a->xact_ms = 0; /* never the resting copy */
        buffers_maybe_give(c);
    }
    return true;
}

/* What the client's socket waits for, from its state and buffers; while
 * linked, the same for its server's socket, which the relay drives. */
void sl_client_update_poll(sl_client_t *c) {
    if (c->state == SL_CL_CLOSING) return;
    bool rd = false;
    switch (c->state) {
    case SL_CL_LOGIN:
    case SL_CL_AUTH:
        rd = true;
        break;
    case SL_CL_IDLE:
        /* A console client reads its next Query once the reply is out;
         * while a command is held (PAUSE) it reads too, into its buffer
         * only, so that its leaving is seen and the wait dropped. */
        rd = !c->console || ((!sl_console_busy(c) || (c->console_held && !c->a->console_out)) &&
                             (!c->a->in.data || sl_buf_space(&c->a->in) > 0 || c->a->in.head > 0));
        break;
    case SL_CL_LOGIN_WAIT:
        rd = !c->early_bytes;
        break;
    case SL_CL_WAITING:
    case SL_CL_ACTIVE:
        rd = !c->terminated && c->a->in.data && sl_buf_len(&c->a->in) < c->a->in.cap;
        break;
    default:
        break;
    }
    if (c->w->suspended && !c->console) rd = false; /* the console stays: it RESUMEs */
    /* Writable also when the pump holds server bytes that fit: its turn
     * comes with the event (see sl_relay_resume). */
    bool wr = (c->a->out.data && sl_buf_len(&c->a->out) > 0) || sl_ps_can_pump(c);
    sl_conn_update(&c->sock, rd, wr);
    sl_server_t *s = c->server;
    if (s && s->state == SL_SV_ACTIVE) {
        /* With statement tracking, server bytes first land in the pump's buffer. */
        const sl_buf_t *to = c->ps ? &c->ps->sin : &c->a->out;
        sl_conn_update(&s->sock, !c->w->suspended && to->data && to->cap - sl_buf_len(to) > 0,
                       c->c2s_blocked);
    }
}

bool sl_client_flush(sl_client_t *c) {
    if (sl_client_done(c)) return false;
    while (c->a->out.data && sl_buf_len(&c->a->out) > 0) {
        ssize_t n = sl_conn_write(&c->sock, sl_buf_rptr(&c->a->out), sl_buf_len(&c->a->out));
        if (n == -EAGAIN) break;
        if (n <= 0)
            return sl_session_drop(c, "write to client failed: %s",
                                   strerror(n < 0 ? (int)-n : EPIPE));
        sl_buf_consume(&c->a->out, (uint32_t)n);
        sl_pool_stats_t *ps = sl_client_stats(c);
        if (ps) ps->bytes_sent += (uint64_t)n;
    }
    /* A client that sent Terminate goes once everything owed to it is out. */
    if (c->terminated && c->state == SL_CL_IDLE && sl_buf_len(&c->a->in) == 0 &&
        (!c->a->out.data || sl_buf_len(&c->a->out) == 0))
        return sl_session_drop(c, "client disconnected");
    buffers_maybe_give(c);
    sl_client_update_poll(c);
    return true;
}

/* The poll handle is closed: nothing can reach the client any more. */
static void client_closed_cb(sl_conn_t *cn) {
    sl_client_t *c = cn->data;
    sl_loop_t *w = c->w;
    sl_list_unlink(&c->state_node);
    w->nclients_in[c->state]--;
    if (c->sock.ssl) {
        SSL_shutdown(c->sock.ssl); /* close_notify, best effort */
        SSL_free(c->sock.ssl);
    }
    close(c->sock.fd);
    sl_ps_unlink(c);
    if (c->a != w->act_rest) { /* the resting copy holds nothing */
        sl_client_act_t *act = c->a;
        sl_buf_give(&w->bufs, &act->in);
        sl_buf_give(&w->bufs, &act->out);
        if (act->auth) {
            sl_auth_clear(act->auth);
            free(act->auth);
        }
        free(act->login_buf);
        free(act->console_out);
        sl_params_clear(&act->fix_names);
        sl_params_clear(&act->dirty);
        free(act);
    }
    free(c->fail_msg);
    sl_params_clear(&c->params);
    sl_params_clear(&c->startup);
    sl_stmt_names_clear(&c->stmt_names, &w->stmts);
    free(c->user); /* and dbname, in the same block */
    free(c);
    if ((w->shutting_down || w->draining) && w->nclients == 0 && w->on_drained) w->on_drained(w);
}

static void close_v(sl_client_t *c, const char *fmt, va_list ap) {
    if (c->state == SL_CL_CLOSING) return;
    char reason[512];
    vsnprintf(reason, sizeof reason, fmt, ap);
    if (c->quiet_close)
        sl_log_debug(sl_client_tag(c), "closing: %s", reason);
    else if (c->w->cfg->log_disconnections)
        sl_log_info(sl_client_tag(c), "closing: %s", reason);
    if (c->wait_pool) sl_pool_cancel(c->wait_pool, &c->waiter);
    if (c->a->authq) { /* only a login's: an idle client's copy is read-only */
        sl_authq_forget(c->a->authq);
        c->a->authq = NULL;
    }
    if (c->server) sl_relay_unlink(c);
    sl_router_detach(c);
    if (c->counted) sl_pool_leave(c->pool);
    c->counted = false;
    if (c->pool) sl_pool_unref(c->pool);
    c->pool = NULL;
    sl_client_set_state(c, SL_CL_CLOSING);
    sl_list_unlink(&c->node);
    c->w->nclients--;
    if (c->w->ledger) (void)sl_ledger_clients_add(c->w->ledger, -1);
    sl_conn_detach(&c->sock); /* client_closed_cb frees it */
}

void sl_client_close(sl_client_t *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    close_v(c, fmt, ap);
    va_end(ap);
}

void sl_client_fatal(sl_client_t *c, const char *code, const char *fmt, ...) {
    if (c->state == SL_CL_CLOSING) return;
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* An error can only follow whole messages: if a server's message is cut
     * off in the buffer, the client just sees the connection close. */
    bool boundary =
        !c->server || c->server->state != SL_SV_ACTIVE || sl_scan_at_boundary(&c->server->scan);
    /* A console reply goes out in pieces of any size: only once all of it
     * is in the buffer does the buffer end between messages. */
    if (c->a->console_out && c->a->console_off < c->a->console_len) boundary = false;
    if (boundary && sl_client_own(c) && sl_buf_take(&c->w->bufs, &c->a->out) == SL_OK &&
        sl_proto_put_error(&c->a->out, "FATAL", code, msg) == SL_OK) {
        sl_session_count_error(c, code);
        /* Best effort, never blocking: the socket buffer almost always has room. */
        while (sl_buf_len(&c->a->out) > 0) {
            ssize_t n = sl_conn_write(&c->sock, sl_buf_rptr(&c->a->out), sl_buf_len(&c->a->out));
            if (n <= 0) break;
            sl_buf_consume(&c->a->out, (uint32_t)n);
        }
    }
    sl_client_close(c, "%s (sqlstate %s)", msg, code);
}

void sl_session_count_error(sl_client_t *c, const char *code) {
    int i = sl_err_class_index(code);
    c->w->stats.errors[i]++;
    sl_pool_stats_t *ps = sl_client_stats(c);
    if (ps) ps->errors[i]++;
}

static void record_failure(sl_client_t *c, const char *code, bool silent, const char *fmt,
                           va_list ap) {
    if (sl_client_done(c)) return; /* the first failure wins */
    snprintf(c->fail_code, sizeof c->fail_code, "%s", code);
    c->fail_silent = silent;
    if (vasprintf(&c->fail_msg, fmt, ap) < 0) c->fail_msg = NULL;
}

bool sl_session_fail(sl_client_t *c, const char *code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    record_failure(c, code, false, fmt, ap);
    va_end(ap);
    return false;
}

bool sl_session_drop(sl_client_t *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    record_failure(c, "08006", true, fmt, ap);
    va_end(ap);
    return false;
}

bool sl_session_settle(sl_client_t *c) {
    if (c->state == SL_CL_CLOSING) return true;
    if (!c->fail_code[0]) return false;
    char code[sizeof c->fail_code];
    memcpy(code, c->fail_code, sizeof code);
    char *msg = c->fail_msg;
    c->fail_msg = NULL;
    c->fail_code[0] = 0; /* no longer done: the close must run */
    if (c->fail_silent)
        sl_client_close(c, "%s", msg ? msg : "connection dropped");
    else
        sl_client_fatal(c, code, "%s", msg ? msg : "out of memory");
    free(msg);
    return true;
}

/* Per-thread buffers for tags and peers formatted on demand (each worker
 * is a thread): a few, so that one log call may format more than one. */
#define TAG_BUFS 4
static _Thread_local char tag_bufs[TAG_BUFS][256];
static _Thread_local unsigned tag_next;

static char *tag_buf(void) {
    return tag_bufs[tag_next++ % TAG_BUFS];
}

static void format_peer(const sl_client_t *c, char *out, size_t cap) {
    char host[INET6_ADDRSTRLEN] = "?";
    if (c->peer_family == 0 || c->peer_family == SL_PEER_UNKNOWN) {
        snprintf(out, cap, c->peer_family ? "?" : "unix");
        return;
    }
    inet_ntop(c->peer_family, c->peer_addr, host, sizeof host);
    snprintf(out, cap, c->peer_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, c->peer_port);
}

const char *sl_client_peer(const sl_client_t *c) {
    char *b = tag_buf();
    format_peer(c, b, sizeof tag_bufs[0]);
    return b;
}

const char *sl_client_tag(const sl_client_t *c) {
    char peer[INET6_ADDRSTRLEN + 8], *b = tag_buf();
    format_peer(c, peer, sizeof peer);
    snprintf(b, sizeof tag_bufs[0], "C-%u db=%s user=%s peer=%s", c->id,
             c->dbname ? c->dbname : "?", c->user ? c->user : "?", peer);
    return b;
}

/* Keeps the listener's "address:port", "[v6]:port" or "unix" compactly.
 * False for any other form (the listener makes none; unit tests do). */
static bool parse_peer(sl_client_t *c, const char *peer) {
    if (strcmp(peer, "unix") == 0) return true;
    char host[INET6_ADDRSTRLEN];
    const char *colon = strrchr(peer, ':');
    bool v6 = peer[0] == '[';
    size_t hlen = colon ? (size_t)(colon - peer) - (v6 ? 2 : 0) : 0;
    if (!colon || hlen == 0 || hlen >= sizeof host || (v6 && colon[-1] != ']')) return false;
    memcpy(host, peer + (v6 ? 1 : 0), hlen);
    host[hlen] = 0;
    char *end;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (*end || port > 65535) return false;
    c->peer_family = v6 ? AF_INET6 : AF_INET;
    c->peer_port = (uint16_t)port;
    return inet_pton(c->peer_family, host, c->peer_addr) == 1;
}

void sl_session_accept(sl_loop_t *w, int fd, const char *peer) {
    sl_client_t *c = calloc(1, sizeof *c);
    if (!c) {
        sl_log_error(NULL, "cannot accept client from %s: out of memory", peer);
        close(fd);
        return;
    }
    if (!parse_peer(c, peer)) c->peer_family = SL_PEER_UNKNOWN;
    if (!w->act_rest) w->act_rest = act_rest_new();
    c->w = w;
    c->a = w->act_rest;
    /* A login writes its state at once: it starts with its own copy. */
    if (!c->a || !sl_client_own(c)) {
        sl_log_error(NULL, "cannot accept client from %s: out of memory", peer);
        free(c);
        close(fd);
        return;
    }
    sl_conn_init(&c->sock, w->loop, &w->kicks, client_event_cb, client_closed_cb, c);
    if (sl_conn_attach(&c->sock, fd) != SL_OK) {
        sl_log_error(NULL,
                     "cannot accept client from %s: the event loop refused to watch its "
                     "socket",
                     peer);
        free(c->a);
        free(c);
        close(fd);
        return;
    }
    c->id = sl_loop_client_id(w);
    c->tx_backend = -1;
    if (RAND_bytes((unsigned char *)&c->cancel_key, sizeof c->cancel_key) != 1)
        c->cancel_key = (uint32_t)rand();
    c->cancel_key = sl_cancelkey_secret(c->cancel_key);
    sl_list_init(&c->waiter.node);
    c->connect_ms = c->last_io_ms = sl_now_ms(w);
    client_list(c, SL_CL_LOGIN);
    sl_list_push_back(&w->clients, &c->node);
    w->nclients++;
    /* With several loops, max_client_conn counts the clients of all. */
    if ((w->ledger ? sl_ledger_clients_add(w->ledger, 1) : w->nclients) > w->cfg->max_client_conn)
        c->a->reject = "no more connections allowed (max_client_conn)";
    c->a->login_buf = malloc(SL_STARTUP_MAX_BYTES);
    if (!c->a->login_buf) {
        sl_client_close(c, "out of memory");
        return;
    }
    sl_client_update_poll(c);
}

/* ---- startup and authentication ---- */

static void login_consume(sl_client_t *c, uint32_t n) {
    memmove(c->a->login_buf, c->a->login_buf + n, c->a->login_len - n);
    c->a->login_len -= n;
}

static void waiter_cb(sl_waiter_t *wt, sl_server_t *s, const char *err, const char *code);

static void auth_ok(sl_client_t *c) {
    if (c->console) {
        sl_console_login(c, false);
        return;
    }
    sl_auth_clear(c->a->auth);
    free(c->a->auth);
    c->a->auth = NULL;
    char err[256];
    if (sl_control_disabled(c->w, c->dbname)) {
        sl_client_fatal(c, "57P03",
                        "database \"%s\" is disabled (DISABLE): new connections are refused "
                        "until an operator runs ENABLE %s",
                        c->dbname, c->dbname);
        return;
    }
    c->pool = sl_pool_get(c->w, c->dbname, c->user, err, sizeof err);
    if (!c->pool) {
        sl_client_fatal(c, "3D000", "%s", err);
        return;
    }
    sl_pool_ref(c->pool);
    /* max_db_client_connections, max_user_client_connections: checked
     * once authenticated, so that clients who cannot log in take no one's
     * place. */
    char detail[200];
    const char *refusal = sl_pool_admit(c->pool, detail, sizeof detail);
    if (refusal) {
        sl_log_info(sl_client_tag(c), "login refused: %s", detail);
        sl_client_fatal(c, "53300", "%s", refusal);
        return;
    }
    c->counted = true;
    /* A change of max_prepared_statements applies to clients that log in
     * after it: the statements of one already here live under sluice's
     * names (tracked) or its own (untracked), and stay so. */
    c->ps_on = c->w->cfg->max_prepared_statements > 0;
    if (!sl_router_attach(c)) {
        sl_client_fatal(c, "53200", "out of memory");
        return;
    }
    if (c->w->cfg->log_connections) sl_log_info(sl_client_tag(c), "login ok");
    if (!sl_client_flush(c)) return;
    /* As PgBouncer does: once the pool knows what a fresh backend reports,
     * the login needs no server, and a busy pool does not hold it up. */
    sl_pool_t *lp = sl_router_login_pool(c);
    if (lp && sl_pool_has_defaults(lp)) {
        sl_relay_welcome(c, lp);
        return;
    }
    /* The pool never connected: a first backend login answers this one
     * (and fills the pool's cache), or reports why it failed. */
    sl_client_set_state(c, SL_CL_LOGIN_WAIT);
    sl_client_update_poll(c);
    c->waiter.cb = waiter_cb;
    sl_router_request(c);
}

static int add_param(sl_client_t *c, const char *name, const char *value) {
    if (sl_strlist_has(c->w->cfg->ignore_startup_parameters, name)) return SL_OK;
    int rc = sl_params_set(&c->params, name, value);
    return rc == SL_OK ? sl_params_set(&c->startup, name, value) : rc;
}

static void begin_auth(sl_client_t *c, int method, sl_user_secret_t *secret);

/* auth_query answered (secret NULL: no such user, or the lookup failed,
 * which then fails like a wrong password). */
static void authq_done(void *arg, sl_user_secret_t *secret, const char *err) {
    sl_client_t *c = arg;
    c->a->authq = NULL; /* authq frees the job once this returns */
    if (c->state == SL_CL_CLOSING) return;
    if (err) sl_log_warn(sl_client_tag(c), "%s", err);
    if (err && !secret) {
        /* The lookup itself failed (its server lost, auth_user refused):
         * "password authentication failed" would send the user after a
         * password that may be right. Any user gets this, so it says
         * nothing about which users exist; the detail is in the log. */
        sl_session_fail(c, "08006", "the password lookup (auth_query) failed; retry, and if it "
                                    "persists ask the operator to check sluice's log");
    } else {
        begin_auth(c, c->a->auth_method, secret);
    }
    sl_session_settle(c);
}

/* The method for this client: auth_type, or its auth_hba_file line; a
 * certificate is checked here. -1 when the client was refused. */
static int auth_method(sl_client_t *c) {
    int method = c->w->cfg->auth_type;
    if (method == SL_AUTH_HBA) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        bool local =
            sl_client_is_unix(c) || getpeername(c->sock.fd, (struct sockaddr *)&ss, &sl) != 0;
        int line;
        enum sl_hba_method m = sl_hba_match(c->w->hba, local ? NULL : (struct sockaddr *)&ss,
                                            c->sock.ssl != NULL, c->dbname, c->user, &line);
        static const int map[] = {[SL_HBA_REJECT] = -1,         [SL_HBA_TRUST] = SL_AUTH_TRUST,
                                  [SL_HBA_MD5] = SL_AUTH_MD5,   [SL_HBA_SCRAM] = SL_AUTH_SCRAM,
                                  [SL_HBA_CERT] = SL_AUTH_CERT, [SL_HBA_PASSWORD] = SL_AUTH_PLAIN};
        method = map[m];
        if (method < 0) {
            sl_client_fatal(c, "28000",
                            "connection refused by auth_hba_file (%s) for user \"%s\", "
                            "database \"%s\", %s%s",
                            line ? "a reject line" : "no line matches", c->user, c->dbname,
                            c->sock.ssl ? "TLS" : "no TLS", local ? ", Unix socket" : "");
            return -1;
        }
        sl_log_debug(sl_client_tag(c), "auth_hba_file line %d: %s", line, sl_hba_method_names[m]);
    }
    if (method == SL_AUTH_CERT) {
        char cn[256];
        if (!c->sock.ssl || !sl_tls_peer_cn(c->sock.ssl, cn, sizeof cn) ||
            strcmp(cn, c->user) != 0) {
            sl_client_fatal(c, "28000", "certificate authentication failed for user \"%s\": %s",
                            c->user,
                            !c->sock.ssl ? "the connection does not use TLS"
                                         : "no client certificate with that common name");
            return -1;
        }
        method = SL_AUTH_TRUST; /* the handshake verified the certificate */
    }
    return method;
}

static void on_startup(sl_client_t *c, const sl_startup_t *su, uint32_t len) {
    if (c->a->reject) {
        sl_client_fatal(c, "53300", "%s", c->a->reject);
        return;
    }
    /* Unix-socket clients are local: TLS is not offered there. */
    if (c->w->cfg->client_tls_sslmode >= SL_TLS_REQUIRE && !c->sock.ssl && !sl_client_is_unix(c)) {
        sl_client_fatal(c, "28000",
                        "TLS required: client_tls_sslmode = %s; connect with "
                        "sslmode=require or stronger",
                        sl_tls_mode_names[c->w->cfg->client_tls_sslmode]);
        return;
    }
    const char *user = sl_startup_get(su, "user");
    if (!user || !*user) {
        sl_client_fatal(c, "28000", "no PostgreSQL user name specified in startup packet");
        return;
    }
    const char *repl = sl_startup_get(su, "replication");
    if (repl && strcmp(repl, "false") != 0 && strcmp(repl, "0") != 0 && strcmp(repl, "off") != 0) {
        sl_client_fatal(c, "08P01", "replication connections are not supported by sluice");
        return;
    }
    /* PostgreSQL 15 answers a newer 3.x or protocol options ("_pq_.") with
     * NegotiateProtocolVersion right here, before authentication: the
     * client then carries on in 3.0 without those options. */
    if (sl_proto_put_negotiate_version(&c->a->out, su) < 0) {
        sl_client_fatal(c, "53200", "out of memory for the protocol negotiation");
        return;
    }
    const char *db = sl_startup_get(su, "database");
    if (!db || !*db) db = user;
    /* One block for both names: an idle client keeps them all its life. */
    size_t ulen = strlen(user), dlen = strlen(db);
    char *names = strdup(user), *grown = names ? realloc(names, ulen + dlen + 2) : NULL;
    if (grown) {
        c->user = grown;
        c->dbname = grown + ulen + 1;
        memcpy(c->dbname, db, dlen + 1);
    } else {
        free(names);
    }
    if (!c->user) {
        sl_client_fatal(c, "53200", "out of memory");
        return;
    }
    for (int i = 0; i < su->nparams; i++) {
        const char *n = su->params[i].name, *v = su->params[i].value;
        if (!strcmp(n, "user") || !strcmp(n, "database") || !strcmp(n, "replication")) continue;
        /* Listed in NegotiateProtocolVersion above, never a setting. */
        if (sl_proto_is_protocol_option(n)) continue;
        if (!strcmp(n, "options")) {
            if (sl_strlist_has(c->w->cfg->ignore_startup_parameters, "options")) continue;
            char *copy = strdup(v);
            if (!copy) {
                sl_client_fatal(c, "53200", "out of memory");
                return;
            }
            sl_kv_t kv[SL_STARTUP_MAX_PARAMS];
            int k = sl_proto_parse_options(copy, kv, SL_STARTUP_MAX_PARAMS);
            for (int j = 0; j < k; j++)
                if (add_param(c, kv[j].name, kv[j].value) < 0) k = -1;
            free(copy);
            if (k < 0) {
                sl_client_fatal(c, "08P01",
                                "invalid \"options\" startup parameter: expected "
                                "-c name=value or --name=value items");
                return;
            }
            continue;
        }
        if (add_param(c, n, v) < 0) {
            sl_client_fatal(c, "53200", "out of memory");
            return;
        }
    }
    login_consume(c, len);
    if (sl_console_wanted(c)) {
        c->console = SL_CONSOLE_ASKED;
        if (sl_console_peer_ok(c)) {
            sl_console_login(c, true);
            return;
        }
    }
    c->a->auth = calloc(1, sizeof *c->a->auth);
    if (!c->a->auth) {
        sl_client_fatal(c, "53200", "out of memory");
        return;
    }
    int method = auth_method(c);
    if (method < 0) return;
    bool needs_secret = method == SL_AUTH_PLAIN || method == SL_AUTH_MD5 || method == SL_AUTH_SCRAM;
    /* The console is no database to run auth_query in, unless auth_dbname
     * names one. */
    bool authq_ok = !c->console || *c->w->cfg->auth_dbname;
    if (needs_secret && authq_ok && !sl_authq_find(c->w, c->user) &&
        sl_authq_enabled(c->w, c->dbname)) {
        /* Not in auth_file: ask PostgreSQL (auth_query); login goes on in
         * authq_done. */
        c->a->auth_method = method;
        c->a->authq = sl_authq_lookup(c->w, sl_client_tag(c), c->dbname, c->user, authq_done, c);
        if (c->a->authq) return;
    }
    begin_auth(c, method, sl_authq_find(c->w, c->user));
}

static void begin_auth(sl_client_t *c, int method, sl_user_secret_t *secret) {
    enum sl_auth_result r = sl_auth_begin(c->a->auth, c->w, method, c->user, secret, &c->a->out);
    if (r == SL_AUTH_OK) {
        auth_ok(c);
    } else if (r == SL_AUTH_CONTINUE) {
        sl_client_set_state(c, SL_CL_AUTH);
        sl_client_flush(c);
    } else {
        sl_client_fatal(c, "28000", "authentication could not start");
    }
}

static bool tls_step(sl_client_t *c);

/* Answers an SSLRequest with 'S' and starts the handshake. */
static bool start_tls(sl_client_t *c) {
    /* Bytes sent after the request, before the handshake, were not
     * encrypted: accepting them would let a man in the middle inject them. */
    if (c->a->login_len > 0) {
        sl_client_fatal(c, "08P01", "received unencrypted data after the SSL request");
        return false;
    }
    if (send(c->sock.fd, "S", 1, MSG_NOSIGNAL) != 1) {
        sl_client_close(c, "cannot answer the SSL request: %s", strerror(errno));
        return false;
    }
    c->sock.ssl = SSL_new(c->w->client_tls);
    if (!c->sock.ssl || SSL_set_fd(c->sock.ssl, c->sock.fd) != 1) {
        sl_client_close(c, "out of memory for TLS");
        return false;
    }
    SSL_set_accept_state(c->sock.ssl);
    c->tls_accepting = true;
    return tls_step(c);
}

/* Drives the handshake; true when it is done and login can go on. */
static bool tls_step(sl_client_t *c) {
    int want;
    char err[320];
    int rc = sl_tls_accept(c->sock.ssl, &want, err, sizeof err);
    if (rc < 0) {
        /* Nothing can be said to the client in plain text any more. */
        sl_client_close(c, "%s", err);
        return false;
    }
    sl_conn_tls_wait(&c->sock, rc == 0 ? want : SL_TLS_WANT_NONE);
    if (rc == 0) {
        sl_client_update_poll(c);
        return false;
    }
    c->tls_accepting = false;
    sl_log_debug(sl_client_tag(c), "TLS handshake done: %s, %s", SSL_get_version(c->sock.ssl),
                 SSL_get_cipher_name(c->sock.ssl));
    sl_client_update_poll(c);
    return true;
}

/* Returns false when nothing more can be parsed now. */
static bool login_step(sl_client_t *c) {
    if (sl_client_done(c)) return false; /* a recorded failure ends the login */
    if (c->state == SL_CL_LOGIN) {
        sl_startup_t su;
        ssize_t r = sl_proto_parse_startup(c->a->login_buf, c->a->login_len, &su);
        switch (r) {
        case SL_ENEEDMORE:
            return false;
        case SL_EBADLEN:
            sl_client_fatal(c, "08P01", "invalid length of startup packet");
            return false;
        case SL_ETOOBIG:
            sl_client_fatal(c, "08P01", "startup packet too large (limit %u bytes)",
                            SL_STARTUP_MAX_BYTES);
            return false;
        case SL_EVERSION:
            sl_client_fatal(c, "0A000", "unsupported frontend protocol %u.%u: sluice supports 3.0",
                            su.version >> 16, su.version & 0xffff);
            return false;
        case SL_EPROTO:
            sl_client_fatal(c, "08P01",
                            "invalid startup packet layout: expected name/value "
                            "pairs ending in a NUL byte");
            return false;
        }
        if ((su.kind == SL_SU_SSL || su.kind == SL_SU_GSSENC) && c->sock.ssl) {
            /* PostgreSQL takes a second encryption request, once the
             * connection is encrypted, as a protocol violation. */
            sl_client_fatal(c, "08P01",
                            "unsupported frontend protocol %u.%u: an %s inside an encrypted "
                            "connection is a protocol violation; send the startup packet",
                            su.version >> 16, su.version & 0xffff,
                            su.kind == SL_SU_SSL ? "SSLRequest" : "GSSENCRequest");
            return false;
        }
        if (su.kind == SL_SU_SSL && c->w->client_tls && !c->sock.ssl) {
            login_consume(c, (uint32_t)r);
            return start_tls(c);
        }
        if (su.kind == SL_SU_SSL || su.kind == SL_SU_GSSENC) {
            /* No GSS encryption, and TLS only when configured: the client
             * carries on in plain text (or gives up, if it demands it). */
            login_consume(c, (uint32_t)r);
            if (sl_proto_put_byte(&c->a->out, 'N') < 0 || !sl_client_flush(c)) return false;
            return true;
        }
        if (su.kind == SL_SU_CANCEL) {
            /* A key naming another instance goes on to it (peers.c). */
            if (!sl_peers_route_cancel(c->w, su.cancel_pid, su.cancel_key, sl_client_tag(c)))
                sl_cancel_forward(c->w, su.cancel_pid, su.cancel_key, sl_client_peer(c));
            sl_client_close(c, "cancel request handled");
            return false;
        }
        on_startup(c, &su, (uint32_t)r);
        return c->state == SL_CL_AUTH && c->a->login_len > 0;
    }
    if (c->state != SL_CL_AUTH) return false;
    if (c->a->login_len < 5) return false;
    uint8_t type = c->a->login_buf[0];
    uint32_t len = sl_be32(c->a->login_buf + 1);
    if (type != 'p') {
        sl_client_fatal(c, "08P01", "expected a password message, got message type '%c'",
                        type >= 32 && type < 127 ? type : '?');
        return false;
    }
    if (len < 4 || len > SL_STARTUP_MAX_BYTES - 1) {
        sl_client_fatal(c, "08P01", "invalid password message length %u", len);
        return false;
    }
    if (c->a->login_len < len + 1) return false;
    enum sl_auth_result r =
        sl_auth_step(c->a->auth, c->user, c->a->login_buf + 5, len - 4, &c->a->out);
    login_consume(c, len + 1);
    switch (r) {
    case SL_AUTH_OK:
        auth_ok(c);
        return false;
    case SL_AUTH_CONTINUE:
        return sl_client_flush(c) && c->a->login_len > 0;
    case SL_AUTH_FAIL:
        sl_client_fatal(c, "28P01", "password authentication failed for user \"%s\"", c->user);
        return false;
    case SL_AUTH_BAD_MESSAGE:
        sl_client_fatal(c, "08P01", "malformed authentication message");
        return false;
    }
    return false;
}

static void on_login_readable(sl_client_t *c) {
    if (!c->a->out.data && !buffers_take(c)) return;
    if (c->tls_accepting && !tls_step(c)) return;
    ssize_t n = sl_conn_read(&c->sock, c->a->login_buf + c->a->login_len,
                             SL_STARTUP_MAX_BYTES - c->a->login_len);
    if (n == -EAGAIN) {
        sl_client_update_poll(c);
        return;
    }
    if (n <= 0) {
        /* A connect-and-close with no byte sent is a port probe (load
         * balancer, monitoring): not worth an info line each time. */
        if (n == 0 && c->state == SL_CL_LOGIN && c->a->login_len == 0) {
            c->quiet_close = true;
            sl_client_close(c, "connection closed before a startup packet");
            return;
        }
        sl_client_close(
            c, n == 0 ? "client closed the connection during login" : "read error during login: %s",
            strerror((int)-n));
        return;
    }
    c->a->login_len += (uint32_t)n;
    while (login_step(c)) {
    }
    if (c->state == SL_CL_LOGIN && c->a->login_len == SL_STARTUP_MAX_BYTES)
        sl_client_fatal(c, "08P01", "startup packet too large");
}

/* ---- waiting for and holding a server ---- */

static void waiter_wake(sl_client_t *c, sl_server_t *s, const char *err, const char *code) {
    if (err && sl_router_retry(c, err)) return;
    if (err && c->route && c->state == SL_CL_WAITING && sl_scan_at_boundary(&c->a->scan)) {
        /* With replicas, the primary may be back or replaced soon: the
         * client keeps its connection and can retry. */
        sl_client_abort_requests(c, code ? code : "08006", err);
        return;
    }
    if (err) {
        sl_client_fatal(c, code ? code : "08006", "%s", err);
        return;
    }
    sl_relay_link(c, s);
}

/* The pool gave the waiting client a server, or an error. */
static void waiter_cb(sl_waiter_t *wt, sl_server_t *s, const char *err, const char *code) {
    sl_client_t *c = sl_container_of(wt, sl_client_t, waiter);
    waiter_wake(c, s, err, code);
    sl_session_settle(c);
}

void sl_client_request_server(sl_client_t *c) {
    sl_client_set_state(c, SL_CL_WAITING);
    sl_client_update_poll(c);
    c->waiter.cb = waiter_cb;
    if (sl_router_request(c) == 0) {
        /* Routing needs the first request whole: read on. */
        sl_client_set_state(c, SL_CL_IDLE);
        sl_client_update_poll(c);
    }
}

/* Reads client bytes in IDLE, WAITING and ACTIVE. */
static void on_readable(sl_client_t *c) {
    if ((!c->a->in.data || !c->a->out.data) && !buffers_take(c)) return;
    if (sl_buf_space(&c->a->in) == 0) {
        uint32_t shift = c->a->in.head;
        sl_buf_compact(&c->a->in);
        if (c->holding) c->a->hold_start -= shift;
        if (c->barrier) c->a->barrier_off -= shift;
        if (c->fix_fence) c->a->fix_fence_off -= shift;
    }
    if (sl_buf_space(&c->a->in) == 0) return;
    ssize_t n = sl_conn_read(&c->sock, sl_buf_wptr(&c->a->in), sl_buf_space(&c->a->in));
    if (n == -EAGAIN) {
        sl_client_update_poll(c);
        return;
    }
    if (n <= 0) {
        sl_client_close(c, n == 0 ? "client closed the connection" : "read error: %s",
                        strerror((int)-n));
        return;
    }
    c->a->in.tail += (uint32_t)n;
    c->a->scan_new += (uint32_t)n;
    sl_pool_stats_t *ps = sl_client_stats(c);
    if (ps) ps->bytes_received += (uint64_t)n;
    if (c->tx_kept) sl_router_forget_replay(c);
    c->last_io_ms = sl_now_ms(c->w);
    if (!sl_relay_scan_client(c)) return;
    if ((c->state == SL_CL_IDLE || c->state == SL_CL_WAITING) && !sl_ps_answer_unlinked(c)) return;
    /* sluice may have answered the client itself (a refused statement, a
     * statement prepared without a server). */
    if (sl_buf_len(&c->a->out) > 0 && !sl_client_flush(c)) return;
    if (c->state == SL_CL_WAITING && sl_buf_len(&c->a->in) == 0) {
        sl_pool_cancel(c->wait_pool, &c->waiter);
        sl_router_done(c);
        sl_client_set_state(c, SL_CL_IDLE);
    }
    if (c->state == SL_CL_IDLE) {
        if (c->terminated && sl_buf_len(&c->a->in) == 0) {
            sl_client_close(c, "client disconnected");
            return;
        }
        if (sl_client_has_request(c)) sl_client_request_server(c);
        return;
    }
    /* A replica serving a read (or about to) must not get a write sent
     * meanwhile. */
    if ((c->state == SL_CL_ACTIVE || c->state == SL_CL_WAITING) && c->rt) sl_router_guard(c);
    if (c->state == SL_CL_ACTIVE) sl_relay_flush_c2s(c);
    if (!sl_client_done(c)) sl_client_update_poll(c);
}

/* A client waiting for its first server has nothing to send until its
 * login is answered; its socket is watched only to see it leave, so that
 * it stops holding its place under max_db_client_connections and
 * max_user_client_connections then, not when the wait ends. Bytes sent
 * early stay in the socket for later (and watching stops until then). */
static void on_login_wait(sl_client_t *c) {
    char b;
    ssize_t n = recv(c->sock.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        sl_client_close(c, "client closed the connection while waiting for its first server");
        return;
    }
    if (n > 0) {
        c->early_bytes = true;
        sl_client_update_poll(c);
    }
}

static void client_event(sl_client_t *c, int status, int events) {
    if (status < 0) {
        sl_client_close(c, "socket error: %s", strerror(sl_socket_errno(c->sock.fd)));
        return;
    }
    bool readable = events & UV_READABLE, writable = events & UV_WRITABLE;
    if (writable && c->console >= SL_CONSOLE_STATS && c->state == SL_CL_IDLE) {
        sl_console_pump(c);
        if (sl_client_done(c)) return;
    } else if (writable) {
        if (!sl_client_flush(c)) return;
        if (c->state == SL_CL_ACTIVE) sl_relay_resume(c);
        if (sl_client_done(c)) return;
    }
    if (!readable || (c->w->suspended && !c->console)) return;
    switch (c->state) {
    case SL_CL_LOGIN:
    case SL_CL_AUTH:
        on_login_readable(c);
        break;
    case SL_CL_LOGIN_WAIT:
        on_login_wait(c);
        break;
    case SL_CL_IDLE:
        if (c->console) {
            sl_console_readable(c);
            break;
        }
        on_readable(c);
        break;
    case SL_CL_WAITING:
    case SL_CL_ACTIVE:
        on_readable(c);
        break;
    default:
        break;
    }
}

/* The client's socket (or its TLS layer) is ready, or failed. */
static void client_event_cb(sl_conn_t *cn, int status, int events) {
    sl_client_t *c = cn->data;
    client_event(c, status, events);
    sl_session_settle(c);
}

bool sl_client_abort_requests(sl_client_t *c, const char *code, const char *msg) {
    if (!sl_client_own(c)) return sl_session_fail(c, "53200", "out of memory");
    sl_router_done(c);
    sl_relay_forget_fix(c);                   /* a ReadyForQuery it held is owed again */
    c->a->xact_start_us = c->a->query_start_us = 0; /* answered here: no server time to count */
    int rc = msg ? sl_proto_put_error(&c->a->out, "ERROR", code, msg) : SL_OK;
    if (msg && rc == SL_OK) sl_session_count_error(c, code);
    for (; c->a->pending > 0 && rc == SL_OK; c->a->pending--)
        rc = sl_proto_put_ready(&c->a->out, 'I');
    if (rc != SL_OK) return sl_session_fail(c, code, "%s", msg ? msg : "request aborted");
    c->server_error = false;
    c->a->in.head = c->a->in.tail = 0;
    c->a->scan_new = 0;
    c->holding = false;
    c->barrier = false;
    c->ext_open = false;
    sl_params_clear(&c->a->dirty);
    sl_client_set_state(c, SL_CL_IDLE);
    return sl_client_flush(c);
}

bool sl_client_cancel_wait(sl_client_t *c) {
    /* Only whole messages can be dropped; a half-received one has to go on. */
    if (c->state != SL_CL_WAITING || c->a->pending == 0 || !sl_scan_at_boundary(&c->a->scan))
        return false;
    if (c->server) {
        /* Linked, its settings being applied: dropping the request now
         * would leave that step to finish on an idle client. */
        c->cancel_asked = true;
        return true;
    }
    sl_pool_cancel(c->wait_pool, &c->waiter);
    sl_client_abort_requests(c, "57014", SL_CANCELLED_WAITING);
    /* An entry point for c: the cancel came on another connection. */
    sl_session_settle(c);
    return true;
}

/* ---- timeouts and shutdown ---- */

/* A message that stays incomplete may hold a server (in session pooling, a
 * transaction, or a message streaming to it): no client keeps one that way
 * longer than client_partial_message_timeout. */
static bool partial_expired(const sl_client_t *c, int64_t now) {
    int64_t limit = c->w->cfg->client_partial_message_timeout_ms;
    return limit > 0 && c->a->partial_ms && !sl_scan_at_boundary(&c->a->scan) &&
           now - c->a->partial_ms >= limit;
}

/* query_wait_notify: one NOTICE to a client that has waited that long for a
 * server; it keeps waiting. Only whole messages are ever in `out` while a
 * client waits (no server is linked), so the notice may go in. */
static void notify_waiting(sl_client_t *c, int64_t now) {
    int64_t after = c->w->cfg->query_wait_notify_ms;
    if (after <= 0 || c->wait_notified || !c->waiter.queued || now - c->waiter.since_ms < after ||
        !c->a->out.data)
        return;
    c->wait_notified = true;
    if (sl_proto_put_notice(&c->a->out, "00000", SL_WAIT_NOTICE) == SL_OK) sl_client_flush(c);
}

void sl_client_tick(sl_client_t *c, int64_t now) {
    const sl_config_t *cfg = c->w->cfg;
    /* Timeouts of its user (and database), as its pool took them from the
     * config; before login, none applies. */
    const sl_pool_t *p = c->pool;
    /* A full input buffer: sluice reads nothing more from the client until
     * its server takes bytes. That wait is the server's, not the client's. */
    if (c->a->partial_ms && c->a->in.data && sl_buf_len(&c->a->in) >= c->a->in.cap)
        c->a->partial_ms = now;
    if (c->state != SL_CL_CLOSING && partial_expired(c, now)) {
        /* Its server, if any, got part of the message: it is closed. */
        sl_client_fatal(c, "08P01",
                        "client_partial_message_timeout: a message stayed incomplete for more "
                        "than %lld ms; send each message whole, or raise "
                        "client_partial_message_timeout",
                        (long long)cfg->client_partial_message_timeout_ms);
        return;
    }
    switch (c->state) {
    case SL_CL_LOGIN:
    case SL_CL_AUTH:
        if (cfg->client_login_timeout_ms > 0 && now - c->connect_ms >= cfg->client_login_timeout_ms)
            sl_client_fatal(c, "08P01", "client_login_timeout: login not completed in time");
        return;
    case SL_CL_IDLE: {
        /* A console client has no pool: the global value, unless it waits
         * for a command of its own (PAUSE). */
        int64_t idle_ms = p                 ? p->client_idle_timeout_ms
                          : c->console_held ? 0
                                            : cfg->client_idle_timeout_ms;
        if (idle_ms > 0 && now - c->last_io_ms >= idle_ms)
            sl_client_fatal(c, "08P01", "client_idle_timeout: connection idle too long");
        else if (sl_client_drain_due(c) && now - c->last_io_ms >= cfg->shutdown_grace_period_ms)
            sl_client_fatal(c, "57P01", SL_CLIENT_DRAIN_MSG);
        return;
    }
    case SL_CL_WAITING:
        notify_waiting(c, now);
        return;
    case SL_CL_ACTIVE: {
        if (!p) return;
        char tx = c->server ? c->server->tx_status : 'I';
        if (p->transaction_timeout_ms > 0 && c->a->xact_ms &&
            now - c->a->xact_ms >= p->transaction_timeout_ms) {
            /* PgBouncer's "transaction timeout" closes the server and the
             * client; the server here is closed too (released dirty), so
             * the transaction is rolled back and nobody else gets it. */
            sl_client_fatal(c, "25P04",
                            "transaction timeout: the transaction stayed open longer than "
                            "transaction_timeout (%lld ms); it was rolled back",
                            (long long)p->transaction_timeout_ms);
        } else if (c->a->pending > 0) {
            if (p->query_timeout_ms > 0 && now - c->a->query_ms >= p->query_timeout_ms)
                sl_client_fatal(c, "57014", "query_timeout: query ran longer than %lld ms",
                                (long long)p->query_timeout_ms);
        } else if (tx != 'I') {
            if (p->idle_transaction_timeout_ms > 0 &&
                now - c->last_io_ms >= p->idle_transaction_timeout_ms)
                sl_client_fatal(c, "25P03",
                                "idle_transaction_timeout: transaction left idle "
                                "too long; it was rolled back");
        } else if (p->client_idle_timeout_ms > 0 &&
                   now - c->last_io_ms >= p->client_idle_timeout_ms) {
            sl_client_fatal(c, "08P01", "client_idle_timeout: connection idle too long");
        }
        return;
    }
    default:
        return;
    }
}

void sl_client_shutdown(sl_client_t *c) {
    bool between = c->state == SL_CL_LOGIN || c->state == SL_CL_AUTH || c->state == SL_CL_IDLE ||
                   c->state == SL_CL_LOGIN_WAIT ||
                   (c->state == SL_CL_ACTIVE && c->a->pending == 0 && c->server &&
                    c->server->tx_status == 'I');
    if (between) sl_client_fatal(c, "57P01", "sluice is shutting down; reconnect later");
}

/* ---- the module's entry points for the floors above (session.h) ---- */

/* The resting copy must still be all zero (see act_rest_new). */
static void act_rest_check(sl_loop_t *w) {
    static const sl_client_act_t zero;
    if (!w->act_rest || memcmp(w->act_rest, &zero, sizeof zero) == 0) return;
    sl_log_error(NULL, "internal error: the state shared by idle clients was written to; it is "
                       "reset (please report this with the log lines before it)");
    memset(w->act_rest, 0, sizeof *w->act_rest);
}

void sl_session_tick_all(sl_loop_t *w, int64_t now_ms) {
    act_rest_check(w);
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->clients) {
        sl_client_t *c = sl_container_of(it, sl_client_t, node);
        /* Every entry point settles what it recorded: one left for the
         * janitor is a bug, yet the client still gets its reply. */
        if (c->fail_code[0] && c->state != SL_CL_CLOSING) {
            sl_log_error(sl_client_tag(c),
                         "internal error: a failure (sqlstate %s) was left for the janitor by "
                         "an entry point that does not settle it (please report this with the "
                         "log lines before it)",
                         c->fail_code);
            sl_session_settle(c);
            continue;
        }
        sl_client_tick(c, now_ms);
        sl_session_settle(c);
    }
}

void sl_session_shutdown_all(sl_loop_t *w) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->clients) {
        sl_client_t *c = sl_container_of(it, sl_client_t, node);
        sl_client_shutdown(c);
    }
}

void sl_session_close_all(sl_loop_t *w, const char *code, const char *msg) {
    /* Each close takes the client off w->clients. */
    while (!sl_list_empty(&w->clients)) {
        sl_client_t *c = sl_container_of(sl_list_first(&w->clients), sl_client_t, node);
        sl_client_fatal(c, code, "%s", msg);
    }
}

void sl_session_users_reloaded(sl_loop_t *w, sl_userlist_t *fresh) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->clients) {
        sl_client_t *c = sl_container_of(it, sl_client_t, node);
        if (c->a->auth && c->user && sl_userlist_find(&w->users, c->user))
            c->a->auth->user = sl_userlist_find(fresh, c->user);
    }
}

void sl_session_free(sl_loop_t *w) {
    sl_ps_free_all(w);
    while (w->act_free) {
        sl_client_act_t *a = w->act_free;
        w->act_free = a->next_free;
        free(a);
    }
    w->act_nfree = 0;
    act_rest_free(w->act_rest);
    w->act_rest = NULL;
}

bool sl_client_drain_due(const sl_client_t *c) {
    const sl_loop_t *w = c->w;
    return w->draining && w->drain_close_ms > 0 && sl_now_ms(w) >= w->drain_close_ms && c->pool &&
           c->pool->mode != SL_POOL_SESSION && !c->pins;
}

void sl_session_close_db(sl_loop_t *w, const char *db, const char *code, const char *msg) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->clients) {
        sl_client_t *c = sl_container_of(it, sl_client_t, node);
        /* Logins that have not named a database yet are not the database's. */
        if (!c->dbname || (db && strcmp(c->dbname, db) != 0)) continue;
        /* The admin console is not a database KILL acts on. */
        if (!db && (!strcmp(c->dbname, "pgbouncer") || !strcmp(c->dbname, "sluice"))) continue;
        sl_client_fatal(c, code, "%s", msg);
    }
}

void sl_session_repoll_all(sl_loop_t *w) {
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &w->clients) {
        sl_client_update_poll(sl_container_of(it, sl_client_t, node));
    }
}

bool sl_session_flushed(const sl_loop_t *w) {
    for (const sl_list_t *it = w->clients.next; it != &w->clients; it = it->next) {
        const sl_client_t *c = sl_container_of(it, sl_client_t, node);
        if (c->console) continue; /* the console's own replies go on */
        if ((c->a->out.data && sl_buf_len(&c->a->out) > 0) || c->c2s_blocked) return false;
    }
    return true;
}
