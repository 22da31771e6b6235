/* The admin console's internal header (src/admin/): the reply writer
 * (result.c), the command table and its context (console.c), and the
 * commands (show.c, manage.c, and whoever adds more). The floors below
 * reach the console only through the loop's console_query hook, which
 * sl_admin_attach (include/sluice/admin.h) sets. */
#ifndef SLUICE_ADMIN_INTERNAL_H
#define SLUICE_ADMIN_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/loop.h"
#include "sluice/worker.h"
#include "sluice/workers.h"

/* ---- result.c: a reply, built whole in a growing block ---- */

/* Column types, as the PostgreSQL type OIDs clients see in RowDescription. */
enum sl_res_type {
    SL_RES_TEXT = 25,
    SL_RES_INT8 = 20,       /* integers (PgBouncer's 'i' and 'q' columns) */
    SL_RES_NUMERIC = 1700,  /* SHOW STATS counters, as PgBouncer 1.25 sends them */
    SL_RES_TIMESTAMP = 1114 /* connect_time, request_time: "YYYY-MM-DD HH:MM:SS" UTC */
};

typedef struct sl_res_col {
    const char *name;
    enum sl_res_type type;
} sl_res_col_t;

typedef struct sl_res {
    uint8_t *data;            /* owned: the reply so far */
    size_t len, cap;          /* bytes */
    bool oom;                 /* an allocation failed: the reply is dropped whole */
    size_t row_start;         /* offset of the DataRow being written */
    uint16_t row_cols;        /* columns written in it */
    uint16_t ncols;           /* columns of the result set in progress */
    const sl_res_col_t *cols; /* borrowed: its RowDescription */
    uint64_t nrows;           /* rows of the result set in progress */
} sl_res_t;

/* A RowDescription for ncols columns. */
void sl_res_begin(sl_res_t *r, const sl_res_col_t *cols, int ncols);
void sl_res_row(sl_res_t *r);
void sl_res_text(sl_res_t *r, const char *s); /* NULL: SQL NULL */
void sl_res_int(sl_res_t *r, int64_t v);
void sl_res_uint(sl_res_t *r, uint64_t v);
void sl_res_null(sl_res_t *r);
/* loop-clock milliseconds as a UTC timestamp (0: NULL) */
void sl_res_time(sl_res_t *r, int64_t loop_ms, const sl_loop_t *l);
/* Ends the row; checks it has as many columns as the RowDescription. */
void sl_res_row_end(sl_res_t *r);
/* CommandComplete with tag (e.g. "SHOW", "RELOAD"). */
void sl_res_complete(sl_res_t *r, const char *tag);
/* ErrorResponse (severity ERROR) with SQLSTATE code. */
void sl_res_error(sl_res_t *r, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* NoticeResponse (severity NOTICE). */
void sl_res_notice(sl_res_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- console.c: the dispatcher ---- */

typedef struct sl_admin_ctx {
    sl_worker_t *w;              /* borrowed: the worker whose state the command reads */
    const sl_console_who_t *who; /* borrowed: who sent it */
    sl_res_t *res;               /* the reply: a command appends its result or error */
    bool held;                   /* the command completes later (sl_console_hold): the
                                    statements after it in the Query do not run */
} sl_admin_ctx_t;

/* Runs body for o = each worker of ctx's process still running (ctx->w
 * among them): the console froze them all for the Query. */
#define SL_ADMIN_EACH_WORKER(ctx, o)                                                               \
    for (int o##_i = 0; o##_i < sl_workers_count((ctx)->w); o##_i++)                               \
        if (((o) = sl_workers_at((ctx)->w, o##_i)) != NULL)

/* One console command. The dispatcher matches verb case-insensitively as
 * the first word, refuses admin_only commands to stats_users with 42501
 * before run is called, and passes the rest of the statement (trimmed; ""
 * when none). run appends its result, or an error, to ctx->res and returns
 * 0, or -1 after an error. */
typedef struct sl_admin_cmd {
    const char *verb; /* upper case: "SHOW", "RELOAD", "KILL_CLIENT" */
    bool admin_only;  /* false: stats_users may run it too (SHOW) */
    int (*run)(sl_admin_ctx_t *ctx, const char *args);
    const char *usage; /* one line for SHOW HELP and the unknown-command error */
} sl_admin_cmd_t;

/* The table (console.c), ended by an entry with a NULL verb. To add a
 * command, add its line there and its run function in a file of its own,
 * declared below. */
extern const sl_admin_cmd_t sl_admin_cmds[];

/* show.c */
int sl_admin_show(sl_admin_ctx_t *ctx, const char *args);
/* SHOW's topics, for SHOW HELP and its unknown-topic error. */
extern const char *const sl_admin_show_topics;
/* manage.c */
int sl_admin_reload(sl_admin_ctx_t *ctx, const char *args);
int sl_admin_set(sl_admin_ctx_t *ctx, const char *args);
int sl_admin_kill_client(sl_admin_ctx_t *ctx, const char *args);
int sl_admin_shutdown(sl_admin_ctx_t *ctx, const char *args);
/* control_cmds.c: PgBouncer's process controls (control.h) */
int sl_admin_pause(sl_admin_ctx_t *ctx, const char *args);
int sl_admin_resume(sl_admin_ctx_t *ctx, const char *args);
int sl_admin_suspend(sl_admin_ctx_t *ctx, const char *args);
int sl_admin_reconnect(sl_admin_ctx_t *ctx, const char *args);
int sl_admin_kill(sl_admin_ctx_t *ctx, const char *args);
int sl_admin_disable(sl_admin_ctx_t *ctx, const char *args);
int sl_admin_enable(sl_admin_ctx_t *ctx, const char *args);
int sl_admin_wait_close(sl_admin_ctx_t *ctx, const char *args);

#endif
