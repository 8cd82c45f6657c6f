-- One chunk of the Saga Explorer benchmark's synthetic data: sagas lo <= i < hi of the N
-- recorded in ui_bench_seed (see scripts/bench-ui.sh), and the events of those with
-- i % events_every = 0. Run in one transaction with the progress update, so an interrupted
-- seed resumes at the first missing chunk.
--
-- Every value is a deterministic function of i (hashint8extended), relative to the anchor
-- t0 (the instant the seed began), so a chunk re-run after a crash produces the same rows.
-- The rows are what the tracker itself would store for these events (the fold rules of
-- docs/aggregation.md): per saga 1–14 events, 6 for a typical completed 3-step saga.
--
-- psql variables: lo, hi.
with p as (
    select n, t0, events_every from ui_bench_seed
),
types (idx, saga_type, prefix, steps, step_services, median_ms) as (
    values
        (0, 'ORDER_CREATION', 'ORD',
            array['RESERVE_STOCK', 'CHARGE_PAYMENT', 'CONFIRM_ORDER'],
            array['inventory-svc', 'payment-svc', 'order-svc'], 1500.0),
        (1, 'PAYMENT_REFUND', 'RFD',
            array['VALIDATE_REFUND', 'REFUND_PAYMENT', 'POST_LEDGER'],
            array['payment-svc', 'payment-svc', 'ledger-svc'], 4000.0),
        (2, 'SHIPMENT_DISPATCH', 'SHP',
            array['PICK_ITEMS', 'BOOK_CARRIER', 'NOTIFY_CUSTOMER'],
            array['inventory-svc', 'shipping-svc', 'notification-svc'], 30000.0),
        (3, 'ACCOUNT_SIGNUP', 'ACC',
            array['CHECK_FRAUD', 'CREATE_ACCOUNT', 'OPEN_WALLET', 'SEND_WELCOME'],
            array['fraud-svc', 'account-svc', 'ledger-svc', 'notification-svc'], 800.0)
),
-- Independent uniform draws per saga.
r as (
    select
        i,
        ((hashint8extended(i, 1) % 10000) + 10000) % 10000 as r_status,
        ((hashint8extended(i, 2) % 100) + 100) % 100 as r_type,
        ((hashint8extended(i, 3) % 1000) + 1000) % 1000 as r3,
        ((hashint8extended(i, 4) % 1000) + 1000) % 1000 as r4,
        ((hashint8extended(i, 5) % 10000) + 10000) % 10000 as r5,
        ((hashint8extended(i, 9) % 1000) + 1000) % 1000 as r6,
        ((hashint8extended(i, 10) % 1000) + 1000) % 1000 as r7,
        ((((hashint8extended(i, 6) % 1000000) + 1000000) % 1000000) + 0.5) / 1000000.0 as u1,
        ((((hashint8extended(i, 7) % 1000000) + 1000000) % 1000000) + 0.5) / 1000000.0 as u2,
        ((((hashint8extended(i, 8) % 1000000) + 1000000) % 1000000) + 0.5) / 1000000.0 as u3
    from generate_series(:lo::bigint, :hi::bigint - 1) as i
),
-- Status mix per 10,000 sagas: 15 STARTED, 25 IN_PROGRESS, 10 COMPENSATING (0.5 %
-- running), 100 FAILED, 300 COMPENSATED, 9,550 COMPLETED.
s1 as (
    select
        r.*,
        t.saga_type, t.prefix, t.steps, t.step_services, t.median_ms,
        cardinality(t.steps) as k,
        case when r_status < 15 then 'STARTED'
             when r_status < 40 then 'IN_PROGRESS'
             when r_status < 50 then 'COMPENSATING'
             when r_status < 150 then 'FAILED'
             when r_status < 450 then 'COMPENSATED'
             else 'COMPLETED' end as status,
        -- Starts in time order over the 30 days before t0, one slot per saga (like live
        -- traffic, so the table is physically in start order).
        p.t0 - interval '30 days'
            + (((i - 1) + u3) * 2592000.0 / p.n) * interval '1 second' as base_start,
        p.t0, p.events_every,
        -- Log-normal duration (Box–Muller), median per type, sigma 1, 10 ms .. 6 h.
        greatest(10, least(21600000,
            t.median_ms * exp(sqrt(-2 * ln(u1)) * cos(2 * pi() * u2))))::bigint as dur_ms
    from r
    join types t on t.idx = case when r.r_type < 40 then 0 when r.r_type < 65 then 1
                                 when r.r_type < 85 then 2 else 3 end
    cross join p
),
s2 as (
    select
        s1.*,
        status in ('STARTED', 'IN_PROGRESS', 'COMPENSATING') as running,
        -- 60 % of the running sagas are recent (last event within 5 minutes of t0), the
        -- rest are stuck (no event for days, by the 900 s default threshold).
        status in ('STARTED', 'IN_PROGRESS', 'COMPENSATING') and r4 < 600 as recent,
        -- The failing step (1-based): any for FAILED, a later one when something has to be
        -- compensated.
        case when status = 'FAILED' then 1 + r3 % k
             when status = 'COMPENSATED' then 2 + r3 % (k - 1)
             when status = 'COMPENSATING' then 2 end as f
    from s1
),
s3 as (
    select
        s2.*,
        case status when 'COMPLETED' then 2 * k when 'STARTED' then 1
                    when 'IN_PROGRESS' then 3 else 2 * f end as n_fwd,
        case status when 'COMPENSATED' then 2 * (f - 1) when 'COMPENSATING' then 1
                    else 0 end as n_comp,
        -- Steps that have reported, so the services that emitted something.
        case status when 'COMPLETED' then k when 'STARTED' then 1 when 'IN_PROGRESS' then 2
                    else f end as n_seen,
        case when recent then t0 - (30 + r5 % 540) * interval '1 second'
             else base_start end as started_at
    from s2
),
g as (
    select
        s3.*,
        n_fwd + n_comp as n,
        md5('saga-' || i)::uuid::text as saga_id,
        case when recent
             then (extract(epoch from t0 - started_at) * 500000)::bigint
             when status = 'COMPENSATED' then dur_ms * 2000 + r5
             else dur_ms * 1000 + r5 end as span_us,
        prefix || '-' || (case when saga_type = 'PAYMENT_REFUND'
                               -- refunds carry the business key of an earlier saga
                               then 10000000 + i - 1 - r3 % 50
                               else 10000000 + i end) as business_key,
        case when r5 < 9500 then md5('trace-' || i) end as trace_id,
        -- The day partition the tracker would have written the saga (and all its events)
        -- to: the UTC day its first event was stored, 40 ms after it occurred.
        ((started_at + interval '40 milliseconds') at time zone 'UTC')::date as bucket_day,
        (array['TIMEOUT', 'DECLINED', 'UNAVAILABLE', 'CONFLICT'])[1 + r4 % 4] as error_code,
        jsonb_build_object(
            'region', case when r6 < 450 then 'eu-west' when r6 < 800 then 'us-east'
                           when r6 < 950 then 'ap-south' else 'sa-east' end,
            'channel', case when r7 < 550 then 'web' when r7 < 900 then 'mobile'
                            when r7 < 995 then 'api' else 'partner' end,
            'tenant', 't-' || (i % 5000)) as metadata
    from s3
),
ins as (
    insert into sagas (
        saga_id, saga_type, status, started_at, updated_at, ended_at, duration_ms,
        current_step, failed_step, failure_code, failure_message, compensation_started_at,
        compensation_ended_at, compensation_duration_ms, event_count, late_event_count,
        business_key, trace_id, metadata, services, first_received_at, last_received_at,
        created_at, row_updated_at, bucket_day)
    select
        saga_id, saga_type, status, started_at,
        started_at + span_us * interval '1 microsecond',
        case when not running then started_at + span_us * interval '1 microsecond' end,
        case when not running then span_us / 1000 end,
        steps[case when n_comp > 0 then f - 1 - (n_comp - 1) / 2
                   else (n_fwd - 1) / 2 + 1 end],
        steps[f],
        case when f is not null then error_code end,
        case when f is not null then 'step ' || steps[f] || ' failed: ' || lower(error_code) end,
        case when n_comp > 0
             then started_at + (span_us * n_fwd / (n - 1)) * interval '1 microsecond' end,
        case when status = 'COMPENSATED' then started_at + span_us * interval '1 microsecond' end,
        case when status = 'COMPENSATED' then (span_us - span_us * n_fwd / (n - 1)) / 1000 end,
        n, 0, business_key, trace_id, metadata,
        (select array_agg(distinct x order by x) from unnest(step_services[1:n_seen]) as x),
        started_at + interval '40 milliseconds',
        started_at + span_us * interval '1 microsecond' + interval '40 milliseconds',
        started_at + interval '60 milliseconds',
        started_at + span_us * interval '1 microsecond' + interval '60 milliseconds',
        bucket_day
    from g
    returning 1
)
insert into saga_events (
    event_id, saga_id, saga_type, step, step_status, saga_status, occurred_at, received_at,
    ingested_at, service, sequence, business_key, trace_id, span_id, error_code,
    error_message, metadata, kafka_topic, kafka_partition, kafka_offset, bucket_day)
select
    md5('event-' || g.i || '-' || ev.e)::uuid::text,
    g.saga_id, g.saga_type, g.steps[ev.step_no], ev.step_status,
    case when ev.step_status = 'FAILED' then 'FAILED'
         when ev.e = g.n - 1 and g.status in ('COMPLETED', 'COMPENSATED') then g.status end,
    ev.at, ev.at + interval '40 milliseconds', ev.at + interval '60 milliseconds',
    g.step_services[ev.step_no], ev.e + 1,
    case when ev.e = 0 then g.business_key end,
    g.trace_id,
    case when g.trace_id is not null then substr(md5('span-' || g.i || '-' || ev.e), 1, 16) end,
    case when ev.step_status = 'FAILED' then g.error_code end,
    case when ev.step_status = 'FAILED'
         then 'step ' || g.steps[ev.step_no] || ' failed: ' || lower(g.error_code) end,
    case when ev.e = 0 then g.metadata end,
    'saga.tracker', (g.i % 3)::int, g.i * 16 + ev.e, g.bucket_day
from g
cross join lateral (
    select
        e,
        case when e < g.n_fwd then e / 2 + 1 else g.f - 1 - (e - g.n_fwd) / 2 end as step_no,
        case when e < g.n_fwd then
                 case when e % 2 = 0 then 'STARTED'
                      when e / 2 + 1 = g.f then 'FAILED'
                      else 'SUCCEEDED' end
             else case when (e - g.n_fwd) % 2 = 0 then 'COMPENSATING' else 'COMPENSATED' end
        end as step_status,
        g.started_at + (g.span_us * e / greatest(g.n - 1, 1)) * interval '1 microsecond' as at
    from generate_series(0, g.n - 1) as e
) ev
where g.i % g.events_every = 0
   or g.running;  -- every running saga has its events (the live page opens them)

update ui_bench_seed set done = :hi::bigint;
