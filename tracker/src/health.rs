//! Shared liveness/readiness facts: the consumer reports here, `/readyz` reads here.
//!
//! Only plain atomics so neither side ever blocks the other.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// What the consumer loop last said about itself.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHealth {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The loop is running (set at start, cleared when it exits).
    running: AtomicBool,
    /// The last database write failed and the loop is retrying.
    db_failing: AtomicBool,
    /// The last Schema Registry lookup failed (unreachable, timeout, 5xx, credentials) and
    /// the loop is retrying it; Avro events wait meanwhile.
    schema_registry_failing: AtomicBool,
    /// Wall clock (unix ms) of the last successful poll of the broker (a message or an empty
    /// poll both count): a stale value means the loop is wedged.
    last_poll_unix_ms: AtomicI64,
    /// The brokers refused TLS or the SASL credentials (librdkafka keeps retrying; polls
    /// still "succeed" empty, so the poll age alone would call this healthy). Cleared once
    /// the statistics show every broker connection up again. A short-held lock: written on
    /// librdkafka's error callback, read by `/readyz`.
    broker_security: Mutex<Option<String>>,
}

impl ConsumerHealth {
    pub fn set_running(&self, running: bool) {
        self.inner.running.store(running, Ordering::SeqCst);
    }

    pub fn is_running(&self) -> bool {
        self.inner.running.load(Ordering::SeqCst)
    }

    pub fn set_db_failing(&self, failing: bool) {
        self.inner.db_failing.store(failing, Ordering::SeqCst);
    }

    pub fn db_failing(&self) -> bool {
        self.inner.db_failing.load(Ordering::SeqCst)
    }

    pub fn set_schema_registry_failing(&self, failing: bool) {
        self.inner
            .schema_registry_failing
            .store(failing, Ordering::SeqCst);
    }

    pub fn schema_registry_failing(&self) -> bool {
        self.inner.schema_registry_failing.load(Ordering::SeqCst)
    }

    pub fn mark_polled(&self) {
        self.inner
            .last_poll_unix_ms
            .store(chrono::Utc::now().timestamp_millis(), Ordering::SeqCst);
    }

    /// Records (or, with `None`, clears) a TLS or authentication failure towards the brokers.
    pub fn set_broker_security_failure(&self, failure: Option<String>) {
        if let Ok(mut slot) = self.inner.broker_security.lock() {
            *slot = failure;
        }
    }

    /// The broker TLS/authentication failure that currently holds, if any.
    pub fn broker_security_failure(&self) -> Option<String> {
        self.inner
            .broker_security
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
    }

    /// Milliseconds since the last poll, or `None` if the loop never polled.
    pub fn since_last_poll_ms(&self) -> Option<i64> {
        match self.inner.last_poll_unix_ms.load(Ordering::SeqCst) {
            0 => None,
            t => Some(chrono::Utc::now().timestamp_millis() - t),
        }
    }
}
