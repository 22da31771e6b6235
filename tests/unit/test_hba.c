/* hba: parsing with file:line errors, and first-match rules over connection
 * type, TLS, database, user and address (IPv4, IPv6, masks). */
#include "sluice/hba.h"
#include "unit/check.h"

#include <arpa/inet.h>
#include <netinet/in.h>

static struct sockaddr_storage v4(const char *a) {
    struct sockaddr_storage ss = {0};
    struct sockaddr_in *s = (struct sockaddr_in *)&ss;
    s->sin_family = AF_INET;
    inet_pton(AF_INET, a, &s->sin_addr);
    return ss;
}

static struct sockaddr_storage v6(const char *a) {
    struct sockaddr_storage ss = {0};
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)&ss;
    s->sin6_family = AF_INET6;
    inet_pton(AF_INET6, a, &s->sin6_addr);
    return ss;
}

#define M(addr, tls, db, user) sl_hba_match(h, (addr), (tls), (db), (user), &line)

int main(void) {
    char err[512];
    const char *text = "# comment\n"
                       "local   all        all                     trust\n"
                       "hostssl app        alice  10.0.0.0/8       cert\n"
                       "hostnossl all      bob    10.1.2.3 255.255.255.255 md5   # bob plain only\n"
                       "host    \"app\",ops  all    192.168.0.0/16   scram-sha-256\n"
                       "host    all        carol  ::1/128          password\n"
                       "host    all        all    0.0.0.0/0        reject\n";
    sl_hba_t *h = sl_hba_parse("hba.conf", text, err, sizeof err);
    ASSERT_TRUE(h != NULL);
    int line;
    ASSERT_EQ(M(NULL, false, "x", "y"), SL_HBA_TRUST);
    ASSERT_EQ(line, 2);
    struct sockaddr_storage a = v4("10.9.9.9"), b = v4("10.1.2.3"), c = v4("192.168.7.1");
    struct sockaddr_storage d = v4("8.8.8.8"), l6 = v6("::1"), o6 = v6("::2");
    ASSERT_EQ(M((struct sockaddr *)&a, true, "app", "alice"), SL_HBA_CERT);
    ASSERT_EQ(line, 3);
    ASSERT_EQ(M((struct sockaddr *)&a, false, "app", "alice"), SL_HBA_REJECT); /* not TLS */
    ASSERT_EQ(line, 7);
    ASSERT_EQ(M((struct sockaddr *)&b, false, "any", "bob"), SL_HBA_MD5);
    ASSERT_EQ(M((struct sockaddr *)&b, true, "any", "bob"), SL_HBA_REJECT); /* hostnossl */
    ASSERT_EQ(M((struct sockaddr *)&c, true, "ops", "zed"), SL_HBA_SCRAM);
    ASSERT_EQ(M((struct sockaddr *)&c, true, "other", "zed"), SL_HBA_REJECT);
    ASSERT_EQ(M((struct sockaddr *)&l6, false, "db", "carol"), SL_HBA_PASSWORD);
    ASSERT_EQ(M((struct sockaddr *)&o6, false, "db", "carol"), SL_HBA_REJECT);
    ASSERT_EQ(line, 0); /* no IPv6 line matches: rejected without a line */
    ASSERT_EQ(M((struct sockaddr *)&d, false, "app", "alice"), SL_HBA_REJECT);
    ASSERT_EQ(M((struct sockaddr *)&d, false, "app", ""), SL_HBA_REJECT);
    sl_hba_free(h);

    /* A client's name with a comma is no entry of a list: not "alice,bob"
     * in alice,bob, not ",app" at the list's start (found by fuzz_hba). */
    h = sl_hba_parse("hba.conf", "local app alice,bob trust\nlocal all all reject\n", err,
                     sizeof err);
    ASSERT_TRUE(h != NULL);
    ASSERT_EQ(M(NULL, false, "app", "alice"), SL_HBA_TRUST);
    ASSERT_EQ(M(NULL, false, "app", "alice,bob"), SL_HBA_REJECT);
    ASSERT_EQ(line, 2);
    ASSERT_EQ(M(NULL, false, ",app", "alice"), SL_HBA_REJECT);
    sl_hba_free(h);

    /* Errors name the file and the line. */
    struct {
        const char *text, *want;
    } bad[] = {
        {"local all all trust\nhots all all 1.2.3.4/32 md5\n",
         "h:2: unknown connection type (use local, host, hostssl, hostnossl): \"hots\""},
        {"host all all 1.2.3.4/40 md5\n", "h:1: invalid mask length \"40\""},
        {"host all all 1.2.3.x/32 md5\n", "h:1: invalid address \"1.2.3.x\""},
        {"host all all 1.2.3.4 md5\n", "h:1: address needs a /bits mask or a mask field \"1.2.3.4\""},
        {"host all all 1.2.3.4/32 ldap\n", "h:1: unsupported authentication method \"ldap\""},
        {"host all all 1.2.3.4/32 cert\n", "h:1: cert needs a hostssl line"},
        {"local all\n", "h:1: too few fields"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ASSERT_TRUE(sl_hba_parse("h", bad[i].text, err, sizeof err) == NULL);
        ASSERT_STREQ(err, bad[i].want);
    }
    ASSERT_TRUE(sl_hba_load("/nonexistent/hba", err, sizeof err) == NULL);
    return check_done("test_hba");
}
