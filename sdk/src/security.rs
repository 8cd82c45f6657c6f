//! Transport security to the brokers: TLS (with optional client certificate for mTLS) and SASL
//! (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), as typed settings rather than raw librdkafka
//! properties.
//!
//! The SDK's producer and the tracker's consumer, DLQ producer and admin clients all build
//! their librdkafka properties here, so a setting means the same thing on both sides of the
//! topic. Secrets (the SASL password, the private key's passphrase) come inline — typically
//! from an environment variable — or from a file such as a mounted Kubernetes Secret; they are
//! held in [`Secret`], whose `Debug` prints `<redacted>`, and the files are read only when a
//! client is built, so a rotated file is picked up on the next start.
//!
//! This module reads configuration and files; it never connects to anything.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

/// A string that must never be printed: `Debug` and `Display` show `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for handing to the client library. Keep the borrow short.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// The SASL mechanisms librdkafka implements without extra system libraries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    /// Username and password sent as they are: only ever over TLS.
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge–response (RFC 5802/7677): the password never crosses the wire.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// As SCRAM-SHA-256 with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name Kafka and librdkafka use (`sasl.mechanism`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SaslMechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().replace('_', "-").as_str() {
            "PLAIN" => Ok(Self::Plain),
            "SCRAM-SHA-256" => Ok(Self::ScramSha256),
            "SCRAM-SHA-512" => Ok(Self::ScramSha512),
            _ => Err(format!(
                "expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got {s:?}"
            )),
        }
    }
}

/// TLS to the brokers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Encrypt and authenticate the broker connection. Default `false`.
    pub enabled: bool,
    /// PEM file with the CA certificate(s) the brokers' certificates must chain to. Unset:
    /// the platform's trust store (librdkafka's `probe` of the usual locations).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for brokers that require mutual TLS. Needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Passphrase of an encrypted `key_file`, inline (e.g. from an environment variable).
    pub key_password: Option<Secret>,
    /// …or read from this file (trailing newline ignored).
    pub key_password_file: Option<PathBuf>,
    /// Check that the broker's certificate names the host we connected to. Default `true`;
    /// turning it off accepts any certificate the CA signed, for any host.
    pub verify_hostname: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            key_password: None,
            key_password_file: None,
            verify_hostname: true,
        }
    }
}

/// SASL authentication to the brokers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaslConfig {
    /// Unset: no SASL.
    pub mechanism: Option<SaslMechanism>,
    /// The SASL username.
    pub username: Option<String>,
    /// The password inline (e.g. from an environment variable)…
    pub password: Option<Secret>,
    /// …or read from this file (trailing newline ignored).
    pub password_file: Option<PathBuf>,
}

/// TLS and SASL together: everything that decides `security.protocol`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSecurity {
    /// TLS settings.
    pub tls: TlsConfig,
    /// SASL settings.
    pub sasl: SaslConfig,
}

/// A security setting that cannot be used. `field` is relative to [`KafkaSecurity`]
/// (`sasl.password_file`); callers prefix it with their own path or variable name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {reason}")]
pub struct SecurityError {
    /// The offending setting, e.g. `tls.ca_file`.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> SecurityError {
    SecurityError {
        field,
        reason: reason.into(),
    }
}

/// Reads a secret file: a missing, unreadable or empty file is an error naming `field`, and
/// one trailing newline (as `echo` and most secret tools write) is not part of the secret.
/// Public so the tracker reads its other secret files (the database password) the same way.
pub fn read_secret_file(field: &'static str, path: &Path) -> Result<Secret, SecurityError> {
    let raw = std::fs::read_to_string(path)
        .map_err(|e| err(field, format!("cannot be read ({}): {e}", path.display())))?;
    let value = raw
        .strip_suffix("\r\n")
        .or_else(|| raw.strip_suffix('\n'))
        .unwrap_or(&raw);
    if value.is_empty() {
        return Err(err(field, format!("is empty ({})", path.display())));
    }
    Ok(Secret::new(value))
}

fn readable_file(field: &'static str, path: &Path) -> Result<(), SecurityError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| err(field, format!("cannot be read ({}): {e}", path.display())))
}

impl KafkaSecurity {
    /// The librdkafka `security.protocol` these settings select.
    pub fn protocol(&self) -> &'static str {
        match (self.tls.enabled, self.sasl.mechanism.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }

    /// Checks the settings and that every file they name can be read. Secret files are read
    /// (and discarded) so a wrong path fails at start-up, not at the first reconnect.
    pub fn validate(&self) -> Result<(), SecurityError> {
        self.properties().map(drop)
    }

    /// The librdkafka properties, secrets included: hand them to `ClientConfig::set` and do
    /// not log them. Plaintext without SASL gives only `security.protocol`.
    pub fn properties(&self) -> Result<Vec<(&'static str, Secret)>, SecurityError> {
        let mut props = vec![("security.protocol", Secret::new(self.protocol()))];
        let tls = &self.tls;
        if tls.enabled {
            match &tls.ca_file {
                Some(path) => {
                    readable_file("tls.ca_file", path)?;
                    props.push(("ssl.ca.location", Secret::new(path.display().to_string())));
                }
                // A vendored OpenSSL knows no system paths of its own; `probe` makes librdkafka
                // look in the usual places (/etc/ssl/certs/ca-certificates.crt, …).
                None => props.push(("ssl.ca.location", Secret::new("probe"))),
            }
            match (&tls.cert_file, &tls.key_file) {
                (Some(cert), Some(key)) => {
                    readable_file("tls.cert_file", cert)?;
                    readable_file("tls.key_file", key)?;
                    props.push((
                        "ssl.certificate.location",
                        Secret::new(cert.display().to_string()),
                    ));
                    props.push(("ssl.key.location", Secret::new(key.display().to_string())));
                }
                (Some(_), None) => {
                    return Err(err("tls.key_file", "is required with `tls.cert_file`"))
                }
                (None, Some(_)) => {
                    return Err(err("tls.cert_file", "is required with `tls.key_file`"))
                }
                (None, None) => {}
            }
            let key_password = match (&tls.key_password, &tls.key_password_file) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        "tls.key_password_file",
                        "cannot be set together with `tls.key_password`",
                    ))
                }
                (Some(p), None) => Some(p.clone()),
                (None, Some(path)) => Some(read_secret_file("tls.key_password_file", path)?),
                (None, None) => None,
            };
            if let Some(p) = key_password {
                if tls.key_file.is_none() {
                    return Err(err("tls.key_password", "is set but `tls.key_file` is not"));
                }
                props.push(("ssl.key.password", p));
            }
            let algorithm = if tls.verify_hostname { "https" } else { "none" };
            props.push((
                "ssl.endpoint.identification.algorithm",
                Secret::new(algorithm),
            ));
        } else if tls.ca_file.is_some() || tls.cert_file.is_some() || tls.key_file.is_some() {
            // A CA file with TLS off is almost certainly a forgotten `enabled = true`; silently
            // talking plaintext would be the worst reading of it.
            return Err(err(
                "tls.enabled",
                "is false but TLS files are configured; set it to true (or remove the files)",
            ));
        }
        let sasl = &self.sasl;
        if let Some(mechanism) = sasl.mechanism {
            let username = sasl
                .username
                .as_deref()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| err("sasl.username", format!("is required with {mechanism}")))?;
            let password = match (&sasl.password, &sasl.password_file) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        "sasl.password_file",
                        "cannot be set together with `sasl.password`",
                    ))
                }
                (Some(p), None) if !p.expose().is_empty() => p.clone(),
                (None, Some(path)) => read_secret_file("sasl.password_file", path)?,
                _ => {
                    return Err(err(
                        "sasl.password",
                        format!("(or `sasl.password_file`) is required with {mechanism}"),
                    ))
                }
            };
            props.push(("sasl.mechanism", Secret::new(mechanism.as_str())));
            props.push(("sasl.username", Secret::new(username)));
            props.push(("sasl.password", password));
        } else if sasl.username.is_some() || sasl.password.is_some() || sasl.password_file.is_some()
        {
            return Err(err(
                "sasl.mechanism",
                "is not set but SASL credentials are; choose PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            ));
        }
        Ok(props)
    }

    /// A one-line description for start-up logs and error messages, without secrets:
    /// `sasl_ssl, SCRAM-SHA-512 as "tracker", CA /etc/kafka/ca.pem`.
    pub fn describe(&self) -> String {
        let mut out = self.protocol().to_owned();
        if let Some(m) = self.sasl.mechanism {
            out.push_str(&format!(
                ", {m} as {:?}",
                self.sasl.username.as_deref().unwrap_or("")
            ));
        }
        if self.tls.enabled {
            match &self.tls.ca_file {
                Some(ca) => out.push_str(&format!(", CA {}", ca.display())),
                None => out.push_str(", system CAs"),
            }
            if self.tls.cert_file.is_some() {
                out.push_str(", client certificate");
            }
            if !self.tls.verify_hostname {
                out.push_str(", hostname NOT verified");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(s: &KafkaSecurity) -> Vec<(&'static str, String)> {
        s.properties()
            .expect("valid")
            .into_iter()
            .map(|(k, v)| (k, v.expose().to_owned()))
            .collect()
    }

    #[test]
    fn plaintext_is_the_default() {
        assert_eq!(
            props(&KafkaSecurity::default()),
            vec![("security.protocol", "plaintext".to_owned())]
        );
    }

    #[test]
    fn sasl_over_tls_sets_every_property() {
        let dir = std::env::temp_dir().join(format!("sdk-sec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "ca").expect("write");
        let pw = dir.join("password");
        std::fs::write(&pw, "s3cret\n").expect("write");
        let s = KafkaSecurity {
            tls: TlsConfig {
                enabled: true,
                ca_file: Some(ca.clone()),
                ..TlsConfig::default()
            },
            sasl: SaslConfig {
                mechanism: Some(SaslMechanism::ScramSha512),
                username: Some("tracker".into()),
                password_file: Some(pw),
                ..SaslConfig::default()
            },
        };
        let p = props(&s);
        let get = |k: &str| p.iter().find(|(key, _)| *key == k).map(|(_, v)| v.as_str());
        assert_eq!(get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(get("ssl.ca.location"), ca.to_str());
        assert_eq!(get("ssl.endpoint.identification.algorithm"), Some("https"));
        assert_eq!(get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(get("sasl.username"), Some("tracker"));
        // The trailing newline of the file is not part of the password.
        assert_eq!(get("sasl.password"), Some("s3cret"));
        let shown = format!("{s:?} {}", s.describe());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("SCRAM-SHA-512"), "{shown}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn mistakes_name_their_field() {
        let cases: Vec<(KafkaSecurity, &str)> = vec![
            (
                KafkaSecurity {
                    sasl: SaslConfig {
                        mechanism: Some(SaslMechanism::Plain),
                        password: Some(Secret::new("x")),
                        ..SaslConfig::default()
                    },
                    ..KafkaSecurity::default()
                },
                "sasl.username",
            ),
            (
                KafkaSecurity {
                    sasl: SaslConfig {
                        mechanism: Some(SaslMechanism::Plain),
                        username: Some("u".into()),
                        ..SaslConfig::default()
                    },
                    ..KafkaSecurity::default()
                },
                "sasl.password",
            ),
            (
                KafkaSecurity {
                    sasl: SaslConfig {
                        username: Some("u".into()),
                        ..SaslConfig::default()
                    },
                    ..KafkaSecurity::default()
                },
                "sasl.mechanism",
            ),
            (
                KafkaSecurity {
                    tls: TlsConfig {
                        enabled: true,
                        ca_file: Some("/nonexistent/ca.pem".into()),
                        ..TlsConfig::default()
                    },
                    ..KafkaSecurity::default()
                },
                "tls.ca_file",
            ),
            (
                KafkaSecurity {
                    tls: TlsConfig {
                        ca_file: Some("/nonexistent/ca.pem".into()),
                        ..TlsConfig::default()
                    },
                    ..KafkaSecurity::default()
                },
                "tls.enabled",
            ),
            (
                KafkaSecurity {
                    tls: TlsConfig {
                        enabled: true,
                        cert_file: Some("/etc/hostname".into()),
                        ..TlsConfig::default()
                    },
                    ..KafkaSecurity::default()
                },
                "tls.key_file",
            ),
        ];
        for (s, field) in cases {
            let e = s.validate().expect_err(field);
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn mechanism_names_parse_loosely() {
        assert_eq!("scram_sha_256".parse(), Ok(SaslMechanism::ScramSha256));
        assert_eq!("PLAIN".parse(), Ok(SaslMechanism::Plain));
        assert!("GSSAPI".parse::<SaslMechanism>().is_err());
    }
}
