/* UTF-8 checks for text that sluice shows to others: names and parameter
 * values a client sent are bytes, and a client may send bytes that are not
 * UTF-8. The admin console announces client_encoding UTF8 and drivers
 * decode what it sends with it; Prometheus refuses a whole scrape for one
 * label that is not UTF-8. */
#ifndef SLUICE_UTF8_H
#define SLUICE_UTF8_H

#include <stddef.h>

/* Bytes of the well-formed UTF-8 character at p, of the n bytes there
 * (RFC 3629: no overlong form, no surrogate, nothing above U+10FFFF); 0
 * when there is none, a character cut short by n included. */
static inline int sl_utf8_char_len(const unsigned char *p, size_t n) {
    if (n == 0) return 0;
    if (p[0] < 0x80) return 1;
    int len;
    unsigned char lo = 0x80, hi = 0xbf; /* the second byte's range */
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        len = 2;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        len = 3;
        if (p[0] == 0xe0) lo = 0xa0;
        if (p[0] == 0xed) hi = 0x9f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        len = 4;
        if (p[0] == 0xf0) lo = 0x90;
        if (p[0] == 0xf4) hi = 0x8f;
    } else {
        return 0;
    }
    if (n < (size_t)len || p[1] < lo || p[1] > hi) return 0;
    for (int i = 2; i < len; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    return len;
}

/* Replaces, in the n bytes at s, each byte that is not part of a
 * well-formed character with '?'. */
static inline void sl_utf8_clean(char *s, size_t n) {
    unsigned char *p = (unsigned char *)s;
    for (size_t i = 0; i < n;) {
        int k = sl_utf8_char_len(p + i, n - i);
        if (k == 0) {
            p[i++] = '?';
            continue;
        }
        i += (size_t)k;
    }
}

#endif
