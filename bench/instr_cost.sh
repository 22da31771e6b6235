#!/usr/bin/env bash
# Instructions per transaction of two sluice binaries, counted by callgrind:
# a figure that hardly moves with the machine's load (CPU time does, and
# these virtual machines count no hardware instructions for perf). Each
# binary runs under valgrind in turn behind the same config and cluster;
# pgbench runs a fixed number of transactions through it; callgrind's
# instruction count (user space, sluice and its libraries, including the
# login and startup, which the fixed part below removes) is divided by them.
#
#   bash bench/instr_cost.sh BEFORE_BIN AFTER_BIN [TX_PER_CLIENT] [MODE]
#
# Transaction pooling, pool of 4, 4 clients, pgbench -S then the default
# TPC-B-like script, MODE pgbench's -M (default simple). Prints Ir per
# transaction for each, and keeps the callgrind files (for callgrind_annotate)
# in /tmp/sluice-instr.out/ (INSTR_OUT=DIR: elsewhere). WORKLOADS="select" (or
# "tpcb") runs one workload only.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
before_bin=$(realpath "${1:?usage: $0 BEFORE_BIN AFTER_BIN [TX_PER_CLIENT] [MODE]}")
after_bin=$(realpath "${2:?usage: $0 BEFORE_BIN AFTER_BIN [TX_PER_CLIENT] [MODE]}")
per_client=${3:-2000}
mode=${4:-simple}
clients=4
out=${INSTR_OUT:-/tmp/sluice-instr.out}
mkdir -p "$out"
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }

. "$top/bench/lib.sh"
bench_cluster sluice-instr

port=$(free_port)
bench_ini "$dir/sluice.ini" "$port" "$clients" "$dir/sluice.log"

# total_ir NAME BIN WORKLOAD TX -> Ir of a run of TX transactions per client
total_ir() {
    local flag="" f="$out/$1.$3.$4.cg" pid
    [ "$3" = select ] && flag=-S
    rm -f "$f"
    valgrind -q --tool=callgrind --callgrind-out-file="$f" "$2" "$dir/sluice.ini" &
    pid=$!
    wait_port "$port"
    PGPASSWORD=scram_pw pgbench -h 127.0.0.1 -p "$port" -U sl_scram $flag -M "$mode" \
        -c "$clients" -j 1 -t "$4" sluice_test >/dev/null 2>&1
    kill -INT "$pid"
    wait "$pid" || true
    awk '/^summary:/ {print $2}' "$f"
}

printf '| workload | -M | sluice | Ir per transaction |\n| --- | --- | --- | --- |\n'
for w in ${WORKLOADS:-select tpcb}; do
    for n in before after; do
        bin=before_bin
        [ "$n" = after ] && bin=after_bin
        # Two runs of different lengths: their difference is what the extra
        # transactions cost, without startup, logins and shutdown.
        small=$(total_ir "$n" "${!bin}" "$w" $((per_client / 4)))
        big=$(total_ir "$n" "${!bin}" "$w" "$per_client")
        awk -v w="$w" -v m="$mode" -v n="$n" -v s="$small" -v b="$big" \
            -v t=$((clients * (per_client - per_client / 4))) \
            'BEGIN{printf "| %s | %s | %s | %.0f |\n", (w == "select" ? "pgbench -S" : "TPC-B (default)"), m, n, (b - s) / t}'
    done
done
