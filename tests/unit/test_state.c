/* State is location: a server's state and the pool list it sits on change
 * together, and so do a client's state and the loop list it sits on; an
 * illegal transition is refused and moves nothing. Servers are built by
 * hand on a fake pool (no backend); clients are accepted for real on one
 * end of a socketpair by a hand-built loop context (auth_type = trust). */
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "session/session.h"
#include "sluice/config.h"
#include "sluice/log.h"
#include "sluice/pool.h"
#include "sluice/server.h"
#include "unit/check.h"

static sl_loop_t w;

/* Servers found by walking list l: what a SHOW SERVERS would print. */
static int walk(const sl_list_t *l) {
    int n = 0;
    for (const sl_list_t *it = l->next; it != l; it = it->next)
        n++;
    return n;
}

static bool on_list(const sl_list_t *l, const sl_list_t *node) {
    for (const sl_list_t *it = l->next; it != l; it = it->next)
        if (it == node) return true;
    return false;
}

static sl_server_t *fake_server(sl_pool_t *p, int id) {
    sl_server_t *s = calloc(1, sizeof *s);
    sl_list_init(&s->node);
    s->w = &w;
    s->owner = p;
    s->sock.fd = -1;
    s->state = SL_SV_RESOLVING;
    snprintf(s->tag, sizeof s->tag, "S-%d unit", id);
    sl_server_adopt(s, &p->servers);
    return s;
}

/* Each count matches a walk of its list, for every state. */
static void check_pool_lists(const sl_pool_t *p) {
    for (int st = 0; st < SL_SV_CLOSING; st++)
        ASSERT_EQ(walk(&p->servers.in[st]), sl_pool_count(p, (enum sl_server_state)st));
    ASSERT_EQ(walk(&w.servers_closing), w.nservers_closing);
}

static void test_servers(void) {
    sl_pool_t *p = calloc(1, sizeof *p);
    p->w = &w;
    sl_server_lists_init(&p->servers);
    sl_server_t *a = fake_server(p, 1), *b = fake_server(p, 2), *c = fake_server(p, 3);
    ASSERT_EQ(sl_pool_count(p, SL_SV_RESOLVING), 3);
    ASSERT_TRUE(on_list(&p->servers.in[SL_SV_RESOLVING], &a->node));

    /* A login: resolving -> connecting -> idle. */
    ASSERT_TRUE(sl_server_set_state(a, SL_SV_CONNECTING));
    ASSERT_TRUE(sl_server_set_state(b, SL_SV_CONNECTING));
    ASSERT_EQ(sl_pool_count(p, SL_SV_RESOLVING), 1);
    ASSERT_EQ(sl_pool_count(p, SL_SV_CONNECTING), 2);
    ASSERT_TRUE(on_list(&p->servers.in[SL_SV_CONNECTING], &b->node));
    ASSERT_TRUE(sl_server_set_state(a, SL_SV_IDLE));
    ASSERT_TRUE(sl_server_set_state(b, SL_SV_IDLE));
    ASSERT_EQ(sl_pool_count(p, SL_SV_IDLE), 2);
    /* Most recently idle first: b heads the list. */
    ASSERT_TRUE(p->servers.in[SL_SV_IDLE].next == &b->node);
    check_pool_lists(p);

    /* Handed out, a reset, back to idle. */
    ASSERT_TRUE(sl_server_set_state(b, SL_SV_ACTIVE));
    ASSERT_EQ(sl_pool_count(p, SL_SV_ACTIVE), 1);
    ASSERT_TRUE(on_list(&p->servers.in[SL_SV_ACTIVE], &b->node));
    ASSERT_TRUE(!on_list(&p->servers.in[SL_SV_IDLE], &b->node));
    ASSERT_TRUE(sl_server_set_state(b, SL_SV_QUERY));
    ASSERT_EQ(sl_pool_count(p, SL_SV_QUERY), 1);
    ASSERT_EQ(sl_pool_count(p, SL_SV_ACTIVE), 0);
    ASSERT_EQ(sl_pool_total(p), 3);
    check_pool_lists(p);

    /* Illegal: an idle server does not log in again, a resolving one is not
     * idle before it connected. Refused, and nothing moves. */
    ASSERT_TRUE(!sl_server_set_state(a, SL_SV_CONNECTING));
    ASSERT_EQ(a->state, SL_SV_IDLE);
    ASSERT_TRUE(on_list(&p->servers.in[SL_SV_IDLE], &a->node));
    ASSERT_TRUE(!sl_server_set_state(c, SL_SV_IDLE));
    ASSERT_EQ(c->state, SL_SV_RESOLVING);
    ASSERT_EQ(sl_pool_count(p, SL_SV_RESOLVING), 1);
    ASSERT_EQ(sl_pool_count(p, SL_SV_IDLE), 1);
    check_pool_lists(p);

    /* Closing: off the pool, onto the loop's list; and never back. */
    ASSERT_TRUE(sl_server_set_state(c, SL_SV_CLOSING));
    ASSERT_EQ(sl_pool_count(p, SL_SV_RESOLVING), 0);
    ASSERT_EQ(w.nservers_closing, 1);
    ASSERT_TRUE(on_list(&w.servers_closing, &c->node));
    ASSERT_TRUE(c->home == NULL);
    ASSERT_TRUE(!sl_server_set_state(c, SL_SV_IDLE));
    ASSERT_TRUE(on_list(&w.servers_closing, &c->node));
    ASSERT_EQ(sl_pool_total(p), 2);
    check_pool_lists(p);

    sl_server_t *all[] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        if (all[i]->state != SL_SV_CLOSING) sl_server_set_state(all[i], SL_SV_CLOSING);
        sl_list_unlink(&all[i]->node);
        w.nservers_closing--;
        free(all[i]);
    }
    ASSERT_EQ(sl_pool_total(p), 0);
    free(p);
}

static sl_client_t *only_client_in(enum sl_client_state st) {
    if (w.nclients_in[st] != 1 || walk(&w.clients_in[st]) != 1) return NULL;
    return sl_container_of(w.clients_in[st].next, sl_client_t, state_node);
}

static void run_loop(void) {
    for (int i = 0; i < 20; i++)
        uv_run(w.loop, UV_RUN_NOWAIT);
}

static void test_clients(void) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    sl_session_accept(&w, sv[0], "unit");
    sl_client_t *c = only_client_in(SL_CL_LOGIN);
    ASSERT_TRUE(c != NULL);
    if (!c) return;
    ASSERT_EQ(w.nclients, 1);

    /* Illegal: a client still logging in cannot be linked to a server, nor
     * go back to the startup packet once authenticating. */
    ASSERT_TRUE(!sl_client_set_state(c, SL_CL_ACTIVE));
    ASSERT_TRUE(only_client_in(SL_CL_LOGIN) == c);
    ASSERT_EQ(w.nclients_in[SL_CL_ACTIVE], 0);
    ASSERT_TRUE(sl_client_set_state(c, SL_CL_AUTH));
    ASSERT_TRUE(only_client_in(SL_CL_AUTH) == c);
    ASSERT_EQ(w.nclients_in[SL_CL_LOGIN], 0);
    ASSERT_TRUE(!sl_client_set_state(c, SL_CL_LOGIN));
    ASSERT_EQ(c->state, SL_CL_AUTH);

    /* Idle, then waiting and back; an idle client asks before it gets one. */
    ASSERT_TRUE(sl_client_set_state(c, SL_CL_IDLE));
    ASSERT_TRUE(only_client_in(SL_CL_IDLE) == c);
    ASSERT_TRUE(!sl_client_set_state(c, SL_CL_ACTIVE));
    ASSERT_TRUE(only_client_in(SL_CL_IDLE) == c);
    ASSERT_TRUE(sl_client_set_state(c, SL_CL_WAITING));
    ASSERT_TRUE(only_client_in(SL_CL_WAITING) == c);
    ASSERT_EQ(w.nclients_in[SL_CL_IDLE], 0);
    ASSERT_TRUE(sl_client_set_state(c, SL_CL_IDLE));

    /* Closing: on the closing list until its handle is closed, then gone. */
    sl_client_close(c, "unit test");
    ASSERT_TRUE(only_client_in(SL_CL_CLOSING) == c);
    ASSERT_EQ(w.nclients, 0);
    ASSERT_TRUE(!sl_client_set_state(c, SL_CL_IDLE));
    ASSERT_TRUE(only_client_in(SL_CL_CLOSING) == c);
    run_loop();
    for (int st = 0; st < SL_CL_NSTATES; st++) {
        ASSERT_EQ(w.nclients_in[st], 0);
        ASSERT_EQ(walk(&w.clients_in[st]), 0);
    }
    close(sv[1]);
}

/* A helper records a failure (status, not close): the client stays as it
 * is until its entry point, here the poll callback for a byte it sent,
 * turns it into the FATAL reply and the close. The first failure wins. */
static void test_failure_status(void) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    sl_session_accept(&w, sv[0], "unit");
    sl_client_t *c = only_client_in(SL_CL_LOGIN);
    ASSERT_TRUE(c != NULL);
    if (!c) return;
    ASSERT_TRUE(!sl_session_fail(c, "08P01", "bad message %d", 1));
    ASSERT_TRUE(!sl_session_fail(c, "53200", "a later failure"));
    ASSERT_EQ(c->state, SL_CL_LOGIN); /* not closed from below */
    ASSERT_TRUE(sl_client_done(c));
    ASSERT_TRUE(!sl_client_flush(c));
    ASSERT_EQ(write(sv[1], "x", 1), 1);
    run_loop();
    ASSERT_EQ(w.nclients, 0);
    char reply[512];
    ssize_t n = recv(sv[1], reply, sizeof reply, MSG_DONTWAIT);
    ASSERT_TRUE(n > 5 && reply[0] == 'E');
    if (n > 5) {
        ASSERT_TRUE(memmem(reply, (size_t)n, "FATAL", 5) != NULL);
        ASSERT_TRUE(memmem(reply, (size_t)n, "08P01", 5) != NULL);
        ASSERT_TRUE(memmem(reply, (size_t)n, "bad message 1", 13) != NULL);
        ASSERT_TRUE(memmem(reply, (size_t)n, "53200", 5) == NULL);
    }
    close(sv[1]);

    /* A dropped client (its socket failed, or it said goodbye) is closed
     * by its entry point too, with no reply. */
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    sl_session_accept(&w, sv[0], "unit");
    c = only_client_in(SL_CL_LOGIN);
    ASSERT_TRUE(c != NULL);
    if (!c) return;
    ASSERT_TRUE(!sl_session_drop(c, "client disconnected"));
    ASSERT_EQ(c->state, SL_CL_LOGIN);
    ASSERT_EQ(write(sv[1], "x", 1), 1);
    run_loop();
    ASSERT_EQ(w.nclients, 0);
    ASSERT_EQ(recv(sv[1], reply, sizeof reply, MSG_DONTWAIT), 0);
    close(sv[1]);
}

int main(void) {
    char err[512];
    sl_config_t *cfg =
        sl_config_load_string("t.ini", "[sluice]\nauth_type = trust\n", err, sizeof err);
    ASSERT_TRUE(cfg != NULL);
    if (!cfg) return check_done("test_state");
    ASSERT_EQ(sl_loop_init(&w, cfg, err, sizeof err), SL_OK);
    sl_conn_kicks_init(&w.kicks, w.loop);
    /* The refusals below print their error lines: that is what an operator sees. */
    sl_log_set_level(SL_LOG_ERROR);

    test_servers();
    test_clients();
    test_failure_status();

    sl_conn_kicks_close(&w.kicks);
    sl_loop_close(&w);
    run_loop();
    uv_loop_close(w.loop);
    sl_loop_destroy(&w);
    sl_config_free(cfg);
    return check_done("test_state");
}
