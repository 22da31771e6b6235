/* Named prepared statements through transaction pooling: the walker that
 * rewrites client messages and the pump that fixes up the server's replies.
 * See session.h (prepare.c part) for the model. */
#include "session.h"

#include <ctype.h>
#include <errno.h>
#include <pg_query.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sluice/log.h"
#include "sluice/pool.h"
#include "sluice/sql.h"
#include "sluice/stmt.h"

/* Replies owed at most before the walker waits for some to arrive. */
#define MAX_OWED 65536u

/* ---- byte vectors ---- */

static bool bytes_put(sl_bytes_t *b, const void *p, uint32_t n) {
    if (n == 0) return true;
    if (b->len + n > b->cap) {
        uint32_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        uint8_t *g = realloc(b->p, cap);
        if (!g) return false;
        b->p = g, b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return true;
}

static void bytes_free(sl_bytes_t *b) {
    free(b->p);
    *b = (sl_bytes_t){0};
}

/* Appends a message of type t whose body is the concatenation of up to three
 * parts. */
static bool put_msg(sl_bytes_t *b, uint8_t t, const void *p1, uint32_t n1, const void *p2,
                    uint32_t n2, const void *p3, uint32_t n3) {
    uint8_t hdr[5] = {t};
    sl_put_be32(hdr + 1, 4 + n1 + n2 + n3);
    return bytes_put(b, hdr, 5) && bytes_put(b, p1, n1) && bytes_put(b, p2, n2) &&
           bytes_put(b, p3, n3);
}

/* ---- state ---- */

/* A Parse goes to the server: counted for the loop and the client's pool. */
static void count_server_parse(sl_client_t *c) {
    c->w->stats.server_parse_count++;
    sl_pool_stats_t *ps = sl_client_stats(c);
    if (ps) ps->server_parse_count++;
}

/* States kept for reuse, and the largest stage buffer kept with one. */
#define PS_FREE_MAX 64
#define STAGE_KEEP (64u * 1024)

/* After a large message: an emptied buffer above the size kept goes, so
 * that nothing a client once sent stays allocated. */
static void bytes_shrink(sl_bytes_t *b) {
    if (b->len == 0 && b->cap > STAGE_KEEP) bytes_free(b);
}

bool sl_ps_link(sl_client_t *c, sl_server_t *s) {
    sl_loop_t *w = c->w;
    if (!c->ps && w->ps_free) {
        c->ps = w->ps_free;
        w->ps_free = c->ps->next_free;
        w->ps_nfree--;
        c->ps->next_free = NULL;
    }
    if (!c->ps && !(c->ps = calloc(1, sizeof *c->ps))) return false;
    if (sl_buf_take(&c->w->bufs, &c->ps->sin) < 0) return false;
    s->stmts.epoch++; /* a new transaction: nothing of the last one is in use */
    return true;
}

static bool awaits_whole(const sl_ps_t *ps);

bool sl_ps_can_pump(const sl_client_t *c) {
    const sl_ps_t *ps = c->ps;
    if (!ps || !c->server || c->a->out.cap - sl_buf_len(&c->a->out) < 6) return false;
    uint32_t have = sl_buf_len(&ps->sin);
    if (ps->s_mid) return have > 0; /* answers wait for the message's end */
    return (have >= 5 && !awaits_whole(ps)) || sl_expect_answer_due(&ps->replies);
}

bool sl_ps_idle(const sl_client_t *c) {
    const sl_ps_t *ps = c->ps;
    return !ps || (ps->replies.n == 0 && ps->stage.len == ps->stage.off && !ps->assembling &&
                   ps->remain == 0 && sl_buf_len(&ps->sin) == 0 && !ps->s_mid);
}

/* Whether an entry's data is a client's name entry: a Bind or Describe of
 * a statement the client named (see walk_named_use). */
static bool holds_name(const sl_ex_t *e) {
    return e->how == SL_EX_RELAY && (e->kind == SL_EX_BIND || e->kind == SL_EX_DESC_STMT);
}

/* A client's name as it was before a request in flight bound or closed
 * it: put back when the request fails or is skipped after an error, as
 * PostgreSQL never ran it. */
typedef struct name_undo {
    sl_stmt_t *prev; /* the statement it named (a reference), or NULL: unbound */
    char name[];     /* as the client spelled it */
} name_undo_t;

/* Records name's binding now, before a change; NULL when out of memory. */
static name_undo_t *name_undo_new(sl_client_t *c, const char *name) {
    size_t len = strlen(name);
    name_undo_t *u = malloc(sizeof *u + len + 1);
    if (!u) return NULL;
    memcpy(u->name, name, len + 1);
    u->prev = sl_stmt_names_get(&c->stmt_names, name);
    if (u->prev) sl_stmt_ref(u->prev);
    return u;
}

static void name_undo_free(sl_client_t *c, name_undo_t *u) {
    if (u->prev) sl_stmt_unref(&c->w->stmts, u->prev);
    free(u);
}

/* The request that changed the name ended: it stays changed if the request
 * ran, else it goes back. Entries an error ends come last first, so a name
 * changed twice returns to its first binding. */
static void name_undo_end(sl_client_t *c, name_undo_t *u, enum sl_ex_outcome how) {
    if (how != SL_EX_DONE) {
        sl_stmt_names_t *n = &c->stmt_names;
        if (!u->prev) {
            (void)sl_stmt_names_remove(n, &c->w->stmts, u->name);
        } else if (sl_stmt_names_set(n, &c->w->stmts, u->name, u->prev) < 0) {
            /* Forgotten instead: the client's next use of the name gets
             * PostgreSQL's "does not exist", never another statement. */
            (void)sl_stmt_names_remove(n, &c->w->stmts, u->name);
            sl_log_warn(sl_client_tag(c),
                        "out of memory restoring a prepared statement name skipped "
                        "after an error: it is forgotten");
        }
    }
    name_undo_free(c, u);
}

/* An entry's data: a statement reference, a client's name entry, or a
 * refusal's message; and its undo record. */
static void unref_cb(void *ctx, const sl_ex_t *e, enum sl_ex_outcome how) {
    sl_client_t *c = ctx;
    if (e->undo) name_undo_end(c, e->undo, how);
    if (e->how == SL_EX_REFUSE)
        free(e->data);
    else if (e->data && holds_name(e))
        sl_stmt_name_unref(&c->w->stmts, e->data);
    else if (e->data)
        sl_stmt_unref(&c->w->stmts, e->data);
}

static void ps_free(sl_ps_t *ps) {
    sl_expect_free(&ps->replies);
    bytes_free(&ps->stage);
    bytes_free(&ps->msg);
    free(ps);
}

void sl_ps_unlink(sl_client_t *c) {
    sl_ps_t *ps = c->ps;
    sl_loop_t *w = c->w;
    if (!ps) return;
    c->ps = NULL;
    /* Entries still owed belong to a server that is gone or closing. */
    sl_expect_clear(&ps->replies, unref_cb, c);
    sl_buf_give(&w->bufs, &ps->sin);
    if (w->ps_nfree >= PS_FREE_MAX || ps->stage.cap > STAGE_KEEP || ps->msg.cap > STAGE_KEEP) {
        ps_free(ps);
        return;
    }
    ps->stage.len = ps->stage.off = ps->msg.len = 0;
    ps->msg_need = ps->msg_max = ps->remain = ps->s_remain = 0;
    ps->assembling = ps->s_mid = ps->skip_to_sync = ps->discard = ps->held = false;
    ps->unnamed_drops = ps->portal_drops = false;
    ps->unnamed_batch = ps->dealloc_portal = false;
    ps->unnamed_owed = 0;
    ps->dealloc_name[0] = '\0';
    ps->next_free = w->ps_free;
    w->ps_free = ps;
    w->ps_nfree++;
}

void sl_ps_free_all(sl_loop_t *w) {
    while (w->ps_free) {
        sl_ps_t *ps = w->ps_free;
        w->ps_free = ps->next_free;
        ps_free(ps);
    }
    w->ps_nfree = 0;
}

/* ---- DEALLOCATE ALL, DISCARD ALL ----
 *
 * The analysis (relay.c) flags the client when a message it reads may run
 * one (c->drop_ahead); until the walker has walked every message analysed,
 * it looks at the text of each Query, unnamed Parse and Bind it walks. A
 * Query that runs one, and the Execute of a portal bound to a statement
 * that does, go to the server as barriers (see expect.h); the pump reads
 * their CommandCompletes. */

/* Whether sql runs DEALLOCATE ALL or DISCARD ALL (among its statements). */
static bool text_drops(sl_client_t *c, const char *sql) {
    const sl_config_t *cfg = c->w->cfg;
    sl_sql_info_t info;
    sl_sql_classify(c->w->sql_cache, sql, cfg->write_functions, cfg->stateless_functions, &info);
    return (info.state & (SL_STATE_DEALLOCATE_ALL | SL_STATE_DISCARD_ALL)) != 0;
}

/* A Bind of portal to a statement that drops, or not: only the last portal
 * bound to one is tracked (two such portals open at once is not worth the
 * memory; an untracked one still drops when its CommandComplete comes, but
 * names used behind it in the same pipeline are not held for it). */
static void note_portal(sl_ps_t *ps, const char *portal, bool drops) {
    size_t n = strlen(portal);
    if (drops && n < sizeof ps->drop_portal) {
        memcpy(ps->drop_portal, portal, n + 1);
        ps->portal_drops = true;
    } else if (ps->portal_drops && strcmp(portal, ps->drop_portal) == 0) {
        ps->portal_drops = false; /* rebound to another statement */
    }
}

/* The server ran DEALLOCATE ALL or DISCARD ALL for c: every statement
 * prepared on s, sluice's own included, is gone, and so are the client's
 * names. */
static void drop_statements(sl_client_t *c, sl_server_t *s) {
    sl_stmt_cache_clear(&s->stmts, &c->w->stmts);
    sl_stmt_names_clear(&c->stmt_names, &c->w->stmts);
}

static void unnamed_ended(sl_client_t *c, const sl_ex_t *e, enum sl_ex_outcome how);

/* A reply entry ended: keep the server's cache true to what it holds. */
static void end_cb(void *ctx, const sl_ex_t *e, enum sl_ex_outcome how) {
    sl_client_t *c = ctx;
    sl_server_t *s = c->server;
    unnamed_ended(c, e, how);
    if (e->how == SL_EX_REFUSE || holds_name(e)) {
        unref_cb(ctx, e, how);
        return;
    }
    if (e->undo) name_undo_end(c, e->undo, how);
    sl_stmt_t *st = e->data;
    if (how == SL_EX_SKIPPED && e->kind == SL_EX_QUERY && c->a->pending > 0)
        c->a->pending--; /* skipped after an error: no ReadyForQuery will come for it */
    if (st && e->kind == SL_EX_PARSE && how == SL_EX_DONE) st->valid = true;
    if (st && s && how != SL_EX_DONE) {
        if (e->kind == SL_EX_PARSE) {
            /* It failed or was skipped: the server does not have it. */
            sl_stmt_cache_remove(&s->stmts, &c->w->stmts, st);
        } else if (e->kind == SL_EX_CLOSE) {
            /* An eviction that was skipped: the statement is still there. */
            if (sl_stmt_cache_add(&s->stmts, st) < 0)
                sl_log_warn(s->tag, "out of memory tracking prepared statements");
        }
    }
    if (st) sl_stmt_unref(&c->w->stmts, st);
}

/* ---- client -> server ---- */

static bool owe(sl_client_t *c, enum sl_ex_kind kind, enum sl_ex_how how, sl_stmt_t *st) {
    if (sl_expect_push(&c->ps->replies, kind, how, st) < 0) {
        if (st) sl_stmt_unref(&c->w->stmts, st);
        sl_session_fail(c, "53200", "out of memory");
        return false;
    }
    return true;
}

static bool oom(sl_client_t *c) {
    sl_session_fail(c, "53200", "out of memory");
    return false;
}

/* ---- the unnamed statement ----
 *
 * A server keeps its unnamed statement until the next Parse of it (or a
 * Query), also across transactions and DISCARD ALL: the client that gets
 * the server next must not Bind or Describe what the last one parsed. So
 * a client may use the unnamed statement only when it parsed it itself:
 * in the same batch (if that Parse fails or is skipped, so is the use: no
 * wait), or earlier, when its Parse was the last to complete on this
 * server (a driver that parses in one transaction and binds in the next
 * gets its statement when it gets the same server). Otherwise sluice
 * answers as PostgreSQL does when there is none. Its unnamed portal needs no such
 * care: portals end with the transaction, and a server changes hands only
 * between transactions. */

/* A client's Parse of the unnamed statement, sent: the server's will be
 * the client's if it completes. An entry (PARSE, RELAY) without data is
 * one (see unnamed_ended). */
static bool owe_unnamed_parse(sl_client_t *c) {
    if (!owe(c, SL_EX_PARSE, SL_EX_RELAY, NULL)) return false;
    c->ps->unnamed_batch = true;
    c->ps->unnamed_owed++;
    c->ps->dealloc_name[0] = '\0'; /* it replaces a DEALLOCATE sluice held */
    return true;
}

/* The reply to such a Parse came (or will not): parsed, the unnamed
 * statement is the client's; failed, the server dropped the one it had
 * (PostgreSQL drops it before parsing); skipped, it holds what it held. */
static void unnamed_ended(sl_client_t *c, const sl_ex_t *e, enum sl_ex_outcome how) {
    sl_ps_t *ps = c->ps;
    sl_stmt_cache_t *sc = c->server ? &c->server->stmts : NULL;
    if (!ps || e->kind != SL_EX_PARSE || e->how != SL_EX_RELAY || e->data) return;
    if (ps->unnamed_owed > 0) ps->unnamed_owed--;
    if (!sc || how == SL_EX_SKIPPED) return;
    sc->unnamed_owner = how == SL_EX_DONE ? c->id : 0;
    sc->unnamed_loop = c->w;
}

/* Whether the unnamed statement on s is the one c parsed last. */
static bool unnamed_mine(const sl_client_t *c, const sl_server_t *s) {
    return s->stmts.unnamed_owner == c->id && s->stmts.unnamed_loop == c->w;
}

/* Whether the message at p (len bytes, avail of them in `in`) is a Bind or
 * Describe of the unnamed statement. True when the bytes that tell are not
 * in yet. */
static bool unnamed_use(const uint8_t *p, uint32_t len, uint32_t avail) {
    uint32_t have = avail < len ? avail : len;
    if (p[0] == 'D') return have < 7 || (p[5] == 'S' && p[6] == '\0');
    if (p[0] != 'B') return false;
    const uint8_t *z = memchr(p + 5, '\0', have - 5); /* the end of the portal's name */
    return !z || z + 1 >= p + have || z[1] == '\0';
}

/* Whether the walker must wait before such a use: the client's Parse of
 * it came in an earlier batch and its reply is still owed. */
static bool unnamed_unsettled(const sl_ps_t *ps) {
    return !ps->unnamed_batch && ps->unnamed_owed > 0;
}

/* Whether a walker that waits may go on (see walk). */
static bool hold_over(const sl_ps_t *ps) {
    return !sl_expect_change_unsettled(&ps->replies) && !unnamed_unsettled(ps);
}

/* Prepares st on s under sluice's name: first closes least recently used
 * statements to stay within max_prepared_statements, then sends the Parse.
 * `how` says whose reply the ParseComplete is. */
static bool inject_parse(sl_client_t *c, sl_server_t *s, sl_stmt_t *st, enum sl_ex_how how) {
    sl_ps_t *ps = c->ps;
    char name[32];
    sl_stmt_t *v;
    while ((v = sl_stmt_cache_victim(&s->stmts, (uint32_t)c->w->cfg->max_prepared_statements))) {
        int n = sl_stmt_name(v, name, sizeof name);
        if (!put_msg(&ps->stage, 'C', "S", 1, name, (uint32_t)n + 1, NULL, 0)) return oom(c);
        c->w->stats.stmt_evicted++;
        sl_stmt_ref(v);
        sl_stmt_cache_remove(&s->stmts, &c->w->stmts, v);
        if (!owe(c, SL_EX_CLOSE, SL_EX_SWALLOW, v)) return false;
        sl_expect_mark_change(&ps->replies, NULL); /* skipped: v is still there */
    }
    int n = sl_stmt_name(st, name, sizeof name);
    if (sl_stmt_cache_add(&s->stmts, st) < 0 ||
        !put_msg(&ps->stage, 'P', name, (uint32_t)n + 1, st->body, st->len, NULL, 0))
        return oom(c);
    sl_stmt_ref(st);
    count_server_parse(c);
    if (!owe(c, SL_EX_PARSE, how, st)) return false;
    sl_expect_mark_change(&ps->replies, NULL); /* failed or skipped: st is not there */
    return true;
}

static bool malformed(sl_client_t *c, const char *what) {
    sl_session_fail(c, "08P01", "malformed %s message", what);
    return false;
}

static bool refuse_msg(sl_client_t *c, enum sl_ex_kind kind, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define refuse_parse(c, ...) refuse_msg(c, SL_EX_PARSE, __VA_ARGS__)
static bool names_fit(const sl_client_t *c, const char *name, uint32_t len, const char **which);
static bool refuse_over_bound(sl_client_t *c, const char *name, const char *which);

static bool use_deallocate(sl_client_t *c, const uint8_t *m, enum sl_ex_kind kind,
                           bool unnamed_portal);

/* Parse: body = name, query, parameter types. */
static bool walk_parse(sl_client_t *c, sl_server_t *s, const uint8_t *m, uint32_t len) {
    sl_ps_t *ps = c->ps;
    const uint8_t *body = m + 5, *end = m + len;
    const uint8_t *z = memchr(body, '\0', (size_t)(end - body));
    if (!z) return malformed(c, "Parse");
    const uint8_t *rest = z + 1;
    if (z == body) { /* the unnamed statement passes through */
        count_server_parse(c);
        ps->unnamed_drops = c->drop_ahead && memchr(rest, '\0', (size_t)(end - rest)) &&
                            text_drops(c, (const char *)rest);
        return bytes_put(&ps->stage, m, len) ? owe_unnamed_parse(c) : oom(c);
    }
    const char *which;
    if (!names_fit(c, (const char *)body, (uint32_t)(end - rest), &which))
        return refuse_over_bound(c, (const char *)body, which);
    sl_stmt_t *st = sl_stmt_intern(&c->w->stmts, rest, (uint32_t)(end - rest));
    name_undo_t *u = st ? name_undo_new(c, (const char *)body) : NULL;
    /* PostgreSQL refuses to redefine a name; sluice rebinds it. */
    int rc =
        u ? sl_stmt_names_set(&c->stmt_names, &c->w->stmts, (const char *)body, st) : SL_ENOMEM;
    bool there = rc == SL_OK && sl_stmt_cache_use(&s->stmts, st);
    if (there) c->w->stats.parse_answered++;
    bool ok = rc < 0  ? oom(c)
              : there ? owe(c, SL_EX_PARSE, SL_EX_ANSWER, NULL) /* answered by sluice */
                      : inject_parse(c, s, st, SL_EX_RELAY);
    /* The binding holds once the Parse is answered in its turn. */
    if (ok)
        sl_expect_mark_change(&ps->replies, u);
    else if (u)
        name_undo_free(c, u);
    if (st) sl_stmt_unref(&c->w->stmts, st);
    return ok;
}

/* Bind, Describe: `prefix` bytes of the message before the statement name,
 * then the name; the rest of the message follows unchanged. The entry owed
 * holds the client's name entry: an error about the statement then names
 * it as the client did (see rename_reply). */
static bool walk_named_use(sl_client_t *c, sl_server_t *s, const uint8_t *m, uint32_t have,
                           uint32_t total, uint32_t prefix, enum sl_ex_kind kind) {
    sl_ps_t *ps = c->ps;
    const char *cname = (const char *)m + prefix;
    uint32_t cname_len = (uint32_t)strlen(cname);
    sl_stmt_name_t *ne = *cname ? sl_stmt_names_entry(&c->stmt_names, cname) : NULL;
    bool unnamed_portal = kind == SL_EX_BIND && m[5] == '\0';
    if (unnamed_portal) ps->dealloc_portal = false; /* rebound */
    if (!*cname && ps->dealloc_name[0]) return use_deallocate(c, m, kind, unnamed_portal);
    if (!*cname && !ps->unnamed_batch && !unnamed_mine(c, s)) {
        ps->discard = true; /* a Bind's parameters still to come */
        return refuse_msg(c, kind, "26000", "unnamed prepared statement does not exist");
    }
    /* A name in sluice's namespace the client never prepared would reach
     * the statement sluice prepared under it for every client. */
    if (!ne && !strncmp(cname, SL_STMT_PREFIX, strlen(SL_STMT_PREFIX))) {
        ps->discard = true;
        return refuse_msg(c, kind, "26000", "prepared statement \"%.*s\" does not exist",
                          (int)cname_len, cname);
    }
    if (kind == SL_EX_BIND) {
        bool drops = !*cname ? ps->unnamed_drops
                             : ne && c->drop_ahead &&
                                   text_drops(c, (const char *)sl_stmt_name_target(ne)->body);
        note_portal(ps, (const char *)m + 5, drops);
    }
    /* Unnamed, or a name the client never prepared: unchanged (PostgreSQL
     * then reports the missing statement in the client's own words). */
    if (!ne) return bytes_put(&ps->stage, m, have) ? owe(c, kind, SL_EX_RELAY, NULL) : oom(c);
    sl_stmt_t *st = sl_stmt_name_target(ne);
    if (!sl_stmt_cache_use(&s->stmts, st) && !inject_parse(c, s, st, SL_EX_SWALLOW)) return false;
    if (kind == SL_EX_BIND) sl_stmt_cache_bound(&s->stmts, st, prefix > 6);
    char name[32];
    uint32_t n = (uint32_t)sl_stmt_name(st, name, sizeof name) + 1;
    uint32_t after = prefix + cname_len + 1;
    uint8_t hdr[5] = {m[0]};
    sl_put_be32(hdr + 1, total - 1 - cname_len - 1 + n);
    if (!bytes_put(&ps->stage, hdr, 5) || !bytes_put(&ps->stage, m + 5, prefix - 5) ||
        !bytes_put(&ps->stage, name, n) || !bytes_put(&ps->stage, m + after, have - after))
        return oom(c);
    if (sl_expect_push(&ps->replies, kind, SL_EX_RELAY, ne) < 0) return oom(c);
    sl_stmt_name_ref(ne);
    return true;
}

/* A Close or DEALLOCATE of the client's statement `name`, answered by
 * sluice in its turn (kind: the entry owed). The name is forgotten now, for
 * the requests behind it, and back if an error skips the request. */
static bool forget_name(sl_client_t *c, const char *name, enum sl_ex_kind kind) {
    name_undo_t *u = NULL;
    if (sl_stmt_names_get(&c->stmt_names, name)) {
        if (!(u = name_undo_new(c, name))) return oom(c);
        (void)sl_stmt_names_remove(&c->stmt_names, &c->w->stmts, name);
    }
    if (!owe(c, kind, SL_EX_ANSWER, NULL)) {
        if (u) name_undo_free(c, u);
        return false;
    }
    if (u) sl_expect_mark_change(&c->ps->replies, u);
    return true;
}

/* ---- DEALLOCATE sent as an unnamed statement ----
 *
 * Parse("", "DEALLOCATE b"), Bind, Execute (what a driver sends for a
 * statement with parameters, or any statement in the extended protocol)
 * of a statement the client prepared at protocol level: the server knows
 * b under sluice's name, so sluice plays the statement itself: it answers
 * the Parse, a Bind of it to the unnamed portal, a Describe of either,
 * and at each Execute of that portal forgets b, as PostgreSQL drops it
 * then (and says b does not exist when it is gone). */

/* A Parse the analysis marked (DEALLOCATE of one name): played by sluice
 * when the statement is unnamed and the name is one of the client's; a
 * named statement of it is refused (its Execute could come in any later
 * transaction); anything else goes to the server as the Parse it is. */
static bool walk_deallocate_parse(sl_client_t *c, sl_server_t *s, uint8_t *m, uint32_t len) {
    sl_ps_t *ps = c->ps;
    m[0] = 'P';
    const uint8_t *z = memchr(m + 5, '\0', len - 5);
    char name[SL_STMT_NAME_MAX + 2];
    if (!z || !sl_ps_deallocate_name((const char *)z + 1, name, sizeof name) ||
        !sl_stmt_names_get(&c->stmt_names, name))
        return walk_parse(c, s, m, len);
    if (m[5] != '\0')
        return refuse_parse(c, "0A000",
                            "a DEALLOCATE of protocol-level prepared statement \"%s\" cannot be "
                            "prepared under a name through sluice: send it as a simple query or "
                            "as the unnamed statement, or close the statement (Close message)",
                            name);
    if (!owe(c, SL_EX_PARSE, SL_EX_ANSWER, NULL)) return false;
    memcpy(ps->dealloc_name, name, sizeof name);
    ps->dealloc_portal = false;
    return true;
}

/* A Bind or Describe of the unnamed statement while it is a DEALLOCATE
 * sluice plays. A named portal for it is refused (see above). */
static bool use_deallocate(sl_client_t *c, const uint8_t *m, enum sl_ex_kind kind,
                           bool unnamed_portal) {
    sl_ps_t *ps = c->ps;
    if (kind == SL_EX_BIND && !unnamed_portal) {
        ps->discard = true;
        return refuse_msg(c, kind, "0A000",
                          "a DEALLOCATE of protocol-level prepared statement \"%s\" cannot be "
                          "bound to named portal \"%.64s\" through sluice: bind it to the "
                          "unnamed portal",
                          ps->dealloc_name, (const char *)m + 5);
    }
    if (kind == SL_EX_BIND) {
        ps->discard = true; /* its parameter formats and values go nowhere */
        ps->dealloc_portal = true;
    }
    return owe(c, kind, SL_EX_ANSWER, NULL);
}

/* An Execute of the unnamed portal while it is such a DEALLOCATE: the
 * client's name is forgotten now (back if an error skips the Execute), or
 * PostgreSQL's error when it is gone already. */
static bool execute_deallocate(sl_client_t *c) {
    sl_ps_t *ps = c->ps;
    if (!sl_stmt_names_get(&c->stmt_names, ps->dealloc_name))
        return refuse_msg(c, SL_EX_EXECUTE, "26000", "prepared statement \"%s\" does not exist",
                          ps->dealloc_name);
    return forget_name(c, ps->dealloc_name, SL_EX_EXECUTE);
}

/* Close: a portal, or the unnamed statement, passes; a named statement is
 * forgotten for this client and answered by sluice, the server keeps it. */
static bool walk_close(sl_client_t *c, const uint8_t *m, uint32_t len) {
    sl_ps_t *ps = c->ps;
    if (m[5] == 'S' && m[6] != '\0') return forget_name(c, (const char *)m + 6, SL_EX_CLOSE);
    return bytes_put(&ps->stage, m, len) ? owe(c, SL_EX_CLOSE, SL_EX_RELAY, NULL) : oom(c);
}

/* A Parse (Bind, Describe: kind) sluice refuses: answered with an
 * ErrorResponse of SQLSTATE code in its place among the replies, and the
 * rest of the pipeline is skipped up to its Sync, as PostgreSQL does after
 * an error. The entry's data is the code (5 characters) followed by the
 * message. */
static bool refuse_msg(sl_client_t *c, enum sl_ex_kind kind, const char *code, const char *fmt,
                       ...) {
    char text[640];
    memcpy(text, code, 5);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text + 5, sizeof text - 5, fmt, ap);
    va_end(ap);
    char *data = strdup(text);
    if (!data) return oom(c);
    c->ps->skip_to_sync = true;
    if (sl_expect_push(&c->ps->replies, kind, SL_EX_REFUSE, data) < 0) {
        free(data);
        return oom(c);
    }
    return true;
}

/* A Parse refused under pin_session_state = error, or for naming one of
 * sluice's own statements in SQL (marked so by the analysis). */
static bool walk_refused(sl_client_t *c, const uint8_t *m, uint32_t len) {
    const uint8_t *z = memchr(m + 5, '\0', len - 5);
    const char *sql = z ? (const char *)z + 1 : "";
    sl_sql_info_t info; /* the analysis' answer, from the cache */
    sl_sql_classify(c->w->sql_cache, sql, c->w->cfg->write_functions,
                    c->w->cfg->stateless_functions, &info);
    if (info.names_pooler_statement) return refuse_parse(c, "42501", "%s", SL_PS_POOLER_NAMES);
    char msg[512];
    sl_relay_pin_refusal(c, sql, msg, sizeof msg);
    return refuse_parse(c, "0A000", "%s", msg);
}

/* Whether c may name one more statement (or rebind name) with a body of len
 * bytes: its registry is bounded by max_client_prepared_statements and
 * max_client_prepared_bytes. *which: the key it would cross. */
static bool names_fit(const sl_client_t *c, const char *name, uint32_t len, const char **which) {
    const sl_config_t *cfg = c->w->cfg;
    return sl_stmt_names_fit(&c->stmt_names, name, len,
                             (uint32_t)cfg->max_client_prepared_statements,
                             (uint64_t)cfg->max_client_prepared_bytes, which);
}

/* A named Parse past the client's bound: refused with 53400 (a
 * configuration limit), its statements so far unchanged. */
static bool refuse_over_bound(sl_client_t *c, const char *name, const char *which) {
    const sl_config_t *cfg = c->w->cfg;
    return refuse_parse(
        c, "53400",
        "prepared statement \"%.64s\" refused: this connection already holds %u named "
        "statements with %llu bytes of text, and %s = %d; close (DEALLOCATE) statements it no "
        "longer uses, or raise %s",
        name, sl_stmt_names_count(&c->stmt_names), (unsigned long long)c->stmt_names.bytes, which,
        strcmp(which, "max_client_prepared_statements") == 0 ? cfg->max_client_prepared_statements
                                                             : cfg->max_client_prepared_bytes,
        which);
}

bool sl_ps_deallocate_name(const char *sql, char *buf, size_t cap) {
    const char *p = sql;
    while (isspace((unsigned char)*p)) p++;
    /* one letter first: this looks at every Query and Parse */
    if ((*p | 0x20) != 'd' || strncasecmp(p, "deallocate", 10) != 0 ||
        !isspace((unsigned char)p[10]))
        return false;
    p += 10;
    while (isspace((unsigned char)*p)) p++;
    if (strncasecmp(p, "prepare", 7) == 0 && isspace((unsigned char)p[7])) {
        p += 7;
        while (isspace((unsigned char)*p)) p++;
    }
    size_t n = 0;
    /* PostgreSQL's lexer cuts an identifier to 63 bytes at a character
     * boundary (UTF-8 assumed); the rest is read and dropped. */
    if (cap < 2) return false;
    size_t keep = cap - 2 < SL_STMT_NAME_MAX ? cap - 2 : SL_STMT_NAME_MAX; /* +1: the first cut */
    if (*p == '"') {
        for (p++; *p && !(*p == '"' && p[1] != '"'); p++) {
            if (*p == '"') p++; /* "" is one quote */
            if (n <= keep) buf[n] = *p;
            n++;
        }
        if (*p++ != '"') return false;
    } else {
        for (; isalnum((unsigned char)*p) || *p == '_' || *p == '$'; p++) {
            if (n <= keep) buf[n] = (char)tolower((unsigned char)*p);
            n++;
        }
    }
    if (n > keep) {
        n = keep;
        while (n > 0 && ((unsigned char)buf[n] & 0xC0) == 0x80)
            n--; /* buf[n]: the first cut */
    }
    buf[n] = '\0';
    while (isspace((unsigned char)*p)) p++;
    if (*p == ';') p++;
    while (isspace((unsigned char)*p)) p++;
    return n > 0 && *p == '\0' && strcmp(buf, "all") != 0;
}

/* SQL DEALLOCATE of a protocol-level statement: forgotten for this client
 * and answered by sluice (CommandComplete, ReadyForQuery) in its place.
 * The analysis marked it when the client named the statement; a Close or
 * DEALLOCATE walked since may have closed it: then it goes to the server
 * as the Query it is, for PostgreSQL's own error. */
static bool walk_deallocate(sl_client_t *c, const uint8_t *m, uint32_t len) {
    char name[128];
    if (sl_ps_deallocate_name((const char *)m + 5, name, sizeof name) &&
        sl_stmt_names_get(&c->stmt_names, name))
        return forget_name(c, name, SL_EX_QUERY);
    uint8_t q = 'Q';
    return bytes_put(&c->ps->stage, &q, 1) && bytes_put(&c->ps->stage, m + 1, len - 1)
               ? owe(c, SL_EX_QUERY, SL_EX_RELAY, NULL)
               : oom(c);
}

/* CommandComplete "DEALLOCATE" and ReadyForQuery with status, both or
 * neither (32 bytes hold them). */
static bool put_deallocated(sl_client_t *c, char status) {
    if (sl_buf_space(&c->a->out) < 32) sl_buf_compact(&c->a->out);
    if (sl_buf_space(&c->a->out) < 32 ||
        sl_proto_put_command_complete(&c->a->out, "DEALLOCATE") < 0 ||
        sl_proto_put_ready(&c->a->out, status) < 0)
        return false;
    if (c->a->pending > 0) c->a->pending--;
    return true;
}

/* The most of a message of type t and len bytes the walker holds: the
 * whole of one up to max_rewrite_size, else its head up to that size. The
 * analysis' own types come from a Query held whole in the client's buffer. */
static uint32_t hold_max(const sl_client_t *c, uint8_t t, uint32_t len) {
    uint32_t cap = (uint32_t)c->w->cfg->max_rewrite_size;
    if (t == SL_MSG_REFUSED || t == SL_MSG_DEALLOCATE || t == SL_MSG_DEALLOCATE_PARSE) return len;
    return len < cap ? len : cap;
}

/* The end of the nul-th NUL-terminated string from offset 5 in m, or 0. */
static uint32_t names_end(const uint8_t *m, uint32_t have, int nul) {
    for (uint32_t i = 5; i < have; i++)
        if (m[i] == '\0' && --nul == 0) return i + 1;
    return 0;
}

/* How many bytes of an assembling message are enough to rewrite it: for a
 * Bind, up to the end of the statement name (its parameters may be large
 * and stream through); for a Parse of the unnamed statement, or one longer
 * than max_rewrite_size, up to the end of its name (the rest streams
 * through, or is dropped with the refused Parse); for the others the whole
 * message. 0: not yet. */
static uint32_t enough(const sl_client_t *c) {
    const sl_ps_t *ps = c->ps;
    const uint8_t *m = ps->msg.p;
    uint32_t have = ps->msg.len;
    if (m[0] == 'B') {
        uint32_t k = names_end(m, have, 2);
        if (k) return k;
        return have == ps->msg_need ? UINT32_MAX : 0; /* complete without two names: malformed */
    }
    if (m[0] == 'P' && (have > 5 && (m[5] == '\0' || ps->msg_need > ps->msg_max)))
        return names_end(m, have, 1);
    return have == ps->msg_need ? have : 0;
}

/* The head of a Parse, up to the end of its name, whose rest has not been
 * read: the unnamed statement streams through unchanged; a named one too
 * long to hold is refused (to rename it for other servers, sluice would
 * have to keep all its text) and the rest of it is dropped. */
static bool walk_parse_head(sl_client_t *c, const uint8_t *m, uint32_t have) {
    sl_ps_t *ps = c->ps;
    if (m[5] == '\0') {
        count_server_parse(c);
        ps->unnamed_drops = false; /* too long to be looked at */
        return bytes_put(&ps->stage, m, have) ? owe_unnamed_parse(c) : oom(c);
    }
    ps->discard = true;
    return refuse_parse(
        c, "54000",
        "prepared statement \"%.64s\": its Parse message of %llu bytes exceeds max_rewrite_size "
        "(%d bytes), the longest sluice keeps to prepare a statement on any server: send it as "
        "an unnamed statement, or raise max_rewrite_size",
        (const char *)m + 5, (unsigned long long)ps->msg_need, c->w->cfg->max_rewrite_size);
}

static bool walk_assembled(sl_client_t *c, sl_server_t *s) {
    sl_ps_t *ps = c->ps;
    const uint8_t *m = ps->msg.p;
    uint32_t have = ps->msg.len, need = ps->msg_need;
    ps->assembling = false;
    ps->remain = need - have; /* a Bind's parameters still to come */
    ps->msg.len = 0;          /* m stays valid: nothing is appended to msg below */
    switch (m[0]) {
    case 'P':
        return have < need ? walk_parse_head(c, m, have) : walk_parse(c, s, m, have);
    case SL_MSG_REFUSED: return walk_refused(c, m, have);
    case SL_MSG_DEALLOCATE: return walk_deallocate(c, m, have);
    case SL_MSG_DEALLOCATE_PARSE: return walk_deallocate_parse(c, s, ps->msg.p, have);
    case 'B': {
        uint32_t portal = (uint32_t)strlen((const char *)m + 5);
        return walk_named_use(c, s, m, have, need, 5 + portal + 1, SL_EX_BIND);
    }
    case 'D':
        if (need < 7 || m[need - 1] != '\0') return malformed(c, "Describe");
        if (m[5] == 'S') return walk_named_use(c, s, m, have, need, 6, SL_EX_DESC_STMT);
        if (m[6] == '\0' && ps->dealloc_portal)
            return owe(c, SL_EX_DESC_PORTAL, SL_EX_ANSWER, NULL);
        return bytes_put(&ps->stage, m, have) ? owe(c, SL_EX_DESC_PORTAL, SL_EX_RELAY, NULL)
                                              : oom(c);
    default:
        if (need < 7 || m[need - 1] != '\0') return malformed(c, "Close");
        return walk_close(c, m, have);
    }
}

/* A name that does not end within max_rewrite_size bytes: no name sluice
 * knows is that long (each came in a Parse it held whole). */
static bool too_long(sl_client_t *c, uint8_t t) {
    sl_session_fail(c, "08P01",
                    "%c message with a statement or portal name of more than max_rewrite_size "
                    "(%d bytes)",
                    t, c->w->cfg->max_rewrite_size);
    return false;
}

/* Whether the message at p (len bytes, avail of them in `in`) reads or
 * changes the client's names or the server's statements: a named Parse,
 * Bind, Describe or Close, a DEALLOCATE. True when the bytes that tell are
 * not in yet. */
static bool uses_names(const uint8_t *p, uint32_t len, uint32_t avail) {
    uint32_t have = avail < len ? avail : len;
    switch (p[0]) {
    case SL_MSG_DEALLOCATE:
    case SL_MSG_DEALLOCATE_PARSE: return true;
    case 'P': return have < 6 || p[5] != '\0';
    case 'D':
    case 'C': return have < 7 || (p[5] == 'S' && p[6] != '\0');
    case 'B': {
        const uint8_t *z = memchr(p + 5, '\0', have - 5); /* the end of the portal's name */
        return !z || z + 1 >= p + have || z[1] != '\0';
    }
    default: return false;
    }
}

/* An error came while a message was being assembled, before the Sync of
 * its batch: PostgreSQL would skip it, so it is dropped, its rest too. */
static void skip_assembled(sl_client_t *c) {
    sl_ps_t *ps = c->ps;
    /* A Query: no ReadyForQuery will come for it. */
    if (ps->msg.p[0] == SL_MSG_DEALLOCATE && c->a->pending > 0) c->a->pending--;
    ps->assembling = false;
    ps->remain = ps->msg_need - ps->msg.len;
    ps->msg.len = 0;
    ps->discard = true;
}

/* How walk_barrier() went. */
enum barrier { B_NO, B_SENT, B_WAIT, B_CLOSED };

/* A Query or Execute at p (len bytes, avail of them in `in`) that runs
 * DEALLOCATE ALL or DISCARD ALL: sent whole as a barrier (B_SENT), so that
 * the messages behind it that use names wait for its reply. An Execute
 * gets a Flush behind it: the server would hold its CommandComplete until
 * the Sync, which may be behind a message that waits. B_NO: another
 * message, for the caller to walk; B_WAIT: the rest of an Execute that may
 * be one is needed first. */
static enum barrier walk_barrier(sl_client_t *c, const uint8_t *p, uint32_t len, uint32_t avail) {
    sl_ps_t *ps = c->ps;
    uint8_t t = p[0];
    bool drops;
    if (t == 'Q') {
        drops = c->drop_ahead && avail >= len && p[len - 1] == '\0' &&
                text_drops(c, (const char *)p + 5);
    } else {
        /* Portal name, then the row count: a longer one is not the portal. */
        if (!ps->portal_drops || len > 5 + sizeof ps->drop_portal + 4) return B_NO;
        if (avail < len) return B_WAIT;
        drops = memchr(p + 5, '\0', len - 5) && strcmp((const char *)p + 5, ps->drop_portal) == 0;
    }
    if (!drops) return B_NO;
    if (!bytes_put(&ps->stage, p, len) ||
        (t == 'E' && !put_msg(&ps->stage, 'H', NULL, 0, NULL, 0, NULL, 0))) {
        oom(c);
        return B_CLOSED;
    }
    sl_buf_consume(&c->a->in, len);
    if (!owe(c, t == 'Q' ? SL_EX_QUERY : SL_EX_EXECUTE, SL_EX_RELAY, NULL)) return B_CLOSED;
    sl_expect_mark_barrier(&ps->replies);
    return B_SENT;
}

/* Moves client bytes from `in` to the stage, message by message, recording
 * the replies each one is owed. Stops at a held Query, a partial header, a
 * full stage, too many replies owed, or a message that uses names while a
 * change of an earlier batch is unsettled (ps->held). False if c was
 * closed. */
static bool walk(sl_client_t *c, sl_server_t *s) {
    sl_ps_t *ps = c->ps;
    while (ps->stage.len < c->a->in.cap && ps->replies.n < MAX_OWED) {
        uint32_t limit = sl_client_fwd_limit(c);
        uint32_t avail = limit - c->a->in.head;
        const uint8_t *p = sl_buf_rptr(&c->a->in);
        if (ps->remain > 0 || ps->assembling) {
            sl_bytes_t *to = ps->assembling ? &ps->msg : &ps->stage;
            uint32_t want = ps->assembling ? ps->msg_max - ps->msg.len : ps->remain;
            uint32_t n = want < avail ? want : avail;
            if (n == 0) return true;
            if (!ps->discard && !bytes_put(to, p, n)) return oom(c);
            sl_buf_consume(&c->a->in, n);
            if (!ps->assembling) {
                ps->remain -= n;
                continue;
            }
            uint32_t k = enough(c);
            if (k == UINT32_MAX) return malformed(c, "Bind");
            if (k == 0 && ps->msg.len == ps->msg_max) return too_long(c, ps->msg.p[0]);
            if (k == 0) continue;
            if (sl_expect_skipping(&ps->replies)) {
                skip_assembled(c);
                continue;
            }
            /* Bytes beyond the rewritten part go through unchanged. */
            if (!walk_assembled(c, s)) return false;
            continue;
        }
        if (avail < 5) {
            /* Every message analysed is walked (none lies behind the
             * routing barrier): the next to drop statements flags anew. */
            if (!c->barrier) c->drop_ahead = false;
            return true;
        }
        uint8_t t = p[0];
        uint32_t len = sl_be32(p + 1) + 1;
        /* After a refusal, or an error the server sent before this batch's
         * Sync was walked: dropped up to the Sync, as PostgreSQL skips it. */
        ps->discard = (ps->skip_to_sync || sl_expect_skipping(&ps->replies)) && t != 'S';
        if (ps->discard) {
            if ((t == 'Q' || t == 'F' || t == SL_MSG_DEALLOCATE) && c->a->pending > 0)
                c->a->pending--;
            ps->remain = len;
            continue;
        }
        ps->skip_to_sync = false;
        /* A change of an earlier batch may yet be skipped by an error:
         * walked now, this message would see names PostgreSQL may not
         * have. It waits for the change to settle (see sl_ps_pump). */
        if ((sl_expect_change_unsettled(&ps->replies) &&
             (uses_names(p, len, avail) || (t == 'E' && ps->dealloc_portal))) ||
            (unnamed_unsettled(ps) && unnamed_use(p, len, avail))) {
            ps->held = true;
            return true;
        }
        ps->held = false;
        if (t == 'E' && ps->dealloc_portal) {
            if (avail < 6) return true;
            if (p[5] == '\0') { /* the unnamed portal */
                ps->discard = true;
                ps->remain = len;
                if (!execute_deallocate(c)) return false;
                continue;
            }
        }
        if (t == 'Q') ps->dealloc_name[0] = '\0', ps->dealloc_portal = false;
        if (t == 'P' || t == 'B' || t == 'D' || t == 'C' || t == SL_MSG_REFUSED ||
            t == SL_MSG_DEALLOCATE || t == SL_MSG_DEALLOCATE_PARSE) {
            /* A Describe or Close is a type byte and a name. */
            if ((t == 'D' || t == 'C') && len > (uint32_t)c->w->cfg->max_rewrite_size)
                return too_long(c, t);
            ps->assembling = true;
            ps->msg_need = len;
            ps->msg_max = hold_max(c, t, len);
            ps->msg.len = 0;
            continue;
        }
        enum barrier b = t == 'Q' || t == 'E' ? walk_barrier(c, p, len, avail) : B_NO;
        if (b == B_CLOSED) return false;
        if (b == B_WAIT) return true;
        if (b == B_SENT) continue;
        enum sl_ex_kind kind = t == 'E' ? SL_EX_EXECUTE : t == 'S' ? SL_EX_SYNC : SL_EX_QUERY;
        if (t == 'S') ps->unnamed_batch = false; /* a later batch relies on the reply */
        if ((t == 'E' || t == 'S' || t == 'Q' || t == 'F') && !owe(c, kind, SL_EX_RELAY, NULL))
            return false;
        ps->remain = len;
    }
    return true;
}

/* The reply PostgreSQL gives a request of this kind that succeeds, for one
 * sluice answers itself: a Parse or Close of a named statement, or the
 * Bind, Describe and Execute of a DEALLOCATE sent as an unnamed statement
 * (it has no parameters and no result columns). All or nothing of it;
 * false when c->a->out has no room. */
static bool put_answer(sl_client_t *c, uint8_t kind) {
    static const uint8_t describe[] = {'t', 0, 0, 0, 6, 0, 0, 'n', 0, 0, 0, 4};
    switch (kind) {
    case SL_EX_PARSE:
        return sl_proto_put_empty(&c->a->out, '1') == SL_OK;
    case SL_EX_BIND:
        return sl_proto_put_empty(&c->a->out, '2') == SL_OK;
    case SL_EX_DESC_PORTAL:
        return sl_proto_put_empty(&c->a->out, 'n') == SL_OK;
    case SL_EX_DESC_STMT:
        return sl_buf_append(&c->a->out, describe, sizeof describe) == SL_OK;
    case SL_EX_EXECUTE:
        return sl_proto_put_command_complete(&c->a->out, "DEALLOCATE") == SL_OK;
    default:
        return sl_proto_put_empty(&c->a->out, '3') == SL_OK;
    }
}

/* Writes sluice's own answers that are due, where the reply stream is
 * between messages. */
static void answer_due(sl_client_t *c) {
    sl_ps_t *ps = c->ps;
    for (const sl_ex_t *e; !ps->s_mid && (e = sl_expect_answer_due(&ps->replies));) {
        if (e->how == SL_EX_REFUSE) {
            const char *text = e->data; /* SQLSTATE, then the message */
            char code[6];
            memcpy(code, text, 5);
            code[5] = '\0';
            if (sl_proto_put_error(&c->a->out, "ERROR", code, text + 5) < 0) return;
            sl_session_count_error(c, code);
        } else if (e->kind == SL_EX_QUERY) {
            if (!put_deallocated(c, c->server ? c->server->tx_status : 'I')) return;
        } else if (!put_answer(c, e->kind)) {
            return;
        }
        c->tx_replied = true;
        sl_expect_answered(&ps->replies, end_cb, c);
    }
}

bool sl_ps_flush_c2s(sl_client_t *c) {
    sl_server_t *s = c->server;
    if (!s || s->state != SL_SV_ACTIVE) return true;
    sl_ps_t *ps = c->ps;
    for (;;) {
        while (ps->stage.off < ps->stage.len) {
            ssize_t n =
                sl_conn_write(&s->sock, ps->stage.p + ps->stage.off, ps->stage.len - ps->stage.off);
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
            ps->stage.off += (uint32_t)n;
        }
        ps->stage.len = ps->stage.off = 0;
        bytes_shrink(&ps->stage);
        if (!ps->assembling) bytes_shrink(&ps->msg);
        if (!walk(c, s)) return false;
        if (ps->stage.len > 0) continue;
        /* Answering may settle the change the walker waits for. */
        answer_due(c);
        if (!ps->held || !hold_over(ps)) break;
    }
    c->c2s_blocked = false;
    /* A request sluice answered alone may have ended the transaction. */
    return sl_relay_settle(c);
}

/* ---- a client without a server ---- */

/* A Parse of a statement no server accepted yet is answered without a
 * server too when nothing up to its Sync needs one (PQprepare sends Parse,
 * Sync: a driver that prepares synchronously while its other connections
 * hold every server in open transactions would otherwise wait forever).
 * sluice's parser (libpg_query, PostgreSQL's own grammar) checks the text
 * first: a syntax error is answered at the Parse as PostgreSQL words it;
 * any other error (an unknown table, say) needs the catalog and comes from
 * the server when the statement is prepared there, before the first Bind
 * or Describe that uses it: as that message's error (see inject_parse). A
 * batch that needs a server anyway goes to one whole, with PostgreSQL's
 * errors where PostgreSQL gives them. */

/* The bytes from p up to and including the Sync that ends the batch when
 * every message to it is complete and one sluice answers alone (a named
 * Parse, a Close of a statement, a Flush); 0 otherwise. */
static uint32_t batch_local(const uint8_t *p, uint32_t avail) {
    uint32_t off = 0;
    while (avail - off >= 5) {
        const uint8_t *m = p + off;
        uint32_t len = sl_be32(m + 1) + 1;
        if (len < 5 || len > avail - off) return 0;
        bool named = len > 6 && m[5] != '\0';
        if (m[0] == 'S') return off + len;
        if (!(m[0] == 'H' || (m[0] == 'P' && named) || (m[0] == 'C' && m[5] == 'S' && len > 7)))
            return 0;
        off += len;
    }
    return 0;
}

/* A client's current value of a setting: what it asked for (or SET and
 * sluice read back), else what the pool's servers reported at login. NULL
 * when not known: SET since and not read back yet, or a cold pool. */
static const char *client_setting(const sl_client_t *c, const char *name) {
    if (c->capture_all || sl_params_get(&c->a->dirty, name)) return NULL;
    const char *v = sl_params_get(&c->params, name);
    return v ? v : sl_params_get(&c->pool->defaults, name);
}

/* Strict UTF-8 as PostgreSQL checks it: shortest forms, no surrogates,
 * nothing above U+10FFFF. */
static bool utf8_valid(const unsigned char *s) {
    while (*s) {
        unsigned char b = *s;
        int n = b < 0x80             ? 0
                : (b & 0xE0) == 0xC0 ? 1
                : (b & 0xF0) == 0xE0 ? 2
                : (b & 0xF8) == 0xF0 ? 3
                                     : -1;
        if (n < 0) return false;
        uint32_t cp = n == 0 ? b : b & (0x3F >> n);
        for (int i = 1; i <= n; i++) {
            if ((s[i] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (s[i] & 0x3F);
        }
        static const uint32_t least[] = {0, 0x80, 0x800, 0x10000};
        if (cp < least[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
        s += n + 1;
    }
    return true;
}

/* Whether sluice's parser (PostgreSQL's grammar under its default
 * settings, reading UTF-8) reads sql as c's server will: a backslash in a
 * literal means another thing under standard_conforming_strings = off, and
 * an error position counts characters of the client's encoding. */
static bool reads_like_server(const sl_client_t *c, const char *sql) {
    bool ascii = true, backslash = false;
    for (const unsigned char *q = (const unsigned char *)sql; *q; q++) {
        if (*q >= 0x80) ascii = false;
        if (*q == '\\') backslash = true;
    }
    const char *scs = client_setting(c, "standard_conforming_strings");
    if (backslash && !(scs && strcasecmp(scs, "on") == 0)) return false;
    if (ascii) return true; /* the same bytes and characters in every client encoding */
    const char *enc = client_setting(c, "client_encoding");
    return enc && (strcasecmp(enc, "UTF8") == 0 || strcasecmp(enc, "UTF-8") == 0) &&
           utf8_valid((const unsigned char *)sql);
}

/* Appends one field of an ErrorResponse. */
static bool put_field(sl_bytes_t *b, char code, const char *value) {
    return bytes_put(b, &code, 1) && bytes_put(b, value, (uint32_t)strlen(value) + 1);
}

/* Answers a batch whose Parse has a syntax error as PostgreSQL does: its
 * ErrorResponse with the same fields (SQLSTATE 42601, message, position,
 * source file and routine in PostgreSQL's scanner; not the line, which is
 * the line of libpg_query's copy of the scanner, not the server's), the
 * rest of the batch skipped, ReadyForQuery. `batch`: the bytes of `in`
 * through the Sync. False, with nothing written, when out has no room. */
static bool answer_syntax_error(sl_client_t *c, const PgQueryError *e, uint32_t batch) {
    sl_bytes_t b = {0};
    char pos[16];
    snprintf(pos, sizeof pos, "%d", e->cursorpos);
    uint8_t hdr[5] = {'E'};
    bool ok = bytes_put(&b, hdr, 5) && put_field(&b, 'S', "ERROR") && put_field(&b, 'V', "ERROR") &&
              put_field(&b, 'C', "42601") && put_field(&b, 'M', e->message) &&
              (e->cursorpos <= 0 || put_field(&b, 'P', pos)) &&
              (!e->filename || put_field(&b, 'F', e->filename)) &&
              put_field(&b, 'R', e->funcname) && bytes_put(&b, "", 1);
    if (ok) sl_put_be32(b.p + 1, b.len - 1);
    ok = ok && put_msg(&b, 'Z', "I", 1, NULL, 0, NULL, 0) &&
         sl_buf_append(&c->a->out, b.p, b.len) == SL_OK;
    bytes_free(&b);
    if (!ok) return false;
    sl_buf_consume(&c->a->in, batch);
    if (c->a->pending > 0) c->a->pending--;
    return true;
}

/* What sluice's parser says of a new statement's text. */
enum verdict {
    V_VALID,    /* one statement (or none), as far as grammar goes */
    V_ANSWERED, /* a syntax error, answered (the batch is consumed) */
    V_SERVER,   /* for a server to say: other errors, several statements */
};

static enum verdict check_text(sl_client_t *c, const char *sql, uint32_t batch) {
    PgQuerySplitResult r = pg_query_split_with_parser(sql);
    enum verdict v = V_VALID;
    if (r.error) {
        /* Only the scanner's and grammar's own syntax errors are certain
         * to be 42601 (the parser does not give other SQLSTATEs). */
        bool syntax = r.error->funcname && strcmp(r.error->funcname, "scanner_yyerror") == 0 &&
                      r.error->message;
        v = syntax && answer_syntax_error(c, r.error, batch) ? V_ANSWERED : V_SERVER;
    } else if (r.n_stmts > 1) {
        v = V_SERVER; /* PostgreSQL refuses several commands in one Parse */
    }
    pg_query_free_split_result(r);
    return v;
}

/* A Parse at p (len bytes, avail in `in` from p on) for a client without
 * a server. 1: answered and consumed; 0: for a server; -1: c was closed. */
static int answer_parse(sl_client_t *c, const uint8_t *p, uint32_t len, uint32_t avail) {
    const uint8_t *z = memchr(p + 5, '\0', len - 5);
    if (!z || z == p + 5) return 0; /* the unnamed statement passes through */
    const uint8_t *body = z + 1;
    uint32_t blen = (uint32_t)(p + len - body);
    const char *sql = (const char *)body;
    if (!memchr(body, '\0', blen)) return 0; /* malformed: see relay's analysis */
    const char *which; /* past the client's bound: the walker refuses it in order */
    if (!names_fit(c, (const char *)p + 5, blen, &which)) return 0;
    sl_stmt_t *st = sl_stmt_find(&c->w->stmts, body, blen);
    if (!st || !st->valid) {
        uint32_t batch = batch_local(p, avail);
        if (!batch || !reads_like_server(c, sql)) return 0;
        if (!st || !st->parsed) {
            enum verdict v = check_text(c, sql, batch);
            if (v != V_VALID) return v == V_ANSWERED ? 1 : 0;
        }
    }
    if (!(st = sl_stmt_intern(&c->w->stmts, body, blen))) {
        oom(c);
        return -1;
    }
    st->parsed = true;
    int rc = sl_proto_put_empty(&c->a->out, '1') < 0 ? 0 : 1;
    if (rc && sl_stmt_names_set(&c->stmt_names, &c->w->stmts, (const char *)p + 5, st) < 0) rc = -1;
    sl_stmt_unref(&c->w->stmts, st);
    if (rc < 0) oom(c);
    if (rc <= 0) return rc;
    c->w->stats.parse_answered++;
    sl_buf_consume(&c->a->in, len);
    return 1;
}

bool sl_ps_answer_unlinked(sl_client_t *c) {
    if (!sl_ps_wanted(c) || !c->a->out.data) return true;
    for (;;) {
        uint32_t limit = sl_client_fwd_limit(c);
        uint32_t avail = limit - c->a->in.head;
        const uint8_t *p = sl_buf_rptr(&c->a->in);
        if (avail < 5) return true;
        uint8_t t = p[0];
        uint32_t len = sl_be32(p + 1) + 1;
        if (len > avail || len < 5) return true;
        const uint8_t *end = p + len;
        if (t == 'P') {
            int rc = answer_parse(c, p, len, avail);
            if (rc <= 0) return rc == 0;
            continue; /* consumed */
        } else if (t == 'C' && len >= 8 && p[5] == 'S' && p[6] && !end[-1]) {
            if (sl_proto_put_empty(&c->a->out, '3') < 0) return true;
            (void)sl_stmt_names_remove(&c->stmt_names, &c->w->stmts, (const char *)p + 6);
        } else if (t == SL_MSG_DEALLOCATE) {
            char name[128];
            /* Closed since the analysis marked it: PostgreSQL's error, from
             * a server (see walk_deallocate). */
            if (!sl_ps_deallocate_name((const char *)p + 5, name, sizeof name) ||
                !sl_stmt_names_get(&c->stmt_names, name))
                return true;
            if (!put_deallocated(c, 'I')) return true;
            (void)sl_stmt_names_remove(&c->stmt_names, &c->w->stmts, name);
        } else if (t == 'S') {
            if (sl_proto_put_ready(&c->a->out, 'I') < 0) return true;
            if (c->a->pending > 0) c->a->pending--;
        } else if (t != 'H') {
            return true;
        }
        sl_buf_consume(&c->a->in, len);
    }
}

/* ---- server -> client ---- */

/* Errors about a statement sluice renamed: PostgreSQL words some with the
 * statement's name (a Bind with the wrong number of parameters, a
 * statement the server no longer has), which is sluice's ("sluice_17")
 * on the server. Such an ErrorResponse or NoticeResponse reaches the
 * client with the name the client used instead, as PostgreSQL would have
 * worded it direct. */

/* The client's name entry a reply of type t starting now is about: an
 * ErrorResponse or NoticeResponse while the first reply owed is a Bind's
 * or Describe's of a statement the client named; else NULL. */
static const sl_stmt_name_t *reply_subject(const sl_ps_t *ps, uint8_t t) {
    if (t != 'E' && t != 'N') return NULL;
    const sl_ex_t *e = sl_expect_head(&ps->replies);
    return e && holds_name(e) ? e->data : NULL;
}

/* Whether a reply of type t starting now is a CommandComplete of a
 * barrier (see walk_barrier): its tag tells whether the statements were
 * dropped. */
static bool drop_reply(const sl_ps_t *ps, uint8_t t) {
    const sl_ex_t *e = sl_expect_head(&ps->replies);
    return t == 'C' && e && e->barrier;
}

/* Whether the reply at the head of the pump's input is held until it is
 * whole (see rename_reply, read_drop): the pump then waits for the server. */
static bool awaits_whole(const sl_ps_t *ps) {
    const sl_buf_t *in = &ps->sin;
    if (sl_buf_len(in) < 5) return false;
    const uint8_t *p = sl_buf_rptr(in);
    uint32_t total = sl_be32(p + 1) + 1;
    return (reply_subject(ps, p[0]) || drop_reply(ps, p[0])) && total <= in->cap &&
           sl_buf_len(in) < total;
}

/* The CommandComplete of a barrier at the head of the pump's input: once
 * whole, the statements are forgotten if its tag says they were dropped
 * (a statement of the Query that failed before, or in an aborted
 * transaction, has no CommandComplete). False: more bytes are needed. */
static bool read_drop(sl_client_t *c, sl_server_t *s) {
    sl_buf_t *in = &c->ps->sin;
    const uint8_t *p = sl_buf_rptr(in);
    uint32_t total = sl_be32(p + 1) + 1;
    if (total > in->cap) return true; /* no tag is that long */
    if (sl_buf_len(in) < total) {
        if (sl_buf_space(in) < total - sl_buf_len(in)) sl_buf_compact(in);
        return false;
    }
    static const char *const tags[] = {"DEALLOCATE ALL", "DISCARD ALL"};
    for (size_t i = 0; i < sizeof tags / sizeof *tags; i++)
        if (total - 5 == strlen(tags[i]) + 1 && memcmp(p + 5, tags[i], total - 5) == 0)
            drop_statements(c, s);
    return true;
}

/* Fields a person reads: message, detail, hint, context. */
static bool readable_field(uint8_t f) { return f == 'M' || f == 'D' || f == 'H' || f == 'W'; }

/* Appends n bytes to dst at *o; counts them only when dst is NULL. */
static void emit(uint8_t *dst, uint32_t *o, const void *p, size_t n) {
    if (dst) memcpy(dst + *o, p, n);
    *o += (uint32_t)n;
}

/* The fields of an ErrorResponse or NoticeResponse body (n bytes) with each
 * `from` in a readable field replaced by the client's name in double
 * quotes (PostgreSQL quotes statement names so, without escaping): written
 * to dst, or only measured when dst is NULL. Returns the bytes. A body
 * without its terminators is copied as it is from there on. */
static uint32_t rename_fields(const uint8_t *body, uint32_t n, const char *from, const char *cname,
                              uint8_t *dst) {
    size_t flen = strlen(from), clen = strlen(cname);
    uint32_t i = 0, o = 0;
    while (i < n && body[i]) {
        const uint8_t *v = body + i + 1;
        const uint8_t *z = i + 1 < n ? memchr(v, '\0', n - i - 1) : NULL;
        if (!z) break;
        emit(dst, &o, body + i, 1);
        for (const uint8_t *q = v; q < z;) {
            const uint8_t *hit =
                readable_field(body[i]) ? memmem(q, (size_t)(z - q), from, flen) : NULL;
            size_t plain = hit ? (size_t)(hit - q) : (size_t)(z - q);
            emit(dst, &o, q, plain);
            q += plain;
            if (!hit) break;
            emit(dst, &o, "\"", 1);
            emit(dst, &o, cname, clen);
            emit(dst, &o, "\"", 1);
            q += flen;
        }
        emit(dst, &o, "", 1);
        i = (uint32_t)(z - body) + 1;
    }
    emit(dst, &o, body + i, n - i);
    return o;
}

/* Whether the fields of an ErrorResponse (body, n bytes) have SQLSTATE
 * code. */
static bool error_code_is(const uint8_t *body, uint32_t n, const char *code) {
    for (uint32_t i = 0; i < n && body[i];) {
        const uint8_t *z = memchr(body + i + 1, '\0', n - i - 1);
        if (!z) return false;
        if (body[i] == 'C') return strcmp((const char *)body + i + 1, code) == 0;
        i = (uint32_t)(z - body) + 1;
    }
    return false;
}

/* A server answered a Bind or Describe of st, which sluice believed
 * prepared there, that it has no such statement (26000): someone dropped it
 * behind sluice's back (SQL in a DO block, a function). It is forgotten on
 * that server, so that its next use prepares it again: the client sees the
 * error once, not until the server is reset. */
static void heal(sl_client_t *c, sl_server_t *s, sl_stmt_t *st, const uint8_t *body, uint32_t n) {
    if (!error_code_is(body, n, "26000") || !sl_stmt_cache_use(&s->stmts, st)) return;
    char name[32];
    sl_stmt_name(st, name, sizeof name);
    sl_log_warn(s->tag,
                "server lost prepared statement %s (dropped by SQL sluice could not see, such as "
                "a DO block or a function): it is prepared again at its next use",
                name);
    sl_stmt_cache_remove(&s->stmts, &c->w->stmts, st);
}

enum rename { R_PASS, R_WAIT, R_DONE, R_CLOSED };

/* The ErrorResponse or NoticeResponse at the head of the pump's input,
 * about the statement the client named ne: held until whole, then written
 * to c->a->out with the client's name for the statement in place of
 * sluice's. R_PASS: it streams through unchanged (it does not name the
 * statement, or it is longer than a buffer holds); R_WAIT: more bytes from
 * the server, or room in c->a->out, are needed first. */
static enum rename rename_reply(sl_client_t *c, sl_server_t *s, const sl_stmt_name_t *ne) {
    sl_ps_t *ps = c->ps;
    sl_buf_t *in = &ps->sin;
    const uint8_t *p = sl_buf_rptr(in);
    uint32_t total = sl_be32(p + 1) + 1;
    if (total > in->cap) return R_PASS;
    if (sl_buf_len(in) < total) {
        if (sl_buf_space(in) < total - sl_buf_len(in)) sl_buf_compact(in);
        return R_WAIT;
    }
    char from[40] = "\"";
    int k = sl_stmt_name(sl_stmt_name_target(ne), from + 1, sizeof from - 2);
    memcpy(from + 1 + k, "\"", 2);
    const uint8_t *body = p + 5;
    if (!memmem(body, total - 5, from, (size_t)k + 2)) return R_PASS;
    if (p[0] == 'E') heal(c, s, sl_stmt_name_target(ne), body, total - 5);
    const char *cname = sl_stmt_name_client(ne);
    uint32_t len = 5 + rename_fields(body, total - 5, from, cname, NULL);
    if (len > c->a->out.cap) return R_PASS;
    if (sl_buf_space(&c->a->out) < len) sl_buf_compact(&c->a->out);
    if (sl_buf_space(&c->a->out) < len) return R_WAIT; /* the client reads first */
    uint8_t *dst = sl_buf_wptr(&c->a->out);
    dst[0] = p[0];
    sl_put_be32(dst + 1, len - 1);
    (void)rename_fields(body, total - 5, from, cname, dst + 5);
    c->a->out.tail += len;
    uint8_t type = p[0];
    sl_buf_consume(in, total);
    /* Only now: ending the Bind's entry may free ne. */
    (void)sl_expect_reply(&ps->replies, type, end_cb, c);
    return sl_relay_scan_server(c, s, dst, len) ? R_DONE : R_CLOSED;
}

bool sl_ps_pump(sl_client_t *c, sl_server_t *s) {
    sl_ps_t *ps = c->ps;
    sl_buf_t *in = &ps->sin;
    while (c->server == s) {
        if (!ps->s_mid) {
            answer_due(c);
            if (sl_expect_answer_due(&ps->replies))
                break; /* no room in out for them yet */
            if (sl_buf_len(in) < 5) break;
            const uint8_t *p = sl_buf_rptr(in);
            uint32_t len = sl_be32(p + 1);
            if (len < 4 || !sl_proto_backend_type_ok(p[0])) {
                sl_session_fail(c, "08P01", "server sent a malformed message; reconnect and retry");
                return false;
            }
            if (drop_reply(ps, p[0]) && !read_drop(c, s)) break;
            const sl_stmt_name_t *ne = reply_subject(ps, p[0]);
            enum rename r = ne ? rename_reply(c, s, ne) : R_PASS;
            if (r == R_CLOSED) return false;
            if (r == R_WAIT) break;
            if (r == R_DONE) continue;
            if (!sl_expect_reply(&ps->replies, p[0], end_cb, c) && len == 4) {
                sl_buf_consume(in, 5); /* the reply to sluice's own Parse or Close */
                continue;
            }
            ps->s_mid = true;
            ps->s_remain = len + 1;
        }
        if (sl_buf_space(&c->a->out) == 0) sl_buf_compact(&c->a->out);
        uint32_t n = ps->s_remain;
        if (n > sl_buf_len(in)) n = sl_buf_len(in);
        if (n > sl_buf_space(&c->a->out)) n = sl_buf_space(&c->a->out);
        if (n == 0) break;
        uint8_t *dst = sl_buf_wptr(&c->a->out);
        memcpy(dst, sl_buf_rptr(in), n);
        c->a->out.tail += n;
        sl_buf_consume(in, n);
        ps->s_remain -= n;
        if (ps->s_remain == 0) ps->s_mid = false;
        if (!sl_relay_scan_server(c, s, dst, n)) return false;
    }
    if (sl_buf_space(in) == 0) sl_buf_compact(in);
    /* The replies that came may have settled what the walker waits for. */
    if (c->ps == ps && c->server == s && ps->held && hold_over(ps)) return sl_ps_flush_c2s(c);
    return true;
}
