# Shared by the bench scripts (sourced, not run): a temp dir with a throwaway
# PostgreSQL cluster initialised for pgbench, stopped with every process the
# script started when it exits; a sluice.ini in front of it; free ports;
# CPU ticks of a process, of its threads, of a process tree and of the
# machine; the worker count of a sluice.
#
#   bench_cluster PREFIX [TLS]   sets dir, pids (append proxy pids to it) and
#                                the cluster.env variables (PRIMARY_PORT, ...)
#   WORKERS=N                    (environment) sluice's `workers` in every
#                                sluice.ini the scripts write; unset: the key
#                                is left out and sluice's default applies

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

# WORKERS is checked when this file is sourced (a bad value stops the
# script before any cluster starts; sluice itself accepts 0..64).
case "${WORKERS:-}" in
*[!0-9]*) echo "WORKERS is a number (sluice's workers, 0..64), not '$WORKERS'" >&2; exit 2 ;;
esac

# The `workers = N` line for a sluice.ini when WORKERS is set, nothing when
# it is not.
bench_workers_ini() {
    [ -z "${WORKERS:-}" ] || echo "workers = $WORKERS"
}

# sluice_workers LOGFILE: the worker count sluice logged at start ("started
# pid=... workers=N"), waiting up to 5 s for the line; "?" without it.
sluice_workers() {
    local n=""
    for _ in $(seq 1 50); do
        n=$(sed -n 's/.* started pid=[0-9]* workers=\([0-9]*\).*/\1/p' "$1" 2>/dev/null | tail -n 1)
        [ -n "$n" ] && break
        sleep 0.1
    done
    echo "${n:-?}"
}

# proxy_ini FILE SECTION PORT LOG POOL MAX_CLIENTS AUTH [DATABASE_OPTIONS]:
# what every proxy of the benchmarks shares, sluice ([sluice]) or PgBouncer
# ([pgbouncer]): transaction pooling in front of the primary, quiet logs.
# DATABASE_OPTIONS end the sluice_test line (a newline in them starts more
# database lines). The caller appends its own keys with cat >>.
proxy_ini() {
    cat >"$1" <<INI
[databases]
sluice_test = host=127.0.0.1 port=$PRIMARY_PORT ${8:-}
[$2]
listen_addr = 127.0.0.1
listen_port = $3
unix_socket_dir =
auth_type = $7
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $5
max_client_conn = $6
log_connections = 0
log_disconnections = 0
logfile = $4
INI
}

# bench_ini FILE PORT POOL_SIZE LOG: a transaction-pooling sluice.ini in
# front of the cluster's primary, SCRAM on both sides, quiet logs, and
# WORKERS's workers line. The backend password is the auth_file's plaintext
# entry: sluice logs in to PostgreSQL itself with SCRAM keys it derives once
# per salt and caches (shared with the other workers through the ledger),
# not with PBKDF2 per backend login.
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
$(bench_workers_ini)
INI
}

# A port nothing uses, below the kernel's range for outgoing connections:
# a port in that range may be the local end of a connection, or of one in
# TIME_WAIT (tens of thousands after a connection storm), and a listener
# cannot bind it although nothing listens there.
free_port() {
    local low top p
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
    top=$((low > 20000 ? low : 60000))
    p=$((20000 + RANDOM % (top - 20000)))
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null ||
        [ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null | head -n 1)" ]; do
        p=$((20000 + (p - 20000 + 1) % (top - 20000)))
    done
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

# The fields of /proc/.../stat after the command name (which may hold
# spaces): $12 is utime, $13 stime, in clock ticks.
stat_tail() { sed 's/^.*) //' "$1" 2>/dev/null; }

# task_ticks PID: "TID UTIME STIME" per thread of PID, by thread id.
task_ticks() {
    local t
    for t in /proc/"$1"/task/*; do
        echo "${t##*/} $(stat_tail "$t/stat" | awk '{print $12, $13}')"
    done | sort -n
}

# tree_ticks PID: utime+stime of PID and its children (a postmaster and its
# backends); a child that ended between two reads takes its ticks with it.
tree_ticks() {
    {
        stat_tail "/proc/$1/stat" | awk '{print $12 + $13}'
        for c in $(ps -o pid= --ppid "$1"); do stat_tail "/proc/$c/stat" | awk '{print $12 + $13}'; done
    } | awk '{n += $1} END {print n + 0}'
}

# machine_ticks: "BUSY TOTAL STEAL" jiffies of all CPUs since boot (busy:
# all but idle, iowait and steal).
machine_ticks() {
    awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6 - $9, t, $9}' /proc/stat
}

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
