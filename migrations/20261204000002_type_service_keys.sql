-- `service=` with `sagaType=`: one index entry per (type, service) pair, so a pair that no
-- saga has is answered by one index probe instead of intersecting every saga of the type
-- with every saga of the service (`ORDER_CREATION` + `fraud-svc`: 40 ms p50 at 1M sagas,
-- growing with the table: docs/BENCHMARKS.md, "API reads").
--
-- The GIN index on `services` is replaced by one on its keys plus a `TYPE<US>service` key per
-- service (US = the unit separator, chr(31)), so a saga row version costs one GIN insert of
-- twice the keys instead of one plus another index. The search states the exact conditions
-- beside the index one (`store::read::push_service`), so a service or type name that contains
-- the separators can only make a candidate, never a wrong match.
--
-- A plain expression (no sub-select), so the planner inlines it in the index definition and
-- in the queries alike, and evaluating it on a row costs a few string operations.
create function saga_service_keys(saga_type text, services text[]) returns text[]
    language sql immutable parallel safe
    as $$ select services || string_to_array(
              saga_type || chr(31) || array_to_string(services, chr(30) || saga_type || chr(31)),
              chr(30)) $$;

create index sagas_service_keys_idx on sagas using gin (saga_service_keys(saga_type, services));
drop index sagas_services_idx;
