/* Fuzz target: auth_hba_file text (hba.c), then a few connections matched
 * against the rules that parsed: a Unix socket, IPv4 and IPv6 addresses,
 * with and without TLS, database and user names taken from the input's
 * first line. Checks: a failed parse says "name:line:", a match returns a
 * known method, and the line it names exists (0 only with reject). */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "fuzz.h"
#include "sluice/hba.h"

static void match(const sl_hba_t *h, const struct sockaddr *a, bool tls, const char *db,
                  const char *user, int lines) {
    int line = -1;
    enum sl_hba_method m = sl_hba_match(h, a, tls, db, user, &line);
    FUZZ_CHECK(m >= SL_HBA_REJECT && m <= SL_HBA_PASSWORD);
    FUZZ_CHECK(line >= 0 && line <= lines);
    if (line == 0) FUZZ_CHECK(m == SL_HBA_REJECT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_in_t in = {data, size};
    uint8_t pick = fuzz_byte(&in);
    char *db = fuzz_part(&in, ' ', NULL);
    char *user = fuzz_part(&in, '\n', NULL);
    char *text = fuzz_rest(&in, NULL);
    int lines = 1;
    for (const char *c = text; *c; c++)
        lines += *c == '\n';
    char err[256] = "";
    sl_hba_t *h = sl_hba_parse("hba.conf", text, err, sizeof err);
    if (!h) {
        FUZZ_CHECK(!strncmp(err, "hba.conf:", 9));
    } else {
        struct sockaddr_in v4 = {.sin_family = AF_INET};
        v4.sin_addr.s_addr = htonl(0x0a000000u | (uint32_t)pick << 8 | pick);
        struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
        v6.sin6_addr.s6_addr[15] = pick;
        v6.sin6_addr.s6_addr[0] = pick & 0x80 ? 0xfe : 0;
        for (int tls = 0; tls < 2; tls++) {
            match(h, NULL, tls, db, user, lines);
            match(h, (struct sockaddr *)&v4, tls, db, user, lines);
            match(h, (struct sockaddr *)&v6, tls, db, user, lines);
        }
        sl_hba_free(h);
    }
    free(db);
    free(user);
    free(text);
    return 0;
}
