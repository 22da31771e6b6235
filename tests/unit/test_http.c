/* The metrics endpoint's request head parser: every valid head split at
 * every byte needs more until its empty line and never reads past what it
 * was given (the input ends just before an unreadable page); malformed
 * heads are refused, also before they are complete. */
#include <sys/mman.h>
#include <unistd.h>

#include "metrics/expose.h"
#include "sluice/config.h"
#include "sluice/err.h"
#include "unit/check.h"

/* Copies p to the very end of a readable page followed by an unreadable one,
 * so any read past n faults. */
static char *guarded(const char *p, size_t n, char **base) {
    long pg = sysconf(_SC_PAGESIZE);
    char *m =
        mmap(NULL, (size_t)pg * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(m + pg * 3, (size_t)pg, PROT_NONE);
    char *dst = m + pg * 3 - n;
    memcpy(dst, p, n);
    *base = m;
    return dst;
}

static void unguard(char *base) {
    munmap(base, (size_t)sysconf(_SC_PAGESIZE) * 4);
}

static int parse(const char *p, size_t n, sl_http_req_t *req) {
    char *base;
    char *g = guarded(p, n, &base);
    int rc = sl_http_parse(g, n, req);
    if (rc > 0 && req->path) req->path = p + (req->path - g); /* before the copy goes */
    unguard(base);
    return rc;
}

static void valid(const char *head, int method, const char *path, int minor) {
    size_t n = strlen(head);
    sl_http_req_t req;
    for (size_t cut = 0; cut < n; cut++)
        ASSERT_EQ(parse(head, cut, &req), SL_ENEEDMORE);
    memset(&req, 0, sizeof req);
    ASSERT_EQ(parse(head, n, &req), (long long)n);
    ASSERT_EQ(req.method, method);
    ASSERT_EQ(req.minor, minor);
    ASSERT_EQ(req.path_len, strlen(path));
    ASSERT_TRUE(req.path && !strncmp(req.path, path, req.path_len));
    /* A body or a second request after the head is not part of it. */
    char more[512];
    snprintf(more, sizeof more, "%sXYZ", head);
    ASSERT_EQ(parse(more, strlen(more), &req), (long long)n);
}

static void test_valid(void) {
    valid("GET /metrics HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n", SL_HTTP_GET, "/metrics", 1);
    valid("HEAD /health HTTP/1.0\r\n\r\n", SL_HTTP_HEAD, "/health", 0);
    valid("GET /ready?x=1&y HTTP/1.1\n\n", SL_HTTP_GET, "/ready", 1);
    valid("\r\nGET / HTTP/1.1\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n", SL_HTTP_GET, "/", 1);
    valid("POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\n", SL_HTTP_OTHER, "/metrics", 1);
    valid("get /metrics HTTP/1.1\r\n\r\n", SL_HTTP_OTHER, "/metrics", 1);
    valid("GET /\xc3\xa9 HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n", SL_HTTP_GET, "/\xc3\xa9", 1);
}

static void invalid(const char *head, size_t n) {
    sl_http_req_t req;
    ASSERT_EQ(parse(head, n, &req), SL_EPROTO);
}

#define INVALID(s) invalid(s, sizeof s - 1)

static void test_invalid(void) {
    INVALID("GARBAGE\r\n\r\n");
    INVALID("GET /metrics\r\n\r\n");
    INVALID("GET /metrics HTTP/2.0\r\n\r\n");
    INVALID("GET /metrics HTTP/1.x\r\n\r\n");
    INVALID("GET /metrics HTTP/1.1 \r\n\r\n");
    INVALID("GET  /metrics HTTP/1.1\r\n\r\n");
    INVALID(" GET /metrics HTTP/1.1\r\n\r\n");
    INVALID("GET /metrics HTTP/1.1\r\nNoColon\r\n\r\n");
    INVALID("GET /metrics HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n");
    INVALID("GET /metrics HTTP/1.1\r\nBad Name: 1\r\n\r\n");
    INVALID("GET /metrics HTTP/1.1\r\n: v\r\n\r\n");
    INVALID("GET /metrics HTTP/1.1\r\nX: a\x01z\r\n\r\n");
    INVALID("GET /metrics HTTP/1.1\r\nX: a\rz\r\n\r\n");
    INVALID("GET /me\0trics HTTP/1.1\r\n\r\n");
    INVALID("\r\rGET / HTTP/1.1\r\n\r\n");
    /* Refused before the head is complete: these bytes never become valid. */
    INVALID("\x16\x03\x01\x02\x00");
    INVALID("\0\0\0\x08\x04\xd2\x16\x2f");
    INVALID("GET /metrics HTTP/1.1\r\nX: \x7f");
}

/* metrics_listen's addr:port, as the config check and the endpoint read it. */
static void test_listen_value(void) {
    char host[64];
    int port = 0;
    ASSERT_EQ(sl_config_parse_hostport("127.0.0.1:9127", host, sizeof host, &port), SL_OK);
    ASSERT_STREQ(host, "127.0.0.1");
    ASSERT_EQ(port, 9127);
    ASSERT_EQ(sl_config_parse_hostport("[::1]:1", host, sizeof host, &port), SL_OK);
    ASSERT_STREQ(host, "::1");
    ASSERT_EQ(port, 1);
    ASSERT_EQ(sl_config_parse_hostport("*:65535", host, sizeof host, &port), SL_OK);
    ASSERT_STREQ(host, "*");
    const char *bad[] = {":9127", "127.0.0.1", "::1:9127", "h:0", "h:65536", "h:12x",
                         "h:",    "[::1]9127", "[]:1",     "",    "[::1:1"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        ASSERT_EQ(sl_config_parse_hostport(bad[i], host, sizeof host, &port), SL_ECONFIG);
    char err[512] = "";
    sl_config_t *cfg = sl_config_load_string(
        "t.ini", "[sluice]\nauth_type = trust\nmetrics_listen = 9127\n", err, sizeof err);
    ASSERT_TRUE(cfg == NULL && strstr(err, "metrics_listen: invalid value \"9127\""));
    cfg = sl_config_load_string("t.ini", "[sluice]\nauth_type = trust\n", err, sizeof err);
    ASSERT_TRUE(cfg && !strcmp(cfg->metrics_listen, "")); /* off by default */
    sl_config_free(cfg);
}

int main(void) {
    test_valid();
    test_invalid();
    test_listen_value();
    return check_done("test_http");
}
