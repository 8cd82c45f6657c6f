-- Statistics rollups: what `GET /api/v1/stats` reads instead of scanning every saga and event.
--
-- Each saga contributes to the rows of the hour it started in (UTC), of its type, once for
-- "every service" (service = '') and once per service that emitted one of its events. The
-- ingest transaction keeps the rows exact by adding the new contribution of every saga it
-- touches and subtracting the old one; retention subtracts what it removes. How a saga
-- contributes is defined in `tracker/src/store/rollup.rs` (SQL for the rebuild, retention
-- and statistics, Rust for the ingest path; a test proves the two agree).
--
-- The tables start empty: `saga-tracker migrate` (store::migrate) fills them from the
-- stored sagas whenever `stats_rollup_version` does not hold the version the binary
-- computes, so an existing database is backfilled once, and a future change of the
-- contribution rules is applied by bumping that version.

-- Counts. step = '' is the saga row: total = sagas, then one count per status and the two
-- compensation counts. step <> '' is a step row: total = sagas in which the step reported
-- anything, failed = those in which it reported FAILED; the other counts are 0.
create table stats_hourly (
    service              text        not null,
    hour                 timestamptz not null,
    saga_type            text        not null,
    step                 text        not null,
    total                bigint      not null,
    started              bigint      not null,
    in_progress          bigint      not null,
    completed            bigint      not null,
    failed               bigint      not null,
    compensating         bigint      not null,
    compensated          bigint      not null,
    compensation_started bigint      not null,
    compensation_failed  bigint      not null,
    primary key (service, hour, saga_type, step)
) with (fillfactor = 70);

-- Duration histograms on a log scale, 8 buckets per doubling (bucket 0: under 1 ms; the
-- bounds, in microseconds, are a constant array in rollup.rs). kind: 's' saga duration and
-- 'c' time to compensate (both on step = ''), 't' step duration. Durations are whole
-- microseconds and sum_us is their exact sum, so a bucket's mean is exact and a percentile
-- that falls in a bucket holding one distinct value is exact too.
create table stats_hourly_durations (
    service   text        not null,
    hour      timestamptz not null,
    saga_type text        not null,
    step      text        not null,
    kind      "char"      not null,
    bucket    smallint    not null,
    count     bigint      not null,
    sum_us    bigint      not null,
    primary key (service, hour, saga_type, step, kind, bucket)
) with (fillfactor = 70);

-- The same sums per UTC day, kept in the same transactions: a query over a long window reads
-- whole days here, 24 times fewer rows, and only its first and last partial days from the
-- hourly tables. Same columns as the hourly tables, with `day` for `hour`.
create table stats_daily (like stats_hourly) with (fillfactor = 70);
alter table stats_daily rename column hour to day;
alter table stats_daily add primary key (service, day, saga_type, step);

create table stats_daily_durations (like stats_hourly_durations) with (fillfactor = 70);
alter table stats_daily_durations rename column hour to day;
alter table stats_daily_durations add primary key (service, day, saga_type, step, kind, bucket);

-- (fillfactor 70: the current hour's and day's rows are updated by every batch; free space
-- on their pages lets PostgreSQL update them in place without touching the index.)

-- Which version of the contribution rules the rollups were built with; one row at most.
create table stats_rollup_version (
    singleton boolean primary key default true check (singleton),
    version   integer not null,
    built_at  timestamptz not null default now()
);
