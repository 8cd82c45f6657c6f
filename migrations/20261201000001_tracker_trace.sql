-- From a saga to the tracker's own work on it: the trace id of the ingest batch that stored
-- each event (32 lowercase hex digits), so the saga detail can link to that batch's trace.
--
-- Null when the batch was not traced (export off, or the sampler dropped it) and for every
-- event stored before this migration. A nullable column without a default is a catalogue
-- change only: no table rewrite, no lock held beyond the instant of the `alter`.
alter table saga_events add column tracker_trace_id text;
