/* Fuzz target: a whole sluice.ini (config.c through inih, from memory as
 * a load reads a file): sections, keys, values, [databases] connection
 * strings, [users] lines, replicas, validation. Checks: a failed load
 * says "name:" first; a loaded one answers every [sluice] key's value
 * (as SHOW CONFIG does), the limits of each database entry, and frees. */
#include "fuzz.h"
#include "sluice/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_in_t in = {data, size};
    char *text = fuzz_rest(&in, NULL);
    char err[1024] = "";
    sl_config_t *cfg = sl_config_load_string("fuzz.ini", text, err, sizeof err);
    if (!cfg) {
        FUZZ_CHECK(!strncmp(err, "fuzz.ini", 8));
    } else {
        char v[1024];
        for (int i = 0; i < sl_config_nkeys(); i++) {
            sl_config_key_value(cfg, i, v, sizeof v);
            FUZZ_CHECK(strlen(v) < sizeof v);
        }
        for (int i = 0; i < cfg->ndbs; i++) {
            sl_limits_t lim;
            sl_config_limits(cfg, &cfg->dbs[i], "someone", &lim);
            FUZZ_CHECK(sl_config_find_db(cfg, cfg->dbs[i].name) != NULL);
        }
        (void)sl_config_check_query(cfg);
        sl_config_free(cfg);
    }
    free(text);
    return 0;
}
