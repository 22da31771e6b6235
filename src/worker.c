/* A worker's life: set up its loop, listeners, janitor and signals; run;
 * shut down fast (SIGINT) or gracefully (SIGTERM); reload on SIGHUP. */
#include "sluice/worker.h"

#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/authq.h"
#include "sluice/janitor.h"
#include "sluice/listener.h"
#include "sluice/log.h"
#include "sluice/metrics.h"
#include "sluice/pool.h"
#include "sluice/route.h"
#include "sluice/session.h"
#include "sluice/tls.h"

static void worker_stop(sl_worker_t *w) {
    if (w->stopping) return;
    w->stopping = true;
    sl_listener_close_all(w);
    sl_metrics_close(w);
    sl_session_close_all(&w->core, "57P01", "sluice is shutting down");
    sl_route_close_all(&w->core);
    sl_pool_close_all(&w->core);
    uv_timer_stop(&w->janitor);
    uv_close((uv_handle_t *)&w->janitor, NULL);
    sl_conn_kicks_close(&w->core.kicks);
    sl_loop_close(&w->core);
    uv_close((uv_handle_t *)&w->sig_int, NULL);
    uv_close((uv_handle_t *)&w->sig_term, NULL);
    uv_close((uv_handle_t *)&w->sig_hup, NULL);
    /* libuv restores the default actions as it lets go of the signals; a
     * late SIGTERM must not kill a process that is already on its way out. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
}

void sl_worker_maybe_finish(sl_worker_t *w) {
    if ((w->core.shutting_down || w->wait_for_clients) && !w->stopping && w->core.nclients == 0) {
        sl_log_info(NULL, "all clients gone; exiting");
        worker_stop(w);
    }
}

/* Logs a failed reload: one line per error (err holds one per line). */
static void log_reload_errors(const char *err) {
    int n = 1;
    for (const char *p = err; *p; p++)
        n += *p == '\n';
    sl_log_error(NULL, "reload failed, keeping the running configuration: %d error%s", n,
                 n == 1 ? "" : "s");
    for (const char *p = err; *p;) {
        size_t len = strcspn(p, "\n");
        sl_log_error(NULL, "reload: %.*s", (int)len, p);
        p += len + (p[len] == '\n');
    }
}

/* Appends "\n" and a file's error to the list in err. */
static void add_error(char *err, size_t errlen, const char *more) {
    size_t o = strlen(err);
    if (o + 1 < errlen) snprintf(err + o, errlen - o, "%s%s", o ? "\n" : "", more);
}

int sl_worker_reload(sl_worker_t *w, char *err, size_t errlen, char *warn, size_t warnlen) {
    char one[512];
    err[0] = '\0';
    if (warnlen) *warn = '\0';
    sl_config_t *cfg = sl_config_load(w->core.cfg->path, err, errlen);
    if (!cfg) {
        log_reload_errors(err);
        return SL_ECONFIG;
    }
    /* The files the new config names: each one's error is reported. */
    sl_userlist_t users = {0};
    if (*cfg->auth_file && sl_userlist_load(cfg->auth_file, &users, one, sizeof one) < 0)
        add_error(err, errlen, one);
    sl_hba_t *hba = NULL;
    if (cfg->auth_type == SL_AUTH_HBA && !(hba = sl_hba_load(cfg->auth_hba_file, one, sizeof one)))
        add_error(err, errlen, one);
    if (*err) {
        log_reload_errors(err);
        sl_hba_free(hba);
        sl_userlist_free(&users);
        sl_config_free(cfg);
        return SL_ECONFIG;
    }
    sl_hba_free(w->core.hba);
    w->core.hba = hba;
    /* A certificate or key that does not load keeps the running context. */
    char tls_err[512];
    SSL_CTX *tls = sl_tls_client_ctx(cfg, tls_err, sizeof tls_err);
    if (!tls && *tls_err) {
        sl_log_error(NULL, "reload: client TLS settings refused, the running ones stay: %s",
                     tls_err);
        snprintf(warn, warnlen, "client TLS settings refused, the running ones stay: %s", tls_err);
    } else {
        SSL_CTX_free(w->core.client_tls); /* connections hold their own references */
        w->core.client_tls = tls;
    }
    /* Settings fixed at start-up keep their running values. */
    sl_config_t *old = w->core.cfg;
    cfg->listen_port = old->listen_port;
    cfg->pkt_buf = old->pkt_buf;
    char *keep[] = {old->listen_addr, old->unix_socket_dir, old->pidfile};
    char **slot[] = {&cfg->listen_addr, &cfg->unix_socket_dir, &cfg->pidfile};
    for (int i = 0; i < 3; i++) {
        char *t = *slot[i];
        *slot[i] = keep[i];
        if (i == 0) old->listen_addr = t;
        if (i == 1) old->unix_socket_dir = t;
        if (i == 2) old->pidfile = t;
    }
    /* The metrics endpoint keeps its socket too (metrics_listen). */
    char *m = cfg->metrics_listen;
    cfg->metrics_listen = old->metrics_listen;
    old->metrics_listen = m;
    /* Logins in progress look their user up again in the new list. */
    sl_session_users_reloaded(&w->core, &users);
    sl_userlist_free(&w->core.users);
    w->core.users = users;
    w->core.cfg = cfg;
    sl_config_free(old);
    sl_worker_settings_changed(w);
    if (sl_log_open(cfg->logfile) < 0) sl_log_error(NULL, "cannot reopen logfile %s", cfg->logfile);
    sl_log_info(NULL, "configuration reloaded from %s", cfg->path);
    return SL_OK;
}

void sl_worker_settings_changed(sl_worker_t *w) {
    sl_pool_reconfigure_all(&w->core);
    sl_route_reconfigure_all(&w->core);
    /* write_functions or stateless_functions may have changed: the
     * parser's answers are redone. */
    memset(w->core.sql_cache, 0, sizeof *w->core.sql_cache);
    sl_log_set_level(w->core.cfg->verbose > 0 ? SL_LOG_DEBUG : SL_LOG_INFO);
}

/* SIGTERM and SHUTDOWN WAIT_FOR_SERVERS: no new clients, each closes after
 * its transaction. */
static void graceful(sl_worker_t *w) {
    w->core.shutting_down = true;
    sl_listener_close_all(w);
    sl_session_shutdown_all(&w->core);
    sl_worker_maybe_finish(w);
}

/* The console's SHUTDOWN, run after the callbacks of the round it came in
 * (it closes clients, the console's own among them). */
static void shutdown_cb(sl_defer_t *d) {
    sl_worker_t *w = sl_container_of(d, sl_worker_t, shutdown_job);
    switch (w->shutdown_mode) {
    case SL_SHUTDOWN_FAST:
        worker_stop(w);
        break;
    case SL_SHUTDOWN_WAIT_FOR_SERVERS:
        graceful(w);
        break;
    case SL_SHUTDOWN_WAIT_FOR_CLIENTS:
        w->wait_for_clients = true;
        sl_listener_close_all(w);
        sl_worker_maybe_finish(w);
        break;
    }
}

void sl_worker_shutdown(sl_worker_t *w, enum sl_shutdown_mode mode) {
    if (w->stopping) return;
    w->shutdown_mode = mode;
    sl_defer(&w->core.defer, &w->shutdown_job);
}

static void signal_cb(uv_signal_t *h, int signum) {
    sl_worker_t *w = h->data;
    if (signum == SIGHUP) {
        char err[8192];
        /* Logged either way: a signal has no one to answer. */
        char warn[512];
        int rc = sl_worker_reload(w, err, sizeof err, warn, sizeof warn);
        (void)rc;
        return;
    }
    if (signum == SIGINT || w->core.shutting_down) {
        sl_log_info(NULL, "%s: fast shutdown", signum == SIGINT ? "SIGINT" : "second SIGTERM");
        worker_stop(w);
        return;
    }
    sl_log_info(NULL, "SIGTERM: graceful shutdown; no new clients, each closes after its "
                      "transaction");
    graceful(w);
}

/* The core calls this when its last client is gone during a shutdown. */
static void drained_cb(sl_loop_t *l) {
    sl_worker_maybe_finish(sl_container_of(l, sl_worker_t, core));
}

int sl_worker_init(sl_worker_t *w, sl_config_t *cfg, char *err, size_t errlen) {
    memset(w, 0, sizeof *w);
    if (sl_loop_init(&w->core, cfg, err, errlen) != SL_OK) return SL_ENOMEM;
    w->core.on_drained = drained_cb;
    sl_defer_init(&w->shutdown_job, shutdown_cb);
    w->core.find_secret = sl_authq_find;
    w->core.release_db = sl_route_release_idle;
    if (*cfg->auth_file && sl_userlist_load(cfg->auth_file, &w->core.users, err, errlen) < 0)
        return SL_ECONFIG;
    /* Signals first: once a listener exists, clients (and whoever sends
     * SIGTERM after seeing it accept) may act. */
    uv_signal_t *sigs[] = {&w->sig_int, &w->sig_term, &w->sig_hup};
    int nums[] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++) {
        uv_signal_init(w->core.loop, sigs[i]);
        sigs[i]->data = w;
        uv_signal_start(sigs[i], signal_cb, nums[i]);
    }
    if (cfg->auth_type == SL_AUTH_HBA &&
        !(w->core.hba = sl_hba_load(cfg->auth_hba_file, err, errlen)))
        return SL_ECONFIG;
    w->core.client_tls = sl_tls_client_ctx(cfg, err, errlen);
    if (!w->core.client_tls && *err) return SL_ECONFIG;
    if (RAND_bytes(w->core.mock_secret, sizeof w->core.mock_secret) != 1) {
        snprintf(err, errlen, "no random bytes for authentication salts");
        return SL_ENOMEM;
    }
    sl_conn_kicks_init(&w->core.kicks, w->core.loop);
    if (sl_listener_open_all(w, err, errlen) < 0) return SL_EIO;
    if (sl_metrics_open(w, err, errlen) < 0) return SL_EIO;
    sl_janitor_start(w);
    return SL_OK;
}

int sl_worker_run(sl_worker_t *w) {
    uv_run(w->core.loop, UV_RUN_DEFAULT);
    /* Close callbacks of the last handles run inside uv_run; drain them. */
    uv_run(w->core.loop, UV_RUN_DEFAULT);
    int rc = uv_loop_close(w->core.loop);
    if (rc != 0) sl_log_warn(NULL, "event loop closed with handles open: %s", uv_strerror(rc));
    sl_session_free(&w->core);
    sl_authq_free(&w->core);
    sl_loop_destroy(&w->core);
    sl_config_free(w->core.cfg);
    w->core.cfg = NULL;
    return w->exit_code;
}
