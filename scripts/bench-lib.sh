# shellcheck shell=bash
# What the read benchmarks share (scripts/bench-ui.sh, scripts/bench-api.sh): the seeded
# database, a release tracker serving it, curl timings and the result tables. Source it
# after scripts/lib.sh; do not run it.
#
#   bench_init NAME              variables, work directory, cleanup trap
#   bench_seed                   steps 1–2: build, database, migrate, seed, finalize
#   bench_start_tracker          step 3: tansu + `saga-tracker run`, sets BASE
#   measure NAME PATH [CURL…]    step 4: WARMUP + RUNS requests, appended to $RAW
#   bench_pick STATUS            a seeded saga to open
#   bench_results                step 5: the table for this N and the ratio to other Ns
#
# Environment: SAGAS (default 1000000), EVENTS_EVERY (store events for sagas i with
# i % EVENTS_EVERY = 0, plus every running saga; default 1 = all), CHUNK (sagas per seed
# transaction, default 20000), RUNS (30), WARMUP (3), BENCH_DB (default saga_ui_bench_<N>:
# both benchmarks read the same database), SEED_ONLY=1 (stop after the seed).

# bench_init NAME — NAME names the results folder (target/NAME) and the logs.
bench_init() {
    BENCH_NAME=$1
    SAGAS="${SAGAS:-1000000}"
    EVENTS_EVERY="${EVENTS_EVERY:-1}"
    CHUNK="${CHUNK:-20000}"
    RUNS="${RUNS:-30}"
    WARMUP="${WARMUP:-3}"
    DB="${BENCH_DB:-saga_ui_bench_$SAGAS}"
    [[ "$SAGAS" =~ ^[1-9][0-9]*$ ]] || die "SAGAS must be a positive integer, got '$SAGAS'"
    [[ "$EVENTS_EVERY" =~ ^[1-9][0-9]*$ ]] || die "EVENTS_EVERY must be a positive integer"
    [[ "$CHUNK" =~ ^[1-9][0-9]*$ ]] || die "CHUNK must be a positive integer"
    [[ "$RUNS" =~ ^[1-9][0-9]*$ && "$WARMUP" =~ ^[0-9]+$ ]] || die "RUNS and WARMUP must be integers"
    [[ "$DB" =~ ^[a-z_][a-z0-9_]*$ ]] || die "BENCH_DB must be a plain lowercase identifier"

    cd "$REPO_ROOT"
    OUT_DIR="$REPO_ROOT/target/$BENCH_NAME"
    mkdir -p "$OUT_DIR"
    WORK="$(mktemp -d "${TMPDIR:-/tmp}/$BENCH_NAME.XXXXXX")"
    DB_URL="postgres://$PG_USER@$PG_HOST:$PG_PORT/$DB"
    BIN="$REPO_ROOT/target/release/saga-tracker"
    RAW="$WORK/raw.tsv"
    : >"$RAW"
    : >"$WORK/extra.txt"
    TANSU_PID=""
    TRACKER_PID=""
    trap _bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

_bench_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$TRACKER_PID" "saga-tracker" 30
    stop_pid "$TANSU_PID" "tansu broker" 15
    finish_work "$rc" "$WORK" "$BENCH_NAME" tracker tansu
    exit "$rc"
}

# q ARGS… — psql on the bench database, values only (unaligned, no headers).
q() { psql_admin -d "$DB" -tA "$@"; }

# bench_seed — builds the release tracker, creates and migrates the database, seeds N sagas
# with SQL (scripts/bench-ui/seed-chunk.sql) in chunks of CHUNK, each one transaction that
# also records its progress, so an interrupted seed resumes; then vacuums, analyzes and
# rebuilds the statistics rollups (`saga-tracker migrate` after emptying
# stats_rollup_version) so the overview and /api/v1/stats are exact. Idempotent: a second
# run reuses what the first one built. Writes $WORK/seed.txt (what the database holds).
bench_seed() {
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
    local t=$SECONDS
    TRACKER_DATABASE__URL="$DB_URL" TRACKER_LOG__LEVEL=warn "$BIN" migrate
    log "migrate: $((SECONDS - t)) s"
    # The seed's parameters and progress; one row. `t0` anchors every seeded time, so a
    # chunk re-run after an interruption produces the same rows.
    q -c "create table if not exists ui_bench_seed (
            singleton boolean primary key default true check (singleton),
            n bigint not null,
            events_every integer not null,
            t0 timestamptz not null,
            done bigint not null default 1,
            finalized_at timestamptz)"
    q -c "insert into ui_bench_seed (n, events_every, t0) values ($SAGAS, $EVENTS_EVERY, now())
          on conflict (singleton) do nothing"
    local seeded_n seeded_every done
    read -r seeded_n seeded_every done < <(q -F ' ' -c "select n, events_every, done from ui_bench_seed")
    [[ "$seeded_n" == "$SAGAS" && "$seeded_every" == "$EVENTS_EVERY" ]] ||
        die "$DB was seeded with SAGAS=$seeded_n EVENTS_EVERY=$seeded_every; drop it or set BENCH_DB"

    # A day partition for every day the seed spans, as a tracker that ran through those days
    # would have created them (store::partitions::ensure: a plain table, attached, listed in
    # storage_partitions), so each saga and its events land in the partition of the day it
    # started and every search reads ~31 partitions, as it does in production with the
    # default 30-day retention. `migrate` created yesterday and the days ahead.
    q -c "do \$\$
          declare
              d date;
              t text;
          begin
              for d in select generate_series(((select t0 from ui_bench_seed) at time zone 'UTC')::date - 31,
                                              ((select t0 from ui_bench_seed) at time zone 'UTC')::date,
                                              interval '1 day')::date
              loop
                  continue when exists (select 1 from storage_partitions
                                        where day = d or (legacy and day >= d));
                  foreach t in array array['sagas', 'saga_events'] loop
                      execute format('create table %I (like %I including defaults including constraints'
                                     ' including generated)%s',
                                     t || '_p' || to_char(d, 'YYYYMMDD'), t,
                                     case when t = 'sagas' then ' with (fillfactor = 80)' else '' end);
                      execute format('alter table %I attach partition %I for values from (%L) to (%L)',
                                     t, t || '_p' || to_char(d, 'YYYYMMDD'), d, d + 1);
                  end loop;
                  insert into storage_partitions (day) values (d);
              end loop;
          end \$\$"
    log "partitions: $(q -c "select count(*) || ' days, ' || min(day) || ' .. ' || max(day) from storage_partitions")"

    step "Seed: $SAGAS sagas, events for i % $EVENTS_EVERY = 0 and every running saga"
    # Seeding only: no JIT (it costs more than it saves on these one-off statements), no
    # wait for the WAL flush per chunk (a crash loses at most the last chunks, which then
    # re-run).
    local seed_opts="-c jit=off -c synchronous_commit=off -c maintenance_work_mem=512MB"
    local seed_started=$SECONDS chunks=0 hi
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
        # The running sagas meant to be recent were written relative to t0, possibly long
        # ago for a big seed: move them (and their events) to now so they are not stuck yet.
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
        # Summed over partitions: a partitioned table itself holds no storage.
        printf 'sizes\t%s\n' "$(q -c "select string_agg(t || '=' || pg_size_pretty(
                                           (select sum(pg_total_relation_size(relid))
                                              from pg_partition_tree(t::regclass))), ' ')
                                       from unnest(array['sagas', 'saga_events', 'stats_hourly',
                                            'stats_hourly_durations', 'stats_daily', 'stats_daily_durations']) t")"
        printf 'rollup_rows\t%s\n' "$(q -c "select (select count(*) from stats_hourly) + (select count(*) from stats_daily)
                                             || ' counts, ' || (select count(*) from stats_hourly_durations)
                                             + (select count(*) from stats_daily_durations) || ' histogram'")"
    } >"$WORK/seed.txt"
    cat "$WORK/seed.txt" >&2
    if [[ "${SEED_ONLY:-0}" == "1" ]]; then exit 0; fi
}

# bench_start_tracker — a tansu broker and `saga-tracker run` on free loopback ports (the
# consumer is not optional, so a broker is needed although nothing is produced; retention
# off, so the tracker does not delete the oldest seeded sagas while it is measured). Sets
# BASE to the tracker's URL.
bench_start_tracker() {
    step "Tracker"
    local kafka_port http_port topic
    kafka_port="$(free_port)"
    http_port="$(free_port)"
    start_tansu "$WORK" "$kafka_port"
    topic="$BENCH_NAME-$$"
    tansu_create_topic "$kafka_port" "$topic" 1
    tansu_create_topic "$kafka_port" "$topic.dlq" 1
    TRACKER_DATABASE__URL="$DB_URL" \
        TRACKER_KAFKA__BROKERS="127.0.0.1:$kafka_port" \
        TRACKER_KAFKA__TOPIC="$topic" \
        TRACKER_KAFKA__DLQ_TOPIC="$topic.dlq" \
        TRACKER_KAFKA__GROUP_ID="$BENCH_NAME-$$" \
        TRACKER_HTTP__ADDR="127.0.0.1:$http_port" \
        TRACKER_RETENTION__ENABLED=false \
        TRACKER_LOG__LEVEL=warn \
        "$BIN" run >"$WORK/tracker.log" 2>&1 &
    TRACKER_PID=$!
    BASE="http://127.0.0.1:$http_port"
    wait_for_http "$BASE/readyz" 90 "$TRACKER_PID" || die "the tracker did not become ready"
    log "tracker ready at $BASE (pid $TRACKER_PID)"
}

# measure NAME PATH [CURL_ARGS…] — WARMUP + RUNS requests of PATH over one keep-alive
# connection (RUNS becomes 5 when a single request takes over 2 s); the timed ones go to
# $RAW as: name, HTTP status, total ms, bytes.
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

# bench_pick STATUS — saga_id|business_key|trace_id|started_at µs of a saga with that status
# and events, found by its seed index (so it has events whatever EVENTS_EVERY is), from the
# middle of the history.
bench_pick() {
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

# bench_cursor MICROS SAGA_ID [SORT] — a keyset cursor in the API's encoding (base64url
# JSON) at that position.
bench_cursor() {
    python3 -c 'import base64, json, sys
c = {"v": 1, "t": int(sys.argv[1]), "id": sys.argv[2], "s": sys.argv[3]}
print(base64.urlsafe_b64encode(json.dumps(c).encode()).decode().rstrip("="))' "$1" "$2" "${3:-startedAt}"
}

# bench_results — writes $OUT_DIR/<N>.tsv (raw) and <N>.md (p50/p99 table) and prints the
# table; when another N's raw times are in $OUT_DIR, also the ratios larger N / smaller N
# of the p50s and p99s (into <big>-vs-<small>.md as well). Lines of $WORK/extra.txt are
# added under the seed description.
bench_results() {
    step "Results"
    local stamp commit
    stamp="$(date -u +%Y-%m-%dT%H:%MZ)"
    commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- tracker migrations || echo "+uncommitted")"
    cp "$RAW" "$OUT_DIR/$SAGAS.tsv"
    python3 - "$RAW" "$OUT_DIR" "$SAGAS" "$stamp" "$commit" "$WORK/seed.txt" "$WORK/extra.txt" \
        "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import collections, glob, math, os, sys

raw, out_dir, n, stamp, commit, seed, extra, load = sys.argv[1:]

def read(path):
    rows = collections.OrderedDict()
    for line in open(path):
        name, code, ms, size = line.rstrip("\n").split("\t")
        rows.setdefault(name, []).append((code, float(ms), int(size)))
    return rows

def pct(xs, p):  # nearest rank
    xs = sorted(xs)
    return xs[max(0, math.ceil(p * len(xs)) - 1)]

rows = read(raw)
lines = [f"N = {int(n):,} sagas, {stamp}, {commit}, {os.cpu_count()} cores, load {load} at the end", ""]
lines += [l.rstrip("\n").replace("\t", ": ") for l in open(seed)]
lines += [l.rstrip("\n") for l in open(extra)]
lines += ["", "| query | status | runs | p50 ms | p99 ms | KiB |", "|---|---|---:|---:|---:|---:|"]
for name, xs in rows.items():
    ms = [x[1] for x in xs]
    codes = ",".join(sorted({x[0] for x in xs}))
    kib = sum(x[2] for x in xs) / len(xs) / 1024
    lines.append(f"| {name} | {codes} | {len(xs)} | {pct(ms, 0.5):.1f} | {pct(ms, 0.99):.1f} | {kib:.0f} |")
with open(os.path.join(out_dir, f"{n}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))

# Ratios against every other N measured here.
for other in sorted(glob.glob(os.path.join(out_dir, "*.tsv"))):
    m = os.path.basename(other)[:-4]
    if m == n or not m.isdigit():
        continue
    theirs = read(other)
    big, small = (rows, theirs) if int(n) > int(m) else (theirs, rows)
    nb, ns = max(int(n), int(m)), min(int(n), int(m))
    out = [f"p50 and p99 at {nb:,} and {ns:,} sagas, and their ratio", "",
           f"| query | p50 {ns:,} | p50 {nb:,} | p50 ratio | p99 {ns:,} | p99 {nb:,} | p99 ratio |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for name, xs in big.items():
        if name not in small:
            continue
        b = [x[1] for x in xs]
        s = [x[1] for x in small[name]]
        b50, s50, b99, s99 = pct(b, 0.5), pct(s, 0.5), pct(b, 0.99), pct(s, 0.99)
        out.append(f"| {name} | {s50:.1f} | {b50:.1f} | {b50 / s50:.2f} | {s99:.1f} | {b99:.1f} | {b99 / s99:.2f} |")
    with open(os.path.join(out_dir, f"{nb}-vs-{ns}.md"), "w") as f:
        f.write("\n".join(out) + "\n")
    print("\n" + "\n".join(out))
EOF
}
