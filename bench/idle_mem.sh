#!/usr/bin/env bash
# Memory per idle client, sluice and PgBouncer side by side: each proxy's
# VmRSS before and while N logged-in idle clients (bench/idle_clients.c)
# sit connected, (after - before) / N. Both proxies have served one short
# pgbench run first, so that their pools, buffers and caches exist before
# "before" is read: what is left is what an idle client costs.
#
#   bash bench/idle_mem.sh [N] [SLUICE_BIN]    (default 10000, build-bench's)
#
# Transaction pooling, pool of 20, md5 for clients (SCRAM would cost the one
# client process N PBKDF2 runs; what a logged-in client keeps does not
# depend on the method: the login's state is freed after it), SCRAM to the
# backend. The kernel's memory per socket (buffers, the epoll item, the
# file) is not in RSS and is the same for any proxy: it is not counted.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
n=${1:-10000}
bin=${2:-}
bash tests/install-deps.sh
ulimit -n $((2 * n + 1000)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((n + 200)) ] || { echo "open files limit $(ulimit -n) is below $n clients" >&2; exit 1; }
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j2 --target sluice idle_clients >/dev/null
[ -n "$bin" ] || bin=$top/build-bench/sluice
bin=$(realpath "$bin")

. "$top/bench/lib.sh"
bench_cluster sluice-idlemem

write_ini() { # file section port logfile
    proxy_ini "$1" "$2" "$3" "$4" 20 $((n + 100)) md5
}

SLUICE_PORT=$(free_port)
write_ini "$dir/sluice.ini" sluice "$SLUICE_PORT" "$dir/sluice.log"
"$bin" "$dir/sluice.ini" &
pids+=($!)
SLUICE_PID=$!
wait_port "$SLUICE_PORT"

PGB_PORT=$(free_port)
[ "$PGB_PORT" = "$SLUICE_PORT" ] && PGB_PORT=$((PGB_PORT + 1))
write_ini "$dir/pgbouncer.ini" pgbouncer "$PGB_PORT" "$dir/pgbouncer.log"
start_pgbouncer "$dir/pgbouncer.ini" "$PGB_PORT"
pids+=("$PGB_PID")

rss() { awk '/VmRSS/{print $2}' "/proc/$1/status"; }

row() { # name port pid
    local before after line t0 t1
    PGSSLMODE=disable PGPASSWORD=scram_pw pgbench -h 127.0.0.1 -p "$2" -U sl_scram -S -c 16 -j 2 \
        -T 2 sluice_test >/dev/null 2>&1 || echo "warm-up through $1 failed" >&2
    sleep 0.5
    before=$(rss "$3")
    t0=$(date +%s.%N)
    coproc IDLE { "$top/build-bench/bench/idle_clients" \
        "host=127.0.0.1 port=$2 dbname=sluice_test user=sl_scram password=scram_pw sslmode=disable connect_timeout=30" \
        "$n"; }
    read -r line <&"${IDLE[0]}" || true
    t1=$(date +%s.%N)
    sleep 0.5
    after=$(rss "$3")
    exec {IDLE[1]}>&-
    wait "$IDLE_PID" || true
    [ "$line" = ready ] || { echo "idle clients failed for $1" >&2; return; }
    printf '| %s | %d | %d | %d | %d | %.1f |\n' "$1" "$n" "$before" "$after" \
        $(((after - before) * 1024 / n)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b - a}')"
}

echo "sluice $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?') ($bin)," \
    "PgBouncer $(/usr/sbin/pgbouncer --version | head -n 1 | awk '{print $2}')"
echo
echo "| proxy | idle clients | RSS before (kB) | RSS with clients (kB) | bytes per idle client | seconds to connect them |"
echo "| --- | --- | --- | --- | --- | --- |"
row sluice "$SLUICE_PORT" "$SLUICE_PID"
row pgbouncer "$PGB_PORT" "$PGB_PID"
