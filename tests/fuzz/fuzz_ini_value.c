/* Fuzz target: one value of one [sluice] key (config.c's option table, as
 * a line of the file and the console's SET give it): "key=value", the key
 * by name (inputs that name no key are skipped). Checks: a refusal says why and
 * leaves the value as it was; an accepted value reads back (SHOW CONFIG's
 * form) as a value that is accepted again and reads back the same. */
#include "fuzz.h"
#include "sluice/config.h"

static sl_config_t *base(void) {
    static sl_config_t *cfg;
    char err[512];
    if (!cfg)
        cfg = sl_config_load_string(
            "base.ini", "[databases]\ndb = host=127.0.0.1\n[sluice]\nauth_type = trust\n", err,
            sizeof err);
    if (!cfg) {
        fprintf(stderr, "base.ini: %s\n", err);
        abort();
    }
    return cfg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_in_t in = {data, size};
    char *key = fuzz_part(&in, '=', NULL);
    int i = sl_config_key_index(key);
    free(key);
    if (i < 0) return 0;
    char *value = fuzz_rest(&in, NULL);
    sl_config_t *cfg = base();
    /* Room for any value the input can hold: a value cut to fit would not
     * read back. */
    static char before[32768], after[32768], again[32768];
    char err[512] = "";
    sl_config_key_value(cfg, i, before, sizeof before);
    if (sl_config_set_key(cfg, i, value, err, sizeof err) != SL_OK) {
        FUZZ_CHECK(err[0]);
        sl_config_key_value(cfg, i, after, sizeof after);
        FUZZ_CHECK(!strcmp(before, after));
    } else {
        sl_config_key_value(cfg, i, after, sizeof after);
        FUZZ_CHECK(sl_config_set_key(cfg, i, after, err, sizeof err) == SL_OK);
        sl_config_key_value(cfg, i, again, sizeof again);
        if (strcmp(after, again)) {
            fprintf(stderr, "%s: \"%s\" reads back as \"%s\", then \"%s\"\n", sl_config_key(i),
                    value, after, again);
            abort();
        }
        /* Back to the value before, so that inputs stay independent. */
        FUZZ_CHECK(sl_config_set_key(cfg, i, before, err, sizeof err) == SL_OK);
    }
    free(value);
    return 0;
}
