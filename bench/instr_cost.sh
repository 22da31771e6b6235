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
# Transaction pooling, pool of 4, 4 clients (CLIENTS, POOL below), pgbench -S then the default
# TPC-B-like script, MODE pgbench's -M (default simple). Prints Ir per
# transaction for each, and keeps the callgrind files (for callgrind_annotate)
# in /tmp/sluice-instr.out/ (INSTR_OUT=DIR: elsewhere). WORKLOADS="select" (or
# "tpcb") runs one workload only.
#
# ROUTING=auto|primary|none (default none) gives the database entry the
# cluster's two replicas and that routing, as bench/floor.sh does: auto
# classifies each transaction and sends reads to a replica, primary only
# health-checks them. PS=N sets max_prepared_statements (default: sluice's
# own default); floor.sh runs with PS=200. Under valgrind a transaction
# takes some 50 times longer than on its own, so the replica health checks
# (lsn_poll_period, 50 per second per backend by default) weigh 50 times
# more per transaction than they do in floor.sh, and vary with the load:
# LSN_POLL=SECONDS sets lsn_poll_period (e.g. 10: the transactions alone).
# CLIENTS=N pgbench clients (default 4), POOL=N default_pool_size (default
# CLIENTS); floor.sh runs 64 clients on pools of 20.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
before_bin=$(realpath "${1:?usage: $0 BEFORE_BIN AFTER_BIN [TX_PER_CLIENT] [MODE]}")
after_bin=$(realpath "${2:?usage: $0 BEFORE_BIN AFTER_BIN [TX_PER_CLIENT] [MODE]}")
per_client=${3:-2000}
mode=${4:-simple}
clients=${CLIENTS:-4}
out=${INSTR_OUT:-/tmp/sluice-instr.out}
mkdir -p "$out"
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }

. "$top/bench/lib.sh"
bench_cluster sluice-instr

port=$(free_port)
bench_ini "$dir/sluice.ini" "$port" "${POOL:-$clients}" "$dir/sluice.log"
case "${ROUTING:-none}" in
auto | primary)
    sed -i "s/^sluice_test = .*/& replicas=127.0.0.1:$REPLICA1_PORT,127.0.0.1:$REPLICA2_PORT routing=$ROUTING/" \
        "$dir/sluice.ini" ;;
none) ;;
*) echo "ROUTING is auto, primary or none" >&2; exit 2 ;;
esac
if [ -n "${PS:-}" ]; then echo "max_prepared_statements = $PS" >>"$dir/sluice.ini"; fi
if [ -n "${LSN_POLL:-}" ]; then echo "lsn_poll_period = $LSN_POLL" >>"$dir/sluice.ini"; fi

# pgbench_run WORKLOAD TX: TX transactions per client through sluice.
pgbench_run() {
    local flag=""
    [ "$1" = select ] && flag=-S
    PGPASSWORD=scram_pw pgbench -h 127.0.0.1 -p "$port" -U sl_scram $flag -M "$mode" \
        -c "$clients" -j 1 -t "$2" sluice_test >/dev/null 2>&1
}

# ir_per_tx NAME BIN WORKLOAD -> Ir per transaction of BIN. A warm-up run
# first opens every pool (with routing, the replicas' too: each server
# login runs libpq's SCRAM, whose PBKDF2 would otherwise swamp the
# figure), then the counters are zeroed and two runs of different lengths
# are dumped one after the other: their difference is what the extra
# transactions cost, without startup, logins and shutdown. The longer run's
# profile is kept as NAME.WORKLOAD.cg.
ir_per_tx() {
    local f="$out/$1.$3.cg" pid small big short=$((per_client / 4))
    rm -f "$f" "$f".*
    valgrind -q --tool=callgrind --callgrind-out-file="$f" "$2" "$dir/sluice.ini" &
    pid=$!
    wait_port "$port"
    pgbench_run "$3" "$short"
    callgrind_control -z "$pid" >/dev/null 2>&1
    pgbench_run "$3" "$short"
    callgrind_control -d "$pid" >/dev/null 2>&1
    pgbench_run "$3" "$per_client"
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill -INT "$pid"
    wait "$pid" || true
    small=$(awk '/^summary:/ {print $2}' "$f.1")
    big=$(awk '/^summary:/ {print $2}' "$f.2")
    mv "$f.2" "$f"
    rm -f "$f".*
    awk -v s="$small" -v b="$big" -v t=$((clients * (per_client - short))) \
        'BEGIN{printf "%.0f", (b - s) / t}'
}

printf '| workload | -M | routing | sluice | Ir per transaction |\n| --- | --- | --- | --- | --- |\n'
for w in ${WORKLOADS:-select tpcb}; do
    for n in before after; do
        bin=before_bin
        [ "$n" = after ] && bin=after_bin
        printf '| %s | %s | %s | %s | %s |\n' "$([ "$w" = select ] && echo "pgbench -S" || echo "TPC-B (default)")" \
            "$mode" "${ROUTING:-none}" "$n" "$(ir_per_tx "$n" "${!bin}" "$w")"
    done
done
