#!/usr/bin/python3
"""/metrics after known traffic, parsed by the Prometheus client library's
own text parser: counters equal the transactions, queries, errors and
logins the test made; client, server and waiting gauges equal the states
it put them in; histograms are cumulative and agree with their counters;
and the counters equal the admin console's SHOW STATS_TOTALS."""
import os
import socket
import sys
import threading
import time

import psycopg2

sys.stdout.reconfigure(line_buffering=True)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicepy import Sluice, cluster, fail, total, value  # noqa: E402

N = 25     # good single-statement transactions
ERRS = 3   # failing ones (division by zero, class 22)
DB = "sluice_test"


def check(cond, msg, sl):
    if not cond:
        fail(msg, sl)


def known_counters(sl):
    c = psycopg2.connect(sl.dsn())
    c.autocommit = True
    cur = c.cursor()
    for i in range(N):
        cur.execute(f"SELECT {i}")
        check(cur.fetchone()[0] == i, "wrong answer", sl)
    for _ in range(ERRS):
        try:
            cur.execute("SELECT 1/0")
            fail("1/0 did not fail", sl)
        except psycopg2.errors.DivisionByZero:
            pass
    c.close()
    s, fams = sl.scrape()
    # the parser read it all; names and types as promised
    types = {f.name: f.type for f in fams}
    check(types.get("sluice_transactions") == "counter", f"transactions type: {types}", sl)
    check(types.get("sluice_query_duration_seconds") == "histogram", "histogram type", sl)
    check(types.get("sluice_clients") == "gauge", "clients type", sl)
    info = [(dict(l), v) for (n, l), v in s.items() if n == "sluice_info"]
    check(len(info) == 1 and info[0][1] == 1 and info[0][0].get("version"), f"info {info}", sl)
    xacts = total(s, "sluice_transactions_total", database=DB)
    queries = total(s, "sluice_queries_total", database=DB)
    check(xacts == N + ERRS, f"transactions {xacts}, made {N + ERRS}", sl)
    check(queries == N + ERRS, f"queries {queries}, made {N + ERRS}", sl)
    check(value(s, "sluice_errors_total", **{"class": "22"}) == ERRS,
          f"errors of class 22: {value(s, 'sluice_errors_total', **{'class': '22'})}", sl)
    check(total(s, "sluice_client_logins_total", database=DB) == 1, "logins", sl)
    sent = sum(len(f"SELECT {i}") + 6 for i in range(N)) + ERRS * (len("SELECT 1/0") + 6)
    check(total(s, "sluice_received_bytes_total", database=DB) >= sent,
          f"received bytes {total(s, 'sluice_received_bytes_total', database=DB)} < {sent}", sl)
    check(total(s, "sluice_sent_bytes_total", database=DB) > 0, "sent bytes", sl)
    # the histogram: cumulative, +Inf = count = queries, sum = the time counter
    h = "sluice_query_duration_seconds"
    buckets = sorted((float(dict(l)["le"]), v) for (n, l), v in s.items()
                     if n == h + "_bucket" and dict(l)["database"] == DB)
    check(len(buckets) == 17 and buckets[0][0] == 0.0001 and buckets[-2][0] == 10.0,
          f"buckets: {buckets}", sl)
    check(all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), f"not cumulative {buckets}",
          sl)
    count = value(s, h + "_count", database=DB)
    check(buckets[-1][1] == count == N + ERRS, f"+Inf {buckets[-1][1]}, count {count}", sl)
    qtime = total(s, "sluice_query_time_seconds_total", database=DB)
    check(abs(value(s, h + "_sum", database=DB) - qtime) < 1e-5 and qtime > 0,
          f"histogram sum {value(s, h + '_sum', database=DB)} vs query time {qtime}", sl)
    print(f"ok: {N + ERRS} transactions and queries, {ERRS} errors of class 22, 1 login, "
          f"histogram count and sum agree (query time {qtime:.6f} s)")
    return s


def known_gauges(sl):
    """Two clients hold the pool's two servers inside transactions, a third
    waits for one, a fourth is idle."""
    holders = [psycopg2.connect(sl.dsn()) for _ in range(2)]
    idle = psycopg2.connect(sl.dsn())
    waiter = psycopg2.connect(sl.dsn())
    waiter.autocommit = True
    for h in holders:
        h.cursor().execute("SELECT 1")  # psycopg2 opens a transaction: BEGIN; SELECT 1
    done = []

    def wait_for_server():
        cur = waiter.cursor()
        cur.execute("SELECT 7")
        done.append(cur.fetchone()[0])

    t = threading.Thread(target=wait_for_server)
    t.start()
    deadline = time.time() + 10
    while True:
        s, _ = sl.scrape()
        if value(s, "sluice_clients", state="waiting") == 1 or time.time() > deadline:
            break
        time.sleep(0.05)
    got = {st: value(s, "sluice_clients", state=st) for st in ("idle", "active", "waiting")}
    check(got == {"idle": 1, "active": 2, "waiting": 1}, f"clients by state: {got}", sl)
    check(total(s, "sluice_servers", database=DB, state="active") == 2, "active servers", sl)
    check(total(s, "sluice_servers", database=DB, state="idle") == 0, "idle servers", sl)
    check(total(s, "sluice_pool_waiting_clients", database=DB) == 1, "waiting in pool", sl)
    time.sleep(0.3)  # the oldest wait grows while nothing changes
    s2, _ = sl.scrape()
    check(total(s2, "sluice_pool_max_wait_seconds", database=DB) >= 0.25,
          f"max wait {total(s2, 'sluice_pool_max_wait_seconds', database=DB)} after 0.3 s", sl)
    check(total(s, "sluice_pool_size", database=DB) == 2, "pool size", sl)
    check(value(s, "sluice_database_primary_up", database=DB) == 1, "primary up", sl)
    holders[0].commit()
    t.join(10)
    check(done == [7], "the waiting client did not get its answer", sl)
    s, _ = sl.scrape()
    check(value(s, "sluice_wait_duration_seconds_count", database=DB) >= 1, "wait histogram", sl)
    check(total(s, "sluice_wait_time_seconds_total", database=DB) > 0, "wait time", sl)
    for c in holders + [idle, waiter]:
        c.close()
    print("ok: clients idle 1 / active 2 / waiting 1, servers active 2, pool waiting 1, "
          "then the wait is counted")
    return s


def against_console(sl):
    """SHOW STATS_TOTALS of the admin console: the same counters."""
    try:
        c = psycopg2.connect(sl.dsn(db="pgbouncer"))
    except psycopg2.Error as e:
        check(False, f"the admin console refused the login: {e}", sl)
    c.autocommit = True
    cur = c.cursor()
    cur.execute("SHOW STATS_TOTALS")
    cols = [d[0] for d in cur.description]
    rows = [dict(zip(cols, r)) for r in cur.fetchall()]
    c.close()
    row = next((r for r in rows if r.get("database") == DB), None)
    check(row is not None, f"SHOW STATS_TOTALS has no row for {DB}: {rows}", sl)
    s, _ = sl.scrape()
    pairs = {"total_xact_count": "sluice_transactions_total",
             "total_query_count": "sluice_queries_total",
             "total_server_assignment_count": "sluice_server_assignments_total",
             "total_received": "sluice_received_bytes_total",
             "total_sent": "sluice_sent_bytes_total"}
    for col, name in pairs.items():
        if col in row:
            check(row[col] == total(s, name, database=DB),
                  f"{col} {row[col]} but {name} {total(s, name, database=DB)}", sl)
    print("ok: counters equal SHOW STATS_TOTALS")


def slow_read(sl, path):
    """GET path through a small receive buffer, read slowly: sluice's
    socket fills and it has to resume its pieces many times."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", sl.mport))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    chunks = []
    while True:
        b = s.recv(1024)
        if not b:
            break
        chunks.append(b)
        if len(chunks) % 64 == 0:
            time.sleep(0.01)
    s.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return head.decode(), body.decode()


def many_pools():
    """/metrics of 60 pools is several pieces of sluice's 32 KiB buffer:
    read fast and read through a small window, it parses whole, with every
    pool once and the same series both ways."""
    from prometheus_client.parser import text_string_to_metric_families
    cl = cluster()
    ndb = 60
    dbs = "".join(f"db_with_a_long_name_to_fill_lines_{i:03d} = host=127.0.0.1 "
                  f"port={cl['PRIMARY_PORT']} dbname=sluice_test\n" for i in range(ndb))
    sl = Sluice(opts="pool_mode = transaction\n", dbs=dbs)
    try:
        for i in range(ndb):
            c = psycopg2.connect(sl.dsn(db=f"db_with_a_long_name_to_fill_lines_{i:03d}"))
            c.autocommit = True
            c.cursor().execute("SELECT 1")
            c.close()
        s, _ = sl.scrape()
        got = {dict(l)["database"] for (n, l) in s if n == "sluice_pool_size"}
        check(len(got) == ndb, f"{len(got)} pools of {ndb}", sl)
        head, body = slow_read(sl, "/metrics")
        check(head.startswith("HTTP/1.1 200") and len(body) > 4 * 32768,
              f"slow read: {head[:40]!r}, {len(body)} bytes", sl)
        slow = set()
        for fam in text_string_to_metric_families(body):
            for smp in fam.samples:
                key = (smp.name, frozenset(smp.labels.items()))
                check(key not in slow, f"{key} twice in the slow read", sl)
                slow.add(key)
        check(slow == set(s), f"series differ: {len(slow)} vs {len(s)}", sl)
    finally:
        sl.cleanup()
    print(f"ok: {ndb} pools, {len(body)} bytes of /metrics in pieces, read fast and slowly, "
          f"{len(slow)} series each once")


def main():
    sl = Sluice(opts="pool_mode = transaction\ndefault_pool_size = 2\nadmin_users = postgres\n"
                     "query_wait_timeout = 30\n")
    try:
        known_counters(sl)
        known_gauges(sl)
        against_console(sl)
    finally:
        sl.cleanup()
    many_pools()


if __name__ == "__main__":
    main()
