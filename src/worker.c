/* A worker's life: set up its loop, listeners and janitor; run; reload;
 * shut down as PgBouncer 1.23+ does: SIGTERM waits for the clients to leave
 * (closing transaction-pooled ones between transactions after
 * shutdown_grace_period), SIGINT closes each client after its transaction,
 * SIGQUIT or a second SIGTERM/SIGINT at once. The signals themselves are
 * caught by the main thread (workers.c), which passes them on. */
#include "sluice/worker.h"

#include <openssl/rand.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/authq.h"
#include "sluice/control.h"
#include "sluice/janitor.h"
#include "sluice/ledger.h"
#include "sluice/listener.h"
#include "sluice/log.h"
#include "sluice/metrics.h"
#include "sluice/notify.h"
#include "sluice/peers.h"
#include "sluice/pool.h"
#include "sluice/route.h"
#include "sluice/session.h"
#include "sluice/textfile.h"
#include "sluice/tls.h"

static void worker_stop(sl_worker_t *w) {
    if (w->stopping) return;
    w->stopping = true;
    sl_notify("STOPPING=1");
    sl_listener_close_all(w);
    sl_metrics_close(w);
    sl_session_close_all(&w->core, "57P01", "sluice is shutting down");
    sl_route_close_all(&w->core);
    sl_pool_close_all(&w->core);
    sl_peers_close_all(&w->core);
    uv_timer_stop(&w->janitor);
    uv_close((uv_handle_t *)&w->janitor, NULL);
    sl_conn_kicks_close(&w->core.kicks);
    sl_loop_close(&w->core);
    sl_control_close(&w->core);
    if (w->on_stop) w->on_stop(w);
}

void sl_worker_maybe_finish(sl_worker_t *w) {
    if (!(w->core.shutting_down || w->core.draining) || w->stopping) return;
    if (w->core.nclients == 0) {
        if (w->others_running && w->others_running(w)) return; /* asked again when they stop */
        sl_log_info(NULL, "all clients gone; exiting");
        worker_stop(w);
        return;
    }
    /* What `systemctl status` shows while a stop waits for clients. */
    if (w->core.nclients != w->status_clients) {
        char status[96];
        snprintf(status, sizeof status, "STATUS=shutting down: %d client(s) still connected",
                 w->core.nclients);
        sl_notify(status);
        w->status_clients = w->core.nclients;
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
    char *text = NULL;
    size_t len;
    if (warnlen) *warn = '\0';
    if (sl_textfile_read(w->core.cfg->path, "config file", &text, &len, err, errlen) != SL_OK) {
        log_reload_errors(err);
        return SL_ECONFIG;
    }
    int rc = sl_worker_reload_text(w, text, false, err, errlen, warn, warnlen);
    free(text);
    return rc;
}

int sl_worker_reload_text(sl_worker_t *w, const char *text, bool quiet, char *err, size_t errlen,
                          char *warn, size_t warnlen) {
    char one[512];
    err[0] = '\0';
    if (warnlen) *warn = '\0';
    sl_config_t *cfg = sl_config_load_string(w->core.cfg->path, text, err, errlen);
    if (!cfg) {
        if (!quiet) log_reload_errors(err);
        return SL_ECONFIG;
    }
    /* The files the new config names: each one's error is reported. */
    sl_userlist_t users = {0};
    if (*cfg->auth_file && sl_userlist_load(cfg->auth_file, &users, one, sizeof one) < 0)
        add_error(err, errlen, one);
    sl_hba_t *hba = NULL;
    if (cfg->auth_type == SL_AUTH_HBA && !(hba = sl_hba_load(cfg->auth_hba_file, one, sizeof one)))
        add_error(err, errlen, one);
    /* Clients hold cancel keys naming the running peer_id: under another
     * one their cancels would be sent away from this instance. */
    if (cfg->peer_id != w->core.peer_id) {
        snprintf(one, sizeof one,
                 "%s: peer_id: cannot change from %d to %d on a running sluice (its clients' "
                 "cancel keys name %d); put %d back, or restart sluice to change it",
                 cfg->path, w->core.peer_id, cfg->peer_id, w->core.peer_id, w->core.peer_id);
        add_error(err, errlen, one);
    }
    if (*err) {
        if (!quiet) log_reload_errors(err);
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
        if (!quiet)
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
    cfg->listen_backlog = old->listen_backlog;
    cfg->pkt_buf = old->pkt_buf;
    cfg->so_reuseport = old->so_reuseport;
    cfg->workers = old->workers;
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
    if (quiet) return SL_OK;
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

void sl_worker_suspend(sl_worker_t *w, bool suspend) {
    sl_loop_t *l = &w->core;
    if (l->suspended == suspend || w->stopping) return;
    l->suspended = suspend;
    sl_listener_suspend_all(w, suspend);
    sl_session_repoll_all(l);
    if (!suspend) {
        sl_log_info(NULL, "RESUME: sockets are read again");
        return;
    }
    sl_log_info(NULL,
                "SUSPEND: no socket is read and no client accepted until RESUME; the %d "
                "clients' buffers are flushed",
                l->nclients);
}

/* Starts a shutdown now (signals; the console's SHUTDOWN through
 * shutdown_cb). */
static void start_shutdown(sl_worker_t *w, enum sl_shutdown_mode mode) {
    sl_loop_t *l = &w->core;
    if (w->stopping) return;
    if (mode == SL_SHUTDOWN_FAST) {
        worker_stop(w);
        return;
    }
    bool was_listening = !l->shutting_down && !l->draining;
    bool say = w->core.worker_index == 0; /* once for the process */
    if (mode == SL_SHUTDOWN_WAIT_FOR_SERVERS) {
        if (say)
            sl_log_info(NULL,
                        "shutdown (wait for servers): no new clients; each client closes after "
                        "its transaction, sluice exits when the last has gone");
        l->shutting_down = true;
        sl_session_shutdown_all(l);
    } else if (!l->draining) {
        int64_t grace = l->cfg->shutdown_grace_period_ms;
        if (say)
            sl_log_info(NULL,
                        "shutdown (wait for clients): no new clients; sluice exits when the %d "
                        "connected have left%s",
                        l->nclients,
                        grace > 0 ? "; transaction-pooled clients are closed between transactions "
                                    "after shutdown_grace_period"
                                  : "");
        l->draining = true;
        l->drain_close_ms = grace > 0 ? sl_now_ms(l) + grace : 0;
    }
    if (was_listening) {
        sl_notify("STOPPING=1");
        sl_listener_close_all(w);
    }
    sl_worker_maybe_finish(w);
}

/* The console's SHUTDOWN, run after the callbacks of the round it came in
 * (it closes clients, the console's own among them). */
static void shutdown_cb(sl_defer_t *d) {
    sl_worker_t *w = sl_container_of(d, sl_worker_t, shutdown_job);
    start_shutdown(w, (enum sl_shutdown_mode)w->shutdown_mode);
}

void sl_worker_shutdown(sl_worker_t *w, enum sl_shutdown_mode mode) {
    if (w->stopping) return;
    w->shutdown_mode = mode;
    sl_defer(&w->core.defer, &w->shutdown_job);
}

void sl_worker_signal(sl_worker_t *w, int signum) {
    if (w->stopping) return;
    /* Said once, by worker 0, not once per worker. */
    bool say = w->core.worker_index == 0;
    switch (signum) {
    case SIGQUIT:
        if (say) sl_log_info(NULL, "SIGQUIT: immediate shutdown");
        start_shutdown(w, SL_SHUTDOWN_FAST);
        return;
    case SIGINT:
    case SIGTERM:
        break;
    default:
        return;
    }
    const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
    if (w->core.shutting_down || w->core.draining) {
        if (say) sl_log_info(NULL, "%s during a shutdown: immediate shutdown", name);
        start_shutdown(w, SL_SHUTDOWN_FAST);
        return;
    }
    if (say) sl_log_info(NULL, "%s: graceful shutdown", name);
    start_shutdown(w,
                   signum == SIGINT ? SL_SHUTDOWN_WAIT_FOR_SERVERS : SL_SHUTDOWN_WAIT_FOR_CLIENTS);
}

/* The core calls this when its last client is gone during a shutdown. */
static void drained_cb(sl_loop_t *l) {
    sl_worker_maybe_finish(sl_container_of(l, sl_worker_t, core));
}

int sl_worker_init(sl_worker_t *w, sl_config_t *cfg, const sl_worker_place_t *place, char *err,
                   size_t errlen) {
    memset(w, 0, sizeof *w);
    if (sl_loop_init(&w->core, cfg, err, errlen) != SL_OK) return SL_ENOMEM;
    w->place = *place;
    w->core.worker_index = place->index;
    w->core.client_ids = place->client_ids;
    if (place->ledger && sl_ledger_attach(place->ledger, &w->core) != SL_OK) {
        snprintf(err, errlen, "worker %d cannot join the pools' ledger", place->index);
        return SL_ENOMEM;
    }
    w->core.on_drained = drained_cb;
    sl_defer_init(&w->shutdown_job, shutdown_cb);
    w->core.find_secret = sl_authq_find_for_backend;
    w->core.release_db = sl_route_release_idle;
    w->core.peer_id = cfg->peer_id; /* named in every cancel key (cancelkey.h) */
    if (sl_peers_init(&w->core) != SL_OK) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    if (*cfg->auth_file && sl_userlist_load(cfg->auth_file, &w->core.users, err, errlen) < 0)
        return SL_ECONFIG;
    if (sl_control_init(&w->core) != SL_OK) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
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
    /* One endpoint for the process: worker 0's, which reads every loop. */
    if (place->index == 0 && sl_metrics_open(w, err, errlen) < 0) return SL_EIO;
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
    sl_peers_free(&w->core);
    sl_loop_destroy(&w->core);
    sl_config_free(w->core.cfg);
    w->core.cfg = NULL;
    return w->exit_code;
}
