-- Saga Tracker schema v1.
--
-- `saga_events` holds every valid event exactly once (event_id is the idempotency key).
-- `sagas` holds one row per saga, always recomputed from *all* of that saga's events by the
-- pure aggregate, so late and out-of-order events can never leave it stale.
-- Never edit this file once applied: add a new migration instead.

create table saga_events (
    event_id        text primary key,
    saga_id         text not null,
    saga_type       text not null,
    step            text not null,
    step_status     text not null,
    saga_status     text,
    occurred_at     timestamptz not null,
    -- When the tracker read the message from Kafka.
    received_at     timestamptz not null,
    -- When the transaction that stored it began (≈ commit time for short transactions);
    -- `ingested_at - occurred_at` is the visibility lag.
    ingested_at     timestamptz not null default now(),
    service         text not null,
    sequence        bigint,
    business_key    text,
    trace_id        text,
    span_id         text,
    error_code      text,
    error_message   text,
    metadata        jsonb,
    kafka_topic     text,
    kafka_partition integer,
    kafka_offset    bigint
);

-- Loading a saga's events (write path recompute, detail and events endpoints).
create index saga_events_saga_id_idx on saga_events (saga_id);
-- "Sagas that passed step X".
create index saga_events_step_idx on saga_events (step, saga_id);

create table sagas (
    saga_id                  text primary key,
    saga_type                text not null,
    status                   text not null,
    started_at               timestamptz not null,
    -- occurredAt of the newest event (the saga's "last activity").
    updated_at               timestamptz not null,
    ended_at                 timestamptz,
    duration_ms              bigint,
    current_step             text not null,
    failed_step              text,
    failure_code             text,
    failure_message          text,
    compensation_started_at  timestamptz,
    compensation_ended_at    timestamptz,
    compensation_duration_ms bigint,
    event_count              integer not null,
    late_event_count         integer not null default 0,
    business_key             text,
    trace_id                 text,
    metadata                 jsonb not null default '{}'::jsonb,
    services                 text[] not null default '{}',
    first_received_at        timestamptz not null,
    last_received_at         timestamptz not null,
    created_at               timestamptz not null default now(),
    row_updated_at           timestamptz not null default now()
);

-- Search: the default listing order is (started_at desc, saga_id desc); every index that
-- serves a filter ends with that pair so keyset pagination stays an index range scan.
create index sagas_started_idx on sagas (started_at desc, saga_id desc);
create index sagas_type_status_started_idx on sagas (saga_type, status, started_at desc, saga_id desc);
create index sagas_status_started_idx on sagas (status, started_at desc, saga_id desc);
create index sagas_updated_idx on sagas (updated_at desc, saga_id desc);
create index sagas_business_key_idx on sagas (business_key) where business_key is not null;
create index sagas_trace_id_idx on sagas (trace_id) where trace_id is not null;
create index sagas_metadata_idx on sagas using gin (metadata jsonb_path_ops);
create index sagas_services_idx on sagas using gin (services);
-- Stuck detection scans non-terminal sagas by last activity.
create index sagas_active_updated_idx on sagas (saga_type, updated_at)
    where status not in ('COMPLETED', 'COMPENSATED', 'FAILED');
