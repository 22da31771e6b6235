/* Fuzz target: the relay state machine, per pool mode. A whole worker runs
 * in this process (sl_worker_init, as main.c starts it, with its listener
 * on a Unix socket of a private directory), a client is handed to it over
 * a socketpair as the listener would, and its backend is a scripted fake
 * PostgreSQL on the same loop: a Unix socket libpq connects to, which
 * logs in with trust and answers each request as PostgreSQL would
 * (ParseComplete, RowDescription, CommandComplete, ReadyForQuery with the
 * transaction status, COPY in and out, errors that skip to the next Sync),
 * with a script of the input choosing errors, notices, parameter changes
 * and transaction states, and raw garbage when the input says so.
 *
 * Input: byte 0 picks the pool mode (session, transaction, statement),
 * whether prepared-statement tracking is on and whether the client's
 * startup packet is the usual one or comes from the input; two bytes give the length of
 * the server's script, then the script, then the client's operations (raw
 * bytes, framed messages, queries, extended-protocol batches, COPY data,
 * garbage from the server, waits, a cancel from a second connection). At the end the client leaves
 * and the worker shuts down as SHUTDOWN does, freeing everything (LeakSanitizer checks). Checks
 * beyond the sanitizers': what reaches the client is whole messages of backend types, with sane
 * lengths, and the worker's client count goes back to zero. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "fuzz.h"
#include "sluice/config.h"
#include "sluice/log.h"
#include "sluice/proto.h"
#include "sluice/session.h"
#include "sluice/worker.h"

/* ---- the fake backend ---- */

typedef struct fb_conn {
    uv_pipe_t h;          /* accepted from the fake's listener */
    uint8_t in[65536];    /* bytes read, not yet handled */
    size_t n;             /* bytes in in[] */
    bool started;         /* the startup packet was answered */
    bool skipping;        /* an error in an extended batch: skip to Sync */
    bool copy_in;         /* COPY FROM STDIN in progress */
    char tx;              /* 'I', 'T' or 'E' */
    struct fb_conn *next; /* on fake.conns */
    bool closing;
} fb_conn_t;

static struct {
    uv_pipe_t listener;
    fb_conn_t *conns;      /* open connections, newest first */
    const uint8_t *script; /* borrowed: one byte per reply decides it */
    size_t script_n;
    uint32_t pid; /* BackendKeyData of the next connection */
} fake;

static char dir[64];

static uint8_t script_byte(void) {
    if (!fake.script_n) return 0;
    fake.script_n--;
    return *fake.script++;
}

typedef struct wreq {
    uv_write_t req;
    uint8_t data[];
} wreq_t;

static void written(uv_write_t *req, int status) {
    (void)status;
    free(req);
}

static void fb_send(fb_conn_t *c, const void *p, size_t n) {
    if (c->closing || !n) return;
    wreq_t *w = malloc(sizeof *w + n);
    if (!w) abort();
    memcpy(w->data, p, n);
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)n);
    if (uv_write(&w->req, (uv_stream_t *)&c->h, &b, 1, written) != 0) free(w);
}

static void fb_msg(fb_conn_t *c, char type, const void *body, size_t n) {
    uint8_t hdr[5] = {(uint8_t)type};
    sl_put_be32(hdr + 1, (uint32_t)(n + 4));
    fb_send(c, hdr, 5);
    fb_send(c, body, n);
}

static void fb_str(fb_conn_t *c, char type, const char *s) {
    fb_msg(c, type, s, strlen(s) + 1);
}

static void fb_error(fb_conn_t *c, bool with_code) {
    static const char with[] = "SERROR\0VERROR\0C42P01\0Mrelation \"t\" does not exist\0";
    static const char without[] = "SERROR\0Mno SQLSTATE here\0";
    if (with_code)
        fb_msg(c, 'E', with, sizeof with);
    else
        fb_msg(c, 'E', without, sizeof without);
}

static void fb_ready(fb_conn_t *c) {
    fb_msg(c, 'Z', &c->tx, 1);
}

static void fb_close(fb_conn_t *c);

static void fb_login(fb_conn_t *c, const uint8_t *pkt, uint32_t len) {
    uint32_t code = len >= 8 ? sl_be32(pkt + 4) : 0;
    if (code == SL_PROTO_SSL || code == SL_PROTO_GSSENC) {
        fb_send(c, "N", 1);
        return;
    }
    if (code != SL_PROTO_V3) {
        fb_close(c);
        return;
    }
    c->started = true;
    c->tx = 'I';
    uint8_t ok[4] = {0};
    fb_msg(c, 'R', ok, 4);
    static const char *const params[][2] = {{"server_version", "15.8"},
                                            {"server_encoding", "UTF8"},
                                            {"client_encoding", "UTF8"},
                                            {"DateStyle", "ISO, MDY"},
                                            {"TimeZone", "UTC"},
                                            {"integer_datetimes", "on"},
                                            {"standard_conforming_strings", "on"},
                                            {"application_name", ""}};
    for (size_t i = 0; i < sizeof params / sizeof *params; i++) {
        uint8_t b[128];
        size_t k = strlen(params[i][0]) + 1, v = strlen(params[i][1]) + 1;
        memcpy(b, params[i][0], k);
        memcpy(b + k, params[i][1], v);
        fb_msg(c, 'S', b, k + v);
    }
    uint8_t key[8];
    sl_put_be32(key, ++fake.pid);
    sl_put_be32(key + 4, 0x5eed);
    fb_msg(c, 'K', key, 8);
    fb_ready(c);
}

/* Extras a script byte may add before a reply: a notice, a parameter. */
static void fb_extras(fb_conn_t *c, uint8_t b) {
    if (b & 0x10) fb_str(c, 'N', "SNOTICE\0C00000\0Ma notice");
    if (b & 0x20) {
        static const char tz[] = "TimeZone\0Europe/Paris";
        fb_msg(c, 'S', tz, sizeof tz);
    }
}

static bool starts(const char *q, const char *word) {
    while (*q == ' ' || *q == '\n' || *q == '\t')
        q++;
    return !strncasecmp(q, word, strlen(word));
}

static void fb_query(fb_conn_t *c, const uint8_t *body, uint32_t n) {
    char q[256];
    size_t k = n < sizeof q - 1 ? n : sizeof q - 1;
    memcpy(q, body, k);
    q[k] = '\0';
    uint8_t b = script_byte();
    fb_extras(c, b);
    if (b & 1) {
        fb_error(c, !(b & 2));
        if (c->tx == 'T') c->tx = 'E';
    } else if (!q[0]) {
        fb_msg(c, 'I', NULL, 0);
    } else if (strcasestr(q, "from stdin")) {
        uint8_t g[3] = {0, 0, 0};
        fb_msg(c, 'G', g, 3);
        c->copy_in = true;
        return; /* ReadyForQuery after CopyDone or CopyFail */
    } else if (strcasestr(q, "to stdout")) {
        uint8_t h[3] = {0, 0, 0};
        fb_msg(c, 'H', h, 3);
        fb_msg(c, 'd', "1\n", 2);
        fb_msg(c, 'c', NULL, 0);
        fb_str(c, 'C', "COPY 1");
    } else {
        if (starts(q, "begin") || starts(q, "start")) c->tx = 'T';
        if (starts(q, "commit") || starts(q, "rollback") || starts(q, "end") || starts(q, "abort"))
            c->tx = 'I';
        if (b & 4) c->tx = 'T'; /* a transaction the text did not show (a function's) */
        if (starts(q, "select")) {
            static const uint8_t rd[] = {0, 1, 'a', 0,    0,    0,    0,    0,    0,    0, 0,
                                         0, 0, 25,  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0};
            static const uint8_t row[] = {0, 1, 0, 0, 0, 1, '1'};
            fb_msg(c, 'T', rd, sizeof rd);
            fb_msg(c, 'D', row, sizeof row);
            fb_str(c, 'C', "SELECT 1");
        } else {
            fb_str(c, 'C', "OK");
        }
    }
    fb_ready(c);
}

/* One message of the extended protocol (or COPY data). */
static void fb_extended(fb_conn_t *c, uint8_t t, const uint8_t *body, uint32_t n) {
    if (c->copy_in) {
        if (t == 'd') return;
        if (t == 'c') fb_str(c, 'C', "COPY 0");
        if (t == 'f') fb_error(c, true);
        if (t == 'c' || t == 'f') {
            c->copy_in = false;
            fb_ready(c);
        }
        return;
    }
    if (t == 'S') {
        c->skipping = false;
        if (c->tx == 'E' && (script_byte() & 8)) c->tx = 'I';
        fb_ready(c);
        return;
    }
    if (c->skipping || t == 'H') return;
    uint8_t b = script_byte();
    fb_extras(c, b);
    if (b & 1) {
        fb_error(c, !(b & 2));
        c->skipping = true;
        if (c->tx == 'T') c->tx = 'E';
        return;
    }
    static const uint8_t rd[] = {0, 1, 'a', 0,    0,    0,    0,    0,    0,    0, 0,
                                 0, 0, 25,  0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0};
    switch (t) {
    case 'P':
        fb_msg(c, '1', NULL, 0);
        break;
    case 'B':
        fb_msg(c, '2', NULL, 0);
        break;
    case 'C':
        fb_msg(c, '3', NULL, 0);
        break;
    case 'D':
        if (n && body[0] == 'S') {
            uint8_t none[2] = {0, 0};
            fb_msg(c, 't', none, 2);
        }
        if (b & 4)
            fb_msg(c, 'n', NULL, 0);
        else
            fb_msg(c, 'T', rd, sizeof rd);
        break;
    case 'E': {
        static const uint8_t row[] = {0, 1, 0, 0, 0, 1, '1'};
        if (b & 4) {
            fb_msg(c, 's', NULL, 0); /* portal suspended */
        } else {
            fb_msg(c, 'D', row, sizeof row);
            fb_str(c, 'C', "SELECT 1");
        }
        break;
    }
    case 'F': {
        uint8_t v[4] = {0, 0, 0, 0};
        fb_msg(c, 'V', v, 4);
        fb_ready(c);
        break;
    }
    default:
        fb_str(c, 'E', "SERROR\0C08P01\0Minvalid frontend message type");
        break;
    }
}

static void fb_handle(fb_conn_t *c) {
    size_t off = 0;
    while (!c->closing) {
        if (!c->started) {
            if (c->n - off < 4) break;
            uint32_t len = sl_be32(c->in + off);
            if (len < 8 || len > 10240) {
                fb_close(c);
                return;
            }
            if (c->n - off < len) break;
            fb_login(c, c->in + off, len);
            off += len;
            continue;
        }
        if (c->n - off < 5) break;
        uint8_t t = c->in[off];
        uint32_t len = sl_be32(c->in + off + 1);
        if (len < 4 || len > sizeof c->in - 1) {
            fb_close(c);
            return;
        }
        if (c->n - off < 1 + (size_t)len) break;
        const uint8_t *body = c->in + off + 5;
        if (t == 'X') {
            fb_close(c);
            return;
        }
        if (t == 'Q' && !c->copy_in)
            fb_query(c, body, len - 4);
        else
            fb_extended(c, t, body, len - 4);
        off += 1 + len;
    }
    if (c->closing) return;
    memmove(c->in, c->in + off, c->n - off);
    c->n -= off;
}

static void fb_alloc(uv_handle_t *h, size_t want, uv_buf_t *buf) {
    (void)want;
    fb_conn_t *c = h->data;
    *buf = uv_buf_init((char *)c->in + c->n, (unsigned)(sizeof c->in - c->n));
}

static void fb_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    (void)buf;
    fb_conn_t *c = s->data;
    if (nread < 0 || c->n + (size_t)(nread > 0 ? nread : 0) >= sizeof c->in) {
        fb_close(c);
        return;
    }
    c->n += (size_t)nread;
    fb_handle(c);
}

static void fb_closed(uv_handle_t *h) {
    free(h->data);
}

static void fb_close(fb_conn_t *c) {
    if (c->closing) return;
    c->closing = true;
    for (fb_conn_t **p = &fake.conns; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    uv_close((uv_handle_t *)&c->h, fb_closed);
}

static void fb_accept(uv_stream_t *l, int status) {
    if (status < 0) return;
    fb_conn_t *c = calloc(1, sizeof *c);
    if (!c) abort();
    uv_pipe_init(l->loop, &c->h, 0);
    c->h.data = c;
    if (uv_accept(l, (uv_stream_t *)&c->h) != 0) {
        uv_close((uv_handle_t *)&c->h, fb_closed);
        return;
    }
    c->next = fake.conns;
    fake.conns = c;
    uv_read_start((uv_stream_t *)&c->h, fb_alloc, fb_read);
}

static void fb_open(uv_loop_t *loop) {
    char path[128];
    snprintf(path, sizeof path, "%s/.s.PGSQL.5432", dir);
    unlink(path);
    uv_pipe_init(loop, &fake.listener, 0);
    if (uv_pipe_bind(&fake.listener, path) != 0 ||
        uv_listen((uv_stream_t *)&fake.listener, 16, fb_accept) != 0)
        abort();
    fake.conns = NULL;
}

static void fb_shut(void) {
    while (fake.conns)
        fb_close(fake.conns);
    uv_close((uv_handle_t *)&fake.listener, NULL);
}

/* ---- the client ---- */

typedef struct client {
    int fd;          /* our end of the socketpair; -1 once closed */
    uint8_t key[8];  /* the BackendKeyData sluice gave it (pid, secret) */
    uint8_t body[8]; /* the start of the message being read */
    bool garbage;    /* the client's stream is not checked: the fake backend sent raw
                        bytes, or the client sent its own first packets */
    sl_scan_t scan;  /* framing of what sluice sends it */
} client_t;

/* What a client may get from sluice. */
static bool backend_type(uint8_t t) {
    return t && strchr("RSKZTDCEINnst123GHWdcVAv", t);
}

static void client_drain(client_t *cl) {
    uint8_t buf[16384];
    for (;;) {
        ssize_t n = recv(cl->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) return;
        /* sluice passes a backend's messages on as they come: after the
         * fake sent garbage, what the client gets is garbage too. */
        if (cl->garbage) continue;
        for (size_t off = 0; off < (size_t)n;) {
            enum sl_scan_ev ev;
            off += sl_scan_feed(&cl->scan, buf + off, (size_t)n - off, &ev);
            FUZZ_CHECK(ev != SL_SCAN_ERROR);
            if (ev == SL_SCAN_START && getenv("FUZZ_RELAY_DEBUG"))
                fprintf(stderr, "client got '%c' (%u bytes)\n", cl->scan.type, cl->scan.len);
            if (ev == SL_SCAN_START) cl->scan.collect = cl->scan.type == 'K';
            if (ev == SL_SCAN_END && cl->scan.type == 'K' && sl_scan_complete(&cl->scan))
                memcpy(cl->key, cl->body, 8);
            if (ev == SL_SCAN_START) {
                if (!backend_type(cl->scan.type))
                    fprintf(stderr, "sluice sent a client message type %#x\n", cl->scan.type);
                FUZZ_CHECK(backend_type(cl->scan.type));
                FUZZ_CHECK(cl->scan.len < (64u << 20));
            }
        }
    }
}

static void client_send(client_t *cl, const void *p, size_t n) {
    if (cl->fd < 0) return;
    const uint8_t *b = p;
    while (n) {
        ssize_t k = send(cl->fd, b, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k < 0 && errno == EAGAIN) return; /* sluice stopped reading: drop the rest */
        if (k <= 0) return;
        b += k, n -= (size_t)k;
    }
}

static void client_msg(client_t *cl, char type, const void *body, size_t n) {
    uint8_t hdr[5] = {(uint8_t)type};
    sl_put_be32(hdr + 1, (uint32_t)(n + 4));
    client_send(cl, hdr, 5);
    client_send(cl, body, n);
}

static sl_worker_t wk;

/* Runs the loop until nothing moves for a few rounds. */
static void settle(client_t *cl, int rounds) {
    for (int i = 0; i < rounds; i++) {
        uv_run(wk.core.loop, UV_RUN_NOWAIT);
        if (cl) client_drain(cl);
    }
}

static void startup(client_t *cl) {
    static const char params[] = "user\0fuzz\0database\0app\0application_name\0fz\0";
    uint8_t pkt[128];
    size_t n = 8 + sizeof params;
    memcpy(pkt + 8, params, sizeof params); /* its own NUL ends the list */
    sl_put_be32(pkt, (uint32_t)n);
    sl_put_be32(pkt + 4, SL_PROTO_V3);
    client_send(cl, pkt, n);
}

/* A Parse, Bind, Describe and Execute of one statement, then Sync (or a
 * Flush, or nothing: the input decides). */
static void extended(client_t *cl, fuzz_in_t *in) {
    uint8_t how = fuzz_byte(in);
    size_t k = fuzz_byte(in) % 64;
    if (k > in->n) k = in->n;
    char name[8] = "";
    if (how & 1) snprintf(name, sizeof name, "s%u", how >> 5);
    uint8_t body[160];
    size_t o = 0;
    memcpy(body, name, strlen(name) + 1), o += strlen(name) + 1;
    memcpy(body + o, in->p, k), o += k;
    in->p += k, in->n -= k;
    body[o++] = 0;
    body[o++] = 0, body[o++] = 0; /* no parameter types */
    if (!(how & 2)) client_msg(cl, 'P', body, o);
    o = 0;
    body[o++] = 0; /* unnamed portal */
    memcpy(body + o, name, strlen(name) + 1), o += strlen(name) + 1;
    memset(body + o, 0, 6), o += 6; /* no formats, no parameters, no result formats */
    client_msg(cl, 'B', body, o);
    if (how & 4) client_msg(cl, 'D', "P", 2);
    if (how & 8) {
        uint8_t ds[10] = {'S'};
        memcpy(ds + 1, name, strlen(name) + 1);
        client_msg(cl, 'D', ds, 2 + strlen(name));
    }
    uint8_t ex[5] = {0, 0, 0, 0, (uint8_t)(how & 16 ? 1 : 0)};
    client_msg(cl, 'E', ex, 5);
    if (how & 0x40) {
        uint8_t cl_body[10] = {'S'};
        memcpy(cl_body + 1, name, strlen(name) + 1);
        client_msg(cl, 'C', cl_body, 2 + strlen(name));
    }
    if (!(how & 0x80))
        client_msg(cl, 'S', NULL, 0);
    else if (how & 0x20)
        client_msg(cl, 'H', NULL, 0);
}

/* A CancelRequest with key from a connection of its own, as psql's ^C. */
static void cancel(const uint8_t key[8]) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
    sl_session_accept(&wk.core, sv[0], "fuzz-cancel");
    uint8_t pkt[16];
    sl_put_be32(pkt, 16);
    sl_put_be32(pkt + 4, SL_PROTO_CANCEL);
    memcpy(pkt + 8, key, 8);
    if (send(sv[1], pkt, sizeof pkt, MSG_NOSIGNAL) != (ssize_t)sizeof pkt) abort();
    settle(NULL, 4);
    close(sv[1]);
}

static void run_ops(client_t *cl, fuzz_in_t *in) {
    while (in->n && cl->fd >= 0) {
        uint8_t op = fuzz_byte(in);
        size_t k = fuzz_byte(in);
        if (k > in->n) k = in->n;
        switch (op % 8) {
        case 0:
            client_send(cl, in->p, k);
            break; /* raw bytes */
        case 1:    /* one framed message */
            if (k) client_msg(cl, (char)in->p[0], in->p + 1, k - 1);
            break;
        case 2: { /* a simple Query */
            char q[260];
            memcpy(q, in->p, k);
            q[k] = '\0';
            client_msg(cl, 'Q', q, strlen(q) + 1);
            break;
        }
        case 3:
            k = 0;
            extended(cl, in);
            break;
        case 4: /* garbage from the server */
            if (fake.conns && k) {
                fb_send(fake.conns, in->p, k);
                cl->garbage = true;
            }
            break;
        case 5: /* COPY data, then CopyDone or CopyFail */
            client_msg(cl, 'd', in->p, k);
            client_msg(cl, k & 1 ? 'f' : 'c', k & 1 ? "no\0" : NULL, k & 1 ? 3 : 0);
            break;
        case 6:
            k = 0;
            settle(cl, 20);
            break;
        default:
            if (k & 1) { /* another connection cancels this client's query */
                cancel(cl->key);
            } else { /* the client leaves */
                close(cl->fd);
                cl->fd = -1;
            }
            k = 0;
            break;
        }
        in->p += k, in->n -= k;
        settle(cl->fd >= 0 ? cl : NULL, 4);
    }
}

/* The private directory goes when the process ends (the sockets in it are
 * unlinked by whoever bound them, sluice's when its listener closes). */
static void remove_dir(void) {
    char path[128];
    snprintf(path, sizeof path, "%s/.s.PGSQL.5432", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/.s.PGSQL.6433", dir);
    unlink(path);
    rmdir(dir);
}

static void setup_once(void) {
    static bool done;
    if (done) return;
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof dir, "/tmp/sluice-fuzz-relay-%d", (int)getpid());
    if (mkdir(dir, 0700) != 0) abort();
    atexit(remove_dir);
    done = true;
}

static sl_config_t *config(uint8_t how) {
    static const char *const modes[] = {"session", "transaction", "statement"};
    char text[1024], err[1024];
    snprintf(text, sizeof text,
             "[databases]\napp = host=%s port=5432 dbname=app\n"
             "[sluice]\nlisten_addr =\nlisten_port = 6433\nunix_socket_dir = %s\n"
             "auth_type = trust\npool_mode = %s\ndefault_pool_size = 2\n"
             "max_prepared_statements = %d\nserver_check_delay = 0\n",
             dir, dir, modes[how % 3], how & 4 ? 100 : 0);
    sl_config_t *cfg = sl_config_load_string("relay.ini", text, err, sizeof err);
    if (!cfg) {
        fprintf(stderr, "relay.ini: %s\n", err);
        abort();
    }
    return cfg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup_once();
    fuzz_in_t in = {data, size};
    uint8_t how = fuzz_byte(&in);
    size_t sn = (size_t)fuzz_byte(&in) << 8;
    sn |= fuzz_byte(&in);
    if (sn > in.n) sn = in.n;
    fake.script = in.p, fake.script_n = sn;
    in.p += sn, in.n -= sn;

    char err[512];
    /* One worker on its own: no group, its own Unix socket, no ledger. */
    const sl_worker_place_t place = {.count = 1, .unix_fd = -1};
    if (sl_worker_init(&wk, config(how), &place, err, sizeof err) != SL_OK) {
        fprintf(stderr, "worker: %s\n", err);
        abort();
    }
    /* FUZZ_RELAY_DEBUG=1 shows what sluice does with an input. */
    sl_log_set_level(getenv("FUZZ_RELAY_DEBUG") ? SL_LOG_DEBUG : SL_LOG_ERROR);
    fb_open(wk.core.loop);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) abort();
    client_t cl = {.fd = sv[1]};
    cl.scan.coll = cl.body;
    cl.scan.coll_cap = sizeof cl.body;
    sl_session_accept(&wk.core, sv[0], "fuzz");
    /* Else the input's first raw bytes are the first packets (SSLRequest,
     * CancelRequest, a StartupMessage of its own): client.c's login. */
    if (!(how & 8))
        startup(&cl);
    else
        cl.garbage = true; /* an SSLRequest's answer is one unframed byte */
    settle(&cl, 8);
    run_ops(&cl, &in);
    if (cl.fd >= 0) close(cl.fd);
    settle(NULL, 8);
    FUZZ_CHECK(wk.core.nclients == 0);
    sl_worker_shutdown(&wk, SL_SHUTDOWN_FAST);
    fb_shut();
    sl_worker_run(&wk); /* closes and frees everything, the config too */
    return 0;
}
