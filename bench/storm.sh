#!/usr/bin/env bash
# Connection storms: pgbench -C (a new connection, SCRAM login included, for
# every transaction) straight to PostgreSQL and through sluice, in turns.
# PostgreSQL forks a backend per connection; sluice logs the client in
# itself and hands it a pooled server, so it should take new connections
# much faster than PostgreSQL does (issue 13: keep it at least 2x direct).
#
#   bash bench/storm.sh [SECONDS] [ROUNDS] [SLUICE_BIN]   (default 10 s, 2 rounds)
#
# pgbench -S -C, 16 clients, -j 2, SCRAM for clients (the client side's
# PBKDF2 is the same for both targets) and for sluice's backend logins;
# transaction pooling, pool of 20. sluice logs in to PostgreSQL with the
# auth_file's plaintext password through SCRAM keys derived once per salt
# and cached (bench_ini in lib.sh; the other workers take them from the
# ledger): the script counts the derivations sluice logged. WORKERS=N sets
# sluice's `workers` (unset: its default). Prints connections (=
# transactions) per second of each run, the ratio sluice/direct, the CPU
# per connection of the primary (direct: a forked backend each) and of
# sluice (its side of the SCRAM login, the transaction, the close), and
# pgbench's own: when the machine's cores are the limit, sluice/direct
# cannot exceed (pgbench + PostgreSQL) / (pgbench + sluice) per connection.
# CLIENT_ITER=N gives the role a SCRAM verifier of N rounds (PostgreSQL's
# is 4,096), in PostgreSQL and in sluice's auth_file, so that the client's
# PBKDF2, the same for both targets, no longer hides the servers' costs
# (the backend logins still use keys derived once from the entry's
# password).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
secs=${1:-10}
rounds=${2:-2}
bin=${3:-}
clients=16
bash tests/install-deps.sh
if [ -z "$bin" ]; then
    cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build build-bench -j2 --target sluice >/dev/null
    bin=$top/build-bench/sluice
fi
bin=$(realpath "$bin")

. "$top/bench/lib.sh"
bench_cluster sluice-storm

port=$(free_port)
bench_ini "$dir/sluice.ini" "$port" 20 "$dir/sluice.log"
if [ -n "${CLIENT_ITER:-}" ]; then
    # The role's SCRAM verifier made with CLIENT_ITER rounds (PostgreSQL
    # keeps a verifier as given), in PostgreSQL and in sluice's auth_file,
    # so that both targets ask pgbench for that many; sluice logs in to
    # PostgreSQL with the entry's password, through keys derived once.
    verifier=$(CLIENT_ITER=$CLIENT_ITER /usr/bin/python3 -c '
import base64, hashlib, hmac, os
n = int(os.environ["CLIENT_ITER"]); salt = os.urandom(16)
salted = hashlib.pbkdf2_hmac("sha256", b"scram_pw", salt, n)
ck = hmac.new(salted, b"Client Key", "sha256").digest()
sk = hmac.new(salted, b"Server Key", "sha256").digest()
b = lambda x: base64.b64encode(x).decode()
print(f"SCRAM-SHA-256${n}:{b(salt)}${b(hashlib.sha256(ck).digest())}:{b(sk)}")')
    psql -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d postgres \
        -c "ALTER ROLE sl_scram PASSWORD '$verifier'" >/dev/null
    printf '"sl_scram" "%s"\n' "$verifier" >"$dir/userlist.txt"
    sed -i "s/^sluice_test = .*/& password=scram_pw/" "$dir/sluice.ini"
fi
"$bin" "$dir/sluice.ini" &
pids+=($!)
wait_port "$port"
nworkers=$(sluice_workers "$dir/sluice.log")

sluice_pid=${pids[-1]}
tck=$(getconf CLK_TCK)

postmaster=$(head -n 1 "$dir/pg/primary/postmaster.pid")
# The primary's CPU: the postmaster's own and that of the children it
# reaped (cutime, cstime), where each ended connection's backend is.
pg_ticks() { awk '{print $14 + $15 + $16 + $17}' "/proc/$postmaster/stat"; }

# rate PORT [PID] -> "CONN/S US/CONN PGB_US/CONN": transactions (each on a
# new connection) per second, the CPU microseconds per connection of
# process PID (sluice), or without one of the primary (its backends, forked
# per connection), and pgbench's own (its client side of each SCRAM login
# is a PBKDF2 of 4,096 rounds, on the same cores).
rate() {
    local before after out n pgb
    before=$([ -n "${2:-}" ] && cpu_ticks "$2" || pg_ticks)
    # `times` after pgbench: the subshell's children's user and system time.
    out=$(PGPASSWORD=scram_pw pgbench -h 127.0.0.1 -p "$1" -U sl_scram -S -C -c "$clients" -j 2 \
        -T "$secs" sluice_test 2>&1; times)
    sleep 0.3 # the last backends exit and are reaped
    after=$([ -n "${2:-}" ] && cpu_ticks "$2" || pg_ticks)
    n=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
    pgb=$(echo "$out" | tail -n 1 | awk '{s = 0; for (i = 1; i <= 2; i++) {split($i, a, /[ms]/); s += a[1] * 60 + a[2]} print s}')
    echo "$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p') $(awk -v p="${2:-}" -v t=$((after - before)) \
        -v n="${n:-0}" -v hz="$tck" -v g="$pgb" 'BEGIN{
            if (n > 0) printf "%.0f ", t * 1e6 / hz / n; else printf "? "
            if (n > 0) printf "%.0f", g * 1e6 / n; else printf "?"}')"
}

echo "sluice $(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo '?'), workers=$nworkers, $clients clients, ${secs} s per target and round," \
    "SCRAM with ${CLIENT_ITER:-4096} rounds for the client"
echo
echo "| round | workers | direct conn/s | sluice conn/s | sluice/direct | CPU us/conn: PostgreSQL direct / sluice | pgbench CPU us/conn: direct / through sluice |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) = 1 ]; then
        read -r d dcpu dg <<<"$(rate "$PRIMARY_PORT")"
        read -r s scpu sg <<<"$(rate "$port" "$sluice_pid")"
    else
        read -r s scpu sg <<<"$(rate "$port" "$sluice_pid")"
        read -r d dcpu dg <<<"$(rate "$PRIMARY_PORT")"
    fi
    echo "| $r | $nworkers | ${d:-?} | ${s:-?} |" \
        "$(awk -v a="${s:-0}" -v b="${d:-0}" 'BEGIN{if (b > 0) printf "%.2f", a / b; else print "?"}') |" \
        "${dcpu:-?} / ${scpu:-?} | ${dg:-?} / ${sg:-?} |"
done
# The backend logins' path: one derivation per salt (the pool's first
# login; a worker that logs in before the keys are shared derives its own).
echo
echo "backend logins: $(grep -c 'SCRAM keys derived from the configured password' "$dir/sluice.log" || true)" \
    "PBKDF2 derivation(s) logged by sluice, $(grep -c 'started pid' "$dir/sluice.log" || true) start"
