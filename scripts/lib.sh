# shellcheck shell=bash
# Shared helpers for the scripts in this folder. Source it; do not run it.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Everything here is plain bash: no sudo (the scripts run as root on the dev/CI machines),
# no network but the package registries, nothing interactive.

# Repository root, whatever the caller's working directory.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

# The Kafka-protocol broker used for local runs and tests. Built from crates.io once and
# cached outside the repository so `cargo clean` and fresh clones do not rebuild it.
TANSU_VERSION="0.6.0"
TANSU_ROOT="${TANSU_ROOT:-$HOME/.cache/saga-tracker/tansu-$TANSU_VERSION}"
TANSU_CACHED_BIN="$TANSU_ROOT/bin/tansu"

# PostgreSQL as the machines provide it: trust authentication for `postgres` on loopback.
PG_HOST="${PG_HOST:-127.0.0.1}"
PG_PORT="${PG_PORT:-5432}"
PG_USER="${PG_USER:-postgres}"

# The kafka-python version the scripts install when none is importable.
# shellcheck disable=SC2034 # used by ensure-python.sh
KAFKA_PYTHON_REQUIREMENT="kafka-python==3.0.12"

_ts() { date -u +%H:%M:%S; }

# log MESSAGE… — progress line on stderr, so stdout stays free for values (paths, URLs).
log() { printf '[%s] %s\n' "$(_ts)" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$(_ts)" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "$(_ts)" "$*" >&2
    exit 1
}

# step TITLE — a visible section header in long logs (CI output).
step() { printf '\n[%s] ==> %s\n' "$(_ts)" "$*" >&2; }

have() { command -v "$1" >/dev/null 2>&1; }

# port_open HOST PORT — true when something accepts TCP connections there.
port_open() {
    (exec 3<>"/dev/tcp/$1/$2") >/dev/null 2>&1
}

# wait_for_port HOST PORT SECONDS [PID] — bounded wait for a listener. If PID is given and
# that process dies first, stop waiting at once.
wait_for_port() {
    local host=$1 port=$2 secs=$3 pid=${4:-}
    local deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        if port_open "$host" "$port"; then
            return 0
        fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.2
    done
    return 1
}

# wait_for_http URL SECONDS [PID] — bounded wait until URL answers 2xx.
wait_for_http() {
    local url=$1 secs=$2 pid=${3:-}
    local deadline=$((SECONDS + secs))
    while ((SECONDS < deadline)); do
        if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
            return 0
        fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.5
    done
    return 1
}

# psql_admin ARGS… — psql as the superuser over loopback, quiet and strict.
psql_admin() {
    psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$@"
}

# tansu_bin — the broker binary: $TANSU_BIN if set, else the cached build.
tansu_bin() {
    if [[ -n "${TANSU_BIN:-}" ]]; then
        printf '%s\n' "$TANSU_BIN"
    else
        printf '%s\n' "$TANSU_CACHED_BIN"
    fi
}

# tansu_create_topic BROKER_PORT NAME PARTITIONS — idempotent: an existing topic is fine.
tansu_create_topic() {
    local port=$1 name=$2 partitions=$3 bin out
    bin="$(tansu_bin)"
    if "$bin" topic list --broker "tcp://127.0.0.1:$port" 2>/dev/null | grep -Fq "\"$name\""; then
        log "topic $name already exists"
        return 0
    fi
    if out="$("$bin" topic create "$name" --partitions "$partitions" \
        --broker "tcp://127.0.0.1:$port" 2>&1)"; then
        log "created topic $name ($partitions partitions)"
        return 0
    fi
    if grep -qiE "already exists|TopicAlreadyExists" <<<"$out"; then
        log "topic $name already exists"
        return 0
    fi
    printf '%s\n' "$out" >&2
    die "could not create topic $name on 127.0.0.1:$port"
}
