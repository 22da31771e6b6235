/* Helpers the fuzz targets share: the entry point's declaration, a check
 * that aborts (so that libFuzzer and the replay programs both report it,
 * in every build type), and a reader that splits one input into the
 * choices and parts a target needs. */
#ifndef SLUICE_FUZZ_H
#define SLUICE_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant of the code under test: abort with where and what when it
 * does not hold (assert() would vanish with NDEBUG). */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct fuzz_in {
    const uint8_t *p; /* borrowed: the input */
    size_t n;         /* bytes left */
} fuzz_in_t;

/* The next byte, 0 once the input is used up. */
static inline uint8_t fuzz_byte(fuzz_in_t *in) {
    if (!in->n) return 0;
    in->n--;
    return *in->p++;
}

/* The bytes up to the next separator byte sep (or the end), as a
 * NUL-terminated copy the caller frees; *len gets their count. */
static inline char *fuzz_part(fuzz_in_t *in, uint8_t sep, size_t *len) {
    const uint8_t *e = in->n ? memchr(in->p, sep, in->n) : NULL;
    size_t k = e ? (size_t)(e - in->p) : in->n;
    char *s = malloc(k + 1);
    if (!s) abort();
    if (k) memcpy(s, in->p, k);
    s[k] = '\0';
    in->p += k + (e ? 1 : 0);
    in->n -= k + (e ? 1 : 0);
    if (len) *len = k;
    return s;
}

/* The rest of the input as a NUL-terminated copy the caller frees. */
static inline char *fuzz_rest(fuzz_in_t *in, size_t *len) {
    char *s = malloc(in->n + 1);
    if (!s) abort();
    if (in->n) memcpy(s, in->p, in->n);
    s[in->n] = '\0';
    if (len) *len = in->n;
    in->p += in->n;
    in->n = 0;
    return s;
}

#endif
