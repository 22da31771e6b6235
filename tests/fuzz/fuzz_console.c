/* Fuzz target: the admin console's dispatcher (src/admin/console.c: the
 * split of a Query into statements, the verb lookup, the authorization
 * check) and the argument parsing of SHOW and SET, on a worker built by
 * hand as tests/unit/test_admin.c does (no listener, no server). The
 * first byte says whether the user is in admin_users or stats_users.
 * Admin input that names a command acting on the process (PAUSE,
 * SHUTDOWN, RELOAD, ...) is left out: those need a running sluice and
 * change what the next input sees. Checks: the reply is whole messages
 * and nothing else; a stats user's reply completes SHOW only (anything
 * else is refused before it runs). */
#include <strings.h>

#include "admin/admin.h"
#include "fuzz.h"
#include "sluice/admin.h"
#include "sluice/config.h"
#include "sluice/log.h"
#include "sluice/proto.h"

static sl_worker_t wk;

static void setup(void) {
    static bool done;
    if (done) return;
    char err[512];
    sl_config_t *cfg = sl_config_load_string(
        "fuzz.ini", "[databases]\napp = host=127.0.0.1 dbname=app\n[sluice]\nauth_type = trust\n",
        err, sizeof err);
    if (!cfg || sl_loop_init(&wk.core, cfg, err, sizeof err) != SL_OK) abort();
    sl_defer_init(&wk.shutdown_job, NULL);
    sl_admin_attach(&wk);
    sl_log_set_level(SL_LOG_ERROR); /* refusals log warnings */
    done = true;
}

/* A command whose effect outlives the input, or needs a running process. */
static bool acts_on_process(const char *sql) {
    static const char *const verbs[] = {"PAUSE",  "SUSPEND", "WAIT_CLOSE", "SHUTDOWN",
                                        "KILL",   "RESUME",  "RECONNECT",  "DISABLE",
                                        "ENABLE", "RELOAD",  "SET"};
    for (size_t i = 0; i < sizeof verbs / sizeof *verbs; i++)
        if (strcasestr(sql, verbs[i])) return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    fuzz_in_t in = {data, size};
    bool admin = fuzz_byte(&in) & 1;
    char *sql = fuzz_rest(&in, NULL);
    if (admin && acts_on_process(sql)) goto out;
    sl_console_who_t who = {7, admin ? "boss" : "watcher", admin};
    size_t len = 0;
    uint8_t *p = wk.core.console_query(&wk.core, &who, sql, &len);
    FUZZ_CHECK(p != NULL);
    for (size_t off = 0; off < len;) {
        FUZZ_CHECK(off + 5 <= len);
        uint32_t mlen = sl_be32(p + off + 1);
        FUZZ_CHECK(mlen >= 4 && off + 1 + mlen <= len);
        FUZZ_CHECK(strchr("TDCEIN", p[off]) != NULL);
        if (p[off] == 'C' && !admin) FUZZ_CHECK(mlen == 9 && !memcmp(p + off + 5, "SHOW", 5));
        off += 1 + mlen;
    }
    free(p);
out:
    free(sql);
    return 0;
}
