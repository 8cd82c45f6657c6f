#!/usr/bin/env bash
# Makes sure the Python tools the tests use are installed. Idempotent, quiet.
#
#   - kafka-python, importable by python3: the independent Kafka client the end-to-end tests
#     use to send legacy-shape and poison messages and to read the DLQ;
#   - fastavro (pinned), importable by python3 too: the independent Avro encoder with which
#     tests/python/produce_avro.py sends Confluent-framed events (tests/tests/avro.rs);
#   - schemathesis (pinned), in a virtualenv of its own at $SCHEMATHESIS_VENV
#     (default ~/.cache/saga-tracker/schemathesis-venv), for scripts/schemathesis.sh. A venv,
#     so its many dependencies cannot upset the system python's packages;
#   - rotel (pinned), a real OpenTelemetry collector shipped as a PyPI wheel, in a virtualenv
#     at $ROTEL_VENV (default ~/.cache/saga-tracker/rotel-venv): the OTLP receiver of
#     tests/tests/telemetry.rs (see tests/src/otel.rs). Its agent embeds Python for trace
#     processors, so it needs the interpreter's libpython (the harness sets LD_LIBRARY_PATH).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Pinned so a new release cannot change the verdict between two runs.
SCHEMATHESIS_REQUIREMENT="schemathesis==4.32.5"
SCHEMATHESIS_VENV="${SCHEMATHESIS_VENV:-$HOME/.cache/saga-tracker/schemathesis-venv}"
ROTEL_REQUIREMENT="rotel==0.0.1a15"
ROTEL_VENV="${ROTEL_VENV:-$HOME/.cache/saga-tracker/rotel-venv}"

have python3 || die "python3 is required (Debian: apt-get install -y python3 python3-pip)"

kafka_python_ok() {
    python3 -c 'import kafka, sys; sys.exit(0 if int(kafka.__version__.split(".")[0]) >= 2 else 1)' 2>/dev/null
}

if ! kafka_python_ok; then
    log "installing $KAFKA_PYTHON_REQUIREMENT"
    python3 -m pip install --quiet --disable-pip-version-check "$KAFKA_PYTHON_REQUIREMENT" ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$KAFKA_PYTHON_REQUIREMENT"
    python3 -c 'import kafka' || die "kafka-python installed but cannot be imported by python3"
fi
log "kafka-python $(python3 -c 'import kafka; print(kafka.__version__)') is installed"

fastavro_ok() {
    python3 - "${FASTAVRO_REQUIREMENT#*==}" <<'PY' 2>/dev/null
import sys
import fastavro
sys.exit(0 if fastavro.__version__ == sys.argv[1] else 1)
PY
}

if ! fastavro_ok; then
    log "installing $FASTAVRO_REQUIREMENT"
    python3 -m pip install --quiet --disable-pip-version-check "$FASTAVRO_REQUIREMENT" ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$FASTAVRO_REQUIREMENT"
    fastavro_ok || die "$FASTAVRO_REQUIREMENT installed but python3 cannot import that version"
fi
log "fastavro ${FASTAVRO_REQUIREMENT#*==} is installed"

# venv_install VENV REQUIREMENT CHECK — installs REQUIREMENT into its own virtualenv VENV
# (created when missing) and fails unless the function CHECK then succeeds. Tools get their
# own environments so their pins never fight each other or the system's packages.
venv_install() {
    local venv=$1 requirement=$2 check=$3
    log "installing $requirement into $venv"
    mkdir -p "$(dirname "$venv")"
    [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv" ||
        die "python3 -m venv failed (Debian: apt-get install -y python3-venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$requirement" ||
        die "pip install $requirement failed"
    "$check" || die "$venv does not have a working $requirement after installing it"
}

schemathesis_ok() {
    [[ -x "$SCHEMATHESIS_VENV/bin/python" ]] &&
        "$SCHEMATHESIS_VENV/bin/python" - "${SCHEMATHESIS_REQUIREMENT#*==}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("schemathesis") == sys.argv[1] else 1)
PY
}

schemathesis_ok || venv_install "$SCHEMATHESIS_VENV" "$SCHEMATHESIS_REQUIREMENT" schemathesis_ok
log "schemathesis ${SCHEMATHESIS_REQUIREMENT#*==} is installed ($SCHEMATHESIS_VENV)"

rotel_ok() {
    [[ -x "$ROTEL_VENV/bin/python" ]] &&
        "$ROTEL_VENV/bin/python" - "${ROTEL_REQUIREMENT#*==}" <<'PY' 2>/dev/null
import os, sys
from importlib.metadata import version
import rotel
agent = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
sys.exit(0 if version("rotel") == sys.argv[1] and os.access(agent, os.X_OK) else 1)
PY
}

rotel_ok || venv_install "$ROTEL_VENV" "$ROTEL_REQUIREMENT" rotel_ok
log "rotel ${ROTEL_REQUIREMENT#*==} is installed ($ROTEL_VENV)"
