/* Fuzz target: a client's password answer to md5 and cleartext
 * authentication (auth.c) against an auth_file secret that is plaintext,
 * an md5 hash, or missing (an unknown user, md5 only). The first byte
 * picks method and secret; then the user name, the secret (each ended by
 * a NUL) and the PasswordMessage body. Checks: only OK, FAIL or
 * BAD_MESSAGE come back; OK writes exactly AuthenticationOk; an unknown
 * user never passes. A SCRAM verifier as secret is left out: it makes a
 * cleartext check run PBKDF2 with the verifier's iteration count. */
#include "fuzz.h"
#include "sluice/auth.h"
#include "sluice/config.h"
#include "sluice/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static sl_loop_t loop; /* only its mock_secret is read */
    fuzz_in_t in = {data, size};
    uint8_t how = fuzz_byte(&in);
    char *user = fuzz_part(&in, 0, NULL);
    char *secret = fuzz_part(&in, 0, NULL);
    int method = how & 1 ? SL_AUTH_MD5 : SL_AUTH_PLAIN;
    bool known = (how & 2) || method == SL_AUTH_PLAIN;
    sl_user_secret_t u = {.name = user, .secret = secret, .kind = sl_secret_classify(secret)};
    if (u.kind == SL_SECRET_SCRAM) goto out;
    uint8_t mem[256];
    sl_buf_t b = {mem, sizeof mem, 0, 0};
    sl_auth_t a;
    enum sl_auth_result r = sl_auth_begin(&a, &loop, method, user, known ? &u : NULL, &b);
    FUZZ_CHECK(r == SL_AUTH_CONTINUE);
    FUZZ_CHECK(b.tail == (method == SL_AUTH_MD5 ? 13u : 9u) && mem[0] == 'R');
    b.head = b.tail = 0;
    r = sl_auth_step(&a, user, in.p, in.n, &b);
    FUZZ_CHECK(r == SL_AUTH_OK || r == SL_AUTH_FAIL || r == SL_AUTH_BAD_MESSAGE);
    if (r == SL_AUTH_OK)
        FUZZ_CHECK(known && b.tail == 9 && sl_be32(mem + 5) == 0);
    else
        FUZZ_CHECK(b.tail == 0);
    sl_auth_clear(&a);
out:
    free(user);
    free(secret);
    return 0;
}
