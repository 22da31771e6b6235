#!/usr/bin/env bash
# workers = 1 against workers = 2 (issue 13): the same pgbench -S workload,
# 64 clients, through two sluices that differ only in `workers`, both
# running behind the same PostgreSQL, measured in alternating turns (the
# order flips every run, so that drift on the shared machine evens out).
#
#   bash bench/scale.sh [RUNS] [SECONDS]        (default 3 runs of 10 s each)
#
# Per run and worker count, over the steady state only (as floor.sh: the
# window opens once every pgbench thread has logged transactions, so the
# 64 logins are left out):
#   - TPS and p50 / p95 latency, from pgbench's per-transaction log (-l)
#     lines that ended inside the window;
#   - sluice's CPU microseconds per transaction (utime+stime of the process
#     from /proc/PID/task/*/stat), the share of it spent in user space and
#     in the kernel, and the same per thread (each worker is a thread; the
#     main thread only waits for signals);
#   - the CPU per transaction of the PostgreSQL primary (postmaster and
#     backends) and of pgbench, and how busy the machine was (/proc/stat:
#     everything that ran, other work included): on a 2-core machine that
#     runs PostgreSQL and pgbench too, a second worker only helps if a core
#     is left for it; "ours" is the share of that busy time that sluice,
#     the primary and pgbench took (the rest is other work on the machine;
#     /proc/stat counts in whole ticks, so over a few seconds it can pass
#     100 %).
# Then the medians per worker count.
#
# Settings (environment):
#   COUNTS="1 2"   the `workers` values compared (default "1 2")
#   MODE=simple    pgbench -M (simple or extended)
#   ROUTING=none   the database entry: none (the primary alone), primary or
#                  auto (the two replicas, as floor.sh)
#   POOL=20        default_pool_size (global: shared by the workers)
#   PERF=1         after the timed runs, one more run per count under `perf
#                  record -e cpu-clock` (software sampling: these VMs count no
#                  hardware events), and per-thread and per-symbol reports
#                  (RUNS=0: the profiles alone). In a VM the timer's samples
#                  in the kernel land where interrupts are enabled again
#                  (finish_task_switch, _raw_spin_unlock_irqrestore): read
#                  the kernel's share, not its split. Then syscalls per
#                  transaction per count (perf stat on the syscall
#                  tracepoints): epoll_ctl and eventfd writes show servers
#                  moving between workers
#   CALLGRIND=1    instead of the timed runs: instructions per transaction
#                  per thread under callgrind --separate-threads=yes (fixed
#                  transaction counts, two lengths so that start and logins
#                  cancel out; CG_CLIENTS=32 clients, more than the pool,
#                  so that clients queue; CG_TX=1200 per client)
#   OUT=DIR        where the perf and callgrind files are kept
#                  (default /tmp/sluice-scale.out)
#
# Both sluices: transaction pooling, clients checked against the role's
# SCRAM verifier, backend logins with keys derived from the entry's
# password, max_prepared_statements = 200, as floor.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
runs=${1:-3}
secs=${2:-10}
counts=${COUNTS:-1 2}
mode=${MODE:-simple}
routing=${ROUTING:-none}
pool=${POOL:-20}
out=${OUT:-/tmp/sluice-scale.out}
clients=64
bash tests/install-deps.sh
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j2 --target sluice >/dev/null
mkdir -p "$out"

. "$top/bench/lib.sh"
bench_cluster sluice-scale
verifier=$(psql -X -Atq -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d postgres \
    -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'sl_scram'")
printf '"sl_scram" "%s"\n' "$verifier" >"$dir/userlist.txt"
postmaster=$(head -n 1 "$dir/pg/primary/postmaster.pid")
tck=$(getconf CLK_TCK)
commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?')

case "$routing" in
auto | primary)
    db_opts="replicas=127.0.0.1:$REPLICA1_PORT,127.0.0.1:$REPLICA2_PORT routing=$routing" ;;
none) db_opts="" ;;
*) echo "ROUTING is auto, primary or none" >&2; exit 2 ;;
esac

# The backend password of the database entry: sluice logs in with keys
# derived from it once per salt. Under callgrind there is none (backend
# logins then use the ClientKey a client's SCRAM login revealed): which
# worker derives, and whether two race to, differs from run to run, and
# one PBKDF2 (about 12 million instructions) would swamp the difference
# of two runs.
backend_pw="password=scram_pw"
[ "${CALLGRIND:-0}" = 1 ] && backend_pw=""

# write_ini FILE PORT LOGFILE WORKERS
write_ini() {
    proxy_ini "$1" sluice "$2" "$3" "$pool" 3000 scram-sha-256 "$backend_pw $db_opts"
    printf 'max_prepared_statements = 200\nworkers = %s\n' "$4" >>"$1"
}

declare -A port=() pid=()

# start_sluice W [WRAPPER...]: sluice with `workers = W` on a port picked
# now (other work on the machine takes ports too), in port[W]; pid in
# pid[W].
start_sluice() {
    local w=$1 p
    shift
    p=$(free_port)
    for o in "${port[@]}"; do [ "$o" = "$p" ] && p=$((p + 1)); done
    port[$w]=$p
    : >"$dir/sluice.$w.log"
    write_ini "$dir/sluice.$w.ini" "$p" "$dir/sluice.$w.log" "$w"
    "$@" "$top/build-bench/sluice" "$dir/sluice.$w.ini" &
    pid[$w]=$!
    pids+=($!)
    wait_port "${port[$w]}"
    local n
    n=$(sluice_workers "$dir/sluice.$w.log")
    [ "$n" = "$w" ] || { echo "sluice for workers=$w says it runs $n workers" >&2; exit 1; }
}

stop_sluice() {
    kill -INT "${pid[$1]}" 2>/dev/null || true
    wait "${pid[$1]}" 2>/dev/null || true
}

# pgbench through port $1 with the options that follow; started with & it
# is pgbench's own pid that $! gives (exec), so that it can be stopped.
pgb() {
    local p=$1
    shift
    PGSSLMODE=disable PGPASSWORD=scram_pw exec pgbench -h 127.0.0.1 -p "$p" -U sl_scram -S -M "$mode" "$@" sluice_test
}

# steady PGBENCH_PID LOG_PREFIX: returns once every pgbench thread logged
# transactions (its logins are over).
steady() {
    for _ in $(seq 1 600); do
        [ "$(ls "$2".* 2>/dev/null | wc -l)" -ge 2 ] && [ -s "$(ls "$2".* | head -n 1)" ] &&
            [ -s "$(ls "$2".* | tail -n 1)" ] && break
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    sleep 0.5
}

# thread_delta BEFORE AFTER -> "TID DUTIME DSTIME" per thread alive at both
thread_delta() {
    awk 'NR == FNR {u[$1] = $2; s[$1] = $3; next} ($1 in u) {print $1, $2 - u[$1], $3 - s[$1]}' "$1" "$2"
}

# measure W RUN: one timed run through the sluice with W workers; prints
# a table row and appends the raw figures to $dir/raw.
measure() {
    local w=$1 r=$2 logs="$dir/pgb.$1.$2" pg t0 t1 m0 m1 pg0 pg1 b0 b1 n lat
    rm -f "$logs".*
    (pgb "${port[$w]}" -c "$clients" -j 2 -T $((secs + 30)) -l --log-prefix="$logs") >"$dir/pgb.out" 2>&1 &
    pg=$!
    steady "$pg" "$logs"
    t0=$(date +%s.%N)
    task_ticks "${pid[$w]}" >"$dir/task.0"
    m0=$(machine_ticks)
    pg0=$(tree_ticks "$postmaster")
    b0=$(cpu_ticks "$pg")
    sleep "$secs"
    task_ticks "${pid[$w]}" >"$dir/task.1"
    m1=$(machine_ticks)
    pg1=$(tree_ticks "$postmaster")
    b1=$(cpu_ticks "$pg")
    t1=$(date +%s.%N)
    # pgbench's log is buffered: what the kill loses was written after t1.
    sleep 0.2
    kill -INT "$pg" 2>/dev/null || true
    wait "$pg" || true
    cat "$logs".* | awk -v t0="$t0" -v t1="$t1" '{t = $5 + $6 / 1e6} t >= t0 && t < t1 {print $3}' |
        sort -n >"$dir/lat"
    n=$(wc -l <"$dir/lat")
    if [ "$n" -eq 0 ]; then
        echo "| $r | $w | pgbench failed: $(tail -n 2 "$dir/pgb.out" | tr '\n' ' ') |"
        return
    fi
    lat=$(awk '{v[NR] = $1} END {printf "%.2f %.2f", v[int(NR * 0.5) + 1] / 1000, v[int(NR * 0.95) + 1] / 1000}' "$dir/lat")
    thread_delta "$dir/task.0" "$dir/task.1" >"$dir/task.d"
    # The row: totals, then each thread but the main one (tid = pid) in
    # the order they were made (worker 0 first), then the main thread.
    awk -v n="$n" -v hz="$tck" -v w="$w" -v r="$r" -v main="${pid[$w]}" -v lat="$lat" \
        -v t0="$t0" -v t1="$t1" -v m0="$m0" -v m1="$m1" -v pg0="$pg0" -v pg1="$pg1" \
        -v b0="$b0" -v b1="$b1" -v raw="$dir/raw" '
        function us(t) { return t * 1e6 / hz / n }
        { u += $2; s += $3; if ($1 == main) mt = $2 + $3; else if ($2 + $3 > 0) th = th (th ? " / " : "") sprintf("%.1f", us($2 + $3)) }
        END {
            split(lat, l, " "); split(m0, a, " "); split(m1, b, " ")
            busy = (b[1] - a[1]) / (b[2] - a[2]) * 100; steal = (b[3] - a[3]) / (b[2] - a[2]) * 100
            # what sluice, the primary and pgbench took of the busy time
            ours = (u + s + pg1 - pg0 + b1 - b0) / (b[1] - a[1]) * 100
            tps = n / (t1 - t0)
            printf "| %d | %d | %.0f | %s | %s | %.2f | %.0f / %.0f | %s; main %.2f | %.1f | %.1f | %.0f %% (%.0f %% of it ours, steal %.0f %%) |\n",
                r, w, tps, l[1], l[2], us(u + s), u / (u + s) * 100, s / (u + s) * 100, th, us(mt),
                us(pg1 - pg0), us(b1 - b0), busy, ours, steal
            printf "%d %.1f %s %s %.3f %.1f %.3f %.3f %.1f %.1f\n", w, tps, l[1], l[2], us(u + s),
                u / (u + s) * 100, us(pg1 - pg0), us(b1 - b0), busy, ours >> raw
        }' "$dir/task.d"
}

# One perf profile per count, in a run of its own (sampling costs CPU).
profile() {
    local w=$1 logs="$dir/perf.pgb.$1" f="$out/perf.w$1.data" pg
    command -v perf >/dev/null || { echo "perf is not installed: no profile" >&2; return; }
    rm -f "$logs".*
    (pgb "${port[$w]}" -c "$clients" -j 2 -T $((secs + 30)) -l --log-prefix="$logs") >/dev/null 2>&1 &
    pg=$!
    steady "$pg" "$logs"
    perf record -q -e cpu-clock -F 999 -g -p "${pid[$w]}" -o "$f" -- sleep "$secs" >/dev/null 2>&1 || true
    kill -INT "$pg" 2>/dev/null || true
    wait "$pg" || true
    [ -s "$f" ] || { echo "perf record gave nothing for workers=$w" >&2; return; }
    perf report -i "$f" --stdio --no-children -g none --sort pid >"$out/perf.w$w.threads.txt" 2>/dev/null || true
    perf report -i "$f" --stdio --no-children -g none --sort dso >"$out/perf.w$w.dso.txt" 2>/dev/null || true
    perf report -i "$f" --stdio --no-children -g none --sort sym >"$out/perf.w$w.sym.txt" 2>/dev/null || true
    perf report -i "$f" --stdio --no-children -g caller,0.5,callee --sort sym >"$out/perf.w$w.callers.txt" 2>/dev/null || true
    echo
    echo "perf, workers=$w (cpu-clock samples of sluice over ${secs} s; full reports in $out/perf.w$w.*.txt):"
    echo
    echo '```'
    for k in threads:6 dso:6 sym:25; do
        sed -e '/^#/d' -e '/^$/d' "$out/perf.w$w.${k%:*}.txt" | head -n "${k#*:}" || true
    done
    echo '```'
}

# Syscalls per transaction of the sluice with W workers, counted by the
# kernel's syscall tracepoints (perf stat: counting only) over a run of its
# own. With one worker a server never changes loops and the steady state
# makes no epoll_ctl; with several, a server handed to another worker leaves
# its loop's epoll set and joins the other's (epoll_ctl), and the message
# that carries it wakes the other loop (an eventfd write, and its read).
syscalls="epoll_wait epoll_ctl read write readv writev sendto sendmsg recvfrom futex"
syscall_row() {
    local w=$1 logs="$dir/sys.pgb.$1" pg t0 t1 n ev=""
    for c in $syscalls; do ev="$ev${ev:+,}syscalls:sys_enter_$c"; done
    rm -f "$logs".*
    (pgb "${port[$w]}" -c "$clients" -j 2 -T $((secs + 30)) -l --log-prefix="$logs") >/dev/null 2>&1 &
    pg=$!
    steady "$pg" "$logs"
    t0=$(date +%s.%N)
    perf stat -x, -e "$ev" -p "${pid[$w]}" -o "$dir/sys.$w" -- sleep "$secs" >/dev/null 2>&1 || true
    t1=$(date +%s.%N)
    sleep 0.2
    kill -INT "$pg" 2>/dev/null || true
    wait "$pg" || true
    n=$(cat "$logs".* | awk -v t0="$t0" -v t1="$t1" '{t = $5 + $6 / 1e6} t >= t0 && t < t1 {n++} END {print n + 0}')
    awk -F, -v n="$n" -v w="$w" -v list="$syscalls" '
        { sub(/^syscalls:sys_enter_/, "", $3); c[$3] = $1 }
        END {
            k = split(list, names, " "); row = "| " w " | " n
            for (i = 1; i <= k; i++) row = row sprintf(" | %.2f", n ? c[names[i]] / n : 0)
            print row " |"
        }' "$dir/sys.$w"
}

# Instructions per transaction per thread under callgrind.
cg_total() { # W TX -> one line "THREAD IR" per thread file, thread 1 first
    local w=$1 tx=$2 f="$out/cg.w$1.t$2"
    rm -f "$f"*
    start_sluice "$w" valgrind -q --tool=callgrind --separate-threads=yes --callgrind-out-file="$f"
    (pgb "${port[$w]}" -c "${CG_CLIENTS:-32}" -j 1 -t "$tx") >/dev/null 2>&1
    stop_sluice "$w"
    for t in "$f"-*; do
        echo "${t##*-} $(awk '/^(summary|totals):/ {print $2; exit}' "$t")"
    done | sort -n
}

# cg_funcs FILE... -> "IR<TAB>FUNCTION" summed over the threads' files
cg_funcs() {
    for t in "$@"; do
        callgrind_annotate --inclusive=no --threshold=100 "$t" 2>/dev/null |
            sed -n 's/^ *\([0-9,]*\) ( *[0-9.]*%)  \(.*\) \[.*$/\1\t\2/p'
    done | awk -F'\t' '{gsub(",", "", $1); sub(/^\?\?\?:/, "", $2); a[$2] += $1} END {for (k in a) print a[k] "\t" k}'
}

# cg_per_tx W SMALL BIG TX -> "FUNCTION<TAB>IR/TX", sorted by function
cg_per_tx() {
    cg_funcs "$out/cg.w$1.t$2"-* >"$dir/cgf.small"
    cg_funcs "$out/cg.w$1.t$3"-* >"$dir/cgf.big"
    awk -F'\t' -v tx="$4" 'NR == FNR {s[$2] = $1; next} {print $2 "\t" ($1 - s[$2]) / tx}' \
        "$dir/cgf.small" "$dir/cgf.big" | sort -t$'\t' -k1,1
}

callgrind() {
    command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
    local big=${CG_TX:-1200} small tx
    small=$((big / 4))
    tx=$(((big - small) * ${CG_CLIENTS:-32}))
    echo "sluice $commit, callgrind --separate-threads=yes, pgbench -S -M $mode, ${CG_CLIENTS:-32} clients," \
        "pool $pool, $small and $big transactions per client: Ir per transaction = difference / $tx"
    echo
    echo "| workers | Ir/tx, all threads | per thread (1 = main, then the workers) |"
    echo "| --- | --- | --- |"
    local first="" last=""
    for w in $counts; do
        cg_total "$w" "$small" >"$dir/cg.small"
        cg_total "$w" "$big" >"$dir/cg.big"
        # Which worker a client lands on differs from run to run (the
        # kernel's SO_REUSEPORT hash of its port): per thread, the long
        # run's share of the instructions, not a per-thread difference.
        join "$dir/cg.small" "$dir/cg.big" | awk -v tx="$tx" -v w="$w" '
            { id[NR] = $1; d[NR] = $3; all += $3 - $2; big += $3 }
            END {
                for (i = 1; i <= NR; i++)
                    if (d[i] * 1000 >= big) th = th (th ? ", " : "") sprintf("%d: %.0f %%", id[i], d[i] * 100 / big)
                printf "| %d | %.0f | %s |\n", w, all / tx, th
            }'
        cg_per_tx "$w" "$small" "$big" "$tx" >"$dir/cgf.w$w"
        [ -z "$first" ] && first=$w
        last=$w
    done
    [ "$first" = "$last" ] && return
    echo
    echo "Functions whose instructions per transaction differ by 20 or more, workers=$first against workers=$last:"
    echo
    echo "| function | workers=$first Ir/tx | workers=$last Ir/tx | difference |"
    echo "| --- | --- | --- | --- |"
    join -t$'\t' -a1 -a2 -e0 -o 0,1.2,2.2 "$dir/cgf.w$first" "$dir/cgf.w$last" |
        awk -F'\t' '{d = $3 - $2; if (d >= 20 || d <= -20) printf "%.0f\t| %s | %.0f | %.0f | %+.0f |\n", d, $1, $2, $3, d}' |
        sort -g -r | cut -f2
}

if [ "${CALLGRIND:-0}" = 1 ]; then
    callgrind
    exit 0
fi

for w in $counts; do start_sluice "$w"; done
# Warm-up: each sluice opens its pool before anything is measured.
for w in $counts; do
    (pgb "${port[$w]}" -c "$clients" -j 2 -T 3) >/dev/null 2>&1 || echo "warm-up with workers=$w failed" >&2
done
echo "sluice $commit, pgbench -S -M $mode, $clients clients, -j 2, ${secs} s per run, pool $pool," \
    "routing=$routing, $(nproc) cores; $(uptime | sed 's/.*load average/load average/')"
echo
echo "| run | workers | TPS | p50 ms | p95 ms | sluice us/tx | user / sys % | per thread us/tx (workers; main) | PostgreSQL us/tx | pgbench us/tx | machine busy |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
: >"$dir/raw"
read -r -a order <<<"$counts"
for r in $(seq 1 "$runs"); do
    # Odd runs in the given order, even runs reversed.
    seq_w=("${order[@]}")
    [ $((r % 2)) = 0 ] && mapfile -t seq_w < <(printf '%s\n' "${order[@]}" | tac)
    for w in "${seq_w[@]}"; do measure "$w" "$r"; done
done
echo
echo "Medians over the runs:"
echo
echo "| workers | TPS | p50 ms | p95 ms | sluice us/tx | user % | PostgreSQL us/tx | pgbench us/tx | machine busy % | of it ours % |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
for w in $counts; do
    awk -v w="$w" '$1 == w' "$dir/raw" >"$dir/raw.$w"
    [ -s "$dir/raw.$w" ] || continue
    row="| $w"
    for col in 2 3 4 5 6 7 8 9 10; do
        row="$row | $(cut -d' ' -f"$col" "$dir/raw.$w" | sort -g | awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}')"
    done
    echo "$row |"
done
if [ "${PERF:-0}" = 1 ]; then
    for w in $counts; do profile "$w"; done
    echo
    echo "Syscalls per transaction (perf stat on the syscall tracepoints, ${secs} s per count):"
    echo
    echo "| workers | transactions | $(echo $syscalls | sed 's/ / | /g') |"
    echo "| --- | --- |$(for _ in $syscalls; do printf ' --- |'; done)"
    for w in $counts; do syscall_row "$w"; done
fi
