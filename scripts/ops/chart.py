"""Lints and renders the Helm chart offline, with helm-python-sdk (Helm's Go SDK in a shared
library shipped inside the wheel: no helm binary, no download).

    python chart.py CHART_DIR OUT_DIR NAME=VALUES_FILE...

For each NAME=VALUES_FILE (an empty VALUES_FILE means the chart's defaults): strict lint for
Kubernetes 1.29 and 1.33, then a render as release "saga-tracker" into OUT_DIR/NAME.yaml (one
multi-document file, hooks included, NOTES.txt left out). Also checks that values.schema.json
rejects values it must reject. Exits non-zero with a message on the first problem.
"""

import json
import sys
from pathlib import Path

import helm_python as helm
import yaml

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def fail(msg: str) -> None:
    print(f"chart.py: {msg}", file=sys.stderr)
    sys.exit(1)


def load_values(path: str) -> dict:
    return yaml.safe_load(Path(path).read_text()) if path else {}


def lint(chart: str, name: str, values: dict) -> None:
    for kube in ("v1.29.0", "v1.33.0"):
        report = helm.lint(chart, values, strict=True, kube_version=kube)
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        problems += [{"severity": 3, "path": "", "error": e} for e in report.get("errors", [])]
        if problems:
            for m in problems:
                print(f"  [{SEVERITY.get(m['severity'])}] {m.get('path')}: {m.get('error')}", file=sys.stderr)
            fail(f"helm lint --strict failed for values '{name}' (kube {kube})")
        infos = [m for m in report.get("messages", []) if m.get("severity", 0) < 2]
        for m in infos:
            print(f"  [INFO] {m.get('path')}: {m.get('error')}", file=sys.stderr)
    print(f"  lint --strict ({name}, kube 1.29 and 1.33): ok", file=sys.stderr)


def render(chart: str, name: str, values: dict, out: Path) -> None:
    with helm.Chart.load(chart) as c:
        c.validate_schema(values)
        manifests = c.render(values, name="saga-tracker", namespace="saga-tracker", is_install=True)
    docs = []
    for path in sorted(manifests):
        if path.endswith("NOTES.txt"):
            if "saga-tracker" not in manifests[path]:
                fail(f"NOTES.txt rendered empty for values '{name}'")
            continue
        for doc in yaml.safe_load_all(manifests[path]):
            if doc:
                docs.append(doc)
    target = out / f"{name}.yaml"
    target.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    print(f"  render ({name}): {len(docs)} objects -> {target}", file=sys.stderr)
    for k in kinds:
        print(f"    {k}", file=sys.stderr)


def schema_rejects(chart: str) -> None:
    """values.schema.json must refuse what would break the deployment."""
    bad = {
        "grace period shorter than the drain": {"terminationGracePeriodSeconds": 10},
        "database URL in the config file": {"config": '[database]\nurl = "postgres://x@y/z"\n'},
        "no database at all": {"database": {"url": "", "existingSecret": ""}},
        "unknown top-level key": {"replicas": 3},
        "probe on another path": {"livenessProbe": {"httpGet": {"path": "/", "port": "http"}}},
    }
    with helm.Chart.load(chart) as c:
        for what, values in bad.items():
            try:
                c.validate_schema(values)
            except helm.HelmError:
                continue
            fail(f"values.schema.json accepted bad values ({what}): {json.dumps(values)}")
    print(f"  values.schema.json rejects {len(bad)} kinds of bad values: ok", file=sys.stderr)


def main() -> None:
    chart, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for spec in sys.argv[3:]:
        name, _, path = spec.partition("=")
        values = load_values(path)
        lint(chart, name, values)
        render(chart, name, values, out)
    schema_rejects(chart)


if __name__ == "__main__":
    main()
