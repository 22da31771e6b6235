/* The replies a server still owes, in order: one entry per request message
 * sluice sent it (or answered itself), so that sluice can drop the replies
 * to messages it added (a Parse it injected, a Close that evicts) and put
 * its own replies (ParseComplete, CloseComplete) in the right place, also
 * when a pipeline is cut short by an error.
 *
 * A request may change state when sluice sends it (a client's name bound or
 * closed, a statement prepared on or evicted from the server), before the
 * server says whether it ran: such an entry is marked a change. After an
 * error PostgreSQL skips every request up to the next Sync, so the changes
 * of the failed and skipped entries end last first, for the caller to undo
 * them back to the state before the first. A request whose change only its
 * reply tells (DEALLOCATE ALL, which may run or fail) is a barrier: every
 * change before it, and it, count as unsettled until it ends. Pure: no
 * I/O. */
#ifndef SLUICE_EXPECT_H
#define SLUICE_EXPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/err.h"

enum sl_ex_kind {
    SL_EX_PARSE,       /* '1' */
    SL_EX_BIND,        /* '2' */
    SL_EX_DESC_STMT,   /* 't' then 'T' or 'n' */
    SL_EX_DESC_PORTAL, /* 'T' or 'n' */
    SL_EX_EXECUTE,     /* 'C', 'I' or 's' */
    SL_EX_CLOSE,       /* '3' */
    SL_EX_SYNC,        /* 'Z' */
    SL_EX_QUERY,       /* everything up to 'Z' (Query, FunctionCall) */
};

enum sl_ex_how {
    SL_EX_RELAY,   /* the client's message: its reply goes to the client */
    SL_EX_SWALLOW, /* sluice's message: its reply is dropped */
    SL_EX_ANSWER,  /* not sent: sluice answers it when its turn comes */
    SL_EX_REFUSE,  /* not sent: sluice answers an ErrorResponse (data: its message) */
};

/* How an entry ended. */
enum sl_ex_outcome { SL_EX_DONE, SL_EX_FAILED, SL_EX_SKIPPED };

typedef struct sl_ex {
    uint8_t kind, how;
    bool described; /* SL_EX_DESC_STMT: its 't' came */
    bool change;    /* sending it changed state an error must undo */
    bool barrier;   /* its change is known from its reply only (sl_expect_mark_barrier) */
    void *data;     /* the caller's, handed back when the entry ends */
    void *undo;     /* the caller's record of the change, or NULL; handed back likewise */
} sl_ex_t;

typedef struct sl_expect {
    sl_ex_t *v;            /* owned ring */
    uint32_t cap;          /* a power of two, or 0 */
    uint32_t head, n;      /* first entry and count */
    uint32_t changes;      /* entries marked a change, owed */
    uint32_t changes_open; /* of those, the ones pushed after the last Sync */
    bool skipping;         /* an error ended every entry since the last Sync: the
                              server skips what it gets up to the next one */
} sl_expect_t;

/* Told of every entry that ends: in order, except that the entries an
 * error ends (the failed one and those skipped after it) end last first. */
typedef void (*sl_ex_end_cb)(void *ctx, const sl_ex_t *e, enum sl_ex_outcome how);

int sl_expect_push(sl_expect_t *q, enum sl_ex_kind kind, enum sl_ex_how how, void *data)
    SL_MUST_USE;
/* Marks the entry pushed last as a change (with the caller's undo record,
 * which may be NULL). */
void sl_expect_mark_change(sl_expect_t *q, void *undo);
/* Whether a change pushed before the last Sync is still owed: an error may
 * yet skip it, so a request after that Sync must not rely on it. Changes
 * pushed since the last Sync need no such care: an error before them skips
 * the requests that follow them too. */
bool sl_expect_change_unsettled(const sl_expect_t *q);
/* Marks the entry pushed last as a barrier: a change the caller makes, or
 * not, when the request's reply says whether it ran (it may fail without
 * the requests after it being skipped, so they must not rely on the state
 * before it). Until it ends, sl_expect_change_unsettled() is true. */
void sl_expect_mark_barrier(sl_expect_t *q);
/* Whether the server skips what it gets now up to the next Sync: an error
 * came before the Sync of its batch was pushed (the walker held it, or the
 * client sent a Flush). The caller drops what it would send up to it. */
bool sl_expect_skipping(const sl_expect_t *q);
/* A message of type t starts arriving from the server. Ends the entries it
 * completes and returns false when the message answers one of sluice's own
 * requests and must not reach the client. */
bool sl_expect_reply(sl_expect_t *q, uint8_t t, sl_ex_end_cb cb, void *ctx);
/* The first entry (the request the server's next reply is about), or NULL.
 * Inline: asked for every reply. */
static inline const sl_ex_t *sl_expect_head(const sl_expect_t *q) {
    return q->n ? &q->v[q->head & (q->cap - 1)] : NULL;
}
/* The first entry when sluice answers it itself (SL_EX_ANSWER or
 * SL_EX_REFUSE), else NULL. sl_expect_answered() ends it once answered. */
static inline const sl_ex_t *sl_expect_answer_due(const sl_expect_t *q) {
    /* Inline: asked before every reply and after every walk. */
    const sl_ex_t *e = sl_expect_head(q);
    return e && (e->how == SL_EX_ANSWER || e->how == SL_EX_REFUSE) ? e : NULL;
}
void sl_expect_answered(sl_expect_t *q, sl_ex_end_cb cb, void *ctx);
/* Ends every entry as skipped, last first (the server is gone); the ring
 * stays for reuse. */
void sl_expect_clear(sl_expect_t *q, sl_ex_end_cb cb, void *ctx);
void sl_expect_free(sl_expect_t *q);

#endif
