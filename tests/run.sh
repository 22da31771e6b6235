#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: installs what is missing,
# builds twice (plain, then ASan+UBSan) and runs every test of both builds at
# the same time: each build has its own PostgreSQL cluster on its own free
# ports, and most tests wait on sockets, so the two passes share the cores
# well. Each pass's output is printed once it is over. Exit status 0 only if
# everything passed in both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/install-deps.sh
jobs=$(nproc 2>/dev/null || echo 2)

cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
cmake -S . -B build-asan -DSANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-asan -j"$jobs"
(cd build && ctest --output-on-failure --timeout 300) >build/ctest.log 2>&1 &
plain=$!
# SLUICE_TEST_WORKERS=N runs every sluice a test starts with N workers
# (default 1, tests/integration/harness.c); the worker tests choose theirs.
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure --timeout 600) \
    >build-asan/ctest.log 2>&1 &
asan=$!
rc=0
wait "$plain" || rc=1
echo "=== plain build ===" && cat build/ctest.log
wait "$asan" || rc=1
echo "=== ASan+UBSan build ===" && cat build-asan/ctest.log

# Every fuzz target for 12 s with ASan+UBSan, two at a time, built with
# clang: 13 targets, about two minutes in all with the build. The long
# form is tests/fuzz/run.sh 600.
echo "=== fuzzers ===" && tests/fuzz/run.sh 12 || rc=1
