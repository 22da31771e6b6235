/* admin: the console's dispatcher and reply writer without a server. A
 * worker is built by hand (no listener): who may run what (a stats user's
 * RELOAD, SET, KILL_CLIENT, SHUTDOWN and SHOW FDS refused with 42501 and
 * with no effect), statements split at ';' outside quotes and run in
 * order until one fails, SET's answers, and the wire framing of results. */
#include <stdlib.h>
#include <string.h>

#include "admin/admin.h"
#include "sluice/admin.h"
#include "sluice/log.h"
#include "sluice/proto.h"
#include "unit/check.h"

static sl_worker_t wk;

/* The reply to sql: its message types in order ("TDC", "E", ...) into
 * types, and the SQLSTATE of its first ErrorResponse into code. */
static void run(bool admin, const char *sql, char *types, size_t cap, char code[6]) {
    sl_console_who_t who = {7, admin ? "boss" : "watcher", admin};
    size_t len = 0;
    uint8_t *p = wk.core.console_query(&wk.core, &who, sql, &len);
    ASSERT_TRUE(p != NULL);
    types[0] = code[0] = '\0';
    size_t off = 0, n = 0;
    while (p && off + 5 <= len && n + 1 < cap) {
        uint32_t mlen = sl_be32(p + off + 1);
        ASSERT_TRUE(off + 1 + mlen <= len);
        if (off + 1 + mlen > len) break;
        types[n++] = (char)p[off];
        if (p[off] == 'E' && !code[0]) {
            sl_error_fields_t f;
            if (sl_proto_parse_error(p + off + 5, mlen - 4, &f) == SL_OK && f.code)
                snprintf(code, 6, "%s", f.code);
        }
        off += 1 + mlen;
    }
    types[n] = '\0';
    ASSERT_EQ(off, len); /* whole messages, nothing after */
    free(p);
}

static void test_access(void) {
    char t[64], code[6];
    static const char *const refused[] = {
        "KILL_CLIENT 1", "RELOAD",       "SET verbose = 2", "SHUTDOWN", "SHUTDOWN WAIT_FOR_CLIENTS",
        "SHOW FDS",      "kill_client 1"};
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        run(false, refused[i], t, sizeof t, code);
        ASSERT_STREQ(t, "E");
        ASSERT_STREQ(code, "42501");
    }
    /* Nothing ran. */
    ASSERT_EQ(wk.core.cfg->verbose, 0);
    ASSERT_TRUE(!wk.shutdown_job.queued);
    run(false, "SHOW VERSION", t, sizeof t, code);
    ASSERT_STREQ(t, "TDC");
    run(false, "show state;", t, sizeof t, code);
    ASSERT_STREQ(t, "TDDDDC");
    run(true, "SHOW FDS", t, sizeof t, code);
    ASSERT_STREQ(t, "TC");
}

static void test_statements(void) {
    char t[64], code[6];
    run(true, "SHOW VERSION; SHOW VERSION", t, sizeof t, code);
    ASSERT_STREQ(t, "TDCTDC");
    /* The first failure ends the Query. */
    run(true, "SHOW VERSION; FROB; SHOW VERSION", t, sizeof t, code);
    ASSERT_STREQ(t, "TDCE");
    ASSERT_STREQ(code, "42601");
    run(true, "", t, sizeof t, code);
    ASSERT_STREQ(t, "I");
    run(true, " ; ;", t, sizeof t, code);
    ASSERT_STREQ(t, "I");
    run(true, "SHOW NOTHING", t, sizeof t, code);
    ASSERT_STREQ(code, "42601");
    run(true, "SHOW VERSION please", t, sizeof t, code);
    ASSERT_STREQ(code, "42601");
    /* A ';' inside quotes is part of the value. */
    run(true, "SET server_reset_query = 'DISCARD ALL; SELECT 1'", t, sizeof t, code);
    ASSERT_STREQ(t, "C");
    ASSERT_STREQ(wk.core.cfg->server_reset_query, "DISCARD ALL; SELECT 1");
    run(true, "SET server_reset_query = 'it''s'", t, sizeof t, code);
    ASSERT_STREQ(wk.core.cfg->server_reset_query, "it's");
}

static void test_set(void) {
    char t[64], code[6];
    run(true, "SET query_wait_timeout = 7.5", t, sizeof t, code);
    ASSERT_STREQ(t, "C");
    ASSERT_EQ(wk.core.cfg->query_wait_timeout_ms, 7500);
    run(true, "set max_client_conn to 77", t, sizeof t, code);
    ASSERT_STREQ(t, "C");
    ASSERT_EQ(wk.core.cfg->max_client_conn, 77);
    run(true, "SET listen_port = 1", t, sizeof t, code);
    ASSERT_STREQ(code, "55P02");
    run(true, "SET auth_file = '/x'", t, sizeof t, code);
    ASSERT_STREQ(code, "55P02");
    run(true, "SET no_such_key = 1", t, sizeof t, code);
    ASSERT_STREQ(code, "42704");
    run(true, "SET max_client_conn = lots", t, sizeof t, code);
    ASSERT_STREQ(code, "22023");
    ASSERT_EQ(wk.core.cfg->max_client_conn, 77);
    run(true, "SET max_client_conn", t, sizeof t, code);
    ASSERT_STREQ(code, "42601");
    /* Values only the checks of keys together refuse (a load's validate):
     * refused by SET too, and the running value stays. */
    const char *protos = wk.core.cfg->server_tls_protocols;
    char before[64];
    snprintf(before, sizeof before, "%s", protos);
    run(true, "SET server_tls_protocols = bogus", t, sizeof t, code);
    ASSERT_STREQ(code, "22023");
    ASSERT_STREQ(wk.core.cfg->server_tls_protocols, before);
    run(true, "SET stateless_functions = 'a b c ((('", t, sizeof t, code);
    ASSERT_STREQ(code, "22023");
    ASSERT_STREQ(wk.core.cfg->stateless_functions, "");
    run(true, "SET stateless_functions = 'my_pure_fn, util.*'", t, sizeof t, code);
    ASSERT_STREQ(t, "C");
    ASSERT_STREQ(wk.core.cfg->stateless_functions, "my_pure_fn, util.*");
    run(true, "KILL_CLIENT x", t, sizeof t, code);
    ASSERT_STREQ(code, "42601");
    run(true, "KILL_CLIENT 7", t, sizeof t, code); /* itself */
    ASSERT_STREQ(code, "42601");
    run(true, "KILL_CLIENT 12345", t, sizeof t, code);
    ASSERT_STREQ(code, "42704");
}

static void test_writer(void) {
    static const sl_res_col_t cols[] = {{"a", SL_RES_TEXT}, {"b", SL_RES_INT8}};
    sl_res_t r = {0};
    sl_res_begin(&r, cols, 2);
    sl_res_row(&r);
    sl_res_text(&r, "x");
    sl_res_int(&r, -42);
    sl_res_row_end(&r);
    ASSERT_TRUE(!r.oom);
    ASSERT_EQ(r.nrows, 1);
    /* RowDescription: 'T', length, 2 columns; b's type OID is int8 (20). */
    ASSERT_EQ(r.data[0], 'T');
    ASSERT_EQ((r.data[5] << 8) | r.data[6], 2);
    size_t b_at = 7 + 2 + 18 + 2 + 6; /* "a\0" + 18 bytes, then "b\0" + table OID + column */
    ASSERT_EQ(sl_be32(r.data + b_at), 20);
    /* A row with fewer values than columns is a bug: the reply is dropped. */
    sl_res_row(&r);
    sl_res_text(&r, "only one");
    sl_res_row_end(&r);
    ASSERT_TRUE(r.oom);
    free(r.data);
}

int main(void) {
    char err[512];
    sl_config_t *cfg =
        sl_config_load_string("t.ini", "[sluice]\nauth_type = trust\n", err, sizeof err);
    ASSERT_TRUE(cfg != NULL);
    if (!cfg) return check_done("test_admin");
    ASSERT_EQ(sl_loop_init(&wk.core, cfg, err, sizeof err), SL_OK);
    sl_defer_init(&wk.shutdown_job, NULL);
    sl_admin_attach(&wk);
    /* The refusals log warnings: that is what an operator sees. */
    sl_log_set_level(SL_LOG_ERROR);
    test_access();
    test_statements();
    test_set();
    test_writer();
    sl_loop_close(&wk.core);
    uv_run(wk.core.loop, UV_RUN_DEFAULT);
    uv_loop_close(wk.core.loop);
    sl_loop_destroy(&wk.core);
    sl_config_free(wk.core.cfg);
    return check_done("test_admin");
}
