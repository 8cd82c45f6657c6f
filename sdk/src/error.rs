//! The SDK's one error type. Recording never panics; every failure is one of these.
//!
//! Which variants a call can return depends on the delivery mode: in
//! [`DeliveryMode::Async`](crate::DeliveryMode::Async) a recording call fails only for bad
//! input ([`Error::Invalid`]), because delivery happens after the call has returned; in
//! [`DeliveryMode::Sync`](crate::DeliveryMode::Sync) it also reports [`Error::Delivery`].

use crate::contract::ContractError;

/// What can go wrong when configuring the SDK or recording a saga step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The event breaks the contract (empty id, bad saga type, metadata over 16 KiB, …). The
    /// [`ContractError`] names the field and the reason.
    #[error("invalid saga event: {0}")]
    Invalid(#[from] ContractError),
    /// The configuration is unusable, or the producer could not be created from it.
    #[error("invalid producer configuration: {0}")]
    Config(String),
    /// An environment variable read by [`TrackerConfig::from_env`](crate::TrackerConfig::from_env)
    /// holds a value that cannot be used.
    #[error("invalid environment variable {variable}: {reason}")]
    Env {
        /// The variable's name, e.g. `SAGA_TRACKER_DELIVERY`.
        variable: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// The broker did not acknowledge the event (unreachable, timed out, rejected), or the
    /// buffer stayed full for the whole delivery timeout. Only returned in `Sync` mode.
    #[error("delivery to Kafka failed: {0}")]
    Delivery(String),
    /// A saga-context header (Kafka or HTTP) is present but unusable.
    #[error("invalid saga context header `{header}`: {reason}")]
    Header {
        /// The header's name, e.g. `saga-id`.
        header: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// [`SagaTracker::flush`](crate::SagaTracker::flush) or
    /// [`SagaTracker::shutdown`](crate::SagaTracker::shutdown) reached its deadline with events
    /// still undelivered.
    #[error("{pending} event(s) still undelivered when the flush deadline passed")]
    FlushTimeout {
        /// Events accepted but neither delivered nor failed yet.
        pending: usize,
    },
    /// The tracker was shut down; it accepts no more events.
    #[error("the saga tracker has been shut down")]
    Closed,
}
