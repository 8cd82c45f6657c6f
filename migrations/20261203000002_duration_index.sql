-- `minDurationMs=`: the finished sagas that took at least that long. Without an index on
-- `duration_ms`, a duration longer than every saga's was a scan of the whole table (225 ms
-- p50 at 1M sagas, 5.7 s at 10M: docs/BENCHMARKS.md, "API reads at 1M and 10M sagas"); with
-- it, the search collects the few long sagas through the index and sorts them.
--
-- Partial: a running saga has no duration, so the row versions written while a saga runs
-- (one per ingest batch that touches it) add no entry here. A saga adds one entry when it
-- finishes, plus one per later row version (late events): about one per saga.
create index sagas_duration_idx on sagas (duration_ms) where duration_ms is not null;
