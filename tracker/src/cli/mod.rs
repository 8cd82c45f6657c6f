//! The operator's command line: `saga-tracker sagas …`, `saga-tracker dlq …`,
//! `saga-tracker doctor` and `saga-tracker completions`.
//!
//! These commands are for a person at a terminal (and for scripts through `--json` /
//! `--ndjson` and exit codes). `sagas` talks to a running tracker's REST API only, so it works
//! from a laptop with an API key; `dlq` talks to Kafka with the tracker's own `[kafka]`
//! settings (the same `--config` file and `TRACKER_*` variables), because the dead-letter
//! topic is not served by the API; `doctor` checks both sides.
//!
//! [`output`] decides colours (off when stdout is not a terminal, with `NO_COLOR`, or with
//! `--color never`) and draws tables and progress bars; [`api`] is the HTTP client.

pub mod api;
pub mod dlq;
pub mod doctor;
pub mod kafka;
pub mod output;
pub mod sagas;

pub use api::ApiArgs;
pub use output::{ColorChoice, Output};
