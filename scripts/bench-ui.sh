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
#      another N exists there, the ratios of the p50s and p99s.
#
# Steps 1–3 and 5 are scripts/bench-lib.sh, shared with scripts/bench-api.sh (the same
# database serves both).
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
# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

bench_init bench-ui
bench_seed
bench_start_tracker

step "Pages"

IFS='|' read -r done_id done_key done_trace done_us < <(bench_pick COMPLETED)
IFS='|' read -r comp_id _ _ _ < <(bench_pick COMPENSATED)
run_id="$(q -c "select saga_id from sagas where status = 'IN_PROGRESS' order by updated_at desc limit 1")"
[[ -n "$done_id" && -n "$comp_id" && -n "$run_id" ]] || die "could not find the sagas to open"
# A keyset cursor at the middle of the history (the API's encoding: base64url JSON).
mid_cursor="$(bench_cursor "$done_us" "$done_id")"
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
        "$fmt" "$export_rows" "$before" "$(rss VmHWM)" >>"$WORK/extra.txt"
done

bench_results
