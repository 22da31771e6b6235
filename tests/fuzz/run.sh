#!/usr/bin/env bash
# Runs every libFuzzer target (or those named) for SECONDS each with ASan
# and UBSan, two at a time, from the seed corpus (corpus/<target>/) and
# the inputs of fixed crashes (regress/<target>/). Prints one line per
# target (executions, coverage, features, corpus size, crashes) and exits
# non-zero if any target crashed, leaked, timed out or ran out of memory.
#
#   tests/fuzz/run.sh SECONDS [target...]
#
# Builds with clang in $FUZZ_BUILD (default build-fuzz) with FUZZ=ON. What
# each target found is kept under $FUZZ_BUILD/fuzz/: corpus/<target>/ (the
# growing corpus), logs/<target>.log and artifacts/<target>/ (crash-*,
# leak-*, timeout-*, oom-* inputs: copy one into regress/<target>/ once
# fixed). FUZZ_JOBS sets how many run at once (2); FUZZ_ARGS adds libFuzzer
# options (say -jobs or -dict).
set -euo pipefail
secs=${1:?usage: tests/fuzz/run.sh SECONDS [target...]}
shift
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${FUZZ_BUILD:-$root/build-fuzz}
jobs=${FUZZ_JOBS:-2}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    # The list CMake builds (tests/fuzz/CMakeLists.txt), in its order.
    mapfile -t targets < <(sed -n 's/^set(FUZZ_\(PURE\|CORE\) \(.*\))$/\2/p' "$here/CMakeLists.txt" | tr ' ' '\n')
fi

CC=clang cmake -S "$root" -B "$build" -DFUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" -j"$jobs" --target $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null

out=$build/fuzz
mkdir -p "$out/logs"

# One target: fuzz for $secs, leave its log and artifacts.
run_one() {
    local t=$1 corpus=$out/corpus/$1 art=$out/artifacts/$1
    mkdir -p "$corpus" "$art"
    touch "$out/logs/$t.start"
    local seeds=("$here/corpus/$t")
    [ -d "$here/regress/$t" ] && seeds+=("$here/regress/$t")
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        nice -n "${FUZZ_NICE:-10}" "$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" \
        -timeout=20 -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
        -artifact_prefix="$art/" ${FUZZ_ARGS:-} "$corpus" "${seeds[@]}" >"$out/logs/$t.log" 2>&1
    echo $? >"$out/logs/$t.rc"
}
export -f run_one
export secs here out build

printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}'

fail=0
for t in "${targets[@]}"; do
    log=$out/logs/$t.log
    rc=$(cat "$out/logs/$t.rc" 2>/dev/null || echo 1)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
    found=$(find "$out/artifacts/$t" -type f -newer "$out/logs/$t.start" | wc -l)
    status=ok
    if [ "$rc" != 0 ] || [ "$found" != 0 ]; then
        status="CRASH (exit $rc, see $log)"
        fail=1
    fi
    printf '%-12s execs=%-10s cov=%-6s ft=%-6s corpus=%-12s crashes=%s %s\n' "$t" \
        "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$found" "$status"
done
exit $fail
