/* Opens N client connections to a proxy, runs one query on each (an idle
 * client is one that was active: what it keeps after that is what counts),
 * prints "ready", and holds them until its standard input closes.
 * bench/idle_mem.sh reads the proxy's RSS meanwhile to get bytes per idle
 * client. */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: idle_clients CONNINFO N\n");
        return 2;
    }
    int n = atoi(argv[2]);
    PGconn **c = calloc((size_t)n, sizeof *c);
    for (int i = 0; i < n; i++) {
        c[i] = PQconnectdb(argv[1]);
        if (PQstatus(c[i]) != CONNECTION_OK) {
            fprintf(stderr, "connection %d failed: %s", i, PQerrorMessage(c[i]));
            return 1;
        }
    }
    for (int i = 0; i < n; i++) {
        PGresult *r = PQexec(c[i], "SELECT 1");
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            fprintf(stderr, "query on connection %d failed: %s", i, PQerrorMessage(c[i]));
            return 1;
        }
        PQclear(r);
    }
    printf("ready\n");
    fflush(stdout);
    while (getchar() != EOF) {
    }
    for (int i = 0; i < n; i++) PQfinish(c[i]);
    free(c);
    return 0;
}
