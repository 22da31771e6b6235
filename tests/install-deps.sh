#!/usr/bin/env bash
# Installs what sluice needs to build, test, benchmark and demo (the
# console and metrics tests read sluice with psycopg2 and the Prometheus
# client library's parser, and the alert rules with PyYAML; the fuzzers
# build with clang and its libFuzzer runtime, libclang-rt-dev), with
# apt-get, only when something is missing. Safe to run again.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libuv1-dev libssl-dev libpq-dev libinih-dev
      libpg-query-dev postgresql-15 postgresql-client-15 pgbouncer
      openssl util-linux procps
      python3-psycopg2 python3-prometheus-client python3-yaml
      clang libclang-rt-dev)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# A second driver for the tests: node-postgres. Without Node.js, Debian's
# nodejs and node-pg; a machine with its own Node.js gets pg from npm
# (tests/node/install.sh).
if ! command -v node >/dev/null; then missing+=(nodejs node-pg); fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The postgresql package would start a system cluster; nothing here needs it.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
