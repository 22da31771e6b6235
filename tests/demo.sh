#!/usr/bin/env bash
# Try sluice: installs what is missing, builds, starts a throwaway PostgreSQL
# 15 primary with two streaming replicas and sluice in front of them, and
# prints the psql line to connect. Ctrl-C stops and removes everything.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
bash tests/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc 2>/dev/null || echo 2)" >/dev/null

dir=$(mktemp -d /tmp/sluice-demo.XXXXXX)
chmod 755 "$dir" # the PostgreSQL servers run as postgres inside it
sluice_pid=
cleanup() {
    trap - EXIT INT TERM
    [ -n "$sluice_pid" ] && kill -INT "$sluice_pid" 2>/dev/null && wait "$sluice_pid" 2>/dev/null
    "$top/tests/fixture/cluster.sh" stop "$dir/pg" || true
    rm -rf "$dir"
    echo "stopped; removed $dir"
}
trap cleanup EXIT INT TERM

"$top/tests/fixture/cluster.sh" start "$dir/pg"
. "$dir/pg/cluster.env"
port=6432
while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
mport=9127
while (exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null; do mport=$((mport + 1)); done

cat >"$dir/userlist.txt" <<USERS
"sl_scram" "scram_pw"
"sl_md5" "md5_pw"
USERS
cat >"$dir/sluice.ini" <<INI
[databases]
; reads to the replicas, writes to the primary
sluice_test = host=127.0.0.1 port=$PRIMARY_PORT replicas=127.0.0.1:$REPLICA1_PORT,127.0.0.1:$REPLICA2_PORT
; a read-only alias
sluice_test_ro = host=127.0.0.1 port=$PRIMARY_PORT dbname=sluice_test replicas=127.0.0.1:$REPLICA1_PORT,127.0.0.1:$REPLICA2_PORT routing=replica
* = host=127.0.0.1 port=$PRIMARY_PORT

[sluice]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir = $dir
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 10
; the admin console (dbname=pgbouncer) and the metrics endpoint
admin_users = sl_scram
ignore_startup_parameters = extra_float_digits
metrics_listen = 127.0.0.1:$mport
INI
"$top/build/sluice" "$dir/sluice.ini" &
sluice_pid=$!
for _ in $(seq 1 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
cat <<MSG

sluice is running (pid $sluice_pid), pooling in transaction mode in front of
PostgreSQL primary :$PRIMARY_PORT, sending reads to its replicas :$REPLICA1_PORT
and :$REPLICA2_PORT. Connect through sluice with:

  PGPASSWORD=scram_pw psql "host=127.0.0.1 port=$port user=sl_scram dbname=sluice_test"

Try: SELECT inet_server_port(), pg_is_in_recovery();   (a replica)
     BEGIN; SELECT inet_server_port(); COMMIT;          (the primary)

The admin console (SHOW POOLS; SHOW CLIENTS; SHOW REPLICAS; SHOW HELP):

  PGPASSWORD=scram_pw psql "host=127.0.0.1 port=$port user=sl_scram dbname=pgbouncer"

Metrics: curl -s http://127.0.0.1:$mport/metrics   Health: curl -s http://127.0.0.1:$mport/health

Config: $dir/sluice.ini   Press Ctrl-C to stop everything.
MSG
wait "$sluice_pid"
