#!/usr/bin/env bash
# API read benchmark: the time of every search the REST API offers, and of saga detail,
# events, stats and saga types, against a database of N synthetic sagas (results in
# docs/BENCHMARKS.md, "API reads at 1M and 10M sagas").
#
#   scripts/bench-api.sh                      # N = 1,000,000
#   SAGAS=10000000 EVENTS_EVERY=10 CHUNK=50000 scripts/bench-api.sh
#
# The database, seed and tracker are scripts/bench-ui.sh's (scripts/bench-lib.sh): the
# same saga_ui_bench_<N> serves both, and a second run reuses it. Every filter is timed
# with a common value, a rare one and one that matches nothing, then combinations, both
# sorts, deep pages (page 21, reached by following nextCursor 20 times) and a cursor in the
# middle of the history. Each query: WARMUP requests, then RUNS timed ones (5 when a single
# request takes over 2 s) over one keep-alive connection; p50 and p99 (ms, nearest rank, so
# with 30 runs the p99 is the slowest run).
#
# Writes target/bench-api/<N>.tsv (raw) and <N>.md (table) and, when another N was measured
# there, <big>-vs-<small>.md with both Ns' p50/p99 and their ratios.
#
# Environment: as scripts/bench-ui.sh (SAGAS, EVENTS_EVERY, CHUNK, RUNS, WARMUP, BENCH_DB,
# SEED_ONLY), plus ONLY=<regex> to time only the queries whose name matches (while
# iterating on one plan). Nothing here asserts a speed; the numbers depend on the machine
# and its load.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

bench_init bench-api
bench_seed
bench_start_tracker

step "Queries"
ONLY="${ONLY:-}"
api() { # NAME QUERY — times GET /api/v1/sagas?QUERY (unless ONLY excludes it)
    [[ -z "$ONLY" || "$1" =~ $ONLY ]] || return 0
    measure "$1" "/api/v1/sagas?$2"
}
get() { # NAME PATH
    [[ -z "$ONLY" || "$1" =~ $ONLY ]] || return 0
    measure "$1" "$2"
}
# page21 QUERY — the path of page 21 of a search, reached by following nextCursor.
page21() {
    local query=$1 cursor="" i
    for ((i = 0; i < 20; i++)); do
        cursor="$(curl -sS "$BASE/api/v1/sagas?$query${cursor:+&cursor=$cursor}" | jq -r .nextCursor)"
        [[ -n "$cursor" && "$cursor" != null ]] || die "no next page after $((i + 1)) pages of ?$query"
    done
    printf '/api/v1/sagas?%s&cursor=%s\n' "$query" "$cursor"
}
iso() { date -u -d "$1" +%Y-%m-%dT%H:%M:%SZ; }

IFS='|' read -r done_id done_key done_trace done_us < <(bench_pick COMPLETED)
IFS='|' read -r comp_id _ _ _ < <(bench_pick COMPENSATED)
run_id="$(q -c "select saga_id from sagas where status = 'IN_PROGRESS' and event_count > 0
                order by updated_at desc limit 1")"
# A refund's business key: refunds reuse the key of an earlier saga, so several share it.
refund_key="$(q -c "select business_key from sagas where saga_id = md5('saga-' || ($SAGAS / 2))::uuid::text")"
[[ -n "$done_id" && -n "$comp_id" && -n "$run_id" && -n "$refund_key" ]] ||
    die "could not find the sagas to open"
mid_cursor="$(bench_cursor "$done_us" "$done_id")"
h1="$(iso '-1 hour')"
d1="$(iso '-1 day')"
d7="$(iso '-7 days')"
d15="$(iso '-15 days')"
d15h="$(iso '-15 days +1 hour')"
d29="$(iso '-29 days')"

api "none" ""
api "none, limit=500" "limit=500"
api "sort=updatedAt" "sort=updatedAt"

api "sagaType common (ORDER_CREATION 40%)" "sagaType=ORDER_CREATION"
api "sagaType rarer (ACCOUNT_SIGNUP 15%)" "sagaType=ACCOUNT_SIGNUP"
api "sagaType none" "sagaType=NO_SUCH_TYPE"
api "status common (COMPLETED 95%)" "status=COMPLETED"
api "status rare (STARTED 0.15%)" "status=STARTED"
api "status rare (COMPENSATING 0.1%)" "status=COMPENSATING"
api "status FAILED+COMPENSATED (4%)" "status=FAILED&status=COMPENSATED"
api "status running (0.5%)" "status=STARTED,IN_PROGRESS,COMPENSATING"
api "businessKey match (1)" "businessKey=$done_key"
api "businessKey shared (refund)" "businessKey=$refund_key"
api "businessKey none" "businessKey=NO-SUCH-KEY"
api "traceId match" "traceId=$done_trace"
api "traceId none" "traceId=00000000000000000000000000000000"
api "step common (CHARGE_PAYMENT 40%)" "step=CHARGE_PAYMENT"
api "step rarer (SEND_WELCOME 14%)" "step=SEND_WELCOME"
api "step none" "step=NO_SUCH_STEP"
api "failedStep common (CHARGE_PAYMENT)" "failedStep=CHARGE_PAYMENT"
api "failedStep rare (SEND_WELCOME)" "failedStep=SEND_WELCOME"
api "failedStep none" "failedStep=NO_SUCH_STEP"
api "service common (payment-svc 65%)" "service=payment-svc"
api "service rarer (fraud-svc 15%)" "service=fraud-svc"
api "service none" "service=no-such-svc"
api "startedAfter 1 h ago" "startedAfter=$h1"
api "startedBefore 29 d ago" "startedBefore=$d29"
api "started in a 1 h window 15 d ago" "startedAfter=$d15&startedBefore=$d15h"
api "updatedAfter 1 d ago" "updatedAfter=$d1"
api "updatedBefore 29 d ago" "updatedBefore=$d29"
api "minDurationMs common (1 s)" "minDurationMs=1000"
api "minDurationMs rare (5 min, 0.2%)" "minDurationMs=300000"
api "minDurationMs rarer (1 h)" "minDurationMs=3600000"
api "minDurationMs none (7 h)" "minDurationMs=25200000"
api "stuck=true" "stuck=true"
api "stuck=false" "stuck=false"
api "stuckReason no_progress" "stuckReason=no_progress"
api "stuckReason failed_not_compensated" "stuckReason=failed_not_compensated"
api "stuckReason compensation_not_finished" "stuckReason=compensation_not_finished"
api "meta common (region=eu-west 45%)" "meta.region=eu-west"
api "meta rare (channel=partner 0.5%)" "meta.channel=partner"
api "meta rarer (tenant=t-42 0.02%)" "meta.tenant=t-42"
api "meta none (region=nowhere)" "meta.region=nowhere"
api "meta none (unknown key)" "meta.no_such_key=x"
api "meta number-like none (both forms)" "meta.region=12"
api "meta two keys rare (sa-east+partner 0.03%)" "meta.region=sa-east&meta.channel=partner"

api "sort=updatedAt + status=FAILED" "sort=updatedAt&status=FAILED"
api "sort=updatedAt + service none" "sort=updatedAt&service=no-such-svc"
api "sort=updatedAt + minDurationMs none" "sort=updatedAt&minDurationMs=25200000"
api "sort=updatedAt + updatedAfter 1 h" "sort=updatedAt&updatedAfter=$h1"

api "sagaType + status rare (FAILED)" "sagaType=ORDER_CREATION&status=FAILED"
api "sagaType + service disjoint (none)" "sagaType=ORDER_CREATION&service=fraud-svc"
api "service + status rare (notification FAILED)" "service=notification-svc&status=FAILED"
api "service + meta rare (ledger + partner)" "service=ledger-svc&meta.channel=partner"
api "service none + meta common" "service=no-such-svc&meta.region=eu-west"
api "sagaType + service + meta + 7 d" "sagaType=PAYMENT_REFUND&service=ledger-svc&meta.channel=api&startedAfter=$d7"
api "sagaType + minDurationMs none" "sagaType=ACCOUNT_SIGNUP&minDurationMs=1800000"
api "status + failedStep + service" "status=FAILED&failedStep=CHARGE_PAYMENT&service=payment-svc"
api "step + minDurationMs rare" "step=BOOK_CARRIER&minDurationMs=300000"
api "stuck=true + sagaType" "stuck=true&sagaType=SHIPMENT_DISPATCH"
api "meta + 1 h window 15 d ago" "meta.region=eu-west&startedAfter=$d15&startedBefore=$d15h"

if [[ -z "$ONLY" || "page 21" =~ $ONLY ]]; then
    measure "page 21: none" "$(page21 "limit=50")"
    measure "page 21: status common" "$(page21 "limit=50&status=COMPLETED")"
    measure "page 21: sort=updatedAt" "$(page21 "limit=50&sort=updatedAt")"
    measure "page 21: meta rare (partner)" "$(page21 "limit=50&meta.channel=partner")"
    measure "page 21: service rarer (fraud-svc)" "$(page21 "limit=50&service=fraud-svc")"
fi
api "cursor mid-history" "cursor=$mid_cursor"
api "cursor mid-history + service none" "service=no-such-svc&cursor=$mid_cursor"
api "cursor mid-history + minDurationMs none" "minDurationMs=25200000&cursor=$mid_cursor"

get "detail: completed" "/api/v1/sagas/$done_id"
get "detail: compensated" "/api/v1/sagas/$comp_id"
get "detail: running" "/api/v1/sagas/$run_id"
get "detail: unknown (404)" "/api/v1/sagas/no-such-saga"
get "events: completed" "/api/v1/sagas/$done_id/events"
get "events: compensated" "/api/v1/sagas/$comp_id/events"
get "events: running" "/api/v1/sagas/$run_id/events"
get "stats: unfiltered" "/api/v1/stats"
get "stats: sagaType" "/api/v1/stats?sagaType=ORDER_CREATION"
get "stats: startedAfter 1 d ago" "/api/v1/stats?startedAfter=$d1"
get "stats: service" "/api/v1/stats?service=payment-svc"
get "saga-types" "/api/v1/saga-types"

bench_results
