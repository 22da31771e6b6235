/* COPY IN and COPY OUT of 100k rows through sluice, and a 200 MB result
 * streamed while sluice's peak RSS stays under 64 MB. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static void copy_round_trip(const it_sluice_t *s) {
    PGconn *c = it_connect(s, "sl_scram", NULL);
    it_exec(c, "DROP TABLE IF EXISTS it_copy");
    it_exec(c, "CREATE TABLE it_copy (id int, name text)");
    PGresult *r = PQexec(c, "COPY it_copy FROM STDIN");
    IT_ASSERT(PQresultStatus(r) == PGRES_COPY_IN, "copy in: %s", PQerrorMessage(c));
    PQclear(r);
    char line[64];
    for (int i = 0; i < 100000; i++) {
        int n = snprintf(line, sizeof line, "%d\tname %d\n", i, i);
        IT_ASSERT(PQputCopyData(c, line, n) == 1, "put copy data");
    }
    IT_ASSERT(PQputCopyEnd(c, NULL) == 1, "copy end");
    r = PQgetResult(c);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "copy in result: %s", PQerrorMessage(c));
    PQclear(r);
    while ((r = PQgetResult(c))) PQclear(r);
    IT_ASSERT(!strcmp(it_value(c, "SELECT count(*) FROM it_copy"), "100000"), "rows in");
    IT_ASSERT(!strcmp(it_value(c, "SELECT sum(id) FROM it_copy"), "4999950000"), "sum in");

    r = PQexec(c, "COPY it_copy TO STDOUT");
    IT_ASSERT(PQresultStatus(r) == PGRES_COPY_OUT, "copy out: %s", PQerrorMessage(c));
    PQclear(r);
    long rows = 0, sum = 0;
    char *buf;
    int n;
    while ((n = PQgetCopyData(c, &buf, 0)) > 0) {
        rows++;
        sum += atol(buf);
        PQfreemem(buf);
    }
    IT_ASSERT(n == -1, "copy out ended cleanly");
    r = PQgetResult(c);
    IT_ASSERT(PQresultStatus(r) == PGRES_COMMAND_OK, "copy out result");
    PQclear(r);
    while ((r = PQgetResult(c))) PQclear(r);
    IT_ASSERT(rows == 100000 && sum == 4999950000L, "rows out %ld sum %ld", rows, sum);
    /* A failed COPY IN leaves the connection usable. */
    r = PQexec(c, "COPY it_copy FROM STDIN");
    PQclear(r);
    PQputCopyData(c, "1\tx\n", 4);
    PQputCopyEnd(c, "client gave up");
    r = PQgetResult(c);
    IT_ASSERT(PQresultStatus(r) == PGRES_FATAL_ERROR, "copy fail reported");
    PQclear(r);
    while ((r = PQgetResult(c))) PQclear(r);
    IT_ASSERT(!strcmp(it_value(c, "SELECT count(*) FROM it_copy"), "100000"), "no partial copy");
    it_exec(c, "DROP TABLE it_copy");
    PQfinish(c);
}

static void stream_200mb(const it_sluice_t *s) {
    PGconn *c = it_connect(s, "sl_scram", NULL);
    long before = it_sluice_vmhwm_kb(s);
    /* 200,000 rows of 1,000 bytes, read as it arrives (COPY streams). */
    PGresult *r = PQexec(c, "COPY (SELECT repeat('x', 1000) FROM generate_series(1, 200000)) "
                            "TO STDOUT");
    IT_ASSERT(PQresultStatus(r) == PGRES_COPY_OUT, "stream: %s", PQerrorMessage(c));
    PQclear(r);
    long long bytes = 0;
    char *buf;
    int n;
    while ((n = PQgetCopyData(c, &buf, 0)) > 0) {
        bytes += n;
        PQfreemem(buf);
    }
    while ((r = PQgetResult(c))) PQclear(r);
    IT_ASSERT(bytes == 200000LL * 1001, "streamed %lld bytes", bytes);
    /* And a plain SELECT result of 200 MB in single-row mode. */
    IT_ASSERT(PQsendQuery(c, "SELECT repeat('y', 1000) FROM generate_series(1, 200000)"), "send");
    PQsetSingleRowMode(c);
    long rows = 0;
    while ((r = PQgetResult(c))) {
        if (PQresultStatus(r) == PGRES_SINGLE_TUPLE) rows++;
        else IT_ASSERT(PQresultStatus(r) == PGRES_TUPLES_OK, "select: %s", PQerrorMessage(c));
        PQclear(r);
    }
    IT_ASSERT(rows == 200000, "rows %ld", rows);
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
