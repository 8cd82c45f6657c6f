#!/usr/bin/env bash
# Validates the operations kit with real tools, offline: Helm chart, alert rules, Alertmanager
# config, Grafana dashboards, and a live run of dashboards and alerts against a real tracker.
#
#   scripts/check-ops.sh            # everything (needs target/debug/saga-tracker: cargo build)
#   OPS_SKIP_LIVE=1 scripts/check-ops.sh   # static checks only (no tracker, broker, database)
#
# Tools, installed idempotently on first use (no download outside the package registries):
#   Debian:  prometheus (prometheus, promtool), prometheus-alertmanager (alertmanager, amtool)
#   PyPI:    helm-python-sdk (Helm 4's Go SDK as a shared library inside the wheel: lint and
#            render without a helm binary), kubernetes-validate, promql-parser, pyyaml —
#            in a virtualenv at ~/.cache/saga-tracker/ops-venv
#   npm:     @grafana/schema + typescript (dashboard type-check), @kubernetes-models/
#            prometheus-operator (the CRD schemas of ServiceMonitor and PrometheusRule) —
#            in ~/.cache/saga-tracker/npm-ops
#
# Checks, in order (each failure stops the script with a message naming what failed):
#   1. alerts: the chart's copies of the rules and dashboards are byte-identical to
#      alerts/ and dashboards/; promtool check rules; promtool test rules alerts/tests/*.yaml;
#      amtool check-config and routing of alerts/alertmanager.example.yml;
#   2. chart: helm lint --strict (kube 1.29 and 1.33) and render with default values and
#      values-production.yaml; values.schema.json rejects bad values; kubernetes-validate
#      --strict for 1.29 and 1.33 (every WARN fails, except the monitoring.coreos.com kinds,
#      which are checked against their CRD schemas instead); promtool check rules on the
#      rendered PrometheusRule;
#   3. dashboards: structure, PromQL parse of every query, @grafana/schema type-check (tsc);
#   4. Dockerfile: static checks only (stages, USER 10001, entrypoint) — no Docker engine here;
#   5. live: scripts/ops/live.sh (every panel query returns data; an alert reaches Alertmanager).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$REPO_ROOT"
started=$SECONDS

CHART="deploy/helm/saga-tracker"
CACHE="$HOME/.cache/saga-tracker"
VENV="$CACHE/ops-venv"
NPM_DIR="$CACHE/npm-ops"
PY="$VENV/bin/python"
KUBE_VERSIONS=(1.29.0 1.33.0)
# Pinned so a new release cannot change the verdict between two runs.
PIP_PACKAGES=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 promql-parser==0.12.0 PyYAML==6.0.3)
NPM_PACKAGES=(@grafana/schema@13.2.3 typescript@5.9.3 @kubernetes-models/prometheus-operator@6.0.0)

OUT="$REPO_ROOT/target/check-ops"
rm -rf "$OUT"
mkdir -p "$OUT"

step "ops: tools"
missing=()
have promtool || missing+=(prometheus)
have amtool || missing+=(prometheus-alertmanager)
if ((${#missing[@]})); then
    log "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >"$OUT/apt.log" 2>&1 || {
        apt-get update -q >>"$OUT/apt.log" 2>&1
        apt-get install -y -q "${missing[@]}" >>"$OUT/apt.log" 2>&1
    } || { tail -n 20 "$OUT/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $OUT/apt.log)"; }
fi
for t in promtool amtool prometheus prometheus-alertmanager; do
    have "$t" || die "$t is missing after installing the Debian packages"
done
log "$(promtool --version 2>&1 | head -n1); $(amtool --version 2>&1 | head -n1)"

venv_ok() {
    [[ -x "$PY" ]] && "$PY" - "${PIP_PACKAGES[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
PY
}
if ! venv_ok; then
    log "installing ${PIP_PACKAGES[*]} into $VENV (pip)"
    [[ -x "$PY" ]] || python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install -y python3-venv)"
    "$PY" -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}" ||
        die "pip install ${PIP_PACKAGES[*]} failed"
    venv_ok || die "the ops virtualenv at $VENV does not have ${PIP_PACKAGES[*]}"
fi

npm_ok() {
    local spec name want got
    for spec in "${NPM_PACKAGES[@]}"; do
        name="${spec%@*}" want="${spec##*@}"
        got="$(node -p "require('$NPM_DIR/node_modules/$name/package.json').version" 2>/dev/null)" || return 1
        [[ "$got" == "$want" ]] || return 1
    done
}
if ! npm_ok; then
    have npm || die "npm is required (Debian: apt-get install -y npm)"
    log "installing ${NPM_PACKAGES[*]} into $NPM_DIR (npm)"
    mkdir -p "$NPM_DIR"
    [[ -f "$NPM_DIR/package.json" ]] || echo '{"name": "saga-tracker-ops-check", "private": true}' >"$NPM_DIR/package.json"
    (cd "$NPM_DIR" && npm install --no-audit --no-fund --silent --save-exact "${NPM_PACKAGES[@]}") ||
        die "npm install ${NPM_PACKAGES[*]} failed"
    npm_ok || die "npm packages missing in $NPM_DIR after install"
fi
log "tools ready ($VENV, $NPM_DIR)"

step "ops: alert rules and Alertmanager config"
cmp -s alerts/saga-tracker.rules.yaml "$CHART/files/saga-tracker.rules.yaml" || die "the chart's copy of the rules differs from alerts/saga-tracker.rules.yaml; run
    cp alerts/saga-tracker.rules.yaml $CHART/files/saga-tracker.rules.yaml"
for d in dashboards/*.json; do
    cmp -s "$d" "$CHART/files/$d" || die "the chart's copy of $d differs; run
    cp dashboards/*.json $CHART/files/dashboards/"
done
for d in "$CHART"/files/dashboards/*.json; do
    [[ -f "dashboards/$(basename "$d")" ]] || die "$d has no source in dashboards/ (remove it or add the source)"
done
log "chart copies of the rules and dashboards match alerts/ and dashboards/"
promtool check rules alerts/saga-tracker.rules.yaml || die "promtool check rules failed"
(cd alerts/tests && promtool test rules ./*.yaml) || die "promtool test rules failed (alerts/tests)"
# Every alert needs a firing and a silent case, a runbook_url and a runbook section.
"$PY" - alerts/saga-tracker.rules.yaml alerts/tests docs/runbook.md <<'PY' || die "alert coverage check failed"
import glob, re, sys, yaml
rules = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"] if "alert" in r]
tests = [t for f in sorted(glob.glob(sys.argv[2] + "/*.yaml")) for t in yaml.safe_load(open(f))["tests"]]
anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
           for h in re.findall(r"^#+ (.*)$", open(sys.argv[3]).read(), re.M)}
problems = []
for r in rules:
    name = r["alert"]
    cases = [c for t in tests for c in t.get("alert_rule_test", []) if c["alertname"] == name]
    if not any(c.get("exp_alerts") for c in cases):
        problems.append(f"{name}: no test where it fires")
    if not any(not c.get("exp_alerts") for c in cases):
        problems.append(f"{name}: no test where it must stay silent")
    if r.get("labels", {}).get("severity") not in ("critical", "warning"):
        problems.append(f"{name}: severity must be critical or warning")
    url = r.get("annotations", {}).get("runbook_url", "")
    anchor = url.partition("docs/runbook.md#")[2]
    if not anchor:
        problems.append(f"{name}: runbook_url does not point into docs/runbook.md")
    elif anchor not in anchors:
        problems.append(f"{name}: docs/runbook.md has no section #{anchor}")
for p in problems:
    print("  " + p, file=sys.stderr)
if problems:
    sys.exit(1)
print(f"  {len(rules)} alerts: each fires in a test and stays silent in another; runbook sections exist", file=sys.stderr)
PY
amtool check-config alerts/alertmanager.example.yml >/dev/null || die "amtool check-config alerts/alertmanager.example.yml failed"
route_of() { amtool config routes test --config.file=alerts/alertmanager.example.yml "$@" 2>/dev/null; }
[[ "$(route_of severity=critical alertname=SagaTrackerDown)" == "saga-tracker-pager" ]] ||
    die "alertmanager.example.yml: critical alerts do not route to saga-tracker-pager"
[[ "$(route_of severity=warning alertname=SagasStuck)" == "saga-tracker-tickets" ]] ||
    die "alertmanager.example.yml: warning alerts do not route to saga-tracker-tickets"
log "alertmanager.example.yml is valid; critical -> saga-tracker-pager, warning -> saga-tracker-tickets"

step "ops: Helm chart"
"$PY" scripts/ops/chart.py "$CHART" "$OUT/rendered" default= "production=$CHART/values-production.yaml" ||
    die "helm lint/render failed"
validate_k8s() { # FILE VERSION -> non-zero on any failure or WARN other than the CRD kinds
    local file=$1 version=$2 report rc=0
    report="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$file" 2>&1)" || rc=$?
    local bad
    bad="$(grep -E '^(WARN|ERROR)' <<<"$report" | grep -vE "kind (ServiceMonitor|PrometheusRule) with api version monitoring\.coreos\.com/" || true)"
    if ((rc != 0)) || [[ -n "$bad" ]]; then
        printf '%s\n' "$report" >&2
        return 1
    fi
}
for f in "$OUT"/rendered/*.yaml; do
    for v in "${KUBE_VERSIONS[@]}"; do
        validate_k8s "$f" "$v" || die "kubernetes-validate --strict -k $v failed for $(basename "$f")"
    done
    log "$(basename "$f"): valid for Kubernetes ${KUBE_VERSIONS[*]} (strict)"
done
# The validator must refuse an unknown field, or the loop above proves nothing.
cat >"$OUT/selftest.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: selftest}
spec: {ports: [{port: 80}], portz: 1}
YAML
if validate_k8s "$OUT/selftest.yaml" 1.33.0 2>/dev/null; then
    die "kubernetes-validate --strict accepted an unknown field (self-test)"
fi
# The tracker config files the chart mounts, for the live test to feed to the real binary.
mkdir -p "$OUT/config"
for f in "$OUT"/rendered/*.yaml; do
    "$PY" - "$f" "$OUT/config/$(basename "$f" .yaml).toml" <<'PY' || die "no tracker.toml ConfigMap in $(basename "$f")"
import sys, yaml
cm = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap" and "tracker.toml" in d.get("data", {})]
open(sys.argv[2], "w").write(cm[0]["data"]["tracker.toml"])
PY
done
# Every TRACKER_* variable the chart sets must name a setting the tracker has (a typo would
# be skipped with a warning at start-up, leaving e.g. TLS silently off). The names are read
# from the binary's own commented defaults, where every setting appears, set or commented out.
BIN="${SAGA_TRACKER_BIN:-$REPO_ROOT/target/debug/saga-tracker}"
if [[ -x "$BIN" ]]; then
    "$BIN" default-config >"$OUT/default-config.toml"
    "$PY" - "$OUT/default-config.toml" "$OUT"/rendered/*.yaml <<'PY' || die "the chart sets TRACKER_* variables the tracker does not know"
import re, sys, yaml
known, section = set(), ""
for line in open(sys.argv[1]):
    if m := re.match(r"^\[\[?([a-z0-9_.]+)\]\]?\s*$", line):
        section = m.group(1)
        known.add(section)
    elif m := re.match(r"^#?\s*([a-z0-9_]+)\s*=", line):
        known.add(f"{section}.{m.group(1)}")
maps = ("stuck.thresholds.", "kafka.properties.")  # tables of free-form keys
bad = []
for f in sys.argv[2:]:
    for d in yaml.safe_load_all(open(f)):
        if not d or d["kind"] not in ("Deployment", "Job"):
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            for e in c.get("env") or []:
                if not e["name"].startswith("TRACKER_"):
                    continue
                key = e["name"][len("TRACKER_"):].lower().replace("__", ".")
                if key not in known and not key.startswith(maps):
                    bad.append(f"{f.rsplit('/', 1)[-1]}: {d['kind']}: {e['name']} ({key})")
for b in bad:
    print("  " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
PY
    log "every TRACKER_* variable the chart sets names a setting of $(basename "$BIN")"
elif [[ "${OPS_SKIP_LIVE:-0}" == "1" ]]; then
    warn "no tracker binary at $BIN: the chart's TRACKER_* names are not checked against it"
else
    die "no tracker binary at $BIN (build it: cargo build -p saga-tracker)"
fi
mkdir -p "$OUT/crd"
for f in "$OUT"/rendered/*.yaml; do
    "$PY" -c 'import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], open(sys.argv[2], "w"))' \
        "$f" "$OUT/crd/$(basename "$f" .yaml).json"
done
cp scripts/ops/crds.mjs "$NPM_DIR/crds.mjs"
node "$NPM_DIR/crds.mjs" "$OUT/crd" "$OUT"/crd/*.json || die "ServiceMonitor/PrometheusRule do not match the prometheus-operator CRD schemas"
for r in "$OUT"/crd/*.rules.yaml; do
    promtool check rules "$r" >/dev/null || die "promtool check rules failed on the rendered PrometheusRule ($r)"
done
log "rendered ServiceMonitor and PrometheusRule match their CRD schemas; the PrometheusRule passes promtool"

step "ops: Grafana dashboards"
"$PY" scripts/ops/dashboards.py "$OUT/dashboards" dashboards/*.json || die "dashboard checks failed"
cat >"$OUT/dashboards/tsconfig.json" <<'JSON'
{
  "compilerOptions": {"strict": true, "noEmit": true, "module": "nodenext", "moduleResolution": "nodenext",
                      "target": "es2022", "skipLibCheck": true, "types": []},
  "include": ["*.ts"]
}
JSON
ln -sfn "$NPM_DIR/node_modules" "$OUT/dashboards/node_modules"
"$NPM_DIR/node_modules/.bin/tsc" -p "$OUT/dashboards/tsconfig.json" ||
    die "the dashboards do not satisfy @grafana/schema's Dashboard type (tsc errors above; lines refer to $OUT/dashboards/*.ts)"
log "dashboards satisfy @grafana/schema $(node -p "require('$NPM_DIR/node_modules/@grafana/schema/package.json').version") Dashboard"

step "ops: Dockerfile (static: no Docker engine here)"
# Only what can be checked without building: the stages, the non-root user, the entrypoint.
grep -qE '^FROM rust:1\.95-bookworm AS build$' Dockerfile || die "Dockerfile: the build stage must be FROM rust:1.95-bookworm AS build"
grep -qE '^FROM debian:bookworm-slim AS runtime$' Dockerfile || die "Dockerfile: the runtime stage must be FROM debian:bookworm-slim"
grep -qE '^USER 10001(:10001)?$' Dockerfile || die "Dockerfile: the runtime must run as USER 10001"
grep -qE '^ENTRYPOINT \["/usr/local/bin/saga-tracker"\]$' Dockerfile || die "Dockerfile: ENTRYPOINT must be the saga-tracker binary"
grep -qsx 'target/' .dockerignore || die ".dockerignore must exclude target/"
log "Dockerfile: multi-stage, runs as 10001, entrypoint saga-tracker"

if [[ "${OPS_SKIP_LIVE:-0}" == "1" ]]; then
    warn "OPS_SKIP_LIVE=1: live test of dashboards and alerts skipped"
else
    step "ops: live test (tracker + Prometheus + Alertmanager)"
    bash scripts/ops/live.sh "$PY" "$OUT/dashboards/queries.json" "$OUT/config" || die "the live test failed"
fi

step "ops: all checks passed in $((SECONDS - started)) s"
