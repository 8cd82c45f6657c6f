#!/usr/bin/env bash
# The live test of the dashboards and alerts: a real tracker ingesting a demo workload, a real
# Prometheus scraping it every second and evaluating the alert rules, a real Alertmanager.
#
#   scripts/ops/live.sh OPS_PYTHON QUERIES_JSON [CONFIG_DIR]
#
# CONFIG_DIR (from check-ops.sh) holds the tracker.toml files the Helm chart renders:
# `migrate` runs with each of them and the tracker runs with default.toml, so the binary
# itself accepts the chart's configuration (TRACKER_* variables point it at the local
# broker and database, as the chart's env does in a cluster).
#
# Started here, each on a free loopback port with its data in a temporary directory, and
# stopped (by PID) on exit: tansu (Kafka protocol), the tracker (target/debug/saga-tracker,
# fresh database and topics), Alertmanager and Prometheus. Then:
#   1. a few invalid messages go to the topic (-> DLQ), the demo sends 200 sagas, more
#      invalid messages follow (so the DLQ counter has a before and an after);
#   2. every dashboard query (QUERIES_JSON, from dashboards.py) must return data;
#   3. every alert rule evaluates without error, and SagaTrackerDLQInflow (with `for: 0s` in
#      a test-only copy of the rules) reaches Alertmanager (/api/v2/alerts).
# Stuck thresholds are set to a few seconds so the stuck gauges have something to show.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

OPS_PY=$1
QUERIES=$2
CONFIG_DIR=${3:-}
BIN="${SAGA_TRACKER_BIN:-$REPO_ROOT/target/debug/saga-tracker}"
[[ -x "$BIN" ]] || die "no tracker binary at $BIN (build it: cargo build -p saga-tracker)"
have prometheus || die "prometheus is not installed"
have prometheus-alertmanager || die "prometheus-alertmanager is not installed"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/saga-ops-live.XXXXXX")"
DB_NAME="saga_ops_live_$$"
TANSU_PID="" TRACKER_PID="" AM_PID="" PROM_PID="" DB_CREATED=0

cleanup() {
    local rc=$?
    trap - EXIT
    stop_pid "$PROM_PID" prometheus
    stop_pid "$AM_PID" alertmanager
    stop_pid "$TRACKER_PID" saga-tracker
    stop_pid "$TANSU_PID" tansu
    if ((DB_CREATED)); then
        psql_admin -d postgres -c "drop database if exists $DB_NAME with (force)" >/dev/null 2>&1 || true
    fi
    finish_work "$rc" "$WORK" "live test" tracker prometheus alertmanager tansu demo
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

KAFKA_PORT=$(free_port)
HTTP_PORT=$(free_port)
PROM_PORT=$(free_port)
AM_PORT=$(free_port)
TOPIC="saga.ops.live.$$"

log "live test: work dir $WORK"
TANSU_BIN="$(bash "$REPO_ROOT/scripts/ensure-tansu.sh")"
export TANSU_BIN
bash "$REPO_ROOT/scripts/ensure-python.sh"
start_tansu "$WORK" "$KAFKA_PORT"
tansu_create_topic "$KAFKA_PORT" "$TOPIC" 3
tansu_create_topic "$KAFKA_PORT" "$TOPIC.dlq" 1

psql_admin -d postgres -c "create database $DB_NAME" >/dev/null
DB_CREATED=1
export_tracker_env "$DB_NAME" "$KAFKA_PORT" "$TOPIC" "saga-ops-live-$$" "$HTTP_PORT"
export TRACKER_STUCK__DEFAULT_THRESHOLD_SECS=3
export TRACKER_STUCK__FAILED_UNCOMPENSATED_SECS=3
export TRACKER_STUCK__COMPENSATION_TIMEOUT_SECS=3
export TRACKER_STUCK__EVALUATE_INTERVAL_SECS=1
"$BIN" migrate >"$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log" >&2; die "saga-tracker migrate failed"; }
run_config=()
if [[ -n "$CONFIG_DIR" ]]; then
    for cfg in "$CONFIG_DIR"/*.toml; do
        "$BIN" migrate --config "$cfg" >"$WORK/migrate-config.log" 2>&1 || {
            cat "$WORK/migrate-config.log" >&2
            die "the tracker refuses the chart's config file $(basename "$cfg") (saga-tracker migrate --config)"
        }
    done
    log "the tracker accepts the chart's config files ($(cd "$CONFIG_DIR" && echo *.toml))"
    run_config=(--config "$CONFIG_DIR/default.toml")
fi
"$BIN" run "${run_config[@]}" >"$WORK/tracker.log" 2>&1 &
TRACKER_PID=$!
wait_for_http "http://127.0.0.1:$HTTP_PORT/readyz" 60 "$TRACKER_PID" || die "the tracker did not become ready"
log "tracker ready on 127.0.0.1:$HTTP_PORT (topic $TOPIC, database $DB_NAME)"

# Alertmanager: the example's routing, with receivers that deliver nowhere (no network here).
cat >"$WORK/alertmanager.yml" <<YAML
route:
  receiver: blackhole
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  routes:
    - receiver: pager
      matchers: ['severity = "critical"']
receivers:
  - name: blackhole
  - name: pager
YAML
prometheus-alertmanager --config.file="$WORK/alertmanager.yml" --storage.path="$WORK/am" \
    --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address= >"$WORK/alertmanager.log" 2>&1 &
AM_PID=$!
wait_for_http "http://127.0.0.1:$AM_PORT/-/ready" 30 "$AM_PID" || die "alertmanager did not become ready"

# The real rules, with the DLQ alert's `for` cut to 0 s so the test needs no minutes of waiting.
"$OPS_PY" - "$REPO_ROOT/alerts/saga-tracker.rules.yaml" "$WORK/rules.yaml" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
for g in doc["groups"]:
    for r in g["rules"]:
        if r.get("alert") == "SagaTrackerDLQInflow":
            r["for"] = "0s"
yaml.safe_dump(doc, open(sys.argv[2], "w"), sort_keys=False)
PY
cat >"$WORK/prometheus.yml" <<YAML
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: ["$WORK/rules.yaml"]
alerting:
  alertmanagers:
    - static_configs: [{targets: ["127.0.0.1:$AM_PORT"]}]
scrape_configs:
  - job_name: saga-tracker
    static_configs: [{targets: ["127.0.0.1:$HTTP_PORT"]}]
YAML
promtool check config "$WORK/prometheus.yml" >/dev/null || die "generated prometheus.yml is invalid"
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/prom" \
    --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
wait_for_http "http://127.0.0.1:$PROM_PORT/-/ready" 30 "$PROM_PID" || die "prometheus did not become ready"
START=$(date +%s)
log "prometheus on 127.0.0.1:$PROM_PORT, alertmanager on 127.0.0.1:$AM_PORT"

send_invalid() {
    local n=$1 i
    for ((i = 0; i < n; i++)); do
        printf '{"key": "poison-%s-%s", "value": "this is not json"}\n' "$2" "$i"
    done | timeout 60 python3 "$REPO_ROOT/tests/python/produce.py" \
        --brokers "127.0.0.1:$KAFKA_PORT" --topic "$TOPIC" - >/dev/null
}
send_invalid 3 a
log "workload: 200 sagas at 200 events/s"
timeout 120 "$BIN" demo --rate 200 --sagas 200 >"$WORK/demo.log" 2>&1 || die "the demo workload failed"
sleep 3
send_invalid 3 b
# The REST calls the dashboards link to must answer (they also feed the HTTP panels).
curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/api/v1/sagas?stuck=true" || die "GET /api/v1/sagas?stuck=true failed"
curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/api/v1/sagas?sagaType=ORDER_CREATION&stuck=true" ||
    die "GET /api/v1/sagas?sagaType=ORDER_CREATION&stuck=true failed"
curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/api/v1/sagas?sagaType=ORDER_CREATION&step=PAYMENT_CAPTURED&status=FAILED" ||
    die "GET /api/v1/sagas?...&step=...&status=FAILED (the failing-steps data link) failed"
curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/api/v1/sagas?sagaType=ORDER_CREATION&status=STARTED&status=IN_PROGRESS&status=COMPENSATING" ||
    die "GET /api/v1/sagas?...&status=STARTED&status=IN_PROGRESS&status=COMPENSATING (the active-sagas data link) failed"
curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/api/v1/stats" || die "GET /api/v1/stats failed"
# The saga-detail link (dashboard link 'Open saga'), and the fields the runbook's jq reads.
"$OPS_PY" - "http://127.0.0.1:$HTTP_PORT" <<'PY' || die "the REST answers lack fields the runbook relies on"
import json, sys, urllib.request
base = sys.argv[1]
get = lambda p: json.load(urllib.request.urlopen(base + p, timeout=10))
page = get("/api/v1/sagas?limit=5")
saga_id = page["items"][0]["sagaId"]
detail = get(f"/api/v1/sagas/{saga_id}")
assert "steps" in detail and "currentStep" in detail and "updatedAt" in detail, detail.keys()
events = get(f"/api/v1/sagas/{saga_id}/events")
assert {"occurredAt", "receivedAt", "service"} <= set(events["items"][0]), events["items"][0].keys()
stats = get("/api/v1/stats")
assert "topFailingSteps" in stats and "rates" in stats, stats.keys()
PY

log "every dashboard query must return data"
"$OPS_PY" "$REPO_ROOT/scripts/ops/live_check.py" queries "http://127.0.0.1:$PROM_PORT" "$QUERIES" "$START" "${OPS_QUERY_TIMEOUT:-90}"
"$OPS_PY" "$REPO_ROOT/scripts/ops/live_check.py" rules "http://127.0.0.1:$PROM_PORT"
log "the DLQ alert must reach Alertmanager"
"$OPS_PY" "$REPO_ROOT/scripts/ops/live_check.py" alert "http://127.0.0.1:$AM_PORT" SagaTrackerDLQInflow 60
log "live test passed"
