/* The session side of the admin console: a client whose startup database
 * is pgbouncer or sluice logs in as usual (same listeners, TLS, auth_type,
 * auth_file, auth_hba_file), or as the Unix-socket peer running sluice,
 * then speaks the simple query protocol to sluice itself. This file owns
 * who may enter, the framing of the console's messages and the sending of
 * its replies; what a command does is the admin module's (src/admin/,
 * above this floor), reached through the loop's console_query hook.
 *
 * A reply may be larger than a connection buffer (SHOW CLIENTS with many
 * clients): the admin module builds it whole, as PgBouncer does, and it is
 * copied into the client's output buffer as the socket takes it. No new
 * Query is read while a reply is still going out. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session.h"
#include "sluice/log.h"
#include "sluice/strlist.h"

bool sl_console_wanted(const sl_client_t *c) {
    return c->w->console_query && c->dbname &&
           (strcmp(c->dbname, "pgbouncer") == 0 || strcmp(c->dbname, "sluice") == 0);
}

bool sl_console_peer_ok(const sl_client_t *c) {
    /* As PgBouncer: only under the console's own user name, so that the
     * log's user= says who it was (any name would pass otherwise). */
    if (!sl_client_is_unix(c) || !c->user ||
        (strcmp(c->user, "pgbouncer") != 0 && strcmp(c->user, "sluice") != 0))
        return false;
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(c->sock.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
    return cred.uid == geteuid();
}

/* The parameters a console client is told at login: enough for psql,
 * psycopg2 and Go's lib/pq to carry on (they read encoding, DateStyle,
 * integer_datetimes and standard_conforming_strings). */
static const char *const console_params[][2] = {
    {"server_version", "15.0 (sluice console)"},
    {"server_encoding", "UTF8"},
    {"client_encoding", "UTF8"},
    {"DateStyle", "ISO, MDY"},
    {"integer_datetimes", "on"},
    {"standard_conforming_strings", "on"},
    {"TimeZone", "UTC"},
};

void sl_console_login(sl_client_t *c, bool peer) {
    const sl_config_t *cfg = c->w->cfg;
    c->console_peer = peer;
    if (peer || sl_strlist_has(cfg->admin_users, c->user))
        c->console = SL_CONSOLE_ADMIN;
    else if (sl_strlist_has(cfg->stats_users, c->user))
        c->console = SL_CONSOLE_STATS;
    else {
        sl_client_fatal(c, "28000",
                        "user \"%s\" may not use the admin console: add it to admin_users "
                        "(everything) or stats_users (SHOW only) and reload",
                        c->user);
        return;
    }
    if (c->a->auth) {
        sl_auth_clear(c->a->auth);
        free(c->a->auth);
        c->a->auth = NULL;
    }
    if (!sl_client_own(c) || sl_buf_take(&c->w->bufs, &c->a->in) < 0 ||
        sl_buf_take(&c->w->bufs, &c->a->out) < 0) {
        sl_client_fatal(c, "53200", "out of memory for connection buffers");
        return;
    }
    /* A peer login skipped the password exchange, whose success message
     * the auth module sends otherwise. */
    int rc = peer ? sl_proto_put_auth(&c->a->out, 0, NULL, 0) : SL_OK;
    for (size_t i = 0; i < sizeof console_params / sizeof *console_params && rc == SL_OK; i++)
        rc = sl_proto_put_param_status(&c->a->out, console_params[i][0], console_params[i][1]);
    if (rc == SL_OK)
        rc = sl_proto_put_backend_key(&c->a->out, sl_client_cancel_pid(c), c->cancel_key);
    if (rc == SL_OK) rc = sl_proto_put_ready(&c->a->out, 'I');
    if (rc != SL_OK) {
        sl_client_fatal(c, "53200", "the console's login reply does not fit in pkt_buf");
        return;
    }
    if (c->w->cfg->log_connections)
        sl_log_info(sl_client_tag(c), "admin console login ok (%s%s)",
                    c->console == SL_CONSOLE_ADMIN ? "admin" : "stats only",
                    peer ? ", Unix-socket peer running sluice" : "");
    /* Anything sent after the login is the first Query. */
    if (c->a->login_len) {
        if (sl_buf_append(&c->a->in, c->a->login_buf, c->a->login_len) < 0) {
            sl_client_fatal(c, "08P01", "too much data sent before login completed");
            return;
        }
    }
    free(c->a->login_buf);
    c->a->login_buf = NULL;
    c->a->login_len = 0;
    sl_client_set_state(c, SL_CL_IDLE);
    sl_console_pump(c);
}

/* Runs one Query through the admin module; its reply is queued. The
 * rights are those of the running config, not of the login: a user taken
 * out of admin_users (RELOAD, SET) loses them in open sessions too. */
static bool run_query(sl_client_t *c, const char *sql) {
    const sl_config_t *cfg = c->w->cfg;
    if (c->console_peer || sl_strlist_has(cfg->admin_users, c->user))
        c->console = SL_CONSOLE_ADMIN;
    else if (sl_strlist_has(cfg->stats_users, c->user))
        c->console = SL_CONSOLE_STATS;
    else
        return sl_session_fail(c, "28000",
                               "user \"%s\" is no longer in admin_users or stats_users: the "
                               "console connection closes",
                               c->user);
    sl_console_who_t who = {c->id, c->user, c->console == SL_CONSOLE_ADMIN};
    size_t len = 0;
    uint8_t *reply = c->w->console_query(c->w, &who, sql, &len);
    if (!reply) return sl_session_fail(c, "53200", "out of memory for the console's reply");
    c->a->console_out = reply;
    c->a->console_len = len;
    c->a->console_off = 0;
    c->console_ready = !c->console_held; /* a held command's comes with its end */
    c->last_io_ms = sl_now_ms(c->w);
    return true;
}

/* Takes the next whole message from c->a->in; false when there is none (or
 * c failed). */
static bool next_message(sl_client_t *c) {
    uint32_t have = sl_buf_len(&c->a->in);
    if (have < 5) return false;
    const uint8_t *m = sl_buf_rptr(&c->a->in);
    uint8_t type = m[0];
    uint32_t len = sl_be32(m + 1);
    /* len + 1 would wrap for a length near UINT32_MAX: compare without it. */
    if (len < 4 || len > c->a->in.cap - 1)
        return sl_session_fail(c, "08P01",
                               "console message of %u bytes does not fit in pkt_buf (%u): "
                               "send shorter commands",
                               len, c->a->in.cap);
    if (have < len + 1) return false;
    switch (type) {
    case 'Q': {
        /* The text ends in a NUL inside the message, or it is malformed. */
        if (len < 5 || m[len] != '\0')
            return sl_session_fail(c, "08P01", "malformed Query message");
        /* The reply owns nothing of c->a->in: the text is consumed after. */
        bool ok = run_query(c, (const char *)m + 5);
        sl_buf_consume(&c->a->in, len + 1);
        return ok;
    }
    case 'X':
        return sl_session_drop(c, "console client disconnected");
    case 'P':
    case 'B':
    case 'D':
    case 'E':
    case 'C':
    case 'H':
    case 'S':
    case 'F':
        return sl_session_fail(c, "0A000",
                               "the admin console speaks the simple query protocol only: "
                               "message type '%c' is not supported (with psycopg or JDBC, "
                               "run SHOW commands as plain queries)",
                               type);
    default:
        return sl_session_fail(c, "08P01", "invalid frontend message type %u to the admin console",
                               type);
    }
}

void sl_console_pump(sl_client_t *c) {
    for (;;) {
        if (sl_client_done(c)) return;
        /* The reply in progress goes out first, as the socket takes it. */
        while (c->a->console_out && c->a->console_off < c->a->console_len) {
            if (sl_buf_space(&c->a->out) == 0) sl_buf_compact(&c->a->out);
            uint32_t room = sl_buf_space(&c->a->out);
            if (room == 0) break;
            size_t n = c->a->console_len - c->a->console_off;
            if (n > room) n = room;
            if (sl_buf_append(&c->a->out, c->a->console_out + c->a->console_off, (uint32_t)n) < 0)
                break;
            c->a->console_off += n;
            if (!sl_client_flush(c)) return;
            if (sl_buf_len(&c->a->out) > 0) return; /* EAGAIN: the writable event resumes */
        }
        if (c->a->console_out && c->a->console_off >= c->a->console_len) {
            free(c->a->console_out);
            c->a->console_out = NULL;
        }
        if (c->console_ready) {
            if (sl_proto_put_ready(&c->a->out, 'I') < 0) {
                if (!sl_client_flush(c) || sl_buf_len(&c->a->out) > 0) return;
                continue;
            }
            c->console_ready = false;
        }
        if (!sl_client_flush(c)) return;
        if (sl_buf_len(&c->a->out) > 0) return;
        if (c->console_held || !next_message(c)) break;
    }
    if (!sl_client_done(c)) sl_client_update_poll(c);
}

void sl_console_readable(sl_client_t *c) {
    if ((!c->a->in.data || !c->a->out.data) &&
        (!sl_client_own(c) || sl_buf_take(&c->w->bufs, &c->a->in) < 0 ||
         sl_buf_take(&c->w->bufs, &c->a->out) < 0)) {
        sl_client_close(c, "out of memory for connection buffers");
        return;
    }
    if (sl_buf_space(&c->a->in) == 0) sl_buf_compact(&c->a->in);
    if (sl_buf_space(&c->a->in) > 0) {
        ssize_t n = sl_conn_read(&c->sock, sl_buf_wptr(&c->a->in), sl_buf_space(&c->a->in));
        if (n == -EAGAIN) {
            sl_client_update_poll(c);
            return;
        }
        if (n <= 0) {
            sl_client_close(c, n == 0 ? "console client closed the connection" : "read error: %s",
                            strerror((int)-n));
            return;
        }
        c->a->in.tail += (uint32_t)n;
    }
    sl_console_pump(c);
}

bool sl_console_busy(const sl_client_t *c) {
    return c->a->console_out != NULL || c->console_ready || c->console_held;
}

/* The console client with this id, or NULL (it went away). */
static sl_client_t *console_client(sl_loop_t *w, uint32_t id) {
    for (sl_list_t *it = w->clients.next; it != &w->clients; it = it->next) {
        sl_client_t *c = sl_container_of(it, sl_client_t, node);
        if (c->id == id) return c->console ? c : NULL;
    }
    return NULL;
}

bool sl_console_is_held(sl_loop_t *w, uint32_t client_id) {
    const sl_client_t *c = console_client(w, client_id);
    return c && c->console_held && !sl_client_done(c);
}

bool sl_console_hold(sl_loop_t *w, uint32_t client_id) {
    sl_client_t *c = console_client(w, client_id);
    if (!c) return false;
    c->console_held = true;
    return true;
}

void sl_console_finish(sl_loop_t *w, uint32_t client_id, uint8_t *reply, size_t len) {
    sl_client_t *c = console_client(w, client_id);
    if (!c || !c->console_held) {
        free(reply);
        return;
    }
    if (!sl_client_own(c)) {
        free(reply);
        sl_client_close(c, "out of memory for a console reply");
        return;
    }
    c->console_held = false;
    c->console_ready = true;
    if (c->a->console_out && c->a->console_off < c->a->console_len) {
        /* The command's first part is still going out: the end follows it. */
        uint8_t *all = realloc(c->a->console_out, c->a->console_len + len);
        if (!all) {
            free(reply);
            sl_session_fail(c, "53200", "out of memory for the console's reply");
            sl_session_settle(c);
            return;
        }
        memcpy(all + c->a->console_len, reply, len);
        c->a->console_out = all;
        c->a->console_len += len;
        free(reply);
    } else {
        free(c->a->console_out);
        c->a->console_out = reply;
        c->a->console_len = len;
        c->a->console_off = 0;
    }
    /* An entry point for c: a timer of the admin module called. */
    sl_console_pump(c);
    sl_session_settle(c);
}
