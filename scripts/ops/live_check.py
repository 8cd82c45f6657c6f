"""The live half of the dashboard and alert checks, against a real Prometheus and Alertmanager.

    python live_check.py queries PROM_URL QUERIES_JSON START_UNIX TIMEOUT_S
    python live_check.py rules PROM_URL
    python live_check.py alert AM_URL ALERTNAME TIMEOUT_S

queries: every dashboard query returns at least one non-NaN sample over [START, now]
         (retried until TIMEOUT: rates need a few scrapes); lists the dead ones otherwise.
rules:   every rule group loaded and no rule's last evaluation failed.
alert:   Alertmanager has received ALERTNAME (polls /api/v2/alerts until TIMEOUT).
"""

import json
import math
import sys
import time
import urllib.parse
import urllib.request


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def has_data(prom: str, expr: str, start: float) -> bool:
    q = urllib.parse.urlencode({"query": expr, "start": start, "end": time.time(), "step": "1"})
    body = get(f"{prom}/api/v1/query_range?{q}")
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {body}")
    for series in body["data"]["result"]:
        for _, v in series.get("values", []):
            if not math.isnan(float(v)):
                return True
    return False


def queries(prom: str, path: str, start: float, timeout: float) -> None:
    pending = json.load(open(path))
    total = len(pending)
    deadline = time.time() + timeout
    while pending and time.time() < deadline:
        pending = [q for q in pending if not has_data(prom, q["expr"], start)]
        if pending:
            time.sleep(2)
    if pending:
        for q in pending:
            print(f"  DEAD: {q['dashboard']} / {q['panel']} [{q['refId']}]: {q['expr']}", file=sys.stderr)
        sys.exit(f"live_check.py: {len(pending)} of {total} panel queries returned no data")
    print(f"  all {total} panel queries returned data", file=sys.stderr)


def rules(prom: str) -> None:
    groups = get(f"{prom}/api/v1/rules")["data"]["groups"]
    n = 0
    bad = []
    for g in groups:
        for r in g["rules"]:
            n += 1
            if r.get("health") not in ("ok", "unknown"):
                bad.append(f"{r['name']}: {r.get('health')} {r.get('lastError', '')}")
    if not n or bad:
        sys.exit("live_check.py: rules not healthy in Prometheus: " + ("; ".join(bad) or "no rules loaded"))
    firing = sorted({a["labels"]["alertname"] for a in get(f"{prom}/api/v1/alerts")["data"]["alerts"]})
    print(f"  {n} rules evaluate without error; active alerts: {', '.join(firing) or 'none'}", file=sys.stderr)


def alert(am: str, name: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for a in get(f"{am}/api/v2/alerts"):
            if a["labels"].get("alertname") == name:
                print(f"  Alertmanager received {name} {json.dumps(a['labels'], sort_keys=True)}", file=sys.stderr)
                if not a["annotations"].get("runbook_url", "").startswith("https://"):
                    sys.exit(f"live_check.py: {name} arrived without a runbook_url annotation")
                return
        time.sleep(1)
    sys.exit(f"live_check.py: Alertmanager did not receive {name} within {timeout:.0f} s")


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "queries":
        queries(sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]))
    elif cmd == "rules":
        rules(sys.argv[2])
    elif cmd == "alert":
        alert(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        sys.exit(f"unknown command {cmd}")
