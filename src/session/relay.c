/* Relaying between a linked client and server. Bytes stream through the
 * client's two buffers; sluice frames every message to know where
 * transactions end but only reads the few it must (ReadyForQuery,
 * ParameterStatus, the fact of an ErrorResponse). */
#include "session.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/log.h"
#include "sluice/strlist.h"

/* Parameters a client can change with SET and expects to keep; when it does,
 * sluice follows so that the next server gets the same value. Each client
 * has its login value of them (see fill_defaults), so a server another
 * client changed gets it back: PostgreSQL 14+ reports
 * default_transaction_read_only (SET SESSION CHARACTERISTICS) and
 * session_authorization (SET SESSION AUTHORIZATION, superusers only), and a
 * reported setting is not among those RESET for the next client. */
static const char *const client_settable[] = {"application_name",
                                              "client_encoding",
                                              "DateStyle",
                                              "IntervalStyle",
                                              "TimeZone",
                                              "standard_conforming_strings",
                                              "default_transaction_read_only",
                                              "session_authorization",
                                              NULL};

static void server_io_cb(sl_server_t *s, int status, int events);
static bool is_settable(const char *name);

/* Message types a client may send once logged in. CopyData/Done/Fail are
 * allowed outside COPY too: PostgreSQL ignores them there. sluice's own
 * markers (SL_MSG_REFUSED, SL_MSG_DEALLOCATE) are none of these. */
static bool frontend_type_ok(uint8_t t) {
    switch (t) { /* a switch, not strchr: this runs for every client message */
    case 'Q': case 'P': case 'B': case 'E': case 'D': case 'C': case 'H':
    case 'S': case 'F': case 'X': case 'd': case 'c': case 'f': return true;
    default: return false;
    }
}

/* Whether an ErrorResponse body (or its first bytes) says FATAL or PANIC:
 * the server is about to close and must never go back to the pool. */
static bool error_is_fatal(const uint8_t *p, uint32_t n) {
    uint32_t i = 0;
    while (i < n && p[i]) {
        uint8_t field = p[i++];
        const uint8_t *v = p + i;
        const uint8_t *z = memchr(v, 0, n - i);
        if (!z) return false;
        if ((field == 'S' || field == 'V') &&
            (!strcmp((const char *)v, "FATAL") || !strcmp((const char *)v, "PANIC")))
            return true;
        i = (uint32_t)(z - p) + 1;
    }
    return false;
}
static void setup_done(sl_server_t *s, const char *err, const char *code);

/* ---- parameters ---- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf_t;

static bool sbuf_add(sbuf_t *b, const char *s) {
    size_t n = strlen(s);
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *g = realloc(b->p, cap);
        if (!g) return false;
        b->p = g, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n + 1);
    b->len += n;
    return true;
}

/* Appends s quoted as an SQL literal (or identifier), straight into b. */
static bool sbuf_add_quoted(sbuf_t *b, const char *s, bool ident) {
    size_t need = b->len + strlen(s) * 2 + 4;
    if (need > b->cap) {
        char *g = realloc(b->p, need * 2);
        if (!g) return false;
        b->p = g, b->cap = need * 2;
    }
    int n = ident ? sl_proto_quote_ident(s, b->p + b->len, b->cap - b->len)
                  : sl_proto_quote_literal(s, b->p + b->len, b->cap - b->len);
    if (n < 0) return false;
    b->len += (size_t)n;
    return true;
}

static const char *server_value(sl_server_t *s, const char *name) {
    const char *v = sl_params_get(&s->reported, name);
    return v ? v : sl_params_get(&s->applied, name);
}

/* SETs that make s match what c asked for; NULL when none is needed.
 * Parameters an earlier client set that this one did not are RESET. */
static char *build_set(sl_client_t *c, sl_server_t *s, bool *oom) {
    sbuf_t b = {0};
    *oom = false;
    for (int i = 0; i < s->applied.n; i++)
        if (!sl_params_get(&c->params, s->applied.v[i].name) &&
            !(sbuf_add(&b, "RESET ") && sbuf_add_quoted(&b, s->applied.v[i].name, true) &&
              sbuf_add(&b, ";"))) {
            free(b.p);
            *oom = true;
            return NULL;
        }
    /* set_config() takes the value as a startup packet or options=-c would:
     * SET x = 'a,b' would quote list values such as search_path. */
    for (int i = 0; i < c->params.n; i++) {
        const sl_param_t *p = &c->params.v[i];
        const char *cur = server_value(s, p->name);
        if (cur && strcmp(cur, p->value) == 0) continue;
        bool ok = sbuf_add(&b, "SELECT pg_catalog.set_config(") &&
                  sbuf_add_quoted(&b, p->name, false) && sbuf_add(&b, ", ") &&
                  sbuf_add_quoted(&b, p->value, false) && sbuf_add(&b, ", false);");
        if (!ok) {
            free(b.p);
            *oom = true;
            return NULL;
        }
    }
    return b.p;
}

/* After SETs: record non-reported values, and adopt the server's spelling of
 * reported ones ("ISO" becomes "ISO, MDY") so the next comparison matches. */
static void params_settled(sl_client_t *c, sl_server_t *s) {
    for (int i = s->applied.n - 1; i >= 0; i--)
        if (!sl_params_get(&c->params, s->applied.v[i].name))
            sl_params_remove(&s->applied, s->applied.v[i].name);
    for (int i = 0; i < c->params.n; i++) {
        sl_param_t *p = &c->params.v[i];
        const char *rep = sl_params_get(&s->reported, p->name);
        if (rep) {
            if (strcmp(rep, p->value) != 0) (void)sl_params_set(&c->params, p->name, rep);
        } else {
            (void)sl_params_set(&s->applied, p->name, p->value);
        }
    }
    c->params_fp = sl_params_fingerprint(&c->params);
    s->params_fp = c->params_fp;
}

/* Parameters the client did not give take the pool's fresh-login values, so
 * that it never inherits what an earlier client set on the same server. */
static void fill_defaults(sl_client_t *c, const sl_pool_t *p) {
    /* The pool that serves the login: with replicas, that may be any
     * backend's, and the primary's pool may never have connected. */
    const sl_params_t *d = &p->defaults;
    for (int i = 0; i < d->n; i++) {
        const char *name = d->v[i].name;
        if ((is_settable(name) || sl_strlist_has(c->w->cfg->track_extra_parameters, name)) &&
            !sl_params_get(&c->params, name))
            (void)sl_params_set(&c->params, name, d->v[i].value);
    }
    /* Clients of one application log in with the same parameters: an idle
     * one references the loop's one copy of them (see sl_params_share). */
    sl_params_share(&c->params);
    sl_params_share(&c->startup);
}

/* ---- RESET fix-up ----
 * RESET x, RESET ALL, SET x TO DEFAULT and DISCARD ALL put a setting back to
 * the value its backend had at login. A pooled backend logged in with
 * sluice's parameters, not the client's, so a client would land on the
 * pool's DateStyle or TimeZone instead of the ones it connected with. After
 * a request that resets any of the client's startup parameters, sluice holds
 * that request's ReadyForQuery, runs set_config() with the client's startup
 * values on the same server (inside the client's transaction if one is
 * open, so that a ROLLBACK undoes both, as it would undo the RESET), relays
 * the ParameterStatus the client has not seen, then the ReadyForQuery.
 * Requests pipelined behind it wait behind a fence until then, so that none
 * runs on the server's values. Replies keep PostgreSQL's tags and order;
 * only a reported parameter's ParameterStatus may come twice (the server's
 * login value, then the client's). */
enum fix_state {
    FIX_NONE,
    FIX_OPEN,    /* a request resets settings; its end (Query, Sync) is not framed yet */
    FIX_SENT,    /* its ReadyForQuery is awaited */
    FIX_DUE,     /* that ReadyForQuery came and is held */
    FIX_RUNNING, /* sluice's set_config() runs on the server */
};

/* Parameters RESET ALL leaves alone (GUC_NO_RESET_ALL in PostgreSQL 15). */
static const char *const no_reset_all[] = {"role",
                                           "session_authorization",
                                           "transaction_isolation",
                                           "transaction_read_only",
                                           "transaction_deferrable",
                                           "seed",
                                           "is_superuser",
                                           NULL};

static bool in_list(const char *const *list, const char *name) {
    for (int i = 0; list[i]; i++)
        if (strcasecmp(list[i], name) == 0) return true;
    return false;
}

void sl_relay_forget_fix(sl_client_t *c) {
    if (c->a == c->w->act_rest) return; /* an idle client's: nothing held */
    /* A held ReadyForQuery is owed again: whoever answers the client's
     * requests instead (an abort, a lost server) must send it. */
    if (c->a->fix == FIX_DUE || c->a->fix == FIX_RUNNING) c->a->pending++;
    c->a->fix = FIX_NONE;
    c->fix_all = c->fix_failed = c->fix_cut = c->fix_fence = false;
    c->a->fix_after = 0;
    sl_params_clear(&c->a->fix_names);
}

/* Whether a text can hold a RESET, SET ... TO DEFAULT or DISCARD ALL: only
 * those are parsed in session pooling, where nothing else is. */
static bool may_reset(const char *sql) {
    for (const char *p = sql; *p; p++) {
        /* ASCII lower case of three letters first: this runs on every
         * Query and Parse, and most 'r's and 'd's start no such word
         * (WHERE has "re", ADDRESS "res"). */
        char l = (char)(*p | 0x20);
        if (l != 'r' && l != 'd') continue;
        char m = (char)(p[1] | 0x20), k = m ? (char)(p[2] | 0x20) : 0;
        if (l == 'r' && m == 'e' && k == 's' && strncasecmp(p, "reset", 5) == 0) return true;
        if (l == 'd' && ((m == 'e' && k == 'f' && strncasecmp(p, "default", 7) == 0) ||
                         (m == 'i' && k == 's' && strncasecmp(p, "discard", 7) == 0)))
            return true;
    }
    return false;
}

/* Merges what a statement text resets into the request's fix-up. */
static void note_resets(sl_client_t *c, const sl_sql_info_t *info) {
    if (!info->resets_all && !info->resets[0] && !info->resets_overflow) return; /* most */
    if (info->resets_overflow)
        sl_log_warn(sl_client_tag(c),
                    "more settings RESET in one query than sluice follows: some may "
                    "stay on the server's login values instead of the client's");
    bool any = info->resets_all;
    if (info->resets_all) {
        c->fix_all = true;
        sl_params_clear(&c->a->fix_names);
    }
    for (const char *p = info->resets, *e; *p; p = *e ? e + 1 : e) {
        e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(e - p - 1), p + 1);
        (void)sl_params_set(&c->a->fix_names, name, *p == '-' ? "-" : "+");
        if (*p == '-') any = true;
    }
    if (any && c->a->fix == FIX_NONE) c->a->fix = FIX_OPEN;
}

/* Looks for RESETs in a whole Query, or Parse of the unnamed statement (it
 * runs in the same request; a named one runs at some later Bind, where
 * sluice no longer has its text). m: the message, len bytes. known: its
 * text's classification when analyse_query already made it (transaction
 * and statement pooling), so that the text is not scanned twice; NULL in
 * session pooling and behind the fence. */
static void message_resets(sl_client_t *c, const uint8_t *m, uint32_t len,
                           const sl_sql_info_t *known) {
    if (!c->startup.n || (m[0] != 'Q' && m[0] != 'P') || len < 6) return;
    const char *body = (const char *)m + 5;
    size_t n = len - 5;
    if (m[0] == 'P') {
        if (body[0] != '\0') return;
        body++, n--;
    }
    if (known) {
        note_resets(c, known);
        return;
    }
    if (!memchr(body, '\0', n) || !may_reset(body)) return;
    sl_sql_info_t info;
    sl_sql_classify(c->w->sql_cache, body, c->w->cfg->write_functions,
                    c->w->cfg->stateless_functions, &info);
    note_resets(c, &info);
}

/* A message of type t was framed whole: a Query, Sync or FunctionCall ends
 * the request, whose ReadyForQuery the fix-up then waits for. */
static void request_end(sl_client_t *c, uint8_t t) {
    if (c->a->fix == FIX_OPEN && (t == 'Q' || t == 'S' || t == 'F')) c->a->fix = FIX_SENT;
}

/* After a fix-up: the requests held behind the fence are looked at now, in
 * order, for RESETs of their own (the first that has some gets a fence
 * after it), and may go to the server. */
static void lift_fence(sl_client_t *c) {
    if (!c->fix_fence) return;
    uint32_t off = c->a->fix_fence_off;
    c->fix_fence = false;
    c->a->fix_after = 0;
    while (c->a->in.tail - off >= 5) {
        const uint8_t *m = c->a->in.data + off;
        uint64_t len = (uint64_t)sl_be32(m + 1) + 1;
        bool whole = len <= c->a->in.tail - off;
        bool request = m[0] == 'Q' || m[0] == 'S' || m[0] == 'F' || m[0] == SL_MSG_DEALLOCATE;
        if (c->fix_fence) {
            if (request) c->a->fix_after++; /* counted in pending when its header came */
        } else if (whole) {
            message_resets(c, m, (uint32_t)len, NULL);
            request_end(c, m[0] == SL_MSG_DEALLOCATE ? 'Q' : m[0]);
            if (c->a->fix == FIX_SENT && len < c->a->in.tail - off) {
                c->fix_fence = true;
                c->a->fix_fence_off = off + (uint32_t)len;
            }
        }
        if (!whole) break; /* the scan looks at it when it is whole */
        off += (uint32_t)len;
    }
}

static void fix_done(sl_server_t *s, const char *err, const char *code);

/* The held ReadyForQuery goes to the client, after the ParameterStatus of
 * each reported parameter put back whose value the client has not seen. */
static void fix_finish(sl_client_t *c, sl_server_t *s) {
    /* The server has the client's parameters still only if it had them
     * before (a DISCARD ALL, say, reset the others too). */
    bool matched = s->params_fp && s->params_fp == c->params_fp;
    bool changed = false;
    for (int i = 0; i < s->reported.n; i++) {
        const sl_param_t *r = &s->reported.v[i];
        if (!sl_params_get(&c->a->fix_names, r->name)) continue;
        const char *seen = sl_params_get(&c->params, r->name);
        if (seen && strcmp(seen, r->value) == 0) continue;
        if (sl_proto_put_param_status(&c->a->out, r->name, r->value) < 0) {
            sl_log_warn(sl_client_tag(c), "no room to report %s to the client", r->name);
            continue;
        }
        (void)sl_params_set(&c->params, r->name, r->value);
        changed = true;
    }
    if (changed) {
        c->params_fp = sl_params_fingerprint(&c->params);
        if (matched) s->params_fp = c->params_fp;
    }
    char status = c->a->fix_status;
    bool fence = c->fix_fence;
    c->a->fix = FIX_NONE; /* its ReadyForQuery goes now */
    sl_relay_forget_fix(c);
    c->fix_fence = fence; /* for lift_fence, below */
    if (sl_proto_put_ready(&c->a->out, status) < 0) {
        sl_session_fail(c, "53200", "no room in pkt_buf for a ReadyForQuery");
        return;
    }
    lift_fence(c);
}

/* The request's ReadyForQuery is held: SETs the client's startup values
 * back on the server where the request reset them. True when that is over
 * at once (nothing to put back: the ReadyForQuery is in c->a->out), false when
 * sluice's query runs, or the fix-up waits for the server's bytes to be
 * relayed or for the client to read (sl_relay_resume). */
static bool fix_start(sl_client_t *c) {
    sl_server_t *s = c->server;
    /* sluice's query takes over the socket: only between messages, with
     * nothing of the server's left to relay. */
    if (!s || s->state != SL_SV_ACTIVE || !sl_scan_at_boundary(&s->scan) ||
        (c->ps && (sl_buf_len(&c->ps->sin) > 0 || c->ps->s_mid)))
        return false;
    /* Nothing to put back when the request failed: its transaction (and
     * the RESET with it) rolls back. */
    bool run = !c->fix_failed && c->a->fix_status != 'E';
    sl_params_t todo = {0};
    size_t need = 6;
    for (int i = 0; run && i < c->startup.n; i++) {
        const sl_param_t *p = &c->startup.v[i];
        const char *mark = sl_params_get(&c->a->fix_names, p->name);
        if (mark ? *mark != '-' : !c->fix_all || in_list(no_reset_all, p->name)) continue;
        if (sl_params_set(&todo, p->name, p->value) < 0) run = false;
        need += strlen(p->name) + strlen(p->value) + 64;
    }
    if (!run) sl_params_clear(&todo);
    /* Room for the ParameterStatus and ReadyForQuery: else wait for the
     * client to read what it has (an empty buffer always takes them). */
    if (sl_buf_len(&c->a->out) > 0 && sl_buf_len(&c->a->out) + need > c->a->out.cap) {
        sl_params_clear(&todo);
        return false;
    }
    sl_params_clear(&c->a->fix_names);
    c->a->fix_names = todo;
    sbuf_t b = {0};
    bool ok = true;
    for (int i = 0; i < todo.n && ok; i++)
        ok = sbuf_add(&b, i ? ", " : "SELECT ") && sbuf_add(&b, "pg_catalog.set_config(") &&
             sbuf_add_quoted(&b, todo.v[i].name, false) && sbuf_add(&b, ", ") &&
             sbuf_add_quoted(&b, todo.v[i].value, false) && sbuf_add(&b, ", false)");
    if (todo.n && ok) {
        sl_log_debug(sl_client_tag(c), "putting %d startup parameter(s) back after RESET on %s",
                     todo.n, s->tag);
        if (sl_server_query(s, b.p, fix_done) == SL_OK) {
            c->a->fix = FIX_RUNNING;
            free(b.p);
            return false;
        }
    }
    if (todo.n)
        sl_log_warn(sl_client_tag(c),
                    "out of memory: RESET stays on the server's login values on %s", s->tag);
    free(b.p);
    fix_finish(c, s);
    return !sl_client_done(c);
}

static void fix_finish_query(sl_server_t *s, const char *err, const char *code) {
    sl_client_t *c = s->link;
    if (!c) {
        sl_pool_release(s, !err && s->tx_status == 'I');
        return;
    }
    sl_server_set_state(s, SL_SV_ACTIVE);
    s->io = server_io_cb;
    if (err && code && strncmp(code, "08", 2) == 0) {
        sl_relay_server_lost(c, err);
        return;
    }
    if (err) {
        sl_log_warn(sl_client_tag(c),
                    "putting the client's startup values back after RESET failed (SQLSTATE %s): "
                    "%s; its settings stay on the server's login values",
                    code && *code ? code : "XX000", err);
        /* Inside the client's transaction the failure aborted it: the
         * client must hear why, and the status it really has. */
        if (s->tx_status == 'E') {
            char msg[400];
            snprintf(msg, sizeof msg,
                     "could not put the connection's startup setting back after RESET: %s", err);
            if (sl_proto_put_error(&c->a->out, "ERROR", code && *code ? code : "XX000", msg) < 0) {
                sl_session_fail(c, "53200", "no room in pkt_buf for an ErrorResponse");
                return;
            }
            sl_session_count_error(c, code && *code ? code : "XX000");
            c->a->fix_status = 'E';
        }
    }
    fix_finish(c, s);
    if (sl_client_done(c)) return;
    /* The requests behind the fence go now; the release (transaction
     * pooling) comes with them, in sl_relay_settle. */
    if (c->server == s && !sl_relay_flush_c2s(c)) return;
    if (!sl_client_done(c)) sl_client_flush(c);
}

/* The server ran the SETs that put startup values back (an entry point). */
static void fix_done(sl_server_t *s, const char *err, const char *code) {
    sl_client_t *c = s->link;
    fix_finish_query(s, err, code);
    if (c) sl_session_settle(c);
}

/* ---- link / unlink ---- */

void sl_relay_link(sl_client_t *c, sl_server_t *s) {
    c->server = s;
    s->link = c;
    if (c->pool && c->pool->mode == SL_POOL_SESSION) c->session_held = true;
    if (c->state == SL_CL_LOGIN_WAIT) fill_defaults(c, s->owner);
    if (sl_buf_take(&c->w->bufs, &c->a->in) < 0 || sl_buf_take(&c->w->bufs, &c->a->out) < 0) {
        sl_session_fail(c, "53200", "out of memory");
        return;
    }
    /* Fast path: the server already has exactly this client's settings
     * (typically left by a client with the same ones). */
    if (c->params_fp && c->params_fp == s->params_fp) {
        setup_done(s, NULL, NULL);
        return;
    }
    bool oom;
    char *sql = build_set(c, s, &oom);
    if (oom) {
        sl_session_fail(c, "53200", "out of memory");
        return;
    }
    if (!sql) {
        setup_done(s, NULL, NULL);
        return;
    }
    sl_log_debug(sl_client_tag(c), "applying client parameters on %s", s->tag);
    int rc = sl_server_query(s, sql, setup_done);
    free(sql);
    if (rc < 0) sl_session_fail(c, "53200", "out of memory");
}

static bool server_clean(sl_client_t *c, sl_server_t *s) {
    /* Messages before a Sync may have opened an implicit transaction that
     * the last ReadyForQuery does not show. Bytes behind the routing
     * barrier belong to the next transaction. */
    if (c->barrier)
        return c->a->pending == sl_router_held_pending(c) && s->tx_status == 'I' &&
               sl_scan_at_boundary(&s->scan) && c->a->in.head == c->a->barrier_off && sl_ps_idle(c);
    /* The start of a header the client sent was never forwarded (see
     * sl_client_fwd_limit): it waits for the next server, and holds none. */
    return c->a->pending == 0 && !c->ext_open && s->tx_status == 'I' &&
           sl_scan_at_boundary(&s->scan) && !c->a->scan.in_body &&
           sl_buf_len(&c->a->in) == c->a->scan.hdr_len && !c->holding && sl_ps_idle(c);
}

void sl_relay_unlink(sl_client_t *c) {
    sl_server_t *s = c->server;
    if (!s) return;
    c->server = NULL;
    s->link = NULL;
    c->c2s_blocked = false;
    /* A transaction or request cut short here (aborted, its server lost)
     * must not lend its start to the client's next one in the stats. */
    c->a->xact_start_us = c->a->query_start_us = 0;
    sl_relay_forget_fix(c);
    /* Temp tables, SQL prepared statements, LISTEN, advisory locks, WITH
     * HOLD cursors: another client must never see them. */
    if (c->pins || c->state_made) s->reset_needed = true;
    /* Left by a session-mode client after its pool's mode changed: the
     * reset the pool's mode gives now may be none. */
    if (c->session_held && c->pool && c->pool->mode != SL_POOL_SESSION) s->reset_needed = true;
    if (c->state_kept) s->close_needed = true;
    c->state_made = c->state_kept = false;
    /* A server in the middle of sluice's own query finishes it first; its
     * completion sees no client and gives it back. */
    if (s->state == SL_SV_QUERY) {
        sl_ps_unlink(c);
        return;
    }
    bool clean = server_clean(c, s);
    /* Closed, not clean: a backend still running the client's query would
     * run it to its end first. Only then: a cancel for a server that goes
     * back to the pool could reach its next client's query. */
    if (!clean) sl_cancel_running(c, s);
    sl_ps_unlink(c);
    sl_pool_release(s, clean);
    sl_router_done(c);
}

/* Stats of a server assignment (PgBouncer's meanings): the wait that
 * ended, and the request that starts on the server now. */
static void count_assignment(sl_client_t *c, sl_server_t *s) {
    if (!s->home) return;
    sl_pool_stats_t *ps = &sl_container_of(s->home, sl_pool_t, servers)->stats;
    ps->server_assignment_count++;
    uint64_t now = sl_now_us(c->w);
    if (c->state == SL_CL_WAITING) {
        uint64_t waited = now > c->wait_start_us ? now - c->wait_start_us : 0;
        ps->wait_time_us += waited;
        sl_hist_observe(&ps->wait_hist, waited);
    }
    if (c->a->pending > 0) {
        c->a->query_start_us = now;
        if (!c->a->xact_start_us) c->a->xact_start_us = now;
    }
}

/* A ReadyForQuery for c: the query (and, at status I, the transaction)
 * that ran on its server is over. */
static void count_ready(sl_client_t *c, char status) {
    sl_pool_stats_t *ps = sl_client_stats(c);
    if (!ps) return;
    uint64_t now = sl_now_us(c->w);
    if (c->a->query_start_us) {
        /* One query per request, as PgBouncer counts and as the query-time
         * histogram observes: a pipeline of Executes up to one Sync is one. */
        ps->query_count++;
        c->w->stats.query_count++;
        uint64_t took = now > c->a->query_start_us ? now - c->a->query_start_us : 0;
        ps->query_time_us += took;
        sl_hist_observe(&ps->query_hist, took);
        /* A pipelined request behind it starts now. */
        c->a->query_start_us = c->a->pending > 0 ? now : 0;
    }
    if (status == 'I') {
        ps->xact_count++;
        if (c->a->xact_start_us && now > c->a->xact_start_us)
            ps->xact_time_us += now - c->a->xact_start_us;
        c->a->xact_start_us = 0;
    } else if (!c->a->xact_start_us) {
        c->a->xact_start_us = now;
    }
}

static bool activate(sl_client_t *c, sl_server_t *s) {
    if (sl_ps_wanted(c) && !sl_ps_link(c, s)) {
        sl_session_fail(c, "53200", "out of memory");
        return false;
    }
    sl_server_set_state(s, SL_SV_ACTIVE);
    s->io = server_io_cb;
    if (c->unvetted) c->state_made = true; /* see mark_unvetted() */
    c->unvetted = false;
    sl_router_linked(c);
    c->w->stats.server_assignment_count++;
    count_assignment(c, s);
    c->server_error = false;
    sl_client_set_state(c, SL_CL_ACTIVE);
    return true;
}

/* The end of a login: a ParameterStatus for each of `reported` (a server's,
 * or a pool's cached ones), with the client's own value where it has one,
 * then sluice's BackendKeyData and ReadyForQuery. */
static bool send_welcome(sl_client_t *c, const sl_params_t *reported) {
    int rc = SL_OK;
    for (int i = 0; i < reported->n && rc == SL_OK; i++) {
        const char *name = reported->v[i].name, *own = sl_params_get(&c->params, name);
        rc = sl_proto_put_param_status(&c->a->out, name, own ? own : reported->v[i].value);
    }
    if (rc == SL_OK)
        rc = sl_proto_put_backend_key(&c->a->out, sl_client_cancel_pid(c), c->cancel_key);
    if (rc == SL_OK) rc = sl_proto_put_ready(&c->a->out, 'I');
    if (rc != SL_OK) {
        sl_session_fail(c, "53200", "startup parameters do not fit in pkt_buf");
        return false;
    }
    if (c->pool) c->pool->stats.client_login_count++;
    /* Anything the client sent after authenticating becomes its first request. */
    if (c->a->login_len) {
        if (sl_buf_append(&c->a->in, c->a->login_buf, c->a->login_len) < 0) {
            sl_session_fail(c, "08P01", "too much data sent before login completed");
            return false;
        }
        c->a->scan_new += c->a->login_len;
    }
    free(c->a->login_buf);
    c->a->login_buf = NULL;
    c->a->login_len = 0;
    return true;
}

/* The client has its ReadyForQuery: what it pipelined after authenticating
 * is its first request (a server is asked for only once a whole header is
 * in, see sl_client_has_request). */
static void welcomed(sl_client_t *c) {
    if (!sl_client_flush(c)) return;
    if (sl_buf_len(&c->a->in) > 0 && sl_relay_scan_client(c)) {
        if (c->state == SL_CL_IDLE && sl_client_has_request(c)) {
            sl_client_request_server(c);
            return;
        }
        if (c->state == SL_CL_ACTIVE) sl_relay_flush_c2s(c);
    }
    if (!sl_client_done(c)) sl_client_update_poll(c);
}

static void setup_finish(sl_server_t *s, const char *err, const char *code) {
    sl_client_t *c = s->link;
    if (!c) {
        /* The client left while its parameters were being applied. */
        sl_pool_release(s, err == NULL && s->tx_status == 'I');
        return;
    }
    if (err) {
        c->server = NULL;
        s->link = NULL;
        sl_pool_release(s, s->tx_status == 'I' && s->state != SL_SV_CLOSING);
        sl_session_fail(c, code && *code ? code : "08006", "%s", err);
        return;
    }
    if (!c->params_fp || c->params_fp != s->params_fp) params_settled(c, s);
    if (c->cancel_asked) {
        /* Cancelled before its request reached the server: the server goes
         * back as it is, the request is answered as a cancelled one. */
        c->cancel_asked = false;
        c->server = NULL;
        s->link = NULL;
        sl_pool_release(s, s->tx_status == 'I');
        sl_client_abort_requests(c, "57014", SL_CANCELLED_WAITING);
        return;
    }
    if (c->state == SL_CL_LOGIN_WAIT) {
        if (!send_welcome(c, &s->reported)) return;
        if (sl_client_mode(c) == SL_POOL_SESSION) {
            if (!activate(c, s)) return;
        } else {
            c->server = NULL;
            s->link = NULL;
            sl_pool_release(s, true);
            sl_client_set_state(c, SL_CL_IDLE);
        }
        welcomed(c);
        return;
    }
    if (activate(c, s) && sl_relay_flush_c2s(c)) sl_client_update_poll(c);
}

/* The server ran the SET for the client's parameters (an entry point: the
 * server calls it; sl_relay_link too, when there is nothing to set). */
static void setup_done(sl_server_t *s, const char *err, const char *code) {
    sl_client_t *c = s->link;
    setup_finish(s, err, code);
    if (c) sl_session_settle(c);
}

bool sl_relay_welcome(sl_client_t *c, const sl_pool_t *p) {
    if (sl_buf_take(&c->w->bufs, &c->a->in) < 0 || sl_buf_take(&c->w->bufs, &c->a->out) < 0) {
        sl_session_fail(c, "53200", "out of memory");
        return false;
    }
    fill_defaults(c, p);
    if (!send_welcome(c, &p->defaults)) return false;
    sl_client_set_state(c, SL_CL_IDLE);
    welcomed(c);
    return true;
}

/* ---- client -> server ---- */

/* Session state that ties a client to its server, and what clears it. */
static const struct {
    uint32_t creates, cleared_by;
    const char *what;
} pin_kinds[] = {
    {SL_STATE_LISTEN, SL_STATE_UNLISTEN_ALL, "LISTEN"},
    {SL_STATE_TEMP_OBJECT, 0, "CREATE TEMP"},
    {SL_STATE_PREPARE, SL_STATE_DEALLOCATE_ALL, "PREPARE"},
    {SL_STATE_HOLD_CURSOR, SL_STATE_CLOSE_ALL, "DECLARE ... WITH HOLD"},
    {SL_STATE_ADVISORY_LOCK, SL_STATE_ADVISORY_UNLOCK_ALL, "pg_advisory_lock()"},
};

static const char *pin_names(uint32_t pins, char *buf, size_t cap) {
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof pin_kinds / sizeof *pin_kinds; i++)
        if (pins & pin_kinds[i].creates)
            snprintf(buf + strlen(buf), cap - strlen(buf), "%s%s", buf[0] ? ", " : "",
                     pin_kinds[i].what);
    return buf;
}

/* Refuses a held Query under pin_session_state = error: the message is
 * dropped and the client gets an error and ReadyForQuery. Returns false if
 * the client was closed. */
static void refusal_text(sl_client_t *c, uint32_t creates, char *msg, size_t cap) {
    char what[128];
    snprintf(msg, cap,
             "%s would tie this connection to one server, and pin_session_state = error refuses "
             "that in %s pooling: use session pooling for this client, or pin_session_state = on",
             pin_names(creates, what, sizeof what), sl_pool_mode_names[sl_client_mode(c)]);
}

void sl_relay_pin_refusal(sl_client_t *c, const char *sql, char *msg, size_t cap) {
    sl_sql_info_t info;
    sl_sql_classify(c->w->sql_cache, sql, c->w->cfg->write_functions,
                    c->w->cfg->stateless_functions, &info);
    uint32_t creates = 0;
    for (size_t i = 0; i < sizeof pin_kinds / sizeof *pin_kinds; i++)
        creates |= info.state & pin_kinds[i].creates;
    refusal_text(c, creates, msg, cap);
}

/* Refuses a held Query with an error of SQLSTATE code: the message is
 * dropped and the client gets the error and ReadyForQuery. With other
 * requests in flight (an extended-protocol message not yet synced too) or
 * a transaction open, its replies could not stay in order (or the
 * transaction would go on as if nothing failed): the error is FATAL then.
 * Returns false if the client was closed. */
static bool refuse_held(sl_client_t *c, uint32_t start, uint32_t end, const char *code,
                        const char *msg) {
    if (c->a->pending > 1 || c->ext_open || (c->server && c->server->tx_status != 'I')) {
        sl_session_fail(c, code, "%s", msg);
        return false;
    }
    memmove(c->a->in.data + start, c->a->in.data + end, c->a->in.tail - end);
    c->a->in.tail -= end - start;
    c->a->pending--;
    if (sl_proto_put_error(&c->a->out, "ERROR", code, msg) < 0 ||
        sl_proto_put_ready(&c->a->out, 'I') < 0) {
        sl_session_fail(c, code, "%s", msg);
        return false;
    }
    sl_session_count_error(c, code);
    return true;
}

static bool refuse_query(sl_client_t *c, uint32_t start, uint32_t end, uint32_t creates) {
    char msg[384];
    refusal_text(c, creates, msg, sizeof msg);
    return refuse_held(c, start, end, "0A000", msg);
}

/* Notes what a statement does to its client's session: settings to read
 * back, state that needs a reset or a closed server. Returns the pin kinds
 * (pin_kinds) it creates. */
static uint32_t note_state(sl_client_t *c, const sl_sql_info_t *info) {
    if (!info->state && !info->reset_all && !info->set_names[0]) return 0; /* most statements */
    if (info->state & SL_STATE_DISCARD_ALL) {
        c->reset_seen = true;
        c->pins = 0;
        c->capture_all = true; /* it reset what the client SET: read it all back */
    }
    /* Whether it drops the prepared statements is known when it runs: the
     * walker sees to it (see prepare.c). */
    if (info->state & (SL_STATE_DISCARD_ALL | SL_STATE_DEALLOCATE_ALL)) c->drop_ahead = true;
    /* Settings changed in SQL are read back from the server once the
     * transaction is over (committed or not), then carried to the next. */
    if (info->reset_all) c->capture_all = true;
    for (const char *p = info->set_names, *e; *p; p = *e ? e + 1 : e) {
        e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(e - p), p);
        (void)sl_params_set(&c->a->dirty, name, "");
    }
    uint32_t creates = 0;
    for (size_t i = 0; i < sizeof pin_kinds / sizeof *pin_kinds; i++) {
        if (info->state & pin_kinds[i].cleared_by) c->pins &= ~pin_kinds[i].creates;
        if (info->state & pin_kinds[i].creates) creates |= pin_kinds[i].creates;
    }
    /* State made inside a DO block, a procedure or a function that is not
     * a built-in is not in the text; a reset does not undo setseed(). */
    if (info->state & (SL_STATE_OPAQUE | SL_STATE_UNRESETTABLE)) c->state_made = true;
    if (info->state & SL_STATE_UNRESETTABLE) c->state_kept = true;
    return creates;
}

/* Ties c to its server for the state in creates (pin_session_state = on)
 * or not (off); either way that server is reset when c leaves it. */
static void pin(sl_client_t *c, uint32_t creates) {
    c->state_made = true;
    if (c->w->cfg->pin_session_state == SL_PIN_OFF) return;
    char what[128];
    if ((c->pins | creates) != c->pins) {
        for (size_t i = 0; i < sizeof pin_kinds / sizeof *pin_kinds; i++)
            if (creates & pin_kinds[i].creates & ~c->pins) c->w->stats.pins[i]++;
        sl_log_debug(sl_client_tag(c), "pinned to its server by %s",
                     pin_names(creates, what, sizeof what));
    }
    c->pins |= creates;
}

/* A Bind runs a named statement again, perhaps in a later transaction and
 * on another server than its Parse: what the statement does to the session
 * (a function that is not a built-in, set_config(), an advisory lock) is
 * noted again. body, n: the Bind's bytes from its portal name, all or the
 * first ones. False when the statement name is not among them. */
static bool analyse_bind(sl_client_t *c, const char *body, size_t n) {
    const char *z = memchr(body, '\0', n);
    if (!z || !memchr(z + 1, '\0', n - (size_t)(z + 1 - body))) return false;
    /* The unnamed statement is not tracked: its Parse was looked at. */
    sl_stmt_t *st = z[1] ? sl_stmt_names_get(&c->stmt_names, z + 1) : NULL;
    if (!st) return true;
    sl_sql_info_t info;
    sl_sql_classify(c->w->sql_cache, (const char *)st->body, c->w->cfg->write_functions,
                    c->w->cfg->stateless_functions, &info);
    uint32_t creates = note_state(c, &info);
    /* Under pin_session_state = error such a statement's Parse was refused. */
    if (creates) pin(c, creates);
    return true;
}

/* Looks at a complete held Query, Parse or Bind in `in` [start, end).
 * Returns false if the client was closed; *removed tells whether the
 * message left the buffer. A Query's or Parse's classification is left in
 * *info_out (*classified), for the RESET check to reuse. */
static bool analyse_query(sl_client_t *c, uint32_t start, uint32_t end, bool *removed,
                          sl_sql_info_t *info_out, bool *classified) {
    *removed = false;
    *classified = false;
    const char *body = (const char *)c->a->in.data + start + 5;
    size_t n = end - start - 5;
    if (c->a->in.data[start] == 'B') {
        (void)analyse_bind(c, body, n); /* a malformed one: the server refuses it */
        return true;
    }
    const char *sql = body;
    bool parse = c->a->in.data[start] == 'P';
    if (parse) {
        /* Parse: statement name, then the query text, then parameter types. */
        const char *z = memchr(body, '\0', n);
        sql = z ? z + 1 : NULL;
        if (!sql || !memchr(sql, '\0', n - (size_t)(sql - body))) {
            sl_session_fail(c, "08P01", "malformed Parse message");
            return false;
        }
    } else if (n == 0 || body[n - 1] != '\0' || memchr(body, '\0', n) != body + n - 1) {
        sl_session_fail(c, "08P01", "Query message is not one NUL-terminated string");
        return false;
    }
    sl_sql_info_t *info = info_out;
    sl_sql_classify(c->w->sql_cache, sql, c->w->cfg->write_functions,
                    c->w->cfg->stateless_functions, info);
    *classified = true;
    /* sluice's own statements on a shared server are no client's to run,
     * replace or drop (another client's next Bind would fail, or run
     * someone else's text). */
    if (info->names_pooler_statement) {
        if (parse && sl_ps_wanted(c)) {
            c->a->in.data[start] = SL_MSG_REFUSED; /* the walker answers it in order */
            return true;
        }
        if (parse) {
            sl_client_fatal(c, "42501", "%s", SL_PS_POOLER_NAMES);
            return false;
        }
        *removed = true;
        return refuse_held(c, start, end, "42501", SL_PS_POOLER_NAMES);
    }
    /* Whether the client names that statement is known only when the
     * messages before it are walked (a Parse pipelined ahead of it): the
     * walker answers it, or sends it on as the Query it is. */
    char dname[128];
    if (sl_ps_wanted(c) && sl_ps_deallocate_name(sql, dname, sizeof dname)) {
        c->a->in.data[start] = parse ? SL_MSG_DEALLOCATE_PARSE : SL_MSG_DEALLOCATE; /* prepare.c */
        return true;
    }
    uint32_t creates = note_state(c, info);
    int mode = c->w->cfg->pin_session_state;
    if (!creates) return true;
    if (mode == SL_PIN_ERROR) {
        if (parse && sl_ps_wanted(c)) {
            /* The walker answers it with the error, in its place among the
             * replies, and skips the rest of the pipeline up to its Sync. */
            c->a->in.data[start] = SL_MSG_REFUSED;
            return true;
        }
        if (parse) { /* without the walker, the replies could not stay in order */
            char msg[384];
            refusal_text(c, creates, msg, sizeof msg);
            sl_session_fail(c, "0A000", "%s", msg);
            return false;
        }
        *removed = true;
        return refuse_query(c, start, end, creates);
    }
    /* Pinned or not, the server must not carry this state to the next
     * client: it is reset when this client leaves it. */
    pin(c, creates);
    return true;
}

/* The length of the message starting now, checked before any of it is
 * forwarded: within max_packet_size, and never a length PostgreSQL would
 * read as negative (it takes the field as a signed 32-bit integer). The
 * scanner already refused lengths under 4. False if c was closed. */
static bool length_ok(sl_client_t *c) {
    uint64_t len = c->a->scan.len; /* the length field: body and its 4 bytes */
    uint64_t max = (uint64_t)c->w->cfg->max_packet_size;
    if (len - 4 > max) {
        sl_session_fail(c, "08P01", "message of %llu bytes exceeds max_packet_size (%llu bytes)",
                        (unsigned long long)(len + 1), (unsigned long long)max);
        return false;
    }
    if (len > INT32_MAX) {
        sl_session_fail(c, "08P01",
                        "message of %llu bytes exceeds the protocol's limit of %d bytes",
                        (unsigned long long)(len + 1), INT32_MAX);
        return false;
    }
    return true;
}

/* A Query or Parse too long to hold streams through unanalysed: whatever
 * session state it creates, its server cannot be vouched for and is reset
 * (DISCARD ALL) when this client leaves it. The server it goes to is the
 * linked one, or the next one linked when the client has none (or when it
 * is held behind the routing barrier). */
static void mark_unvetted(sl_client_t *c) {
    if (c->server && c->state == SL_CL_ACTIVE && !c->barrier)
        c->state_made = true;
    else
        c->unvetted = true;
}

/* Notes when the message the client's input ends in began to arrive, for
 * client_partial_message_timeout: now if it began in the bytes just framed
 * (after a boundary), kept if it was already incomplete before them. */
static void note_partial(sl_client_t *c, bool began) {
    if (sl_scan_at_boundary(&c->a->scan))
        c->a->partial_ms = 0;
    else if (began || !c->a->partial_ms)
        c->a->partial_ms = sl_now_ms(c->w);
}

bool sl_relay_scan_client(sl_client_t *c) {
    /* Frames the scan_new bytes last appended at the tail; the scanner's
     * state carries a message split across reads. */
    bool began = sl_scan_at_boundary(&c->a->scan); /* a message starts in these bytes */
    uint32_t off = c->a->in.tail - c->a->scan_new;
    c->a->scan_new = 0;
    /* Session state matters only when servers are shared; RESETs matter in
     * every mode (see the fix-up), so a Query or Parse is held whole in
     * session pooling too. */
    /* A client linked while its pool is in session mode is from now on a
     * session client (its pool switched mid-transaction): what it sends is
     * not analysed, so its server must stay its own. */
    if (c->server && c->pool && c->pool->mode == SL_POOL_SESSION) c->session_held = true;
    bool analyse = c->pool && sl_client_mode(c) != SL_POOL_SESSION;
    bool hold = c->pool != NULL;
    /* An empty body ends without another byte: report that END too. */
    while (off < c->a->in.tail || (c->a->scan.in_body && c->a->scan.remain == 0)) {
        enum sl_scan_ev ev;
        off += (uint32_t)sl_scan_feed(&c->a->scan, c->a->in.data + off, c->a->in.tail - off, &ev);
        if (ev == SL_SCAN_ERROR) {
            sl_session_fail(c, "08P01", "invalid message length %u from client (under 4)",
                            c->a->scan.len);
            return false;
        }
        if (ev == SL_SCAN_END) began = true;
        if (ev == SL_SCAN_END && c->holding) {
            c->holding = false;
            bool removed = false, classified = false;
            sl_sql_info_t info;
            if (analyse && !analyse_query(c, c->a->hold_start, off, &removed, &info, &classified))
                return false;
            if (removed) {
                off = c->a->hold_start;
                continue;
            }
            /* Behind the fence, it is looked at when the fence lifts. */
            if (!c->fix_fence || c->a->hold_start < c->a->fix_fence_off)
                message_resets(c, c->a->in.data + c->a->hold_start, off - c->a->hold_start,
                               classified ? &info : NULL);
            request_end(c, c->a->scan.type);
            continue;
        }
        if (ev == SL_SCAN_END) request_end(c, c->a->scan.type);
        if (ev != SL_SCAN_START) continue;
        uint8_t t = c->a->scan.type;
        /* A RESET's values are not back yet: nothing from here on may run. */
        if (c->a->fix >= FIX_SENT && !c->fix_fence) {
            c->fix_fence = true;
            c->a->fix_fence_off = off - 5;
        }
        if (!length_ok(c)) return false;
        if (!frontend_type_ok(t)) {
            /* Refused here, before a byte of it reaches a shared server:
             * PostgreSQL would answer FATAL and close, taking with it the
             * server other clients are about to get. */
            sl_session_fail(c, "08P01",
                            "invalid frontend message type %u ('%c') after login: expected "
                            "Query, Parse, Bind, Describe, Execute, Close, Flush, Sync, "
                            "FunctionCall, CopyData/Done/Fail or Terminate",
                            t, t >= 32 && t < 127 ? t : '?');
            return false;
        }
        if (t == 'X') {
            /* Terminate is for sluice, never for a pooled server. */
            c->a->in.tail = off - 5;
            c->a->scan = (sl_scan_t){0};
            c->terminated = true;
            note_partial(c, true);
            return true;
        }
        if (t == 'Q' || t == 'S' || t == 'F') {
            if (c->a->pending++ == 0) {
                c->a->query_ms = sl_now_ms(c->w);
                /* Linked already (session pooling, or more in one
                 * transaction): the request starts on the server now. */
                if (c->state == SL_CL_ACTIVE) {
                    c->a->query_start_us = sl_now_us(c->w);
                    if (!c->a->xact_start_us) c->a->xact_start_us = c->a->query_start_us;
                }
            }
            if (!c->a->xact_ms) c->a->xact_ms = c->a->query_ms;
            if (c->fix_fence) c->a->fix_after++;
        }
        /* Copy data and a Flush start no request of their own. */
        if (c->rt && !c->ext_open && t != 'd' && t != 'c' && t != 'f' && t != 'H')
            sl_router_scanned_start(c, off - 5);
        if (t == 'S')
            c->ext_open = false;
        else if (t == 'P' || t == 'B' || t == 'D' || t == 'E' || t == 'C')
            c->ext_open = true; /* a Flush alone opens nothing: it owes no reply */
        sl_stats_t *st = &c->w->stats;
        sl_pool_stats_t *ps = sl_client_stats(c);
        if (t == 'B') st->bind_count++;
        if (t == 'P') {
            st->client_parse_count++;
            if (!sl_ps_wanted(c)) st->server_parse_count++; /* passes through as it is */
        }
        if (ps) {
            if (t == 'B') ps->bind_count++;
            if (t == 'P') {
                ps->client_parse_count++;
                if (!sl_ps_wanted(c)) ps->server_parse_count++;
            }
        }
        /* A Query or Parse that fits the buffer is held until complete and
         * analysed; a longer one streams through unexamined. */
        if ((t == 'Q' || t == 'P') && hold && c->a->scan.len + 1 <= c->a->in.cap) {
            c->holding = true;
            c->a->hold_start = off - 5;
        } else if ((t == 'Q' || t == 'P') && analyse) {
            mark_unvetted(c);
        } else if (t == 'B' && analyse && sl_ps_wanted(c)) {
            /* So is a Bind of a named statement (tracked ones only: others
             * stay on the server that parsed them). A longer one is looked
             * at from the bytes in now. */
            if (c->a->scan.len + 1 <= c->a->in.cap) {
                c->holding = true;
                c->a->hold_start = off - 5;
            } else if (!analyse_bind(c, (const char *)c->a->in.data + off, c->a->in.tail - off)) {
                mark_unvetted(c);
            }
        }
    }
    note_partial(c, began);
    return true;
}

bool sl_relay_flush_c2s(sl_client_t *c) {
    if (c->ps) return sl_ps_flush_c2s(c);
    sl_server_t *s = c->server;
    if (!s || s->state != SL_SV_ACTIVE) return true;
    /* A partial header stays here (it might be a Terminate), and so does a
     * Query held for analysis. */
    uint32_t limit = sl_client_fwd_limit(c);
    uint32_t fwd = limit - c->a->in.head;
    while (fwd > 0) {
        ssize_t n = sl_conn_write(&s->sock, sl_buf_rptr(&c->a->in), fwd);
        if (n == -EAGAIN) {
            c->c2s_blocked = true;
            return true;
        }
        if (n <= 0) {
            sl_log_warn(sl_client_tag(c), "write to server failed: %s",
                        strerror(n < 0 ? (int)-n : EPIPE));
            sl_relay_server_lost(c, "write to server failed");
            return !sl_client_done(c);
        }
        sl_buf_consume(&c->a->in, (uint32_t)n);
        fwd -= (uint32_t)n;
    }
    c->c2s_blocked = false;
    return sl_relay_settle(c);
}

/* ---- server -> client ---- */

static bool is_settable(const char *name) {
    for (int i = 0; client_settable[i]; i++)
        if (strcasecmp(client_settable[i], name) == 0) return true;
    return false;
}

/* A ParameterStatus without its two strings: the server is closed with the
 * client. The message never reaches the client when it came whole in this
 * read (msg_at: where it begins in c->a->out, the client then between
 * messages and told why); else the client sees the close. */
static bool bad_param_status(sl_client_t *c, sl_server_t *s, uint8_t *msg_at) {
    sl_log_warn(s->tag, "backend sent a malformed ParameterStatus (%u bytes)", s->scan.len);
    if (!msg_at) return sl_session_drop(c, "server sent a malformed ParameterStatus");
    c->a->out.tail = (uint32_t)(msg_at - c->a->out.data);
    return sl_session_fail(c, "08P01", "server sent a malformed message; reconnect and retry");
}

bool sl_relay_scan_server(sl_client_t *c, sl_server_t *s, const uint8_t *p, size_t n) {
    size_t off = 0;
    /* The bytes are the tail of c->a->out. The ReadyForQuery a fix-up holds
     * is cut out of them (the bytes after it move down over it). */
    uint8_t *keep = c->a->out.data + (p - c->a->out.data);
    uint8_t *msg_at = NULL; /* in c->a->out: the current message's header, when in this read */
    while (off < n) {
        if (sl_scan_at_boundary(&s->scan)) {
            c->fix_cut =
                p[off] == 'Z' && c->a->fix == FIX_SENT && c->a->pending == c->a->fix_after + 1;
            /* Fast path: a whole message sluice only passes along (not a
             * ReadyForQuery, ParameterStatus or error, which it reads) is
             * stepped over at once instead of framed in two scan calls. */
            uint8_t t = p[off];
            uint32_t len = n - off >= 5 ? sl_be32(p + off + 1) : 0;
            if (len >= 4 && len - 4 <= n - off - 5 && t != 'Z' && t != 'S' && t != 'E') {
                if (keep != p + off) memmove(keep, p + off, (size_t)len + 1);
                keep += (size_t)len + 1;
                off += (size_t)len + 1;
                s->scan.type = t;
                s->scan.len = len;
                /* Notices and reports can come at any time: a reply is anything else. */
                if (t != 'N' && t != 'A') c->tx_replied = true;
                continue;
            }
        }
        enum sl_scan_ev ev;
        size_t used = sl_scan_feed(&s->scan, p + off, n - off, &ev);
        if (!c->fix_cut) {
            if (keep != p + off) memmove(keep, p + off, used);
            keep += used;
        }
        off += used;
        if (ev == SL_SCAN_START && !sl_proto_backend_type_ok(s->scan.type)) ev = SL_SCAN_ERROR;
        if (ev == SL_SCAN_ERROR) {
            /* The bad header never reaches the client: cut it and the rest
             * of the read. When all of it came in this read, the client is
             * between messages and can be told; else it sees the close. */
            c->a->out.tail = (uint32_t)(keep - c->a->out.data) - (uint32_t)used;
            s->scan.hdr_len = 0;
            s->scan.in_body = false;
            sl_log_warn(s->tag, "backend sent a malformed message (type 0x%02x, length %u)",
                        s->scan.type, s->scan.len);
            if (used == 5)
                sl_session_fail(c, "08P01", "server sent a malformed message; reconnect and retry");
            else
                sl_session_drop(c, "server sent a malformed message");
            return false;
        }
        if (ev == SL_SCAN_START) {
            uint8_t t = s->scan.type;
            msg_at = used == 5 && !c->fix_cut ? keep - used : NULL;
            s->scan.collect = t == 'Z' || t == 'S' || t == 'E';
            if (t == 'E') c->server_error = true;
            /* Notices and reports can come at any time: a reply is anything else. */
            if (t != 'N' && t != 'S' && t != 'A') c->tx_replied = true;
            continue;
        }
        if (ev != SL_SCAN_END || !s->scan.collect) continue;
        if (s->scan.type == 'E') {
            /* A body cut at the collect cap still has its code: it comes
             * early, and the fields before the cut are filled in. */
            sl_error_fields_t ef;
            bool whole = sl_proto_parse_error(s->coll, s->scan.coll_len, &ef) == SL_OK;
            sl_session_count_error(c, whole || ef.code ? ef.code : NULL);
            /* PostgreSQL always sends a SQLSTATE: a backend that does not
             * is not one to trust with the next client. */
            if (whole && !ef.code && !s->close_needed) {
                s->close_needed = true;
                sl_log_warn(s->tag, "server sent an ErrorResponse without SQLSTATE: it will not "
                                    "be reused");
            }
            if (error_is_fatal(s->coll, s->scan.coll_len) && !s->close_needed) {
                s->close_needed = true;
                sl_log_info(s->tag, "server sent FATAL: it will not be reused");
            }
        } else if (s->scan.type == 'Z' && s->scan.coll_len == 1) {
            s->tx_status = (char)s->coll[0];
            /* Portals are gone, unless later requests are already on their way. */
            if (s->tx_status == 'I' && (!c->ps || c->ps->replies.n == 0)) s->stmts.epoch++;
            if (s->tx_status == 'I') c->w->stats.xact_count++;
            if (c->a->pending > 0) c->a->pending--;
            count_ready(c, s->tx_status);
            /* The transaction is over; a request already sent begins the next. */
            if (s->tx_status == 'I') c->a->xact_ms = c->a->pending > 0 ? sl_now_ms(c->w) : 0;
            if (c->fix_cut) { /* the end of a request that reset settings: held */
                c->fix_cut = false;
                c->a->fix = FIX_DUE;
                c->a->fix_status = s->tx_status;
                c->fix_failed = c->server_error;
            }
            if (c->reset_seen && c->a->pending == 0) {
                /* DISCARD ALL reverted what sluice had SET on this server. */
                sl_params_clear(&s->applied);
                s->params_fp = 0;
                c->reset_seen = false;
            }
            c->server_error = false;
            c->last_io_ms = sl_now_ms(c->w);
        } else if (s->scan.type == 'S' && sl_scan_complete(&s->scan)) {
            sl_kv_t kv;
            if (sl_proto_parse_param_status(s->coll, s->scan.coll_len, &kv) != SL_OK)
                return bad_param_status(c, s, msg_at);
            sl_server_note_param(s, s->coll, s->scan.coll_len);
            /* The client changed a setting itself: follow it. */
            if ((is_settable(kv.name) || sl_params_get(&c->params, kv.name) ||
                 sl_strlist_has(c->w->cfg->track_extra_parameters, kv.name))) {
                (void)sl_params_set(&c->params, kv.name, kv.value);
                c->params_fp = sl_params_fingerprint(&c->params);
                s->params_fp = c->params_fp;
            }
        }
    }
    c->a->out.tail -= (uint32_t)(p + n - keep);
    return true;
}

static void capture_done(sl_server_t *s, const char *err, const char *code);
static void maybe_release(sl_client_t *c);
static bool end_terminated(sl_client_t *c);

static bool add_name(sbuf_t *b, const char *name, bool first) {
    return sbuf_add(b, first ? "SELECT " : ", ") && sbuf_add(b, "pg_catalog.current_setting(") &&
           sbuf_add_quoted(b, name, false) && sbuf_add(b, ", true)");
}

/* Whether a setting the client changed is known without asking: s reports
 * it (ParameterStatus, sent before ReadyForQuery whenever its value moved)
 * and c carries it already, so sl_relay_scan_server follows each change into
 * c->params, and a value that did not move is the one c->params holds
 * (linking made the server's match it). */
static bool follows_report(const sl_client_t *c, const sl_server_t *s, const char *name) {
    return sl_params_get(&s->reported, name) && sl_params_get(&c->params, name);
}

/* Reads back the settings the client changed with SET/RESET, on the server
 * that ran them, before that server goes back to the pool. Settings the
 * server reports need no read-back (follows_report). False when nothing is
 * left to read: the server may go back at once. */
static bool start_capture(sl_client_t *c, sl_server_t *s) {
    if (c->capture_all) {
        for (int i = 0; i < c->params.n; i++)
            (void)sl_params_set(&c->a->dirty, c->params.v[i].name, "");
        for (int i = 0; i < s->applied.n; i++)
            (void)sl_params_set(&c->a->dirty, s->applied.v[i].name, "");
        c->capture_all = false;
    }
    for (int i = c->a->dirty.n - 1; i >= 0; i--)
        if (follows_report(c, s, c->a->dirty.v[i].name))
            sl_params_remove(&c->a->dirty, c->a->dirty.v[i].name);
    if (c->a->dirty.n == 0) return false;
    sbuf_t b = {0};
    bool ok = true;
    for (int i = 0; i < c->a->dirty.n && ok; i++)
        ok = add_name(&b, c->a->dirty.v[i].name, i == 0);
    c->a->capturing = (uint32_t)c->a->dirty.n;
    if (!ok || !b.p || sl_server_query(s, b.p, capture_done) < 0) {
        sl_log_warn(sl_client_tag(c), "cannot read back changed settings; they stay on %s", s->tag);
        sl_params_clear(&c->a->dirty);
    }
    free(b.p);
    return true;
}

static void capture_finish(sl_server_t *s, const char *err) {
    sl_client_t *c = s->link;
    if (!c) {
        sl_pool_release(s, !err && s->tx_status == 'I');
        return;
    }
    if (err) {
        sl_log_warn(sl_client_tag(c), "reading back changed settings failed: %s", err);
    } else if (s->row && s->row_len >= 2) {
        const uint8_t *p = s->row, *end = s->row + s->row_len;
        int ncols = p[0] << 8 | p[1];
        p += 2;
        for (int i = 0; i < ncols && i < (int)c->a->capturing && p + 4 <= end; i++) {
            int32_t len = (int32_t)sl_be32(p);
            p += 4;
            if (len < 0) continue; /* unknown setting */
            if (p + len > end) break;
            char *v = strndup((const char *)p, (size_t)len);
            p += len;
            if (!v) break;
            const char *name = c->a->dirty.v[i].name;
            (void)sl_params_set(&c->params, name, v);
            if (!sl_params_get(&s->reported, name)) (void)sl_params_set(&s->applied, name, v);
            free(v);
        }
        c->params_fp = sl_params_fingerprint(&c->params);
        s->params_fp = c->params_fp;
    }
    /* Names SET while this ran stay listed for the next read-back. */
    for (uint32_t i = 0; i < c->a->capturing && c->a->dirty.n > 0; i++)
        sl_params_remove(&c->a->dirty, c->a->dirty.v[0].name);
    c->a->capturing = 0;
    sl_server_set_state(s, SL_SV_ACTIVE);
    s->io = server_io_cb;
    maybe_release(c);
    if (!sl_client_done(c) && c->server == s && sl_relay_flush_c2s(c))
        sl_client_update_poll(c);
    else if (!sl_client_done(c))
        sl_client_update_poll(c);
}

/* The server answered the read-back of changed settings (an entry point). */
static void capture_done(sl_server_t *s, const char *err, const char *code) {
    (void)code;
    sl_client_t *c = s->link;
    capture_finish(s, err);
    if (c) sl_session_settle(c);
}

/* After a ReadyForQuery: give the server back when the transaction is over. */
static void maybe_release(sl_client_t *c) {
    sl_server_t *s = c->server;
    if (c->a->fix == FIX_DUE) {
        /* The rest (a release, in transaction pooling) comes through the
         * settle at the end of the forwarding of what the fence held. */
        if (fix_start(c)) sl_relay_flush_c2s(c);
        return;
    }
    if (c->a->fix == FIX_RUNNING) return;
    if (!s || c->a->pending > sl_router_held_pending(c)) return;
    if (c->barrier && (s->tx_status != 'I' || c->pins || sl_client_mode(c) == SL_POOL_SESSION)) {
        /* The transaction goes on (or the client is tied to this server):
         * what was held belongs to it after all. */
        c->barrier = false;
        sl_relay_flush_c2s(c);
        return;
    }
    int mode = sl_client_mode(c);
    if (mode == SL_POOL_STATEMENT && s->tx_status != 'I') {
        sl_session_fail(c, "25001",
                        "transaction blocks are not allowed in statement pooling mode: send "
                        "statements without BEGIN, or set pool_mode = transaction for "
                        "database \"%s\"",
                        c->dbname);
        return;
    }
    if (!server_clean(c, s)) return;
    if (c->terminated) { /* a Terminate pipelined after requests, all answered */
        end_terminated(c);
        return;
    }
    if (c->w->shutting_down) {
        sl_session_fail(c, "57P01", "sluice is shutting down; reconnect later");
        return;
    }
    if (sl_client_drain_due(c)) {
        sl_session_fail(c, "57P01", SL_CLIENT_DRAIN_MSG);
        return;
    }
    if (mode == SL_POOL_SESSION) return;
    if ((c->a->dirty.n || c->capture_all) && start_capture(c, s)) return;
    if (c->pins) return;
    bool held = c->barrier;
    sl_relay_unlink(c);
    c->barrier = false;
    sl_client_set_state(c, SL_CL_IDLE);
    /* Requests held behind the barrier are routed on their own. */
    if (held && sl_client_has_request(c)) sl_client_request_server(c);
}

/* A client that sent Terminate, with nothing more owed to it: its server
 * goes back (clean, or closed inside a transaction: a rollback) and the
 * client closes once the replies already in its buffer are written (see
 * sl_client_flush). False if c was closed. */
static bool end_terminated(sl_client_t *c) {
    sl_relay_unlink(c);
    sl_client_set_state(c, SL_CL_IDLE);
    return sl_client_flush(c);
}

bool sl_relay_settle(sl_client_t *c) {
    if (c->state != SL_CL_ACTIVE) return !sl_client_done(c);
    if (c->terminated && c->a->pending == 0 && sl_buf_len(&c->a->in) == 0) return end_terminated(c);
    maybe_release(c);
    return !sl_client_done(c);
}

void sl_relay_server_lost(sl_client_t *c, const char *why) {
    sl_server_t *s = c->server;
    bool mid_message = s && !sl_scan_at_boundary(&s->scan);
    sl_log_warn(sl_client_tag(c), "server connection lost: %s", why);
    sl_relay_forget_fix(c);
    sl_ps_unlink(c);
    if (s) {
        c->server = NULL;
        s->link = NULL;
        sl_pool_release(s, false);
    }
    c->c2s_blocked = false;
    /* A read on a replica that went away before replying goes elsewhere. */
    if (!mid_message && sl_router_replay(c, why)) return;
    sl_router_done(c);
    /* Cut off in the middle of a message the client has begun to receive:
     * an ErrorResponse after it would be read as the rest of that message
     * (libpq: "lost synchronization with server"), so the close alone
     * tells the client. */
    if (mid_message) {
        sl_session_drop(c, "server connection lost in the middle of a message (%s)", why);
        return;
    }
    /* A pinned client lost session state it relied on: it must know. */
    if (sl_client_mode(c) == SL_POOL_SESSION || c->a->pending == 0 || c->pins ||
        !sl_scan_at_boundary(&c->a->scan)) {
        sl_session_fail(c, "08006", "server connection lost (%s); reconnect and retry", why);
        return;
    }
    /* Transaction pooling: answer what the client is waiting for with an
     * error, and give it a fresh server for its next transaction. */
    sl_client_abort_requests(c, "08006",
                             c->server_error ? NULL
                                             : "server connection lost during the transaction; "
                                               "it was rolled back, retry it");
}

/* Transaction pooling with statement tracking: server bytes go through
 * the pump, which fixes up replies on their way into c->a->out. */
static void read_server_ps(sl_client_t *c, sl_server_t *s) {
    for (int rounds = 0; rounds < 4 && c->server == s; rounds++) {
        sl_buf_t *in = &c->ps->sin;
        if (sl_buf_space(in) == 0) sl_buf_compact(in);
        uint32_t space = sl_buf_space(in);
        ssize_t n = 0;
        if (space > 0) {
            n = sl_conn_read(&s->sock, sl_buf_wptr(in), space);
            if (n == -EAGAIN) {
                n = 0;
            } else if (n <= 0) {
                sl_relay_server_lost(c, n == 0 ? "backend closed the connection" : "read error");
                return;
            } else {
                in->tail += (uint32_t)n;
            }
        }
        if (!sl_ps_pump(c, s)) return;
        maybe_release(c);
        if (sl_client_done(c) || !sl_client_flush(c)) return;
        if (s->state != SL_SV_ACTIVE || c->server != s) return;
        if ((uint32_t)n < space && sl_conn_pending(&s->sock) == 0) return;
    }
}

void sl_relay_resume(sl_client_t *c) {
    sl_server_t *s = c->server;
    if (!s || s->state != SL_SV_ACTIVE) return;
    if (!c->ps) {
        /* A fix-up that waited for room in c->a->out. */
        if (c->a->fix != FIX_DUE) return;
        maybe_release(c);
        if (!sl_client_done(c)) sl_client_update_poll(c);
        return;
    }
    if (!sl_ps_pump(c, s)) return;
    maybe_release(c);
    if (sl_client_done(c) || !sl_client_flush(c)) return;
    if (c->server == s && !sl_relay_flush_c2s(c)) return;
    sl_client_update_poll(c);
}

static void read_server(sl_client_t *c, sl_server_t *s) {
    if (c->ps) {
        read_server_ps(c, s);
        return;
    }
    for (int rounds = 0; rounds < 4 && c->server == s; rounds++) {
        if (sl_buf_space(&c->a->out) == 0) sl_buf_compact(&c->a->out);
        uint32_t space = sl_buf_space(&c->a->out);
        if (space == 0) return;
        ssize_t n = sl_conn_read(&s->sock, sl_buf_wptr(&c->a->out), space);
        if (n == -EAGAIN) return;
        if (n <= 0) {
            sl_relay_server_lost(c, n == 0 ? "backend closed the connection" : "read error");
            return;
        }
        uint8_t *p = sl_buf_wptr(&c->a->out);
        c->a->out.tail += (uint32_t)n;
        if (!sl_relay_scan_server(c, s, p, (size_t)n)) return;
        maybe_release(c);
        if (sl_client_done(c) || !sl_client_flush(c)) return;
        if (s->state != SL_SV_ACTIVE) return; /* released, or reading settings back */
        if ((uint32_t)n < space && sl_conn_pending(&s->sock) == 0) return;
    }
}

static void server_io(sl_client_t *c, sl_server_t *s, int status, int events) {
    if (status < 0) {
        /* libuv reports any POLLERR as EBADF: the socket's own error says
         * what happened (a reset), as for clients. */
        sl_relay_server_lost(c, strerror(sl_socket_errno(s->sock.fd)));
        return;
    }
    if ((events & UV_WRITABLE) && !sl_relay_flush_c2s(c)) return;
    if (c->server == s && (events & UV_READABLE)) read_server(c, s);
    if (!sl_client_done(c)) sl_client_update_poll(c);
}

/* The linked server's socket is ready, or failed (an entry point). */
static void server_io_cb(sl_server_t *s, int status, int events) {
    sl_client_t *c = s->link;
    if (!c) return;
    server_io(c, s, status, events);
    sl_session_settle(c);
}
