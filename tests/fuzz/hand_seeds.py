#!/usr/bin/python3
"""Seeds for the shapes recorded traffic rarely shows (tests/fuzz/
make_corpus.sh runs it after split_corpus.py): SSLRequest and
CancelRequest packets, protocol 3.2 with options, an ErrorResponse without
SQLSTATE, ParameterStatus without its NUL, RowDescription with an absurd
column count, md5 for an unknown user, SCRAM messages of both sides,
hba and config edge cases, console commands for both user kinds, HTTP
heads, and relay scripts per pool mode (COPY, errors, a cancel, a
client's own startup packet). Written as CORPUSDIR/<target>/hand-<name>,
in each fuzz_<target>.c's input format.

  hand_seeds.py CORPUSDIR"""
import glob
import os
import struct
import sys


def startup(params, ver=196608):
    body = struct.pack("!I", ver) + b"".join(k + b"\0" + v + b"\0" for k, v in params) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def msg(t, b):
    return t + struct.pack("!I", len(b) + 4) + b


def auth(code, data=b""):
    return msg(b"R", struct.pack("!I", code) + data)


# relay operations (fuzz_relay.c)
def q(s):
    return bytes([2, len(s)]) + s


def ext(how, sql):
    return bytes([3, 0, how, len(sql)]) + sql


def raw(b):
    return bytes([0, len(b)]) + b


VERIFIER = (b"SCRAM-SHA-256$4096:c2x1aWNlLWZ1enotc2FsdA==$dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
            b":6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
MD5 = b"md5a3556571e93b0d20722ba62be61e8c2d"
ROWDESC_ABSURD = msg(b"T", b"\xff\xff" + b"a\0" + b"\0" * 18)

SEEDS = {
    "startup": {
        "ssl": struct.pack("!II", 8, 80877103),
        "gssenc": struct.pack("!II", 8, 80877104),
        "cancel": struct.pack("!IIII", 16, 80877102, 1, 2),
        "basic": startup([(b"user", b"alice"), (b"database", b"app"), (b"application_name", b"psql")]),
        "options": startup([(b"user", b"alice"),
                            (b"options", b"-c search_path=a\\ b --work-mem=4MB -cstatement_timeout=5")]),
        "proto32": startup([(b"user", b"a"), (b"_pq_.foo", b"1")], 196610),
    },
    "client_scan": {
        "simple": b"\x00\x00" + msg(b"Q", b"SELECT 1\0") + msg(b"X", b""),
        "ext": b"\x07\x01" + msg(b"P", b"s1\0SELECT $1\0\0\0") + msg(b"B", b"\0s1\0\0\0\0\0\0\0")
        + msg(b"E", b"\0\0\0\0\0") + msg(b"S", b""),
        "sasl": b"\x03\x00" + msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", 32)
                                   + b"n,,n=,r=rOprNGfwEbeRWgbNEkqO1234"),
        "shortlen": b"\x00\x00" + b"Q\x00\x00\x00\x03",
    },
    "backend": {
        "md5": b"\x01\x04\x0c\x09\x0a\x0e" + auth(5, b"abcd") + auth(0)
        + msg(b"S", b"client_encoding\0UTF8\0") + msg(b"K", b"\0\0\0\x01\0\0\0\x02")
        + msg(b"Z", b"I") + msg(b"1", b"") + msg(b"2", b"") + ROWDESC_ABSURD
        + msg(b"C", b"SELECT 1\0") + msg(b"Z", b"I"),
        "sasl-error": b"\x02\x02\x01\x06" + auth(10, b"SCRAM-SHA-256\0\0")
        + msg(b"E", b"SFATAL\0Mpassword authentication failed\0\0"),
        "nosqlstate": b"\x00\x00" + msg(b"E", b"SERROR\0Mno code\0\0"),
        "param-no-nul": b"\x00\x03\x00\x2b\x06" + auth(3) + auth(0) + msg(b"Z", b"I")
        + msg(b"E", b"SERROR\0C42601\0Msyntax\0\0") + msg(b"S", b"TimeZone\0UTC") + msg(b"Z", b"I"),
    },
    "scram": {
        "server": b"\x00\x00\x20n,,n=,r=rOprNGfwEbeRWgbNEkqO1234c=biws,r=rOprNGfwEbeRWgbNEkqO1234"
        b"c2x1aWNlLWZ1enotbm9uY2U,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "client": b"\x01\x00\x3ar=Y2xpZW50LW5vbmNlc2VydmVy,s=c2x1aWNlLWZ1enotc2FsdA==,i=4096"
        b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
        "secret": b"\x02" + VERIFIER,
        "base64": b"\x03\x40c2x1aWNl",
    },
    "md5": {
        "md5": b"\x03alice\0" + MD5 + b"\0" + MD5 + b"\0",
        "plain": b"\x00alice\0secret\0secret\0",
        "unknown": b"\x01bob\0x\0" + MD5 + b"\0",
    },
    "userlist": {
        "basic": b'"alice" "secret"\n"bob" "' + MD5 + b'"\n; comment\n"c""q" "' + VERIFIER + b'"\n',
    },
    "hba": {
        "basic": b"\x05app alice\n# comment\nlocal   all        all                     trust\n"
        b"hostssl app        alice  10.0.0.0/8       cert\n"
        b"hostnossl all      bob    10.1.2.3 255.255.255.255 md5   # x\n"
        b'host    "app",ops  all    192.168.0.0/16   scram-sha-256\n'
        b"host    all        carol  ::1/128          password\n"
        b"host    all        all    0.0.0.0/0        reject\n",
    },
    "ini": {
        "small": b"[databases]\napp = host=127.0.0.1 port=5432 dbname=app pool_size=5\n"
        b"ro = host=a replicas=b:5433:2,c:5434 routing=auto\n* = host=127.0.0.1\n"
        b"[users]\nalice = pool_mode=session query_timeout=5\n[sluice]\nlisten_port = 6432\n"
        b"pool_mode = transaction\nauth_type = md5\nauth_file = /dev/null\n",
    },
    "ini_value": {
        "pool_size": b"default_pool_size=10", "mode": b"pool_mode=transaction",
        "fraction": b"query_timeout=1.5", "negative": b"server_lifetime=-1",
        "bool": b"server_reset_query_always=on", "huge": b"max_packet_size=99999999999",
        "protocols": b"client_tls_protocols=TLSv1.2", "balance": b"load_balance=latency",
    },
    "sql": {
        "select": b"SELECT 1", "param": b"select * from t where a = $1", "begin": b"BEGIN",
        "begin-ro": b"BEGIN READ ONLY", "set": b"SET search_path = a", "reset": b"RESET ALL",
        "listen": b"LISTEN x", "nextval": b"SELECT nextval('s')",
        "hint": b"/* sluice:replica */ SELECT 1", "prepare": b"PREPARE p AS SELECT 1",
        "cte-write": b"WITH a AS (DELETE FROM t RETURNING *) SELECT * FROM a",
        "advisory": b"SELECT pg_advisory_lock(1)", "temp": b"create temp table t(a int)",
    },
    "http": {
        "get": b"GET /metrics HTTP/1.1\r\nHost: localhost:9127\r\nAccept: */*\r\n\r\n",
        "head": b"HEAD /metrics?x=1 HTTP/1.0\n\n",
    },
    "console": {
        "pools": b"\x00SHOW POOLS", "help": b"\x01SHOW HELP", "two": b"\x00show clients; show servers",
        "config": b"\x01SHOW CONFIG", "reload": b"\x00RELOAD", "set": b"\x00SET verbose = 1",
        "kill-client": b"\x00KILL_CLIENT 3", "quoted": b"\x01SHOW DATABASES;SHOW 'x;y'",
        "fds": b"\x00SHOW FDS",
    },
    "relay": {
        "session-simple": b"\x00\x00\x00" + q(b"SELECT 1") + q(b"BEGIN") + q(b"SELECT 1")
        + q(b"COMMIT") + b"\x07\x00",
        "tx-simple": b"\x01\x00\x02\x00\x05" + q(b"BEGIN") + q(b"SELECT 1") + q(b"COMMIT")
        + q(b"SELECT 1") + q(b"SET x = 1") + b"\x06\x00",
        "tx-ext-prepared": b"\x05\x00\x00" + ext(0x0D, b"SELECT 1") + ext(0x0C, b"SELECT 1")
        + ext(0x41, b"SELECT 2") + q(b"DEALLOCATE ALL"),
        "stmt-copy": b"\x02\x00\x00" + q(b"COPY t FROM STDIN") + bytes([5, 4]) + b"1\t2\n"
        + q(b"COPY t TO STDOUT"),
        "tx-error": b"\x01\x00\x03\x01\x00\x03" + q(b"BEGIN") + q(b"SELECT x") + q(b"ROLLBACK")
        + ext(0x01, b"SELECT 1"),
        "cancel": b"\x01\x00\x00" + q(b"BEGIN") + q(b"SELECT pg_sleep(1)") + b"\x07\x01" + q(b"COMMIT"),
        "own-startup-options": b"\x09\x00\x00" + raw(struct.pack("!II", 8, 80877103))
        + raw(startup([(b"user", b"fuzz"), (b"database", b"app"),
                       (b"options", b"-c search_path=a --work-mem=4MB")]))
        + q(b"SELECT 1") + q(b"SHOW work_mem"),
        "own-startup-cancel": b"\x08\x00\x00" + raw(struct.pack("!IIII", 16, 80877102, 1, 0x5EED)),
        "own-startup-32": b"\x0a\x00\x00"
        + raw(startup([(b"user", b"fuzz"), (b"database", b"app"), (b"_pq_.x", b"1")], 196610))
        + q(b"BEGIN") + q(b"SELECT 1"),
    },
}


def main():
    out = sys.argv[1]
    for target, seeds in SEEDS.items():
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        for old in glob.glob(os.path.join(d, "hand-*")):
            os.remove(old)
        for name, data in seeds.items():
            with open(os.path.join(d, "hand-" + name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
