/* A backend host given by name is resolved off the loop while reloads
 * replace the pool's connection settings. The lookup must not use the
 * pool's old arrays after the reload freed them: a health check that keeps
 * failing (a replica at localhost:1, nothing listening) resolves "localhost"
 * every millisecond, while the test toggles the database's application_name
 * and sends SIGHUP in a loop and clients keep connecting. Under
 * SANITIZE=ON a use after free aborts sluice; built without it, the test
 * still checks that clients keep working through the reloads. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define RELOADS 600

/* Writes the database line with application_name=<app>. */
static void set_app(const it_sluice_t *s, const char *from, const char *to) {
    char text[8192];
    FILE *f = fopen(s->ini, "r");
    IT_ASSERT(f, "read %s", s->ini);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *hit = strstr(text, from);
    IT_ASSERT(hit && strlen(from) == strlen(to), "'%s' is in the config", from);
    memcpy(hit, to, strlen(to));
    f = fopen(s->ini, "w");
    fputs(text, f);
    fclose(f);
}

int main(void) {
    it_init("it_resolve");
    it_sluice_t s;
    it_sluice_start(&s,
                    "health_check_period = 0.001\n"
                    "lsn_poll_period = 0.02\n"
                    "server_login_retry = 0\n",
                    "dns = host=localhost port={PRIMARY} dbname=sluice_test "
                    "application_name=app_a replicas=localhost:1,localhost:{REPLICA1}\n");
    /* The first client creates the route: its checks start. */
    PGconn *c = it_connect_db(&s, "sl_scram", "dns", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    IT_ASSERT(!strcmp(it_value(c, "SELECT 1"), "1"), "query");
    PQfinish(c);

    int ok = 0;
    for (int i = 0; i < RELOADS; i++) {
        set_app(&s, i % 2 ? "app_b" : "app_a", i % 2 ? "app_a" : "app_b");
        IT_ASSERT(kill(s.pid, SIGHUP) == 0, "sluice is gone after %d reloads", i);
        usleep(2000);
        if (i % 20 == 0) {
            c = it_connect_db(&s, "sl_scram", "dns", "connect_timeout=10");
            IT_ASSERT(PQstatus(c) == CONNECTION_OK, "connect after %d reloads: %s", i,
                      PQerrorMessage(c));
            IT_ASSERT(!strcmp(it_value(c, "SELECT 2"), "2"), "query after %d reloads", i);
            ok++;
            PQfinish(c);
        }
    }
    printf("%d reloads, %d clients served through them\n", RELOADS, ok);
    IT_ASSERT(it_log_wait(&s, "configuration reloaded", RELOADS / 4, 10) >= RELOADS / 4,
              "the reloads happened");
    c = it_connect_db(&s, "sl_scram", "dns", NULL);
    IT_ASSERT(PQstatus(c) == CONNECTION_OK, "connect at the end: %s", PQerrorMessage(c));
    PQfinish(c);
    IT_ASSERT(it_sluice_stop(&s, SIGTERM) == 0, "sluice exits cleanly (no sanitizer report)");
    return it_done();
}
