/* What the floors above may read of the session's clients: a snapshot per
 * client for the admin console's walks (SHOW CLIENTS, SHOW POOLS), and
 * KILL_CLIENT. The admin module never sees sl_client_t. */
#include <stdlib.h>
#include <string.h>

#include "session.h"

static void describe(const sl_client_t *c, sl_client_info_t *ci) {
    memset(ci, 0, sizeof *ci);
    ci->id = c->id;
    ci->state = c->state;
    ci->user = c->user;
    ci->dbname = c->dbname;
    ci->peer = sl_client_peer(c); /* a per-thread buffer: good while visit runs */
    ci->fd = c->sock.fd;
    ci->ssl = c->sock.ssl;
    ci->application_name = sl_params_get(&c->params, "application_name");
    ci->connect_ms = c->connect_ms;
    ci->request_ms = c->last_io_ms;
    if (c->state == SL_CL_WAITING || c->state == SL_CL_LOGIN_WAIT) ci->wait_ms = c->waiter.since_ms;
    ci->server = c->server;
    ci->pool = c->pool;
    ci->prepared_statements = (int)c->stmt_names.map.count;
    ci->console = c->console != SL_CONSOLE_NONE;
    ci->close_needed = c->w->shutting_down;
}

void sl_session_walk(sl_loop_t *w, sl_client_visit_cb visit, void *arg) {
    for (int st = 0; st < SL_CL_CLOSING; st++) {
        const sl_list_t *head = &w->clients_in[st], *it;
        for (it = head->next; it != head; it = it->next) {
            const sl_client_t *c = sl_container_of(it, sl_client_t, state_node);
            sl_client_info_t ci;
            describe(c, &ci);
            visit(&ci, arg);
        }
    }
}

uint32_t sl_session_client_id(const struct sl_client *c) {
    return c ? c->id : 0;
}

int sl_session_kill(sl_loop_t *w, uint32_t id, uint32_t self, const char *code, const char *msg) {
    if (id == self) return -1;
    sl_list_t *it;
    for (it = w->clients.next; it != &w->clients; it = it->next) {
        sl_client_t *c = sl_container_of(it, sl_client_t, node);
        if (c->id != id) continue;
        sl_client_fatal(c, code, "%s", msg);
        return 1;
    }
    return 0;
}
