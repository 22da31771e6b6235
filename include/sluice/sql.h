/* SQL analysis for routing and session-state tracking: is a query string
 * something a read replica may run, does it open a (read-only) transaction,
 * which session state does it create or clear, and does it carry a routing
 * hint. A cheap scan of the first keyword answers the obvious cases; the
 * real PostgreSQL grammar (libpg_query) decides the rest; a small cache
 * remembers the parser's answers by text. Pure: no I/O, no libuv. */
#ifndef SLUICE_SQL_H
#define SLUICE_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sl_sql_hint { SL_HINT_NONE, SL_HINT_PRIMARY, SL_HINT_REPLICA };

/* The prefix of the server-side names of statements sluice prepares (kept
 * equal to SL_STMT_PREFIX in stmt.h; sql is below stmt). */
#define SL_SQL_POOLER_PREFIX "sluice_"

/* Session state a statement creates (pins a client to its server in
 * transaction pooling) or clears. */
enum {
    SL_STATE_LISTEN = 1 << 0,
    SL_STATE_UNLISTEN_ALL = 1 << 1,
    SL_STATE_TEMP_OBJECT = 1 << 2,
    SL_STATE_PREPARE = 1 << 3,
    SL_STATE_DEALLOCATE_ALL = 1 << 4,
    SL_STATE_HOLD_CURSOR = 1 << 5,
    SL_STATE_CLOSE_ALL = 1 << 6,
    SL_STATE_ADVISORY_LOCK = 1 << 7,
    SL_STATE_ADVISORY_UNLOCK_ALL = 1 << 8,
    SL_STATE_DISCARD_ALL = 1 << 9,
    /* Runs code whose session state sluice cannot see (DO, CALL, a call to
     * a function that is not a PostgreSQL built-in, set_config() with a
     * name or flag only known when it runs): its server is reset when the
     * client leaves it; no pin. */
    SL_STATE_OPAQUE = 1 << 10,
    /* Changes session state that a reset (DISCARD ALL) leaves in place:
     * setseed(), a replication origin session, a replication slot, a base
     * backup. Its server is closed when the client leaves it. */
    SL_STATE_UNRESETTABLE = 1 << 11,
};

typedef struct sl_sql_info {
    bool read_only;       /* every statement may run on a read replica */
    bool begin;           /* opens a transaction block */
    bool begin_read_only; /* ... declared READ ONLY (or SET TRANSACTION READ ONLY) */
    bool parsed;          /* answered by the parser, not the fast path */
    bool invalid;         /* the parser rejected it (the server will too) */
    /* PREPARE, EXECUTE (also under EXPLAIN or CREATE TABLE AS) or
     * DEALLOCATE of a name starting with SL_SQL_POOLER_PREFIX: in
     * transaction pooling those are the names sluice prepares shared
     * statements under on its servers (stmt.h), never the client's. */
    bool names_pooler_statement;
    enum sl_sql_hint hint;
    uint32_t state;      /* SL_STATE_* */
    bool reset_all;      /* RESET ALL (or more SETs than set_names holds) */
    char set_names[120]; /* session-level SET/RESET targets, comma-separated */
    /* What RESET lands on is the server's login value, which for a pooled
     * server is sluice's, not the client's: sluice puts back the client's
     * own startup values afterwards, and needs the order of the text for it. */
    bool resets_all;      /* RESET ALL or DISCARD ALL (session level) */
    bool resets_overflow; /* more changes than `resets` holds */
    char resets[120];     /* each name's last session-level change, after the last
                             RESET ALL/DISCARD ALL: "-name" a RESET (or SET ... TO
                             DEFAULT), "+name" a value set after RESET ALL; commas */
} sl_sql_info_t;

/* Functions whose call makes a SELECT a write, unless configured otherwise.
 * A trailing * matches any suffix. */
#define SL_SQL_DEFAULT_WRITE_FUNCTIONS                                                             \
    "nextval, setval, pg_advisory_lock*, pg_advisory_xact_lock*, pg_try_advisory_lock*, "          \
    "pg_try_advisory_xact_lock*, lo_*, txid_current, pg_current_xact_id, pg_notify"

/* Answers from the first keyword when that is enough; false otherwise. */
bool sl_sql_fast(const char *sql, sl_sql_info_t *out);
/* Answers with the PostgreSQL grammar. write_functions: comma list.
 * stateless_functions: comma list (a trailing * matches any suffix) of
 * functions that are not built-ins but that the operator trusts to leave no
 * session state; a call to any other non-built-in is SL_STATE_OPAQUE. */
void sl_sql_parse(const char *sql, const char *write_functions, const char *stateless_functions,
                  sl_sql_info_t *out);

/* PostgreSQL's built-in function names (pg_catalog, made by initdb), sorted
 * by strcmp(); generated into sql_builtins.c by tests/gen_builtins.sh. */
extern const char *const sl_sql_builtin_names[];
extern const size_t sl_sql_builtin_count;
/* Whether name (as the parser folded it) is one of them. */
bool sl_sql_builtin(const char *name);

/* A direct-mapped cache of parser answers keyed by a hash of the text. */
#define SL_SQL_CACHE_SLOTS 1024
/* Longest text the last-answer memo keeps (bytes, without the NUL). */
#define SL_SQL_LAST_MAX 511
typedef struct sl_sql_cache {
    struct {
        uint64_t hash; /* 0: empty */
        uint32_t len;
        sl_sql_info_t info;
    } slot[SL_SQL_CACHE_SLOTS];
    uint64_t hits, misses;
    /* The last text classified and its answer (fast path or parser): the
     * router classifies a request before it is relayed, and the relay's
     * session-state tracking then asks about the same text again. Compared
     * byte for byte, so a hit is exact. */
    struct {
        uint32_t len; /* bytes of text; 0: empty */
        sl_sql_info_t info;
        char text[SL_SQL_LAST_MAX + 1];
    } last;
    uint64_t last_hits; /* answers the memo gave */
} sl_sql_cache_t;

/* The last answer if sql is the text classified last, else fast path,
 * then cache, then parser (whose answer is cached). */
void sl_sql_classify(sl_sql_cache_t *cache, const char *sql, const char *write_functions,
                     const char *stateless_functions, sl_sql_info_t *out);

#endif
