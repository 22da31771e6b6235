/* config: defaults, every section, and the file:line errors. */
#include <unistd.h>

#include "sluice/config.h"
#include "sluice/strlist.h"
#include "unit/check.h"

static sl_config_t *load(const char *text, char *err) {
    return sl_config_load_string("t.ini", text, err, 512);
}

static void test_defaults(void) {
    char err[512] = "";
    sl_config_t *c = load("[sluice]\nauth_type = trust\n", err);
    ASSERT_TRUE(c != NULL);
    if (!c) return;
    ASSERT_EQ(c->listen_port, 6432);
    ASSERT_EQ(c->default_pool_size, 20);
    ASSERT_EQ(c->max_client_conn, 100);
    ASSERT_EQ(c->pool_mode, SL_POOL_SESSION);
    ASSERT_EQ(c->query_wait_timeout_ms, 120000);
    ASSERT_EQ(c->client_partial_message_timeout_ms, 30000);
    ASSERT_EQ(c->server_lifetime_ms, 3600000);
    ASSERT_STREQ(c->server_reset_query, "DISCARD ALL");
    ASSERT_STREQ(c->unix_socket_dir, "/tmp");
    ASSERT_TRUE(c->log_connections);
    /* What one client can make sluice hold: PostgreSQL's own message limit,
     * 1 MiB of a message to rewrite, 10,000 statements of 64 MiB in all. */
    ASSERT_EQ(c->max_packet_size, 1073741818);
    ASSERT_EQ(c->max_rewrite_size, 1048576);
    ASSERT_EQ(c->max_client_prepared_statements, 10000);
    ASSERT_EQ(c->max_client_prepared_bytes, 67108864);
    ASSERT_STREQ(c->stateless_functions, "");
    sl_config_free(c);
}

static void test_full(void) {
    char err[512] = "";
    const char *text = "; comment\n"
                       "[databases]\n"
                       "app = host=db1 port=5433 dbname=real pool_size=7 pool_mode=transaction\n"
                       "quoted = host=h password='a b\\'c' max_db_connections=3\n"
                       "* = host=127.0.0.1\n"
                       "[users]\n"
                       "bob = pool_mode=statement max_user_connections=4\n"
                       "[pgbouncer]\n"
                       "listen_addr = *\n"
                       "listen_port = 7000\n"
                       "auth_type = scram-sha-256\n"
                       "auth_file = /etc/userlist.txt\n"
                       "query_wait_timeout = 1.5\n"
                       "client_partial_message_timeout = 0.5\n"
                       "log_connections = 0\n"
                       "ignore_startup_parameters = extra_float_digits, search_path\n";
    sl_config_t *c = load(text, err);
    ASSERT_TRUE(c != NULL);
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    ASSERT_EQ(c->listen_port, 7000);
    ASSERT_EQ(c->auth_type, SL_AUTH_SCRAM);
    ASSERT_EQ(c->query_wait_timeout_ms, 1500);
    ASSERT_EQ(c->client_partial_message_timeout_ms, 500);
    ASSERT_TRUE(!c->log_connections);
    ASSERT_EQ(c->ndbs, 3);
    const sl_db_cfg_t *d = sl_config_find_db(c, "app");
    ASSERT_TRUE(d != NULL);
    if (d) {
        ASSERT_EQ(d->pool_size, 7);
        ASSERT_EQ(d->pool_mode, SL_POOL_TRANSACTION);
        ASSERT_STREQ(sl_db_cfg_get(d, "dbname"), "real");
        ASSERT_STREQ(sl_db_cfg_get(d, "port"), "5433");
        ASSERT_TRUE(sl_db_cfg_get(d, "pool_size") == NULL);
        ASSERT_EQ(d->line, 3);
    }
    d = sl_config_find_db(c, "quoted");
    ASSERT_TRUE(d && !strcmp(sl_db_cfg_get(d, "password"), "a b'c"));
    ASSERT_TRUE(d && d->max_db_connections == 3);
    ASSERT_TRUE(sl_config_find_db(c, "*") != NULL);
    const sl_user_cfg_t *u = sl_config_find_user(c, "bob");
    ASSERT_TRUE(u && u->pool_mode == SL_POOL_STATEMENT && u->max_user_connections == 4);
    ASSERT_TRUE(sl_strlist_has(c->ignore_startup_parameters, "search_path"));
    ASSERT_TRUE(sl_strlist_has(c->ignore_startup_parameters, "EXTRA_FLOAT_DIGITS"));
    ASSERT_TRUE(!sl_strlist_has(c->ignore_startup_parameters, "search"));
    sl_config_free(c);
}

static void expect_error(const char *text, const char *want) {
    char err[512] = "";
    sl_config_t *c = load(text, err);
    ASSERT_TRUE(c == NULL);
    sl_config_free(c);
    if (!strstr(err, want)) {
        fprintf(stderr, "error '%s' lacks '%s'\n", err, want);
        check_failures++;
    }
    check_count++;
}

static void test_errors(void) {
    expect_error("[sluice]\nauth_type = trust\nbogus_key = 1\n", "t.ini:3: unknown key 'bogus_key'");
    expect_error("[sluice]\nlisten_port = 99999\n", "t.ini:2: listen_port: invalid value '99999'");
    expect_error("[sluice]\npool_mode = sometimes\n", "t.ini:2: pool_mode: invalid value");
    expect_error("[sluice]\nquery_timeout = soon\n", "t.ini:2: query_timeout");
    expect_error("[sluice]\nlog_connections = maybe\n", "t.ini:2: log_connections");
    expect_error("[nowhere]\nx = 1\n", "t.ini:2: unknown section [nowhere]");
    expect_error("[databases]\napp = host=x nosuchparam=1\n",
                 "t.ini:2: database 'app': unknown connection parameter 'nosuchparam'");
    expect_error("[databases]\napp = host=x pool_size=0\n", "t.ini:2: pool_size");
    /* libpq checks these only when it connects: a typo must fail here. */
    expect_error("[databases]\na = host=x\napp = host=x sslmode=bogus\n",
                 "t.ini:3: database 'app': sslmode: invalid value 'bogus' (expected one of "
                 "disable, allow, prefer, require, verify-ca, verify-full)");
    expect_error("[databases]\napp = host=x sslmode=Require\n", "t.ini:2: database 'app': sslmode");
    expect_error("[databases]\napp = host=x gssencmode=always\n",
                 "t.ini:2: database 'app': "
                 "gssencmode: invalid value 'always'");
    expect_error("[databases]\napp = host=x target_session_attrs=rw\n",
                 "t.ini:2: database 'app': target_session_attrs");
    expect_error("[databases]\napp = host=x channel_binding=yes\n",
                 "t.ini:2: database 'app': channel_binding");
    expect_error("[databases]\napp = host=x replication=database\n",
                 "t.ini:2: database 'app': replication: sluice pools no replication");
    expect_error("[databases]\n* = host=x sslmode=bogus\n", "t.ini:2: database '*': sslmode");
    expect_error("[databases]\napp = host='x\n", "t.ini:2: unterminated");
    expect_error("[databases]\napp = host=x\napp = host=y\n", "t.ini:3: database 'app' defined twice");
    expect_error("[users]\nbob = color=blue\n", "t.ini:2: user 'bob': unknown key 'color'");
    expect_error("[sluice]\nauth_type = md5\n", "auth_type md5 needs auth_file");
    expect_error("[sluice]\nthis line is wrong\n", "t.ini:2:");
    expect_error("[sluice]\nmax_rewrite_size = 100\n", "t.ini:2: max_rewrite_size: invalid value");
    expect_error("[sluice]\nmax_client_prepared_statements = 0\n",
                 "t.ini:2: max_client_prepared_statements: invalid value");
    /* stateless_functions: [schema.]name with an optional * at the end. */
    expect_error("[sluice]\nauth_type = trust\nstateless_functions = f(), g\n",
                 "t.ini:3: stateless_functions: invalid entry near 'f(), g'");
    expect_error("[sluice]\nauth_type = trust\nstateless_functions = a.b.c\n",
                 "stateless_functions: invalid entry near 'a.b.c'");
    expect_error("[sluice]\nauth_type = trust\nstateless_functions = app_*x\n",
                 "stateless_functions: invalid entry near 'app_*x'");
    char ok_err[512] = "";
    sl_config_t *ok = load("[sluice]\nauth_type = trust\nstateless_functions = app_*, "
                           "audit.log_it, st_*,\tpostgis.*\n",
                           ok_err);
    ASSERT_TRUE(ok != NULL);
    if (ok) ASSERT_STREQ(ok->stateless_functions, "app_*, audit.log_it, st_*,\tpostgis.*");
    sl_config_free(ok);
    char err[512];
    ASSERT_TRUE(sl_config_load("/nonexistent/sluice.ini", err, sizeof err) == NULL);
    ASSERT_TRUE(strstr(err, "/nonexistent/sluice.ini: cannot open") != NULL);
}

static void test_replicas(void) {
    char err[512] = "";
    sl_config_t *c = load("[databases]\n"
                          "plain = host=db1\n"
                          "app = host=db1 port=5433 replicas='r1:5434,r2:5435:3, [::1]:5436' "
                          "load_balance=latency\n"
                          "ro = host=db1 replicas=r1 routing=replica\n"
                          "pin = host=db1 replicas=r1:1 routing=primary\n"
                          "[sluice]\nauth_type = trust\nmax_replica_lag = 64kB\n"
                          "health_check_period = 0.5\nwrite_functions = f1, g*\n",
                          err);
    ASSERT_TRUE(c != NULL);
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    const sl_db_cfg_t *plain = sl_config_find_db(c, "plain"), *app = sl_config_find_db(c, "app");
    const sl_db_cfg_t *ro = sl_config_find_db(c, "ro"), *pin = sl_config_find_db(c, "pin");
    ASSERT_EQ(plain->nreplicas, 0);
    ASSERT_EQ(sl_db_cfg_routing(plain), SL_ROUTE_PRIMARY);
    ASSERT_EQ(app->nreplicas, 3);
    ASSERT_STREQ(app->replicas[0].host, "r1");
    ASSERT_EQ(app->replicas[0].port, 5434);
    ASSERT_EQ(app->replicas[0].weight, 1);
    ASSERT_STREQ(app->replicas[1].host, "r2");
    ASSERT_EQ(app->replicas[1].weight, 3);
    ASSERT_STREQ(app->replicas[2].host, "::1");
    ASSERT_EQ(app->replicas[2].port, 5436);
    ASSERT_EQ(sl_db_cfg_routing(app), SL_ROUTE_AUTO);
    ASSERT_EQ(app->load_balance, SL_LB_LATENCY);
    ASSERT_TRUE(sl_db_cfg_get(app, "replicas") == NULL); /* not a libpq key */
    ASSERT_EQ(ro->replicas[0].port, 5432);
    ASSERT_EQ(sl_db_cfg_routing(ro), SL_ROUTE_REPLICA);
    ASSERT_EQ(sl_db_cfg_routing(pin), SL_ROUTE_PRIMARY);
    ASSERT_EQ(c->max_replica_lag, 65536);
    ASSERT_EQ(c->health_check_period_ms, 500);
    ASSERT_EQ(c->health_check_failures, 3);
    ASSERT_TRUE(c->read_your_writes);
    ASSERT_EQ(c->load_balance, SL_LB_LEAST_OUTSTANDING);
    ASSERT_STREQ(c->write_functions, "f1, g*");
    sl_config_free(c);

    c = load("[sluice]\nauth_type = trust\n", err);
    ASSERT_EQ(c->max_replica_lag, 16 << 20);
    ASSERT_EQ(c->lsn_poll_period_ms, 20);
    ASSERT_TRUE(strstr(c->write_functions, "nextval") != NULL);
    sl_config_free(c);

    expect_error("[databases]\napp = host=x replicas=r1:0\n", "t.ini:2: replicas: invalid port");
    expect_error("[databases]\napp = host=x replicas=r1:5432:0\n", "t.ini:2: replicas: invalid weight");
    expect_error("[databases]\napp = host=x replicas=[::1\n", "t.ini:2: replicas: invalid address");
    expect_error("[databases]\napp = host=x replicas=,\n", "t.ini:2: replicas: empty list");
    expect_error("[databases]\napp = host=x routing=replica\n",
                 "t.ini:2: database 'app': routing = replica needs replicas");
    expect_error("[databases]\napp = host=x replicas=r routing=sometimes\n", "t.ini:2: routing");
    expect_error("[databases]\napp = host=x load_balance=fastest\n", "t.ini:2: load_balance");
    expect_error("[sluice]\nmax_replica_lag = lots\n", "t.ini:2: max_replica_lag");
}

/* The PgBouncer 1.24/1.25 keys: defaults, [sluice], [databases], [users]. */
static void test_new_keys(void) {
    char err[512] = "";
    sl_config_t *c = load("[sluice]\nauth_type = trust\n", err);
    ASSERT_TRUE(c != NULL);
    if (!c) return;
    ASSERT_EQ(c->max_db_client_connections, 0);
    ASSERT_EQ(c->max_user_client_connections, 0);
    ASSERT_EQ(c->transaction_timeout_ms, 0);
    ASSERT_EQ(c->query_wait_notify_ms, 5000);
    /* PgBouncer's default: an empty query checks a server idle too long. */
    ASSERT_STREQ(c->server_check_query, "<empty>");
    ASSERT_TRUE(sl_config_check_query(c) != NULL && !strcmp(sl_config_check_query(c), ""));
    sl_config_free(c);

    c = load("[databases]\n"
             "app = host=h max_db_client_connections=7 query_wait_timeout=2.5\n"
             "[users]\n"
             "bob = pool_size=3 reserve_pool_size=2 max_user_client_connections=4 "
             "query_timeout=1.5 query_wait_timeout=0 idle_transaction_timeout=3 "
             "transaction_timeout=4 client_idle_timeout=5\n"
             "[sluice]\nauth_type = trust\nmax_db_client_connections = 10\n"
             "max_user_client_connections = 20\ntransaction_timeout = 0.25\n"
             "query_wait_notify = 0\nserver_check_query =\n",
             err);
    ASSERT_TRUE(c != NULL);
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    ASSERT_EQ(c->max_db_client_connections, 10);
    ASSERT_EQ(c->max_user_client_connections, 20);
    ASSERT_EQ(c->transaction_timeout_ms, 250);
    ASSERT_EQ(c->query_wait_notify_ms, 0);
    ASSERT_TRUE(sl_config_check_query(c) == NULL); /* explicitly empty: no check */
    const sl_db_cfg_t *d = sl_config_find_db(c, "app");
    ASSERT_EQ(d->max_db_client_connections, 7);
    ASSERT_EQ(d->query_wait_timeout_ms, 2500);
    const sl_user_cfg_t *u = sl_config_find_user(c, "bob");
    ASSERT_EQ(u->pool_size, 3);
    ASSERT_EQ(u->reserve_pool_size, 2);
    ASSERT_EQ(u->max_user_client_connections, 4);
    ASSERT_EQ(u->query_timeout_ms, 1500);
    ASSERT_EQ(u->query_wait_timeout_ms, 0);
    ASSERT_EQ(u->idle_transaction_timeout_ms, 3000);
    ASSERT_EQ(u->transaction_timeout_ms, 4000);
    ASSERT_EQ(u->client_idle_timeout_ms, 5000);
    sl_config_free(c);

    c = load("[sluice]\nauth_type = trust\nserver_check_query = SELECT 1\n", err);
    ASSERT_TRUE(c && !strcmp(sl_config_check_query(c), "SELECT 1"));
    sl_config_free(c);

    expect_error("[users]\nbob = transaction_timeout=soon\n",
                 "t.ini:2: transaction_timeout: invalid value 'soon'");
    expect_error("[users]\nbob = max_user_client_connections=-1\n",
                 "t.ini:2: max_user_client_connections: invalid value '-1'");
    expect_error("[databases]\napp = host=x max_db_client_connections=lots\n",
                 "t.ini:2: max_db_client_connections: invalid value 'lots'");
    expect_error("[sluice]\nauth_type = trust\nquery_wait_notify = -1\n",
                 "t.ini:3: query_wait_notify: invalid value '-1'");
    /* A key sluice does not honour is an error, never silently ignored. */
    expect_error("[users]\nbob = server_lifetime=10\n",
                 "t.ini:2: user 'bob': unknown key 'server_lifetime' (expected pool_mode, "
                 "client_idle_timeout");
}

/* PgBouncer's precedence: a user's pool_size, reserve_pool_size and
 * query_wait_timeout over the database's over the global; the client
 * caps and timeouts from the database or user that has them. */
static void test_limits(void) {
    char err[512] = "";
    sl_config_t *c = load("[databases]\n"
                          "big = host=h pool_size=10 reserve_pool=4 min_pool_size=2 "
                          "max_db_client_connections=50 query_wait_timeout=9\n"
                          "plain = host=h\n"
                          "[users]\n"
                          "bob = pool_size=3 reserve_pool_size=1 query_wait_timeout=0 "
                          "max_user_client_connections=0 query_timeout=1 "
                          "transaction_timeout=2 client_idle_timeout=0 pool_mode=statement\n"
                          "[sluice]\nauth_type = trust\ndefault_pool_size = 20\n"
                          "reserve_pool_size = 5\nmax_db_client_connections = 100\n"
                          "max_user_client_connections = 30\nquery_wait_timeout = 60\n"
                          "query_timeout = 7\ntransaction_timeout = 8\nclient_idle_timeout = 9\n"
                          "idle_transaction_timeout = 6\npool_mode = transaction\n",
                          err);
    ASSERT_TRUE(c != NULL);
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    const sl_db_cfg_t *big = sl_config_find_db(c, "big"), *plain = sl_config_find_db(c, "plain");
    sl_limits_t l;
    sl_config_limits(c, big, "bob", &l);
    ASSERT_EQ(l.pool_size, 3); /* the user's wins over the database's */
    ASSERT_EQ(l.reserve_pool_size, 1);
    ASSERT_EQ(l.query_wait_timeout_ms, 0); /* explicit 0: none for bob */
    ASSERT_EQ(l.pool_mode, SL_POOL_STATEMENT);
    ASSERT_EQ(l.min_pool_size, 2);
    ASSERT_EQ(l.max_db_client_connections, 50);
    ASSERT_EQ(l.max_user_client_connections, 0);
    ASSERT_EQ(l.query_timeout_ms, 1000);
    ASSERT_EQ(l.transaction_timeout_ms, 2000);
    ASSERT_EQ(l.client_idle_timeout_ms, 0);
    ASSERT_EQ(l.idle_transaction_timeout_ms, 6000); /* bob sets none: global */
    sl_config_limits(c, big, "alice", &l);
    ASSERT_EQ(l.pool_size, 10); /* no user entry: the database's */
    ASSERT_EQ(l.reserve_pool_size, 4);
    ASSERT_EQ(l.query_wait_timeout_ms, 9000);
    ASSERT_EQ(l.pool_mode, SL_POOL_TRANSACTION);
    ASSERT_EQ(l.max_user_client_connections, 30);
    ASSERT_EQ(l.query_timeout_ms, 7000);
    ASSERT_EQ(l.transaction_timeout_ms, 8000);
    ASSERT_EQ(l.client_idle_timeout_ms, 9000);
    sl_config_limits(c, plain, "alice", &l);
    ASSERT_EQ(l.pool_size, 20); /* nothing set: the globals */
    ASSERT_EQ(l.reserve_pool_size, 5);
    ASSERT_EQ(l.query_wait_timeout_ms, 60000);
    ASSERT_EQ(l.max_db_client_connections, 100);
    ASSERT_EQ(l.min_pool_size, 0);
    sl_config_limits(c, plain, "bob", &l);
    ASSERT_EQ(l.pool_size, 3);
    ASSERT_EQ(l.max_db_client_connections, 100);
    sl_config_free(c);
}

/* One run reports every error, each at its line, in file order. */
static void test_every_error(void) {
    char err[4096] = "";
    const char *text = "[sluice]\n"                               /* 1 */
                       "auth_type = md5\n"                        /* 2: needs auth_file */
                       "listen_port = 0\n"                        /* 3 */
                       "no_such_key = 1\n"                        /* 4 */
                       "this line is wrong\n"                     /* 5 */
                       "[databases\n"                             /* 6 */
                       "[databases]\n"                            /* 7 */
                       "app = host=x pool_size=0 sslmode=bogus\n" /* 8: two errors */
                       "ok = host=x\n"                            /* 9 */
                       "[users]\n"                                /* 10 */
                       "bob = query_timeout=x color=blue\n"       /* 11: two errors */
                       "[sluice]\n"                               /* 12 */
                       "client_tls_protocols = tlsv9\n";          /* 13 */
    sl_config_t *c = sl_config_load_string("t.ini", text, err, sizeof err);
    ASSERT_TRUE(c == NULL);
    sl_config_free(c);
    const char *want[] = {
        "t.ini:3: listen_port: invalid value '0'",
        "t.ini:4: unknown key 'no_such_key' in [sluice]",
        "t.ini:5: syntax error: 'this line is wrong'",
        "t.ini:6: syntax error: section header without ']'",
        "t.ini:8: pool_size: invalid value '0'",
        "t.ini:8: database 'app': sslmode: invalid value 'bogus'",
        "t.ini:11: query_timeout: invalid value 'x'",
        "t.ini:11: user 'bob': unknown key 'color'",
        "t.ini:2: auth_type md5 needs auth_file",
        "t.ini:13: client_tls_protocols: unknown value \"tlsv9\"",
    };
    const char *at = err;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const char *hit = strstr(at, want[i]);
        if (!hit) fprintf(stderr, "missing or out of order: %s\nin:\n%s\n", want[i], err);
        ASSERT_TRUE(hit != NULL);
        if (hit) at = hit;
    }
    int lines = 1;
    for (const char *p = err; *p; p++)
        lines += *p == '\n';
    ASSERT_EQ(lines, 10);
    ASSERT_TRUE(err[strlen(err) - 1] != '\n');

    /* A buffer too small for all of them: whole lines, then the count. */
    char small[200];
    c = sl_config_load_string("t.ini", text, small, sizeof small);
    ASSERT_TRUE(c == NULL);
    ASSERT_TRUE(strstr(small, "t.ini:3: listen_port") == small);
    ASSERT_TRUE(strstr(small, "more errors not shown") != NULL);
    ASSERT_TRUE(strlen(small) < sizeof small);

    /* Lines are counted right past a line longer than inih's first buffer. */
    char longtext[2000];
    snprintf(longtext, sizeof longtext,
             "[databases]\napp = host=x application_name=%0600d\n"
             "[sluice]\nauth_type = trust\nbad = 1\n",
             0);
    c = sl_config_load_string("t.ini", longtext, err, sizeof err);
    ASSERT_TRUE(c == NULL);
    ASSERT_TRUE(strstr(err, "t.ini:5: unknown key 'bad'") != NULL);
}

/* [peers] and peer_id: PgBouncer's syntax; our own id may be listed, so that
 * one [peers] section serves every instance of a group. */
static void test_peers(void) {
    char err[512] = "";
    sl_config_t *c = load("[peers]\n"
                          "1 = host=/run/sluice-1 port=6433\n"
                          "2 = host=sluice-2.sluice.svc\n"
                          "3 = host=10.0.0.3 port=7000 pool_size=8\n"
                          "[sluice]\nauth_type = trust\npeer_id = 1\n",
                          err);
    ASSERT_TRUE(c != NULL);
    if (!c) {
        fprintf(stderr, "%s\n", err);
        return;
    }
    ASSERT_EQ(c->peer_id, 1);
    ASSERT_EQ(c->npeers, 3);
    const sl_peer_cfg_t *p = sl_config_find_peer(c, 1);
    ASSERT_TRUE(p != NULL);
    if (p) ASSERT_STREQ(p->host, "/run/sluice-1");
    if (p) ASSERT_EQ(p->port, 6433);
    p = sl_config_find_peer(c, 2);
    ASSERT_TRUE(p != NULL);
    if (p) ASSERT_EQ(p->port, 6432); /* PgBouncer's default */
    if (p) ASSERT_EQ(p->pool_size, 0);
    p = sl_config_find_peer(c, 3);
    ASSERT_TRUE(p != NULL);
    if (p) ASSERT_EQ(p->pool_size, 8);
    if (p) ASSERT_EQ(p->line, 4);
    ASSERT_TRUE(sl_config_find_peer(c, 4) == NULL);
    /* Fixed at start-up: SET refuses it (keys handed out name it). */
    ASSERT_EQ(sl_config_key_change(sl_config_key_index("peer_id")), SL_KEY_RESTART);
    sl_config_free(c);

    c = load("[sluice]\nauth_type = trust\n", err);
    ASSERT_TRUE(c != NULL);
    if (c) ASSERT_EQ(c->peer_id, 0);
    if (c) ASSERT_EQ(c->npeers, 0);
    sl_config_free(c);

    expect_error("[sluice]\nauth_type = trust\npeer_id = 16384\n",
                 "t.ini:3: peer_id: invalid value '16384' (expected an integer from 0 to 16383)");
    expect_error("[sluice]\nauth_type = trust\npeer_id = -1\n", "t.ini:3: peer_id: invalid");
    expect_error("[sluice]\nauth_type = trust\npeer_id = 1\n[peers]\n0 = host=x\n",
                 "t.ini:5: [peers]: invalid peer id '0' (expected an integer from 1 to 16383");
    expect_error("[sluice]\nauth_type = trust\npeer_id = 1\n[peers]\nfoo = host=x\n",
                 "t.ini:5: [peers]: invalid peer id 'foo'");
    expect_error("[sluice]\nauth_type = trust\npeer_id = 1\n[peers]\n16384 = host=x\n",
                 "t.ini:5: [peers]: invalid peer id '16384'");
    expect_error("[sluice]\nauth_type = trust\npeer_id = 1\n[peers]\n2 = host=x dbname=y\n",
                 "t.ini:5: peer 2: unknown key 'dbname' (expected host, port or pool_size)");
    expect_error("[sluice]\nauth_type = trust\npeer_id = 1\n[peers]\n2 = port=6432\n",
                 "t.ini:5: peer 2: no host");
    expect_error("[sluice]\nauth_type = trust\npeer_id = 1\n[peers]\n2 = host=x port=0\n",
                 "t.ini:5: port: invalid value '0'");
    expect_error("[sluice]\nauth_type = trust\npeer_id = 1\n[peers]\n2 = host=x pool_size=0\n",
                 "t.ini:5: pool_size: invalid value '0'");
    expect_error("[sluice]\nauth_type = trust\npeer_id = 1\n[peers]\n2 = host=x\n2 = host=y\n",
                 "t.ini:6: [peers]: peer 2 defined twice");
    expect_error("[sluice]\nauth_type = trust\npeer_id = 1\n[peers]\n2 = host=@sluice\n",
                 "t.ini:5: peer 2: host '@sluice': abstract Unix sockets are not supported");
    expect_error("[sluice]\nauth_type = trust\npeer_id = 1\n[peers]\n2 = host=/"
                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                 "aaaaaaaaaaaaaaaaaaaaaaaaa\n",
                 "t.ini:5: peer 2: Unix socket directory");
    /* Peering half configured: cancels would never be forwarded. */
    expect_error("[sluice]\nauth_type = trust\n[peers]\n1 = host=a\n2 = host=b\n",
                 "t.ini:4: [peers] is set but peer_id is 0");
}

static void test_file(void) {
    char path[] = "/tmp/sluice-test-XXXXXX";
    int fd = mkstemp(path);
    const char *text = "[sluice]\nauth_type=trust\n\n\nlisten_port = abc\n";
    ASSERT_TRUE(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    char err[512], want[600];
    ASSERT_TRUE(sl_config_load(path, err, sizeof err) == NULL);
    snprintf(want, sizeof want, "%s:5: listen_port", path);
    ASSERT_TRUE(strstr(err, want) != NULL);
    unlink(path);
}

int main(void) {
    test_defaults();
    test_full();
    test_errors();
    test_replicas();
    test_new_keys();
    test_limits();
    test_every_error();
    test_peers();
    test_file();
    return check_done("test_config");
}
