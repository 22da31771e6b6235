#!/usr/bin/env bash
# Regenerates the seed corpora (tests/fuzz/corpus/<target>/) from real
# traffic: a throwaway cluster (tests/fixture/cluster.sh, without TLS so
# that the backend side is readable), then integration tests run with
# SLUICE_BIN set to tap_sluice.py, which puts a recording TCP tap between
# each test's clients and its sluice and between sluice and PostgreSQL;
# split_corpus.py turns the recordings into seeds. A test that fails
# under the tap (say, one that reads sluice's own /proc entry) still
# leaves its traffic. hand_seeds.py adds the shapes traffic rarely shows
# (SSLRequest, an ErrorResponse without SQLSTATE, ...). Needs a built tree:
#
#   tests/fuzz/make_corpus.sh [BUILD_DIR]      (default: build)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
# CORPUS_TESTS="basic copy" picks others.
tests=(basic protocol prepared copy txpool auth login console metrics route pin reset state
       opaque stmtnames limits keys)
[ -n "${CORPUS_TESTS:-}" ] && read -ra tests <<<"$CORPUS_TESTS"
work=$(mktemp -d /tmp/sluice-corpus-XXXXXX)
chmod 755 "$work"
cleanup() {
    "$root/tests/fixture/cluster.sh" stop "$work/cluster" || true
    if [ -n "${CORPUS_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
CLUSTER_TLS=0 "$root/tests/fixture/cluster.sh" start "$work/cluster" >/dev/null
mkdir -m 777 "$work/tap"
export SLUICE_CLUSTER_ENV=$work/cluster/cluster.env SLUICE_REAL_BIN=$build/sluice
export SLUICE_BIN=$here/tap_sluice.py SLUICE_TAP_DIR=$work/tap
export CLUSTER_SH=$root/tests/fixture/cluster.sh PATH=/usr/lib/postgresql/15/bin:$PATH
for t in "${tests[@]}"; do
    if timeout 300 "$build/tests/it_$t" >"$work/it_$t.log" 2>&1; then
        echo "it_$t: recorded"
    else
        echo "it_$t: failed under the tap (its traffic is kept)"
    fi
done
/usr/bin/python3 "$here/split_corpus.py" "$work/tap" "$here/corpus"
/usr/bin/python3 "$here/hand_seeds.py" "$here/corpus"
