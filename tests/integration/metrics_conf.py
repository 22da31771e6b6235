#!/usr/bin/python3
"""The shipped Grafana dashboard (conf/sluice-dashboard.json) and Prometheus
alert rules (conf/sluice-alerts.yml) load, have the fields their tools
need, and name only metrics a live sluice exposes (a sluice with a routed
database, so that the backend and replica series exist); rate() is taken
of counters and histogram buckets only. promtool checks the rules when it
is installed."""
import json
import os
import re
import shutil
import subprocess
import sys

import psycopg2
import yaml

sys.stdout.reconfigure(line_buffering=True)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sluicepy import Sluice, cluster, fail  # noqa: E402

NAME = re.compile(r"\b(sluice_[a-zA-Z0-9_]+)")
RATE = re.compile(r"\b(?:rate|irate|increase)\(\s*(sluice_[a-zA-Z0-9_]+)")


def dashboard_exprs(path):
    with open(path) as f:
        d = json.load(f)
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in d:
            fail(f"{path}: no {key}")
    exprs = []
    for p in d["panels"]:
        if p.get("type") == "row":
            continue
        if not p.get("title") or not p.get("targets") or "gridPos" not in p:
            fail(f"{path}: panel {p.get('id')} lacks a title, targets or gridPos")
        for t in p["targets"]:
            if not t.get("expr") or not t.get("refId"):
                fail(f"{path}: panel {p['title']!r}: a target without expr or refId")
            exprs.append((f"panel {p['title']!r}", t["expr"]))
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query":
            exprs.append((f"variable {v['name']}", q))
    titles = " ".join(p.get("title", "") for p in d["panels"]).lower()
    for needed in ("transactions per second", "wait time", "clients by state",
                   "servers by state", "replica lag"):
        if needed not in titles:
            fail(f"{path}: no panel about {needed}")
    return exprs


def alert_exprs(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    exprs, names = [], set()
    for g in doc.get("groups", []):
        if not g.get("name") or not g.get("rules"):
            fail(f"{path}: a group without name or rules")
        for r in g["rules"]:
            for key in ("alert", "expr", "for"):
                if key not in r:
                    fail(f"{path}: rule {r.get('alert')} has no {key}")
            if r.get("labels", {}).get("severity") not in ("warning", "critical"):
                fail(f"{path}: rule {r['alert']} has no severity warning or critical")
            ann = r.get("annotations", {})
            if not ann.get("summary") or not ann.get("description"):
                fail(f"{path}: rule {r['alert']} lacks a summary or description")
            names.add(r["alert"])
            exprs.append((f"alert {r['alert']}", r["expr"]))
    wanted = {"SluiceDown", "SluicePrimaryDown", "SluicePoolSaturated",
              "SluiceClientsWaitingTooLong", "SluiceReplicaEjected", "SluiceReplicaLagging"}
    if not wanted <= names:
        fail(f"{path}: missing alerts {sorted(wanted - names)}")
    return exprs


def live_names():
    cl = cluster()
    sl = Sluice(opts="pool_mode = transaction\n",
                dbs=f"routed = host=127.0.0.1 port={cl['PRIMARY_PORT']} dbname=sluice_test "
                    f"replicas=127.0.0.1:{cl['REPLICA1_PORT']},127.0.0.1:{cl['REPLICA2_PORT']}\n")
    try:
        for db in ("sluice_test", "routed"):
            c = psycopg2.connect(sl.dsn(db=db))
            c.autocommit = True
            c.cursor().execute("SELECT 1")
            c.close()
        samples, families = sl.scrape()
    finally:
        sl.cleanup()
    names = {n for (n, _) in samples}
    types = {}
    for f in families:
        for s in f.samples:
            types[s.name] = f.type
    return names, types


def main():
    conf = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf")
    dash = os.path.join(conf, "sluice-dashboard.json")
    rules = os.path.join(conf, "sluice-alerts.yml")
    exprs = dashboard_exprs(dash) + alert_exprs(rules)
    names, types = live_names()
    used = set()
    for where, e in exprs:
        for n in NAME.findall(e):
            used.add(n)
            if n not in names:
                fail(f"{where}: {n} is not in a live /metrics (expr: {e})")
        for n in RATE.findall(e):
            if types.get(n) not in ("counter", "histogram") or not n.endswith(("_total", "_bucket",
                                                                               "_sum", "_count")):
                fail(f"{where}: rate() of {n}, a {types.get(n)}, not a counter")
    print(f"ok: {len(exprs)} expressions name {len(used)} metrics, all in a live /metrics")
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "rules", rules], capture_output=True, text=True)
        if r.returncode != 0:
            fail(f"promtool check rules: {r.stdout}{r.stderr}")
        print("ok: promtool check rules")
    else:
        print("skip: promtool is not installed")


if __name__ == "__main__":
    main()
