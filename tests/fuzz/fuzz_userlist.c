/* Fuzz target: auth_file (userlist.txt) text, as a load reads it. Checks:
 * a parse either fails with a "name:line:" message or gives users whose
 * lookup by name finds the first of that name, with the secret's kind as
 * classified; a SCRAM verifier that parsed here gives its SCRAM secret. */
#include "fuzz.h"
#include "sluice/userlist.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_in_t in = {data, size};
    char *text = fuzz_rest(&in, NULL);
    sl_userlist_t ul;
    char err[256] = "";
    int rc = sl_userlist_parse("userlist.txt", text, &ul, err, sizeof err);
    if (rc == SL_ECONFIG) FUZZ_CHECK(!strncmp(err, "userlist.txt:", 13) && ul.n == 0);
    if (rc == SL_OK) {
        for (int i = 0; i < ul.n; i++) {
            sl_user_secret_t *u = &ul.v[i];
            sl_user_secret_t *f = sl_userlist_find(&ul, u->name);
            FUZZ_CHECK(f && f <= u && !strcmp(f->name, u->name));
            FUZZ_CHECK(u->kind == sl_secret_classify(u->secret));
            /* A plaintext one would be derived with 4096 rounds of PBKDF2. */
            if (u->kind == SL_SECRET_SCRAM) FUZZ_CHECK(sl_user_scram(u) != NULL);
            if (u->kind == SL_SECRET_MD5) FUZZ_CHECK(sl_user_scram(u) == NULL);
        }
        sl_userlist_free(&ul);
    }
    free(text);
    return 0;
}
