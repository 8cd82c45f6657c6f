"""Static checks of the Grafana dashboards, and the query list for the live test.

    python dashboards.py OUT_DIR DASHBOARD.json...

For each dashboard: the JSON parses; `datasource` (type datasource) and `saga_type` are template
variables; every panel and target uses the ${datasource} variable; panel ids are unique;
at least one data link points at the tracker's REST API through ${tracker_url}; every PromQL
expression parses (promql-parser, the Rust parser of the Prometheus project's grammar) once
Grafana's variables are substituted. Writes OUT_DIR/queries.json: [{dashboard, panel, refId,
expr}] with the substituted expressions, for the live test against a real Prometheus; and
OUT_DIR/<name>.ts for the @grafana/schema type-check.
"""

import json
import re
import sys
from pathlib import Path

import promql_parser

# What Grafana would put in place of its variables, for a parse and a live query.
SUBSTITUTIONS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "${saga_type}": ".*",
    "$saga_type": ".*",
}

errors = []


def err(msg: str) -> None:
    errors.append(msg)


def substitute(expr: str) -> str:
    for k, v in SUBSTITUTIONS.items():
        expr = expr.replace(k, v)
    return expr


def panels_of(d):
    for p in d.get("panels", []):
        yield p
        yield from p.get("panels", [])


def check(path: Path, out: Path, queries: list) -> None:
    try:
        d = json.loads(path.read_text())
    except ValueError as e:
        err(f"{path}: not valid JSON: {e}")
        return
    name = path.stem
    variables = {v["name"]: v for v in d.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource":
        err(f"{path}: no 'datasource' template variable of type datasource")
    if "saga_type" not in variables:
        err(f"{path}: no 'saga_type' template variable")
    if "tracker_url" not in variables:
        err(f"{path}: no 'tracker_url' template variable")
    # Query variables must find their values too: label_values(METRIC, LABEL) is what
    # Grafana turns into a series lookup; the live test runs it as `group by (LABEL) (METRIC)`.
    for v in variables.values():
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q.strip())
        if not m:
            err(f"{path}: variable {v['name']}: expected label_values(metric, label), got {q!r}")
            continue
        expr = f"group by ({m.group(2)}) ({m.group(1)})"
        promql_parser.parse(expr)
        queries.append({"dashboard": name, "panel": f"variable {v['name']}", "refId": "-", "expr": expr})
    ids = set()
    rest_links = 0
    for link in d.get("links", []):
        if link.get("url", "").startswith("${tracker_url}/api/v1/"):
            rest_links += 1
    for p in panels_of(d):
        if p.get("type") == "row":
            continue
        title = p.get("title", "?")
        if p.get("id") in ids:
            err(f"{path}: duplicate panel id {p.get('id')}")
        ids.add(p.get("id"))
        if p.get("datasource", {}).get("uid") != "${datasource}":
            err(f"{path}: panel '{title}' does not use the ${{datasource}} variable")
        for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", []):
            if link.get("url", "").startswith("${tracker_url}/api/v1/sagas"):
                rest_links += 1
        targets = p.get("targets", [])
        if not targets:
            err(f"{path}: panel '{title}' has no query")
        for t in targets:
            if t.get("datasource", {}).get("uid") != "${datasource}":
                err(f"{path}: panel '{title}' query {t.get('refId')} does not use ${{datasource}}")
            expr = substitute(t.get("expr", ""))
            if "$" in expr:
                err(f"{path}: panel '{title}' query {t.get('refId')}: unknown variable left in {expr!r}")
                continue
            try:
                promql_parser.parse(expr)
            except Exception as e:  # the parser raises ValueError subclasses
                err(f"{path}: panel '{title}' query {t.get('refId')} does not parse: {e}\n    {expr}")
                continue
            for m in re.findall(r"\b(saga_tracker_[a-z_]+)", expr):
                if not re.fullmatch(r"saga_tracker_[a-z_]+", m):
                    err(f"{path}: odd metric name {m}")
            queries.append({"dashboard": name, "panel": title, "refId": t.get("refId"), "expr": expr})
    if rest_links == 0:
        err(f"{path}: no data link to the tracker's REST API (${{tracker_url}}/api/v1/...)")
    # For the @grafana/schema type-check: the JSON as a TypeScript literal that must satisfy
    # the Dashboard type (excess-property checks catch misspelled keys).
    body = path.read_text().rstrip()
    (out / f"{name}.ts").write_text(
        "import type { Dashboard } from '@grafana/schema';\n"
        f"export const dashboard = {body} satisfies Dashboard;\n"
    )


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    queries: list = []
    for p in sys.argv[2:]:
        check(Path(p), out, queries)
    # The parser must refuse garbage, or the check above proves nothing.
    try:
        promql_parser.parse("sum by (le (rate(x[5m]))")
        err("promql_parser accepted an invalid expression (self-test)")
    except Exception:
        pass
    if errors:
        for e in errors:
            print(f"dashboards.py: {e}", file=sys.stderr)
        sys.exit(1)
    (out / "queries.json").write_text(json.dumps(queries, indent=1))
    print(f"  {len(sys.argv) - 2} dashboards, {len(queries)} queries: structure and PromQL ok", file=sys.stderr)


if __name__ == "__main__":
    main()
