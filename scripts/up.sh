#!/usr/bin/env bash
# Runs Saga Tracker locally: PostgreSQL + a Kafka-protocol broker + the tracker.
#
#   scripts/up.sh                    # dev mode: broker embedded in the tracker, demo traffic on
#   scripts/up.sh --no-demo          # … without the demo traffic
#   scripts/up.sh --broker tansu     # a persistent broker (tansu, built once) + `saga-tracker run`
#   scripts/up.sh --broker tansu --demo   # … plus the demo traffic generator
#   scripts/up.sh --release          # build the tracker optimised (slower first build)
#
# Dev mode (the default) builds only the tracker and runs `saga-tracker dev`: librdkafka's
# mock cluster inside the tracker process, reached on 127.0.0.1:9092, in memory (a few MiB
# per partition, nothing kept across restarts); the tracker creates and migrates the
# `saga_tracker` database. With `--broker tansu`, each step idempotent:
#   1. makes sure PostgreSQL runs (starting or installing it) and tansu is built;
#   2. starts tansu on 127.0.0.1:9092 with its data under .run/ (unless something already
#      listens there, which is then reused) and creates the topics;
#   3. creates the `saga_tracker` database, builds the tracker and migrates;
#   4. runs `saga-tracker run` until Ctrl-C, then stops only what this script started.
#
# Overrides: TRACKER_HTTP__ADDR, TRACKER_DATABASE__URL, TRACKER_KAFKA__BROKERS (an external
# broker: nothing is started, `saga-tracker run` is used), DEMO_RATE (events/s, default 20).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

broker=dev
demo=""
release=0
while (($#)); do
    case "$1" in
    --broker)
        (($# >= 2)) || die "--broker needs a value: dev or tansu"
        broker="$2"
        shift
        ;;
    --broker=*) broker="${1#--broker=}" ;;
    --demo) demo=1 ;;
    --no-demo) demo=0 ;;
    --release) release=1 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        usage >&2
        die "unknown argument: $1"
        ;;
    esac
    shift
done
case "$broker" in
dev | tansu) ;;
*) die "--broker must be dev or tansu, not '$broker'" ;;
esac
# An external broker needs `run`, not the embedded one.
if [[ -n "${TRACKER_KAFKA__BROKERS:-}" && "$broker" == dev ]]; then
    broker=tansu
fi
# Dev mode has the demo on unless --no-demo; the tansu path keeps it opt-in (--demo).
if [[ -z "$demo" ]]; then
    if [[ "$broker" == dev ]]; then demo=1; else demo=0; fi
fi

cd "$REPO_ROOT"
RUN_DIR="$REPO_ROOT/.run"
mkdir -p "$RUN_DIR"

KAFKA_PORT=9092
DB_NAME="saga_tracker"
TOPIC="saga.tracker"
DLQ_TOPIC="saga.tracker.dlq"
export TRACKER_HTTP__ADDR="${TRACKER_HTTP__ADDR:-127.0.0.1:8080}"
export TRACKER_DATABASE__URL="${TRACKER_DATABASE__URL:-postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB_NAME}"
external_broker="${TRACKER_KAFKA__BROKERS:-}"
export TRACKER_KAFKA__BROKERS="${TRACKER_KAFKA__BROKERS:-127.0.0.1:$KAFKA_PORT}"
export TRACKER_KAFKA__TOPIC="$TOPIC"
export TRACKER_KAFKA__DLQ_TOPIC="$DLQ_TOPIC"
export TRACKER_KAFKA__CREATE_TOPICS=true
BASE_URL="http://$TRACKER_HTTP__ADDR"

# Sets BIN. The dev profile by default: its first build is minutes shorter than --release.
build_tracker() {
    step "Build"
    if ((release)); then
        cargo build --release -p saga-tracker
        BIN="$REPO_ROOT/target/release/saga-tracker"
    else
        cargo build -p saga-tracker
        BIN="$REPO_ROOT/target/debug/saga-tracker"
    fi
    [[ -x "$BIN" ]] || die "build produced no $BIN"
}

# PIDs of what this script started; only these are stopped on exit.
TANSU_PID=""
TRACKER_PID=""
DEMO_PID=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$DEMO_PID" "demo traffic generator" 10
    stop_pid "$TRACKER_PID" "saga-tracker" 30
    stop_pid "$TANSU_PID" "tansu broker" 15
    exit "$rc"
}
# The children run in sessions of their own (setsid), so Ctrl-C reaches only this script,
# which then stops them in order: the traffic first, then the tracker (which commits its
# offsets while the broker is still up), the broker last.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

step "PostgreSQL"
bash "$REPO_ROOT/scripts/ensure-postgres.sh"

if [[ "$broker" == dev ]]; then
    build_tracker

    step "Run (dev mode: embedded broker)"
    if port_open "${TRACKER_HTTP__ADDR%:*}" "${TRACKER_HTTP__ADDR##*:}"; then
        die "$TRACKER_HTTP__ADDR is already in use; set TRACKER_HTTP__ADDR=127.0.0.1:PORT to use another port"
    fi
    if port_open 127.0.0.1 "$KAFKA_PORT"; then
        die "127.0.0.1:$KAFKA_PORT is already in use (a broker?): stop it, or use it with scripts/up.sh --broker tansu"
    fi
    unset TRACKER_KAFKA__BROKERS TRACKER_KAFKA__CREATE_TOPICS
    dev_args=(dev --broker-port "$KAFKA_PORT" --demo-rate "${DEMO_RATE:-20}")
    ((demo)) || dev_args+=(--no-demo)
    # The tracker prints the UI's address, the bootstrap address and how to produce to it.
    setsid "$BIN" "${dev_args[@]}" &
    TRACKER_PID=$!
    set +e
    wait "$TRACKER_PID"
    rc=$?
    set -e
    TRACKER_PID=""
    log "saga-tracker exited with status $rc"
    exit "$rc"
fi

step "Kafka-protocol broker"
if [[ -n "$external_broker" ]]; then
    log "using the broker(s) from TRACKER_KAFKA__BROKERS=$external_broker (not starting tansu)"
else
    TANSU_BIN="$(bash "$REPO_ROOT/scripts/ensure-tansu.sh")"
    export TANSU_BIN
    if port_open 127.0.0.1 "$KAFKA_PORT"; then
        log "something already listens on 127.0.0.1:$KAFKA_PORT: reusing it as the broker"
    else
        mkdir -p "$RUN_DIR/tansu"
        log "starting tansu on 127.0.0.1:$KAFKA_PORT (data: .run/tansu/tansu.db, log: .run/tansu.log)"
        # tansu resolves sqlite:// paths against its working directory, hence the cd.
        (
            cd "$RUN_DIR/tansu"
            exec setsid "$TANSU_BIN" broker \
                --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
                --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
                --storage-engine "sqlite://tansu.db"
        ) >"$RUN_DIR/tansu.log" 2>&1 &
        TANSU_PID=$!
        wait_for_port 127.0.0.1 "$KAFKA_PORT" 30 "$TANSU_PID" || {
            tail -n 30 "$RUN_DIR/tansu.log" >&2 || true
            die "tansu did not start listening on 127.0.0.1:$KAFKA_PORT (log: .run/tansu.log)"
        }
        log "tansu is listening (pid $TANSU_PID)"
    fi
    tansu_create_topic "$KAFKA_PORT" "$TOPIC" 3
    tansu_create_topic "$KAFKA_PORT" "$DLQ_TOPIC" 1
fi

step "Database"
if [[ "$TRACKER_DATABASE__URL" == "postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB_NAME" ]]; then
    if [[ "$(psql_admin -d postgres -tAc "select 1 from pg_database where datname = '$DB_NAME'")" != "1" ]]; then
        psql_admin -d postgres -c "create database $DB_NAME"
        log "created database $DB_NAME"
    else
        log "database $DB_NAME exists"
    fi
else
    log "using TRACKER_DATABASE__URL from the environment (not creating a database)"
fi

build_tracker

step "Migrate"
"$BIN" migrate

step "Run"
if port_open "${TRACKER_HTTP__ADDR%:*}" "${TRACKER_HTTP__ADDR##*:}"; then
    die "$TRACKER_HTTP__ADDR is already in use; set TRACKER_HTTP__ADDR=127.0.0.1:PORT to use another port"
fi
setsid "$BIN" run &
TRACKER_PID=$!
if ! wait_for_http "$BASE_URL/readyz" 60 "$TRACKER_PID"; then
    warn "the tracker is not ready after 60 s (see its log above); leaving it running"
fi

if ((demo)); then
    log "starting the demo traffic generator (log: .run/demo.log)"
    # The demo produces to TRACKER_KAFKA__BROKERS / TRACKER_KAFKA__TOPIC, exported above.
    setsid "$BIN" demo --rate "${DEMO_RATE:-20}" >"$RUN_DIR/demo.log" 2>&1 &
    DEMO_PID=$!
fi

cat >&2 <<EOF

  Saga Tracker is running at $BASE_URL  (Ctrl-C stops everything this script started)

    Saga Explorer (web UI): $BASE_URL/ui

    curl -s '$BASE_URL/api/v1/sagas?limit=5' | python3 -m json.tool
    curl -s '$BASE_URL/api/v1/sagas?status=FAILED&status=COMPENSATED'
    curl -s '$BASE_URL/api/v1/sagas?businessKey=8812'
    curl -s '$BASE_URL/api/v1/sagas/SAGA_ID'            # summary + step timeline
    curl -s '$BASE_URL/api/v1/sagas/SAGA_ID/events'     # raw events in saga order
    curl -s '$BASE_URL/metrics' | grep '^saga_tracker_'
    curl -s '$BASE_URL/readyz'
    API docs: $BASE_URL/docs     OpenAPI: $BASE_URL/openapi.json
    Broker: $TRACKER_KAFKA__BROKERS (topics $TOPIC, $DLQ_TOPIC)   Logs: .run/

EOF

# Wait for the tracker. `wait` returns early when a trapped signal arrives, and the trap's
# `exit` runs cleanup, which stops the tracker gracefully (SIGTERM) and then the rest.
set +e
wait "$TRACKER_PID"
rc=$?
set -e
TRACKER_PID=""
log "saga-tracker exited with status $rc"
exit "$rc"
