/* The sluice command: arguments, config check, daemon start, pidfile, and
 * the workers running until a signal ends them. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/config.h"
#include "sluice/err.h"
#include "sluice/hba.h"
#include "sluice/log.h"
#include "sluice/tls.h"
#include "sluice/userlist.h"
#include "sluice/workers.h"


static void usage(FILE *out) {
    fprintf(out, "sluice " SLUICE_VERSION " - a connection pooler for PostgreSQL\n\n"
                 "usage: sluice [-d] [-q|-v] [--check] CONFIG\n"
                 "       sluice --version | --help\n\n"
                 "CONFIG is the sluice.ini to run with, in PgBouncer's format (its [sluice]\n"
                 "section may be called [pgbouncer]); conf/sluice.service runs\n"
                 "/etc/sluice/sluice.ini, and conf/sluice.ini documents every key.\n\n"
                 "Options:\n"
                 "  -d, --daemon   run in the background (needs logfile in CONFIG; pidfile is\n"
                 "                 written if set). Under systemd use Type=notify instead\n"
                 "  -q, --quiet    log warnings and errors only\n"
                 "  -v, --verbose  log more (repeat, or -vv, for debug detail); adds to verbose\n"
                 "  --check        validate CONFIG, its auth_file, auth_hba_file and TLS files,\n"
                 "                 then exit 0 (ok) or 1\n"
                 "  --version      print the version\n"
                 "  -h, --help     this text\n\n"
                 "Signals (as PgBouncer 1.23+):\n"
                 "  SIGHUP   reload CONFIG, auth_file and auth_hba_file (console: RELOAD)\n"
                 "  SIGTERM  stop accepting; exit once every client has left. Transaction-pooled\n"
                 "           clients are closed between transactions after shutdown_grace_period\n"
                 "           (console: SHUTDOWN WAIT_FOR_CLIENTS). A second SIGTERM: immediate\n"
                 "  SIGINT   stop accepting; close each client after its transaction, then exit\n"
                 "           (console: SHUTDOWN WAIT_FOR_SERVERS). A second SIGINT: immediate\n"
                 "  SIGQUIT  immediate shutdown: every client gets 57P01 (console: SHUTDOWN)\n"
                 "  SIGUSR1  PAUSE every database: servers close as they are released, clients\n"
                 "           wait (console: PAUSE)\n"
                 "  SIGUSR2  RESUME every database (console: RESUME)\n\n"
                 "Rolling restart: so_reuseport = 1 in CONFIG lets a new sluice bind the port of\n"
                 "the running one; then send the old one SIGTERM.\n"
                 "Under systemd (conf/sluice.service) sluice reports READY=1 once listening,\n"
                 "RELOADING=1 around reloads and STOPPING=1 over $NOTIFY_SOCKET.\n\n"
                 "Exit status: 0 after a shutdown, 1 when CONFIG or the start fails.\n");
}

static int daemonize(void) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid > 0) _exit(0);
    if (setsid() < 0) return -1;
    pid = fork();
    if (pid < 0) return -1;
    if (pid > 0) _exit(0);
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0), dup2(fd, 1), dup2(fd, 2);
        if (fd > 2) close(fd);
    }
    return 0;
}

int main(int argc, char **argv) {
    bool daemon = false, check = false, quiet = false;
    int verbose = 0;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-d") || !strcmp(a, "--daemon")) daemon = true;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = true;
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) verbose++;
        else if (!strcmp(a, "-vv")) verbose += 2;
        else if (!strcmp(a, "--check")) check = true;
        else if (!strcmp(a, "--version")) {
            printf("sluice " SLUICE_VERSION "\n");
            return 0;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (a[0] == '-') {
            fprintf(stderr, "sluice: unknown option %s (see sluice --help)\n", a);
            return 1;
        } else if (path) {
            fprintf(stderr, "sluice: only one CONFIG may be given (see sluice --help)\n");
            return 1;
        } else {
            path = a;
        }
    }
    if (!path) {
        usage(stderr);
        return 1;
    }
    char err[8192];
    sl_config_t *cfg = sl_config_load(path, err, sizeof err);
    if (!cfg) {
        /* Every error, one per line. */
        for (const char *p = err; *p;) {
            size_t len = strcspn(p, "\n");
            fprintf(stderr, "sluice: %.*s\n", (int)len, p);
            p += len + (p[len] == '\n');
        }
        return 1;
    }
    if (check) {
        sl_userlist_t ul = {0};
        if (*cfg->auth_file && sl_userlist_load(cfg->auth_file, &ul, err, sizeof err) < 0) {
            fprintf(stderr, "sluice: %s\n", err);
            sl_config_free(cfg);
            return 1;
        }
        sl_userlist_free(&ul);
        if (cfg->auth_type == SL_AUTH_HBA) {
            sl_hba_t *hba = sl_hba_load(cfg->auth_hba_file, err, sizeof err);
            if (!hba) {
                fprintf(stderr, "sluice: %s\n", err);
                sl_config_free(cfg);
                return 1;
            }
            sl_hba_free(hba);
        }
        SSL_CTX *tls = sl_tls_client_ctx(cfg, err, sizeof err);
        SSL_CTX_free(tls);
        if (!tls && *err) {
            fprintf(stderr, "sluice: %s\n", err);
            sl_config_free(cfg);
            return 1;
        }
        /* What workers = 0 means here, so an operator sees it before start. */
        int nw = sl_workers_wanted(cfg);
        printf("sluice: %s is valid (workers = %d: %d worker%s%s)\n", path, cfg->workers, nw,
               nw == 1 ? "" : "s", cfg->workers == 0 ? ", one per online CPU" : "");
        sl_config_free(cfg);
        return 0;
    }
    verbose += cfg->verbose;
    sl_log_set_level(quiet ? SL_LOG_WARN : verbose > 0 ? SL_LOG_DEBUG : SL_LOG_INFO);
    if (sl_log_open(cfg->logfile) < 0) {
        fprintf(stderr, "sluice: cannot open logfile %s: %s\n", cfg->logfile, strerror(errno));
        return 1;
    }
    if (daemon && !*cfg->logfile) {
        fprintf(stderr, "sluice: -d needs logfile set in %s, or nothing would be logged\n", path);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (daemon && daemonize() < 0) {
        fprintf(stderr, "sluice: cannot daemonize: %s\n", strerror(errno));
        return 1;
    }
    char *pidfile = *cfg->pidfile ? strdup(cfg->pidfile) : NULL;
    if (pidfile) {
        FILE *f = fopen(pidfile, "w");
        if (!f) {
            sl_log_error(NULL, "cannot write pidfile %s: %s", pidfile, strerror(errno));
            return 1;
        }
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
    int nworkers = sl_workers_wanted(cfg);
    bool per_cpu = cfg->workers == 0; /* cfg belongs to the workers from here */
    sl_workers_t *g = sl_workers_start(cfg, nworkers, err, sizeof err);
    if (!g) {
        sl_log_error(NULL, "cannot start: %s", err);
        if (!daemon) fprintf(stderr, "sluice: cannot start: %s\n", err);
        return 1;
    }
    sl_log_info(NULL, "sluice " SLUICE_VERSION " started pid=%d workers=%d%s", (int)getpid(),
                nworkers, per_cpu ? " (workers = 0: one per online CPU)" : "");
    int rc = sl_workers_run(g);
    if (pidfile) unlink(pidfile);
    free(pidfile);
    sl_log_info(NULL, "sluice stopped");
    return rc;
}
