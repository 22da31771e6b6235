/* The workers of one process (see workers.h): their threads, the main
 * thread's signal loop, each worker's inbox, and the freeze barrier. */
#include "sluice/workers.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sluice/admin.h"
#include "sluice/control.h"
#include "sluice/ledger.h"
#include "sluice/listener.h"
#include "sluice/log.h"
#include "sluice/notify.h"
#include "sluice/pool.h"
#include "sluice/route.h"
#include "sluice/session.h"
#include "sluice/textfile.h"
#include "sluice/userlist.h"

/* SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2 */
#define NSIGNALS 6
static const int handled_signals[NSIGNALS] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

/* Messages queued for one worker beyond which more are dropped (a flood of
 * CancelRequests for another worker's clients must not grow memory). */
#define INBOX_MAX 4096

enum msg_kind { MSG_SIGNAL, MSG_SHUTDOWN, MSG_CANCEL, MSG_OTHER_STOPPED };

typedef struct msg {
    struct msg *next;
    enum msg_kind kind;
    int arg; /* MSG_SIGNAL: the signal; MSG_SHUTDOWN: enum sl_shutdown_mode */
    uint32_t pid, key;
    char peer[64]; /* MSG_CANCEL: who sent it, for the log */
} msg_t;

/* One worker and what the group keeps for it. */
typedef struct slot {
    sl_worker_t w;
    struct sl_workers *g; /* borrowed */
    pthread_t thread;
    bool started; /* thread created */
    /* inbox: written by any thread under mu, read by the worker */
    pthread_mutex_t mu;
    msg_t *head, *tail; /* owned */
    int queued;
    bool open;       /* async usable: false once the worker stops */
    uv_async_t wake; /* on w's loop: messages and freeze requests */
    /* under the group's mu */
    bool parked; /* blocked in its loop for another worker's freeze */
    bool gone;   /* stopping or stopped: its loop is not to be read */
} slot_t;

struct sl_workers {
    int n;
    slot_t *slots;               /* owned, n of them */
    _Atomic uint32_t client_ids; /* C-<id> of every loop */
    sl_ledger_t *ledger;         /* owned: global pool caps; NULL with one worker */
    sl_health_board_t *health;   /* owned: replica health, checked by worker 0 alone; NULL
                                    with one worker */
    /* the freeze barrier */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int freezer; /* index of the worker that froze the others; -1: none */
    int depth;   /* its nested freezes */
    /* the main thread */
    uv_loop_t loop;
    uv_signal_t sigs[NSIGNALS];
    uv_async_t done;              /* a worker's thread ended */
    int ndone;                    /* under mu */
    sl_control_wait_t pause_wait; /* SIGUSR1's PAUSE, logged once done */
};

static slot_t *slot_of(sl_worker_t *w) {
    return sl_container_of(w, slot_t, w);
}

int sl_workers_wanted(const sl_config_t *cfg) {
    long n = cfg->workers;
    if (n <= 0) n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > SL_CANCELKEY_WORKERS_MAX) n = SL_CANCELKEY_WORKERS_MAX;
    return (int)n;
}

int sl_workers_count(const sl_worker_t *w) {
    return w->place.group ? w->place.group->n : 1;
}

sl_worker_t *sl_workers_at(sl_worker_t *w, int i) {
    sl_workers_t *g = w->place.group;
    if (!g) return i == 0 ? w : NULL;
    if (i < 0 || i >= g->n) return NULL;
    slot_t *s = &g->slots[i];
    if (&s->w == w) return w;
    pthread_mutex_lock(&g->mu);
    bool gone = s->gone;
    pthread_mutex_unlock(&g->mu);
    return gone ? NULL : &s->w;
}

/* ---- the freeze barrier ---- */

/* Under g->mu: blocks while another worker holds a freeze, counted as
 * parked, so that it can read this loop. */
static void park_locked(slot_t *s) {
    sl_workers_t *g = s->g;
    int me = s->w.core.worker_index;
    if (g->freezer < 0 || g->freezer == me) return;
    s->parked = true;
    pthread_cond_broadcast(&g->cv);
    while (g->freezer >= 0 && g->freezer != me)
        pthread_cond_wait(&g->cv, &g->mu);
    s->parked = false;
}

/* Whether every other worker is parked or gone. */
static bool all_parked_locked(const sl_workers_t *g, int me) {
    for (int i = 0; i < g->n; i++)
        if (i != me && !g->slots[i].parked && !g->slots[i].gone) return false;
    return true;
}

static void wake(slot_t *s) {
    pthread_mutex_lock(&s->mu);
    if (s->open) uv_async_send(&s->wake);
    pthread_mutex_unlock(&s->mu);
}

void sl_workers_freeze(sl_worker_t *w) {
    sl_workers_t *g = w->place.group;
    if (!g || g->n == 1) return;
    int me = w->core.worker_index;
    pthread_mutex_lock(&g->mu);
    if (g->freezer == me) {
        g->depth++;
        pthread_mutex_unlock(&g->mu);
        return;
    }
    /* Another freeze first: this worker parks for it like the others. */
    while (g->freezer >= 0) {
        slot_t *s = &g->slots[me];
        s->parked = true;
        pthread_cond_broadcast(&g->cv);
        while (g->freezer >= 0)
            pthread_cond_wait(&g->cv, &g->mu);
        s->parked = false;
    }
    g->freezer = me;
    g->depth = 1;
    pthread_mutex_unlock(&g->mu);
    for (int i = 0; i < g->n; i++)
        if (i != me) wake(&g->slots[i]);
    pthread_mutex_lock(&g->mu);
    while (!all_parked_locked(g, me))
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

void sl_workers_thaw(sl_worker_t *w) {
    sl_workers_t *g = w->place.group;
    if (!g || g->n == 1) return;
    pthread_mutex_lock(&g->mu);
    if (g->freezer == w->core.worker_index && --g->depth == 0) {
        g->freezer = -1;
        pthread_cond_broadcast(&g->cv);
    }
    pthread_mutex_unlock(&g->mu);
}

/* ---- inboxes ---- */

static bool post(slot_t *s, const msg_t *m) {
    msg_t *copy = malloc(sizeof *copy);
    if (!copy) return false;
    *copy = *m;
    copy->next = NULL;
    pthread_mutex_lock(&s->mu);
    bool ok = s->open && s->queued < INBOX_MAX;
    if (ok) {
        if (s->tail)
            s->tail->next = copy;
        else
            s->head = copy;
        s->tail = copy;
        s->queued++;
        uv_async_send(&s->wake);
    }
    pthread_mutex_unlock(&s->mu);
    if (!ok) free(copy);
    return ok;
}

static void pause_done_cb(sl_control_wait_t *wt, enum sl_control_end how) {
    (void)wt;
    if (how == SL_CONTROL_DONE)
        sl_log_info(NULL, "PAUSE done: every server connection is closed; SIGUSR2 (or RESUME) "
                          "resumes");
}

/* SIGUSR1: every loop pauses; w logs once every server of every loop is
 * closed (control_count sums them). */
static void pause_all(sl_worker_t *w) {
    sl_workers_t *g = w->place.group;
    char err[256];
    sl_workers_freeze(w);
    for (int i = 0; i < sl_workers_count(w); i++) {
        sl_worker_t *o = sl_workers_at(w, i);
        if (o && sl_control_pause(&o->core, NULL, err, sizeof err) != SL_OK)
            sl_log_error(NULL, "SIGUSR1: PAUSE failed: %s", err);
    }
    sl_control_wait_cancel(&g->pause_wait);
    g->pause_wait.kind = SL_CONTROL_PAUSED;
    g->pause_wait.db[0] = '\0';
    g->pause_wait.cb = pause_done_cb;
    sl_control_wait(&w->core, &g->pause_wait);
    sl_workers_thaw(w);
}

/* SIGUSR2: every loop resumes (and leaves SUSPEND). */
static void resume_all(sl_worker_t *w) {
    sl_workers_t *g = w->place.group;
    char err[256];
    sl_workers_freeze(w);
    sl_control_wait_cancel(&g->pause_wait);
    for (int i = 0; i < sl_workers_count(w); i++) {
        sl_worker_t *o = sl_workers_at(w, i);
        if (!o) continue;
        sl_worker_suspend(o, false);
        if (sl_control_resume(&o->core, NULL, err, sizeof err) != SL_OK)
            sl_log_error(NULL, "SIGUSR2: RESUME failed: %s", err);
    }
    sl_workers_thaw(w);
}

/* Every worker loads the auth_file itself, but a client must meet the
 * same secrets whichever worker takes it: a plaintext password's SCRAM
 * salt is random when derived, and a salt that changed from one login to
 * the next would tell a real user from a made-up one (whose stand-in salt
 * is stable). Worker 0 derives them (once per load) and the others take
 * copies; the stand-in salts come from worker 0's secret too. */
static void share_secrets(sl_worker_t *w) {
    sl_worker_t *w0 = sl_workers_at(w, 0);
    if (!w0) return;
    for (int i = 1; i < sl_workers_count(w); i++) {
        sl_worker_t *o = sl_workers_at(w, i);
        if (!o) continue;
        memcpy(o->core.mock_secret, w0->core.mock_secret, sizeof o->core.mock_secret);
        for (int k = 0; k < o->core.users.n && k < w0->core.users.n; k++) {
            sl_user_secret_t *u = &o->core.users.v[k], *u0 = &w0->core.users.v[k];
            if (u->kind != SL_SECRET_PLAIN || strcmp(u->name, u0->name) != 0) continue;
            const sl_scram_secret_t *s0 = sl_user_scram(u0);
            sl_scram_secret_t *copy = s0 ? malloc(sizeof *copy) : NULL;
            if (!copy) continue; /* it derives its own: only its salt differs */
            *copy = *s0;
            free(u->scram);
            u->scram = copy;
        }
    }
}

int sl_workers_reload(sl_worker_t *w, char *err, size_t errlen, char *warn, size_t warnlen) {
    char *text = NULL;
    size_t len;
    if (warnlen) *warn = '\0';
    if (sl_textfile_read(w->core.cfg->path, "config file", &text, &len, err, errlen) != SL_OK) {
        sl_log_error(NULL, "reload failed, keeping the running configuration: %s", err);
        return SL_ECONFIG;
    }
    /* The file read once, every worker on the same text; the first to
     * apply it says what happened, for all. */
    int rc = SL_OK;
    bool said = false;
    for (int i = 0; i < sl_workers_count(w) && rc == SL_OK; i++) {
        sl_worker_t *o = sl_workers_at(w, i);
        if (!o) continue;
        rc = sl_worker_reload_text(o, text, said, err, errlen, warn, warnlen);
        said = true;
    }
    free(text);
    if (rc == SL_OK) share_secrets(w);
    return rc;
}

/* SIGHUP, told to systemd as a reload (Type=notify). */
static void reload_all(sl_worker_t *w) {
    char err[8192], warn[512]; /* logged either way: a signal has no one to answer */
    sl_notify_reloading();
    sl_workers_freeze(w);
    int rc = sl_workers_reload(w, err, sizeof err, warn, sizeof warn);
    sl_workers_thaw(w);
    (void)rc;
    sl_notify("READY=1");
}

static void on_signal(sl_worker_t *w, int signum) {
    switch (signum) {
    case SIGHUP:
        reload_all(w);
        break;
    case SIGUSR1:
        pause_all(w);
        break;
    case SIGUSR2:
        resume_all(w);
        break;
    default:
        sl_worker_signal(w, signum);
    }
}

static void wake_cb(uv_async_t *h) {
    slot_t *s = h->data;
    sl_workers_t *g = s->g;
    /* A freeze first: the asker waits for it. */
    pthread_mutex_lock(&g->mu);
    park_locked(s);
    pthread_mutex_unlock(&g->mu);
    pthread_mutex_lock(&s->mu);
    msg_t *m = s->head;
    s->head = s->tail = NULL;
    s->queued = 0;
    pthread_mutex_unlock(&s->mu);
    while (m) {
        msg_t *next = m->next;
        if (m->kind == MSG_SIGNAL)
            on_signal(&s->w, m->arg);
        else if (m->kind == MSG_SHUTDOWN)
            sl_worker_shutdown(&s->w, (enum sl_shutdown_mode)m->arg);
        else if (m->kind == MSG_OTHER_STOPPED)
            sl_worker_maybe_finish(&s->w);
        else
            sl_cancel_forward(&s->w.core, m->pid, m->key, m->peer);
        free(m);
        m = next;
    }
}

static void wake_closed_cb(uv_handle_t *h) {
    slot_t *s = h->data;
    pthread_mutex_lock(&s->mu);
    msg_t *m = s->head;
    s->head = s->tail = NULL;
    pthread_mutex_unlock(&s->mu);
    while (m) {
        msg_t *next = m->next;
        free(m);
        m = next;
    }
}

/* The worker starts stopping: it can no longer park nor take messages. */
static void worker_stopping(sl_worker_t *w) {
    slot_t *s = slot_of(w);
    sl_workers_t *g = s->g;
    pthread_mutex_lock(&s->mu);
    s->open = false;
    pthread_mutex_unlock(&s->mu);
    uv_close((uv_handle_t *)&s->wake, wake_closed_cb);
    pthread_mutex_lock(&g->mu);
    s->gone = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    /* Worker 0 may be waiting for the others to finish draining. */
    if (s != &g->slots[0]) post(&g->slots[0], &(msg_t){.kind = MSG_OTHER_STOPPED});
}

/* Worker 0 stays (and with it /metrics and /ready) while another worker
 * still drains its clients. */
static bool others_running(sl_worker_t *w) {
    sl_workers_t *g = w->place.group;
    bool any = false;
    pthread_mutex_lock(&g->mu);
    for (int i = 1; i < g->n && !any; i++)
        any = !g->slots[i].gone;
    pthread_mutex_unlock(&g->mu);
    return any;
}

void sl_workers_shutdown(sl_worker_t *w, enum sl_shutdown_mode mode) {
    sl_workers_t *g = w->place.group;
    sl_worker_shutdown(w, mode);
    if (!g) return;
    msg_t m = {.kind = MSG_SHUTDOWN, .arg = (int)mode};
    for (int i = 0; i < g->n; i++)
        if (&g->slots[i].w != w) post(&g->slots[i], &m);
}

bool sl_workers_cancel(sl_worker_t *w, int worker, uint32_t pid, uint32_t key, const char *peer) {
    sl_workers_t *g = w->place.group;
    if (!g || worker < 0 || worker >= g->n) return false;
    msg_t m = {.kind = MSG_CANCEL, .pid = pid, .key = key};
    snprintf(m.peer, sizeof m.peer, "%s", peer);
    return post(&g->slots[worker], &m);
}

/* ---- hooks of each loop ---- */

static bool cancel_elsewhere(sl_loop_t *l, int worker, uint32_t pid, uint32_t key,
                             const char *peer) {
    return sl_workers_cancel(sl_container_of(l, sl_worker_t, core), worker, pid, key, peer);
}

/* A PAUSE or WAIT_CLOSE is done when no loop has what it waits for. */
static int control_count(sl_loop_t *l, const char *db, bool pending) {
    sl_worker_t *w = sl_container_of(l, sl_worker_t, core);
    int n = 0;
    sl_workers_freeze(w);
    for (int i = 0; i < sl_workers_count(w); i++) {
        sl_worker_t *o = sl_workers_at(w, i);
        if (o)
            n +=
                pending ? sl_control_close_pending(&o->core, db) : sl_control_servers(&o->core, db);
    }
    /* A server between two workers is on no loop's list: counted once. */
    n += sl_pool_count_moving(l, db, pending);
    sl_workers_thaw(w);
    return n;
}

/* ---- start, run, stop ---- */

static void *thread_main(void *arg) {
    slot_t *s = arg;
    sl_workers_t *g = s->g;
    int rc = sl_worker_run(&s->w);
    s->w.exit_code = rc;
    pthread_mutex_lock(&g->mu);
    g->ndone++;
    pthread_mutex_unlock(&g->mu);
    uv_async_send(&g->done);
    return NULL;
}

static void signal_cb(uv_signal_t *h, int signum) {
    sl_workers_t *g = h->data;
    msg_t m = {.kind = MSG_SIGNAL, .arg = signum};
    bool one = signum == SIGHUP || signum == SIGUSR1 || signum == SIGUSR2;
    /* Reload, pause and resume act on every loop from one worker (the
     * first still running); the stop signals go to each. */
    for (int i = 0; i < g->n; i++)
        if (post(&g->slots[i], &m) && one) break;
}

static void done_cb(uv_async_t *h) {
    sl_workers_t *g = h->data;
    pthread_mutex_lock(&g->mu);
    bool all = g->ndone == g->n;
    pthread_mutex_unlock(&g->mu);
    if (!all) return;
    /* libuv restores the default actions as it lets go of the signals; a
     * late SIGTERM must not kill a process that is already on its way out. */
    for (int i = 0; i < NSIGNALS; i++) {
        uv_close((uv_handle_t *)&g->sigs[i], NULL);
        signal(handled_signals[i], SIG_IGN);
    }
    uv_close((uv_handle_t *)&g->done, NULL);
}

static void slot_free(slot_t *s) {
    pthread_mutex_destroy(&s->mu);
}

/* Frees a group whose threads never started (a failed start): each
 * worker set up whole is stopped and run until its handles are gone (the
 * one whose start failed is left to the process's exit, as a lone
 * worker's was). */
static void abandon(sl_workers_t *g, int nready, bool half_made) {
    for (int i = 0; i < nready; i++) {
        slot_t *s = &g->slots[i];
        sl_worker_signal(&s->w, SIGQUIT);
        (void)sl_worker_run(&s->w);
    }
    for (int i = 0; i < g->n; i++)
        slot_free(&g->slots[i]);
    if (g->loop.data == g) {
        for (int i = 0; i < NSIGNALS; i++)
            uv_close((uv_handle_t *)&g->sigs[i], NULL);
        uv_close((uv_handle_t *)&g->done, NULL);
        uv_run(&g->loop, UV_RUN_DEFAULT);
        uv_loop_close(&g->loop);
    }
    if (!half_made) { /* else its loop may hold them */
        if (g->ledger) sl_ledger_free(g->ledger);
        sl_health_board_free(g->health);
    }
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->slots);
    free(g);
}

static int init_slot(sl_workers_t *g, int i, sl_config_t *cfg, char *err, size_t errlen) {
    slot_t *s = &g->slots[i];
    sl_worker_place_t place = {.group = g,
                               .index = i,
                               .count = g->n,
                               .unix_fd = i > 0 ? sl_listener_unix_fd(&g->slots[0].w) : -1,
                               .client_ids = &g->client_ids,
                               .ledger = g->ledger};
    int rc = sl_worker_init(&s->w, cfg, &place, err, errlen);
    if (rc != SL_OK) return rc;
    s->w.on_stop = worker_stopping;
    s->w.core.health_board = g->health;
    if (i == 0 && g->n > 1) s->w.others_running = others_running;
    s->w.core.cancel_elsewhere = cancel_elsewhere;
    if (g->n > 1) s->w.core.control_count = control_count;
    uv_async_init(s->w.core.loop, &s->wake, wake_cb);
    s->wake.data = s;
    /* The inbox alone must not keep a loop alive that has stopped. */
    uv_unref((uv_handle_t *)&s->wake);
    s->open = true;
    sl_admin_attach(&s->w);
    return SL_OK;
}

sl_workers_t *sl_workers_start(sl_config_t *cfg, int n, char *err, size_t errlen) {
    sl_workers_t *g = calloc(1, sizeof *g);
    char *text = NULL;
    size_t len;
    if (!g || !(g->slots = calloc((size_t)n, sizeof *g->slots))) {
        free(g);
        snprintf(err, errlen, "out of memory");
        sl_config_free(cfg);
        return NULL;
    }
    g->n = n;
    g->freezer = -1;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    for (int i = 0; i < n; i++) {
        g->slots[i].g = g;
        pthread_mutex_init(&g->slots[i].mu, NULL);
    }
    /* One loop keeps its pools' counts to itself (no atomics on its path). */
    if (n > 1 && (!(g->ledger = sl_ledger_new(n)) ||
                  !(g->health = sl_health_board_new(&g->slots[0].w.core)))) {
        snprintf(err, errlen, "out of memory for what the workers share");
        sl_config_free(cfg);
        abandon(g, 0, false);
        return NULL;
    }
    /* The others' configs from the text worker 0's was read from (read
     * again once: the file is not parsed from two different versions). */
    if (n > 1 && sl_textfile_read(cfg->path, "config file", &text, &len, err, errlen) != SL_OK) {
        sl_config_free(cfg);
        abandon(g, 0, false);
        return NULL;
    }
    /* Signals first: once a listener exists, whoever sees it accept may
     * send one (a SIGHUP must not find the default action, which ends the
     * process). Caught now, they are acted on once the main loop runs,
     * when every worker takes messages. */
    uv_loop_init(&g->loop);
    g->loop.data = g; /* the main loop is set up: abandon closes it */
    for (int i = 0; i < NSIGNALS; i++) {
        uv_signal_init(&g->loop, &g->sigs[i]);
        g->sigs[i].data = g;
        uv_signal_start(&g->sigs[i], signal_cb, handled_signals[i]);
    }
    uv_async_init(&g->loop, &g->done, done_cb);
    g->done.data = g;
    int nready = 0, rc = SL_OK;
    for (int i = 0; i < n && rc == SL_OK; i++) {
        sl_config_t *c = i == 0 ? cfg : sl_config_load_string(cfg->path, text, err, errlen);
        rc = c ? init_slot(g, i, c, err, errlen) : SL_ECONFIG;
        if (rc == SL_OK) nready++;
    }
    free(text);
    if (rc != SL_OK) {
        abandon(g, nready, true);
        return NULL;
    }
    share_secrets(&g->slots[0].w); /* no thread runs yet */
    for (int i = 0; i < n; i++) {
        if (pthread_create(&g->slots[i].thread, NULL, thread_main, &g->slots[i]) != 0) {
            /* The started ones are told to stop; run reaps them. */
            sl_log_error(NULL, "cannot start worker thread %d: %s; stopping", i, strerror(errno));
            for (int k = 0; k < i; k++)
                post(&g->slots[k], &(msg_t){.kind = MSG_SIGNAL, .arg = SIGQUIT});
            for (int k = i; k < n; k++) {
                sl_worker_signal(&g->slots[k].w, SIGQUIT);
                thread_main(&g->slots[k]);
            }
            break;
        }
        g->slots[i].started = true;
    }
    /* Every worker listens: a Type=notify service is up from here. */
    char ready[128];
    snprintf(ready, sizeof ready, "READY=1\nMAINPID=%d\nSTATUS=accepting connections (%d workers)",
             (int)getpid(), n);
    sl_notify(ready);
    return g;
}

int sl_workers_run(sl_workers_t *g) {
    uv_run(&g->loop, UV_RUN_DEFAULT);
    int rc = 0;
    for (int i = 0; i < g->n; i++) {
        slot_t *s = &g->slots[i];
        if (s->started) pthread_join(s->thread, NULL);
        if (s->w.exit_code > rc) rc = s->w.exit_code;
        slot_free(s);
    }
    uv_loop_close(&g->loop);
    if (g->ledger) sl_ledger_free(g->ledger);
    sl_health_board_free(g->health);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g->slots);
    free(g);
    return rc;
}
