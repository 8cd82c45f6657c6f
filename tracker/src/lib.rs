//! Saga Tracker: consumes saga step events from Kafka, aggregates them into PostgreSQL and
//! serves a search API, probes and Prometheus metrics.
//!
//! A tour, in the direction data flows:
//!
//! - [`config`] — typed settings: embedded commented defaults, file, `TRACKER_*` env.
//! - [`ingest`] — the Kafka consumer: batches messages, decodes them with the SDK's
//!   contract, sends invalid ones to the DLQ, hands valid ones to the store, and stores
//!   offsets only after the database committed.
//! - [`aggregate`] — the pure core: a saga's events → its state. No I/O.
//! - [`store`] — PostgreSQL: migrations, the batched write transaction, read queries.
//! - [`stuck`] — the pure rules that say whether a saga is stuck, and why.
//! - [`api`] — axum routes, query parsing, problem+json errors, OpenAPI.
//! - [`ui`] — the Saga Explorer: server-rendered pages under `/ui`, built on the same reads
//!   as the API.
//! - [`background`] — the periodic jobs beside the consumer: the database-derived gauges
//!   and retention.
//! - [`humanize`] — durations, instants and stuck reasons in words, for the UI and the CLI.
//! - [`metrics`] — every exported metric in one place; [`telemetry`] — logging.
//! - [`health`] — what the consumer reports and `/readyz` reads.
//! - [`app`] — wires it together: `Application::build` binds its listener (port 0 in tests)
//!   and `run` serves until the cancellation token fires, then drains.
//! - [`demo`] — a traffic generator for the local run command and the bench.
//! - [`cli`] — the operator's commands (`sagas`, `dlq`, `doctor`): REST and Kafka clients
//!   for a person at a terminal.
//! - [`dev`] — `saga-tracker dev`: the tracker with an embedded broker and demo traffic.

pub mod aggregate;
pub mod api;
pub mod app;
pub mod background;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dev;
pub mod health;
pub mod humanize;
pub mod ingest;
pub mod metrics;
pub mod store;
pub mod stuck;
pub mod telemetry;
pub mod ui;
