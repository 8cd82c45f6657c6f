#!/usr/bin/env bash
# Makes sure python3 can import kafka-python, the independent Kafka client the end-to-end
# tests use to send legacy-shape and poison messages and to read the DLQ. Idempotent, quiet.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

have python3 || die "python3 is required (Debian: apt-get install -y python3 python3-pip)"

if python3 -c 'import kafka, sys; sys.exit(0 if int(kafka.__version__.split(".")[0]) >= 2 else 1)' 2>/dev/null; then
    log "kafka-python $(python3 -c 'import kafka; print(kafka.__version__)') is installed"
    exit 0
fi

log "installing $KAFKA_PYTHON_REQUIREMENT"
python3 -m pip install --quiet --disable-pip-version-check "$KAFKA_PYTHON_REQUIREMENT" ||
    python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$KAFKA_PYTHON_REQUIREMENT"
python3 -c 'import kafka' || die "kafka-python installed but cannot be imported by python3"
log "kafka-python $(python3 -c 'import kafka; print(kafka.__version__)') is installed"
