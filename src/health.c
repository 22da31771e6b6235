/* Health checks of routed backends (see health.h). */
#include "sluice/health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/pool.h"
#include "sluice/proto.h"
#include "sluice/route.h"

/* The insert position, not the write position: a commit acknowledged to a
 * client is always before it, even with synchronous_commit = off. */
static const char check_sql[] =
    "SELECT pg_is_in_recovery(), CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_insert_lsn() END, CASE WHEN pg_is_in_recovery() AND "
    "pg_last_wal_receive_lsn() IS DISTINCT FROM pg_last_wal_replay_lsn() THEN "
    "COALESCE(extract(epoch FROM now() - pg_last_xact_replay_timestamp()), 0) ELSE 0 END";

static int64_t poll_period(const sl_config_t *cfg) {
    int64_t p = cfg->lsn_poll_period_ms;
    if (p <= 0 || p > cfg->health_check_period_ms) p = cfg->health_check_period_ms;
    return p > 0 ? p : 1000;
}

int64_t sl_health_poll_period_ms(const sl_config_t *cfg) {
    return poll_period(cfg);
}

/* After a failure: a health_check_period of 0 would retry a refused
 * connection in a tight loop, so it falls back like poll_period. */
static int64_t retry_period(const sl_config_t *cfg) {
    return cfg->health_check_period_ms > 0 ? cfg->health_check_period_ms : poll_period(cfg);
}

static bool column(const uint8_t **p, const uint8_t *end, const char **v, int32_t *len) {
    if (end - *p < 4) return false;
    *len = (int32_t)sl_be32(*p);
    *p += 4;
    if (*len < 0) {
        *v = NULL;
        return true;
    }
    if (end - *p < *len) return false;
    *v = (const char *)*p;
    *p += *len;
    return true;
}

/* Reads one check's DataRow: in_recovery, lsn ("X/Y" or NULL), lag seconds.
 * False if it is malformed. */
static bool parse_row(const uint8_t *row, size_t n, bool *in_recovery, uint64_t *lsn,
                      double *lag_s) {
    if (n < 2 || (row[0] << 8 | row[1]) != 3) return false;
    const uint8_t *p = row + 2, *end = row + n;
    const char *v[3];
    int32_t len[3];
    for (int i = 0; i < 3; i++)
        if (!column(&p, end, &v[i], &len[i])) return false;
    if (!v[0] || len[0] != 1 || (v[0][0] != 't' && v[0][0] != 'f')) return false;
    *in_recovery = v[0][0] == 't';
    *lsn = 0;
    if (v[1]) {
        char buf[40];
        unsigned hi, lo;
        if (len[1] >= (int32_t)sizeof buf) return false;
        memcpy(buf, v[1], (size_t)len[1]);
        buf[len[1]] = '\0';
        if (sscanf(buf, "%X/%X", &hi, &lo) != 2) return false;
        *lsn = (uint64_t)hi << 32 | lo;
    }
    *lag_s = 0;
    if (v[2]) {
        char buf[40];
        if (len[2] >= (int32_t)sizeof buf) return false;
        memcpy(buf, v[2], (size_t)len[2]);
        buf[len[2]] = '\0';
        *lag_s = strtod(buf, NULL);
    }
    return true;
}

static void reschedule(sl_route_t *r);

static void drop_check(sl_backend_t *b, const char *why) {
    sl_server_t *s = b->check;
    b->check = NULL;
    if (s) sl_server_close(s, why);
}

/* The one way a check fails: its connection goes (a new one is opened for
 * the next check), the next try is a health_check_period away, and the
 * route counts the failure. */
static void check_failed(sl_backend_t *b, const char *what, const char *err) {
    char msg[320];
    snprintf(msg, sizeof msg, "%s%s%s", what, err ? ": " : "", err ? err : "");
    sl_route_t *r = b->route;
    b->check_busy = false;
    b->next_check_ms = sl_now_ms(r->w) + retry_period(r->w->cfg);
    drop_check(b, msg);
    sl_route_check_failed(r, b->idx, msg);
    reschedule(r);
}

static void query_done(sl_server_t *s, const char *err, const char *code) {
    (void)code;
    sl_backend_t *b = s->owner;
    if (err) {
        check_failed(b, "health check query failed", err);
        return;
    }
    bool rec;
    uint64_t lsn;
    double lag;
    if (!s->row || !parse_row(s->row, s->row_len, &rec, &lsn, &lag)) {
        check_failed(b, "health check returned an unexpected row", NULL);
        return;
    }
    sl_server_set_state(s, SL_SV_IDLE);
    sl_route_t *r = b->route;
    b->check_busy = false;
    b->checks_done = b->checks_sent;
    b->next_check_ms = sl_now_ms(r->w) + poll_period(r->w->cfg);
    uint64_t rtt_us = (uv_hrtime() - b->check_start_ns) / 1000;
    sl_route_checked(r, b->idx, rec, lsn, lag, rtt_us);
    reschedule(r);
}

static void send_check(sl_backend_t *b) {
    b->checks_sent++;
    sl_route_publish(b->route); /* before the query goes out: see sl_route_publish */
    b->check_start_ns = uv_hrtime();
    if (sl_server_query(b->check, check_sql, query_done) < 0)
        check_failed(b, "out of memory", NULL);
}

static void connect_done(sl_server_t *s, const char *err, const char *code) {
    (void)code;
    sl_backend_t *b = s->owner;
    if (err) {
        b->check = s; /* also when the connect failed before it returned: closed with it */
        check_failed(b, "health check connection failed", err);
        return;
    }
    sl_server_set_state(s, SL_SV_IDLE);
    send_check(b);
}

static void check_closing(sl_server_t *s) {
    sl_backend_t *b = s->owner;
    if (b->check != s) return;
    b->check = NULL;
    if (b->check_busy) check_failed(b, "health check connection closed", NULL);
}

static void start_check(sl_backend_t *b) {
    sl_route_t *r = b->route;
    b->check_busy = true;
    b->check_start_ns = uv_hrtime();
    if (b->check) {
        send_check(b);
        return;
    }
    char err[256], tag[320];
    sl_pool_t *p = sl_pool_get_at(r->w, r->db, r->check_user, b->idx, err, sizeof err);
    if (!p) {
        check_failed(b, err, NULL);
        return;
    }
    snprintf(tag, sizeof tag, "check db=%s backend=%s", r->db, b->addr);
    sl_server_t *s = sl_pool_open_probe(p, b, tag, connect_done);
    if (!s) {
        check_failed(b, "could not start a health check connection", NULL);
        return;
    }
    if (s->state == SL_SV_CLOSING) return; /* failed at once: connect_done reported it */
    s->on_close = check_closing;
    b->check = s;
}

/* Checks due this close to the one that woke the timer go along with it, so
 * that a route's backends stay in step and the timer wakes once per period,
 * not once per backend. */
static int64_t slack_ms(const sl_config_t *cfg) {
    return poll_period(cfg) / 10;
}

int64_t sl_health_next_due_ms(const sl_route_t *r, int64_t now_ms, uint64_t now_ns) {
    const sl_config_t *cfg = r->w->cfg;
    int64_t next = -1;
    for (int i = 0; i < r->n; i++) {
        const sl_backend_t *b = &r->b[i];
        int64_t in_ms;
        if (b->check_busy) {
            if (cfg->health_check_timeout_ms <= 0) continue; /* waits for its answer */
            int64_t waited_ms = (int64_t)((now_ns - b->check_start_ns) / 1000000);
            in_ms = cfg->health_check_timeout_ms - waited_ms;
        } else {
            in_ms = b->next_check_ms - now_ms;
        }
        if (in_ms < 0) in_ms = 0;
        if (next < 0 || in_ms < next) next = in_ms;
    }
    return next;
}

static void tick_cb(uv_timer_t *t);

/* The timer is one-shot, set for the next thing due: a check to send or
 * one in flight to time out. Called whenever either changes. */
static void reschedule(sl_route_t *r) {
    if (!r->checking) return;
    int64_t in_ms = sl_health_next_due_ms(r, sl_now_ms(r->w), uv_hrtime());
    if (in_ms < 0)
        uv_timer_stop(&r->timer); /* every check waits for an answer without a timeout */
    else
        uv_timer_start(&r->timer, tick_cb, (uint64_t)in_ms, 0);
}

static void tick_cb(uv_timer_t *t) {
    sl_route_t *r = t->data;
    const sl_config_t *cfg = r->w->cfg;
    int64_t now = sl_now_ms(r->w);
    for (int i = 0; i < r->n; i++) {
        sl_backend_t *b = &r->b[i];
        if (b->check_busy) {
            uint64_t waited_ms = (uv_hrtime() - b->check_start_ns) / 1000000;
            if (cfg->health_check_timeout_ms > 0 &&
                waited_ms >= (uint64_t)cfg->health_check_timeout_ms) {
                char msg[120];
                snprintf(msg, sizeof msg, "health check got no answer within %.1f s",
                         (double)cfg->health_check_timeout_ms / 1000.0);
                check_failed(b, msg, NULL);
            }
            continue;
        }
        if (now + slack_ms(cfg) >= b->next_check_ms) start_check(b);
    }
    reschedule(r);
}

void sl_health_start(sl_route_t *r) {
    int64_t now = sl_now_ms(r->w);
    for (int i = 0; i < r->n; i++)
        r->b[i].next_check_ms = now;
    r->checking = true;
    reschedule(r);
}

void sl_health_reconnect(sl_backend_t *b) {
    b->check_busy = false;
    b->next_check_ms = sl_now_ms(b->route->w) + retry_period(b->route->w->cfg);
    drop_check(b, "backend ejected");
    reschedule(b->route);
}

void sl_health_stop(sl_route_t *r) {
    r->checking = false;
    uv_timer_stop(&r->timer);
    for (int i = 0; i < r->n; i++) {
        r->b[i].check_busy = false;
        drop_check(&r->b[i], "health checks stopped");
    }
}
