#!/usr/bin/env bash
# The throughput bench: SDK → broker → saga-tracker (release build) → PostgreSQL, and the
# bound PostgreSQL sets for the same events (COPY + one fold), with the ratio of the two.
#
# Usage: scripts/bench.sh [--broker mock|tansu] [--events N] [--partitions P]
#                         [--events-per-saga E] [--concurrent-sagas W] [--steady-rate R]
#                         [--steady-secs S] [--batch-size B] [--in-flight L] [--timeout-secs T]
#                         [--no-limit]
#   scripts/bench.sh                                            # mock broker, 1M events a phase
#   scripts/bench.sh --events-per-saga 50 --concurrent-sagas 1000   # long, interleaved sagas
#   scripts/bench.sh --broker tansu --events 10000              # tansu: keep it small
#
# Prints markdown tables for docs/BENCHMARKS.md ("End-to-end ingest"), with the machine, its
# load before and after, and the commit. Loopback only; every database it creates is named
# bench_scale_* and dropped again; it stops everything it started (the mock broker lives in
# the bench process; tansu and the trackers are child processes killed by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-postgres.sh
broker=mock
prev=""
for arg in "$@"; do
    case "$arg" in
        --broker=*) broker="${arg#--broker=}" ;;
        *) [[ "$prev" == "--broker" ]] && broker="$arg" ;;
    esac
    prev="$arg"
done
if [[ "$broker" == "tansu" ]]; then
    TANSU_BIN="$(bash scripts/ensure-tansu.sh | tail -n1)"
    export TANSU_BIN
fi
cargo build --release -p saga-tracker -p saga-tracker-tests --bins
export SAGA_TRACKER_BIN="$PWD/target/release/saga-tracker"
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git diff --quiet HEAD -- 2>/dev/null; then commit="$commit (uncommitted changes)"; fi
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr); commit $commit"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)"
status=0
target/release/bench "$@" || status=$?
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)"
exit "$status"
