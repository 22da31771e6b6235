/* The console's commands that change things: RELOAD, SET, KILL_CLIENT and
 * SHUTDOWN. Each answers with CommandComplete, or an ErrorResponse that
 * says what to do. The dispatcher has already checked they come from an
 * admin user. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin.h"
#include "sluice/log.h"
#include "sluice/session.h"

int sl_admin_reload(sl_admin_ctx_t *ctx, const char *args) {
    if (*args) {
        sl_res_error(ctx->res, "42601", "RELOAD takes no argument");
        return -1;
    }
    char err[1024], warn[512];
    if (sl_workers_reload(ctx->w, err, sizeof err, warn, sizeof warn) != SL_OK) {
        sl_res_error(ctx->res, "F0000",
                     "reload failed, the running configuration stays: %s; fix the file and "
                     "RELOAD again",
                     err);
        return -1;
    }
    if (*warn) sl_res_notice(ctx->res, "%s", warn);
    sl_res_complete(ctx->res, "RELOAD");
    return 0;
}

/* "key = value", "key=value", "key TO value"; the value may be quoted
 * with single quotes ('' inside is one quote). */
static int parse_set(const char *args, char *key, size_t kcap, char *val, size_t vcap) {
    size_t n = 0;
    while (args[n] && (isalnum((unsigned char)args[n]) || args[n] == '_'))
        n++;
    if (n == 0 || n >= kcap) return -1;
    memcpy(key, args, n);
    key[n] = '\0';
    const char *p = args + n;
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '=')
        p++;
    else if (!strncasecmp(p, "to", 2) && isspace((unsigned char)p[2]))
        p += 2;
    else
        return -1;
    while (isspace((unsigned char)*p))
        p++;
    size_t w = 0;
    if (*p == '\'') {
        for (p++; *p; p++) {
            if (*p == '\'' && p[1] == '\'')
                p++;
            else if (*p == '\'')
                break;
            if (w + 1 >= vcap) return -1;
            val[w++] = *p;
        }
        if (*p != '\'') return -1;
        p++;
    } else {
        while (*p && !isspace((unsigned char)*p)) {
            if (w + 1 >= vcap) return -1;
            val[w++] = *p++;
        }
    }
    val[w] = '\0';
    while (isspace((unsigned char)*p))
        p++;
    return *p ? -1 : 0;
}

int sl_admin_set(sl_admin_ctx_t *ctx, const char *args) {
    char key[64], val[1024];
    if (parse_set(args, key, sizeof key, val, sizeof val) < 0) {
        sl_res_error(ctx->res, "42601",
                     "SET expects: SET key = value (quote a value with "
                     "spaces in single quotes)");
        return -1;
    }
    int i = sl_config_key_index(key);
    if (i < 0) {
        sl_res_error(ctx->res, "42704",
                     "unknown setting \"%s\": SHOW CONFIG lists the settings and which can "
                     "change",
                     key);
        return -1;
    }
    enum sl_key_change how = sl_config_key_change(i);
    if (how == SL_KEY_RESTART) {
        sl_res_error(ctx->res, "55P02",
                     "%s cannot change while sluice runs: set it in the configuration file and "
                     "restart sluice",
                     sl_config_key(i));
        return -1;
    }
    if (how == SL_KEY_RELOAD) {
        sl_res_error(ctx->res, "55P02",
                     "%s needs files read again: set it in the configuration file and RELOAD",
                     sl_config_key(i));
        return -1;
    }
    /* Room for a whole error line of the config parser (up to 900 bytes
     * with a long value quoted): a smaller buffer drops the line and says
     * only that one error was not shown. */
    char err[1024];
    if (sl_config_set_key(ctx->w->core.cfg, i, val, err, sizeof err) != SL_OK) {
        sl_res_error(ctx->res, "22023", "%s", err);
        return -1;
    }
    sl_worker_settings_changed(ctx->w);
    /* The other workers take the same value (it passed the same check). */
    sl_worker_t *o;
    SL_ADMIN_EACH_WORKER(ctx, o) {
        if (o == ctx->w || sl_config_set_key(o->core.cfg, i, val, err, sizeof err) != SL_OK)
            continue;
        sl_worker_settings_changed(o);
    }
    sl_res_complete(ctx->res, "SET");
    return 0;
}

int sl_admin_kill_client(sl_admin_ctx_t *ctx, const char *args) {
    char *end;
    errno = 0;
    unsigned long id = strtoul(args, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    if (!*args || errno || *end || id == 0 || id > UINT32_MAX) {
        sl_res_error(ctx->res, "42601",
                     "KILL_CLIENT expects a client id (the id column of "
                     "SHOW CLIENTS)");
        return -1;
    }
    /* Ids are unique in the process: at most one worker has it. */
    int r = 0;
    sl_worker_t *o;
    SL_ADMIN_EACH_WORKER(ctx, o) {
        if (r == 0)
            r = sl_session_kill(&o->core, (uint32_t)id, ctx->who->client_id, "57P01",
                                "connection closed by an administrator (KILL_CLIENT)");
    }
    if (r < 0) {
        sl_res_error(ctx->res, "42601",
                     "KILL_CLIENT %lu is this console connection: "
                     "disconnect instead",
                     id);
        return -1;
    }
    if (r == 0) {
        sl_res_error(ctx->res, "42704", "no client with id %lu (SHOW CLIENTS lists them)", id);
        return -1;
    }
    sl_log_info(NULL, "admin console: C-%u user=%s closed C-%lu", ctx->who->client_id,
                ctx->who->user, id);
    sl_res_complete(ctx->res, "KILL_CLIENT");
    return 0;
}

int sl_admin_shutdown(sl_admin_ctx_t *ctx, const char *args) {
    enum sl_shutdown_mode mode;
    if (!*args)
        mode = SL_SHUTDOWN_FAST;
    else if (!strcasecmp(args, "WAIT_FOR_SERVERS"))
        mode = SL_SHUTDOWN_WAIT_FOR_SERVERS;
    else if (!strcasecmp(args, "WAIT_FOR_CLIENTS"))
        mode = SL_SHUTDOWN_WAIT_FOR_CLIENTS;
    else {
        sl_res_error(ctx->res, "42601",
                     "SHUTDOWN takes nothing, WAIT_FOR_SERVERS or WAIT_FOR_CLIENTS");
        return -1;
    }
    sl_workers_shutdown(ctx->w, mode);
    sl_res_complete(ctx->res, "SHUTDOWN");
    return 0;
}
