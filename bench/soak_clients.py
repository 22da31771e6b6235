#!/usr/bin/python3
"""The soak's own clients (bench/soak.sh runs this beside pgbench), each a
thread on its own psycopg2 connection through sluice, for SECONDS:

  writer N   transactions of one ledger row with a client-side id (src,
             seq) and an update of its running total; counts what it saw
             committed, reconnects every 200 transactions;
  copier     COPY IN of a batch of rows with a client-side batch id, then
             COPY OUT of that batch, checked row by row;
  reader     reads through the routed database; counts those a replica
             answered (pg_is_in_recovery());
  canceller  SELECT pg_sleep(5), cancelled from another thread after
             0.3 s: each must end in 57014 and leave the connection usable.

Prints one JSON object: the counts, and every error other than the injected
cancels (there must be none).

  soak_clients.py DSN ROUTED_DSN SECONDS WRITERS
"""
import io
import json
import random
import sys
import threading
import time

import psycopg2
import psycopg2.errors

COPY_ROWS = 1000
COPY_PAUSE_S = 0.5  # between batches: the ledger must stay small enough to check
RECONNECT_EVERY = 200
PACE_S = 0.005  # between a writer's or reader's transactions: the machine is shared

lock = threading.Lock()
result = {"writes": {}, "write_sums": {}, "copy_batches": 0, "copy_rows": 0,
          "reads": 0, "replica_reads": 0, "cancels": 0, "cancel_misses": 0,
          "transactions": 0, "errors": []}


def error(what, e):
    with lock:
        if len(result["errors"]) < 50:
            result["errors"].append("%s: %s" % (what, str(e).strip().splitlines()[0]
                                                if str(e).strip() else type(e).__name__))
        else:
            result["errors"][-1] = "... more errors"


def count(key, n=1):
    with lock:
        result[key] += n
        result["transactions"] += 1


def writer(dsn, src, deadline):
    seq, committed, total, conn = 0, 0, 0, None
    while time.time() < deadline:
        try:
            if conn is None or (seq and seq % RECONNECT_EVERY == 0):
                if conn is not None:
                    conn.close()
                conn = psycopg2.connect(dsn)
            amount = random.randint(1, 1000)
            seq += 1
            with conn.cursor() as cur:
                cur.execute("INSERT INTO ledger (src, id, amount) VALUES (%s, %s, %s)",
                            (src, seq, amount))
                cur.execute("UPDATE ledger_total SET total = total + %s, n = n + 1 "
                            "WHERE src = %s", (amount, src))
            conn.commit()
            total += amount
            committed += 1
            with lock:
                result["writes"][src] = committed
                result["write_sums"][src] = total
                result["transactions"] += 1
            time.sleep(PACE_S)
        except Exception as e:  # any error is a finding: report, reconnect
            error("writer %s at seq %d (outcome unknown)" % (src, seq), e)
            conn = None
            time.sleep(0.5)
    if conn is not None:
        conn.close()


def copier(dsn, deadline):
    conn, batch = None, 0
    while time.time() < deadline:
        try:
            if conn is None:
                conn = psycopg2.connect(dsn)
                conn.autocommit = True
            batch += 1
            rows = "".join("%d\t%d\tpayload %d %s\n" % (batch, i, i, "x" * (i % 50))
                           for i in range(COPY_ROWS))
            with conn.cursor() as cur:
                cur.copy_expert("COPY soak_copy (batch, n, payload) FROM STDIN",
                                io.StringIO(rows))
            with lock:
                result["copy_rows"] += COPY_ROWS
            out = io.StringIO()
            with conn.cursor() as cur:
                cur.copy_expert("COPY (SELECT batch, n, payload FROM soak_copy WHERE batch = %d "
                                "ORDER BY n) TO STDOUT" % batch, out)
            if out.getvalue() != rows:
                error("copier batch %d" % batch, Exception(
                    "COPY OUT gave %d bytes, COPY IN sent %d" % (len(out.getvalue()), len(rows))))
            count("copy_batches")
            time.sleep(COPY_PAUSE_S)
        except Exception as e:
            error("copier batch %d" % batch, e)
            conn = None
            time.sleep(0.5)
    if conn is not None:
        conn.close()


def reader(dsn, deadline):
    conn = None
    while time.time() < deadline:
        try:
            if conn is None:
                conn = psycopg2.connect(dsn)
                conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT pg_is_in_recovery(), count(*) FROM pgbench_branches")
                standby, _ = cur.fetchone()
            count("reads")
            if standby:
                with lock:
                    result["replica_reads"] += 1
            time.sleep(PACE_S)
        except Exception as e:
            error("reader", e)
            conn = None
            time.sleep(0.5)
    if conn is not None:
        conn.close()


def canceller(dsn, deadline):
    conn = None
    while time.time() < deadline - 6:
        try:
            if conn is None:
                conn = psycopg2.connect(dsn)
                conn.autocommit = True
            timer = threading.Timer(0.3, conn.cancel)
            timer.start()
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_sleep(5)")
                with lock:
                    result["cancel_misses"] += 1
            except psycopg2.errors.QueryCanceled:
                with lock:
                    result["cancels"] += 1
            timer.join()
            with conn.cursor() as cur:  # the connection is still usable
                cur.execute("SELECT 1")
            count("reads")
            time.sleep(random.uniform(0.5, 1.5))
        except Exception as e:
            error("canceller", e)
            conn = None
            time.sleep(0.5)
    if conn is not None:
        conn.close()


def main():
    dsn, routed, seconds, writers = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    deadline = time.time() + seconds
    threads = [threading.Thread(target=writer, args=(dsn, "py%d" % i, deadline))
               for i in range(writers)]
    threads += [threading.Thread(target=copier, args=(dsn, deadline)),
                threading.Thread(target=reader, args=(routed, deadline)),
                threading.Thread(target=canceller, args=(dsn, deadline))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
