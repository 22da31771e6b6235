/* The replies a server still owes, in order: one entry per request message
 * sluice sent it (or answered itself), so that sluice can drop the replies
 * to messages it added (a Parse it injected, a Close that evicts) and put
 * its own replies (ParseComplete, CloseComplete) in the right place, also
 * when a pipeline is cut short by an error. Pure: no I/O. */
#ifndef SLUICE_EXPECT_H
#define SLUICE_EXPECT_H

#include <stdbool.h>
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
    void *data;     /* the caller's, handed back when the entry ends */
} sl_ex_t;

typedef struct sl_expect {
    sl_ex_t *v;       /* owned ring */
    uint32_t cap;     /* a power of two, or 0 */
    uint32_t head, n; /* first entry and count */
} sl_expect_t;

/* Told of every entry that ends, in order. */
typedef void (*sl_ex_end_cb)(void *ctx, const sl_ex_t *e, enum sl_ex_outcome how);

int sl_expect_push(sl_expect_t *q, enum sl_ex_kind kind, enum sl_ex_how how, void *data)
    SL_MUST_USE;
/* A message of type t starts arriving from the server. Ends the entries it
 * completes and returns false when the message answers one of sluice's own
 * requests and must not reach the client. */
bool sl_expect_reply(sl_expect_t *q, uint8_t t, sl_ex_end_cb cb, void *ctx);
/* The first entry (the request the server's next reply is about), or NULL. */
const sl_ex_t *sl_expect_head(const sl_expect_t *q);
/* The first entry when sluice answers it itself (SL_EX_ANSWER or
 * SL_EX_REFUSE), else NULL. sl_expect_answered() ends it once answered. */
const sl_ex_t *sl_expect_answer_due(const sl_expect_t *q);
void sl_expect_answered(sl_expect_t *q, sl_ex_end_cb cb, void *ctx);
/* Ends every entry as skipped (the server is gone); the ring stays for reuse. */
void sl_expect_clear(sl_expect_t *q, sl_ex_end_cb cb, void *ctx);
void sl_expect_free(sl_expect_t *q);

#endif
