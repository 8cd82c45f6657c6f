#!/usr/bin/env bash
# Saga Explorer benchmark: the server time of every UI page kind against a database of N
# synthetic sagas (results in docs/BENCHMARKS.md, "Saga Explorer: server time per page").
#
#   scripts/bench-ui.sh                      # N = 1,000,000
#   SAGAS=10000000 EVENTS_EVERY=10 scripts/bench-ui.sh
#
# Steps, each idempotent (a second run reuses what the first one built):
#   1. builds the release tracker, creates the database saga_ui_bench_<N> and migrates it;
#   2. seeds N sagas with SQL (scripts/bench-ui/seed-chunk.sql) in chunks of CHUNK, each
#      one transaction that also records its progress, so an interrupted seed resumes; then
#      vacuums, analyzes and rebuilds the statistics rollups (`saga-tracker migrate` after
#      emptying stats_rollup_version) so the overview is exact;
#   3. starts a tansu broker and `saga-tracker run` on free loopback ports (the consumer
#      is not optional, so a broker is needed although nothing is produced; retention off,
#      so the tracker does not delete the oldest seeded sagas while it is measured);
#   4. times each page kind with curl over one keep-alive connection: WARMUP requests, then
#      RUNS timed ones (5 when a single request takes over 2 s), and prints p50/p99 (ms);
#      the export also reports the tracker's peak RSS while exporting;
#   5. writes target/bench-ui/<N>.tsv (raw) and <N>.md (table), and, when the table of
#      another N exists there, the ratio of the p50s.
#
# Environment: SAGAS (default 1000000), EVENTS_EVERY (store events for sagas i with
# i % EVENTS_EVERY = 0, plus every running saga; default 1 = all), CHUNK (sagas per seed
# transaction, default 20000), RUNS (30), WARMUP (3), BENCH_DB (default saga_ui_bench_<N>),
# SEED_ONLY=1 (stop after step 2). PG_HOST/PG_PORT/PG_USER as in scripts/lib.sh.
#
# Nothing here asserts a speed; the numbers depend on the machine and its load.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SAGAS="${SAGAS:-1000000}"
EVENTS_EVERY="${EVENTS_EVERY:-1}"
CHUNK="${CHUNK:-20000}"
RUNS="${RUNS:-30}"
WARMUP="${WARMUP:-3}"
DB="${BENCH_DB:-saga_ui_bench_$SAGAS}"
[[ "$SAGAS" =~ ^[1-9][0-9]*$ ]] || die "SAGAS must be a positive integer, got '$SAGAS'"
[[ "$EVENTS_EVERY" =~ ^[1-9][0-9]*$ ]] || die "EVENTS_EVERY must be a positive integer"
[[ "$CHUNK" =~ ^[1-9][0-9]*$ ]] || die "CHUNK must be a positive integer"
[[ "$DB" =~ ^[a-z_][a-z0-9_]*$ ]] || die "BENCH_DB must be a plain lowercase identifier"

cd "$REPO_ROOT"
OUT_DIR="$REPO_ROOT/target/bench-ui"
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/bench-ui.XXXXXX")"
DB_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB"
BIN="$REPO_ROOT/target/release/saga-tracker"

TANSU_PID=""
TRACKER_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$TRACKER_PID" "saga-tracker" 30
    stop_pid "$TANSU_PID" "tansu broker" 15
    finish_work "$rc" "$WORK" "bench-ui" tracker tansu
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# psql on the bench database, values only (unaligned, no headers).
q() { psql_admin -d "$DB" -tA "$@"; }

step "PostgreSQL, broker and build"
bash "$REPO_ROOT/scripts/ensure-postgres.sh"
TANSU_BIN="$(bash "$REPO_ROOT/scripts/ensure-tansu.sh")"
export TANSU_BIN
cargo build --release -p saga-tracker
[[ -x "$BIN" ]] || die "build produced no $BIN"

step "Database $DB"
if [[ "$(psql_admin -d postgres -tAc "select 1 from pg_database where datname = '$DB'")" != "1" ]]; then
    psql_admin -d postgres -c "create database $DB"
    log "created database $DB"
fi
TRACKER_DATABASE__URL="$DB_URL" TRACKER_LOG__LEVEL=warn "$BIN" migrate
# The seed's parameters and progress; one row. `t0` anchors every seeded time, so a chunk
# re-run after an interruption produces the same rows.
q -c "create table if not exists ui_bench_seed (
        singleton boolean primary key default true check (singleton),
        n bigint not null,
        events_every integer not null,
        t0 timestamptz not null,
        done bigint not null default 1,
        finalized_at timestamptz)"
q -c "insert into ui_bench_seed (n, events_every, t0) values ($SAGAS, $EVENTS_EVERY, now())
      on conflict (singleton) do nothing"
read -r seeded_n seeded_every done < <(q -F ' ' -c "select n, events_every, done from ui_bench_seed")
[[ "$seeded_n" == "$SAGAS" && "$seeded_every" == "$EVENTS_EVERY" ]] ||
    die "$DB was seeded with SAGAS=$seeded_n EVENTS_EVERY=$seeded_every; drop it or set BENCH_DB"

step "Seed: $SAGAS sagas, events for i % $EVENTS_EVERY = 0 and every running saga"
# Seeding only: no JIT (it costs more than it saves on these one-off statements), no wait
# for the WAL flush per chunk (a crash loses at most the last chunks, which then re-run).
seed_opts="-c jit=off -c synchronous_commit=off -c maintenance_work_mem=512MB"
seed_started=$SECONDS
chunks=0
while ((done <= SAGAS)); do
    hi=$((done + CHUNK))
    ((hi > SAGAS + 1)) && hi=$((SAGAS + 1))
    t=$SECONDS
    PGOPTIONS="$seed_opts" psql_admin -d "$DB" -1 -v lo="$done" -v hi="$hi" \
        -f "$REPO_ROOT/scripts/bench-ui/seed-chunk.sql"
    chunks=$((chunks + 1))
    if ((chunks % 10 == 1 || hi > SAGAS)); then
        log "seeded $((hi - 1)) / $SAGAS sagas (last chunk $((SECONDS - t)) s, $((SECONDS - seed_started)) s this run)"
    fi
    done=$hi
done

if [[ -z "$(q -c "select finalized_at from ui_bench_seed")" ]]; then
    step "Finalize the seed: recent running sagas to now, vacuum, rollups"
    # The running sagas meant to be recent were written relative to t0, possibly long ago
    # for a big seed: move them (and their events) to now so they are not stuck yet.
    q -c "with moved as (
            update sagas s set
                started_at = started_at + (now() - b.t0),
                updated_at = updated_at + (now() - b.t0),
                compensation_started_at = compensation_started_at + (now() - b.t0),
                first_received_at = first_received_at + (now() - b.t0),
                last_received_at = last_received_at + (now() - b.t0),
                created_at = created_at + (now() - b.t0),
                row_updated_at = row_updated_at + (now() - b.t0)
            from ui_bench_seed b
            where s.status in ('STARTED', 'IN_PROGRESS', 'COMPENSATING')
              and s.started_at >= b.t0 - interval '10 minutes'
            returning s.saga_id)
          update saga_events e set
              occurred_at = occurred_at + (now() - b.t0),
              received_at = received_at + (now() - b.t0),
              ingested_at = ingested_at + (now() - b.t0)
          from ui_bench_seed b, moved m
          where e.saga_id = m.saga_id"
    t=$SECONDS
    PGOPTIONS="$seed_opts" psql_admin -d "$DB" -c "vacuum (analyze) sagas, saga_events"
    log "vacuum analyze: $((SECONDS - t)) s"
    # `migrate` rebuilds the rollups from the stored sagas when the version row is missing.
    q -c "delete from stats_rollup_version"
    t=$SECONDS
    TRACKER_DATABASE__URL="$DB_URL" TRACKER_LOG__LEVEL="info,sqlx::query=error" "$BIN" migrate
    log "rollup rebuild (saga-tracker migrate): $((SECONDS - t)) s"
    q -c "analyze stats_hourly, stats_hourly_durations, stats_daily, stats_daily_durations"
    q -c "update ui_bench_seed set finalized_at = now()"
fi

{
    printf 'sagas\t%s\n' "$(q -c "select count(*) from sagas")"
    printf 'events\t%s\n' "$(q -c "select count(*) from saga_events")"
    printf 'statuses\t%s\n' "$(q -c "select string_agg(status || '=' || n, ' ' order by status)
                                      from (select status, count(*) n from sagas group by 1) x")"
    printf 'sizes\t%s\n' "$(q -c "select string_agg(t || '=' || pg_size_pretty(pg_total_relation_size(t::regclass)), ' ')
                                   from unnest(array['sagas', 'saga_events', 'stats_hourly',
                                        'stats_hourly_durations', 'stats_daily', 'stats_daily_durations']) t")"
    printf 'rollup_rows\t%s\n' "$(q -c "select (select count(*) from stats_hourly) + (select count(*) from stats_daily)
                                         || ' counts, ' || (select count(*) from stats_hourly_durations)
                                         + (select count(*) from stats_daily_durations) || ' histogram'")"
} >"$WORK/seed.txt"
cat "$WORK/seed.txt" >&2
[[ "${SEED_ONLY:-0}" == "1" ]] && exit 0

step "Tracker"
KAFKA_PORT="$(free_port)"
HTTP_PORT="$(free_port)"
start_tansu "$WORK" "$KAFKA_PORT"
TOPIC="ui-bench-$$"
tansu_create_topic "$KAFKA_PORT" "$TOPIC" 1
tansu_create_topic "$KAFKA_PORT" "$TOPIC.dlq" 1
TRACKER_DATABASE__URL="$DB_URL" \
    TRACKER_KAFKA__BROKERS="127.0.0.1:$KAFKA_PORT" \
    TRACKER_KAFKA__TOPIC="$TOPIC" \
    TRACKER_KAFKA__DLQ_TOPIC="$TOPIC.dlq" \
    TRACKER_KAFKA__GROUP_ID="ui-bench-$$" \
    TRACKER_HTTP__ADDR="127.0.0.1:$HTTP_PORT" \
    TRACKER_RETENTION__ENABLED=false \
    TRACKER_LOG__LEVEL=warn \
    "$BIN" run >"$WORK/tracker.log" 2>&1 &
TRACKER_PID=$!
BASE="http://127.0.0.1:$HTTP_PORT"
wait_for_http "$BASE/readyz" 90 "$TRACKER_PID" || die "the tracker did not become ready"
log "tracker ready at $BASE (pid $TRACKER_PID)"

step "Pages"
RAW="$WORK/raw.tsv"
: >"$RAW"

# measure NAME PATH [CURL_ARGS…] — WARMUP + RUNS requests of PATH over one connection; the
# timed ones go to $RAW as: name, HTTP status, total ms, bytes.
measure() {
    local name=$1 path=$2 first runs i
    shift 2
    first="$(curl -sS -o /dev/null -w '%{time_total}' "$@" "$BASE$path")"
    runs=$RUNS
    if awk -v t="$first" 'BEGIN { exit !(t > 2) }'; then
        runs=5
        log "$name: $first s per request, timing $runs runs"
    fi
    local args=()
    for ((i = 0; i < WARMUP + runs; i++)); do args+=(-o /dev/null "$BASE$path"); done
    curl -sS -w '%{http_code} %{time_total} %{size_download}\n' "$@" "${args[@]}" |
        tail -n "$runs" |
        awk -v n="$name" '{ printf "%s\t%s\t%.3f\t%s\n", n, $1, $2 * 1000, $3 }' >>"$RAW"
}

# Sagas the pages open: found by their seed index, so they have events whatever
# EVENTS_EVERY is; one from the middle of the history for each shape.
pick() { # STATUS → saga_id|business_key|trace_id|started_at µs
    q -F '|' -c "select s.saga_id, s.business_key, s.trace_id,
                        (extract(epoch from s.started_at) * 1000000)::bigint
                 from generate_series(0, 100000) j
                 cross join lateral (
                     select * from sagas
                     where saga_id = md5('saga-' || (($SAGAS / 2 / $EVENTS_EVERY + j) * $EVENTS_EVERY))::uuid::text
                 ) s
                 where s.status = '$1' and s.trace_id is not null and s.event_count > 0
                 limit 1"
}
IFS='|' read -r done_id done_key done_trace done_us < <(pick COMPLETED)
IFS='|' read -r comp_id _ _ _ < <(pick COMPENSATED)
run_id="$(q -c "select saga_id from sagas where status = 'IN_PROGRESS' order by updated_at desc limit 1")"
[[ -n "$done_id" && -n "$comp_id" && -n "$run_id" ]] || die "could not find the sagas to open"
# A keyset cursor at the middle of the history (the API's encoding: base64url JSON).
mid_cursor="$(python3 -c 'import base64, json, sys
c = {"v": 1, "t": int(sys.argv[1]), "id": sys.argv[2], "s": "startedAt"}
print(base64.urlsafe_b64encode(json.dumps(c).encode()).decode().rstrip("="))' "$done_us" "$done_id")"
hour_ago="$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)"
day_ago="$(date -u -d '-1 day' +%Y-%m-%dT%H:%M:%SZ)"
old="$(date -u -d '-29 days' +%Y-%m-%dT%H:%M:%SZ)"
# About 10,000 sagas: the share of the 30 days that holds 10,000 of N starts.
export_secs=$((2592000 * 10000 / SAGAS))
export_from="$(date -u -d "-$export_secs seconds" +%Y-%m-%dT%H:%M:%SZ)"

for w in 1h 6h 24h 7d 30d; do measure "overview window=$w" "/ui?window=$w"; done

measure "search: no filter" "/ui/sagas"
measure "search: no filter, limit=500" "/ui/sagas?limit=500"
measure "search: sort=updatedAt" "/ui/sagas?sort=updatedAt"
measure "search: sagaType common (40%)" "/ui/sagas?sagaType=ORDER_CREATION"
measure "search: sagaType none" "/ui/sagas?sagaType=NO_SUCH_TYPE"
measure "search: status common (COMPLETED)" "/ui/sagas?status=COMPLETED"
measure "search: status rare (STARTED 0.15%)" "/ui/sagas?status=STARTED"
measure "search: status FAILED+COMPENSATED" "/ui/sagas?status=FAILED&status=COMPENSATED"
measure "search: sagaType+status rare" "/ui/sagas?sagaType=ORDER_CREATION&status=FAILED"
measure "search: businessKey match" "/ui/sagas?businessKey=$done_key"
measure "search: businessKey none" "/ui/sagas?businessKey=NO-SUCH-KEY"
measure "search: traceId match" "/ui/sagas?traceId=$done_trace"
measure "search: traceId none" "/ui/sagas?traceId=00000000000000000000000000000000"
measure "search: step common (CHARGE_PAYMENT)" "/ui/sagas?step=CHARGE_PAYMENT"
measure "search: step rarer (SEND_WELCOME)" "/ui/sagas?step=SEND_WELCOME"
measure "search: step none" "/ui/sagas?step=NO_SUCH_STEP"
measure "search: failedStep common" "/ui/sagas?failedStep=CHARGE_PAYMENT"
measure "search: failedStep rare (SEND_WELCOME)" "/ui/sagas?failedStep=SEND_WELCOME"
measure "search: failedStep none" "/ui/sagas?failedStep=NO_SUCH_STEP"
measure "search: service common (payment-svc)" "/ui/sagas?service=payment-svc"
measure "search: service rarer (fraud-svc)" "/ui/sagas?service=fraud-svc"
measure "search: service none" "/ui/sagas?service=no-such-svc"
measure "search: startedAfter 1 h ago" "/ui/sagas?startedAfter=$hour_ago"
measure "search: startedBefore 29 d ago" "/ui/sagas?startedBefore=$old"
measure "search: updatedAfter 1 d ago" "/ui/sagas?updatedAfter=$day_ago"
measure "search: updatedBefore 29 d ago" "/ui/sagas?updatedBefore=$old"
measure "search: minDurationMs common (1 s)" "/ui/sagas?minDurationMs=1000"
measure "search: minDurationMs rare (5 min)" "/ui/sagas?minDurationMs=300000"
measure "search: minDurationMs none (7 h)" "/ui/sagas?minDurationMs=25200000"
measure "search: stuck=true" "/ui/sagas?stuck=true"
measure "search: stuck=false" "/ui/sagas?stuck=false"
measure "search: stuckReason no_progress" "/ui/sagas?stuckReason=no_progress"
measure "search: stuckReason failed_not_compensated" "/ui/sagas?stuckReason=failed_not_compensated"
measure "search: stuckReason compensation_not_finished" "/ui/sagas?stuckReason=compensation_not_finished"
measure "search: meta common (region=eu-west 45%)" "/ui/sagas?meta.region=eu-west"
measure "search: meta rare (channel=partner 0.5%)" "/ui/sagas?meta.channel=partner"
measure "search: meta rarer (tenant=t-42 0.02%)" "/ui/sagas?meta.tenant=t-42"
measure "search: meta none" "/ui/sagas?meta.region=nowhere"
measure "search: type+service+meta+7d" "/ui/sagas?sagaType=PAYMENT_REFUND&service=ledger-svc&meta.channel=api&startedAfter=$(date -u -d '-7 days' +%Y-%m-%dT%H:%M:%SZ)"

# Deep paging: follow "Next page" 20 times, then time the 21st page; and a cursor in the
# middle of the history.
next="/ui/sagas?limit=50"
for ((i = 0; i < 20; i++)); do
    next="$(curl -sS "$BASE$next" | grep -o 'id="next-page"[^>]*href="[^"]*"' |
        sed -e 's/.*href="//' -e 's/"$//' -e 's/&amp;/\&/g')"
    [[ -n "$next" ]] || die "no next page after $i pages"
done
measure "search: page 21 (20 x next)" "$next"
measure "search: cursor mid-history" "/ui/sagas?limit=50&cursor=$mid_cursor"

measure "saga page (COMPLETED, 6-8 events)" "/ui/sagas/$done_id"
measure "saga page (COMPENSATED)" "/ui/sagas/$comp_id"
measure "saga page (running)" "/ui/sagas/$run_id"
measure "saga page: unknown id" "/ui/sagas/no-such-saga"
measure "live: 200 (no validator)" "/ui/sagas/$run_id/live"
etag="$(curl -sS -D - -o /dev/null "$BASE/ui/sagas/$run_id/live" | tr -d '\r' |
    awk 'tolower($1) == "etag:" { print $2 }')"
[[ -n "$etag" ]] || die "the live fragment sent no ETag"
measure "live: 304 (If-None-Match)" "/ui/sagas/$run_id/live" -H "If-None-Match: $etag"
measure "go: saga id" "/ui/go?q=$done_id"
measure "go: business key" "/ui/go?q=$done_key"
measure "go: trace id" "/ui/go?q=$done_trace"
measure "go: no match" "/ui/go?q=nothing-like-this"

# Export: about 10,000 rows, and the tracker's peak RSS while it streams (VmHWM reset first).
rss() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$TRACKER_PID/status"; }
export_rows="$(curl -sS "$BASE/ui/export?format=ndjson&startedAfter=$export_from" | wc -l)"
for fmt in csv ndjson; do
    before="$(rss VmRSS)"
    echo 5 >"/proc/$TRACKER_PID/clear_refs"
    measure "export $fmt (~10k rows)" "/ui/export?format=$fmt&startedAfter=$export_from"
    printf 'export %s, %s rows: RSS before %s KiB, peak while exporting %s KiB\n' \
        "$fmt" "$export_rows" "$before" "$(rss VmHWM)" >>"$WORK/rss.txt"
done

step "Results"
stamp="$(date -u +%Y-%m-%dT%H:%MZ)"
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- tracker migrations || echo "+uncommitted")"
cp "$RAW" "$OUT_DIR/$SAGAS.tsv"
python3 - "$RAW" "$OUT_DIR" "$SAGAS" "$stamp" "$commit" "$WORK/seed.txt" "$WORK/rss.txt" <<'EOF'
import collections, glob, math, os, sys

raw, out_dir, n, stamp, commit, seed, rss = sys.argv[1:]
rows = collections.OrderedDict()
for line in open(raw):
    name, code, ms, size = line.rstrip("\n").split("\t")
    rows.setdefault(name, []).append((code, float(ms), int(size)))

def pct(xs, p):  # nearest rank
    xs = sorted(xs)
    return xs[max(0, math.ceil(p * len(xs)) - 1)]

lines = [f"N = {int(n):,} sagas, {stamp}, {commit}, {os.cpu_count()} cores", ""]
lines += [l.rstrip("\n").replace("\t", ": ") for l in open(seed)]
lines += [l.rstrip("\n") for l in open(rss)]
lines += ["", "| page | status | runs | p50 ms | p99 ms | KiB |", "|---|---|---:|---:|---:|---:|"]
summary = {}
for name, xs in rows.items():
    ms = [x[1] for x in xs]
    codes = ",".join(sorted({x[0] for x in xs}))
    p50, p99 = pct(ms, 0.5), pct(ms, 0.99)
    summary[name] = p50
    kib = sum(x[2] for x in xs) / len(xs) / 1024
    lines.append(f"| {name} | {codes} | {len(xs)} | {p50:.1f} | {p99:.1f} | {kib:.0f} |")
with open(os.path.join(out_dir, f"{n}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))

# Ratios against every other N measured here.
for other in sorted(glob.glob(os.path.join(out_dir, "*.tsv"))):
    m = os.path.basename(other)[:-4]
    if m == n:
        continue
    theirs = collections.defaultdict(list)
    for line in open(other):
        name, _, ms, _ = line.rstrip("\n").split("\t")
        theirs[name].append(float(ms))
    big, small = (n, m) if int(n) > int(m) else (m, n)
    print(f"\np50 ratio {int(big):,} / {int(small):,} sagas")
    print("| page | ratio |\n|---|---:|")
    for name, p50 in summary.items():
        if name in theirs:
            o = pct(theirs[name], 0.5)
            r = p50 / o if big == n else o / p50
            print(f"| {name} | {r:.2f} |")
EOF
