-- The running sagas in order of their last event: what `sort=updatedAt` lists first, now that
-- no index of `sagas` holds `updated_at` (migration `20261207000001`, so that a running saga's
-- row is rewritten heap-only). One narrow row per running saga, kept by a trigger on `sagas`,
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

create function saga_activity_sync() returns trigger language plpgsql as $$
begin
    -- A row that was running and is gone, settled, or stored on another day.
    if tg_op <> 'INSERT' and old.settled_at is null
       and (tg_op = 'DELETE' or new.settled_at is not null
            or new.bucket_day <> old.bucket_day or new.saga_id <> old.saga_id) then
        delete from saga_activity where saga_id = old.saga_id and bucket_day = old.bucket_day;
    end if;
    if tg_op <> 'DELETE' and new.settled_at is null then
        if tg_op = 'INSERT' or old.settled_at is not null
           or new.bucket_day <> old.bucket_day or new.saga_id <> old.saga_id then
            insert into saga_activity (saga_id, bucket_day, active_at)
                values (new.saga_id, new.bucket_day, new.updated_at)
                on conflict (saga_id, bucket_day) do update set active_at = excluded.active_at;
        elsif new.updated_at is distinct from old.updated_at then
            update saga_activity set active_at = new.updated_at
                where saga_id = new.saga_id and bucket_day = new.bucket_day;
        end if;
    end if;
    return null;
end
$$;

-- On the partitioned table: cloned onto every partition, present and future.
create trigger saga_activity_sync after insert or update or delete on sagas
    for each row execute function saga_activity_sync();
