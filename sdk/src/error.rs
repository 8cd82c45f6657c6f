//! The SDK's one error type. Recording never panics; every failure is one of these.

use crate::contract::ContractError;

/// What can go wrong when recording a saga step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The event breaks the contract (empty id, bad saga type, metadata over 16 KiB, …).
    #[error("invalid saga event: {0}")]
    Invalid(#[from] ContractError),
    /// The producer could not be created from the configuration.
    #[error("invalid producer configuration: {0}")]
    Config(String),
    /// The broker did not acknowledge the event (unreachable, timed out, rejected).
    #[error("delivery to Kafka failed: {0}")]
    Delivery(String),
}
