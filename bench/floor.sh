#!/usr/bin/env bash
# sluice against the floor of its design and against PgBouncer, interleaved
# in one run: a bare epoll relay (bench/relay.c: one upstream connection per
# client, no parsing, plain TCP), sluice and PgBouncer, each behind the same
# PostgreSQL, pgbench -S at 64 clients, -M simple and -M extended. The
# figure is each proxy's own CPU microseconds per transaction
# (utime+stime from /proc/PID/stat over the pgbench run, divided by the
# transactions it counted).
#
#   bash bench/floor.sh [RUNS] [SECONDS]      (default 3 runs of 10 s each)
#
# sluice and PgBouncer: transaction pooling, pool of 20, SCRAM on both
# sides (clients checked against the role's SCRAM verifier, as PostgreSQL
# checks them behind the relay). sluice has statement tracking and routing on: the keys are
# max_prepared_statements = 200 (named protocol-level statements tracked
# and re-prepared per server) and a database entry with the two replicas,
# routing = auto (each transaction classified; reads go to the replica with
# the fewest transactions in flight). ROUTING=primary (replicas
# health-checked, nothing classified) or ROUTING=none (no replicas) change
# that entry. The relay logs each client in to PostgreSQL directly (SCRAM
# end to end) and keeps its backend for the whole run: no pooling at all.
# The order of the three targets rotates from one run to the next so that
# drift on the shared machine evens out.
#
# WORKERS=N sets sluice's `workers` (unset: sluice's default); the table
# gives the count sluice logged at start. PgBouncer stays one process.
#
# SYSCALLS=1 also counts, per transaction over the measured window, each
# target's system calls (perf stat on the raw_syscalls tracepoint, which
# needs no hardware counters; perf is installed if missing) and its
# voluntary and involuntary context switches (from /proc/PID/task/*/status:
# a voluntary one is a sleep in epoll_wait, an involuntary one a preemption
# by another process on the 2 cores). The tracepoint adds CPU to every
# system call (about 0.1 us here), so more to a target that makes more
# calls (PgBouncer): compare CPU figures from a run without it.
#
# pgbench runs SECONDS + 30 s and is stopped (SIGINT) after the measured
# window. Prints first what the kernel charges on this machine
# (bench/kernel_cost.c: a system call, a blocking round trip), then a row
# per run and protocol: sluice's workers, CPU us/tx of each, sluice/relay
# and sluice/PgBouncer.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
runs=${1:-3}
secs=${2:-10}
routing=${ROUTING:-auto}
clients=64
bash tests/install-deps.sh
syscalls=${SYSCALLS:-0}
if [ "$syscalls" = 1 ]; then
    if ! command -v perf >/dev/null; then
        echo "SYSCALLS=1: installing perf (linux-perf)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
    fi
    if ! err=$(perf stat -e raw_syscalls:sys_enter -- true 2>&1 >/dev/null); then
        echo "SYSCALLS=1 needs perf stat on the raw_syscalls tracepoint (run as root); perf said:" >&2
        echo "$err" | tail -n 5 >&2
        exit 2
    fi
fi
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j2 --target sluice >/dev/null

. "$top/bench/lib.sh"
bench_cluster sluice-floor
cc -O2 -Wall -Wextra -o "$dir/relay" "$top/bench/relay.c"
cc -O2 -Wall -Wextra -o "$dir/kernel_cost" "$top/bench/kernel_cost.c"
# Clients log in with SCRAM against the role's stored verifier, as
# PostgreSQL itself checks them: a proxy with the plaintext password would
# run PBKDF2 (4,096 rounds) per login, which is not the hot path and, with
# 64 logins per pgbench run, would add several us to every transaction.
# The proxies log in to PostgreSQL with the password of the entry.
verifier=$(psql -X -Atq -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d postgres \
    -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'sl_scram'")
printf '"sl_scram" "%s"\n' "$verifier" >"$dir/userlist.txt"

# write_ini FILE SECTION PORT LOGFILE [DATABASE_OPTIONS]
write_ini() {
    proxy_ini "$1" "$2" "$3" "$4" 20 3000 scram-sha-256 "password=scram_pw ${5:-}"
    echo "max_prepared_statements = 200" >>"$1"
    if [ "$2" = sluice ]; then bench_workers_ini >>"$1"; fi
}

case "$routing" in
auto | primary)
    db_opts="replicas=127.0.0.1:$REPLICA1_PORT,127.0.0.1:$REPLICA2_PORT routing=$routing" ;;
none) db_opts="" ;;
*) echo "ROUTING is auto, primary or none" >&2; exit 2 ;;
esac

SLUICE_PORT=$(free_port)
write_ini "$dir/sluice.ini" sluice "$SLUICE_PORT" "$dir/sluice.log" "$db_opts"
"$top/build-bench/sluice" "$dir/sluice.ini" &
pids+=($!)
SLUICE_PID=$!
wait_port "$SLUICE_PORT"
nworkers=$(sluice_workers "$dir/sluice.log")

RELAY_PORT=$(free_port)
[ "$RELAY_PORT" = "$SLUICE_PORT" ] && RELAY_PORT=$((RELAY_PORT + 1))
"$dir/relay" "$RELAY_PORT" 127.0.0.1 "$PRIMARY_PORT" &
pids+=($!)
RELAY_PID=$!
wait_port "$RELAY_PORT"

PGB_PORT=$(free_port)
while [ "$PGB_PORT" = "$SLUICE_PORT" ] || [ "$PGB_PORT" = "$RELAY_PORT" ]; do PGB_PORT=$((PGB_PORT + 1)); done
# PgBouncer has no max_prepared_statements in 1.18 (Debian 12): leave it out.
write_ini "$dir/pgbouncer.ini" pgbouncer "$PGB_PORT" "$dir/pgbouncer.log"
sed -i '/^max_prepared_statements/d' "$dir/pgbouncer.ini"
start_pgbouncer "$dir/pgbouncer.ini" "$PGB_PORT"
pids+=("$PGB_PID")

tck=$(getconf CLK_TCK)

# switches PID -> its voluntary and involuntary context switches so far,
# summed over its threads.
switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^voluntary_ctxt_switches/ {v += $2} /^nonvoluntary_ctxt_switches/ {n += $2}
            END {print v + 0, n + 0}'
}

# us_per_tx PORT PID MODE -> the proxy's CPU us per transaction ("?" if
# pgbench failed), and with SYSCALLS=1 its system calls, sleeps and
# preemptions per transaction after it; TPS and connection time go to
# stderr. Only the steady
# state counts: the CPU is read once every pgbench thread has begun its
# transactions (its per-transaction log exists), so the 64 logins of each
# run (SCRAM, TLS-less but still a few hundred us each in a proxy) are left
# out, and again SECONDS later; the transactions in between are counted
# from pgbench's per-transaction log (-l: each line ends with the epoch
# second and microsecond at which that transaction ended).
us_per_tx() {
    local b a t0 t1 out n tps conn logs="$dir/pgb.$1.$3" pg sw0 sw1
    rm -f "$logs".*
    PGSSLMODE=disable PGPASSWORD=scram_pw pgbench -h 127.0.0.1 -p "$1" -U sl_scram -S -M "$3" \
        -c "$clients" -j 2 -T $((secs + 30)) -l --log-prefix="$logs" sluice_test >"$dir/pgb.out" 2>&1 &
    pg=$!
    for _ in $(seq 1 600); do
        [ "$(cat "$logs".* 2>/dev/null | head -c 1)" ] && [ "$(ls "$logs".* 2>/dev/null | wc -l)" -ge 2 ] &&
            [ -s "$(ls "$logs".* | tail -n 1)" ] && break
        sleep 0.1
    done
    sleep 0.5
    t0=$(date +%s.%N)
    b=$(cpu_ticks "$2")
    sw0=$(switches "$2")
    if [ "$syscalls" = 1 ]; then
        rm -f "$dir/perf.out"
        perf stat -x, -e raw_syscalls:sys_enter -p "$2" -o "$dir/perf.out" -- sleep "$secs" ||
            echo "perf stat failed on pid $2" >&2
    else
        sleep "$secs"
    fi
    a=$(cpu_ticks "$2")
    sw1=$(switches "$2")
    t1=$(date +%s.%N)
    # pgbench's log is buffered (a few kB per thread): the lines lost to the
    # kill are the last ones written, all after t1 once 0.2 s have passed.
    sleep 0.2
    kill -INT "$pg" 2>/dev/null || true
    wait "$pg" || true
    out=$(cat "$dir/pgb.out")
    n=$(cat "$logs".* | awk -v t0="$t0" -v t1="$t1" '{t = $5 + $6 / 1e6} t >= t0 && t < t1 {n++} END{print n + 0}')
    tps=$(awk -v n="$n" -v t0="$t0" -v t1="$t1" 'BEGIN{printf "%.0f", n / (t1 - t0)}')
    conn=$(echo "$out" | sed -n 's/^initial connection time = \([0-9.]*\) ms/\1/p')
    if [ "${n:-0}" -gt 0 ]; then
        awk -v t=$((a - b)) -v n="$n" -v hz="$tck" 'BEGIN{printf "%.2f", t * 1e6 / hz / n}'
        if [ "$syscalls" = 1 ]; then
            awk -F, -v n="$n" '$3 ~ /sys_enter/ {s = $1} END {printf " %s", s ? sprintf("%.2f", s / n) : "?"}' \
                "$dir/perf.out" 2>/dev/null || printf ' ?'
            echo "$sw0 $sw1" | awk -v n="$n" '{printf " %.2f %.2f", ($3 - $1) / n, ($4 - $2) / n}'
        fi
        echo
    else
        echo "?"
        echo "$out" | tail -n 3 >&2
    fi
    echo "  port $1 -M $3: $tps tps over ${secs} s, $n transactions, 64 logins in ${conn:-?} ms" >&2
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{if (a == "?" || b == "?" || b == 0) print "?"; else printf "%.2f", a / b}'; }

targets=(relay sluice pgbouncer)
declare -A port=([relay]=$RELAY_PORT [sluice]=$SLUICE_PORT [pgbouncer]=$PGB_PORT)
declare -A pid=([relay]=$RELAY_PID [sluice]=$SLUICE_PID [pgbouncer]=$PGB_PID)
# Warm-up: sluice and PgBouncer open their pools (and sluice its replica
# pools) before anything is measured.
for t in "${targets[@]}"; do
    PGSSLMODE=disable PGPASSWORD=scram_pw pgbench -h 127.0.0.1 -p "${port[$t]}" -U sl_scram -S \
        -c "$clients" -j 2 -T 2 sluice_test >/dev/null 2>&1 || echo "warm-up through $t failed" >&2
done
echo "sluice $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?'), workers=$nworkers, routing=$routing," \
    "PgBouncer $(/usr/sbin/pgbouncer --version | head -n 1 | awk '{print $2}'), $clients clients, ${secs} s per run"
echo
echo "What the kernel charges here (bench/kernel_cost.c, CPU per call or round trip):"
"$dir/kernel_cost" | sed 's/^/    /'
echo
if [ "$syscalls" = 1 ]; then
    echo "| run | -M | sluice workers | relay us/tx | sluice us/tx | PgBouncer us/tx | sluice/relay | sluice/PgBouncer |" \
        "syscalls/tx relay, sluice, PgBouncer | sleeps/tx (voluntary switches) | preemptions/tx (involuntary) |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
else
    echo "| run | -M | sluice workers | relay us/tx | sluice us/tx | PgBouncer us/tx | sluice/relay | sluice/PgBouncer |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
fi
for r in $(seq 1 "$runs"); do
    for mode in simple extended; do
        declare -A us=() sc=() sv=() si=()
        # Rotate the order: run 1 relay first, run 2 sluice first, ...
        for i in 0 1 2; do
            t=${targets[$(((i + r - 1) % 3))]}
            read -r "us[$t]" "sc[$t]" "sv[$t]" "si[$t]" < <(us_per_tx "${port[$t]}" "${pid[$t]}" "$mode")
        done
        extra=""
        [ "$syscalls" = 1 ] && extra=" ${sc[relay]}, ${sc[sluice]}, ${sc[pgbouncer]} |"\
" ${sv[relay]}, ${sv[sluice]}, ${sv[pgbouncer]} | ${si[relay]}, ${si[sluice]}, ${si[pgbouncer]} |"
        echo "| $r | $mode | $nworkers | ${us[relay]} | ${us[sluice]} | ${us[pgbouncer]} |" \
            "$(ratio "${us[sluice]}" "${us[relay]}") | $(ratio "${us[sluice]}" "${us[pgbouncer]}") |$extra"
    done
done
