//! Saga Tracker SDK: record the steps of a distributed saga from any Rust service.
//!
//! A service builds one [`SagaTracker`] at start-up and, wherever a saga step starts,
//! succeeds, fails or is compensated, records it in one line. Each call produces one JSON event
//! ([`contract::SagaEvent`], contract v1) to the tracker's Kafka topic, keyed by `sagaId` so
//! all of a saga's events stay in one partition and in order.
//!
//! ```no_run
//! use saga_tracker_sdk::{DeliveryMode, SagaContext, SagaTracker, TrackerConfig};
//!
//! # async fn demo() -> Result<(), saga_tracker_sdk::Error> {
//! let tracker = SagaTracker::new(
//!     TrackerConfig::new("localhost:9092", "order-service").with_delivery(DeliveryMode::Async),
//! )?;
//! let ctx = SagaContext::new("order-8812", "ORDER_CREATION").with_business_key("8812");
//! tracker.saga(&ctx).saga_started("ORDER_PLACED").await?;
//! tracker.saga(&ctx).step_succeeded("ORDER_PLACED").await?;
//! // …and before the process exits:
//! tracker.shutdown(std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```
//!
//! # A tour of the modules
//!
//! - [`config`] — [`TrackerConfig`]: brokers, topic, service name, `enabled`, delivery mode,
//!   buffer and overflow policy, producer pass-through properties; from code or from
//!   `SAGA_TRACKER_*` environment variables ([`TrackerConfig::from_env`]).
//! - [`client`] — [`SagaTracker`]: the producer, the two [`DeliveryMode`]s, the bounded
//!   buffer, flush and shutdown. Its module docs explain the buffer design.
//! - [`saga`] — [`SagaRecorder`]: typed helpers for the common transitions
//!   (`saga_started`, `step_failed`, `saga_compensated`, …).
//! - [`step`] — [`Step`]: one event's fields, for when the helpers are not enough.
//! - [`context`] — [`SagaContext`]: `sagaId`/`sagaType`/business key, injected into and
//!   extracted from Kafka and HTTP headers so every service records into the same saga.
//! - [`contract`] — the event contract shared with the tracker: types, validation, decoding
//!   (including the legacy shape), and with the `schema` feature its JSON Schema. Events are
//!   written to the wire by a private `wire` module, byte for byte what the contract's
//!   `Serialize` derive gives, without its overhead on the recording path.
//! - [`security`] — TLS (with mTLS) and SASL PLAIN/SCRAM to the brokers, as typed settings
//!   shared with the tracker; secrets inline or from files, never printed.
//! - [`stats`] — self-metrics (`saga_tracker_sdk_*`) through the [`metrics`] facade.
//! - [`error`] — the SDK's one error type.
//!
//! # Delivery modes
//!
//! [`DeliveryMode::Sync`] (the default) awaits the broker's acknowledgement: `record(..).await?`
//! means the event is in Kafka, and a broker outage surfaces as [`Error::Delivery`] after the
//! delivery timeout. [`DeliveryMode::Async`] returns as soon as the event is in a bounded
//! buffer; a full buffer is handled by the [`OverflowPolicy`] (drop, or wait a bounded time),
//! and the call then returns `Ok(None)`. Failures after the call are counted, not returned.
//! Either way, call [`SagaTracker::shutdown`] before exiting to deliver what is buffered.
//!
//! # Step names
//!
//! Step and saga-type names belong to your domain, not to this crate. Convention:
//! `SCREAMING_SNAKE_CASE`, named for the business fact the step establishes (`STOCK_RESERVED`,
//! `PAYMENT_CAPTURED`), the same name for every event of one step (its `STARTED`,
//! `SUCCEEDED`, … events), and defined once per saga type, e.g. as an enum implementing
//! `AsRef<str>` — see `examples/order_saga.rs`.
//!
//! # Cargo features
//!
//! - `tls-vendored` (default) — TLS and SASL PLAIN/SCRAM to the brokers ([`security`]), with
//!   OpenSSL compiled from crates.io, so building needs no system OpenSSL headers.
//! - `tls-system` — the same, linking the platform's OpenSSL (`libssl-dev`) instead: turn off
//!   default features and enable this one. With neither, only plaintext brokers can be
//!   reached and a TLS or SASL setting fails when the tracker is built.
//! - `opentelemetry` — take `traceId`/`spanId` from the current OpenTelemetry context and send
//!   a W3C `traceparent` header; with a tracer provider installed, each recorded step is also
//!   a producer span (`send <topic>`, messaging conventions), a child of the caller's span, and
//!   the ids and the header name that span, so the tracker's batch span links to it. Without
//!   the feature, set ids with [`Step::with_trace_ids`] or [`Step::with_traceparent`].
//! - `schema` — derive `schemars::JsonSchema` on the contract types and expose
//!   [`contract::json_schema`](contract/fn.json_schema.html).

pub mod client;
pub mod config;
pub mod context;
pub mod contract;
pub mod error;
pub mod saga;
pub mod security;
pub mod stats;
pub mod step;
mod trace;
mod wire;

pub use client::SagaTracker;
pub use config::{DeliveryMode, OverflowPolicy, TrackerConfig, DEFAULT_TOPIC};
pub use context::SagaContext;
pub use error::Error;
pub use saga::{SagaRecorder, StepCall};
pub use stats::Stats;
pub use step::Step;
