/* log: what clients choose (names, messages) cannot forge or split a line. */
#include "sluice/log.h"
#include "unit/check.h"

int main(void) {
    char out[64];
    ASSERT_EQ(sl_log_escape("C-1 db=app user=bob", out, sizeof out), 19);
    ASSERT_STREQ(out, "C-1 db=app user=bob");
    /* A newline and a forged continuation stay on one line. */
    sl_log_escape("x\n2026-11-30T00:00:00Z level=info", out, sizeof out);
    ASSERT_TRUE(strchr(out, '\n') == NULL);
    ASSERT_STREQ(out, "x\\x0a2026-11-30T00:00:00Z level=info");
    /* ANSI escapes, carriage return, DEL and quotes. */
    sl_log_escape("\x1b[31mred\r\x7f\"q\"", out, sizeof out);
    ASSERT_STREQ(out, "\\x1b[31mred\\x0d\\x7f'q'");
    /* Bytes of UTF-8 names pass as they are. */
    sl_log_escape("j\xc3\xbcrgen", out, sizeof out);
    ASSERT_STREQ(out, "j\xc3\xbcrgen");
    /* Truncated, never overflowing, always terminated. */
    char small[8];
    memset(small, 'Z', sizeof small);
    size_t n = sl_log_escape("\n\n\n\n", small, sizeof small);
    ASSERT_TRUE(n < sizeof small && small[n] == '\0');
    ASSERT_STREQ(small, "\\x0a");
    return check_done("test_log");
}
