-- `failedStep=` (the Saga Explorer's "most failing steps" links, and the API filter): the
-- sagas a step failed, newest first. Partial, so it holds only failed sagas (a few per cent of
-- the rows) and costs the ingest of successful sagas nothing; with it, a step that failed no
-- saga is one index probe instead of a walk of the whole `started_at` order (235 ms p50 at 1M
-- sagas without it, docs/BENCHMARKS.md).
create index sagas_failed_step_started_idx on sagas (failed_step, started_at desc, saga_id desc)
    where failed_step is not null;
