#!/bin/sh
# The module dependency check (DESIGN.md "Modules"): prints each module's
# includes by floor, every include and every call that goes from a lower
# floor up into a higher one, and the calls between modules of one floor.
# Fails when a lower floor includes a higher floor's header: a lower module
# may reach up only through a callback the higher one gives it.
#   tests/deps.sh [source root]        (default: the checkout it is in)
root=${1:-$(dirname "$0")/..}
exec /usr/bin/python3 - "$root" <<'PY'
import os, re, sys

root = sys.argv[1]
# Floors, bottom up. tls is on floor 1: it is in the pure library (no
# libuv) and config parses TLS protocol names through it. Within floor 3, pool sits below route/health and authq:
# they open servers through pool, and pool reaches them only by callbacks.
FLOORS = {
    1: "proto buf scram hba sql stmt expect params config userlist stats log strlist "
       "textfile hmap err defer list tls notify utf8 cancelkey",
    2: "server conn login auth loop ledger",
    3: "pool",
    3.5: "route authq control peers",
    4: "session",
    5: "worker workers listener janitor admin metrics",
    6: "main",
}
floor = {m: f for f, ms in FLOORS.items() for m in ms.split()}
ALIAS = {"health": "route", "sql_builtins": "sql"}  # one module, several files
SESSION = {"client", "relay", "prepare", "router", "cancel", "session"}

# A module directory under src/ (src/session/, src/metrics/) is one module,
# whatever its files are called.
MODULE_DIRS = sorted(d for d in os.listdir(os.path.join(root, "src"))
                     if os.path.isdir(os.path.join(root, "src", d)))

def module(path):
    base = os.path.splitext(os.path.basename(path))[0]
    if "/session/" in path or base in SESSION:
        return "session"
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "src" and parts[1] in MODULE_DIRS:
        return parts[1]
    return ALIAS.get(base, base)

files = []
for d in ["src", "include/sluice"] + ["src/" + m for m in MODULE_DIRS]:
    for f in sorted(os.listdir(os.path.join(root, d))):
        if f.endswith((".c", ".h")):
            files.append(os.path.join(d, f))

def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)

# Which module declares each sl_ function (public and session headers).
owner = {}
for f in files:
    if f.endswith(".h"):
        for name in re.findall(r"\b(sl_\w+)\s*\(", strip_comments(open(os.path.join(root, f)).read())):
            owner.setdefault(name, module(f))

bad_includes, up_calls, side_calls, graph = [], {}, {}, {}
for f in files:
    m = module(f)
    if m not in floor:
        print(f"deps: {f}: module {m} has no floor; add it to tests/deps.sh")
        sys.exit(1)
    raw = open(os.path.join(root, f)).read()
    for inc in re.findall(r'#include\s+"(?:sluice/)?(\w+)\.h"', raw):
        here = os.path.dirname(f)
        if here.startswith("src/") and os.path.exists(os.path.join(root, here, inc + ".h")):
            t = m  # the module's own internal header
        else:
            t = module("src/session/x" if inc == "session" and f.startswith("src/session") else inc)
        if t == m:
            continue
        graph.setdefault(m, set()).add(t)
        if floor.get(t, 0) > floor[m]:
            bad_includes.append(f"{f} (floor {floor[m]}) includes {inc}.h ({t}, floor {floor[t]})")
    if not f.endswith(".c"):
        continue
    for name in re.findall(r"\b(sl_\w+)\s*\(", strip_comments(raw)):
        t = owner.get(name)
        if not t or t == m:
            continue
        key = f"{m} -> {t}: {name}"
        if floor[t] > floor[m]:
            up_calls[key] = up_calls.get(key, 0) + 1
        elif floor[t] == floor[m]:
            side_calls[key] = side_calls.get(key, 0) + 1

print("includes by floor (module: modules it includes)")
for f in sorted(FLOORS, reverse=True):
    for m in FLOORS[f].split():
        if m in graph:
            print(f"  floor {f:<4} {m}: {' '.join(sorted(graph[m]))}")
# Calls across one floor above the pure one: a circle there (each calls
# the other) is what DESIGN.md forbids besides upward calls.
pairs = {}
for k, n in side_calls.items():
    a, rest = k.split(" -> ")
    b = rest.split(":")[0]
    if floor[a] > 1:
        pairs[(a, b)] = pairs.get((a, b), 0) + n
print("calls between modules of one floor (above floor 1):")
for (a, b), n in sorted(pairs.items()):
    circle = " (circle)" if (b, a) in pairs else ""
    print(f"  {a} -> {b} x{n}{circle}")
print(f"upward calls: {sum(up_calls.values())}")
for k in sorted(up_calls):
    print(f"  {k} x{up_calls[k]}")
print(f"upward includes: {len(bad_includes)}")
for b in bad_includes:
    print("  " + b)
sys.exit(1 if bad_includes else 0)
PY
