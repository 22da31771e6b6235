/* Opens N idle client connections to a proxy, prints "ready", and holds them
 * until its standard input closes. bench/run.sh reads the proxy's RSS
 * meanwhile to get bytes per idle client. */
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
    printf("ready\n");
    fflush(stdout);
    while (getchar() != EOF) {
    }
    for (int i = 0; i < n; i++) PQfinish(c[i]);
    free(c);
    return 0;
}
