//! Saga context propagation: carry `sagaId`, `sagaType` and the business key from one service
//! to the next, so every participant records into the same saga.
//!
//! The context travels as three headers, on Kafka messages ([`OwnedHeaders`] /
//! [`BorrowedHeaders`](rdkafka::message::BorrowedHeaders)) and on HTTP requests
//! ([`http::HeaderMap`]):
//!
//! | header | value |
//! |---|---|
//! | `saga-id` ([`SAGA_ID_HEADER`]) | the `sagaId`, UTF-8, 1–128 characters |
//! | `saga-type` ([`SAGA_TYPE_HEADER`]) | the `sagaType`, `[A-Z0-9_.-]{1,64}` |
//! | `saga-business-key` ([`BUSINESS_KEY_HEADER`]) | optional business key, 1–128 characters |
//!
//! Names are lowercase; on extraction they match case-insensitively. Extraction validates
//! with the event contract's own rules: no headers at all is `Ok(None)`; a header that is
//! present but unusable (not UTF-8, too long, a bad saga type, `saga-type` without `saga-id`,
//! the same header twice with different values) is [`Error::Header`] naming it. Nothing here
//! panics on bad input. This module only reads and writes headers; it never records anything.

use http::{HeaderMap, HeaderValue};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};

use crate::contract::{self, StepStatus};
use crate::error::Error;
use crate::step::Step;

/// Header carrying the `sagaId`.
pub const SAGA_ID_HEADER: &str = "saga-id";
/// Header carrying the `sagaType`.
pub const SAGA_TYPE_HEADER: &str = "saga-type";
/// Header carrying the optional business key (e.g. the order number).
pub const BUSINESS_KEY_HEADER: &str = "saga-business-key";

/// Which saga a piece of work belongs to: created by the service that starts the saga, passed
/// along in message and request headers, and used by every participant to record its steps.
///
/// ```
/// use saga_tracker_sdk::SagaContext;
///
/// // The order service starts the saga and calls the stock service over HTTP…
/// let ctx = SagaContext::new("order-8812", "ORDER_CREATION").with_business_key("8812");
/// let mut headers = http::HeaderMap::new();
/// ctx.inject_http(&mut headers)?;
///
/// // …which picks it up from the request.
/// let received = SagaContext::from_http_headers(&headers)?.expect("context present");
/// assert_eq!(received, ctx);
/// # Ok::<(), saga_tracker_sdk::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SagaContext {
    saga_id: String,
    saga_type: String,
    business_key: Option<String>,
}

impl SagaContext {
    /// A context for `saga_id` of type `saga_type`. Not validated here (see
    /// [`SagaContext::validate`]); recording and injection validate it.
    pub fn new(saga_id: impl Into<String>, saga_type: impl Into<String>) -> Self {
        Self {
            saga_id: saga_id.into(),
            saga_type: saga_type.into(),
            business_key: None,
        }
    }

    /// Attach a business key (order number, …), written into every event recorded with this
    /// context and propagated with it.
    pub fn with_business_key(mut self, business_key: impl Into<String>) -> Self {
        self.business_key = Some(business_key.into());
        self
    }

    /// The saga id.
    pub fn saga_id(&self) -> &str {
        &self.saga_id
    }

    /// The saga type.
    pub fn saga_type(&self) -> &str {
        &self.saga_type
    }

    /// The business key, if any.
    pub fn business_key(&self) -> Option<&str> {
        self.business_key.as_deref()
    }

    /// Checks the three values with the contract's rules.
    pub fn validate(&self) -> Result<(), Error> {
        contract::validate_saga_id(&self.saga_id)?;
        contract::validate_saga_type(&self.saga_type)?;
        if let Some(k) = &self.business_key {
            contract::validate_business_key(k)?;
        }
        Ok(())
    }

    /// A [`Step`] of this saga (with its business key), for use with
    /// [`SagaTracker::record`](crate::SagaTracker::record).
    pub fn step(&self, step: impl Into<String>, status: StepStatus) -> Step {
        let s = Step::new(self.saga_id.clone(), self.saga_type.clone(), step, status);
        match &self.business_key {
            Some(k) => s.with_business_key(k.clone()),
            None => s,
        }
    }

    /// Adds the context headers to a Kafka message's headers (validating first, so a bad
    /// context is caught by the sender rather than every receiver).
    ///
    /// ```
    /// use rdkafka::message::OwnedHeaders;
    /// use saga_tracker_sdk::SagaContext;
    ///
    /// let ctx = SagaContext::new("order-8812", "ORDER_CREATION");
    /// let headers = ctx.inject_kafka(OwnedHeaders::new())?;
    /// assert_eq!(SagaContext::from_kafka_headers(&headers)?, Some(ctx));
    /// # Ok::<(), saga_tracker_sdk::Error>(())
    /// ```
    pub fn inject_kafka(&self, headers: OwnedHeaders) -> Result<OwnedHeaders, Error> {
        self.validate()?;
        let mut headers = headers
            .insert(Header {
                key: SAGA_ID_HEADER,
                value: Some(self.saga_id.as_str()),
            })
            .insert(Header {
                key: SAGA_TYPE_HEADER,
                value: Some(self.saga_type.as_str()),
            });
        if let Some(k) = &self.business_key {
            headers = headers.insert(Header {
                key: BUSINESS_KEY_HEADER,
                value: Some(k.as_str()),
            });
        }
        Ok(headers)
    }

    /// Reads the context from Kafka message headers ([`OwnedHeaders`] or the
    /// `BorrowedHeaders` of a consumed message). `Ok(None)` when there is none.
    pub fn from_kafka_headers<H: Headers + ?Sized>(headers: &H) -> Result<Option<Self>, Error> {
        let find = |name: &'static str| -> Result<Option<String>, Error> {
            let mut found: Option<String> = None;
            for i in 0..headers.count() {
                let Some(h) = headers.try_get(i) else {
                    continue;
                };
                if !h.key.eq_ignore_ascii_case(name) {
                    continue;
                }
                let value = h.value.ok_or_else(|| header_err(name, "has no value"))?;
                let value = std::str::from_utf8(value)
                    .map_err(|_| header_err(name, "is not valid UTF-8"))?;
                merge(name, &mut found, value)?;
            }
            Ok(found)
        };
        Self::assemble(
            find(SAGA_ID_HEADER)?,
            find(SAGA_TYPE_HEADER)?,
            find(BUSINESS_KEY_HEADER)?,
        )
    }

    /// Reads the context from a consumed Kafka message's headers. `Ok(None)` when the
    /// message has no headers or no context.
    pub fn from_kafka_message<M: Message>(message: &M) -> Result<Option<Self>, Error> {
        match message.headers() {
            Some(h) => Self::from_kafka_headers(h),
            None => Ok(None),
        }
    }

    /// Sets the context headers on an HTTP request or response (replacing earlier values).
    pub fn inject_http(&self, headers: &mut HeaderMap) -> Result<(), Error> {
        self.validate()?;
        let value = |name: &'static str, v: &str| {
            HeaderValue::from_bytes(v.as_bytes())
                .map_err(|_| header_err(name, "cannot be carried in an HTTP header"))
        };
        headers.insert(SAGA_ID_HEADER, value(SAGA_ID_HEADER, &self.saga_id)?);
        headers.insert(SAGA_TYPE_HEADER, value(SAGA_TYPE_HEADER, &self.saga_type)?);
        match &self.business_key {
            Some(k) => {
                headers.insert(BUSINESS_KEY_HEADER, value(BUSINESS_KEY_HEADER, k)?);
            }
            None => {
                headers.remove(BUSINESS_KEY_HEADER);
            }
        }
        Ok(())
    }

    /// Reads the context from HTTP headers. `Ok(None)` when there is none.
    pub fn from_http_headers(headers: &HeaderMap) -> Result<Option<Self>, Error> {
        let find = |name: &'static str| -> Result<Option<String>, Error> {
            let mut found: Option<String> = None;
            for v in headers.get_all(name) {
                let value = std::str::from_utf8(v.as_bytes())
                    .map_err(|_| header_err(name, "is not valid UTF-8"))?;
                merge(name, &mut found, value)?;
            }
            Ok(found)
        };
        Self::assemble(
            find(SAGA_ID_HEADER)?,
            find(SAGA_TYPE_HEADER)?,
            find(BUSINESS_KEY_HEADER)?,
        )
    }

    fn assemble(
        saga_id: Option<String>,
        saga_type: Option<String>,
        business_key: Option<String>,
    ) -> Result<Option<Self>, Error> {
        let (saga_id, saga_type) = match (saga_id, saga_type) {
            (None, None) if business_key.is_none() => return Ok(None),
            (None, _) => {
                return Err(header_err(
                    SAGA_ID_HEADER,
                    "is missing while other saga headers are present",
                ))
            }
            (Some(_), None) => {
                return Err(header_err(
                    SAGA_TYPE_HEADER,
                    "is missing while saga-id is present",
                ))
            }
            (Some(id), Some(ty)) => (id, ty),
        };
        contract::validate_saga_id(&saga_id).map_err(|e| header_err(SAGA_ID_HEADER, e.detail()))?;
        contract::validate_saga_type(&saga_type)
            .map_err(|e| header_err(SAGA_TYPE_HEADER, e.detail()))?;
        if let Some(k) = &business_key {
            contract::validate_business_key(k)
                .map_err(|e| header_err(BUSINESS_KEY_HEADER, e.detail()))?;
        }
        Ok(Some(Self {
            saga_id,
            saga_type,
            business_key,
        }))
    }
}

/// Records one occurrence of a header; repeats must agree, or the saga is ambiguous.
fn merge(name: &'static str, found: &mut Option<String>, value: &str) -> Result<(), Error> {
    let value = value.trim();
    match found {
        Some(prev) if prev != value => Err(header_err(
            name,
            "appears more than once with different values",
        )),
        Some(_) => Ok(()),
        None => {
            *found = Some(value.to_owned());
            Ok(())
        }
    }
}

fn header_err(header: &'static str, reason: impl Into<String>) -> Error {
    Error::Header {
        header,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderName;

    fn ctx() -> SagaContext {
        SagaContext::new("order-8812", "ORDER_CREATION").with_business_key("8812")
    }

    fn header_of(e: Error) -> &'static str {
        match e {
            Error::Header { header, .. } => header,
            other => panic!("expected a Header error, got {other:?}"),
        }
    }

    fn kafka(pairs: &[(&str, Option<&[u8]>)]) -> OwnedHeaders {
        pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
            h.insert(Header { key: k, value: *v })
        })
    }

    #[test]
    fn kafka_headers_round_trip() {
        let headers = ctx()
            .inject_kafka(OwnedHeaders::new().insert(Header {
                key: "other",
                value: Some("x"),
            }))
            .expect("valid");
        assert_eq!(headers.count(), 4);
        assert_eq!(
            SagaContext::from_kafka_headers(&headers).expect("ok"),
            Some(ctx())
        );
        let without_key = SagaContext::new("s-1", "T")
            .inject_kafka(OwnedHeaders::new())
            .expect("valid");
        let got = SagaContext::from_kafka_headers(&without_key)
            .expect("ok")
            .expect("some");
        assert_eq!(got.business_key(), None);
    }

    #[test]
    fn http_headers_round_trip_including_non_ascii_ids() {
        let mut h = HeaderMap::new();
        ctx().inject_http(&mut h).expect("valid");
        assert_eq!(h["saga-id"], "order-8812");
        assert_eq!(SagaContext::from_http_headers(&h).expect("ok"), Some(ctx()));
        let unicode = SagaContext::new("commande-été-42", "ORDER_CREATION");
        unicode.inject_http(&mut h).expect("valid");
        assert_eq!(
            SagaContext::from_http_headers(&h).expect("ok"),
            Some(unicode),
            "and the old business key is gone"
        );
    }

    #[test]
    fn no_headers_means_no_context() {
        assert_eq!(
            SagaContext::from_http_headers(&HeaderMap::new()).expect("ok"),
            None
        );
        assert_eq!(
            SagaContext::from_kafka_headers(&OwnedHeaders::new()).expect("ok"),
            None
        );
    }

    #[test]
    fn header_names_match_case_insensitively_on_kafka() {
        let h = kafka(&[("Saga-Id", Some(b"s-1")), ("SAGA-TYPE", Some(b"ORDER"))]);
        let got = SagaContext::from_kafka_headers(&h)
            .expect("ok")
            .expect("some");
        assert_eq!((got.saga_id(), got.saga_type()), ("s-1", "ORDER"));
    }

    #[test]
    fn bad_kafka_headers_are_errors_naming_the_header() {
        let cases: Vec<(OwnedHeaders, &str)> = vec![
            (kafka(&[("saga-type", Some(b"ORDER"))]), "saga-id"),
            (kafka(&[("saga-id", Some(b"s-1"))]), "saga-type"),
            (kafka(&[("saga-business-key", Some(b"k"))]), "saga-id"),
            (
                kafka(&[("saga-id", Some(&[0xff, 0xfe])), ("saga-type", Some(b"T"))]),
                "saga-id",
            ),
            (
                kafka(&[("saga-id", None), ("saga-type", Some(b"T"))]),
                "saga-id",
            ),
            (
                kafka(&[("saga-id", Some(b"")), ("saga-type", Some(b"T"))]),
                "saga-id",
            ),
            (
                kafka(&[("saga-id", Some(b"s")), ("saga-type", Some(b"lower"))]),
                "saga-type",
            ),
            (
                kafka(&[
                    ("saga-id", Some(b"a")),
                    ("saga-id", Some(b"b")),
                    ("saga-type", Some(b"T")),
                ]),
                "saga-id",
            ),
            (
                kafka(&[
                    ("saga-id", Some(b"s")),
                    ("saga-type", Some(b"T")),
                    ("saga-business-key", Some("x".repeat(200).as_bytes())),
                ]),
                "saga-business-key",
            ),
        ];
        for (headers, expected) in cases {
            let e = SagaContext::from_kafka_headers(&headers).expect_err(expected);
            assert_eq!(header_of(e), expected);
        }
        // The same value twice is harmless.
        let twice = kafka(&[
            ("saga-id", Some(b"a")),
            ("saga-id", Some(b"a")),
            ("saga-type", Some(b"T")),
        ]);
        assert!(SagaContext::from_kafka_headers(&twice)
            .expect("ok")
            .is_some());
    }

    #[test]
    fn bad_http_headers_are_errors_naming_the_header() {
        let mut h = HeaderMap::new();
        h.insert(
            HeaderName::from_static("saga-id"),
            HeaderValue::from_bytes(&[0xff]).expect("obs-text is allowed"),
        );
        h.insert(
            HeaderName::from_static("saga-type"),
            HeaderValue::from_static("T"),
        );
        assert_eq!(
            header_of(SagaContext::from_http_headers(&h).expect_err("not utf-8")),
            "saga-id"
        );
        h.insert(
            HeaderName::from_static("saga-id"),
            HeaderValue::from_static("a"),
        );
        h.append(
            HeaderName::from_static("saga-id"),
            HeaderValue::from_static("b"),
        );
        assert_eq!(
            header_of(SagaContext::from_http_headers(&h).expect_err("ambiguous")),
            "saga-id"
        );
    }

    #[test]
    fn injecting_an_invalid_context_fails_with_the_contract_reason() {
        let bad = SagaContext::new("s-1", "not upper");
        let e = bad.inject_kafka(OwnedHeaders::new()).expect_err("bad type");
        assert!(matches!(e, Error::Invalid(c) if c.field() == Some("sagaType")));
        let e = SagaContext::new("a\nb", "T")
            .inject_http(&mut HeaderMap::new())
            .expect_err("control char");
        assert!(matches!(e, Error::Invalid(c) if c.field() == Some("sagaId")));
    }

    proptest::proptest! {
        /// Whatever bytes arrive in the headers, extraction returns; a context it returns is
        /// valid and survives a round trip.
        #[test]
        fn extraction_never_panics_and_only_returns_valid_contexts(
            id in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160),
            ty in "[A-Za-z0-9_. -]{0,70}",
            key in proptest::option::of(".{0,140}"),
        ) {
            let mut pairs: Vec<(&str, Option<&[u8]>)> =
                vec![("saga-id", Some(&id)), ("saga-type", Some(ty.as_bytes()))];
            if let Some(k) = &key {
                pairs.push(("saga-business-key", Some(k.as_bytes())));
            }
            if let Ok(Some(ctx)) = SagaContext::from_kafka_headers(&kafka(&pairs)) {
                proptest::prop_assert!(ctx.validate().is_ok());
                let mut h = HeaderMap::new();
                ctx.inject_http(&mut h).expect("a valid context injects");
                proptest::prop_assert_eq!(
                    SagaContext::from_http_headers(&h).expect("round trip"),
                    Some(ctx)
                );
            }
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&id) {
                h.insert("saga-id", v);
            }
            if let Ok(v) = HeaderValue::from_str(&ty) {
                h.insert("saga-type", v);
            }
            let _ = SagaContext::from_http_headers(&h);
        }
    }

    #[test]
    fn steps_built_from_a_context_carry_its_ids() {
        let e = ctx()
            .step("STOCK_RESERVED", StepStatus::Started)
            .into_event("stock")
            .expect("valid");
        assert_eq!(e.saga_id, "order-8812");
        assert_eq!(e.saga_type, "ORDER_CREATION");
        assert_eq!(e.business_key.as_deref(), Some("8812"));
    }
}
