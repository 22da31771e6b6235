/* sql: a corpus of statements with the answer each must get; wherever the
 * fast path answers, it must agree with the parser; hints, transaction
 * openers, session state, and the cache. */
#include <stdio.h>

#include "sluice/sql.h"
#include "unit/check.h"

#define R 1 /* read-only: a replica may run it */
#define W 0

typedef struct {
    const char *sql;
    int read;
} case_t;

static const case_t corpus[] = {
    {"SELECT 1", R},
    {"select * from t", R},
    {"SELECT a, b FROM t WHERE id = 5", R},
    {"SELECT abalance FROM pgbench_accounts WHERE aid = $1", R},
    {"SELECT * FROM t WHERE s = 'for update'", R},
    {"SELECT * FROM t WHERE s = 'a;b'", R},
    {"SELECT * FROM \"for\"", R},
    {"SELECT count(*) FROM t", R},
    {"SELECT now()", R},
    {"SELECT * FROM t FOR UPDATE", W},
    {"SELECT * FROM t FOR SHARE", W},
    {"SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED", W},
    {"SELECT * FROM t FOR KEY SHARE", W},
    {"SELECT * INTO t2 FROM t", W},
    {"SELECT nextval('s')", W},
    {"SELECT pg_catalog.nextval('s')", W},
    {"SELECT setval('s', 10)", W},
    {"SELECT currval('s')", R},
    {"SELECT pg_advisory_lock(1)", W},
    {"SELECT pg_advisory_xact_lock(1)", W},
    {"SELECT pg_try_advisory_lock(1)", W},
    {"SELECT lo_create(0)", W},
    {"SELECT txid_current()", W},
    {"SELECT pg_notify('c', 'x')", W},
    {"SELECT upper(name) FROM t", R},
    {"SELECT * FROM t WHERE id IN (SELECT id FROM u)", R},
    {"SELECT * FROM t WHERE id IN (SELECT nextval('s'))", W},
    {"WITH x AS (SELECT 1) SELECT * FROM x", R},
    {"WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", W},
    {"WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x", W},
    {"WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", W},
    {"WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", R},
    {"VALUES (1), (2)", R},
    {"TABLE t", R},
    {"SHOW work_mem", R},
    {"SHOW ALL", R},
    {"EXPLAIN SELECT * FROM t", R},
    {"EXPLAIN DELETE FROM t", R},
    {"EXPLAIN ANALYZE SELECT * FROM t", R},
    {"EXPLAIN ANALYZE DELETE FROM t", W},
    {"EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", W},
    {"INSERT INTO t VALUES (1)", W},
    {"insert into t select * from u", W},
    {"UPDATE t SET a = 1", W},
    {"DELETE FROM t", W},
    {"MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN DELETE", W},
    {"TRUNCATE t", W},
    {"CREATE TABLE t2 (a int)", W},
    {"CREATE TEMP TABLE tt (a int)", W},
    {"DROP TABLE t", W},
    {"ALTER TABLE t ADD COLUMN b int", W},
    {"GRANT SELECT ON t TO public", W},
    {"REVOKE SELECT ON t FROM public", W},
    {"VACUUM t", W},
    {"ANALYZE t", W},
    {"REINDEX TABLE t", W},
    {"CLUSTER t", W},
    {"COMMENT ON TABLE t IS 'x'", W},
    {"REFRESH MATERIALIZED VIEW v", W},
    {"COPY t TO STDOUT", R},
    {"COPY (SELECT * FROM t) TO STDOUT", R},
    {"COPY t FROM STDIN", W},
    {"CALL p()", W},
    {"DO $$BEGIN END$$", W},
    {"LOCK TABLE t", W},
    {"LISTEN ch", W},
    {"NOTIFY ch", W},
    {"PREPARE p AS SELECT 1", W},
    {"EXECUTE p", W},
    {"DEALLOCATE ALL", W},
    {"BEGIN", R},
    {"BEGIN READ ONLY", R},
    {"START TRANSACTION READ ONLY", R},
    {"COMMIT", R},
    {"ROLLBACK", R},
    {"END", R},
    {"ABORT", R},
    {"SET search_path TO a, b", R},
    {"SET TRANSACTION READ ONLY", R},
    {"RESET ALL", R},
    {"SELECT 1; SELECT 2", R},
    {"SELECT 1; INSERT INTO t VALUES (1)", W},
    {"INSERT INTO t VALUES (1); SELECT 1", W},
    {"SELECT E'\\'' FROM t", R},
    {"SELECT $tag$a;b$tag$", R},
    {"SELECT 'it''s'", R},
    {"SELECT * FROM t -- FOR UPDATE", R},
    {"SELECT * FROM t /* FOR UPDATE */", R},
    {"SELECT * /* nested /* comment */ still */ FROM t", R},
    {"SELECT * FROM t;", R},
    {"SELECT * FROM t ;  -- done", R},
    {"DECLARE c CURSOR WITH HOLD FOR SELECT 1", R},
    {"DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", W},
    {"CLOSE ALL", R},
    {"DISCARD ALL", W},
    {"select 1 from t where a = b for update of t nowait", W},
    {"SELECT * FROM t WHERE x = 1 UNION SELECT * FROM u", R},
    {"SELECT * FROM t ORDER BY a LIMIT 10 OFFSET 5", R},
    {"SELECT a::text FROM t", R},
    {"SELECT * FROM t WHERE a > 1 AND b < 2 OR c = 3", R},
};

/* Prefixes and suffixes that must not change any answer. */
static const char *const wraps[][2] = {
    {"", ""},          {"  ", "  "},          {"\n\t", ";"},    {"/* c */ ", ""},
    {"-- c\n", " ;"},  {"/* a */ /* b */", ""},
};

static void corpus_agrees(void) {
    char buf[512];
    int total = 0, fast = 0;
    for (size_t w = 0; w < sizeof wraps / sizeof *wraps; w++)
        for (size_t i = 0; i < sizeof corpus / sizeof *corpus; i++) {
            snprintf(buf, sizeof buf, "%s%s%s", wraps[w][0], corpus[i].sql, wraps[w][1]);
            sl_sql_info_t pa, fa;
            sl_sql_parse(buf, SL_SQL_DEFAULT_WRITE_FUNCTIONS, &pa);
            total++;
            if (pa.invalid) {
                fprintf(stderr, "parser rejected: %s\n", buf);
                check_failures++;
                continue;
            }
            if (pa.read_only != (corpus[i].read == R)) {
                fprintf(stderr, "parser says %s for: %s\n", pa.read_only ? "read" : "write", buf);
                check_failures++;
            }
            check_count++;
            if (sl_sql_fast(buf, &fa)) {
                fast++;
                check_count++;
                if (fa.read_only != pa.read_only || fa.begin != pa.begin ||
                    fa.begin_read_only != pa.begin_read_only || fa.state != pa.state ||
                    fa.hint != pa.hint) {
                    fprintf(stderr, "fast path disagrees with the parser on: %s\n", buf);
                    check_failures++;
                }
            }
        }
    printf("corpus: %d statements, %d answered by the fast path\n", total, fast);
    ASSERT_TRUE(total >= 200);
    ASSERT_TRUE(fast >= total / 4);
}

static void details(void) {
    sl_sql_info_t i;
    sl_sql_parse("BEGIN READ ONLY", SL_SQL_DEFAULT_WRITE_FUNCTIONS, &i);
    ASSERT_TRUE(i.begin && i.begin_read_only);
    sl_sql_parse("BEGIN READ WRITE", SL_SQL_DEFAULT_WRITE_FUNCTIONS, &i);
    ASSERT_TRUE(i.begin && !i.begin_read_only);
    sl_sql_parse("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", "", &i);
    ASSERT_TRUE(i.begin && i.begin_read_only);
    sl_sql_parse("SET TRANSACTION READ ONLY", "", &i);
    ASSERT_TRUE(!i.begin && i.begin_read_only);
    ASSERT_TRUE(sl_sql_fast("BEGIN", &i) && i.begin && !i.begin_read_only);
    ASSERT_TRUE(!sl_sql_fast("BEGIN READ ONLY", &i));

    sl_sql_parse("/* sluice:primary */ SELECT 1", "", &i);
    ASSERT_EQ(i.hint, SL_HINT_PRIMARY);
    ASSERT_TRUE(sl_sql_fast("/* sluice:replica */ SELECT * FROM t", &i));
    ASSERT_EQ(i.hint, SL_HINT_REPLICA);
    ASSERT_TRUE(sl_sql_fast("/*sluice:primary*/ UPDATE t SET a = 1", &i));
    ASSERT_EQ(i.hint, SL_HINT_PRIMARY);

    struct {
        const char *sql;
        uint32_t state;
    } st[] = {
        {"LISTEN ch", SL_STATE_LISTEN},
        {"UNLISTEN *", SL_STATE_UNLISTEN_ALL},
        {"UNLISTEN ch", 0},
        {"CREATE TEMP TABLE x (a int)", SL_STATE_TEMP_OBJECT},
        {"CREATE TEMPORARY TABLE x AS SELECT 1", SL_STATE_TEMP_OBJECT},
        {"CREATE TEMP VIEW v AS SELECT 1", SL_STATE_TEMP_OBJECT},
        {"CREATE TEMP SEQUENCE s", SL_STATE_TEMP_OBJECT},
        {"CREATE TABLE x (a int)", 0},
        {"PREPARE p AS SELECT 1", SL_STATE_PREPARE},
        {"DEALLOCATE ALL", SL_STATE_DEALLOCATE_ALL},
        {"DEALLOCATE p", 0},
        {"DECLARE c CURSOR WITH HOLD FOR SELECT 1", SL_STATE_HOLD_CURSOR},
        {"DECLARE c CURSOR FOR SELECT 1", 0},
        {"CLOSE ALL", SL_STATE_CLOSE_ALL},
        {"CLOSE c", 0},
        {"SELECT pg_advisory_lock(1)", SL_STATE_ADVISORY_LOCK},
        {"SELECT pg_try_advisory_lock_shared(1)", SL_STATE_ADVISORY_LOCK},
        {"SELECT pg_advisory_xact_lock(1)", 0},
        {"SELECT pg_advisory_unlock_all()", SL_STATE_ADVISORY_UNLOCK_ALL},
        {"DISCARD ALL", SL_STATE_DISCARD_ALL},
        {"DISCARD PLANS", 0},
        {"LISTEN a; CREATE TEMP TABLE b (x int)", SL_STATE_LISTEN | SL_STATE_TEMP_OBJECT},
    };
    for (size_t k = 0; k < sizeof st / sizeof *st; k++) {
        sl_sql_parse(st[k].sql, SL_SQL_DEFAULT_WRITE_FUNCTIONS, &i);
        if (i.state != st[k].state) fprintf(stderr, "state of: %s\n", st[k].sql);
        ASSERT_EQ(i.state, st[k].state);
    }
    /* Configurable write functions. */
    sl_sql_parse("SELECT my_func()", "my_*", &i);
    ASSERT_TRUE(!i.read_only);
    sl_sql_parse("SELECT my_func()", "nextval", &i);
    ASSERT_TRUE(i.read_only);
    /* Invalid SQL is never sent to a replica. */
    sl_sql_parse("SELEC 1", "", &i);
    ASSERT_TRUE(i.invalid && !i.read_only);
}

static void cache(void) {
    static sl_sql_cache_t c;
    sl_sql_info_t i;
    sl_sql_classify(&c, "SELECT nextval('x')", SL_SQL_DEFAULT_WRITE_FUNCTIONS, &i);
    ASSERT_TRUE(!i.read_only && i.parsed);
    ASSERT_EQ(c.misses, 1);
    sl_sql_classify(&c, "SELECT nextval('x')", SL_SQL_DEFAULT_WRITE_FUNCTIONS, &i);
    ASSERT_TRUE(!i.read_only);
    ASSERT_EQ(c.hits, 1);
    sl_sql_classify(&c, "SELECT 1", SL_SQL_DEFAULT_WRITE_FUNCTIONS, &i);
    ASSERT_TRUE(i.read_only && !i.parsed); /* fast path, no cache use */
    ASSERT_EQ(c.hits + c.misses, 2);
}

int main(void) {
    corpus_agrees();
    details();
    cache();
    return check_done("test_sql");
}
