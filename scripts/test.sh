#!/usr/bin/env bash
# The test command: everything CI checks, in the order that fails fastest.
#
#   scripts/test.sh
#
#   1. dependencies: PostgreSQL running, tansu built, kafka-python importable, Chromium, nginx
#      and playwright-core for the browser tests of the UI (tests/tests/ui.rs);
#   2. cargo fmt --check, clippy with warnings as errors, build of every target;
#   3. cargo test for the whole workspace — unit, property and end-to-end tests (the latter
#      start their own tansu broker, databases and tracker processes on free loopback ports);
#   4. the committed docs/openapi.json matches what the binary generates;
#   5. schemathesis finds nothing against a running tracker (scripts/schemathesis.sh);
#   6. the operations kit (scripts/check-ops.sh).
#
# Non-interactive and idempotent; a cold machine spends most of its time building tansu
# once (cached under ~/.cache/saga-tracker) and the workspace.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

started=$SECONDS

step "Dependencies"
bash "$REPO_ROOT/scripts/ensure-postgres.sh"
TANSU_BIN="$(bash "$REPO_ROOT/scripts/ensure-tansu.sh")"
export TANSU_BIN
bash "$REPO_ROOT/scripts/ensure-python.sh"
bash "$REPO_ROOT/scripts/ensure-tools.sh"
CHROMIUM_BIN="$(bash "$REPO_ROOT/scripts/ensure-browser.sh")"
export CHROMIUM_BIN
# The server the tests create their databases on. It names a database (`postgres`, which
# always exists) because some tests derive their per-test URLs by replacing the last segment.
export TEST_DATABASE_URL="${TEST_DATABASE_URL:-postgres://$PG_USER@$PG_HOST:$PG_PORT/postgres}"

step "cargo fmt --all --check"
cargo fmt --all --check || die "formatting differs: run 'cargo fmt --all'"

step "cargo clippy --workspace --all-targets --all-features -- -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo build --workspace --all-targets --all-features"
cargo build --workspace --all-targets --all-features

# SOAK=1 scripts/test.sh also runs the long variants of the reliability tests
# (docs/reliability.md): bigger fault loads, 100 000 property cases, 30 000 fuzzed requests,
# 2 000 concurrent-write rounds.
if [[ "${SOAK:-0}" != 0 ]]; then
    export SOAK
    export PROPTEST_CASES="${PROPTEST_CASES:-100000}"
    export API_FUZZ_CASES="${API_FUZZ_CASES:-30000}"
    export CONCURRENT_WRITE_ITERATIONS="${CONCURRENT_WRITE_ITERATIONS:-2000}"
fi

step "cargo test --workspace --all-features"
export SAGA_TRACKER_BIN="$REPO_ROOT/target/debug/saga-tracker"
[[ -x "$SAGA_TRACKER_BIN" ]] || die "the build produced no $SAGA_TRACKER_BIN"
test_log="$REPO_ROOT/target/test-output.log"
cargo test --workspace --all-features 2>&1 | tee "$test_log"

step "OpenAPI drift check"
[[ -f docs/openapi.json ]] || die "docs/openapi.json is missing: generate it with
    cargo run -q -p saga-tracker -- openapi > docs/openapi.json"
if ! "$SAGA_TRACKER_BIN" openapi | diff -u docs/openapi.json - >"$REPO_ROOT/target/openapi.diff"; then
    head -n 60 "$REPO_ROOT/target/openapi.diff" >&2
    die "docs/openapi.json is out of date with the code (diff above, full: target/openapi.diff). Regenerate it with
    cargo run -q -p saga-tracker -- openapi > docs/openapi.json
and commit the result."
fi
log "docs/openapi.json matches the binary"

step "schemathesis: the served OpenAPI document against the running tracker"
bash "$REPO_ROOT/scripts/schemathesis.sh"

step "Operations kit: Helm chart, dashboards, alerts (with a live Prometheus and Alertmanager)"
bash "$REPO_ROOT/scripts/check-ops.sh"

step "All checks passed in $((SECONDS - started)) s"
# One closing line with the totals of every cargo test binary (unit, integration, doc), so a
# reader — or CI — does not have to add up the per-binary lines.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;/) p += $i; if ($(i+1) ~ /^failed;/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$test_log"
