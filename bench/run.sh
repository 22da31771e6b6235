#!/usr/bin/env bash
# Side-by-side benchmark in one run: pgbench -S straight to PostgreSQL,
# through sluice and through PgBouncer (Debian's package), transaction
# pooling with a pool of 20, -M simple, extended and prepared, 64 clients.
# Prints and writes bench/RESULTS.md: TPS, mean latency and each proxy's own
# CPU microseconds per transaction (utime+stime from /proc/PID/stat).
#
# The routing rows run sluice alone (PgBouncer has no replicas): the same
# pgbench -S through a database with two replicas, routing = primary (every
# transaction to the primary, replicas health-checked) and routing = auto
# (each transaction classified and sent to a replica): the cost of routing.
#
#   bash bench/run.sh [SECONDS]       (default 20 per run)
#
# WORKERS=N sets sluice's `workers` (unset: sluice's default); the table's
# header gives the count sluice logged at start.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
secs=${1:-20}
clients=64
bash tests/install-deps.sh
ulimit -n 16384 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-bench -j"$(nproc)" >/dev/null

. "$top/bench/lib.sh"
bench_cluster sluice-bench 1

# The same settings for both proxies; only the section name and port differ.
write_ini() { # file section port logfile tls-key [more databases]
    proxy_ini "$1" "$2" "$3" "$4" 20 3000 scram-sha-256 "${6:+$'\n'$6}"
    cat >>"$1" <<INI
; clients may use TLS (the -M simple+tls rows); backends are plain text
client_tls_sslmode = allow
client_tls_cert_file = $dir/pg/tls/server.crt
client_tls_key_file = $5
server_tls_sslmode = disable
INI
    if [ "$2" = sluice ]; then bench_workers_ini >>"$1"; fi
}
SLUICE_PORT=$(free_port)
replicas="replicas=127.0.0.1:$REPLICA1_PORT,127.0.0.1:$REPLICA2_PORT"
write_ini "$dir/sluice.ini" sluice "$SLUICE_PORT" "$dir/sluice.log" "$dir/pg/tls/server.key" \
    "rt_primary = host=127.0.0.1 port=$PRIMARY_PORT dbname=sluice_test $replicas routing=primary
rt_auto = host=127.0.0.1 port=$PRIMARY_PORT dbname=sluice_test $replicas routing=auto"
"$top/build-bench/sluice" "$dir/sluice.ini" &
pids+=($!)
SLUICE_PID=$!
wait_port "$SLUICE_PORT"
nworkers=$(sluice_workers "$dir/sluice.log")

PGB_PORT=$(free_port)
[ "$PGB_PORT" = "$SLUICE_PORT" ] && PGB_PORT=$((PGB_PORT + 1))
# PgBouncer runs as postgres: it reads the key copy the postgres user owns.
write_ini "$dir/pgbouncer.ini" pgbouncer "$PGB_PORT" "$dir/pgbouncer.log" "$dir/pg/tls/pg-server.key"
start_pgbouncer "$dir/pgbouncer.ini" "$PGB_PORT"
pids+=("$PGB_PID")

tck=$(getconf CLK_TCK)

results=()
run() { # name port pid mode[+tls] [database]
    local name=$1 port=$2 pid=$3 mode=${4%+tls} db=${5:-sluice_test} before after out tps lat txs cpu ssl=disable
    [ "$4" != "$mode" ] && ssl=require
    [ -n "$pid" ] && before=$(cpu_ticks "$pid")
    out=$(PGSSLMODE=$ssl PGPASSWORD=scram_pw pgbench -h 127.0.0.1 -p "$port" -U sl_scram -S -M "$mode" \
        -c "$clients" -j 2 -T "$secs" "$db" 2>&1)
    [ -n "$pid" ] && after=$(cpu_ticks "$pid")
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    lat=$(echo "$out" | sed -n 's/^latency average = \([0-9.]*\) ms/\1/p')
    txs=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
    failed=$(echo "$out" | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p')
    cpu="-"
    if [ -n "$pid" ] && [ "${txs:-0}" -gt 0 ]; then
        cpu=$(awk -v t=$((after - before)) -v n="$txs" -v hz="$tck" 'BEGIN{printf "%.1f", t * 1e6 / hz / n}')
    fi
    results+=("| $name | $4 | ${tps:-?} | ${lat:-?} | $cpu | ${txs:-?} | ${failed:-?} |")
    echo "${results[-1]}" >&2
}

# -M prepared: named statements bound in every transaction. PgBouncer 1.18
# (Debian 12) cannot do this in transaction pooling ("prepared statement
# does not exist"), so only sluice and the direct baseline run it.
for mode in simple extended prepared; do
    run direct "$PRIMARY_PORT" "" "$mode"
    run sluice "$SLUICE_PORT" "$SLUICE_PID" "$mode"
    [ "$mode" = prepared ] || run pgbouncer "$PGB_PORT" "$PGB_PID" "$mode"
done
# Clients over TLS (TLS 1.3, sessions kept for the whole run): the cost of
# encryption in each proxy. The primary has ssl = on but the proxies talk to
# it in plain text, and the direct row is plain text too.
run sluice "$SLUICE_PORT" "$SLUICE_PID" simple+tls
run pgbouncer "$PGB_PORT" "$PGB_PID" simple+tls
# Routing: the replicas have replayed pgbench's tables long before this.
run "sluice routing=primary" "$SLUICE_PORT" "$SLUICE_PID" simple rt_primary
run "sluice routing=auto" "$SLUICE_PORT" "$SLUICE_PID" simple rt_auto

rss() { awk "/$2/"'{print $2}' "/proc/$1/status"; }

# Bytes per idle client: RSS before and while $idle clients sit connected.
idle=2000
idle_row() { # name port pid
    local before after
    before=$(rss "$3" VmRSS)
    coproc IDLE { "$top/build-bench/bench/idle_clients" \
        "host=127.0.0.1 port=$2 dbname=sluice_test user=sl_scram password=scram_pw sslmode=disable connect_timeout=10" \
        "$idle"; }
    read -r line <&"${IDLE[0]}" || true
    after=$(rss "$3" VmRSS)
    exec {IDLE[1]}>&-
    wait "$IDLE_PID" || true
    [ "$line" = ready ] || { echo "idle clients failed for $1" >&2; return; }
    echo "| $1 | $idle | $before | $after | $(( (after - before) * 1024 / idle )) |"
}
idle_rows=$(idle_row sluice "$SLUICE_PORT" "$SLUICE_PID"; idle_row pgbouncer "$PGB_PORT" "$PGB_PID")
echo "$idle_rows" >&2

# Peak RSS while streaming a 200 MB result through each proxy.
stream_row() { # name port pid
    local t0 t1
    t0=$(date +%s.%N)
    PGSSLMODE=disable PGPASSWORD=scram_pw psql -X -q -h 127.0.0.1 -p "$2" -U sl_scram sluice_test \
        -c "COPY (SELECT repeat('x', 1000) FROM generate_series(1, 200000)) TO STDOUT" >/dev/null
    t1=$(date +%s.%N)
    echo "| $1 | $(rss "$3" VmHWM) | $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b - a}') |"
}
stream_rows=$(stream_row sluice "$SLUICE_PORT" "$SLUICE_PID"; stream_row pgbouncer "$PGB_PORT" "$PGB_PID")
echo "$stream_rows" >&2
{
    echo "## Latest run: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r)"
    echo
    echo "Command: \`bash bench/run.sh $secs\` (pgbench -S, $clients clients, -j 2, ${secs} s each,"
    echo "scale 10, transaction pooling, pool of 20, SCRAM on both sides; sluice $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?') with workers = $nworkers,"
    echo "PgBouncer $(/usr/sbin/pgbouncer --version | head -n 1 | awk '{print $2}'))."
    echo
    echo "| target | -M | TPS | mean latency ms | proxy CPU us/tx | transactions | failed |"
    echo "| --- | --- | --- | --- | --- | --- | --- |"
    printf '%s\n' "${results[@]}"
    echo
    echo "Idle clients (RSS in kB, before and while $idle idle clients are connected):"
    echo
    echo "| proxy | idle clients | RSS before | RSS with clients | bytes per idle client |"
    echo "| --- | --- | --- | --- | --- |"
    echo "$idle_rows"
    echo
    echo "Streaming a 200 MB result (COPY of 200,000 rows of 1,000 bytes) to psql:"
    echo
    echo "| proxy | peak RSS (VmHWM, kB) over the whole run | seconds |"
    echo "| --- | --- | --- |"
    echo "$stream_rows"
} >"$dir/table.md"
cat "$dir/table.md"
if [ -f bench/RESULTS.md ]; then
    awk '/^## Latest run/{exit} {print}' bench/RESULTS.md >"$dir/head.md"
else
    printf '# Benchmarks\n\n' >"$dir/head.md"
fi
cat "$dir/head.md" "$dir/table.md" >bench/RESULTS.md
