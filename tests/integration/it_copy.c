/* COPY IN and COPY OUT of 100k rows through sluice, and a 200 MB result
 * streamed while sluice's peak RSS stays under 64 MB. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static void copy_round_trip(const it_sluice_t *s) {
    PGconn *c = it_connect(s, "sl_scram", NULL);
    it_copy_round_trip(c, "it_copy");
    PQfinish(c);
}

static void stream_200mb(const it_sluice_t *s) {
    PGconn *c = it_connect(s, "sl_scram", NULL);
    long before = it_sluice_vmhwm_kb(s);
    it_stream_400mb(c);
    long after = it_sluice_vmhwm_kb(s);
    printf("sluice VmHWM before %ld kB, after streaming 2 x 200 MB %ld kB\n", before, after);
    IT_ASSERT(after > 0 && after < 64 * 1024, "peak RSS %ld kB is over 64 MB", after);
    PQfinish(c);
}

int main(void) {
    it_init("it_copy");
    it_sluice_t s;
    it_sluice_start(&s, "pool_mode = transaction\n", NULL);
    copy_round_trip(&s);
    stream_200mb(&s);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "exit");
    return it_done();
}
