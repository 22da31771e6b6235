/* Operator controls on the pools of one database or of all (PgBouncer's
 * PAUSE, RESUME, RECONNECT, KILL, DISABLE, ENABLE and WAIT_CLOSE): the
 * per-database state they set, what they do to pools and servers, and
 * waits that complete when a PAUSE or a WAIT_CLOSE is done. It sits above
 * pool (it acts on pools) and below the session: clients ask it whether
 * their database takes logins; it never touches a client itself (KILL's
 * clients are closed by the session, sl_session_close_db). The console
 * commands and signals that call it live above.
 *
 * A database name of NULL means every database. Functions that take err
 * return SL_OK, or SL_ECONFIG with a message for the operator in err. */
#ifndef SLUICE_CONTROL_H
#define SLUICE_CONTROL_H

#include <stdbool.h>
#include <stddef.h>

#include "sluice/err.h"
#include "sluice/list.h"
#include "sluice/loop.h"

/* What a wait waits for. */
enum sl_control_wait_kind {
    SL_CONTROL_PAUSED, /* every server of the database(s) is closed (PAUSE, KILL) */
    SL_CONTROL_CLOSED, /* no server is left waiting to be closed (WAIT_CLOSE, after
                          RECONNECT or a RELOAD that changed connection settings) */
    SL_CONTROL_TEST,   /* the wait's own test holds (SUSPEND: every buffer flushed, which
                          only the session above knows) */
};

typedef struct sl_control_wait sl_control_wait_t;
/* How a wait ended; in each case its owner frees what it holds. */
enum sl_control_end {
    SL_CONTROL_DONE,     /* the condition holds */
    SL_CONTROL_CANCELED, /* a RESUME came before a PAUSE was done: it never will be */
    SL_CONTROL_DROPPED,  /* the loop is stopping, or the waiter left (its gone() said so) */
};
typedef void (*sl_control_wait_cb)(sl_control_wait_t *wt, enum sl_control_end how);

/* Embedded in whoever waits (a console client, the worker for SIGUSR1). */
struct sl_control_wait {
    sl_list_t node; /* on the control's waits while queued */
    enum sl_control_wait_kind kind;
    char db[128];                     /* "" for every database */
    sl_control_wait_cb cb;            /* called once, from a timer callback or RESUME */
    bool (*test)(const sl_loop_t *l); /* SL_CONTROL_TEST: the condition */
    /* Optional: whether the waiter has gone (a console client that left),
     * asked at each check; the wait then ends as SL_CONTROL_DROPPED. */
    bool (*gone)(const sl_loop_t *l, const sl_control_wait_t *wt);
    bool queued;
};

/* Sets up l->ctl and the db_paused hook pools ask; SL_ENOMEM on failure. */
int sl_control_init(sl_loop_t *l) SL_MUST_USE;
/* Closes the control's timer and frees its state (the loop is stopping). */
void sl_control_close(sl_loop_t *l);

/* PAUSE: the database's pools hand out and open no server; servers close
 * as they are released (in transaction pooling after their transaction,
 * in session pooling when their client leaves). Clients keep logging in
 * and queue. Wait with SL_CONTROL_PAUSED for the moment it is done. */
int sl_control_pause(sl_loop_t *l, const char *db, char *err, size_t errlen) SL_MUST_USE;
/* RESUME: undoes PAUSE and KILL; waiting clients get servers again. */
int sl_control_resume(sl_loop_t *l, const char *db, char *err, size_t errlen) SL_MUST_USE;
/* RECONNECT: every server of the database closes when it is next released
 * (idle and connecting ones now); clients see nothing, new servers are
 * opened as needed. Wait with SL_CONTROL_CLOSED. */
int sl_control_reconnect(sl_loop_t *l, const char *db, char *err, size_t errlen) SL_MUST_USE;
/* KILL, the server side: pauses the database (until RESUME, as PgBouncer)
 * and closes every server no client holds; the caller then closes the
 * database's clients (sl_session_close_db), whose servers close with them. */
int sl_control_kill(sl_loop_t *l, const char *db, char *err, size_t errlen) SL_MUST_USE;
/* DISABLE and ENABLE: new logins to the database are refused until ENABLE;
 * its connected clients carry on. db is required. */
int sl_control_disable(sl_loop_t *l, const char *db, char *err, size_t errlen) SL_MUST_USE;
int sl_control_enable(sl_loop_t *l, const char *db, char *err, size_t errlen) SL_MUST_USE;

/* SL_OK if db names a database (configured, or served by an automatic
 * pool now), else SL_ECONFIG with why in err. */
int sl_control_check_db(const sl_loop_t *l, const char *db, char *err, size_t errlen) SL_MUST_USE;
bool sl_control_paused(const sl_loop_t *l, const char *db);
bool sl_control_disabled(const sl_loop_t *l, const char *db);
/* Servers of db (NULL: all) still open, and still waiting to be closed as
 * they are released: what PAUSE and WAIT_CLOSE wait for. */
int sl_control_servers(const sl_loop_t *l, const char *db);
int sl_control_close_pending(const sl_loop_t *l, const char *db);

/* Queues wt (kind, db and cb set by the caller): cb runs once the
 * condition holds, checked every SL_CONTROL_CHECK_MS and never on the
 * caller's stack. */
void sl_control_wait(sl_loop_t *l, sl_control_wait_t *wt);
/* Drops a queued wait (its owner goes away); safe if it is not queued. */
void sl_control_wait_cancel(sl_control_wait_t *wt);

/* How often pending waits are checked: a PAUSE completes at most this long
 * after its last server closed. */
#define SL_CONTROL_CHECK_MS 20

#endif
