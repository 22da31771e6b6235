/* sql: a corpus of statements with the answer each must get; wherever the
 * fast path answers, it must agree with the parser; hints, transaction
 * openers, session state, and the cache. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    {"SELECT a.id, b.name FROM a JOIN b ON a.id = b.a_id", R},
    {"SELECT * FROM a LEFT JOIN b USING (id)", R},
    {"SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b DESC", R},
    {"SELECT a, count(*) FROM t GROUP BY a HAVING count(*) > 1", R},
    {"SELECT * FROM t WHERE a BETWEEN 1 AND 10", R},
    {"SELECT * FROM t WHERE name LIKE 'abc%'", R},
    {"SELECT * FROM t WHERE name ILIKE '%x%' ESCAPE '!'", R},
    {"SELECT * FROM t WHERE a IS NULL OR b IS NOT NULL", R},
    {"SELECT * FROM t WHERE tags @> ARRAY['x']", R},
    {"SELECT * FROM t WHERE doc->>'k' = 'v'", R},
    {"SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t", R},
    {"SELECT sum(x) FILTER (WHERE y > 0) FROM t", R},
    {"SELECT * FROM generate_series(1, 10)", R},
    {"SELECT * FROM unnest(ARRAY[1,2,3]) AS u(x)", R},
    {"SELECT * FROM t TABLESAMPLE SYSTEM (10)", R},
    {"SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.t_id = t.id) s", R},
    {"SELECT CASE WHEN a > 0 THEN 'pos' ELSE 'neg' END FROM t", R},
    {"SELECT coalesce(a, b, 0) FROM t", R},
    {"SELECT a FROM t EXCEPT SELECT a FROM u", R},
    {"SELECT a FROM t INTERSECT SELECT a FROM u", R},
    {"SELECT EXISTS (SELECT 1 FROM t WHERE a = 1)", R},
    {"SELECT * FROM t WHERE a = ANY('{1,2}'::int[])", R},
    {"SELECT now() - interval '1 day'", R},
    {"SELECT to_char(now(), 'YYYY-MM-DD')", R},
    {"SELECT pg_sleep(0)", R},
    {"SELECT version()", R},
    {"SELECT current_database(), current_user", R},
    {"SELECT pg_is_in_recovery()", R},
    {"SELECT pg_last_wal_replay_lsn()", R},
    {"SELECT * FROM pg_stat_activity", R},
    {"SELECT relname FROM pg_class WHERE relkind = 'r'", R},
    {"SELECT * FROM information_schema.tables", R},
    {"SELECT 1 FROM t LIMIT ALL", R},
    {"SELECT * FROM t FETCH FIRST 5 ROWS ONLY", R},
    {"SELECT * FROM t ORDER BY a NULLS LAST", R},
    {"SELECT * FROM t WINDOW w AS (ORDER BY a)", R},
    {"SELECT json_agg(t) FROM t", R},
    {"SELECT string_agg(name, ',') FROM t", R},
    {"SELECT md5('x')", R},
    {"SELECT gen_random_uuid()", R},
    {"SELECT * FROM t WHERE id = $1 AND name = $2", R},
    {"SELECT id FROM t WHERE id > $1 ORDER BY id LIMIT $2", R},
    {"WITH a AS (SELECT 1 AS x), b AS (SELECT x + 1 FROM a) SELECT * FROM b", R},
    {"WITH x AS MATERIALIZED (SELECT * FROM t) SELECT * FROM x", R},
    {"WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x", W},
    {"WITH x AS (SELECT nextval('s')) SELECT * FROM x", W},
    {"SELECT * FROM t WHERE id = (SELECT setval('s', 1))", W},
    {"SELECT pg_advisory_lock_shared(7)", W},
    {"SELECT pg_try_advisory_xact_lock(7)", W},
    {"SELECT lo_import('/tmp/x')", W},
    {"SELECT lo_unlink(1234)", W},
    {"SELECT pg_current_xact_id()", W},
    {"SELECT a INTO TEMP t3 FROM t", W},
    {"SELECT * FROM t FOR UPDATE OF t", W},
    {"SELECT * FROM t a JOIN u b ON a.id = b.id FOR SHARE OF a", W},
    {"INSERT INTO t (a, b) VALUES ($1, $2)", W},
    {"INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", W},
    {"INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = excluded.b", W},
    {"INSERT INTO t DEFAULT VALUES RETURNING id", W},
    {"UPDATE t SET a = a + 1 WHERE id = $1", W},
    {"UPDATE t SET a = u.a FROM u WHERE t.id = u.id", W},
    {"UPDATE t SET a = 1 WHERE CURRENT OF c", W},
    {"DELETE FROM t WHERE id = $1 RETURNING *", W},
    {"DELETE FROM t USING u WHERE t.id = u.id", W},
    {"TRUNCATE t, u RESTART IDENTITY CASCADE", W},
    {"CREATE INDEX CONCURRENTLY i ON t (a)", W},
    {"CREATE UNIQUE INDEX i2 ON t (b)", W},
    {"CREATE VIEW v AS SELECT * FROM t", W},
    {"CREATE MATERIALIZED VIEW mv AS SELECT * FROM t", W},
    {"CREATE SEQUENCE s2", W},
    {"CREATE SCHEMA sch", W},
    {"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", W},
    {"CREATE EXTENSION IF NOT EXISTS pgcrypto", W},
    {"CREATE ROLE r LOGIN", W},
    {"CREATE DATABASE d", W},
    {"DROP INDEX IF EXISTS i", W},
    {"DROP VIEW v", W},
    {"DROP SCHEMA sch CASCADE", W},
    {"ALTER SEQUENCE s RESTART", W},
    {"ALTER ROLE r SET work_mem = '1MB'", W},
    {"ALTER SYSTEM SET work_mem = '1MB'", W},
    {"SELECT pg_reload_conf()", R},
    {"CHECKPOINT", W},
    {"VACUUM (VERBOSE, ANALYZE) t", W},
    {"ANALYZE VERBOSE t", W},
    {"SECURITY LABEL ON TABLE t IS 'x'", W},
    {"REASSIGN OWNED BY r TO postgres", W},
    {"IMPORT FOREIGN SCHEMA s FROM SERVER srv INTO public", W},
    {"COPY t (a, b) FROM STDIN WITH (FORMAT csv)", W},
    {"COPY t TO STDOUT WITH (FORMAT binary)", R},
    {"COPY (DELETE FROM t RETURNING *) TO STDOUT", W},
    {"EXPLAIN (FORMAT JSON) SELECT * FROM t", R},
    {"EXPLAIN ANALYZE INSERT INTO t VALUES (1)", W},
    {"EXPLAIN VERBOSE UPDATE t SET a = 1", R},
    {"SHOW TRANSACTION ISOLATION LEVEL", R},
    {"SHOW search_path", R},
    {"SET LOCAL statement_timeout = 1000", R},
    {"SET SESSION work_mem TO '4MB'", R},
    {"SET TIME ZONE 'UTC'", R},
    {"RESET search_path", R},
    {"SET search_path TO DEFAULT", R},
    {"SET ROLE NONE", R},
    {"START TRANSACTION ISOLATION LEVEL REPEATABLE READ", R},
    {"BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", R},
    {"SAVEPOINT s1", R},
    {"RELEASE SAVEPOINT s1", R},
    {"ROLLBACK TO SAVEPOINT s1", R},
    {"COMMIT AND CHAIN", R},
    {"PREPARE TRANSACTION 'x'", R},
    {"COMMIT PREPARED 'x'", R},
    {"FETCH 10 FROM c", W},
    {"MOVE NEXT IN c", W},
    {"UNLISTEN ch", W},
    {"NOTIFY ch, 'payload'", W},
    {"LOAD 'auto_explain'", W},
    {"DISCARD TEMP", W},
    {"DISCARD PLANS", W},
    {"REFRESH MATERIALIZED VIEW CONCURRENTLY mv", W},
    {"GRANT USAGE ON SCHEMA sch TO r", W},
    {"LOCK TABLE t IN ACCESS SHARE MODE", W},
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
            sl_sql_parse(buf, SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &pa);
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
                    fa.hint != pa.hint || fa.reset_all != pa.reset_all ||
                    strcmp(fa.set_names, pa.set_names) != 0) {
                    fprintf(stderr, "fast path disagrees with the parser on: %s\n", buf);
                    check_failures++;
                }
            }
        }
    printf("corpus: %d statements, %d answered by the fast path\n", total, fast);
    ASSERT_TRUE(sizeof corpus / sizeof *corpus >= 200);
    ASSERT_TRUE(total >= 1000);
    ASSERT_TRUE(fast >= total / 4);
}

static void details(void) {
    sl_sql_info_t i;
    sl_sql_parse("BEGIN READ ONLY", SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &i);
    ASSERT_TRUE(i.begin && i.begin_read_only);
    sl_sql_parse("BEGIN READ WRITE", SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &i);
    ASSERT_TRUE(i.begin && !i.begin_read_only);
    sl_sql_parse("START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY", "", "", &i);
    ASSERT_TRUE(i.begin && i.begin_read_only);
    sl_sql_parse("SET TRANSACTION READ ONLY", "", "", &i);
    ASSERT_TRUE(!i.begin && i.begin_read_only);
    ASSERT_TRUE(sl_sql_fast("BEGIN", &i) && i.begin && !i.begin_read_only);
    ASSERT_TRUE(!sl_sql_fast("BEGIN READ ONLY", &i));

    sl_sql_parse("/* sluice:primary */ SELECT 1", "", "", &i);
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
        {"DO $$BEGIN PERFORM 1; END$$", SL_STATE_OPAQUE},
        {"CALL my_proc(1)", SL_STATE_OPAQUE},
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
        sl_sql_parse(st[k].sql, SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &i);
        if (i.state != st[k].state) fprintf(stderr, "state of: %s\n", st[k].sql);
        ASSERT_EQ(i.state, st[k].state);
    }
    /* Configurable write functions. */
    sl_sql_parse("SELECT my_func()", "my_*", "", &i);
    ASSERT_TRUE(!i.read_only);
    sl_sql_parse("SELECT my_func()", "nextval", "", &i);
    ASSERT_TRUE(i.read_only);
    /* Invalid SQL is never sent to a replica. */
    sl_sql_parse("SELEC 1", "", "", &i);
    ASSERT_TRUE(i.invalid && !i.read_only);
}

/* Code sluice cannot see into, and set_config(): each statement with the
 * session state and settings the parser must find, and whether the fast
 * path may answer it (it must then agree). */
static void opaque_calls(void) {
    struct {
        const char *sql;
        uint32_t state;
        const char *set_names;
    } oc[] = {
        /* set_config with a constant name and flag is a SET or a SET LOCAL */
        {"SELECT set_config('search_path', 'x', false)", 0, "search_path"},
        {"SELECT pg_catalog.set_config('Search_Path', 'x', 'off')", 0, "search_path"},
        {"SELECT set_config('myapp.user_id', '42', false)", 0, "myapp.user_id"},
        {"SELECT set_config('work_mem', '8MB', true)", 0, ""},
        {"SELECT set_config('work_mem', '8MB', 'on')", 0, ""},
        {"SELECT 1 FROM t WHERE a = (SELECT set_config('a.b', 'x', false)) AND b = "
         "lower(set_config('c.d', 'y', false))",
         0, "a.b,c.d"},
        {"UPDATE t SET a = set_config('statement_timeout', '5s', false)", 0, "statement_timeout"},
        {"WITH x AS (SELECT set_config('a.b', $1, false)) SELECT * FROM x", 0, "a.b"},
        /* ... anything only known when it runs is opaque */
        {"SELECT set_config(name, 'x', false) FROM t", SL_STATE_OPAQUE, ""},
        {"SELECT set_config('work_mem', '8MB', $1)", SL_STATE_OPAQUE, ""},
        {"SELECT set_config($1, $2, false)", SL_STATE_OPAQUE, ""},
        {"SELECT set_config('work_mem', '8MB', 1 = 0)", SL_STATE_OPAQUE, ""},
        {"SELECT set_config('a b', 'x', false)", SL_STATE_OPAQUE, ""},
        {"SELECT set_config('work_mem', '8MB')", SL_STATE_OPAQUE, ""},
        {"SELECT set_config(setting_name => 'a.b', new_value => 'x', is_local => false)",
         SL_STATE_OPAQUE, ""},
        {"SELECT set_config('work_mem', '8MB', false::bool)", SL_STATE_OPAQUE, ""},
        /* SET SESSION CHARACTERISTICS sets the transaction defaults */
        {"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", 0,
         "default_transaction_read_only"},
        {"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE, "
         "DEFERRABLE",
         0,
         "default_transaction_isolation,default_transaction_read_only,"
         "default_transaction_deferrable"},
        {"SET TRANSACTION READ ONLY", 0, ""},
        /* functions that are not built-ins */
        {"SELECT my_func()", SL_STATE_OPAQUE, ""},
        {"SELECT * FROM my_srf(1)", SL_STATE_OPAQUE, ""},
        {"SELECT public.lower('x')", SL_STATE_OPAQUE, ""},
        {"SELECT \"Lower\"('x')", SL_STATE_OPAQUE, ""},
        {"SELECT a.b.c(1)", SL_STATE_OPAQUE, ""},
        {"INSERT INTO t VALUES (my_func())", SL_STATE_OPAQUE, ""},
        {"INSERT INTO t (a) VALUES (1), (audit.log_it())", SL_STATE_OPAQUE, ""},
        {"UPDATE t SET a = app_next(a) WHERE id = 1", SL_STATE_OPAQUE, ""},
        {"DELETE FROM t WHERE id IN (SELECT f(1))", SL_STATE_OPAQUE, ""},
        {"INSERT INTO t SELECT \"f\"(1)", SL_STATE_OPAQUE, ""},
        {"SELECT count(*) FILTER (WHERE my_pred(x)) FROM t", SL_STATE_OPAQUE, ""},
        {"SELECT lower(upper(my_func('a')))", SL_STATE_OPAQUE, ""},
        {"SELECT set_config('a.b', my_func(), false)", SL_STATE_OPAQUE, "a.b"},
        /* non-ASCII names are one identifier, as PostgreSQL's lexer reads them */
        {"UPDATE t SET x = caf\xc3\xa9('v')", SL_STATE_OPAQUE, ""},
        {"INSERT INTO t VALUES (\xe9\x96\xa2\xe6\x95\xb0('a'))", SL_STATE_OPAQUE, ""},
        {"UPDATE t SET x = \xc3\xa9" "abs(1)", SL_STATE_OPAQUE, ""},
        /* keywords that may also name a user's function */
        {"UPDATE t SET x = filter(1)", SL_STATE_OPAQUE, ""},
        {"UPDATE t SET x = over(1)", SL_STATE_OPAQUE, ""},
        {"INSERT INTO t VALUES (conflict(1))", SL_STATE_OPAQUE, ""},
        {"UPDATE t SET x = by(1)", SL_STATE_OPAQUE, ""},
        /* dblink's named connections outlive DISCARD ALL: the server is closed */
        {"SELECT dblink_connect('c', 'dbname=x')", SL_STATE_OPAQUE | SL_STATE_UNRESETTABLE, ""},
        {"SELECT public.dblink_connect_u('c', 'dbname=x')",
         SL_STATE_OPAQUE | SL_STATE_UNRESETTABLE, ""},
        /* built-ins, also the ones spelled as syntax */
        {"SELECT lower('X'), pg_catalog.upper('x'), now(), count(*) FROM t", 0, ""},
        {"SELECT extract(year FROM now()), substring('abc' FROM 2), trim(both 'x' FROM 'y'), "
         "position('a' IN 'b'), overlay('abc' PLACING 'x' FROM 2)",
         0, ""},
        {"SELECT now() AT TIME ZONE 'utc', 'a' SIMILAR TO 'b', 'a' LIKE 'b' ESCAPE 'c', "
         "(1, 2) OVERLAPS (3, 4), COLLATION FOR ('a'), 'a' IS NORMALIZED",
         0, ""},
        {"INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, "
         "CURRENT_TIMESTAMP)",
         0, ""},
        {"INSERT INTO s.t (a, b) VALUES (lower('x'), '1'::numeric(10, 2))", 0, ""},
        {"UPDATE t SET (a, b) = (1, 2) WHERE id IN (1, 2) AND c = ANY (ARRAY[1])", 0, ""},
        {"INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = coalesce(excluded.b, 0)", 0,
         ""},
        /* state a reset leaves: the server is closed */
        {"SELECT setseed(0.5)", SL_STATE_UNRESETTABLE, ""},
        {"SELECT pg_create_physical_replication_slot('s', true, true)", SL_STATE_UNRESETTABLE, ""},
        /* advisory locks wherever they are called */
        {"INSERT INTO t SELECT pg_advisory_lock(1)", SL_STATE_ADVISORY_LOCK, ""},
        {"UPDATE t SET a = pg_try_advisory_lock(2)", SL_STATE_ADVISORY_LOCK, ""},
        {"DELETE FROM t WHERE pg_advisory_unlock_all() IS NULL", SL_STATE_ADVISORY_UNLOCK_ALL, ""},
    };
    for (size_t k = 0; k < sizeof oc / sizeof *oc; k++) {
        sl_sql_info_t pa, fa;
        sl_sql_parse(oc[k].sql, SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &pa);
        if (pa.invalid || pa.state != oc[k].state || strcmp(pa.set_names, oc[k].set_names))
            fprintf(stderr, "%s: state %u, set_names \"%s\"%s\n", oc[k].sql, pa.state, pa.set_names,
                    pa.invalid ? " (rejected)" : "");
        ASSERT_TRUE(!pa.invalid);
        ASSERT_EQ(pa.state, oc[k].state);
        ASSERT_STREQ(pa.set_names, oc[k].set_names);
        ASSERT_TRUE(!pa.reset_all);
        if (sl_sql_fast(oc[k].sql, &fa)) {
            if (fa.state != pa.state || strcmp(fa.set_names, pa.set_names))
                fprintf(stderr, "fast path disagrees on: %s\n", oc[k].sql);
            ASSERT_EQ(fa.state, pa.state);
            ASSERT_STREQ(fa.set_names, pa.set_names);
        }
    }
    /* The fast path still answers the common writes with built-ins. */
    sl_sql_info_t i;
    ASSERT_TRUE(sl_sql_fast("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES "
                            "(1, 2, 3, 4, CURRENT_TIMESTAMP)",
                            &i));
    ASSERT_TRUE(sl_sql_fast("UPDATE t SET a = lower(b) WHERE id = 1", &i));
    ASSERT_TRUE(!sl_sql_fast("UPDATE t SET a = f(b) WHERE id = 1", &i));

    /* stateless_functions: names in any schema, schema.name, * suffix. */
    const char *trust = "app_*, audit.log_it, f, ext.*";
    struct {
        const char *sql;
        bool opaque;
    } tr[] = {
        {"SELECT app_next(1)", false},    {"SELECT app.app_next(1)", false},
        {"SELECT audit.log_it()", false}, {"SELECT log_it()", true},
        {"SELECT other.log_it()", true},  {"SELECT f(1), g(2)", true},
        {"SELECT public.f(1)", false},    {"SELECT set_config(n, 'x', false) FROM t", true},
        {"SELECT ext.st_x(1)", false},    {"SELECT st_x(1)", true},
    };
    for (size_t k = 0; k < sizeof tr / sizeof *tr; k++) {
        sl_sql_parse(tr[k].sql, "", trust, &i);
        if (!!(i.state & SL_STATE_OPAQUE) != tr[k].opaque)
            fprintf(stderr, "stateless_functions = %s: %s\n", trust, tr[k].sql);
        ASSERT_EQ(!!(i.state & SL_STATE_OPAQUE), tr[k].opaque);
    }

    /* The list is sorted for bsearch and holds what it must. */
    for (size_t k = 1; k < sl_sql_builtin_count; k++)
        ASSERT_TRUE(strcmp(sl_sql_builtin_names[k - 1], sl_sql_builtin_names[k]) < 0);
    ASSERT_TRUE(sl_sql_builtin("set_config") && sl_sql_builtin("abs") &&
                sl_sql_builtin("xpath_exists") && sl_sql_builtin("RI_FKey_check_ins"));
    ASSERT_TRUE(!sl_sql_builtin("my_func") && !sl_sql_builtin("") && !sl_sql_builtin("LOWER"));
}

/* What RESET puts back, in the order of the text: each name's last change
 * after the last RESET ALL / DISCARD ALL. */
static void resets(void) {
    struct {
        const char *sql;
        bool all;
        const char *resets;
    } r[] = {
        {"RESET datestyle", false, "-datestyle"},
        {"SET datestyle TO DEFAULT", false, "-datestyle"},
        {"SET datestyle = DEFAULT", false, "-datestyle"},
        {"SET SESSION TimeZone TO DEFAULT", false, "-timezone"},
        {"RESET TIME ZONE", false, "-timezone"},
        {"SET LOCAL datestyle TO DEFAULT", false, ""},
        {"SET datestyle = 'ISO'", false, ""},
        {"RESET datestyle; SET datestyle = 'ISO'", false, ""},
        {"SET datestyle = 'ISO'; RESET datestyle", false, "-datestyle"},
        {"RESET ALL", true, ""},
        {"DISCARD ALL", true, ""},
        {"SET timezone = 'UTC'; RESET ALL", true, ""},
        {"RESET ALL; SET timezone = 'UTC'", true, "+timezone"},
        {"DISCARD ALL; SET timezone = 'UTC'; RESET datestyle", true, "+timezone,-datestyle"},
        {"RESET ALL; SET timezone = 'UTC'; RESET timezone", true, "-timezone"},
        {"RESET ALL; SELECT pg_catalog.set_config('timezone', 'UTC', false)", true, "+timezone"},
        {"SELECT 1", false, ""},
    };
    for (size_t k = 0; k < sizeof r / sizeof *r; k++) {
        sl_sql_info_t i;
        sl_sql_parse(r[k].sql, SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &i);
        if (i.resets_all != r[k].all || strcmp(i.resets, r[k].resets) != 0)
            fprintf(stderr, "resets of: %s: all=%d \"%s\"\n", r[k].sql, i.resets_all, i.resets);
        ASSERT_TRUE(i.resets_all == r[k].all);
        ASSERT_TRUE(strcmp(i.resets, r[k].resets) == 0);
        ASSERT_TRUE(!i.resets_overflow);
    }
}

static void cache(void) {
    static sl_sql_cache_t c;
    sl_sql_info_t i;
    sl_sql_classify(&c, "SELECT nextval('x')", SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &i);
    ASSERT_TRUE(!i.read_only && i.parsed);
    ASSERT_EQ(c.misses, 1);
    /* The same text again, as the relay asks after the router: the memo
     * of the last answer. */
    sl_sql_classify(&c, "SELECT nextval('x')", SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &i);
    ASSERT_TRUE(!i.read_only && i.parsed);
    ASSERT_EQ(c.last_hits, 1);
    ASSERT_EQ(c.hits + c.misses, 1);
    sl_sql_classify(&c, "SELECT 1", SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &i);
    ASSERT_TRUE(i.read_only && !i.parsed); /* fast path, no cache use */
    ASSERT_EQ(c.hits + c.misses, 1);
    sl_sql_classify(&c, "SELECT nextval('x')", SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &i);
    ASSERT_TRUE(!i.read_only);
    ASSERT_EQ(c.hits, 1);
    /* A text that only starts like the last one is not it. */
    sl_sql_classify(&c, "SELECT nextval('x'); SELECT 1", SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &i);
    ASSERT_EQ(c.last_hits, 1);
    ASSERT_EQ(c.misses, 2);
}

/* FNV-1a 64, the cache's unkeyed hash before SipHash: here only to prove
 * the pairs below collide under it, so the test would fail with it. */
static uint64_t fnv1a64(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h;
}

/* Two texts of the same length and the same FNV-1a hash: a client who
 * sends the stateless first and the state-making second must not have the
 * second answered from the first's cache slot (its server would then go to
 * the next client with a temp table or a search_path unreset). The comments
 * were searched for offline; any keyless 64-bit hash has such pairs. */
static void cache_collision(void) {
    static const char *const pairs[][2] = {
        {"SELECT count(*) FROM pg_class /* 2cfb85f616fd0160 */",
         "CREATE TEMP TABLE tmp (a int) /* 8c9e379bb9760446 */"},
        {"SELECT current_schemas(true) /* 1fd748c1512fef29 */",
         "SET search_path TO 'pg_temp' /* bac55f888650ece0 */"},
    };
    for (size_t k = 0; k < sizeof pairs / sizeof *pairs; k++) {
        const char *safe = pairs[k][0], *state = pairs[k][1];
        ASSERT_EQ(strlen(safe), strlen(state));
        ASSERT_TRUE(fnv1a64(safe) == fnv1a64(state));
        static sl_sql_cache_t c;
        memset(&c, 0, sizeof c);
        sl_sql_info_t a, b, fresh;
        sl_sql_classify(&c, safe, SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &a);
        ASSERT_TRUE(a.state == 0 && a.parsed);
        sl_sql_classify(&c, state, SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &b);
        sl_sql_parse(state, SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &fresh);
        /* The second makes session state (a temp table; a SET tracked by
         * name), the first none, and the cache answers the second as the
         * parser does. */
        ASSERT_TRUE(fresh.state != 0 || fresh.set_names[0] != '\0');
        ASSERT_TRUE(a.set_names[0] == '\0');
        ASSERT_EQ(b.state, fresh.state);
        ASSERT_TRUE(strcmp(b.set_names, fresh.set_names) == 0);
        ASSERT_EQ(b.read_only, fresh.read_only);
        ASSERT_EQ(c.hits, 0);
        ASSERT_EQ(c.misses, 2);
    }
}

/* Nesting must not make the scan of calls quadratic: 5 columns of abs()
 * nested 4,000 deep (100 kB) took 3.9 s of CPU on the loop when each call's
 * arguments were walked again; now about 0.02 s. The bound is CPU time and
 * far above the cost seen (0.2 s under ASan), so that load cannot make it
 * flake, and far below the old cost. */
static void deep_nesting(void) {
    int cols = 5, depth = 4000;
    char *q = malloc((size_t)cols * depth * 6 + 64), *p = q;
    ASSERT_TRUE(q != NULL);
    p += sprintf(p, "SELECT ");
    for (int c = 0; c < cols; c++) {
        if (c) p += sprintf(p, ", ");
        for (int d = 0; d < depth; d++) p += sprintf(p, "abs(");
        *p++ = '1';
        memset(p, ')', (size_t)depth);
        p += depth;
    }
    *p = '\0';
    struct timespec a, b;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    sl_sql_info_t i;
    sl_sql_parse(q, SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &i);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    double took = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
    printf("deep nesting: %zu bytes classified in %.3f s of CPU\n", strlen(q), took);
    ASSERT_TRUE(!i.invalid && i.read_only && i.state == 0);
    ASSERT_TRUE(took < 2.0);
    free(q);
}

/* SQL that names a prepared statement in sluice's namespace, however it
 * is spelled; a name that only looks so in a string, a quoted name in
 * other case, or another statement kind is not. */
static void pooler_names(void) {
    static const struct {
        const char *sql;
        bool names;
    } pn[] = {
        {"DEALLOCATE sluice_1", true},
        {"deallocate prepare \"sluice_17\"", true},
        {"/* x */ DEALLOCATE SLUICE_2;", true},
        {"EXECUTE sluice_3(1, 2)", true},
        {"EXPLAIN ANALYZE EXECUTE sluice_4", true},
        {"CREATE TABLE t AS EXECUTE sluice_5", true},
        {"PREPARE sluice_6 AS SELECT 1", true},
        {"SELECT 1; DEALLOCATE sluice_7", true},
        {"DEALLOCATE \"SLUICE_8\"", false},
        {"DEALLOCATE mine", false},
        {"DEALLOCATE ALL", false},
        {"SELECT 'DeallocateStmt\":{\"name\":\"sluice_9'", false},
        {"SELECT sluice_10 FROM t", false},
    };
    for (size_t k = 0; k < sizeof pn / sizeof *pn; k++) {
        sl_sql_info_t i;
        sl_sql_parse(pn[k].sql, SL_SQL_DEFAULT_WRITE_FUNCTIONS, "", &i);
        if (i.names_pooler_statement != pn[k].names) fprintf(stderr, "%s\n", pn[k].sql);
        ASSERT_EQ(i.names_pooler_statement, pn[k].names);
    }
}

int main(void) {
    pooler_names();
    corpus_agrees();
    deep_nesting();
    details();
    opaque_calls();
    resets();
    cache();
    cache_collision();
    return check_done("test_sql");
}
