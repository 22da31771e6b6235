#!/usr/bin/python3
"""The admin console as prometheus-community/pgbouncer_exporter reads it.

Every column its collector.go (HEAD 6918f4e) maps is checked, column by
column, through psycopg2: present under PgBouncer's name, of a type the
exporter can convert (numbers, or NULL), and with PgBouncer's meaning,
shown by counters that move as much as known traffic should move them
(100 transactions: xact_count + 100, ...). Starts its own sluice on a free
port against the fixture's cluster (SLUICE_BIN, SLUICE_CLUSTER_ENV).
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from decimal import Decimal

import psycopg2
from sluicepy import log_path

# collector.go's metricMaps: namespace -> columns it reads (labels first).
# "databases" takes reserve_pool or reserve_pool_size; stats_totals'
# "requests" is the pre-1.8 name of query_count, absent from PgBouncer
# 1.25 too: the exporter skips a column it does not find.
EXPORTER = {
    "DATABASES": {
        "labels": ["name", "host", "port", "database", "force_user", "pool_mode"],
        "values": ["pool_size", "reserve_pool_size", "max_connections",
                   "current_connections", "paused", "disabled"],
    },
    "STATS_TOTALS": {
        "labels": ["database"],
        "values": ["query_count", "query_time", "bytes_received", "bytes_sent",
                   "wait_time", "xact_count", "xact_time", "client_parse_count",
                   "server_parse_count", "bind_count", "server_assignment_count"],
    },
    "POOLS": {
        "labels": ["database", "user"],
        "values": ["cl_active", "cl_active_cancel_req", "cl_waiting",
                   "cl_waiting_cancel_req", "sv_active", "sv_active_cancel",
                   "sv_being_canceled", "sv_idle", "sv_used", "sv_tested", "sv_login",
                   "maxwait"],
    },
}
LISTS = ["databases", "users", "pools", "free_clients", "used_clients", "login_clients",
         "free_servers", "used_servers", "dns_names", "dns_zones", "dns_queries"]
CONFIG = ["max_client_conn", "max_user_connections"]

failures = []


def test_workers(opts):
    """workers = SLUICE_TEST_WORKERS unless opts sets it, else no line
    (sluice's default, one per online CPU), as the C harness does
    (harness.c test_workers)."""
    n = os.environ.get('SLUICE_TEST_WORKERS')
    if not n or re.search(r"^\s*workers\s*=", opts, re.M):
        return ""
    return f"workers = {n}\n"


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, file=sys.stderr)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster():
    env = {}
    with open(os.environ["SLUICE_CLUSTER_ENV"]) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            env[k] = v
    return env


class Sluice:
    def __init__(self, opts):
        cl = cluster()
        self.dir = tempfile.mkdtemp(prefix="sluice-py-")
        os.chmod(self.dir, 0o755)
        self.port = free_port()
        self.log = log_path(self.dir)
        users = os.path.join(self.dir, "userlist.txt")
        with open(users, "w") as f:
            f.write('"sl_scram" "scram_pw"\n"sl_md5" "md5_pw"\n"postgres" "unused"\n')
        self.ini = os.path.join(self.dir, "sluice.ini")
        with open(self.ini, "w") as f:
            f.write(f"[databases]\nsluice_test = host=127.0.0.1 port={cl['PRIMARY_PORT']}\n"
                    f"[sluice]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\n"
                    f"unix_socket_dir = {self.dir}\nlogfile = {self.log}\n"
                    f"auth_type = scram-sha-256\nauth_file = {users}\n"
                    f"{test_workers(opts)}{opts}")
        self.proc = subprocess.Popen([os.environ["SLUICE_BIN"], self.ini])
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.02)
        self.stop()
        sys.exit("sluice did not start: " + open(self.log).read()[-2000:])

    def connect(self, user, password, db, **kw):
        c = psycopg2.connect(host="127.0.0.1", port=self.port, user=user, password=password,
                             dbname=db, **kw)
        c.autocommit = True
        return c

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if failures and os.path.exists(self.log):
            print("---- sluice log ----\n" + open(self.log).read()[-4000:], file=sys.stderr)
        shutil.rmtree(self.dir, ignore_errors=True)


def show(cur, what):
    """Rows of SHOW what as dicts, and its column names in order."""
    cur.execute(f"SHOW {what};")  # the exporter's own spelling, with the ';'
    names = [d.name for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()], names


def number(v):
    """What the exporter's dbToFloat64 accepts: integers, floats, numeric
    (sent as text it parses), or NULL."""
    return v is None or isinstance(v, (int, float, Decimal))


def one(rows, **match):
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    check(len(found) == 1, f"exactly one row with {match} (got {len(found)})")
    return found[0] if found else {}


def columns(cur):
    for ns, want in EXPORTER.items():
        rows, names = show(cur, ns)
        for c in want["labels"] + want["values"]:
            check(c in names, f"SHOW {ns} has column {c}")
        check(len(names) == len(set(names)), f"SHOW {ns} has no duplicate column")
        for r in rows:
            for c in want["values"]:
                check(number(r.get(c)), f"SHOW {ns}.{c} is a number ({r.get(c)!r})")
            for c in want["labels"]:
                v = r.get(c)
                check(v is None or isinstance(v, (str, int)), f"SHOW {ns}.{c} is a label")
        # Prometheus refuses two series with the same labels.
        keys = [tuple(r.get(c) for c in want["labels"]) for r in rows]
        check(len(keys) == len(set(keys)), f"SHOW {ns} rows have distinct labels")
    rows, names = show(cur, "LISTS")
    check(names == ["list", "items"], f"SHOW LISTS columns {names}")
    have = {r["list"]: r["items"] for r in rows}
    for item in LISTS:
        check(item in have and number(have[item]), f"SHOW LISTS has {item}")
    rows, names = show(cur, "CONFIG")
    check(len(names) in (3, 4) and names[0] == "key", f"SHOW CONFIG columns {names}")
    cfg = {r["key"]: r["value"] for r in rows}
    for k in CONFIG:
        check(k in cfg, f"SHOW CONFIG has {k}")
        try:
            float(cfg.get(k))
        except (TypeError, ValueError):
            check(False, f"SHOW CONFIG {k} parses as a number ({cfg.get(k)!r})")
    check(cfg.get("max_client_conn") == "77", "max_client_conn is the configured 77")
    check(cfg.get("max_user_connections") == "0", "max_user_connections is its default 0")
    rows, names = show(cur, "VERSION")
    check(names == ["version"] and len(rows) == 1, "SHOW VERSION is one column named version")
    show(cur, "STATS")  # the exporter's ping


def totals(cur):
    rows, _ = show(cur, "STATS_TOTALS")
    return one(rows, database="sluice_test")


def counters(s, adm):
    app = s.connect("sl_scram", "scram_pw", "sluice_test", application_name="exporter-test")
    cur = app.cursor()
    cur.execute("SELECT 1")  # the pool exists from here on
    before = totals(adm)
    for _ in range(100):
        cur.execute("SELECT 1")
        cur.fetchall()
    after = totals(adm)
    d = {k: after[k] - before[k] for k in before if k != "database"}
    check(d["xact_count"] == 100, f"100 transactions: xact_count + {d['xact_count']}")
    check(d["query_count"] == 100, f"100 queries: query_count + {d['query_count']}")
    check(d["server_assignment_count"] == 100,
          f"transaction pooling: a server per transaction (+{d['server_assignment_count']})")
    # Each Query is 'Q', a length and "SELECT 1\0": 14 bytes from the client.
    check(d["bytes_received"] == 100 * 14, f"bytes_received + {d['bytes_received']} (1400)")
    # Each answer: RowDescription, DataRow, CommandComplete, ReadyForQuery.
    check(d["bytes_sent"] >= 100 * 50, f"bytes_sent + {d['bytes_sent']}")
    check(d["query_time"] > 0 and d["xact_time"] * 10 >= d["query_time"] * 9,
          f"query_time + {d['query_time']} us, xact_time + {d['xact_time']} us")
    check(d["client_parse_count"] == 0 and d["bind_count"] == 0,
          "the simple protocol parses and binds nothing")
    check(d["wait_time"] >= 0, "wait_time never goes back")

    # A transaction of three queries is one transaction, three queries.
    before = totals(adm)
    cur.execute("BEGIN")
    cur.execute("SELECT 1")
    cur.execute("COMMIT")
    after = totals(adm)
    check(after["xact_count"] - before["xact_count"] == 1, "BEGIN..COMMIT is one transaction")
    check(after["query_count"] - before["query_count"] == 3, "of three queries")

    rows, _ = show(adm, "CLIENTS")
    mine = [r for r in rows if r["application_name"] == "exporter-test"]
    check(len(mine) == 1 and mine[0]["database"] == "sluice_test" and
          mine[0]["user"] == "sl_scram" and mine[0]["state"] == "idle",
          f"SHOW CLIENTS lists the client by database, user, state: {mine}")
    app.close()


def pools(s, adm):
    holder = s.connect("sl_scram", "scram_pw", "sluice_test")
    holder.autocommit = False
    hc = holder.cursor()
    hc.execute("SELECT 1")  # a transaction holds the only server
    waiter = s.connect("sl_scram", "scram_pw", "sluice_test")
    done = threading.Event()

    def wait_for_server():
        c = waiter.cursor()
        c.execute("SELECT 2")
        c.fetchall()
        done.set()

    t = threading.Thread(target=wait_for_server)
    t.start()
    deadline = time.time() + 10
    row = {}
    while time.time() < deadline:
        rows, _ = show(adm, "POOLS")
        row = one(rows, database="sluice_test", user="sl_scram")
        if row.get("cl_waiting") == 1:
            break
        time.sleep(0.05)
    check(row.get("cl_waiting") == 1, f"one client waits: {row}")
    check(row.get("cl_active") == 1 and row.get("sv_active") == 1,
          f"the holder and its server are active: {row}")
    check(row.get("sv_idle") == 0 and row.get("sv_login") == 0, "no other server")
    time.sleep(1.1)
    rows, _ = show(adm, "POOLS")
    row = one(rows, database="sluice_test", user="sl_scram")
    check(row.get("maxwait", 0) >= 1, f"maxwait counts seconds waited: {row.get('maxwait')}")
    rows, _ = show(adm, "DATABASES")
    db = one(rows, name="sluice_test")
    check(db.get("pool_size") == 1 and db.get("current_connections") == 1,
          f"SHOW DATABASES: pool_size 1, one connection: {db}")
    check(db.get("paused") == 0 and db.get("disabled") == 0, "not paused nor disabled")
    check(db.get("host") == "127.0.0.1" and db.get("port") == int(cluster()["PRIMARY_PORT"]),
          "host and port of the entry")
    holder.commit()
    t.join(10)
    check(done.is_set(), "the waiter got the server after the commit")
    after = totals(adm)
    check(after["wait_time"] >= 1_000_000, f"wait_time counts the second waited "
                                           f"({after['wait_time']} us)")
    holder.close()
    waiter.close()


def main():
    s = Sluice("pool_mode = transaction\ndefault_pool_size = 1\nmax_client_conn = 77\n"
               "admin_users = sl_scram\nstats_users = sl_md5\n"
               "ignore_startup_parameters = extra_float_digits\n")
    try:
        # The exporter's user would be a stats user.
        adm = s.connect("sl_md5", "md5_pw", "pgbouncer").cursor()
        counters(s, adm)
        pools(s, adm)
        columns(adm)
    finally:
        s.stop()
    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        return 1
    print("console_exporter: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
