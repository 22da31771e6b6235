#!/usr/bin/env bash
# The CPU that session-state checks cost sluice: two sluice binaries (say
# main's and a branch's) side by side in one run, same config, same cluster,
# pgbench -S and pgbench's default TPC-B-like script through each, in turns.
# Prints each binary's own CPU microseconds per transaction (utime+stime
# from /proc/PID/stat over the run), TPS and the transaction count.
#
#   bash bench/state_cost.sh BEFORE_BIN AFTER_BIN [SECONDS] [ROUNDS] [MODE]
#
# SECONDS per pgbench run (default 15), ROUNDS of before/after turns
# (default 2), MODE pgbench's -M (default simple). Transaction pooling, pool
# of 20, 16 clients, -j 2, scale 10, SCRAM on both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
before_bin=$(realpath "${1:?usage: $0 BEFORE_BIN AFTER_BIN [SECONDS] [ROUNDS] [MODE]}")
after_bin=$(realpath "${2:?usage: $0 BEFORE_BIN AFTER_BIN [SECONDS] [ROUNDS] [MODE]}")
secs=${3:-15}
rounds=${4:-2}
mode=${5:-simple}
clients=16

. "$top/bench/lib.sh"
bench_cluster sluice-statecost

start_sluice() { # name binary -> sets PORT_<name>, PID_<name>
    local port
    port=$(free_port)
    bench_ini "$dir/$1.ini" "$port" 20 "$dir/$1.log"
    "$2" "$dir/$1.ini" &
    pids+=($!)
    printf -v "PID_$1" '%s' "$!"
    printf -v "PORT_$1" '%s' "$port"
    wait_port "$port"
}
start_sluice before "$before_bin"
start_sluice after "$after_bin"

tck=$(getconf CLK_TCK)

declare -A ticks txs tps_sum
run() { # name workload(select|tpcb)
    local port pid flag="" b a out n t
    port=PORT_$1 pid=PID_$1
    [ "$2" = select ] && flag=-S
    b=$(cpu_ticks "${!pid}")
    out=$(PGPASSWORD=scram_pw pgbench -h 127.0.0.1 -p "${!port}" -U sl_scram $flag -M "$mode" \
        -c "$clients" -j 2 -T "$secs" sluice_test 2>&1)
    a=$(cpu_ticks "${!pid}")
    n=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
    t=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    ticks[$1.$2]=$((${ticks[$1.$2]:-0} + a - b))
    txs[$1.$2]=$((${txs[$1.$2]:-0} + n))
    tps_sum[$1.$2]=$(awk -v x="${tps_sum[$1.$2]:-0}" -v y="$t" 'BEGIN{print x + y}')
    awk -v n="$1" -v w="$2" -v t=$((a - b)) -v c="$n" -v hz="$tck" -v tps="$t" \
        'BEGIN{printf "%-6s %-6s %8.1f tps  %6.2f us/tx  (%d tx)\n", n, w, tps, t * 1e6 / hz / c, c}' >&2
}

for r in $(seq 1 "$rounds"); do
    for w in select tpcb; do
        # Alternate which binary goes first, so that drift evens out.
        if [ $((r % 2)) = 1 ]; then run before "$w"; run after "$w"; else run after "$w"; run before "$w"; fi
    done
done

echo
echo "| workload | -M | sluice | TPS (mean) | sluice CPU us/tx | transactions |"
echo "| --- | --- | --- | --- | --- | --- |"
for w in select tpcb; do
    for n in before after; do
        awk -v w="$w" -v m="$mode" -v n="$n" -v t="${ticks[$n.$w]}" -v c="${txs[$n.$w]}" \
            -v hz="$tck" -v s="${tps_sum[$n.$w]}" -v r="$rounds" \
            'BEGIN{printf "| %s | %s | %s | %.0f | %.2f | %d |\n", (w == "select" ? "pgbench -S" : "TPC-B (default)"), m, n, s / r, t * 1e6 / hz / c, c}'
    done
done
