#!/usr/bin/env bash
# PostgreSQL's own regression suite (installcheck) straight to PostgreSQL and
# through sluice in session pooling, on the same kind of throwaway cluster,
# with the same pg_regress, schedule and options: prints both scores and the
# names of the tests that fail in each. What differs is what a client sees
# through the pooler (see bench/RESULTS.md for each remaining difference).
#
#   bash bench/regress.sh            parallel schedule, up to 20 tests at once
#   SERIAL=1 bash bench/regress.sh   one test at a time (installcheck)
#   KEEP=1 ...                       keep the work directory (results, diffs)
#
# The suite is the source of the installed PostgreSQL 15 (postgresql-15's
# Debian source package, same version): fetched once into $REGRESS_SRC with
# a temporary deb-src list (the machine's apt sources stay as they are),
# unpacked from its .orig tarball with tar. regress.so is built from it with
# PGXS (postgresql-server-dev-15). pg_regress is the installed one.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGXS_DIR=/usr/lib/postgresql/15/lib/pgxs
PG_REGRESS=$PGXS_DIR/src/test/regress/pg_regress
SRC_ROOT=${REGRESS_SRC:-/tmp/sluice-regress-src}
SLUICE=${SLUICE_BIN:-$top/build/sluice}

# The server headers (PGXS) for regress.so, of the installed server's version.
version=$(dpkg-query -W -f '${Version}' postgresql-15)
if [ ! -f "$("$PGBIN/pg_config" --includedir-server)/postgres.h" ]; then
    apt-get install -y "postgresql-server-dev-15=$version" >/dev/null
fi
[ -x "$PG_REGRESS" ] || { echo "pg_regress not found in $PGXS_DIR" >&2; exit 1; }
if [ ! -x "$SLUICE" ]; then
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    cmake --build build -j2 >/dev/null
fi

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# ---- the suite's source, matching the installed server ----
upstream=${version%%-*}
src=$SRC_ROOT/postgresql-$upstream
if [ ! -f "$src/src/test/regress/parallel_schedule" ]; then
    apt_dir=$(mktemp -d /tmp/sluice-regress-apt.XXXXXX)
    mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$SRC_ROOT"
    # The machine's own entries, as deb-src (deb822 files and one-line lists).
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && sed 's/^Types: deb$/Types: deb-src/' "$f" >"$apt_dir/sources.list.d/$(basename "$f")"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] && sed -n 's/^deb /deb-src /p' "$f" >>"$apt_dir/sources.list.d/src.list"
    done
    apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
              -o "Dir::State::Lists=$apt_dir/lists")
    apt-get "${apt_opts[@]}" update >"$apt_dir/update.log" 2>&1 ||
        { cat "$apt_dir/update.log" >&2; exit 1; }
    (cd "$SRC_ROOT" && apt-get "${apt_opts[@]}" source --download-only "postgresql-15=$version") \
        >"$apt_dir/source.log" 2>&1 || { cat "$apt_dir/source.log" >&2; exit 1; }
    tar -C "$SRC_ROOT" -xjf "$SRC_ROOT/postgresql-15_$upstream.orig.tar.bz2"
    rm -rf "$apt_dir"
fi
rdir=$src/src/test/regress

# ---- work directory: readable and writable by the postgres user ----
work=$(mktemp -d /tmp/sluice-regress.XXXXXX)
chmod 755 "$work"
sluice_pid=
cleanup() {
    [ -n "$sluice_pid" ] && kill -INT "$sluice_pid" 2>/dev/null || true
    "$top/tests/fixture/cluster.sh" stop "$work/pg" >/dev/null 2>&1 || true
    [ "${KEEP:-0}" = 1 ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT INT TERM

# regress.so (the suite's C functions) and contrib/spi's autoinc.so and
# refint.so (the triggers test, which expects refint's notices, as
# contrib/spi's own build gives them) with PGXS; the server loads them from here.
mkdir -p "$work/lib"
cp "$rdir/regress.c" "$src/contrib/spi/autoinc.c" "$src/contrib/spi/refint.c" "$work/lib/"
printf 'MODULES = regress autoinc refint\nPG_CPPFLAGS = -DREFINT_VERBOSE\nPG_CONFIG = %s/pg_config\nPGXS := $(shell $(PG_CONFIG) --pgxs)\ninclude $(PGXS)\n' \
    "$PGBIN" >"$work/lib/Makefile"
make -s -C "$work/lib" >"$work/lib/build.log" 2>&1 || { cat "$work/lib/build.log" >&2; exit 1; }
# The suite reads its data files and writes results as the server's user.
cp -r "$rdir" "$work/regress"
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$work"

free_port() {
    local p=$((20000 + RANDOM % 30000))
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

# Runs the schedule against host:port into $work/out-NAME; prints the log.
run_suite() { # name host port
    local out=$work/out-$1
    local sched=(--schedule="$work/regress/parallel_schedule")
    if [ "${SERIAL:-0}" = 1 ]; then sched+=(--max-connections=1); else sched+=(--max-concurrent-tests=20); fi
    mkdir -p "$out"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$out"
    (cd "$out" && as_pg "$PG_REGRESS" --inputdir="$work/regress" --outputdir="$out" \
        --bindir="$PGBIN" --dlpath="$work/lib" --host="$2" --port="$3" \
        --dbname=regression "${sched[@]}" >"$out/pg_regress.log" 2>&1) || true
}

# A fresh cluster per run: roles, tablespaces and databases a test leaves
# behind must not change the next run. Replicas are not needed: stopped.
fresh_cluster() {
    "$top/tests/fixture/cluster.sh" stop "$work/pg" >/dev/null 2>&1 || true
    "$top/tests/fixture/cluster.sh" start "$work/pg" >/dev/null
    for n in replica1 replica2; do
        as_pg "$PGBIN/pg_ctl" -D "$work/pg/$n" -m fast -w stop >/dev/null
    done
    # shellcheck disable=SC1091
    . "$work/pg/cluster.env"
}

# ---- direct ----
fresh_cluster
echo "direct: pg_regress to PostgreSQL on port $PRIMARY_PORT"
run_suite direct "$SOCKDIR" "$PRIMARY_PORT"

# ---- through sluice, session pooling ----
fresh_cluster
port=$(free_port)
# Any user, no password: pg_regress and its tests log in as roles they
# create; backends are reached over the Unix socket, where the cluster
# trusts every role. Enough servers for a whole parallel group.
cat >"$work/sluice.ini" <<INI
[databases]
* = host=$SOCKDIR port=$PRIMARY_PORT
[sluice]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
logfile = $work/sluice.log
auth_type = any
pool_mode = session
default_pool_size = 60
max_client_conn = 400
INI
"$SLUICE" "$work/sluice.ini" >"$work/sluice.out" 2>&1 &
sluice_pid=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
echo "sluice: pg_regress through sluice (session pooling) on port $port"
run_suite sluice 127.0.0.1 "$port"

# ---- scores ----
# pg_regress prints one line per test: "test NAME ... ok", "     NAME ... ok"
# in a parallel group, "FAILED" or "failed (ignored)" in place of ok.
results() { grep -E '\.\.\. (ok|FAILED|failed \(ignored\))' "$work/out-$1/pg_regress.log" || true; }
failing() { results "$1" | { grep -E '\.\.\. FAILED' || true; } | sed -E 's/^(test | +)//; s/ +\.\.\. FAILED.*//' | sort; }
score() {
    local total nfail names
    total=$(results "$1" | wc -l)
    nfail=$(failing "$1" | grep -c . || true)
    names=$(failing "$1" | tr '\n' ' ')
    printf '%-7s %3d of %3d tests pass; failing: %s\n' "$1" $((total - nfail)) "$total" "${names:-none}"
}
echo
score direct
score sluice
only=$(comm -13 <(failing direct) <(failing sluice) | tr '\n' ' ')
echo "failing only through sluice: ${only:-none}"
if [ "${KEEP:-0}" = 1 ]; then
    echo "diffs: $work/out-sluice/regression.diffs (direct: $work/out-direct/regression.diffs)"
fi
