/* Named prepared statements through transaction and statement pooling.
 * While a client is linked, its messages to the server go through a walker
 * that renames statements to sluice's server-side names, injects a Parse
 * where the server lacks one, evicts least recently used statements with a
 * Close, and answers Close (and a Parse the server already has) itself. The
 * server's replies go through a pump that drops the replies to sluice's own
 * messages and puts sluice's answers in their place in the stream. Both keep
 * the order of replies exact, with pipelining and when an error cuts a
 * pipeline short.
 *
 * The walker changes the client's names (and the server's cache) when it
 * sends a request, so that the requests behind it in the same batch are
 * renamed right; an error before the request makes PostgreSQL skip it, and
 * then its change is undone (in reverse order, see expect.h). A batch after
 * a Sync is not walked past a named statement while a change of an earlier
 * batch is unsettled: it must see the names as PostgreSQL will have them.
 *
 * DEALLOCATE ALL and DISCARD ALL (alone, in a Query of several statements,
 * or executed as a prepared statement) drop every statement of the
 * session, but only if they run: an error before them skips them, they
 * fail in an aborted transaction, and once run a rollback does not bring
 * the statements back. The walker sends such a request as a barrier (see
 * expect.h): a message behind it that uses names waits, and the pump
 * forgets the client's names and the server's statements when the
 * server's CommandComplete says the drop ran.
 * Sits with relay: it works on a linked client and server. */
#ifndef SLUICE_PREPARE_H
#define SLUICE_PREPARE_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice/buf.h"
#include "sluice/client.h"
#include "sluice/expect.h"

typedef struct sl_bytes {
    uint8_t *p;            /* owned */
    uint32_t len, off, cap; /* bytes held, bytes already used, allocated */
} sl_bytes_t;

/* The in-flight state of a linked client in this mode. */
typedef struct sl_ps {
    sl_expect_t replies; /* what the server owes, in order */
    sl_bytes_t stage;    /* bytes for the server, walked and rewritten; freed when
                            drained above 64 kB */
    sl_bytes_t msg;      /* a Parse/Bind/Describe/Close being assembled (at most
                            max_rewrite_size bytes of it); freed likewise */
    uint32_t msg_need;   /* bytes of the message (a Bind: its whole length) */
    uint32_t msg_max;    /* bytes of it held at most: the rest streams or is dropped */
    uint32_t remain;     /* bytes of the current client message still to walk */
    sl_buf_t sin;        /* server bytes not yet relayed (a pool buffer) */
    uint32_t s_remain;   /* bytes of the current server message still to relay */
    bool assembling;     /* msg holds the start of a message */
    bool s_mid;          /* inside a server message (answers must wait) */
    bool skip_to_sync;   /* a Parse was refused: drop messages up to the Sync */
    bool discard;        /* the message being walked is dropped */
    bool held;           /* the walker waits: a change of an earlier batch may yet be
                            skipped (see sl_expect_change_unsettled) */
    bool unnamed_drops;  /* the unnamed statement runs DEALLOCATE ALL or DISCARD ALL */
    bool portal_drops;   /* the portal drop_portal does: its Execute is a barrier */
    char drop_portal[64]; /* that portal's name ("": the unnamed one); a longer name
                             is not tracked */
    struct sl_ps *next_free; /* on the loop's free list */
} sl_ps_t;

/* The type byte the analysis gives a Parse refused under
 * pin_session_state = error, for the walker to answer (no client sends it:
 * a message of type 0 is refused as PostgreSQL refuses it). */
#define SL_MSG_REFUSED 0
/* The type byte of a Query that is SQL DEALLOCATE of one name: sluice
 * answers it when the name is one of the client's protocol-level
 * statements once the messages before it are walked (the server knows the
 * statement under another name), else it goes on as the Query it is. Type
 * 1 is no frontend message either. */
#define SL_MSG_DEALLOCATE 1

/* The statement name of a Query that is exactly `DEALLOCATE [PREPARE] name`
 * (one statement; an unquoted name folded to lower case) into buf. */
bool sl_ps_deallocate_name(const char *sql, char *buf, size_t cap);

/* Whether c's link to a server goes through this mode: transaction or
 * statement pooling with max_prepared_statements above 0. */
bool sl_ps_wanted(const sl_client_t *c);
/* Sets up the in-flight state for a new link; false when out of memory. */
bool sl_ps_link(sl_client_t *c, sl_server_t *s) SL_MUST_USE;
/* Forwards walked client bytes; false if c was closed. */
bool sl_ps_flush_c2s(sl_client_t *c);
/* A client without a server (between transactions): Parse of a statement a
 * server already accepted, Close of a statement, Flush and the Sync ending
 * them are answered by sluice from the head of c->in, taking no server (a
 * driver that prepares synchronously must not wait for one). A Parse of a
 * new statement is answered too when nothing up to its Sync needs a server
 * and libpg_query reads its text as the server would: a syntax error as
 * PostgreSQL reports it (42601), other errors (an unknown table) by the
 * server at the first Bind or Describe. False if c was closed. */
bool sl_ps_answer_unlinked(sl_client_t *c);
/* Relays buffered server bytes into c->out as far as room allows; false if
 * c was closed. */
bool sl_ps_pump(sl_client_t *c, sl_server_t *s);
/* True when the pump has server bytes it could relay now (there is room
 * in c->out): the client's poll then asks for writability to resume it. */
bool sl_ps_can_pump(const sl_client_t *c);
/* True when nothing is in flight either way. */
bool sl_ps_idle(const sl_client_t *c);
/* Drops the in-flight state (the link ended) and the buffers it held; the
 * state goes to a small per-worker free list (one per transaction would
 * otherwise cost an allocation each). */
void sl_ps_unlink(sl_client_t *c);
/* Frees the loop's free list. */
void sl_ps_free_all(sl_loop_t *w);

#endif
