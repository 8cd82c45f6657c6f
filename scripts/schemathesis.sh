#!/usr/bin/env bash
# Property-based test of the HTTP API against its own OpenAPI document: schemathesis generates
# requests from the /openapi.json a real tracker serves and checks every answer (`--checks
# all`: no 5xx, documented status codes and content types, bodies matching their schemas,
# valid requests accepted, invalid ones refused, unsupported methods refused, auth enforced).
#
#   scripts/schemathesis.sh        # needs target/debug/saga-tracker (cargo build -p saga-tracker)
#
# Started here, each on a free loopback port with its data in a temporary directory, and
# stopped (by PID) on exit: tansu (Kafka protocol; scripts/ensure-tansu.sh builds it once),
# the tracker (`run`) on a fresh database of the local PostgreSQL, with a demo workload of
# sagas so searches and the saga pages have data to return. When the tracker has an [auth]
# section (API keys), access control is on and schemathesis sends a generated API key as
# `Authorization: Bearer …` (and checks that requests without it are refused); otherwise it
# runs unauthenticated and says so. (Not with access control off on a tracker that has it:
# the served document declares the bearer scheme either way, so every auth check would fail.)
#
# Bounded and reproducible: SCHEMATHESIS_MAX_EXAMPLES cases per operation and phase (default
# 100) from SCHEMATHESIS_SEED (default 8812). Exits non-zero on any failure; the JUnit report
# is kept in target/schemathesis/.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"

BIN="${SAGA_TRACKER_BIN:-$REPO_ROOT/target/debug/saga-tracker}"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
SEED="${SCHEMATHESIS_SEED:-8812}"
DEMO_SAGAS=60
export SCHEMATHESIS_VENV="${SCHEMATHESIS_VENV:-$HOME/.cache/saga-tracker/schemathesis-venv}"
SCHEMATHESIS="$SCHEMATHESIS_VENV/bin/schemathesis"
REPORT_DIR="$REPO_ROOT/target/schemathesis"

[[ -x "$BIN" ]] || die "no tracker binary at $BIN (build it: cargo build -p saga-tracker)"
[[ "$MAX_EXAMPLES" =~ ^[1-9][0-9]*$ ]] || die "SCHEMATHESIS_MAX_EXAMPLES must be a positive integer, got '$MAX_EXAMPLES'"
[[ "$SEED" =~ ^[0-9]+$ ]] || die "SCHEMATHESIS_SEED must be a non-negative integer, got '$SEED'"

bash "$REPO_ROOT/scripts/ensure-postgres.sh"
TANSU_BIN="$(bash "$REPO_ROOT/scripts/ensure-tansu.sh")"
export TANSU_BIN
bash "$REPO_ROOT/scripts/ensure-python.sh"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/saga-schemathesis.XXXXXX")"
DB_NAME="saga_schemathesis_$$"
TANSU_PID="" TRACKER_PID="" DB_CREATED=0

cleanup() {
    local rc=$?
    trap - EXIT
    stop_pid "$TRACKER_PID" saga-tracker
    stop_pid "$TANSU_PID" tansu
    if ((DB_CREATED)); then
        psql_admin -d postgres -c "drop database if exists $DB_NAME with (force)" >/dev/null 2>&1 || true
    fi
    finish_work "$rc" "$WORK" "schemathesis run" tracker tansu demo
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

KAFKA_PORT=$(free_port)
HTTP_PORT=$(free_port)
TOPIC="saga.schemathesis.$$"
BASE_URL="http://127.0.0.1:$HTTP_PORT"

step "schemathesis: broker, database, tracker"
start_tansu "$WORK" "$KAFKA_PORT"
tansu_create_topic "$KAFKA_PORT" "$TOPIC" 3
tansu_create_topic "$KAFKA_PORT" "$TOPIC.dlq" 1

psql_admin -d postgres -c "create database $DB_NAME" >/dev/null
DB_CREATED=1
export_tracker_env "$DB_NAME" "$KAFKA_PORT" "$TOPIC" "saga-schemathesis-$$" "$HTTP_PORT"
export TRACKER_LOG__FORMAT=json

# Access control, when this build of the tracker has it: one API key, its token known only
# to this run. The tracker stores the SHA-256 of the token, never the token.
auth_args=()
: >"$WORK/tracker.toml"
if "$BIN" default-config | grep -q '^\[auth\]'; then
    token="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
    hash="$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)"
    cat >"$WORK/tracker.toml" <<TOML
[auth]
enabled = true

[[auth.api_keys]]
name = "schemathesis"
role = "operator"
hash = "sha256:$hash"
TOML
    auth_args=(-H "Authorization: Bearer $token")
    log "access control on: schemathesis authenticates with an operator API key"
else
    warn "this tracker has no [auth] settings: testing without access control"
fi

"$BIN" migrate --config "$WORK/tracker.toml" >"$WORK/migrate.log" 2>&1 ||
    { cat "$WORK/migrate.log" >&2; die "saga-tracker migrate failed"; }
"$BIN" run --config "$WORK/tracker.toml" >"$WORK/tracker.log" 2>&1 &
TRACKER_PID=$!
wait_for_http "$BASE_URL/readyz" 60 "$TRACKER_PID" || die "the tracker did not become ready"
log "tracker ready on $BASE_URL (topic $TOPIC, database $DB_NAME)"

step "schemathesis: seeding $DEMO_SAGAS sagas"
timeout 120 "$BIN" demo --rate 500 --sagas "$DEMO_SAGAS" --seed "$SEED" >"$WORK/demo.log" 2>&1 ||
    die "the demo workload failed"
# Wait until the tracker has stored them all, so every case sees the same data.
stored=0
deadline=$((SECONDS + 60))
while ((SECONDS < deadline)); do
    stored="$(curl -fsS "${auth_args[@]}" "$BASE_URL/api/v1/saga-types" |
        python3 -c 'import json, sys; print(sum(t["total"] for t in json.load(sys.stdin)["items"]))')" || stored=0
    ((stored >= DEMO_SAGAS)) && break
    sleep 0.5
done
((stored >= DEMO_SAGAS)) || die "only $stored of $DEMO_SAGAS demo sagas were stored within 60 s"
log "$stored sagas stored"

step "schemathesis $("$SCHEMATHESIS" --version | awk '{print $NF}'): --checks all, $MAX_EXAMPLES examples per operation, seed $SEED"
rm -rf "$REPORT_DIR"
mkdir -p "$REPORT_DIR"
# From the work directory, so schemathesis' own files (.hypothesis/) stay out of the tree.
# The hooks (scripts/schemathesis_hooks.py) apply the two rules the document can state only in
# prose: a time window must not end before it starts, a cursor comes from the API.
(
    cd "$WORK"
    export PYTHONPATH="$REPO_ROOT/scripts${PYTHONPATH:+:$PYTHONPATH}"
    export SCHEMATHESIS_HOOKS=schemathesis_hooks
    "$SCHEMATHESIS" run "$BASE_URL/openapi.json" \
        --checks all \
        --max-examples "$MAX_EXAMPLES" \
        --seed "$SEED" \
        --workers 1 \
        --generation-database none \
        --request-timeout 30 \
        --report junit --report-dir "$REPORT_DIR" \
        --no-color \
        "${auth_args[@]}"
) 2>&1 | tee "$WORK/schemathesis.log"
rc=${PIPESTATUS[0]}
((rc == 0)) || die "schemathesis found failures (exit $rc; output above, JUnit report in $REPORT_DIR)"
log "schemathesis: no failures"
