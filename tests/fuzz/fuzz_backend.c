/* Fuzz target: what a backend sends, as sluice reads it. The input starts
 * with the secret sluice logs in with and a script of requests sluice has
 * sent (the expect ring of prepare.c); the rest is the backend's byte
 * stream, read in 4 KiB pieces and framed with a 1 KiB collection buffer
 * as server.c does: first sluice's own login (login.c: md5, SCRAM with
 * keys, cleartext, ErrorResponse with or without SQLSTATE, BackendKeyData,
 * ParameterStatus with or without its NULs), then replies matched to the
 * script (expect.c) with ErrorResponse and ParameterStatus parsed. Checks:
 * each scripted request ends exactly once, the ring's counts go back to
 * zero, a login failure names a SQLSTATE, and what login writes is a
 * whole PasswordMessage. */
#include "fuzz.h"
#include "sluice/expect.h"
#include "sluice/login.h"
#include "sluice/proto.h"

#define SCRIPT_MAX 24

typedef struct script {
    int ended[SCRIPT_MAX]; /* times each entry was ended */
    int n;                 /* entries pushed */
} script_t;

static void end_cb(void *ctx, const sl_ex_t *e, enum sl_ex_outcome how) {
    script_t *sc = ctx;
    int i = (int)(intptr_t)e->data;
    FUZZ_CHECK(i >= 0 && i < sc->n);
    FUZZ_CHECK(sc->ended[i] == 0);
    FUZZ_CHECK(how == SL_EX_DONE || how == SL_EX_FAILED || how == SL_EX_SKIPPED);
    sc->ended[i]++;
}

static void push_script(fuzz_in_t *in, sl_expect_t *q, script_t *sc) {
    int n = fuzz_byte(in) % SCRIPT_MAX;
    for (int i = 0; i < n; i++) {
        uint8_t b = fuzz_byte(in);
        if (sl_expect_push(q, (enum sl_ex_kind)(b % 8), (enum sl_ex_how)((b >> 3) % 4),
                           (void *)(intptr_t)sc->n) != SL_OK)
            abort();
        sc->n++;
        if (b & 0x20) sl_expect_mark_change(q, NULL);
        if (b & 0x40) sl_expect_mark_barrier(q);
    }
}

static void login_secret(fuzz_in_t *in, sl_login_secret_t *sec) {
    uint8_t how = fuzz_byte(in);
    memset(sec, 0, sizeof *sec);
    if (how & 1) snprintf(sec->md5, sizeof sec->md5, "md5%032x", 0x5eed);
    if (how & 2) {
        sec->has_keys = true;
        memset(sec->client_key, 0x11, sizeof sec->client_key);
        memset(sec->server_key, 0x22, sizeof sec->server_key);
    }
    /* A plaintext password would make the login run PBKDF2 with the
     * backend's iteration count (up to 10^7): too slow to fuzz. */
}

/* A string a parser returned starts and ends inside body[0..n). */
static bool in_body(const uint8_t *body, size_t n, const char *v) {
    const uint8_t *u = (const uint8_t *)v;
    return u >= body && u < body + n && memchr(u, '\0', n - (size_t)(u - body)) != NULL;
}

/* One whole message during the login; false once the login is over. */
static bool login_msg(sl_login_t *l, const sl_scan_t *s, const uint8_t *coll) {
    if (s->type == 'S') {
        sl_kv_t kv;
        if (sl_scan_complete(s) && sl_proto_parse_param_status(coll, s->coll_len, &kv) == SL_OK)
            FUZZ_CHECK(kv.name[0] && in_body(coll, s->coll_len, kv.value));
        return true;
    }
    uint8_t reply[1024];
    size_t rlen = 0;
    enum sl_login_result r =
        sl_login_feed(l, s->type, coll, s->coll_len, reply, sizeof reply, &rlen);
    FUZZ_CHECK(rlen <= sizeof reply);
    if (rlen) FUZZ_CHECK(reply[0] == 'p' && sl_be32(reply + 1) + 1 == rlen);
    if (r == SL_LOGIN_FAIL) FUZZ_CHECK(strlen(l->code) == 5 && l->error[0]);
    return r == SL_LOGIN_MORE;
}

/* A reply after the login: matched to the script at its start, read at its
 * end when sluice collects it. */
static void reply_start(sl_expect_t *q, uint8_t t, script_t *sc) {
    while (sl_expect_answer_due(q))
        sl_expect_answered(q, end_cb, sc);
    (void)sl_expect_reply(q, t, end_cb, sc);
}

static void reply_end(const sl_scan_t *s, const uint8_t *coll) {
    if (s->type == 'E' || s->type == 'N') {
        sl_error_fields_t ef;
        if (sl_proto_parse_error(coll, s->coll_len, &ef) == SL_OK && ef.code)
            FUZZ_CHECK(in_body(coll, s->coll_len, ef.code));
    } else if (s->type == 'S' && sl_scan_complete(s)) {
        sl_kv_t kv;
        if (sl_proto_parse_param_status(coll, s->coll_len, &kv) == SL_OK)
            FUZZ_CHECK(in_body(coll, s->coll_len, kv.value));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_in_t in = {data, size};
    sl_login_secret_t sec;
    login_secret(&in, &sec);
    script_t sc = {{0}, 0};
    sl_expect_t q = {0};
    push_script(&in, &q, &sc);
    sl_login_t l;
    uint8_t pkt[512];
    FUZZ_CHECK(sl_login_start(&l, "u", "db", &sec, pkt, sizeof pkt) > 0);
    uint8_t coll[1024];
    sl_scan_t s = {.coll = coll, .coll_cap = sizeof coll};
    bool logging_in = true;
    while (in.n) {
        size_t n = in.n < 4096 ? in.n : 4096;
        const uint8_t *p = in.p;
        in.p += n, in.n -= n;
        for (size_t off = 0; off < n;) {
            enum sl_scan_ev ev;
            off += sl_scan_feed(&s, p + off, n - off, &ev);
            if (ev == SL_SCAN_ERROR) goto out;
            if (ev == SL_SCAN_START) {
                s.collect = logging_in || strchr("ESZ", s.type) != NULL;
                if (!logging_in) reply_start(&q, s.type, &sc);
            }
            if (ev != SL_SCAN_END) continue;
            if (logging_in)
                logging_in = login_msg(&l, &s, coll);
            else if (s.collect)
                reply_end(&s, coll);
        }
    }
out:
    sl_expect_clear(&q, end_cb, &sc);
    FUZZ_CHECK(q.n == 0 && q.changes == 0 && q.changes_open == 0);
    for (int i = 0; i < sc.n; i++)
        FUZZ_CHECK(sc.ended[i] == 1);
    sl_expect_free(&q);
    return 0;
}
