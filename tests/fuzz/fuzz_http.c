/* Fuzz target: the metrics endpoint's request head parser
 * (src/metrics/http_parse.c), on heads cut at every length the input
 * picks as the endpoint reads them. Checks: a complete head's length is
 * within the bytes given; the path lies inside them; a prefix of a head
 * that parsed is never refused (only "need more"); parsing is stable
 * (the same bytes give the same answer). */
#include "fuzz.h"
#include "metrics/expose.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > SL_HTTP_MAX_HEAD) return 0;
    char *p = malloc(size ? size : 1);
    if (!p) abort();
    memcpy(p, data, size);
    sl_http_req_t req;
    int r = sl_http_parse(p, size, &req);
    FUZZ_CHECK(r == SL_ENEEDMORE || r == SL_EPROTO || (r > 0 && (size_t)r <= size));
    if (r > 0) {
        FUZZ_CHECK(req.path >= p && req.path + req.path_len <= p + r);
        FUZZ_CHECK(req.minor >= 0 && req.minor <= 9);
        /* Read in two pieces: the first part alone is incomplete. */
        for (size_t cut = 0; cut < (size_t)r; cut += 1 + (size_t)r / 16) {
            sl_http_req_t part;
            int q = sl_http_parse(p, cut, &part);
            if (q != SL_ENEEDMORE) {
                fprintf(stderr, "a head of %d bytes gives %d at %zu\n", r, q, cut);
                abort();
            }
        }
        sl_http_req_t again;
        FUZZ_CHECK(sl_http_parse(p, size, &again) == r && again.path == req.path);
    }
    free(p);
    return 0;
}
