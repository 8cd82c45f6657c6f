-- `stuck=true` and `stuckReason=`: the sagas that can be stuck at all, in listing order.
-- Without it a stuck search walked every saga's start filtering for the few unfinished ones
-- (`compensation_not_finished`: 124k rows removed, 33 ms p50 at 1M sagas, growing with the
-- table: docs/BENCHMARKS.md, "API reads"). The search states the status its rule implies
-- (`store::read::OPEN_SAGA` and the per-reason forms), which implies this predicate.
--
-- Partial: only running sagas and failed ones whose compensation has not finished (a failed
-- saga nobody compensates stays here until retention drops it); the row versions of a saga
-- that finished add no entry.
create index sagas_open_started_idx on sagas (started_at desc, saga_id desc)
    where status in ('STARTED', 'IN_PROGRESS', 'COMPENSATING')
       or (status = 'FAILED' and compensation_ended_at is null);
