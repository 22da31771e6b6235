#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what is missing,
# builds, and runs every test of a plain build and of an ASan+UBSan build side
# by side (each build has its own PostgreSQL cluster on its own free ports,
# and most tests wait on sockets, so the two passes share the cores well),
# with every fuzz target fuzzed briefly at the lowest priority beside them.
# Each part's output is printed once it is over. Exit status 0 only if
# everything passed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
cmake -S . -B build-asan -DSANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
(cd build && ctest --output-on-failure --timeout 300) >build/ctest.log 2>&1 &
plain=$!
# The sanitizer build compiles (at a lower priority) while the plain pass
# runs, then runs its own pass. Both run every sluice a test starts with
# sluice's default workers (one per online CPU: two on the 2-core CI
# machine), unless SLUICE_TEST_WORKERS=N sets N for all of them
# (tests/integration/harness.c); the worker tests choose theirs.
(nice -n 10 cmake --build build-asan -j"$jobs" && cd build-asan &&
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure --timeout 600) \
    >build-asan/ctest.log 2>&1 &
asan=$!
# Every fuzz target for 12 s with ASan+UBSan, two at a time, built with
# clang (the long form is tests/fuzz/run.sh 600). Run beside the two passes
# at the lowest priority: the tests mostly wait on sockets, and the fuzzers
# take only the CPU they leave.
mkdir -p build-fuzz
FUZZ_NICE=19 nice -n 19 tests/fuzz/run.sh 12 >build-fuzz/run.log 2>&1 &
fuzz=$!
rc=0
wait "$plain" || rc=1
echo "=== plain build ===" && cat build/ctest.log
wait "$asan" || rc=1
echo "=== ASan+UBSan build ===" && cat build-asan/ctest.log
wait "$fuzz" || rc=1
echo "=== fuzzers ===" && cat build-fuzz/run.log
exit "$rc"
