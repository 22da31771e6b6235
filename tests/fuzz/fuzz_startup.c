/* Fuzz target: the first packet of a client connection (StartupMessage,
 * SSLRequest, GSSENCRequest, CancelRequest), as the client's login reads
 * it: parse, look up the parameters sluice uses, split the "options"
 * parameter into -c pairs, answer NegotiateProtocolVersion. Every string
 * the parser returns must lie inside the packet and end inside it. */
#include "fuzz.h"
#include "sluice/proto.h"

/* s must start inside p[0..len) and its NUL too. */
static void check_inside(const uint8_t *p, size_t len, const char *s) {
    FUZZ_CHECK((const uint8_t *)s >= p && (const uint8_t *)s < p + len);
    FUZZ_CHECK(memchr(s, '\0', len - (size_t)((const uint8_t *)s - p)) != NULL);
}

static void use_options(const char *v) {
    char *copy = strdup(v);
    if (!copy) abort();
    sl_kv_t kv[SL_STARTUP_MAX_PARAMS];
    int k = sl_proto_parse_options(copy, kv, SL_STARTUP_MAX_PARAMS);
    FUZZ_CHECK(k <= SL_STARTUP_MAX_PARAMS);
    for (int j = 0; j < k; j++)
        FUZZ_CHECK(kv[j].name[0] && strlen(kv[j].value) <= strlen(v));
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sl_startup_t su;
    ssize_t r = sl_proto_parse_startup(data, size, &su);
    if (r < 0) return 0;
    FUZZ_CHECK((size_t)r <= size && r >= 8);
    if (su.kind != SL_SU_STARTUP) return 0;
    FUZZ_CHECK(su.nparams >= 0 && su.nparams <= SL_STARTUP_MAX_PARAMS);
    for (int i = 0; i < su.nparams; i++) {
        check_inside(data, (size_t)r, su.params[i].name);
        check_inside(data, (size_t)r, su.params[i].value);
    }
    (void)sl_startup_get(&su, "user");
    (void)sl_startup_get(&su, "database");
    const char *opts = sl_startup_get(&su, "options");
    if (opts) use_options(opts);
    uint8_t out[16384];
    sl_buf_t b = {out, sizeof out, 0, 0};
    int w = sl_proto_put_negotiate_version(&b, &su);
    FUZZ_CHECK(w == 0 || w == 1 || w == SL_ENOSPACE);
    FUZZ_CHECK(b.tail <= b.cap);
    if (w == 1) FUZZ_CHECK(out[0] == 'v' && sl_be32(out + 1) + 1 == b.tail);
    return 0;
}
