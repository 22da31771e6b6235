/* proto: startup parsing (every split point, guard page), options, framing,
 * message building. */
#include <sys/mman.h>
#include <unistd.h>

#include "sluice/cancelkey.h"
#include "sluice/proto.h"
#include "unit/check.h"

static size_t build_startup(uint8_t *out, uint32_t version, const char *const *kv) {
    size_t n = 8;
    for (int i = 0; kv && kv[i]; i++) {
        size_t l = strlen(kv[i]) + 1;
        memcpy(out + n, kv[i], l);
        n += l;
    }
    out[n++] = 0;
    sl_put_be32(out, (uint32_t)n);
    sl_put_be32(out + 4, version);
    return n;
}

/* Copies p to the very end of a readable page followed by an unreadable one,
 * so any read past n faults. */
static uint8_t *guarded(const uint8_t *p, size_t n, uint8_t **base) {
    long pg = sysconf(_SC_PAGESIZE);
    uint8_t *m =
        mmap(NULL, (size_t)pg * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(m + pg * 3, (size_t)pg, PROT_NONE);
    uint8_t *dst = m + pg * 3 - n;
    memcpy(dst, p, n);
    *base = m;
    return dst;
}

static void test_startup_ok(void) {
    const char *kv[] = {"user", "bob", "database", "app", "application_name", "x y", NULL};
    uint8_t pkt[512];
    size_t n = build_startup(pkt, SL_PROTO_V3, kv);
    sl_startup_t su;
    for (size_t cut = 0; cut < n; cut++) {
        uint8_t *base;
        uint8_t *g = guarded(pkt, cut, &base);
        ASSERT_EQ(sl_proto_parse_startup(g, cut, &su), SL_ENEEDMORE);
        munmap(base, (size_t)sysconf(_SC_PAGESIZE) * 4);
    }
    uint8_t *base;
    uint8_t *g = guarded(pkt, n, &base);
    ASSERT_EQ(sl_proto_parse_startup(g, n, &su), (long long)n);
    ASSERT_EQ(su.kind, SL_SU_STARTUP);
    ASSERT_EQ(su.nparams, 3);
    ASSERT_STREQ(sl_startup_get(&su, "user"), "bob");
    ASSERT_STREQ(sl_startup_get(&su, "application_name"), "x y");
    ASSERT_TRUE(sl_startup_get(&su, "nope") == NULL);
    munmap(base, (size_t)sysconf(_SC_PAGESIZE) * 4);
}

static void test_startup_special(void) {
    uint8_t p[16];
    sl_startup_t su;
    sl_put_be32(p, 8), sl_put_be32(p + 4, SL_PROTO_SSL);
    ASSERT_EQ(sl_proto_parse_startup(p, 8, &su), 8);
    ASSERT_EQ(su.kind, SL_SU_SSL);
    sl_put_be32(p + 4, SL_PROTO_GSSENC);
    ASSERT_EQ(sl_proto_parse_startup(p, 8, &su), 8);
    ASSERT_EQ(su.kind, SL_SU_GSSENC);
    sl_put_be32(p, 16), sl_put_be32(p + 4, SL_PROTO_CANCEL);
    sl_put_be32(p + 8, 42), sl_put_be32(p + 12, 0xdeadbeef);
    ASSERT_EQ(sl_proto_parse_startup(p, 12, &su), SL_ENEEDMORE);
    ASSERT_EQ(sl_proto_parse_startup(p, 16, &su), 16);
    ASSERT_EQ(su.kind, SL_SU_CANCEL);
    ASSERT_EQ(su.cancel_pid, 42);
    ASSERT_EQ(su.cancel_key, 0xdeadbeefu);
}

static void test_startup_bad(void) {
    uint8_t p[64] = {0};
    sl_startup_t su;
    sl_put_be32(p, 4);
    ASSERT_EQ(sl_proto_parse_startup(p, 8, &su), SL_EBADLEN);
    sl_put_be32(p, 20000);
    ASSERT_EQ(sl_proto_parse_startup(p, 8, &su), SL_ETOOBIG);
    sl_put_be32(p, 12), sl_put_be32(p + 4, SL_PROTO_SSL);
    ASSERT_EQ(sl_proto_parse_startup(p, 12, &su), SL_EBADLEN);
    /* protocol 2.0 */
    const char *kv[] = {"user", "u", NULL};
    size_t n = build_startup(p, 0x20000, kv);
    ASSERT_EQ(sl_proto_parse_startup(p, n, &su), SL_EVERSION);
    /* no terminating NUL */
    n = build_startup(p, SL_PROTO_V3, kv);
    p[n - 1] = 'x';
    ASSERT_EQ(sl_proto_parse_startup(p, n, &su), SL_EPROTO);
    /* name without value */
    memcpy(p + 8, "user\0", 5);
    p[13] = 0;
    sl_put_be32(p, 14);
    ASSERT_EQ(sl_proto_parse_startup(p, 14, &su), SL_EPROTO);
    /* garbage */
    uint8_t g[32];
    for (int i = 0; i < 32; i++)
        g[i] = (uint8_t)(i * 37 + 11);
    ssize_t r = sl_proto_parse_startup(g, sizeof g, &su);
    ASSERT_TRUE(r < 0);
}

static void test_options(void) {
    char o[] = "-c a=1 -cb=2 --c-d=3 -c e=x\\ y";
    sl_kv_t kv[8];
    ASSERT_EQ(sl_proto_parse_options(o, kv, 8), 4);
    ASSERT_STREQ(kv[0].name, "a");
    ASSERT_STREQ(kv[0].value, "1");
    ASSERT_STREQ(kv[1].name, "b");
    ASSERT_STREQ(kv[2].name, "c_d");
    ASSERT_STREQ(kv[2].value, "3");
    ASSERT_STREQ(kv[3].value, "x y");
    char bad[] = "-x foo";
    ASSERT_EQ(sl_proto_parse_options(bad, kv, 8), SL_EPROTO);
    char noeq[] = "-c foo";
    ASSERT_EQ(sl_proto_parse_options(noeq, kv, 8), SL_EPROTO);
    char empty[] = "  ";
    ASSERT_EQ(sl_proto_parse_options(empty, kv, 8), 0);
}

static void test_scan(void) {
    uint8_t data[64];
    sl_buf_t b = {.data = data, .cap = sizeof data};
    ASSERT_EQ(sl_proto_put_query(&b, "select 1"), SL_OK);
    ASSERT_EQ(sl_proto_put_ready(&b, 'T'), SL_OK);
    size_t total = sl_buf_len(&b);
    /* Every split point gives the same two messages. */
    for (size_t cut = 0; cut <= total; cut++) {
        sl_scan_t s = {0};
        uint8_t coll[16];
        s.coll = coll, s.coll_cap = sizeof coll;
        int starts = 0, ends = 0;
        char z = 0;
        size_t parts[2][2] = {{0, cut}, {cut, total}};
        for (int k = 0; k < 2; k++) {
            size_t off = parts[k][0];
            while (off < parts[k][1]) {
                enum sl_scan_ev ev;
                off += sl_scan_feed(&s, data + off, parts[k][1] - off, &ev);
                if (ev == SL_SCAN_START) {
                    starts++;
                    s.collect = s.type == 'Z';
                }
                if (ev == SL_SCAN_END) {
                    ends++;
                    if (s.type == 'Z') z = (char)coll[0];
                }
            }
        }
        ASSERT_EQ(starts, 2);
        ASSERT_EQ(ends, 2);
        ASSERT_EQ(z, 'T');
        ASSERT_TRUE(sl_scan_at_boundary(&s));
    }
    uint8_t bad[5] = {'Q', 0, 0, 0, 3};
    sl_scan_t s = {0};
    enum sl_scan_ev ev;
    sl_scan_feed(&s, bad, 5, &ev);
    ASSERT_EQ(ev, SL_SCAN_ERROR);
}

static void test_build(void) {
    uint8_t data[256];
    sl_buf_t b = {.data = data, .cap = sizeof data};
    ASSERT_EQ(sl_proto_put_error(&b, "FATAL", "28P01", "nope"), SL_OK);
    ASSERT_EQ(data[0], 'E');
    uint32_t len = sl_be32(data + 1);
    ASSERT_EQ(len + 1, sl_buf_len(&b));
    sl_error_fields_t ef;
    ASSERT_EQ(sl_proto_parse_error(data + 5, len - 4, &ef), SL_OK);
    ASSERT_STREQ(ef.code, "28P01");
    ASSERT_STREQ(ef.message, "nope");
    ASSERT_STREQ(ef.severity, "FATAL");
    /* A 'C' field that is no SQLSTATE is not reported as one: it would
     * reach a client's ErrorResponse or the log as a code. */
    static const uint8_t odd[] = "SERROR\0C28P0\x01\0Mx\0";
    ASSERT_EQ(sl_proto_parse_error(odd, sizeof odd, &ef), SL_OK);
    ASSERT_TRUE(ef.code == NULL);
    ASSERT_STREQ(ef.message, "x");
    static const uint8_t longer[] = "CXX0001\0Mx\0";
    ASSERT_EQ(sl_proto_parse_error(longer, sizeof longer, &ef), SL_OK);
    ASSERT_TRUE(ef.code == NULL);
    static const uint8_t lower[] = "C42p01\0\0";
    ASSERT_EQ(sl_proto_parse_error(lower, sizeof lower, &ef), SL_OK);
    ASSERT_TRUE(ef.code == NULL);
    sl_buf_t small = {.data = data, .cap = 8};
    ASSERT_EQ(sl_proto_put_error(&small, "FATAL", "28P01", "nope"), SL_ENOSPACE);
    ASSERT_EQ(sl_buf_len(&small), 0);
    char q[64];
    ASSERT_TRUE(sl_proto_quote_literal("it's", q, sizeof q) > 0);
    ASSERT_STREQ(q, "'it''s'");
    ASSERT_TRUE(sl_proto_quote_literal("a\\b", q, sizeof q) > 0);
    ASSERT_STREQ(q, "E'a\\\\b'");
    ASSERT_TRUE(sl_proto_quote_ident("Date\"Style", q, sizeof q) > 0);
    ASSERT_STREQ(q, "\"Date\"\"Style\"");
    ASSERT_EQ(sl_proto_quote_literal("long value", q, 4), -1);
    sl_kv_t kv;
    const uint8_t ps[] = "TimeZone\0UTC";
    ASSERT_EQ(sl_proto_parse_param_status(ps, sizeof ps, &kv), SL_OK);
    ASSERT_STREQ(kv.value, "UTC");
    ASSERT_EQ(sl_proto_parse_param_status(ps, 8, &kv), SL_EPROTO);
}

/* A 3.2 startup with protocol options: NegotiateProtocolVersion names each
 * option once, in order, and offers 3.0; a plain 3.0 startup needs none. */
static void test_negotiate(void) {
    uint8_t pkt[256], data[256];
    const char *kv[] = {"user", "bob", "_pq_.a", "1", "database", "d", "_pq_.bee", "2", NULL};
    size_t n = build_startup(pkt, SL_PROTO_V3 + 2, kv);
    sl_startup_t su;
    ASSERT_EQ(sl_proto_parse_startup(pkt, n, &su), (long long)n);
    ASSERT_EQ(su.version & 0xffff, 2);
    sl_buf_t b = {.data = data, .cap = sizeof data};
    ASSERT_EQ(sl_proto_put_negotiate_version(&b, &su), 1);
    static const uint8_t want[] = {'v', 0,   0,   0,   28,  0,   3,   0,   0,   0,
                                   0,   0,   2,   '_', 'p', 'q', '_', '.', 'a', 0,
                                   '_', 'p', 'q', '_', '.', 'b', 'e', 'e', 0};
    ASSERT_EQ(sl_buf_len(&b), sizeof want);
    ASSERT_TRUE(memcmp(data, want, sizeof want) == 0);
    ASSERT_TRUE(sl_proto_is_protocol_option("_pq_.x"));
    ASSERT_TRUE(!sl_proto_is_protocol_option("_pq_"));
    ASSERT_TRUE(!sl_proto_is_protocol_option("application_name"));

    /* 3.1 without options: still answered, with an empty list. */
    const char *plain[] = {"user", "bob", NULL};
    n = build_startup(pkt, SL_PROTO_V3 + 1, plain);
    ASSERT_EQ(sl_proto_parse_startup(pkt, n, &su), (long long)n);
    b = (sl_buf_t){.data = data, .cap = sizeof data};
    ASSERT_EQ(sl_proto_put_negotiate_version(&b, &su), 1);
    ASSERT_EQ(sl_buf_len(&b), 13);
    ASSERT_EQ(sl_be32(data + 9), 0);

    /* 3.0 without options: nothing to negotiate. */
    n = build_startup(pkt, SL_PROTO_V3, plain);
    ASSERT_EQ(sl_proto_parse_startup(pkt, n, &su), (long long)n);
    b = (sl_buf_t){.data = data, .cap = sizeof data};
    ASSERT_EQ(sl_proto_put_negotiate_version(&b, &su), 0);
    ASSERT_EQ(sl_buf_len(&b), 0);

    /* No room: the buffer is left as it was. */
    n = build_startup(pkt, SL_PROTO_V3 + 2, kv);
    ASSERT_EQ(sl_proto_parse_startup(pkt, n, &su), (long long)n);
    b = (sl_buf_t){.data = data, .cap = 12};
    ASSERT_EQ(sl_proto_put_negotiate_version(&b, &su), SL_ENOSPACE);
    ASSERT_EQ(sl_buf_len(&b), 0);
}

/* The cancel key names its instance and worker, keeps the int32 positive,
 * and matches whatever the TTL bits of the request say. */
static void test_cancelkey(void) {
    uint32_t pid = sl_cancelkey_pid(SL_CANCELKEY_PEER_MAX, 63, 0xFFFFFFFFu);
    ASSERT_TRUE((pid & 0x80000000u) == 0);
    ASSERT_EQ(sl_cancelkey_peer(pid), SL_CANCELKEY_PEER_MAX);
    ASSERT_EQ(sl_cancelkey_worker(pid), 63);
    pid = sl_cancelkey_pid(7, 2, 1025);
    ASSERT_EQ(sl_cancelkey_peer(pid), 7);
    ASSERT_EQ(sl_cancelkey_worker(pid), 2);
    ASSERT_EQ(pid & 0x3FF, 1);
    uint32_t key = sl_cancelkey_secret(0xFFFFFF3Fu);
    ASSERT_EQ(sl_cancelkey_ttl(key), SL_CANCELKEY_TTL_MAX);
    uint32_t fwd = sl_cancelkey_with_ttl(key, 1);
    ASSERT_EQ(sl_cancelkey_ttl(fwd), 1);
    ASSERT_TRUE(sl_cancelkey_matches(pid, fwd, pid, key));
    ASSERT_TRUE(!sl_cancelkey_matches(pid, fwd ^ 0x100u, pid, key));
    ASSERT_TRUE(!sl_cancelkey_matches(pid + 1, fwd, pid, key));
}

int main(void) {
    test_startup_ok();
    test_startup_special();
    test_startup_bad();
    test_options();
    test_scan();
    test_build();
    test_negotiate();
    test_cancelkey();
    return check_done("test_proto");
}
