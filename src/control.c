/* Operator controls by database (see control.h): PAUSE, RESUME, RECONNECT,
 * KILL's server side, DISABLE, ENABLE, and waits for their completion. */
#include "sluice/control.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/log.h"
#include "sluice/pool.h"

/* One database an operator acted on. Entries are few (one per database
 * named in a command) and kept until the loop stops. */
typedef struct ctl_db {
    sl_list_t node; /* on the control's dbs */
    char *name;     /* owned */
    bool paused;    /* PAUSE db or KILL db, until RESUME */
    bool disabled;  /* DISABLE db, until ENABLE */
} ctl_db_t;

struct sl_control {
    sl_loop_t *l;     /* borrowed */
    bool paused_all;  /* PAUSE or KILL without a database (or SIGUSR1), until RESUME */
    sl_list_t dbs;    /* ctl_db_t */
    sl_list_t waits;  /* sl_control_wait_t not yet done, in the order queued */
    uv_timer_t timer; /* checks the waits every SL_CONTROL_CHECK_MS while there are any;
                         its close callback frees this struct */
};

static ctl_db_t *find_db(const struct sl_control *ctl, const char *db) {
    for (sl_list_t *it = ctl->dbs.next; it != &ctl->dbs; it = it->next) {
        ctl_db_t *d = sl_container_of(it, ctl_db_t, node);
        if (strcmp(d->name, db) == 0) return d;
    }
    return NULL;
}

static ctl_db_t *get_db(struct sl_control *ctl, const char *db) {
    ctl_db_t *d = find_db(ctl, db);
    if (d) return d;
    d = calloc(1, sizeof *d);
    if (!d || !(d->name = strdup(db))) {
        free(d);
        return NULL;
    }
    sl_list_push_back(&ctl->dbs, &d->node);
    return d;
}

static bool paused_hook(const sl_loop_t *l, const char *db) {
    return sl_control_paused(l, db);
}

int sl_control_init(sl_loop_t *l) {
    struct sl_control *ctl = calloc(1, sizeof *ctl);
    if (!ctl) return SL_ENOMEM;
    ctl->l = l;
    sl_list_init(&ctl->dbs);
    sl_list_init(&ctl->waits);
    uv_timer_init(l->loop, &ctl->timer);
    ctl->timer.data = ctl;
    l->ctl = ctl;
    l->db_paused = paused_hook;
    return SL_OK;
}

static void free_cb(uv_handle_t *h) {
    struct sl_control *ctl = h->data;
    while (!sl_list_empty(&ctl->dbs)) {
        ctl_db_t *d = sl_container_of(sl_list_first(&ctl->dbs), ctl_db_t, node);
        sl_list_unlink(&d->node);
        free(d->name);
        free(d);
    }
    free(ctl);
}

void sl_control_close(sl_loop_t *l) {
    struct sl_control *ctl = l->ctl;
    if (!ctl) return;
    while (!sl_list_empty(&ctl->waits)) {
        sl_control_wait_t *wt =
            sl_container_of(sl_list_first(&ctl->waits), sl_control_wait_t, node);
        sl_control_wait_cancel(wt);
        wt->cb(wt, SL_CONTROL_DROPPED);
    }
    l->ctl = NULL;
    l->db_paused = NULL;
    uv_timer_stop(&ctl->timer);
    uv_close((uv_handle_t *)&ctl->timer, free_cb);
}

/* A database the operator may name: one in the config, or one an
 * automatic ('*') pool serves right now. */
static bool known(const sl_loop_t *l, const char *db) {
    if (sl_config_find_db(l->cfg, db)) return true;
    for (const sl_list_t *it = l->pools.next; it != &l->pools; it = it->next)
        if (strcmp(sl_container_of(it, sl_pool_t, node)->db_alias, db) == 0) return true;
    return false;
}

static int check_db(const sl_loop_t *l, const char *db, bool required, char *err, size_t errlen) {
    if (!db && required) {
        snprintf(err, errlen, "a database name is required");
        return SL_ECONFIG;
    }
    if (db && !known(l, db)) {
        snprintf(err, errlen, "no such database: %s (see SHOW DATABASES)", db);
        return SL_ECONFIG;
    }
    return SL_OK;
}

int sl_control_check_db(const sl_loop_t *l, const char *db, char *err, size_t errlen) {
    return check_db(l, db, false, err, errlen);
}

static bool matches(const sl_pool_t *p, const char *db) {
    return !db || strcmp(p->db_alias, db) == 0;
}

bool sl_control_paused(const sl_loop_t *l, const char *db) {
    const struct sl_control *ctl = l->ctl;
    if (!ctl) return false;
    if (ctl->paused_all) return true;
    const ctl_db_t *d = db ? find_db(ctl, db) : NULL;
    return d && d->paused;
}

bool sl_control_disabled(const sl_loop_t *l, const char *db) {
    const ctl_db_t *d = l->ctl && db ? find_db(l->ctl, db) : NULL;
    return d && d->disabled;
}

/* Sets the paused flag of the database (or of all) and of its pools. */
static int set_paused(sl_loop_t *l, const char *db, bool paused, char *err, size_t errlen) {
    struct sl_control *ctl = l->ctl;
    if (!db) {
        ctl->paused_all = paused;
        /* RESUME without a name undoes every PAUSE db too, as PgBouncer's. */
        for (sl_list_t *it = ctl->dbs.next; it != &ctl->dbs && !paused; it = it->next)
            sl_container_of(it, ctl_db_t, node)->paused = false;
    } else {
        ctl_db_t *d = get_db(ctl, db);
        if (!d) {
            snprintf(err, errlen, "out of memory");
            return SL_ENOMEM;
        }
        d->paused = paused;
    }
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &l->pools) {
        sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        if (!matches(p, db)) continue;
        bool want = sl_control_paused(l, p->db_alias);
        if (want != p->paused) sl_pool_set_paused(p, want);
    }
    return SL_OK;
}

int sl_control_pause(sl_loop_t *l, const char *db, char *err, size_t errlen) {
    int rc = check_db(l, db, false, err, errlen);
    if (rc == SL_OK) rc = set_paused(l, db, true, err, errlen);
    if (rc == SL_OK)
        sl_log_info(NULL,
                    "PAUSE %s: no server is handed out until RESUME; %d server(s) close as "
                    "they are released",
                    db ? db : "(all databases)", sl_control_servers(l, db));
    return rc;
}

int sl_control_resume(sl_loop_t *l, const char *db, char *err, size_t errlen) {
    int rc = check_db(l, db, false, err, errlen);
    if (rc != SL_OK) return rc;
    if (db && l->ctl->paused_all) {
        snprintf(err, errlen,
                 "every database is paused: RESUME without a database name resumes them all");
        return SL_ECONFIG;
    }
    rc = set_paused(l, db, false, err, errlen);
    if (rc != SL_OK) return rc;
    sl_log_info(NULL, "RESUME %s: waiting clients get servers again", db ? db : "(all databases)");
    /* A PAUSE of these databases still waiting for its servers to close
     * never will be done now: it ends, its console told why. */
    struct sl_control *ctl = l->ctl;
    bool again = true;
    while (again) {
        again = false;
        for (sl_list_t *it = ctl->waits.next; it != &ctl->waits; it = it->next) {
            sl_control_wait_t *wt = sl_container_of(it, sl_control_wait_t, node);
            if (wt->kind != SL_CONTROL_PAUSED || (db && strcmp(wt->db, db) != 0)) continue;
            sl_control_wait_cancel(wt);
            wt->cb(wt, SL_CONTROL_CANCELED); /* may change the list: walk again */
            again = true;
            break;
        }
    }
    return SL_OK;
}

int sl_control_reconnect(sl_loop_t *l, const char *db, char *err, size_t errlen) {
    int rc = check_db(l, db, false, err, errlen);
    if (rc != SL_OK) return rc;
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &l->pools) {
        sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        if (matches(p, db)) sl_pool_reconnect(p);
    }
    return SL_OK;
}

int sl_control_kill(sl_loop_t *l, const char *db, char *err, size_t errlen) {
    int rc = check_db(l, db, false, err, errlen);
    if (rc == SL_OK) rc = set_paused(l, db, true, err, errlen);
    if (rc != SL_OK) return rc;
    sl_list_t *it, *tmp;
    sl_list_each(it, tmp, &l->pools) {
        sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        if (matches(p, db)) sl_pool_close_unlinked(p, "database killed (KILL)");
    }
    sl_log_info(NULL, "KILL %s: servers and clients closed; new clients wait until RESUME",
                db ? db : "(all databases)");
    return SL_OK;
}

static int set_disabled(sl_loop_t *l, const char *db, bool disabled, char *err, size_t errlen) {
    int rc = check_db(l, db, true, err, errlen);
    if (rc != SL_OK) return rc;
    ctl_db_t *d = get_db(l->ctl, db);
    if (!d) {
        snprintf(err, errlen, "out of memory");
        return SL_ENOMEM;
    }
    d->disabled = disabled;
    sl_log_info(NULL, "%s %s: %s", disabled ? "DISABLE" : "ENABLE", db,
                disabled ? "new clients are refused until ENABLE; connected ones carry on"
                         : "new clients are accepted again");
    return SL_OK;
}

int sl_control_disable(sl_loop_t *l, const char *db, char *err, size_t errlen) {
    return set_disabled(l, db, true, err, errlen);
}

int sl_control_enable(sl_loop_t *l, const char *db, char *err, size_t errlen) {
    return set_disabled(l, db, false, err, errlen);
}

int sl_control_servers(const sl_loop_t *l, const char *db) {
    int n = 0;
    for (const sl_list_t *it = l->pools.next; it != &l->pools; it = it->next) {
        const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        if (matches(p, db)) n += sl_pool_total(p);
    }
    return n;
}

int sl_control_close_pending(const sl_loop_t *l, const char *db) {
    int n = 0;
    for (const sl_list_t *it = l->pools.next; it != &l->pools; it = it->next) {
        const sl_pool_t *p = sl_container_of(it, sl_pool_t, node);
        if (matches(p, db)) n += sl_pool_close_pending(p);
    }
    return n;
}

/* With several workers a PAUSE is done once no loop has a server of the
 * database left: the count comes from the hook that sees them all. */
static bool wait_done(sl_loop_t *l, const sl_control_wait_t *wt) {
    const char *db = wt->db[0] ? wt->db : NULL;
    switch (wt->kind) {
    case SL_CONTROL_PAUSED:
        return (l->control_count ? l->control_count(l, db, false) : sl_control_servers(l, db)) == 0;
    case SL_CONTROL_CLOSED:
        return (l->control_count ? l->control_count(l, db, true)
                                 : sl_control_close_pending(l, db)) == 0;
    case SL_CONTROL_TEST:
        return wt->test(l);
    }
    return true;
}

/* Runs the callbacks of the waits that are done. A callback may queue or
 * cancel waits: the walk restarts from the head after each. */
static void check_cb(uv_timer_t *t) {
    struct sl_control *ctl = t->data;
    bool again = true;
    while (again) {
        again = false;
        for (sl_list_t *it = ctl->waits.next; it != &ctl->waits; it = it->next) {
            sl_control_wait_t *wt = sl_container_of(it, sl_control_wait_t, node);
            enum sl_control_end how = SL_CONTROL_DONE;
            if (wt->gone && wt->gone(ctl->l, wt))
                how = SL_CONTROL_DROPPED;
            else if (!wait_done(ctl->l, wt))
                continue;
            sl_control_wait_cancel(wt);
            wt->cb(wt, how);
            again = true;
            break;
        }
    }
    if (sl_list_empty(&ctl->waits)) uv_timer_stop(&ctl->timer);
}

void sl_control_wait(sl_loop_t *l, sl_control_wait_t *wt) {
    struct sl_control *ctl = l->ctl;
    if (wt->queued) return;
    wt->queued = true;
    sl_list_push_back(&ctl->waits, &wt->node);
    /* The first check at once (from the timer, not this stack), then
     * every SL_CONTROL_CHECK_MS. */
    if (!uv_is_active((uv_handle_t *)&ctl->timer))
        uv_timer_start(&ctl->timer, check_cb, 0, SL_CONTROL_CHECK_MS);
}

void sl_control_wait_cancel(sl_control_wait_t *wt) {
    if (!wt->queued) return;
    sl_list_unlink(&wt->node);
    wt->queued = false;
}
