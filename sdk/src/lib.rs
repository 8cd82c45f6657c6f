//! Saga Tracker SDK: record the steps of a distributed saga from any Rust service.
//!
//! A service builds one [`SagaTracker`] at start-up and calls [`SagaTracker::record`] (or one
//! of the step helpers) wherever a saga step starts, succeeds, fails or is compensated. Each
//! call produces one JSON event ([`contract::SagaEvent`], contract v1) to the tracker's Kafka
//! topic, keyed by `sagaId` so all of a saga's events stay in one partition and in order.
//!
//! - [`contract`] — the event contract shared with the tracker: types, validation, decoding
//!   (including the legacy shape).
//! - [`client`] — the producer: configuration, the no-op mode, delivery.
//! - [`error`] — the SDK's error type.
//!
//! ```no_run
//! use saga_tracker_sdk::{SagaTracker, TrackerConfig, Step};
//! use saga_tracker_sdk::contract::StepStatus;
//!
//! # async fn demo() -> Result<(), saga_tracker_sdk::Error> {
//! let tracker = SagaTracker::new(TrackerConfig::new("localhost:9092", "order-service"))?;
//! tracker
//!     .record(Step::new("order-8812", "ORDER_CREATION", "ORDER_PLACED", StepStatus::Succeeded))
//!     .await?;
//! # Ok(()) }
//! ```

pub mod client;
pub mod contract;
pub mod error;

pub use client::{SagaTracker, Step, TrackerConfig, DEFAULT_TOPIC};
pub use error::Error;
