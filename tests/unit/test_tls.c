/* tls: protocol lists, and the context's refusals with what to fix. */
#include "sluice/tls.h"
#include "unit/check.h"

static sl_config_t *cfg_of(const char *text) {
    char err[512];
    sl_config_t *cfg = sl_config_load_string("t.ini", text, err, sizeof err);
    if (!cfg) printf("config: %s\n", err);
    return cfg;
}

int main(void) {
    int lo, hi;
    ASSERT_EQ(sl_tls_parse_protocols("secure", &lo, &hi), SL_OK);
    ASSERT_TRUE(lo == TLS1_2_VERSION && hi == TLS1_3_VERSION);
    ASSERT_EQ(sl_tls_parse_protocols("tlsv1.3", &lo, &hi), SL_OK);
    ASSERT_TRUE(lo == TLS1_3_VERSION && hi == TLS1_3_VERSION);
    ASSERT_EQ(sl_tls_parse_protocols("TLSv1.0, tlsv1.2", &lo, &hi), SL_OK);
    ASSERT_TRUE(lo == TLS1_VERSION && hi == TLS1_2_VERSION);
    ASSERT_EQ(sl_tls_parse_protocols("tlsv1.2:tlsv1.3", &lo, &hi), SL_OK);
    ASSERT_EQ(sl_tls_parse_protocols("sslv3", &lo, &hi), SL_ECONFIG);
    ASSERT_EQ(sl_tls_parse_protocols("", &lo, &hi), SL_ECONFIG);
    ASSERT_STREQ(sl_tls_version_name(TLS1_2_VERSION), "TLSv1.2");

    char err[512];
    sl_config_t *cfg = cfg_of("[sluice]\nlisten_addr = 127.0.0.1\nauth_type = trust\n");
    ASSERT_TRUE(cfg && sl_tls_client_ctx(cfg, err, sizeof err) == NULL && err[0] == '\0');
    sl_config_free(cfg);
    cfg = cfg_of("[sluice]\nlisten_addr = 127.0.0.1\nauth_type = trust\nclient_tls_sslmode = require\n");
    ASSERT_TRUE(cfg && sl_tls_client_ctx(cfg, err, sizeof err) == NULL);
    ASSERT_STREQ(err, "client_tls_sslmode = require needs client_tls_key_file and "
                      "client_tls_cert_file");
    sl_config_free(cfg);
    cfg = cfg_of("[sluice]\nlisten_addr = 127.0.0.1\nauth_type = trust\nclient_tls_sslmode = "
                 "prefer\nclient_tls_cert_file = /nonexistent.crt\nclient_tls_key_file = /x.key\n");
    ASSERT_TRUE(cfg && sl_tls_client_ctx(cfg, err, sizeof err) == NULL);
    ASSERT_TRUE(strstr(err, "client_tls_cert_file \"/nonexistent.crt\" does not load") != NULL);
    sl_config_free(cfg);
    /* An unknown protocol is a configuration error at load time. */
    char e2[512];
    ASSERT_TRUE(sl_config_load_string("t.ini", "[sluice]\nlisten_addr = x\nauth_type = trust\n"
                                      "server_tls_protocols = tlsv9\n", e2, sizeof e2) == NULL);
    ASSERT_TRUE(strstr(e2, "server_tls_protocols: unknown value \"tlsv9\"") != NULL);
    ASSERT_TRUE(sl_config_load_string("t.ini", "[sluice]\nlisten_addr = x\nauth_type = trust\n"
                                      "client_tls_sslmode = sometimes\n", e2, sizeof e2) == NULL);
    return check_done("test_tls");
}
