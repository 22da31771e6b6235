/* Fuzz target: the SQL classifier (sql.c), differential. Wherever the
 * fast path (first keyword) answers, PostgreSQL's grammar (libpg_query,
 * sl_sql_parse) must agree on everything routing and session tracking
 * use: read-only, transaction opener, session state, hint, SET/RESET
 * targets. Where the grammar rejects the text, the server will too, and
 * the fast path's answer does not matter. Also checks that the cached
 * classification gives the parser's or the fast path's answer. */
#include "fuzz.h"
#include "sluice/sql.h"

static bool same(const sl_sql_info_t *a, const sl_sql_info_t *b) {
    return a->read_only == b->read_only && a->begin == b->begin &&
           a->begin_read_only == b->begin_read_only && a->state == b->state && a->hint == b->hint &&
           a->reset_all == b->reset_all && a->names_pooler_statement == b->names_pooler_statement &&
           a->resets_all == b->resets_all && !strcmp(a->set_names, b->set_names) &&
           !strcmp(a->resets, b->resets);
}

static void show(const char *who, const sl_sql_info_t *i) {
    fprintf(stderr,
            "%s: read_only=%d begin=%d begin_read_only=%d state=%#x hint=%d reset_all=%d "
            "pooler=%d resets_all=%d set_names=\"%s\" resets=\"%s\"\n",
            who, i->read_only, i->begin, i->begin_read_only, i->state, i->hint, i->reset_all,
            i->names_pooler_statement, i->resets_all, i->set_names, i->resets);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0; /* the grammar's cost grows with the text */
    fuzz_in_t in = {data, size};
    char *sql = fuzz_rest(&in, NULL);
    sl_sql_info_t fast, parsed, cached;
    bool answered = sl_sql_fast(sql, &fast);
    sl_sql_parse(sql, SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &parsed);
    if (answered && !parsed.invalid && !same(&fast, &parsed)) {
        fprintf(stderr, "the fast path and the parser disagree on: %s\n", sql);
        show("fast", &fast);
        show("parser", &parsed);
        abort();
    }
    static sl_sql_cache_t cache;
    sl_sql_classify(&cache, sql, SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &cached);
    FUZZ_CHECK(same(&cached, answered ? &fast : &parsed));
    free(sql);
    return 0;
}
