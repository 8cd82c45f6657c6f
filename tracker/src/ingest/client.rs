//! Building librdkafka clients from `[kafka]`, and telling a misconfigured connection (TLS
//! refused, untrusted certificate, wrong SASL credentials) from a broker that is merely down.
//!
//! Every client the tracker creates — the consumer, the DLQ producer, the metadata and admin
//! clients — starts from [`base_config`], so TLS and SASL apply to all of them. Secrets are
//! handed to librdkafka and to nothing else: `ClientConfig`'s `Debug` prints every property,
//! so a config built here must never be logged.

use std::sync::{Arc, Mutex};

use anyhow::Context;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use crate::config::KafkaSettings;

/// `bootstrap.servers`, the TLS/SASL properties, then the raw `kafka.properties`.
pub fn base_config(kafka: &KafkaSettings) -> anyhow::Result<ClientConfig> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &kafka.brokers);
    let security = kafka
        .security()
        .properties()
        .map_err(|e| anyhow::anyhow!("invalid configuration: `kafka.{}` {}", e.field, e.reason))?;
    for (key, value) in &security {
        cc.set(*key, value.expose());
    }
    for (k, v) in &kafka.properties {
        cc.set(k, v);
    }
    Ok(cc)
}

/// Which part of the connection set-up failed, from librdkafka's error callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The TLS handshake failed: untrusted or mismatched certificate, TLS not spoken.
    Tls(String),
    /// The broker refused the SASL credentials, or the mechanism.
    Authentication(String),
}

impl ConnectFailure {
    /// Classifies one librdkafka error; `None` for errors that are not about security
    /// (a broker down, a timeout) and may pass.
    pub fn classify(error: &KafkaError, reason: &str) -> Option<Self> {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::SSL) => Some(Self::Tls(reason.to_owned())),
            Some(RDKafkaErrorCode::Authentication)
            | Some(RDKafkaErrorCode::SaslAuthenticationFailed)
            | Some(RDKafkaErrorCode::UnsupportedSASLMechanism)
            | Some(RDKafkaErrorCode::IllegalSASLState) => {
                Some(Self::Authentication(reason.to_owned()))
            }
            _ => None,
        }
    }

    /// An operator-facing explanation that says which setting to look at.
    pub fn explain(&self, kafka: &KafkaSettings) -> String {
        let how = kafka.security().describe();
        match self {
            Self::Tls(reason) => format!(
                "TLS handshake with the Kafka brokers failed ({how}): {reason}. Check \
                 `kafka.tls.ca_file` (the CA that signed the brokers' certificates), that \
                 `kafka.brokers` names hosts the certificates carry, and that the brokers' \
                 listener speaks TLS"
            ),
            Self::Authentication(reason) => format!(
                "Kafka SASL authentication failed ({how}): {reason}. Check `kafka.sasl.username` \
                 and `kafka.sasl.password` / `kafka.sasl.password_file`, and that the broker \
                 accepts `kafka.sasl.mechanism`"
            ),
        }
    }
}

/// A client context that remembers the last TLS or authentication failure librdkafka
/// reported, so a failed metadata request can say *why* instead of "timed out".
#[derive(Debug, Clone, Default)]
pub struct CheckingContext {
    last: Arc<Mutex<Option<ConnectFailure>>>,
}

impl CheckingContext {
    /// The last security failure seen, if any.
    pub fn failure(&self) -> Option<ConnectFailure> {
        self.last.lock().ok().and_then(|g| g.clone())
    }
}

impl ClientContext for CheckingContext {
    fn error(&self, error: KafkaError, reason: &str) {
        match ConnectFailure::classify(&error, reason) {
            Some(failure) => {
                if let Ok(mut last) = self.last.lock() {
                    *last = Some(failure);
                }
            }
            None => tracing::warn!(error = %error, reason, "Kafka client error"),
        }
    }
}

/// The connection check runs on a producer: librdkafka hands a consumer's errors to `poll`
/// as bare codes, but a producer's to the context's `error` callback with the reason text.
impl rdkafka::producer::ProducerContext for CheckingContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _result: &rdkafka::message::DeliveryResult<'_>, _opaque: ()) {}
}

/// The admin client polls its own queue; nothing to add.
impl rdkafka::consumer::ConsumerContext for CheckingContext {}

/// Describes a metadata or admin failure with the security failure behind it, if any.
pub fn explain_failure(
    kafka: &KafkaSettings,
    context: &CheckingContext,
    error: KafkaError,
    what: &str,
) -> anyhow::Error {
    match context.failure() {
        Some(failure) => anyhow::anyhow!("{}", failure.explain(kafka)),
        None => anyhow::Error::new(error).context(format!(
            "{what} from `kafka.brokers` = {} ({})",
            kafka.brokers,
            kafka.security().describe()
        )),
    }
}

/// Creates a client of type `T` with a [`CheckingContext`].
pub fn create_checked<T>(kafka: &KafkaSettings, what: &str) -> anyhow::Result<(T, CheckingContext)>
where
    T: rdkafka::config::FromClientConfigAndContext<CheckingContext>,
{
    let context = CheckingContext::default();
    let client = base_config(kafka)?
        .create_with_context(context.clone())
        .with_context(|| format!("creating the Kafka {what}"))?;
    Ok((client, context))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_errors_are_told_apart_from_outages() {
        let tls = KafkaError::Global(RDKafkaErrorCode::SSL);
        assert!(matches!(
            ConnectFailure::classify(&tls, "certificate verify failed"),
            Some(ConnectFailure::Tls(_))
        ));
        let auth = KafkaError::Global(RDKafkaErrorCode::Authentication);
        assert!(matches!(
            ConnectFailure::classify(&auth, "invalid credentials"),
            Some(ConnectFailure::Authentication(_))
        ));
        let down = KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        assert_eq!(ConnectFailure::classify(&down, "Connection refused"), None);
    }
}
