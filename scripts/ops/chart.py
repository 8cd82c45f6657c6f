"""Lints and renders the Helm chart offline, with helm-python-sdk (Helm's Go SDK in a shared
library shipped inside the wheel: no helm binary, no download).

    python chart.py CHART_DIR OUT_DIR NAME=VALUES_FILE...

For each NAME=VALUES_FILE (an empty VALUES_FILE means the chart's defaults): strict lint for
Kubernetes 1.29 and 1.33, then a render as release "saga-tracker" into OUT_DIR/NAME.yaml (one
multi-document file, hooks included, NOTES.txt left out), and a check that every pod it
renders is hardened (see `assert_hardened`); for the values named "production", also that
access control is on and the probes and the scrape use the ops listener. Also checks that
values.schema.json rejects values it must reject. Exits non-zero with a message on the first
problem.
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


SECRETS_DIR = "/var/run/secrets/saga-tracker/"
UID = 10001


def pod_specs(docs: list) -> list:
    """(label, pod spec) of every workload: the Deployment and the migration Job."""
    return [
        (f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")
    ]


def assert_hardened(name: str, docs: list) -> None:
    """Every pod runs as the image's non-root user with nothing it does not need: read-only
    root filesystem (a writable emptyDir at /tmp), no privilege escalation, no capabilities,
    the RuntimeDefault seccomp profile, no service-account token, no injected service links;
    and every file setting the tracker is given a path to is actually mounted."""
    problems = []
    workloads = pod_specs(docs)
    if not any(w.startswith("Deployment/") for w, _ in workloads):
        problems.append("no Deployment rendered")
    for what, pod in workloads:
        def want(cond: bool, msg: str) -> None:
            if not cond:
                problems.append(f"{what}: {msg}")

        psc = pod.get("securityContext") or {}
        want(pod.get("automountServiceAccountToken") is False, "automountServiceAccountToken must be false")
        want(pod.get("enableServiceLinks") is False, "enableServiceLinks must be false")
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            csc = c.get("securityContext") or {}

            def eff(key: str):
                return csc.get(key, psc.get(key))

            cname = f"container {c['name']}"
            want(eff("runAsNonRoot") is True, f"{cname}: runAsNonRoot must be true")
            want(eff("runAsUser") == UID, f"{cname}: runAsUser must be {UID} (the image's user)")
            want((eff("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{cname}: seccompProfile must be RuntimeDefault")
            want(csc.get("readOnlyRootFilesystem") is True, f"{cname}: readOnlyRootFilesystem must be true")
            want(csc.get("allowPrivilegeEscalation") is False, f"{cname}: allowPrivilegeEscalation must be false")
            want(csc.get("privileged") in (None, False), f"{cname}: must not be privileged")
            caps = csc.get("capabilities") or {}
            want(caps.get("drop") == ["ALL"] and not caps.get("add"), f"{cname}: capabilities must drop [ALL] and add none")
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
            tmp = mounts.get("/tmp")
            want(tmp is not None and "emptyDir" in volumes.get(tmp["name"], {}), f"{cname}: /tmp must be an emptyDir")
            for env in c.get("env") or []:
                path = env.get("value") or ""
                if not path.startswith(SECRETS_DIR):
                    continue
                mount = next((m for p, m in mounts.items() if path.startswith(p.rstrip("/") + "/")), None)
                if mount is None:
                    problems.append(f"{what}: {cname}: {env['name']}={path} is not under any volumeMount")
                    continue
                want(mount.get("readOnly") is True, f"{cname}: the mount of {env['name']} must be read-only")
                secret = volumes.get(mount["name"], {}).get("secret")
                key = path[len(mount["mountPath"].rstrip("/")) + 1:]
                want(secret is not None and any(i["path"] == key for i in secret.get("items", [])),
                     f"{cname}: {env['name']} points at {key}, which its Secret volume does not project")
    for d in docs:
        if d["kind"] == "ServiceAccount" and d.get("automountServiceAccountToken") is not False:
            problems.append(f"ServiceAccount/{d['metadata']['name']}: automountServiceAccountToken must be false")
    if problems:
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        fail(f"the pods rendered with values '{name}' are not hardened")
    print(f"  hardened ({name}): {', '.join(w for w, _ in workloads)}", file=sys.stderr)


def env_of(docs: list, kind: str) -> dict:
    pod = next(p for w, p in pod_specs(docs) if w.startswith(kind + "/"))
    return {e["name"]: e.get("value") for c in pod["containers"] for e in c.get("env") or []}


def assert_production(docs: list) -> None:
    """The production example turns access control on and moves probes and /metrics to the
    ops listener, with the transport security given as typed settings."""
    problems = []
    env = env_of(docs, "Deployment")
    job_env = env_of(docs, "Job")
    expect = {
        "TRACKER_AUTH__ENABLED": "true",
        "TRACKER_HTTP__OPS_ADDR": "0.0.0.0:9090",
        "TRACKER_KAFKA__TLS__ENABLED": "true",
        "TRACKER_DATABASE__SSL_MODE": "verify-full",
    }
    for k, v in expect.items():
        if env.get(k) != v:
            problems.append(f"Deployment: {k} is {env.get(k)!r}, expected {v!r}")
    for k in ("TRACKER_AUTH__API_KEYS_FILE", "TRACKER_KAFKA__SASL__PASSWORD_FILE", "TRACKER_DATABASE__PASSWORD_FILE"):
        if not (env.get(k) or "").startswith(SECRETS_DIR):
            problems.append(f"Deployment: {k} must be a file under {SECRETS_DIR}")
    # The job loads the same settings (and migrates over the same verified TLS connection).
    for k in ("TRACKER_DATABASE__SSL_MODE", "TRACKER_DATABASE__PASSWORD_FILE", "TRACKER_DATABASE__SSL_ROOT_CERT"):
        if job_env.get(k) != env.get(k):
            problems.append(f"Job: {k} differs from the Deployment's")
    pod = next(p for w, p in pod_specs(docs) if w.startswith("Deployment/"))
    tracker = pod["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in tracker.get("ports", [])}
    if ports.get("ops") != 9090:
        problems.append("Deployment: no container port `ops` (9090)")
    for probe in ("livenessProbe", "readinessProbe"):
        if tracker.get(probe, {}).get("httpGet", {}).get("port") != "ops":
            problems.append(f"Deployment: {probe} must use the ops port")
    svc = next(d for d in docs if d["kind"] == "Service")
    if "ops" not in {p["name"] for p in svc["spec"]["ports"]}:
        problems.append("Service: no `ops` port for the ServiceMonitor")
    sm = [d for d in docs if d["kind"] == "ServiceMonitor"]
    if not sm or any(e.get("port") != "ops" for e in sm[0]["spec"]["endpoints"]):
        problems.append("ServiceMonitor: must scrape the ops port")
    if problems:
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        fail("the production values do not render the production set-up")
    print("  production: auth on, probes and scrape on the ops port, TLS/SASL typed settings: ok", file=sys.stderr)


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
    assert_hardened(name, docs)
    if name == "production":
        assert_production(docs)
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
        "unknown SASL mechanism": {"kafka": {"sasl": {"mechanism": "GSSAPI", "username": "u",
                                                     "passwordFile": {"secret": "s", "key": "p"}}}},
        "SASL without a password": {"kafka": {"sasl": {"mechanism": "PLAIN", "username": "u"}}},
        "client certificate without its key": {"kafka": {"tls": {"enabled": True, "certFile": {"secret": "s", "key": "tls.crt"}}}},
        "unknown sslMode": {"database": {"url": "postgres://x@y/z", "sslMode": "verify"}},
        "file setting without its key": {"database": {"url": "postgres://x@y/z", "passwordFile": {"secret": "s"}}},
        "auth on with neither API keys nor OIDC": {"auth": {"enabled": True}},
        "OIDC over plain http": {"auth": {"enabled": True, "oidc": {"issuer": "https://idp", "audience": "a",
                                                                   "jwksUrl": "http://idp/certs"}}},
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
