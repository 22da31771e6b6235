#!/usr/bin/env bash
# Soak with a ledger: sluice in transaction pooling in front of its own
# PostgreSQL primary and replicas (bench/lib.sh), under everything at once
# for MINUTES:
#
#   pgbench TPC-B (-M extended)             writes; pgbench_history is its ledger
#   (every pgbench at a fixed rate, -R)
#   pgbench -M prepared, a ledger script    one ledger row per transaction,
#                                           with a random client-side id
#   pgbench -S through a routed database    reads sent to a replica
#   bench/soak_clients.py                   writers with sequential ids and a
#                                           running total, COPY IN/OUT checked
#                                           row by row, cancels of running
#                                           queries, reads through the routed
#                                           database (counting replica answers)
#   pgbench -C -S bursts                    reconnect storms, every 20 s
#
# Then, straight from the primary: each ledger holds exactly what the
# clients saw committed (lost = expected - found, duplicated = rows beyond
# the distinct ids), TPC-B's balances add up, no client saw an error other
# than the cancels it asked for, sluice logged no error or warning, and
# sluice's RSS and open fds (sampled every 5 s) are flat after a warm-up of
# a fifth of the run: the highest of the last quarter of the samples is at
# most the highest of the quarter after warm-up plus 10% + 4 MB (RSS) or
# plus 8 (fds), and once every client has left, fds are back within the
# pools' servers of where they were before the load.
#
#   bash bench/soak.sh [--record] [MINUTES]     (default 10)
#
# Prints a one-line verdict; exit status 0 only on PASS. --record adds the
# verdict to the "## Soak" section of bench/RESULTS.md. SLUICE_BIN: the
# binary (default build/sluice, built if missing); SOAK_LOG_DIR: where
# sluice's log goes (kept; default the temp dir, removed at exit).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
record=0
if [ "${1:-}" = --record ]; then record=1; shift; fi
minutes=${1:-10}
secs=$(awk -v m="$minutes" 'BEGIN{printf "%d", m * 60}')
[ "$secs" -ge 60 ] || { echo "soak: MINUTES must be at least 1" >&2; exit 2; }
pool=10

bin=${SLUICE_BIN:-$top/build/sluice}
if [ ! -x "$bin" ]; then
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build -j2 >/dev/null
fi
ulimit -n 4096 2>/dev/null || true

. "$top/bench/lib.sh"
BENCH_SCALE=2 bench_cluster sluice-soak
log=${SOAK_LOG_DIR:+$SOAK_LOG_DIR/soak.$$.log}
log=${log:-$dir/sluice.log}
[ -n "${SOAK_LOG_DIR:-}" ] && mkdir -p "$SOAK_LOG_DIR"

psql_p() { # SQL straight to the primary, as postgres
    psql -X -q -At -v ON_ERROR_STOP=1 -h "$SOCKDIR" -p "$PRIMARY_PORT" -U postgres sluice_test "$@"
}
psql_p <<'SQL'
CREATE TABLE ledger (src text NOT NULL, id bigint NOT NULL, amount int NOT NULL);
CREATE TABLE ledger_total (src text PRIMARY KEY, total bigint NOT NULL DEFAULT 0,
                           n bigint NOT NULL DEFAULT 0);
INSERT INTO ledger_total (src) SELECT 'py' || i FROM generate_series(0, 2) i;
CREATE TABLE soak_copy (batch int NOT NULL, n int NOT NULL, payload text);
CREATE INDEX ON soak_copy (batch);
GRANT ALL ON ledger, ledger_total, soak_copy TO sl_scram;
SQL
# The replicas have replayed the tables before any read is routed.
lsn=$(psql_p -c "SELECT pg_current_wal_lsn()")
for port in "$REPLICA1_PORT" "$REPLICA2_PORT"; do
    for _ in $(seq 1 100); do
        [ "$(psql -X -At -h "$SOCKDIR" -p "$port" -U postgres sluice_test \
            -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'")" = t ] && break
        sleep 0.1
    done
done

# A port found free may be taken (by a client's ephemeral port) before
# sluice binds it: then another.
for attempt in 1 2 3 4; do
    SLUICE_PORT=$(free_port)
    bench_ini "$dir/sluice.ini" "$SLUICE_PORT" "$pool" "$log"
    # A second database over the same primary that routes each read-only
    # transaction to a replica; clients up to the storms' peak.
    sed -i "/^\[databases\]/a soak_ro = host=127.0.0.1 port=$PRIMARY_PORT dbname=sluice_test replicas=127.0.0.1:$REPLICA1_PORT,127.0.0.1:$REPLICA2_PORT routing=auto" \
        "$dir/sluice.ini"
    echo "max_client_conn = 1000" >>"$dir/sluice.ini"
    : >"$log"
    "$bin" "$dir/sluice.ini" 2>>"$dir/sluice.err" &
    SLUICE_PID=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$SLUICE_PORT") 2>/dev/null && break
        kill -0 "$SLUICE_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$SLUICE_PID" 2>/dev/null && break
    grep -q 'cannot listen' "$dir/sluice.err" "$log" 2>/dev/null && [ "$attempt" -lt 4 ] ||
        { echo "soak: sluice did not start: $(tail -n 3 "$dir/sluice.err")" >&2; exit 1; }
    : >"$dir/sluice.err"
done
pids+=("$SLUICE_PID")
wait_port "$SLUICE_PORT"

sample() { # RSS kB and open fds of sluice, as "rss fds"
    echo "$(awk '/^VmRSS/{print $2}' "/proc/$SLUICE_PID/status") $(ls "/proc/$SLUICE_PID/fd" | wc -l)"
}
idle_before=$(sample)

export PGPASSWORD=scram_pw PGSSLMODE=disable
pgb() { pgbench -n -h 127.0.0.1 -p "$SLUICE_PORT" -U sl_scram "$@"; }
cat >"$dir/ledger.sql" <<'SQL'
\set id random(1, 9000000000000000000)
\set amount random(1, 1000)
BEGIN;
INSERT INTO ledger (src, id, amount) VALUES ('pgbench', :id, :amount);
SELECT count(*) FROM pgbench_branches;
COMMIT;
SQL

start=$(date +%s)
# Rates (-R, per second) keep the machine usable for others: a soak is
# about time and concurrency, not throughput.
pgb -c 3 -j 1 -T "$secs" -R 150 -M extended sluice_test >"$dir/tpcb.out" 2>&1 &
tpcb=$!
pgb -c 3 -j 1 -T "$secs" -R 300 -M prepared -f "$dir/ledger.sql" sluice_test >"$dir/prepared.out" 2>&1 &
prepared=$!
pgb -c 3 -j 1 -T "$secs" -R 500 -S soak_ro >"$dir/select.out" 2>&1 &
select_only=$!
/usr/bin/python3 "$top/bench/soak_clients.py" \
    "host=127.0.0.1 port=$SLUICE_PORT user=sl_scram dbname=sluice_test" \
    "host=127.0.0.1 port=$SLUICE_PORT user=sl_scram dbname=soak_ro" "$secs" 3 \
    >"$dir/clients.json" 2>"$dir/clients.err" &
clients=$!
pids+=("$tpcb" "$prepared" "$select_only" "$clients")

# Reconnect storms and samples until the run's end.
storms=0
: >"$dir/storms.out"
samples=()
next_storm=$((start + 10))
while [ $(($(date +%s) - start)) -lt "$secs" ]; do
    now=$(date +%s)
    if [ "$now" -ge "$next_storm" ] && [ $((now - start + 6)) -lt "$secs" ]; then
        pgb -C -S -c 12 -j 2 -T 4 -R 300 sluice_test >>"$dir/storms.out" 2>&1 || echo "storm failed" >>"$dir/storms.out"
        storms=$((storms + 1))
        next_storm=$((now + 20))
    fi
    samples+=("$(($(date +%s) - start)) $(sample)")
    sleep 5
done
rc=0
for p in "$tpcb" "$prepared" "$select_only" "$clients"; do wait "$p" || rc=1; done

# Every client has left: fds back to the listeners and the pooled servers.
sleep 2
idle_after=$(sample)

# ---- the verdict ----
problems=()
processed() { sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$1" | head -n 1; }
failed() { sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$1" | head -n 1; }
[ "$rc" = 0 ] || problems+=("a client process failed")
for f in tpcb prepared select storms; do
    grep -qiE 'error|abort|fatal|storm failed' "$dir/$f.out" && problems+=("pgbench $f: $(grep -iE 'error|abort|fatal|storm failed' "$dir/$f.out" | head -n 1)")
    for n in $(failed "$dir/$f.out"); do [ "$n" = 0 ] || problems+=("pgbench $f: $n failed transactions"); done
done
n_tpcb=$(processed "$dir/tpcb.out")
n_prep=$(processed "$dir/prepared.out")
n_sel=$(processed "$dir/select.out")
n_storm=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$dir/storms.out" |
    awk '{s += $1} END {print s + 0}')
py=$(/usr/bin/python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$dir/clients.json" 2>&1 &&
    cat "$dir/clients.json" || echo '{}')
jq_() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "$dir/clients.json"; }
if [ "$py" = '{}' ]; then
    problems+=("soak_clients.py gave no result: $(tail -n 3 "$dir/clients.err")")
    py_tx=0 cancels=0 misses=0 replica_reads=0 copy_rows=0
else
    py_tx=$(jq_ 'd["transactions"]')
    cancels=$(jq_ 'd["cancels"]')
    misses=$(jq_ 'd["cancel_misses"]')
    replica_reads=$(jq_ 'd["replica_reads"]')
    copy_rows=$(jq_ 'd["copy_rows"]')
    while IFS= read -r e; do [ -n "$e" ] && problems+=("client error: $e"); done \
        < <(jq_ '"\n".join(d["errors"])')
fi

# The ledgers, straight from the primary. expected found distinct per source.
lost=0 dup=0
ledger() { # name expected found distinct
    local miss=$(($2 > $3 ? $2 - $3 : 0)) extra=$(($3 - $4 + ($3 > $2 ? $3 - $2 : 0)))
    [ $((miss + extra)) = 0 ] || problems+=("ledger $1: expected $2, found $3 rows, $4 distinct")
    lost=$((lost + miss)) dup=$((dup + extra))
}
ledger "pgbench TPC-B (pgbench_history)" "${n_tpcb:-0}" "$(psql_p -c 'SELECT count(*) FROM pgbench_history')" \
    "$(psql_p -c 'SELECT count(*) FROM pgbench_history')"
read -r c d < <(psql_p -F ' ' -c "SELECT count(*), count(DISTINCT id) FROM ledger WHERE src = 'pgbench'")
ledger "pgbench -M prepared" "${n_prep:-0}" "$c" "$d"
for i in 0 1 2; do
    [ "$py" = '{}' ] && break
    want=$(jq_ "d['writes'].get('py$i', 0)")
    sum=$(jq_ "d['write_sums'].get('py$i', 0)")
    read -r c d s t n < <(psql_p -F ' ' -c "SELECT count(*), count(DISTINCT id), coalesce(sum(amount), 0),
        (SELECT total FROM ledger_total WHERE src = 'py$i'), (SELECT n FROM ledger_total WHERE src = 'py$i')
        FROM ledger WHERE src = 'py$i'")
    ledger "writer py$i" "$want" "$c" "$d"
    [ "$s" = "$sum" ] && [ "$t" = "$sum" ] && [ "$n" = "$want" ] ||
        problems+=("writer py$i: client sum $sum, ledger sum $s, running total $t over $n transactions")
done
# COPY: every batch whole and once (batch ids are the client's).
read -r c d < <(psql_p -F " " -c "SELECT coalesce(sum(k), 0), coalesce(sum(u), 0) FROM (SELECT batch, count(*) k,
    count(DISTINCT n) u FROM soak_copy GROUP BY batch) b")
ledger "COPY rows" "$copy_rows" "${c:-0}" "${d:-0}"
read -r a b t h < <(psql_p -F ' ' -c "SELECT (SELECT sum(abalance) FROM pgbench_accounts),
    (SELECT sum(bbalance) FROM pgbench_branches), (SELECT sum(tbalance) FROM pgbench_tellers),
    (SELECT coalesce(sum(delta), 0) FROM pgbench_history)")
[ "$a" = "$h" ] && [ "$b" = "$h" ] && [ "$t" = "$h" ] ||
    problems+=("TPC-B balances do not add up: accounts $a, branches $b, tellers $t, history $h")
[ "${replica_reads:-0}" -gt 0 ] || problems+=("no read was answered by a replica")
[ "${cancels:-0}" -gt 0 ] || problems+=("no cancel took effect")

# sluice's own log: no error, no warning.
bad_lines=$(grep -cE 'level=(error|warn)' "$log" || true)
[ "$bad_lines" = 0 ] || problems+=("sluice logged $bad_lines errors or warnings, first: $(grep -m1 -E 'level=(error|warn)' "$log")")
kill -0 "$SLUICE_PID" 2>/dev/null || problems+=("sluice is not running any more")

# RSS and fds: flat after warm-up.
printf '%s\n' "${samples[@]}" >"$dir/samples.txt"
read -r rss0 fds0 rss1 fds1 rss_first fds_first rss_last fds_last < <(awk -v warm=$((secs / 5)) '
    BEGIN { n = 0 }
    $1 >= warm { t[n] = $1; r[n] = $2; f[n] = $3; n++ }
    END {
        q = int(n / 4); if (q < 1) q = 1
        for (i = 0; i < q; i++) { if (r[i] > rf) rf = r[i]; if (f[i] > ff) ff = f[i] }
        for (i = n - q; i < n; i++) { if (r[i] > rl) rl = r[i]; if (f[i] > fl) fl = f[i] }
        print r[0], f[0], r[n - 1], f[n - 1], rf, ff, rl, fl
    }' "$dir/samples.txt")
rss_bound=$((rss_first + rss_first / 10 + 4096))
fds_bound=$((fds_first + 8))
[ "$rss_last" -le "$rss_bound" ] ||
    problems+=("RSS grew after warm-up: highest $rss_first kB then $rss_last kB (bound $rss_bound)")
[ "$fds_last" -le "$fds_bound" ] ||
    problems+=("fds grew after warm-up: highest $fds_first then $fds_last (bound $fds_bound)")
read -r _ idle_fds0 <<<"$idle_before"
read -r _ idle_fds1 <<<"$idle_after"
# Idle, sluice may keep each pool's servers: 2 pools on the primary, one per replica.
idle_bound=$((idle_fds0 + 4 * pool))
[ "$idle_fds1" -le "$idle_bound" ] ||
    problems+=("idle fds $idle_fds0 before the load, $idle_fds1 after it (bound $idle_bound)")

total=$(( ${n_tpcb:-0} + ${n_prep:-0} + ${n_sel:-0} + n_storm + py_tx ))
verdict="PASS"
[ ${#problems[@]} = 0 ] || verdict="FAIL"
line="soak: $verdict $minutes min, $total transactions (TPC-B ${n_tpcb:-0}, prepared ledger ${n_prep:-0}, routed -S ${n_sel:-0}, $storms storms ${n_storm}, own clients $py_tx incl. $copy_rows COPY rows, $replica_reads replica reads), lost=$lost duplicated=$dup, injected cancels $cancels (missed $misses), problems ${#problems[@]}, RSS $rss0->$rss1 kB (bound $rss_bound), fds $fds0->$fds1 (bound $fds_bound; idle $idle_fds0->$idle_fds1)"
for p in "${problems[@]}"; do echo "soak: problem: $p" >&2; done
[ "$verdict" = PASS ] || { echo "---- last lines of $log ----" >&2; tail -n 30 "$log" >&2; }
echo "$line"

if [ "$record" = 1 ]; then
    commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?')
    row="| $(date -u '+%Y-%m-%d %H:%M') | $commit | $minutes | $total | $lost | $dup | $cancels | $rss0 / $rss1 | $fds0 / $fds1 | $verdict |"
    /usr/bin/python3 - "$top/bench/RESULTS.md" "$row" <<'PY'
import sys
path, row = sys.argv[1], sys.argv[2]
text = open(path).read()
head = ("## Soak\n\n"
        "`bash bench/soak.sh --record MINUTES` (see the script's header): transaction pooling, "
        "pool of 10, SCRAM, a primary and two replicas, TPC-B, a -M prepared ledger script, "
        "routed -S, writers with client-side ids, COPY in/out, cancels and reconnect storms at "
        "once. Transactions are all clients' together; lost and duplicated are ledger rows "
        "against the clients' own count of committed writes; RSS (kB) and fds are sluice's, "
        "after warm-up (a fifth of the run) and at the end of the load; a run passes when the "
        "highest of the last quarter of the samples (every 5 s) is at most the highest of the "
        "first quarter after warm-up plus 10% + 4 MB (RSS) or plus 8 (fds).\n\n"
        "| date (UTC) | commit | minutes | transactions | lost | duplicated | cancels | "
        "RSS start / end | fds start / end | verdict |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
if "## Soak\n" in text:
    start = text.index("## Soak\n")
    nxt = text.find("\n## ", start + 1)
    end = len(text) if nxt < 0 else nxt + 1
    section = text[start:end].rstrip("\n") + "\n" + row + "\n"
    text = text[:start] + section + ("\n" if nxt >= 0 else "") + text[end:]
else:
    # Before "## Latest run", which bench/run.sh rewrites with all after it.
    at = text.find("## Latest run")
    at = len(text) if at < 0 else at
    text = text[:at] + head + row + "\n\n" + text[at:]
open(path, "w").write(text)
PY
fi
[ "$verdict" = PASS ]
