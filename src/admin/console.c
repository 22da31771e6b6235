/* The console's dispatcher: splits a Query into statements, finds each
 * one's command in the table below, checks who may run it, and runs it.
 * Statements of one Query run in order, each with its own result (as
 * PostgreSQL does for a multi-statement Query); the first that fails ends
 * the Query, and the ones after it do not run. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin.h"
#include "sluice/admin.h"
#include "sluice/log.h"
#include "sluice/workers.h"

/* Alphabetical within each group; another file's commands are added with
 * a line here (see admin.h). */
const sl_admin_cmd_t sl_admin_cmds[] = {
    {"SHOW", false, sl_admin_show,
     "SHOW HELP|POOLS|STATS|CLIENTS|SERVERS|... (SHOW HELP lists them)"},
    {"KILL_CLIENT", true, sl_admin_kill_client,
     "KILL_CLIENT id: close one client (SHOW CLIENTS' id)"},
    /* process controls (control_cmds.c) */
    {"DISABLE", true, sl_admin_disable, "DISABLE db: refuse new clients of db until ENABLE"},
    {"ENABLE", true, sl_admin_enable, "ENABLE db: accept new clients of db again"},
    {"KILL", true, sl_admin_kill,
     "KILL [db]: close every client and server of db now; it stays paused until RESUME"},
    {"PAUSE", true, sl_admin_pause,
     "PAUSE [db]: close servers as they are released, clients wait; returns once paused"},
    {"RECONNECT", true, sl_admin_reconnect,
     "RECONNECT [db]: close each server when it is next released"},
    {"RESUME", true, sl_admin_resume, "RESUME [db]: undo PAUSE, KILL and SUSPEND"},
    {"SUSPEND", true, sl_admin_suspend,
     "SUSPEND: stop reading every client socket; returns once every buffer is flushed"},
    {"WAIT_CLOSE", true, sl_admin_wait_close,
     "WAIT_CLOSE [db]: return once servers closed by RECONNECT or RELOAD are gone"},
    {"RELOAD", true, sl_admin_reload, "RELOAD: read the configuration file again (as SIGHUP)"},
    {"SET", true, sl_admin_set,
     "SET key = value: change a reloadable setting of the running sluice"},
    {"SHUTDOWN", true, sl_admin_shutdown,
     "SHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]: stop sluice now, after each client's "
     "transaction, or once every client has left"},
    {NULL, false, NULL, NULL},
};

static const sl_admin_cmd_t *find_cmd(const char *verb, size_t n) {
    for (const sl_admin_cmd_t *c = sl_admin_cmds; c->verb; c++)
        if (strlen(c->verb) == n && strncasecmp(c->verb, verb, n) == 0) return c;
    return NULL;
}

static void unknown(sl_admin_ctx_t *ctx, const char *verb, size_t n) {
    char list[512] = "";
    for (const sl_admin_cmd_t *c = sl_admin_cmds; c->verb; c++) {
        if (c != sl_admin_cmds) strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, c->verb, sizeof list - strlen(list) - 1);
    }
    sl_res_error(ctx->res, "42601",
                 "unknown admin console command \"%.*s\": valid commands are %s (SHOW HELP "
                 "says more)",
                 (int)(n > 64 ? 64 : n), verb, list);
}

/* Runs one statement (text, NUL-terminated, trimmed); -1 if it failed. */
static int run_statement(sl_admin_ctx_t *ctx, char *text) {
    size_t n = 0;
    while (text[n] && (isalnum((unsigned char)text[n]) || text[n] == '_'))
        n++;
    const sl_admin_cmd_t *cmd = n ? find_cmd(text, n) : NULL;
    if (!cmd) {
        unknown(ctx, text, n ? n : strlen(text));
        return -1;
    }
    /* The check comes before anything of the command runs (PgBouncer's
     * CVE-2026-6667 was a command that ran for stats_users). */
    if (cmd->admin_only && !ctx->who->admin) {
        sl_res_error(ctx->res, "42501",
                     "permission denied: %s is for admin_users; user \"%s\" is in stats_users, "
                     "which may run SHOW only",
                     cmd->verb, ctx->who->user);
        sl_log_warn(NULL, "admin console: C-%u user=%s was refused %s (stats_users)",
                    ctx->who->client_id, ctx->who->user, cmd->verb);
        return -1;
    }
    char *args = text + n;
    while (isspace((unsigned char)*args))
        args++;
    /* Every command that changes something is on record, with its
     * arguments (no [sluice] setting is a secret); SHOW is not. */
    if (strcmp(cmd->verb, "SHOW") != 0)
        sl_log_info(NULL, "admin console: C-%u user=%s runs: %.200s", ctx->who->client_id,
                    ctx->who->user, text);
    return cmd->run(ctx, args);
}

/* Cuts the next statement off *sp at a ';' outside quotes; NULL at the end. */
static char *next_statement(char **sp) {
    char *s = *sp;
    if (!*s) return NULL;
    char *p = s, quote = 0;
    for (; *p; p++) {
        if (quote) {
            if (*p == quote) quote = 0;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (*p == ';') {
            break;
        }
    }
    if (*p) *p++ = '\0';
    *sp = p;
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* One Query's statements are built into one reply on the loop, before any
 * of it goes out: their number and the reply's size are bounded, so that
 * nobody (a stats user included) can stall the loop or swell sluice with
 * one Query of hundreds of SHOW CLIENTS. One SHOW of a large process still
 * fits (about 250 bytes per client). */
#define SL_CONSOLE_MAX_STATEMENTS 16
#define SL_CONSOLE_REPLY_MAX (64u << 20)

/* Runs the statements of one Query; the reply is in res. */
static int run_query(sl_admin_ctx_t *ctx, const char *sql) {
    sl_res_t *res = ctx->res;
    char *copy = strdup(sql);
    if (!copy) return -1;
    char *rest = copy, *stmt;
    int ran = 0;
    while ((stmt = next_statement(&rest))) {
        if (!*stmt) continue;
        if (ran == SL_CONSOLE_MAX_STATEMENTS) {
            sl_res_error(res, "54000",
                         "more than %d statements in one query to the admin console: send "
                         "them as several queries",
                         SL_CONSOLE_MAX_STATEMENTS);
            break;
        }
        if (res->len > SL_CONSOLE_REPLY_MAX) {
            sl_res_error(res, "54000",
                         "the admin console's reply to this query passed %u MiB: the "
                         "statements after it were not run; send one SHOW per query",
                         SL_CONSOLE_REPLY_MAX >> 20);
            break;
        }
        ran++;
        if (run_statement(ctx, stmt) < 0) break;
        if (ctx->held) {
            if (*rest)
                sl_res_notice(res, "the statements after a command that waits (PAUSE, "
                                   "SUSPEND, WAIT_CLOSE) in one query were not run: send "
                                   "them as a query of their own");
            break;
        }
    }
    free(copy);
    return ran;
}

/* Every worker is parked for the time of one Query (workers.h): its SHOWs
 * read, and its commands act on, every loop, as one consistent state. */
static uint8_t *console_query(sl_loop_t *l, const sl_console_who_t *who, const char *sql,
                              size_t *len) {
    sl_res_t res = {0};
    sl_admin_ctx_t ctx = {sl_container_of(l, sl_worker_t, core), who, &res, false};
    sl_workers_freeze(ctx.w);
    int ran = run_query(&ctx, sql);
    sl_workers_thaw(ctx.w);
    if (ran < 0) return NULL;
    if (ran == 0) { /* an empty query, as PostgreSQL answers it */
        uint8_t empty[5] = {'I', 0, 0, 0, 4};
        free(res.data);
        uint8_t *p = malloc(sizeof empty);
        if (p) memcpy(p, empty, sizeof empty);
        *len = sizeof empty;
        return p;
    }
    if (res.oom) {
        free(res.data);
        return NULL;
    }
    /* A held command (PAUSE) may have nothing to say yet: an empty block. */
    if (!res.data) res.data = malloc(1);
    *len = res.len;
    return res.data;
}

void sl_admin_attach(sl_worker_t *w) {
    w->core.console_query = console_query;
}
