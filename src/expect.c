/* The ring of replies a server owes, and how its replies end them. */
#include "sluice/expect.h"

#include <stdlib.h>

static sl_ex_t *at(const sl_expect_t *q, uint32_t i) { return &q->v[(q->head + i) & (q->cap - 1)]; }

int sl_expect_push(sl_expect_t *q, enum sl_ex_kind kind, enum sl_ex_how how, void *data) {
    if (q->n == q->cap) {
        uint32_t cap = q->cap ? q->cap * 2 : 16;
        sl_ex_t *v = malloc(cap * sizeof *v);
        if (!v) return SL_ENOMEM;
        for (uint32_t i = 0; i < q->n; i++) v[i] = *at(q, i);
        free(q->v);
        q->v = v, q->cap = cap, q->head = 0;
    }
    *at(q, q->n++) = (sl_ex_t){.kind = (uint8_t)kind, .how = (uint8_t)how, .data = data};
    if (kind == SL_EX_SYNC) { /* what came before is a batch of its own */
        q->changes_open = 0;
        q->skipping = false;
    }
    return SL_OK;
}

void sl_expect_mark_change(sl_expect_t *q, void *undo) {
    sl_ex_t *e = at(q, q->n - 1);
    if (!e->change) q->changes++, q->changes_open++;
    e->change = true;
    e->undo = undo;
}

bool sl_expect_change_unsettled(const sl_expect_t *q) { return q->changes > q->changes_open; }

bool sl_expect_skipping(const sl_expect_t *q) { return q->skipping; }

void sl_expect_mark_barrier(sl_expect_t *q) {
    sl_expect_mark_change(q, NULL);
    at(q, q->n - 1)->barrier = true;
    q->changes_open = 0; /* so that it, and what came before it, are unsettled */
}

/* Takes the first k entries off the ring (they stay readable in its slots
 * until the next push) and counts their changes as settled. Entries end
 * from the front, so the last batch's changes are the last to go. */
static void take(sl_expect_t *q, uint32_t k) {
    for (uint32_t i = 0; i < k; i++) q->changes -= at(q, i)->change;
    if (q->changes_open > q->changes) q->changes_open = q->changes;
    q->head = (q->head + k) & (q->cap - 1);
    q->n -= k;
}

static void pop(sl_expect_t *q, enum sl_ex_outcome how, sl_ex_end_cb cb, void *ctx) {
    sl_ex_t e = *at(q, 0);
    take(q, 1);
    cb(ctx, &e, how);
}

/* Ends the first k entries last first: the first as `first`, the others as
 * skipped. cb must not push (the slots are read after the take). */
static void end_backwards(sl_expect_t *q, uint32_t k, enum sl_ex_outcome first, sl_ex_end_cb cb,
                          void *ctx) {
    uint32_t head = q->head;
    take(q, k);
    while (k-- > 0) {
        sl_ex_t e = q->v[(head + k) & (q->cap - 1)];
        cb(ctx, &e, k == 0 ? first : SL_EX_SKIPPED);
    }
}

static bool ends_at_ready(const sl_ex_t *e) {
    return e->kind == SL_EX_SYNC || e->kind == SL_EX_QUERY;
}

/* Does message type t complete entry e? */
static bool completes(sl_ex_t *e, uint8_t t) {
    switch (e->kind) {
    case SL_EX_PARSE: return t == '1';
    case SL_EX_BIND: return t == '2';
    case SL_EX_DESC_STMT:
        if (t == 't') e->described = true;
        return e->described && (t == 'T' || t == 'n');
    case SL_EX_DESC_PORTAL: return t == 'T' || t == 'n';
    case SL_EX_EXECUTE: return t == 'C' || t == 'I' || t == 's';
    case SL_EX_CLOSE: return t == '3';
    default: return t == 'Z';
    }
}

bool sl_expect_reply(sl_expect_t *q, uint8_t t, sl_ex_end_cb cb, void *ctx) {
    /* Entries sluice answers itself are answered before the next reply is
     * read; one still first here was cut off by an error (see below). */
    if (q->n == 0) return true;
    sl_ex_t *e = at(q, 0);
    if (t == 'E' && !ends_at_ready(e)) {
        /* The request failed, and the server skips every message up to the
         * next Sync (a Query too): those end without a reply, last first
         * so that what each changed when sent is undone in reverse. The
         * error itself goes to the client, also when it answers a Parse
         * sluice injected: it is then the error of the client's Bind. */
        uint32_t k = 1;
        while (k < q->n && at(q, k)->kind != SL_EX_SYNC) k++;
        if (k == q->n) q->skipping = true; /* its Sync is not sent yet */
        end_backwards(q, k, SL_EX_FAILED, cb, ctx);
        return true;
    }
    if (!completes(e, t)) return true;
    bool relay = e->how == SL_EX_RELAY;
    pop(q, SL_EX_DONE, cb, ctx);
    return relay;
}

void sl_expect_answered(sl_expect_t *q, sl_ex_end_cb cb, void *ctx) { pop(q, SL_EX_DONE, cb, ctx); }

void sl_expect_clear(sl_expect_t *q, sl_ex_end_cb cb, void *ctx) {
    if (q->n > 0) end_backwards(q, q->n, SL_EX_SKIPPED, cb, ctx);
    q->head = 0;
    q->skipping = false;
}

void sl_expect_free(sl_expect_t *q) {
    free(q->v);
    *q = (sl_expect_t){0};
}
