-- The running sagas in order of their last event: what `sort=updatedAt` lists first, now that
-- no index of `sagas` holds `updated_at` (migration `20261207000001`, so that a running saga's
-- row is rewritten heap-only). One narrow row per running saga, kept by triggers on `sagas`,
-- so every writer (the ingest upsert, retention's moves, hand-written SQL) keeps it exact; a
-- saga leaves it when it settles. A rewrite of a running saga's row thus updates two small
-- index entries here instead of one in each of the fifteen indexes of `sagas`.
--
-- Distributable like the rest: keyed by (saga_id, bucket_day), the key of the saga's row.

create table saga_activity (
    saga_id    text not null,
    bucket_day date not null,
    -- `sagas.updated_at` of the running saga.
    active_at  timestamptz not null,
    primary key (saga_id, bucket_day)
) with (fillfactor = 80);

create index saga_activity_active_idx on saga_activity (active_at desc, saga_id desc);

insert into saga_activity (saga_id, bucket_day, active_at)
    select saga_id, bucket_day, updated_at from sagas where settled_at is null;
analyze saga_activity;

-- Kept set by set: one statement per statement on `sagas` (transition tables hold the rows
-- it wrote, from every partition), not one per row — a row trigger cost the ingest of long
-- sagas most of what the heap-only rewrites saved (docs/BENCHMARKS.md).
create function saga_activity_inserted() returns trigger language plpgsql as $$
begin
    insert into saga_activity (saga_id, bucket_day, active_at)
        select saga_id, bucket_day, updated_at from new_rows where settled_at is null
        on conflict (saga_id, bucket_day) do update set active_at = excluded.active_at;
    return null;
end
$$;

create function saga_activity_updated() returns trigger language plpgsql as $$
begin
    -- Settled, or moved to another key (no writer does that; a partition-key update would).
    delete from saga_activity a
        using old_rows o
        where a.saga_id = o.saga_id and a.bucket_day = o.bucket_day
          and not exists (select 1 from new_rows n
                          where n.saga_id = o.saga_id and n.bucket_day = o.bucket_day
                            and n.settled_at is null);
    insert into saga_activity (saga_id, bucket_day, active_at)
        select saga_id, bucket_day, updated_at from new_rows where settled_at is null
        on conflict (saga_id, bucket_day) do update set active_at = excluded.active_at
        where saga_activity.active_at is distinct from excluded.active_at;
    return null;
end
$$;

create function saga_activity_deleted() returns trigger language plpgsql as $$
begin
    delete from saga_activity a
        using old_rows o
        where a.saga_id = o.saga_id and a.bucket_day = o.bucket_day;
    return null;
end
$$;

-- On the partitioned table: a statement on `sagas` fires them once, with the rows of every
-- partition it touched. (Dropping a partition fires nothing: retention clears its day.)
create trigger saga_activity_inserted after insert on sagas
    referencing new table as new_rows
    for each statement execute function saga_activity_inserted();
create trigger saga_activity_updated after update on sagas
    referencing old table as old_rows new table as new_rows
    for each statement execute function saga_activity_updated();
create trigger saga_activity_deleted after delete on sagas
    referencing old table as old_rows
    for each statement execute function saga_activity_deleted();
