-- Time-partitioned storage (issue #15).
--
-- `sagas` and `saga_events` become range-partitioned by `bucket_day`: the UTC day the tracker
-- first stored an event of the saga. A saga and *all* its events share one bucket, so
--
-- * retention drops a whole day (both tables) instead of deleting rows one by one; sagas of
--   that day that are not yet due (still running, or ended after the cutoff) are first moved
--   to the current day (`store::partitions`);
-- * `eventId` idempotency holds across partitions by construction: a redelivered event — a
--   minute or a week later — is written to its saga's bucket, where the primary key
--   `(saga_id, event_id, bucket_day)` rejects it. The write path finds the bucket under the
--   saga's advisory lock, so two writers never put one saga in two buckets;
-- * every unique key starts with `saga_id` and nothing references another saga, so the schema
--   can be distributed by `saga_id` (Citus: `create_distributed_table('sagas', 'saga_id')`,
--   co-located `saga_events`); see docs/operations.md.
--
-- `eventId`s are now unique per saga instead of globally: one id reused by two sagas is two
-- events (it was one, the second silently dropped). The SDK's ids are UUIDv7, so this changes
-- nothing for it.
--
-- An existing database is converted in place, without copying: the current tables become one
-- partition, `*_legacy`, covering every day before today, with `bucket_day` = yesterday for
-- every row (a constant default: no rewrite). The new primary keys are built on them (the one
-- cost that grows with the data: an index build over `saga_events`); every other index is
-- reused as it is, because the partitioned tables declare the same definitions and
-- `attach partition` adopts matching indexes. Retention deletes the legacy partition's due
-- sagas row by row, as before, until its day itself is due, then retires it like any day.
-- On a new database the legacy tables are empty and simply dropped.
--
-- `storage_partitions` lists the days that have a partition. Writers lock the rows of the
-- days they write to `for share`; retention locks a day `for update` before retiring it, so a
-- day is never dropped under a batch writing to it.
--
-- `sagas.fold_state` is the aggregate's state after the saga's last event in canonical order
-- (`aggregate::FoldState`, JSON), so an in-order batch continues the fold instead of
-- re-reading every stored event. Null means "refold from the events" (rows from before this
-- migration, or a state this binary does not understand).

do $migration$
declare
    yesterday date := (now() at time zone 'UTC')::date - 1;
    ix record;
    legacy_rows boolean;
begin
    alter table sagas rename to sagas_legacy;
    alter table saga_events rename to saga_events_legacy;

    -- Free the index names for the partitioned tables (same definitions, same names).
    for ix in
        select c.relname
        from pg_index i join pg_class c on c.oid = i.indexrelid
        where i.indrelid in ('sagas_legacy'::regclass, 'saga_events_legacy'::regclass)
    loop
        execute format('alter index %I rename to %I', ix.relname, ix.relname || '_legacy');
    end loop;

    -- The partition key, constant for every existing row (a catalogue change, no rewrite).
    execute format('alter table sagas_legacy add column bucket_day date not null default %L',
                   yesterday);
    execute format('alter table saga_events_legacy add column bucket_day date not null default %L',
                   yesterday);
    alter table sagas_legacy alter column bucket_day drop default;
    alter table saga_events_legacy alter column bucket_day drop default;
    alter table sagas_legacy add column fold_state text;

    -- Primary keys must contain the partition key.
    alter table sagas_legacy drop constraint sagas_pkey_legacy;
    alter table saga_events_legacy drop constraint saga_events_pkey_legacy;
    -- (saga_id, event_id, bucket_day) serves every lookup by saga the old index did.
    drop index saga_events_saga_id_idx_legacy;

    create table sagas (like sagas_legacy including defaults including constraints)
        partition by range (bucket_day);
    create table saga_events (like saga_events_legacy including defaults including constraints)
        partition by range (bucket_day);
    -- Rows inserted without a bucket (tests, hand-written SQL) go to today's partition.
    alter table sagas alter column bucket_day set default ((now() at time zone 'UTC')::date);
    alter table saga_events alter column bucket_day set default ((now() at time zone 'UTC')::date);

    alter table sagas add primary key (saga_id, bucket_day);
    alter table saga_events add primary key (saga_id, event_id, bucket_day);

    -- The indexes of migrations 1, 2 and 5, verbatim (see those files for why each exists).
    create index sagas_started_idx on sagas (started_at desc, saga_id desc);
    create index sagas_type_status_started_idx on sagas (saga_type, status, started_at desc, saga_id desc);
    create index sagas_status_started_idx on sagas (status, started_at desc, saga_id desc);
    create index sagas_updated_idx on sagas (updated_at desc, saga_id desc);
    create index sagas_business_key_idx on sagas (business_key) where business_key is not null;
    create index sagas_trace_id_idx on sagas (trace_id) where trace_id is not null;
    create index sagas_metadata_idx on sagas using gin (metadata jsonb_path_ops);
    create index sagas_services_idx on sagas using gin (services);
    create index sagas_active_updated_idx on sagas (saga_type, updated_at)
        where status not in ('COMPLETED', 'COMPENSATED', 'FAILED');
    create index sagas_failed_open_idx on sagas (saga_type, ended_at)
        where status = 'FAILED' and compensation_ended_at is null;
    create index sagas_terminal_ended_idx on sagas (ended_at)
        where status in ('COMPLETED', 'COMPENSATED', 'FAILED');
    create index sagas_failed_step_started_idx on sagas (failed_step, started_at desc, saga_id desc)
        where failed_step is not null;
    create index saga_events_step_idx on saga_events (step, saga_id);

    create table storage_partitions (
        day    date primary key,
        -- The partition of rows stored before partitioning: it covers every earlier day.
        legacy boolean not null default false
    );

    select exists (select 1 from sagas_legacy) or exists (select 1 from saga_events_legacy)
        into legacy_rows;
    if legacy_rows then
        -- Builds the new primary keys on the legacy tables and adopts the other indexes.
        execute format('alter table sagas attach partition sagas_legacy '
                       'for values from (minvalue) to (%L)', yesterday + 1);
        execute format('alter table saga_events attach partition saga_events_legacy '
                       'for values from (minvalue) to (%L)', yesterday + 1);
        insert into storage_partitions (day, legacy) values (yesterday, true);
    else
        drop table sagas_legacy;
        drop table saga_events_legacy;
    end if;
end
$migration$;
