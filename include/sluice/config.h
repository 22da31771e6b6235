/* The configuration: parsing sluice.ini (PgBouncer's format and key names)
 * with inih, defaults, validation with file:line errors. One option table
 * drives parsing and defaults. A config is immutable once loaded; a reload
 * parses a new one and swaps it in. Pure: no libuv. */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/cancelkey.h"
#include "sluice/err.h"

enum sl_pool_mode { SL_POOL_SESSION, SL_POOL_TRANSACTION, SL_POOL_STATEMENT };
enum sl_auth_type { SL_AUTH_ANY, SL_AUTH_TRUST, SL_AUTH_PLAIN, SL_AUTH_MD5, SL_AUTH_SCRAM,
                    SL_AUTH_CERT, SL_AUTH_HBA };
enum sl_pin_mode { SL_PIN_OFF, SL_PIN_ON, SL_PIN_ERROR };

extern const char *const sl_pool_mode_names[];
extern const char *const sl_auth_type_names[];
extern const char *const sl_pin_mode_names[];
extern const char *const sl_tls_mode_names[];
enum sl_tls_mode { SL_TLS_DISABLE, SL_TLS_ALLOW, SL_TLS_PREFER, SL_TLS_REQUIRE, SL_TLS_VERIFY_CA,
                   SL_TLS_VERIFY_FULL };
/* Where a database's transactions go: everything to the primary, reads to
 * replicas and writes to the primary, or everything to replicas. */
enum sl_routing { SL_ROUTE_PRIMARY, SL_ROUTE_AUTO, SL_ROUTE_REPLICA };
enum sl_balance { SL_LB_LEAST_OUTSTANDING, SL_LB_LATENCY, SL_LB_ROUND_ROBIN, SL_LB_RANDOM };
extern const char *const sl_routing_names[];
extern const char *const sl_balance_names[];

#define SL_MAX_REPLICAS 15
/* server_check_query's value for PgBouncer's empty-query check. */
#define SL_CHECK_EMPTY_QUERY "<empty>"

typedef struct sl_replica_cfg {
    char host[256];
    int port;
    int weight; /* 1..100 */
} sl_replica_cfg_t;

typedef struct sl_db_cfg {
    char *name;                    /* owned; "*" is the fallback entry */
    int nkv;                       /* libpq connection parameters below */
    char **keys, **vals;           /* owned arrays of owned strings */
    int pool_size;                 /* -1: default_pool_size */
    int min_pool_size;             /* -1: global */
    int reserve_pool_size;         /* -1: global */
    int max_db_connections;        /* -1: global */
    int max_db_client_connections; /* clients logged in to it at once; -1: global, 0: no cap */
    int64_t query_wait_timeout_ms; /* -1: global (a user's own value wins) */
    int pool_mode;                 /* -1: global or user's */
    int routing;                   /* enum sl_routing; -1: auto with replicas, else primary */
    int load_balance;              /* enum sl_balance; -1: global */
    sl_replica_cfg_t *replicas; /* owned array, NULL without: replicas = host:port[:weight],... */
    int nreplicas;
    int line;               /* where it was defined */
} sl_db_cfg_t;

/* A [peers] line: another sluice instance of the group, to which a
 * CancelRequest whose key names its peer_id is forwarded (PgBouncer's
 * peering). "<id> = host=... port=... pool_size=...". */
typedef struct sl_peer_cfg {
    int id;         /* 1..SL_CANCELKEY_PEER_MAX: the peer_id of that instance */
    char host[256]; /* host name or address; a Unix socket directory when it starts with '/' */
    int port;       /* TCP port, or the number of the socket file .s.PGSQL.<port>; 6432 unset */
    int pool_size;  /* forwards to it in flight at once, per worker; 0: only the worker's cap */
    int line;       /* where it was defined */
} sl_peer_cfg_t;

/* [users] keys. Each -1 when the line does not set it; an explicit 0
 * turns a timeout or client cap off for that user. */
typedef struct sl_user_cfg {
    char *name;                      /* owned */
    int pool_mode;                   /* wins over the database's */
    int pool_size;                   /* servers per pool; wins over the database's (PgBouncer) */
    int reserve_pool_size;           /* wins over the database's */
    int max_user_connections;        /* servers of this user, all pools */
    int max_user_client_connections; /* clients logged in as this user at once */
    int64_t query_timeout_ms, query_wait_timeout_ms, idle_transaction_timeout_ms;
    int64_t transaction_timeout_ms, client_idle_timeout_ms;
} sl_user_cfg_t;

/* What applies to clients of one database entry logged in as one user:
 * PgBouncer's precedence, a user's value over the database's over the
 * global one (pool_mode, pool_size, reserve_pool_size, query_wait_timeout);
 * min_pool_size and max_db_* from the database, the rest from the user.
 * Caps and timeouts: 0 is none. */
typedef struct sl_limits {
    int pool_mode;                                              /* enum sl_pool_mode */
    int pool_size, min_pool_size, reserve_pool_size;            /* servers */
    int max_db_connections, max_user_connections;               /* servers */
    int max_db_client_connections, max_user_client_connections; /* logged-in clients */
    int64_t query_wait_timeout_ms, query_timeout_ms, idle_transaction_timeout_ms;
    int64_t transaction_timeout_ms, client_idle_timeout_ms;
} sl_limits_t;

typedef struct sl_config {
    char *path; /* owned; the file it came from */
    /* listening */
    char *listen_addr;
    int listen_port;
    char *unix_socket_dir;
    int listen_backlog;
    bool so_reuseport; /* TCP listeners bind with SO_REUSEPORT: another sluice may share the port */
    /* this instance's id in a group of peered instances, named in every
     * cancel key it hands out (1..SL_CANCELKEY_PEER_MAX); 0: no peering.
     * Fixed at start-up: a reload that changes it fails. */
    int peer_id;
    /* auth */
    int auth_type; /* enum sl_auth_type */
    char *auth_file;
    char *auth_hba_file; /* pg_hba.conf-style rules, for auth_type = hba */
    char *auth_user;     /* looks up users missing from auth_file with auth_query */
    char *auth_query;    /* $1 is the user name */
    char *auth_dbname;   /* database to run it in; empty: the client's */
    int64_t auth_cache_ttl_ms; /* how long an answer is reused */
    char *admin_users, *stats_users; /* comma lists, for the admin console (not yet served) */
    /* pools */
    int pool_mode; /* enum sl_pool_mode */
    int default_pool_size, min_pool_size, reserve_pool_size;
    int64_t reserve_pool_timeout_ms;
    int max_client_conn, max_db_connections, max_user_connections;
    int max_db_client_connections, max_user_client_connections; /* logged-in clients; 0: no cap */
    char *server_reset_query;
    bool server_reset_query_always;
    /* run on a server idle past server_check_delay before reuse: "" no
     * check, "<empty>" (the default, as PgBouncer's) an empty query */
    char *server_check_query;
    int64_t server_check_delay_ms, server_idle_timeout_ms, server_lifetime_ms;
    int64_t server_connect_timeout_ms, server_login_retry_ms;
    /* clients */
    int64_t query_wait_timeout_ms, query_timeout_ms, client_idle_timeout_ms;
    int64_t client_login_timeout_ms, idle_transaction_timeout_ms;
    /* close a client whose transaction stays open this long (0: never) */
    int64_t transaction_timeout_ms;
    /* one NOTICE to a client that has waited this long for a server (0: none) */
    int64_t query_wait_notify_ms;
    /* close a client whose message stays incomplete this long (0: never) */
    int64_t client_partial_message_timeout_ms;
    int64_t autodb_idle_timeout_ms; /* free a '*' pool unused this long */
    /* TLS towards clients (sluice's own, OpenSSL) and backends (libpq's) */
    int client_tls_sslmode; /* enum sl_tls_mode */
    char *client_tls_key_file, *client_tls_cert_file, *client_tls_ca_file;
    char *client_tls_protocols, *client_tls_ciphers, *client_tls13_ciphers;
    char *client_tls_dheparams, *client_tls_ecdhcurve;
    int server_tls_sslmode; /* enum sl_tls_mode */
    char *server_tls_ca_file, *server_tls_cert_file, *server_tls_key_file, *server_tls_protocols;
    int pkt_buf;         /* bytes per direction of an active connection */
    int max_packet_size; /* bytes of body; longest client message accepted */
    int max_prepared_statements; /* per server, in transaction/statement pooling; 0: off */
    /* bytes: longest Parse (and head of a Bind, Describe, Close) statement
     * tracking holds whole to rename; a longer named Parse is refused */
    int max_rewrite_size;
    int max_client_prepared_statements; /* named statements one client may hold */
    int max_client_prepared_bytes;      /* bytes of their text, all together */
    char *ignore_startup_parameters;
    int pin_session_state; /* enum sl_pin_mode */
    char *track_extra_parameters; /* more reported parameters to follow per client */
    /* replicas and routing */
    int load_balance;             /* enum sl_balance */
    int64_t max_replica_lag;      /* bytes of WAL behind the primary; 0: no limit */
    int64_t max_replica_lag_time_ms; /* replay delay; 0: no limit */
    int64_t health_check_period_ms, health_check_timeout_ms, lsn_poll_period_ms;
    int health_check_failures;    /* failed checks in a row that eject a backend */
    bool read_your_writes;
    char *write_functions;        /* calls that make a SELECT a write */
    /* functions (not built-ins) trusted to leave no session state: a call
     * to any other marks its server for a reset; comma list, * suffix */
    char *stateless_functions;
    /* addr:port of the HTTP endpoint for /metrics, /health and /ready; empty: off.
     * Read at start-up only (a reload keeps the running value). */
    char *metrics_listen;
    /* logging and process */
    char *logfile, *pidfile;
    int verbose;
    bool log_connections, log_disconnections;
    bool log_stats;          /* log a stats line every stats_period */
    int64_t stats_period_ms; /* how often */
    /* SIGTERM / SHUTDOWN WAIT_FOR_CLIENTS: this long after the shutdown
     * began, transaction-pooled clients are closed between transactions
     * (0: never, wait for every client to leave) */
    int64_t shutdown_grace_period_ms;
    int workers; /* threads, each its own loop; 0: one per online CPU (workers.c) */
    /* sections */
    sl_db_cfg_t *dbs; /* owned array */
    int ndbs;
    sl_user_cfg_t *users; /* owned array */
    int nusers;
    sl_peer_cfg_t *peers; /* owned array: [peers], in file order (our own id may be there) */
    int npeers;
} sl_config_t;

/* Loads and validates path. On failure returns NULL and writes every error
 * into err, one "file:line: message" line each ("file: message" for what
 * no single line caused), separated by '\n' with none at the end; what
 * does not fit is counted on a last line. */
sl_config_t *sl_config_load(const char *path, char *err, size_t errlen);
/* Same from a string (tests); name is used in error messages. */
sl_config_t *sl_config_load_string(const char *name, const char *text, char *err, size_t errlen);
void sl_config_free(sl_config_t *cfg);

/* Splits "host:port", "[v6addr]:port" or "*:port" into host (cap bytes,
 * without the brackets) and port (1..65535). SL_OK or SL_ECONFIG. */
int sl_config_parse_hostport(const char *v, char *host, size_t cap, int *port) SL_MUST_USE;

const sl_db_cfg_t *sl_config_find_db(const sl_config_t *cfg, const char *name);
/* The entry clients of database `name` are served by: its own, else the '*'
 * entry (*automatic set), else NULL. */
const sl_db_cfg_t *sl_config_serving_db(const sl_config_t *cfg, const char *name, bool *automatic);
const sl_user_cfg_t *sl_config_find_user(const sl_config_t *cfg, const char *name);
/* The [peers] entry of peer_id id, NULL when there is none. */
const sl_peer_cfg_t *sl_config_find_peer(const sl_config_t *cfg, int id);
const char *sl_db_cfg_get(const sl_db_cfg_t *db, const char *key);
/* The limits of clients of db (an entry of cfg) logged in as user. */
void sl_config_limits(const sl_config_t *cfg, const sl_db_cfg_t *db, const char *user,
                      sl_limits_t *out);
/* The text server_check_query sends, or NULL when checks are off. */
const char *sl_config_check_query(const sl_config_t *cfg);
/* The routing a database ends up with (its own, or auto with replicas). */
int sl_db_cfg_routing(const sl_db_cfg_t *db);

/* The [sluice] keys, for the admin console's SHOW CONFIG and SET, by index
 * from 0 to sl_config_nkeys() - 1 (the option table's order). */
int sl_config_nkeys(void);
const char *sl_config_key(int i);
const char *sl_config_key_default(int i);
/* Index of key (case-insensitive), -1 when there is no such key. */
int sl_config_key_index(const char *key);
/* How a key changes on a running sluice. */
enum sl_key_change {
    SL_KEY_SET,    /* SET, RELOAD and SIGHUP apply it */
    SL_KEY_RELOAD, /* files are read for it: RELOAD and SIGHUP apply it, SET does not */
    SL_KEY_RESTART /* kept from start-up: only a restart applies it */
};
enum sl_key_change sl_config_key_change(int i);
/* The value of key i in cfg as the file would give it (times in seconds). */
void sl_config_key_value(const sl_config_t *cfg, int i, char *buf, size_t cap);
/* Parses value for key i into cfg, as a line of the file would; SL_OK, or
 * SL_ECONFIG with the reason in err (cfg unchanged then). */
int sl_config_set_key(sl_config_t *cfg, int i, const char *value, char *err, size_t errlen);

#endif
