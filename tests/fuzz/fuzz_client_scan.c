/* Fuzz target: the framing of a client's typed messages (proto.c's
 * scanner, as relay.c feeds it), with the input cut into reads of sizes the
 * input chooses and bodies collected into a buffer of a chosen size; each
 * whole SASLInitialResponse body is parsed as auth.c does. Checks: the
 * scanner consumes what it is given and no more, reports START and END in
 * pairs with the declared length, collects no more than the buffer holds,
 * and a parsed mechanism and data lie inside the body. */
#include "fuzz.h"
#include "sluice/proto.h"

static void check_sasl(const uint8_t *body, size_t n) {
    const char *mech;
    const uint8_t *d;
    uint32_t dl;
    if (sl_proto_parse_sasl_initial(body, n, &mech, &d, &dl) != SL_OK) return;
    FUZZ_CHECK((const uint8_t *)mech == body && memchr(body, '\0', n));
    FUZZ_CHECK(d >= body && d + dl <= body + n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_in_t in = {data, size};
    size_t chunk = 1 + fuzz_byte(&in) % 64;                        /* bytes per read */
    uint32_t cap = fuzz_byte(&in) % 2 ? 8192 : 1 + fuzz_byte(&in); /* collection buffer */
    uint8_t *coll = malloc(cap);
    if (!coll) abort();
    sl_scan_t s = {.coll = coll, .coll_cap = cap};
    bool open = false;
    uint64_t body = 0; /* body bytes seen of the open message */
    while (in.n) {
        size_t n = in.n < chunk ? in.n : chunk;
        const uint8_t *p = in.p;
        in.p += n, in.n -= n;
        for (size_t off = 0; off < n;) {
            enum sl_scan_ev ev;
            bool was_body = s.in_body;
            size_t used = sl_scan_feed(&s, p + off, n - off, &ev);
            FUZZ_CHECK(used <= n - off);
            FUZZ_CHECK(used > 0 || ev != SL_SCAN_NONE);
            if (was_body) body += used;
            off += used;
            if (ev == SL_SCAN_ERROR) {
                FUZZ_CHECK(s.len < 4);
                free(coll);
                return 0;
            }
            if (ev == SL_SCAN_START) {
                FUZZ_CHECK(!open && s.len >= 4 && s.remain == s.len - 4);
                open = true, body = 0;
                s.collect = s.type == 'p' || s.type == 'Q';
                /* An empty body ends at once: the scanner says so next. */
            } else if (ev == SL_SCAN_END) {
                FUZZ_CHECK(open && body == s.len - 4 && s.coll_len <= cap);
                if (s.collect) FUZZ_CHECK(s.coll_len == (s.len - 4 < cap ? s.len - 4 : cap));
                if (s.type == 'p' && sl_scan_complete(&s)) check_sasl(coll, s.coll_len);
                open = false;
                FUZZ_CHECK(sl_scan_at_boundary(&s));
            }
        }
    }
    free(coll);
    return 0;
}
