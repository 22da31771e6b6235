/* expect: which server replies reach the client, where sluice's own answers
 * go, and how an error skips the rest of a pipeline up to its Sync. */
#include "sluice/expect.h"
#include "unit/check.h"

typedef struct log {
    char ended[256];
    int n;
} log_t;

static void end_cb(void *ctx, const sl_ex_t *e, enum sl_ex_outcome how) {
    log_t *l = ctx;
    (void)e;
    l->ended[l->n++] = how == SL_EX_DONE ? 'd' : how == SL_EX_FAILED ? 'f' : 's';
    l->ended[l->n] = 0;
}

/* Writes the answers sluice owes now: '1', '3', or 'E' for a refusal. */
static int answers(sl_expect_t *q, log_t *l, char *out, int o) {
    for (const sl_ex_t *e; (e = sl_expect_answer_due(q));) {
        out[o++] = e->how == SL_EX_REFUSE ? 'E' : e->kind == SL_EX_PARSE ? '1' : '3';
        sl_expect_answered(q, end_cb, l);
    }
    return o;
}

/* Feeds server message types; returns what the client sees, with sluice's
 * answers inserted where they are due. */
static const char *run(sl_expect_t *q, const char *server, log_t *l) {
    static char out[64];
    int o = 0;
    o = answers(q, l, out, o);
    for (const char *p = server; *p; p++) {
        if (sl_expect_reply(q, (uint8_t)*p, end_cb, l)) out[o++] = *p;
        o = answers(q, l, out, o);
    }
    out[o] = 0;
    return out;
}

static void push(sl_expect_t *q, enum sl_ex_kind k, enum sl_ex_how h) {
    ASSERT_EQ(sl_expect_push(q, k, h, NULL), SL_OK);
}

int main(void) {
    sl_expect_t q = {0};
    log_t l = {.n = 0};
    /* Client: Parse(known) Bind Execute Close(stmt) Bind Execute Sync, where
     * sluice injected a Parse before the second Bind and answers the first
     * Parse and the Close itself. */
    push(&q, SL_EX_PARSE, SL_EX_ANSWER);
    push(&q, SL_EX_BIND, SL_EX_RELAY);
    push(&q, SL_EX_EXECUTE, SL_EX_RELAY);
    push(&q, SL_EX_CLOSE, SL_EX_ANSWER);
    push(&q, SL_EX_PARSE, SL_EX_SWALLOW);
    push(&q, SL_EX_BIND, SL_EX_RELAY);
    push(&q, SL_EX_EXECUTE, SL_EX_RELAY);
    push(&q, SL_EX_SYNC, SL_EX_RELAY);
    ASSERT_STREQ(run(&q, "2DDC12DCZ", &l), "12DDC32DCZ");
    ASSERT_EQ(q.n, 0u);
    ASSERT_STREQ(l.ended, "dddddddd");

    /* Notices, notifications and parameter changes pass anywhere. */
    l.n = 0;
    push(&q, SL_EX_QUERY, SL_EX_RELAY);
    ASSERT_STREQ(run(&q, "NTDSACZ", &l), "NTDSACZ");

    /* An injected Parse fails: its error is the client's, and the Bind and
     * Execute behind it are skipped; the Sync still ends. */
    l.n = 0;
    push(&q, SL_EX_PARSE, SL_EX_SWALLOW);
    push(&q, SL_EX_BIND, SL_EX_RELAY);
    push(&q, SL_EX_EXECUTE, SL_EX_RELAY);
    push(&q, SL_EX_CLOSE, SL_EX_ANSWER); /* skipped too: never answered */
    push(&q, SL_EX_SYNC, SL_EX_RELAY);
    push(&q, SL_EX_DESC_STMT, SL_EX_RELAY);
    push(&q, SL_EX_SYNC, SL_EX_RELAY);
    ASSERT_STREQ(run(&q, "EZtTZ", &l), "EZtTZ");
    ASSERT_STREQ(l.ended, "sssfddd"); /* an error's entries end last first */

    /* A refused Parse is answered with sluice's error in its place; an
     * earlier server error skips it like the rest. */
    l.n = 0;
    push(&q, SL_EX_BIND, SL_EX_RELAY);
    push(&q, SL_EX_PARSE, SL_EX_REFUSE);
    push(&q, SL_EX_SYNC, SL_EX_RELAY);
    ASSERT_STREQ(run(&q, "2Z", &l), "2EZ");
    push(&q, SL_EX_BIND, SL_EX_RELAY);
    push(&q, SL_EX_PARSE, SL_EX_REFUSE);
    push(&q, SL_EX_SYNC, SL_EX_RELAY);
    ASSERT_STREQ(run(&q, "EZ", &l), "EZ");
    ASSERT_EQ(q.n, 0u);

    /* An error in a simple Query does not skip what follows its
     * ReadyForQuery. */
    l.n = 0;
    push(&q, SL_EX_QUERY, SL_EX_RELAY);
    push(&q, SL_EX_PARSE, SL_EX_RELAY);
    push(&q, SL_EX_SYNC, SL_EX_RELAY);
    ASSERT_STREQ(run(&q, "EZ1Z", &l), "EZ1Z");
    ASSERT_STREQ(l.ended, "ddd");

    /* A Query caught in a skip ends without a reply. */
    l.n = 0;
    push(&q, SL_EX_BIND, SL_EX_RELAY);
    push(&q, SL_EX_QUERY, SL_EX_RELAY);
    push(&q, SL_EX_SYNC, SL_EX_RELAY);
    ASSERT_STREQ(run(&q, "EZ", &l), "EZ");
    ASSERT_STREQ(l.ended, "sfd");

    /* Describe of a statement ends at its row description or NoData, after
     * the parameter description; an eviction's CloseComplete is dropped. */
    l.n = 0;
    push(&q, SL_EX_CLOSE, SL_EX_SWALLOW);
    push(&q, SL_EX_DESC_STMT, SL_EX_RELAY);
    push(&q, SL_EX_DESC_PORTAL, SL_EX_RELAY);
    push(&q, SL_EX_EXECUTE, SL_EX_RELAY);
    push(&q, SL_EX_EXECUTE, SL_EX_RELAY);
    push(&q, SL_EX_SYNC, SL_EX_RELAY);
    ASSERT_STREQ(run(&q, "3tnTDsDCZ", &l), "tnTDsDCZ");
    ASSERT_EQ(q.n, 0u);

    /* Changes: one pushed before a Sync stays unsettled until it ends;
     * changes since the last Sync do not count. An error ends them last
     * first, with their undo records. */
    l.n = 0;
    push(&q, SL_EX_BIND, SL_EX_RELAY);
    push(&q, SL_EX_CLOSE, SL_EX_ANSWER);
    sl_expect_mark_change(&q, &l);
    ASSERT_TRUE(!sl_expect_change_unsettled(&q));
    push(&q, SL_EX_PARSE, SL_EX_RELAY);
    sl_expect_mark_change(&q, NULL);
    push(&q, SL_EX_SYNC, SL_EX_RELAY);
    ASSERT_TRUE(sl_expect_change_unsettled(&q));
    push(&q, SL_EX_PARSE, SL_EX_ANSWER);
    sl_expect_mark_change(&q, NULL);
    push(&q, SL_EX_SYNC, SL_EX_RELAY);
    ASSERT_EQ(q.changes, 3u);
    ASSERT_STREQ(run(&q, "E", &l), "E");
    ASSERT_STREQ(l.ended, "ssf");
    ASSERT_EQ(q.changes, 1u);
    ASSERT_TRUE(sl_expect_change_unsettled(&q)); /* the second batch's, before its Sync */
    ASSERT_STREQ(run(&q, "Z", &l), "Z1");
    ASSERT_EQ(q.changes, 0u);
    ASSERT_TRUE(!sl_expect_change_unsettled(&q));
    push(&q, SL_EX_CLOSE, SL_EX_ANSWER); /* the open batch's own change counts not */
    sl_expect_mark_change(&q, NULL);
    ASSERT_TRUE(!sl_expect_change_unsettled(&q));
    ASSERT_STREQ(run(&q, "Z", &l), "Z3");
    push(&q, SL_EX_SYNC, SL_EX_RELAY);
    ASSERT_STREQ(run(&q, "Z", &l), "Z");
    ASSERT_EQ(q.n, 0u);

    /* A barrier (a DEALLOCATE ALL that may run or fail): it, and the open
     * batch's changes before it, are unsettled until it ends. An error
     * before the batch's Sync is pushed leaves the server skipping up to
     * it. */
    l.n = 0;
    push(&q, SL_EX_CLOSE, SL_EX_ANSWER);
    sl_expect_mark_change(&q, NULL);
    push(&q, SL_EX_QUERY, SL_EX_RELAY);
    sl_expect_mark_barrier(&q);
    ASSERT_TRUE(sl_expect_change_unsettled(&q));
    ASSERT_STREQ(run(&q, "CZ", &l), "3CZ");
    ASSERT_TRUE(!sl_expect_change_unsettled(&q));
    push(&q, SL_EX_BIND, SL_EX_RELAY);
    push(&q, SL_EX_EXECUTE, SL_EX_RELAY);
    sl_expect_mark_barrier(&q);
    ASSERT_TRUE(!sl_expect_skipping(&q));
    ASSERT_STREQ(run(&q, "E", &l), "E");
    ASSERT_TRUE(sl_expect_skipping(&q) && !sl_expect_change_unsettled(&q));
    push(&q, SL_EX_SYNC, SL_EX_RELAY);
    ASSERT_TRUE(!sl_expect_skipping(&q));
    ASSERT_STREQ(run(&q, "Z", &l), "Z");
    ASSERT_STREQ(l.ended, "ddsfd");
    ASSERT_EQ(q.n, 0u);

    /* More entries than the first ring holds; clear ends them all. */
    for (int i = 0; i < 100; i++) push(&q, SL_EX_BIND, SL_EX_RELAY);
    l.n = 0;
    for (int i = 0; i < 40; i++) ASSERT_TRUE(sl_expect_reply(&q, '2', end_cb, &l));
    ASSERT_EQ(q.n, 60u);
    sl_expect_clear(&q, end_cb, &l);
    ASSERT_EQ(q.n, 0u);
    ASSERT_EQ(l.n, 100);
    push(&q, SL_EX_SYNC, SL_EX_RELAY); /* the ring is reused */
    ASSERT_STREQ(run(&q, "Z", &l), "Z");
    sl_expect_free(&q);
    return check_done("test_expect");
}
