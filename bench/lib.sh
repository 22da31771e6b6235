# Shared by the bench scripts (sourced, not run): a temp dir with a throwaway
# PostgreSQL cluster initialised for pgbench, stopped with every process the
# script started when it exits; a sluice.ini in front of it; free ports;
# CPU ticks of a process.
#
#   bench_cluster PREFIX [TLS]   sets dir, pids (append proxy pids to it) and
#                                the cluster.env variables (PRIMARY_PORT, ...)

bench_cleanup() {
    for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    sleep 0.5
    "$top/tests/fixture/cluster.sh" stop "$dir/pg" || true
    rm -rf "$dir"
}

bench_cluster() {
    dir=$(mktemp -d "/tmp/$1.XXXXXX")
    chmod 755 "$dir"
    pids=()
    trap bench_cleanup EXIT INT TERM
    # CLUSTER_TLS=1: a throwaway CA and certificates for the client-TLS rows.
    CLUSTER_TLS=${2:-0} "$top/tests/fixture/cluster.sh" start "$dir/pg" >/dev/null
    . "$dir/pg/cluster.env"
    PGPASSWORD=scram_pw pgbench -i -s "${BENCH_SCALE:-10}" -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U sl_scram \
        sluice_test >/dev/null 2>&1
    printf '"sl_scram" "scram_pw"\n' >"$dir/userlist.txt"
}

# bench_ini FILE PORT POOL_SIZE LOG: a transaction-pooling sluice.ini in
# front of the cluster's primary, SCRAM on both sides, quiet logs.
bench_ini() {
    cat >"$1" <<INI
[databases]
sluice_test = host=127.0.0.1 port=$PRIMARY_PORT
[sluice]
listen_addr = 127.0.0.1
listen_port = $2
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $3
log_connections = 0
log_disconnections = 0
logfile = $4
INI
}

free_port() {
    local p=$((20000 + RANDOM % 30000))
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    exit 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Starts PgBouncer (Debian's, as the postgres user when run as root) on the
# ini file $1 written by write_ini, listening on port $2; sets PGB_PID.
start_pgbouncer() {
    local ini=$1 port=$2 d
    d=$(dirname "$ini")
    echo "pidfile = $d/pgbouncer.pid" >>"$ini"
    chown -R postgres "$ini" "$d/userlist.txt" 2>/dev/null || true
    chmod 777 "$d"
    if [ "$(id -u)" = 0 ]; then
        # runuser resets the open files limit: raise it again for PgBouncer.
        runuser -u postgres -- sh -c "ulimit -n $(ulimit -n); exec /usr/sbin/pgbouncer -d '$ini'" \
            >/dev/null 2>&1
    else
        /usr/sbin/pgbouncer -d "$ini" >/dev/null 2>&1
    fi
    wait_port "$port"
    PGB_PID=$(cat "$d/pgbouncer.pid")
}
