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
# The independent Avro encoder of tests/tests/avro.rs (tests/python/produce_avro.py).
FASTAVRO_REQUIREMENT="fastavro==1.12.2"

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

# free_port — a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# stop_pid PID WHAT [SECONDS] — stops a process this script started: SIGTERM, up to SECONDS
# (default 20) for it to exit, then SIGKILL. Nothing to do when PID is empty or has exited.
stop_pid() {
    local pid=$1 what=$2 secs=${3:-20}
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    log "stopping $what (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + secs))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$what (pid $pid) did not stop within $secs s: killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# finish_work RC WORK WHAT NAME… — the end of a run that kept its files in WORK: when RC is
# non-zero, the last lines of each WORK/NAME.log that has any and a warning that WORK is
# kept ("WHAT failed"); otherwise WORK is removed.
finish_work() {
    local rc=$1 work=$2 what=$3 name
    shift 3
    if ((rc == 0)); then
        rm -rf "$work"
        return 0
    fi
    for name in "$@"; do
        [[ -s "$work/$name.log" ]] || continue
        printf '\n--- last lines of %s.log ---\n' "$name" >&2
        tail -n 15 "$work/$name.log" >&2
    done
    warn "$what failed; logs kept in $work"
}

# psql_admin ARGS… — psql as the superuser over loopback, quiet and strict.
psql_admin() {
    psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" "$@"
}

# export_tracker_env DB_NAME KAFKA_PORT TOPIC GROUP HTTP_PORT — the TRACKER_* variables that
# point a tracker at database DB_NAME of the local PostgreSQL and the broker on
# 127.0.0.1:KAFKA_PORT (topic TOPIC, its DLQ TOPIC.dlq, consumer group GROUP), serving its API
# on 127.0.0.1:HTTP_PORT.
export_tracker_env() {
    export TRACKER_DATABASE__URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$1"
    export TRACKER_KAFKA__BROKERS="127.0.0.1:$2"
    export TRACKER_KAFKA__TOPIC="$3"
    export TRACKER_KAFKA__DLQ_TOPIC="$3.dlq"
    export TRACKER_KAFKA__GROUP_ID="$4"
    export TRACKER_HTTP__ADDR="127.0.0.1:$5"
}

# tansu_bin — the broker binary: $TANSU_BIN if set, else the cached build.
tansu_bin() {
    if [[ -n "${TANSU_BIN:-}" ]]; then
        printf '%s\n' "$TANSU_BIN"
    else
        printf '%s\n' "$TANSU_CACHED_BIN"
    fi
}

# start_tansu DIR PORT — a tansu broker on 127.0.0.1:PORT in the background, its data in
# DIR/tansu and its output in DIR/tansu.log. Sets TANSU_PID (for stop_pid) and returns once
# the broker listens; dies when it does not within 30 s.
start_tansu() {
    local dir=$1 port=$2 bin
    bin="$(tansu_bin)"
    mkdir -p "$dir/tansu"
    (
        # tansu resolves sqlite:// paths against its working directory.
        cd "$dir/tansu"
        exec "$bin" broker \
            --listener-url "tcp://127.0.0.1:$port" \
            --advertised-listener-url "tcp://127.0.0.1:$port" \
            --storage-engine "sqlite://tansu.db"
    ) >"$dir/tansu.log" 2>&1 &
    TANSU_PID=$!
    wait_for_port 127.0.0.1 "$port" 30 "$TANSU_PID" || die "tansu did not listen on 127.0.0.1:$port"
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
