//! Typed helpers for the common transitions: one line per step event.
//!
//! ```no_run
//! # use saga_tracker_sdk::{SagaContext, SagaTracker};
//! # async fn demo(tracker: &SagaTracker) -> Result<(), saga_tracker_sdk::Error> {
//! let ctx = SagaContext::new("order-8812", "ORDER_CREATION").with_business_key("8812");
//! let saga = tracker.saga(&ctx);
//! saga.saga_started("ORDER_PLACED").await?;
//! saga.step_started("STOCK_RESERVED").await?;
//! saga.step_succeeded("STOCK_RESERVED").meta("warehouse", "eu-1").await?;
//! saga.saga_failed("PAYMENT_CAPTURED", "INSUFFICIENT_FUNDS", "card declined").await?;
//! saga.saga_compensated("STOCK_RESERVED").await?;
//! # Ok(()) }
//! ```
//!
//! Each helper returns a [`StepCall`]: optional setters (`.meta(..)`, `.sequence(..)`, …),
//! then `.await` records it with [`SagaTracker::record`] and returns the same result. With a
//! disabled tracker nothing is allocated and the `.await` completes at once.
//!
//! | helper | `stepStatus` | `sagaStatus` |
//! |---|---|---|
//! | [`saga_started`](SagaRecorder::saga_started) | `STARTED` | `STARTED` |
//! | [`step_started`](SagaRecorder::step_started) | `STARTED` | — |
//! | [`step_succeeded`](SagaRecorder::step_succeeded) | `SUCCEEDED` | — |
//! | [`step_failed`](SagaRecorder::step_failed) | `FAILED` + error | — |
//! | [`step_compensating`](SagaRecorder::step_compensating) | `COMPENSATING` | — |
//! | [`step_compensated`](SagaRecorder::step_compensated) | `COMPENSATED` | — |
//! | [`saga_completed`](SagaRecorder::saga_completed) | `SUCCEEDED` | `COMPLETED` |
//! | [`saga_failed`](SagaRecorder::saga_failed) | `FAILED` + error | `FAILED` |
//! | [`saga_compensating`](SagaRecorder::saga_compensating) | `COMPENSATING` | `COMPENSATING` |
//! | [`saga_compensated`](SagaRecorder::saga_compensated) | `COMPENSATED` | `COMPENSATED` |
//!
//! Step names are yours: pass `&str`, `String`, or your own enum implementing `AsRef<str>`
//! (see `examples/order_saga.rs`).

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::client::SagaTracker;
use crate::context::SagaContext;
use crate::contract::{SagaStatus, StepStatus};
use crate::error::Error;
use crate::step::Step;

/// Records step events of one saga; get one with [`SagaTracker::saga`]. Borrows the tracker
/// and the context, so it costs nothing to create.
#[derive(Debug, Clone, Copy)]
pub struct SagaRecorder<'a> {
    tracker: &'a SagaTracker,
    context: &'a SagaContext,
}

impl<'a> SagaRecorder<'a> {
    pub(crate) fn new(tracker: &'a SagaTracker, context: &'a SagaContext) -> Self {
        Self { tracker, context }
    }

    /// The saga being recorded.
    pub fn context(&self) -> &'a SagaContext {
        self.context
    }

    /// Any step status, optionally with a saga status: the general form of the helpers.
    pub fn step(
        &self,
        step: impl AsRef<str>,
        status: StepStatus,
        saga_status: Option<SagaStatus>,
    ) -> StepCall<'a> {
        if !self.tracker.is_enabled() {
            return StepCall::noop(self.tracker);
        }
        let mut s = self.context.step(step.as_ref(), status);
        if let Some(saga_status) = saga_status {
            s = s.with_saga_status(saga_status);
        }
        StepCall {
            tracker: self.tracker,
            step: Some(s),
        }
    }

    fn failure(
        &self,
        step: impl AsRef<str>,
        code: impl AsRef<str>,
        message: impl fmt::Display,
        saga_status: Option<SagaStatus>,
    ) -> StepCall<'a> {
        let call = self.step(step, StepStatus::Failed, saga_status);
        match call.step {
            Some(s) => StepCall {
                step: Some(s.with_error(code.as_ref(), message.to_string())),
                ..call
            },
            None => call,
        }
    }

    /// The saga begins with `first_step` starting (`STARTED`/`STARTED`).
    pub fn saga_started(&self, first_step: impl AsRef<str>) -> StepCall<'a> {
        self.step(first_step, StepStatus::Started, Some(SagaStatus::Started))
    }

    /// A step began.
    pub fn step_started(&self, step: impl AsRef<str>) -> StepCall<'a> {
        self.step(step, StepStatus::Started, None)
    }

    /// A step finished successfully.
    pub fn step_succeeded(&self, step: impl AsRef<str>) -> StepCall<'a> {
        self.step(step, StepStatus::Succeeded, None)
    }

    /// A step failed with a machine-readable `code` (e.g. `INSUFFICIENT_FUNDS`) and a
    /// human-readable `message` (anything `Display`, such as an error). The saga status is
    /// left for the tracker to infer; use [`SagaRecorder::saga_failed`] to state it.
    pub fn step_failed(
        &self,
        step: impl AsRef<str>,
        code: impl AsRef<str>,
        message: impl fmt::Display,
    ) -> StepCall<'a> {
        self.failure(step, code, message, None)
    }

    /// A step's compensating action began.
    pub fn step_compensating(&self, step: impl AsRef<str>) -> StepCall<'a> {
        self.step(step, StepStatus::Compensating, None)
    }

    /// A step's compensating action finished.
    pub fn step_compensated(&self, step: impl AsRef<str>) -> StepCall<'a> {
        self.step(step, StepStatus::Compensated, None)
    }

    /// The saga completed: `last_step` succeeded and nothing follows.
    pub fn saga_completed(&self, last_step: impl AsRef<str>) -> StepCall<'a> {
        self.step(
            last_step,
            StepStatus::Succeeded,
            Some(SagaStatus::Completed),
        )
    }

    /// The saga failed at `step` (compensation may follow).
    pub fn saga_failed(
        &self,
        step: impl AsRef<str>,
        code: impl AsRef<str>,
        message: impl fmt::Display,
    ) -> StepCall<'a> {
        self.failure(step, code, message, Some(SagaStatus::Failed))
    }

    /// Compensation of the saga began, with `step`'s compensating action.
    pub fn saga_compensating(&self, step: impl AsRef<str>) -> StepCall<'a> {
        self.step(
            step,
            StepStatus::Compensating,
            Some(SagaStatus::Compensating),
        )
    }

    /// Compensation of the saga finished, with `step`'s compensating action.
    pub fn saga_compensated(&self, step: impl AsRef<str>) -> StepCall<'a> {
        self.step(step, StepStatus::Compensated, Some(SagaStatus::Compensated))
    }
}

/// One step event about to be recorded: add optional detail, then `.await` it.
#[must_use = "nothing is recorded until the call is awaited"]
#[derive(Debug)]
pub struct StepCall<'a> {
    tracker: &'a SagaTracker,
    /// `None` when the tracker is disabled: setters and `.await` do nothing.
    step: Option<Step>,
}

impl<'a> StepCall<'a> {
    fn noop(tracker: &'a SagaTracker) -> Self {
        Self {
            tracker,
            step: None,
        }
    }

    fn map(mut self, f: impl FnOnce(Step) -> Step) -> Self {
        self.step = self.step.map(f);
        self
    }

    /// Per-saga order hint.
    pub fn sequence(self, sequence: i64) -> Self {
        self.map(|s| s.with_sequence(sequence))
    }

    /// Metadata as a JSON object, e.g. `json!({"amount": 129.9})`, at most 16 KiB serialized.
    /// Anything but an object, or too large, makes the call fail with [`Error::Invalid`].
    pub fn metadata(self, metadata: Value) -> Self {
        self.map(|s| s.with_metadata_value(metadata))
    }

    /// Adds one metadata entry.
    pub fn meta(self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.map(|s| s.with_metadata_entry(key, value))
    }

    /// Overrides the event time (defaults to now).
    pub fn at(self, occurred_at: DateTime<Utc>) -> Self {
        self.map(|s| s.at(occurred_at))
    }

    /// Sets or overrides the saga-level status.
    pub fn saga_status(self, status: SagaStatus) -> Self {
        self.map(|s| s.with_saga_status(status))
    }

    /// Explicit W3C trace ids; see [`Step::with_trace_ids`].
    pub fn trace_ids(self, trace_id: impl Into<String>, span_id: impl Into<String>) -> Self {
        self.map(|s| s.with_trace_ids(trace_id, span_id))
    }

    /// Trace ids from a `traceparent` header; see [`Step::with_traceparent`].
    pub fn traceparent(self, traceparent: &str) -> Self {
        self.map(|s| s.with_traceparent(traceparent))
    }

    /// The [`Step`] this call would record (`None` when the tracker is disabled).
    pub fn into_step(self) -> Option<Step> {
        self.step
    }
}

impl<'a> IntoFuture for StepCall<'a> {
    type Output = Result<Option<String>, Error>;
    type IntoFuture = StepFuture<'a>;

    fn into_future(self) -> StepFuture<'a> {
        match self.step {
            None => StepFuture(None),
            Some(step) => StepFuture(Some(Box::pin(self.tracker.record(step)))),
        }
    }
}

type Recording<'a> = Pin<Box<dyn Future<Output = Result<Option<String>, Error>> + Send + 'a>>;

/// The future of an awaited [`StepCall`]: ready at once when the tracker is disabled.
pub struct StepFuture<'a>(Option<Recording<'a>>);

impl Future for StepFuture<'_> {
    type Output = Result<Option<String>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.as_mut() {
            None => Poll::Ready(Ok(None)),
            Some(f) => f.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for StepFuture<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "StepFuture(recording)"
        } else {
            "StepFuture(disabled)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step_of(call: StepCall<'_>) -> crate::contract::SagaEvent {
        call.into_step()
            .expect("enabled")
            .into_event("svc")
            .expect("valid")
    }

    fn enabled() -> SagaTracker {
        // Never contacted: these tests only build steps.
        SagaTracker::new(crate::TrackerConfig::new("127.0.0.1:1", "svc")).expect("producer")
    }

    #[test]
    fn helpers_set_the_documented_statuses() {
        let t = enabled();
        let ctx = SagaContext::new("o-1", "ORDER_CREATION").with_business_key("1");
        let saga = t.saga(&ctx);
        let cases = [
            (
                saga.saga_started("A"),
                StepStatus::Started,
                Some(SagaStatus::Started),
            ),
            (saga.step_started("A"), StepStatus::Started, None),
            (saga.step_succeeded("A"), StepStatus::Succeeded, None),
            (saga.step_failed("A", "E", "m"), StepStatus::Failed, None),
            (saga.step_compensating("A"), StepStatus::Compensating, None),
            (saga.step_compensated("A"), StepStatus::Compensated, None),
            (
                saga.saga_completed("A"),
                StepStatus::Succeeded,
                Some(SagaStatus::Completed),
            ),
            (
                saga.saga_failed("A", "E", "m"),
                StepStatus::Failed,
                Some(SagaStatus::Failed),
            ),
            (
                saga.saga_compensating("A"),
                StepStatus::Compensating,
                Some(SagaStatus::Compensating),
            ),
            (
                saga.saga_compensated("A"),
                StepStatus::Compensated,
                Some(SagaStatus::Compensated),
            ),
        ];
        for (call, step_status, saga_status) in cases {
            let e = step_of(call);
            assert_eq!((e.step_status, e.saga_status), (step_status, saga_status));
            assert_eq!(e.business_key.as_deref(), Some("1"));
            assert_eq!(e.error.is_some(), step_status == StepStatus::Failed);
        }
    }

    #[test]
    fn failures_carry_code_and_message() {
        let t = enabled();
        let ctx = SagaContext::new("o-1", "ORDER_CREATION");
        let io = std::io::Error::other("card declined");
        let e = step_of(t.saga(&ctx).step_failed("PAYMENT", "DECLINED", &io));
        let err = e.error.expect("error");
        assert_eq!(
            (err.code.as_str(), err.message.as_str()),
            ("DECLINED", "card declined")
        );
    }

    #[test]
    fn setters_reach_the_event() {
        let t = enabled();
        let ctx = SagaContext::new("o-1", "ORDER_CREATION");
        let e = step_of(
            t.saga(&ctx)
                .step_succeeded("A")
                .sequence(7)
                .metadata(serde_json::json!({"a": 1}))
                .meta("b", true)
                .saga_status(SagaStatus::InProgress),
        );
        assert_eq!(e.sequence, Some(7));
        assert_eq!(e.saga_status, Some(SagaStatus::InProgress));
        assert_eq!(e.metadata.map(|m| m.len()), Some(2));
    }

    #[tokio::test]
    async fn oversize_metadata_fails_the_call_before_anything_is_sent() {
        let t = SagaTracker::new(
            crate::TrackerConfig::new("127.0.0.1:1", "svc")
                .with_delivery(crate::DeliveryMode::Async),
        )
        .expect("producer");
        let ctx = SagaContext::new("o-1", "ORDER_CREATION");
        let e = t
            .saga(&ctx)
            .step_succeeded("A")
            .meta("blob", "x".repeat(crate::contract::MAX_METADATA_BYTES))
            .await
            .expect_err("too large");
        let Error::Invalid(c) = e else {
            panic!("expected Invalid, got {e:?}")
        };
        assert_eq!(c.reason(), "metadata_too_large");
        assert!(c.to_string().contains("limit is 16384"), "{c}");
        let stats = t.stats();
        assert_eq!((stats.dropped, stats.buffered), (1, 0));
    }

    #[tokio::test]
    async fn a_disabled_tracker_builds_nothing_and_completes_at_once() {
        let t = SagaTracker::disabled();
        let ctx = SagaContext::new("", "not valid");
        let call = t.saga(&ctx).step_started("A").meta("k", "v");
        assert!(call.step.is_none());
        assert_eq!(call.await.expect("no-op"), None);
    }
}
