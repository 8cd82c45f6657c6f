#!/usr/bin/env bash
# The throughput bench: SDK → tansu → saga-tracker (release build) → PostgreSQL.
# Usage: scripts/bench.sh [--events N] [--steady-rate R] [--steady-secs S] [--batch-size B]
# Prints markdown tables for docs/BENCHMARKS.md. Loopback only; stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-postgres.sh
TANSU_BIN="$(bash scripts/ensure-tansu.sh | tail -n1)"
export TANSU_BIN
cargo build --release -p saga-tracker -p saga-tracker-tests --bins
export SAGA_TRACKER_BIN="$PWD/target/release/saga-tracker"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr); commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
exec target/release/bench "$@"
