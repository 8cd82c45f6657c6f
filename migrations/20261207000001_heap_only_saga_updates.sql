-- A running saga's row is rewritten by every batch that carries one of its events (about ten
-- times for a saga of 50 events), and no such update was heap-only (HOT): `updated_at`, which
-- every event moves, was a column of two indexes, so each row version took a new entry in all
-- fifteen of the table's indexes. With no index on `updated_at`, and room left on each page
-- for the next version (fillfactor), a mid-saga update writes the row and nothing else; the
-- indexes change only when an indexed value does (the status, the services, the end).
--
-- What the two indexes served, and what serves it now:
-- * `sagas_updated_idx (updated_at desc, saga_id desc)`, the `sort=updatedAt` listing and the
--   `updatedAfter` bound: finished sagas by `settled_at` below (their `updated_at`, which
--   hardly changes once they are done), running ones by `saga_activity` (the next
--   migration).
-- * `sagas_active_updated_idx (saga_type, updated_at)`, the running sagas for the stuck gauge:
--   `sagas_open_started_idx`, whose predicate the gauge's statuses imply.
--
-- Upgrade cost: one rewrite of the saga rows (docs/operations.md, "Upgrades").

-- `updated_at` of a finished saga (`COMPLETED`, `COMPENSATED`, `FAILED`), null while it runs.
-- Computed by the database, so every writer (the ingest upsert, retention's moves, the seeds
-- of the benches) keeps it exact; adding it rewrites each partition once.
alter table sagas add column settled_at timestamptz generated always as (
    case when status in ('COMPLETED', 'COMPENSATED', 'FAILED') then updated_at end
) stored;

create index sagas_settled_idx on sagas (settled_at desc, saga_id desc)
    where settled_at is not null;

drop index sagas_updated_idx;
drop index sagas_active_updated_idx;

-- Room on each page of the saga rows for the next version of a row (HOT needs it on the
-- same page); new day partitions get the same (`store::partitions::ensure`). A partitioned
-- table itself takes no storage parameters, so each partition is set.
do $$
declare
    part regclass;
begin
    for part in select inhrelid::regclass from pg_inherits where inhparent = 'sagas'::regclass loop
        execute format('alter table %s set (fillfactor = 80)', part);
    end loop;
end
$$;
