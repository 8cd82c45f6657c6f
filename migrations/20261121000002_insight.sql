-- Saga insight: stuck detection, statistics, retention.
--
-- Indexes only; no data changes. `sagas_active_updated_idx` (v1) already serves the running
-- sagas. FAILED is terminal for that index, so the two stuck rules about failed sagas
-- ("failed but never compensated", "compensation began but never finished") get their own
-- small partial index, and retention gets one over finished sagas by end time.

-- Failed sagas whose compensation has not finished: the only FAILED rows stuck detection
-- ever has to look at.
create index sagas_failed_open_idx on sagas (saga_type, ended_at)
    where status = 'FAILED' and compensation_ended_at is null;

-- Retention: the oldest finished sagas first.
create index sagas_terminal_ended_idx on sagas (ended_at)
    where status in ('COMPLETED', 'COMPENSATED', 'FAILED');
