/* client: a failed allocation during login ends the login with FATAL 53200
 * out of memory, not a crash or a misleading error. A client is accepted on
 * one end of a socketpair by a hand-built loop context; strdup is wrapped (the
 * test links with --wrap=strdup) to fail for one chosen string. */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session/session.h"
#include "sluice/config.h"
#include "sluice/log.h"
#include "sluice/proto.h"
#include "unit/check.h"

char *__real_strdup(const char *s);
char *__wrap_strdup(const char *s);

static const char *fail_for; /* strdup of this string returns NULL */

char *__wrap_strdup(const char *s) {
    if (fail_for && !strcmp(s, fail_for)) return NULL;
    return __real_strdup(s);
}

static sl_loop_t w;

static size_t put_param(uint8_t *p, const char *name, const char *value) {
    size_t n = strlen(name) + 1, v = strlen(value) + 1;
    memcpy(p, name, n);
    memcpy(p + n, value, v);
    return n + v;
}

/* Sends a startup packet for user (with options, if not NULL) and returns
 * what sluice answers first: the SQLSTATE of an ErrorResponse, or "". */
static const char *login(const char *user, const char *options) {
    static char code[6];
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    sl_session_accept(&w, sv[0], "unit");
    uint8_t pkt[512];
    size_t n = 8;
    n += put_param(pkt + n, "user", user);
    if (options) n += put_param(pkt + n, "options", options);
    pkt[n++] = 0;
    sl_put_be32(pkt, (uint32_t)n);
    sl_put_be32(pkt + 4, 196608);
    ASSERT_EQ(write(sv[1], pkt, n), (ssize_t)n);
    for (int i = 0; i < 100 && w.nclients > 0; i++)
        uv_run(w.loop, UV_RUN_NOWAIT);
    uint8_t in[512];
    ssize_t got = recv(sv[1], in, sizeof in, MSG_DONTWAIT);
    code[0] = '\0';
    if (got > 5 && in[0] == 'E')
        for (ssize_t k = 5; k + 6 <= got; k++)
            if (in[k] == 'C') {
                memcpy(code, in + k + 1, 5);
                code[5] = '\0';
                break;
            }
    close(sv[1]);
    return code;
}

int main(void) {
    char err[512];
    sl_config_t *cfg = sl_config_load_string("t.ini", "[sluice]\nauth_type = trust\n", err,
                                             sizeof err);
    ASSERT_EQ(sl_loop_init(&w, cfg, err, sizeof err), SL_OK);
    sl_conn_kicks_init(&w.kicks, w.loop);
    sl_log_set_level(SL_LOG_ERROR);

    fail_for = "oom_user"; /* the user name's copy */
    ASSERT_STREQ(login("oom_user", NULL), "53200");
    fail_for = "-c oom=1"; /* the options parameter's copy */
    ASSERT_STREQ(login("someone", "-c oom=1"), "53200");
    ASSERT_EQ(w.nclients, 0);

    sl_conn_kicks_close(&w.kicks);
    sl_loop_close(&w);
    uv_run(w.loop, UV_RUN_NOWAIT);
    uv_loop_close(w.loop);
    sl_loop_destroy(&w);
    sl_config_free(cfg);
    return check_done("test_client_oom");
}
