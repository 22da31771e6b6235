/* The console's process controls, PgBouncer's: PAUSE, RESUME, SUSPEND,
 * RECONNECT, KILL, DISABLE, ENABLE and WAIT_CLOSE. What they do to pools and
 * servers is control.c's; KILL's clients are the session's. PAUSE, SUSPEND
 * and WAIT_CLOSE answer once done: the console client is held (its
 * ReadyForQuery waits) and a control wait sends the CommandComplete. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "sluice/control.h"
#include "sluice/log.h"
#include "sluice/pool.h"
#include "sluice/session.h"

/* A command that answers later. */
typedef struct pending {
    sl_control_wait_t wait; /* on the control's waits until done */
    sl_worker_t *w;         /* borrowed */
    uint32_t client_id;     /* the console connection to answer; it may have left */
    char tag[16];           /* CommandComplete tag: "PAUSE" */
} pending_t;

/* Takes the optional database name of args into buf: "" gives NULL. A
 * quoted name keeps its case, as in SQL. False (with an error in the
 * reply) when args is more than one name. */
static bool db_arg(sl_admin_ctx_t *ctx, const char *verb, const char *args, char *buf, size_t cap,
                   const char **db) {
    *db = NULL;
    if (!*args && (!strcmp(verb, "DISABLE") || !strcmp(verb, "ENABLE"))) {
        sl_res_error(ctx->res, "42601", "%s needs a database name: %s db", verb, verb);
        return false;
    }
    if (!*args) return true;
    size_t n = strlen(args);
    if (n >= 2 && args[0] == '"' && args[n - 1] == '"') args++, n -= 2;
    bool ok = n > 0 && n < cap;
    for (size_t i = 0; ok && i < n; i++)
        ok = !isspace((unsigned char)args[i]) && args[i] != '"' && args[i] != ';';
    if (!ok) {
        sl_res_error(ctx->res, "42601", "%s takes one database name (SHOW DATABASES lists them)",
                     verb);
        return false;
    }
    memcpy(buf, args, n);
    buf[n] = '\0';
    *db = buf;
    return true;
}

typedef int (*control_fn)(sl_loop_t *l, const char *db, char *err, size_t errlen);

/* Runs fn on every worker's loop. A database only an automatic pool
 * serves may be known on some loops only: the command holds if it held on
 * one; its error (the first) is the answer only when it held on none. */
static int on_every_loop(sl_admin_ctx_t *ctx, control_fn fn, const char *db, char *err,
                         size_t errlen) {
    int first = SL_OK, ok = 0;
    char one[256];
    sl_worker_t *o;
    SL_ADMIN_EACH_WORKER(ctx, o) {
        int rc = fn(&o->core, db, one, sizeof one);
        if (rc == SL_OK) {
            ok++;
        } else if (first == SL_OK) {
            first = rc;
            snprintf(err, errlen, "%s", one);
        }
    }
    return ok > 0 ? SL_OK : first;
}

/* WAIT_CLOSE's check: a database some loop knows. */
static int check_db_anywhere(sl_admin_ctx_t *ctx, const char *db, char *err, size_t errlen) {
    int rc = SL_ECONFIG;
    sl_worker_t *o;
    SL_ADMIN_EACH_WORKER(ctx, o) {
        if (rc != SL_OK) rc = sl_control_check_db(&o->core, db, err, errlen);
    }
    return rc;
}

static int done(sl_admin_ctx_t *ctx, const char *tag, int rc, const char *err) {
    if (rc != SL_OK) {
        sl_res_error(ctx->res, rc == SL_ENOMEM ? "53200" : "3D000", "%s: %s", tag, err);
        return -1;
    }
    sl_res_complete(ctx->res, tag);
    return 0;
}

static void pending_cb(sl_control_wait_t *wt, enum sl_control_end how) {
    pending_t *p = sl_container_of(wt, pending_t, wait);
    if (how != SL_CONTROL_DROPPED) {
        sl_res_t res = {0};
        if (how == SL_CONTROL_DONE)
            sl_res_complete(&res, p->tag);
        else
            sl_res_error(&res, "57014",
                         "%s canceled: a RESUME came before every server had closed; the "
                         "database is not paused",
                         p->tag);
        if (res.oom) {
            free(res.data);
            res.data = NULL;
            res.len = 0;
        }
        sl_log_info(NULL, "admin console: %s %s for C-%u", p->tag,
                    how == SL_CONTROL_DONE ? "done" : "canceled by RESUME", p->client_id);
        sl_console_finish(&p->w->core, p->client_id, res.data, res.len);
    } else {
        sl_log_info(NULL, "admin console: %s dropped: C-%u left (or sluice stops)", p->tag,
                    p->client_id);
    }
    free(p);
}

/* The console client that sent the command left: its wait ends. */
static bool console_gone(const sl_loop_t *l, const sl_control_wait_t *wt) {
    const pending_t *p = sl_container_of(wt, pending_t, wait);
    return !sl_console_is_held((sl_loop_t *)l, p->client_id);
}

/* Holds the console client until the condition of kind holds for db. */
static int answer_when(sl_admin_ctx_t *ctx, const char *tag, enum sl_control_wait_kind kind,
                       const char *db, bool (*test)(const sl_loop_t *l)) {
    pending_t *p = calloc(1, sizeof *p);
    if (!p || !sl_console_hold(&ctx->w->core, ctx->who->client_id)) {
        free(p);
        sl_res_complete(ctx->res, tag); /* answered at once rather than never */
        return 0;
    }
    p->w = ctx->w;
    p->client_id = ctx->who->client_id;
    snprintf(p->tag, sizeof p->tag, "%s", tag);
    p->wait.kind = kind;
    snprintf(p->wait.db, sizeof p->wait.db, "%s", db ? db : "");
    p->wait.test = test;
    p->wait.cb = pending_cb;
    p->wait.gone = console_gone;
    ctx->held = true;
    sl_control_wait(&ctx->w->core, &p->wait);
    return 0;
}

int sl_admin_pause(sl_admin_ctx_t *ctx, const char *args) {
    char name[128], err[256];
    const char *db;
    if (!db_arg(ctx, "PAUSE", args, name, sizeof name, &db)) return -1;
    int rc = on_every_loop(ctx, sl_control_pause, db, err, sizeof err);
    if (rc != SL_OK) return done(ctx, "PAUSE", rc, err);
    return answer_when(ctx, "PAUSE", SL_CONTROL_PAUSED, db, NULL);
}

int sl_admin_resume(sl_admin_ctx_t *ctx, const char *args) {
    char name[128], err[256];
    const char *db;
    if (!db_arg(ctx, "RESUME", args, name, sizeof name, &db)) return -1;
    sl_worker_t *o;
    if (!db) SL_ADMIN_EACH_WORKER(ctx, o) sl_worker_suspend(o, false);
    return done(ctx, "RESUME", on_every_loop(ctx, sl_control_resume, db, err, sizeof err), err);
}

/* SUSPEND is done once no loop has bytes left to write (checked from the
 * console's loop, which freezes the others to look). */
static bool flushed_everywhere(const sl_loop_t *l) {
    sl_worker_t *w = sl_container_of((sl_loop_t *)l, sl_worker_t, core);
    bool flushed = true;
    sl_workers_freeze(w);
    for (int i = 0; i < sl_workers_count(w) && flushed; i++) {
        sl_worker_t *o = sl_workers_at(w, i);
        if (o) flushed = sl_session_flushed(&o->core);
    }
    sl_workers_thaw(w);
    return flushed;
}

int sl_admin_suspend(sl_admin_ctx_t *ctx, const char *args) {
    if (*args) {
        sl_res_error(ctx->res, "42601", "SUSPEND takes no argument (it suspends every socket)");
        return -1;
    }
    sl_worker_t *o;
    SL_ADMIN_EACH_WORKER(ctx, o) sl_worker_suspend(o, true);
    return answer_when(ctx, "SUSPEND", SL_CONTROL_TEST, NULL, flushed_everywhere);
}

int sl_admin_reconnect(sl_admin_ctx_t *ctx, const char *args) {
    char name[128], err[256];
    const char *db;
    if (!db_arg(ctx, "RECONNECT", args, name, sizeof name, &db)) return -1;
    int rc = on_every_loop(ctx, sl_control_reconnect, db, err, sizeof err);
    if (rc != SL_OK) return done(ctx, "RECONNECT", rc, err);
    /* Servers between two workers are on no loop's list: marked once, here
     * (every other loop is frozen while the console runs). */
    sl_loop_t *l = &ctx->w->core;
    int moving = sl_pool_mark_moving(l, db), pending = moving;
    sl_worker_t *o;
    SL_ADMIN_EACH_WORKER(ctx, o) pending += sl_control_close_pending(&o->core, db);
    sl_log_info(NULL, "RECONNECT %s: %d server(s) close as they are released (%d between workers)",
                db ? db : "(all databases)", pending, moving);
    return done(ctx, "RECONNECT", SL_OK, NULL);
}

int sl_admin_kill(sl_admin_ctx_t *ctx, const char *args) {
    char name[128], err[256], msg[256];
    const char *db;
    if (!db_arg(ctx, "KILL", args, name, sizeof name, &db)) return -1;
    int rc = on_every_loop(ctx, sl_control_kill, db, err, sizeof err);
    if (rc != SL_OK) return done(ctx, "KILL", rc, err);
    /* A server between two workers is on no loop's list: marked, it lands
     * closed. The paused pool it lands in is not enough: a RESUME may come
     * first (KILL db; RESUME db), and it would serve on with its backend. */
    sl_pool_mark_moving(&ctx->w->core, db);
    snprintf(msg, sizeof msg,
             "database \"%s\" was killed by an administrator (KILL): connect again after RESUME",
             db ? db : "(all)");
    sl_worker_t *o;
    SL_ADMIN_EACH_WORKER(ctx, o) sl_session_close_db(&o->core, db, "57P01", msg);
    return done(ctx, "KILL", SL_OK, NULL);
}

int sl_admin_disable(sl_admin_ctx_t *ctx, const char *args) {
    char name[128], err[256];
    const char *db;
    if (!db_arg(ctx, "DISABLE", args, name, sizeof name, &db)) return -1;
    return done(ctx, "DISABLE", on_every_loop(ctx, sl_control_disable, db, err, sizeof err), err);
}

int sl_admin_enable(sl_admin_ctx_t *ctx, const char *args) {
    char name[128], err[256];
    const char *db;
    if (!db_arg(ctx, "ENABLE", args, name, sizeof name, &db)) return -1;
    return done(ctx, "ENABLE", on_every_loop(ctx, sl_control_enable, db, err, sizeof err), err);
}

int sl_admin_wait_close(sl_admin_ctx_t *ctx, const char *args) {
    char name[128], err[256];
    const char *db;
    if (!db_arg(ctx, "WAIT_CLOSE", args, name, sizeof name, &db)) return -1;
    /* A database name is checked like the others' (a typo must not wait
     * for nothing and return at once as if done). */
    if (db && check_db_anywhere(ctx, db, err, sizeof err) != SL_OK)
        return done(ctx, "WAIT_CLOSE", SL_ECONFIG, err);
    return answer_when(ctx, "WAIT_CLOSE", SL_CONTROL_CLOSED, db, NULL);
}
