-- Synthetic sagas for the statistics benchmark (`tests/insight.rs`, `stats_latency_at_scale`).
-- $1 = number of sagas. 4 types; per 100 sagas: 2 running, 4 failed, 4 compensated, 90
-- completed; durations spread over 0.5–60 s, started over the last 30 days.
insert into sagas (
    saga_id, saga_type, status, started_at, updated_at, ended_at, duration_ms, current_step,
    failed_step, compensation_started_at, compensation_ended_at, compensation_duration_ms,
    event_count, services, first_received_at, last_received_at)
select
    'bench-' || i,
    'T' || (i % 4),
    st,
    start,
    start + dur * interval '1 millisecond',
    case when st = 'IN_PROGRESS' then null else start + dur * interval '1 millisecond' end,
    case when st = 'IN_PROGRESS' then null else dur end,
    'PAY',
    case when st in ('FAILED', 'COMPENSATED') then 'PAY' end,
    case when st = 'COMPENSATED' then start + (dur / 2) * interval '1 millisecond' end,
    case when st = 'COMPENSATED' then start + dur * interval '1 millisecond' end,
    case when st = 'COMPENSATED' then dur - dur / 2 end,
    4,
    array['svc-1', 'svc-2', 'svc-3', 'svc-4'],
    start,
    start
from (
    select
        i,
        case when i % 100 < 2 then 'IN_PROGRESS'
             when i % 100 < 6 then 'FAILED'
             when i % 100 < 10 then 'COMPENSATED'
             else 'COMPLETED' end as st,
        now() - interval '30 days' + (i * 2592000 / $1::bigint) * interval '1 second' as start,
        500 + (i * 7919) % 59500 as dur
    from generate_series(1, $1::bigint) as i
) g
