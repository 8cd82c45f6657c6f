//! `/api/v1/whoami` (any caller) and the operator endpoints under `/api/v1/admin/`.
//!
//! `GET /api/v1/admin/config` shows the effective configuration — the merged defaults, file
//! and environment ([`crate::config::Settings::sources`]) — with every secret replaced by
//! [`REDACTED`]. What counts as a secret is decided by key name ([`is_secret_key`]) and, for
//! any string holding a URL, by position (the password of `user:password@host` and
//! `password=` query parameters), not by a list of today's secret fields: a secret setting
//! added later is hidden as long as its name says what it is, and a URL anywhere (the
//! database's, a librdkafka property) never shows its password.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::{Map, Value};

use super::auth::Caller;
use super::error::Problem;
use super::AppState;

/// What a secret is shown as.
pub const REDACTED: &str = "<redacted>";

/// Who the token in this request belongs to.
#[utoipa::path(
    get,
    path = "/api/v1/whoami",
    operation_id = "whoAmI",
    tag = "auth",
    responses(
        (status = 200, description = "The caller: its name, role and how it was recognised", body = Caller),
    )
)]
pub async fn whoami(caller: Option<Extension<Caller>>) -> Response {
    // `authorize` always leaves a caller; without one the request was not authorised.
    let caller = caller.map_or_else(Caller::anonymous, |Extension(c)| c);
    no_store(Json(caller).into_response())
}

/// The effective configuration, secrets redacted.
#[utoipa::path(
    get,
    path = "/api/v1/admin/config",
    operation_id = "getEffectiveConfig",
    tag = "admin",
    responses(
        (status = 200, description = "Every setting as loaded (defaults, file, environment), each \
            secret — passwords, the database URL's password, API key hashes, anything named like \
            a password, secret, token or private key — replaced by `<redacted>`",
            body = Object),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn config(State(state): State<AppState>) -> Response {
    no_store(Json(redacted(&state.settings.sources)).into_response())
}

/// A copy of `value` with every secret replaced by [`REDACTED`].
pub fn redacted(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let shown = if is_secret_key(k) && !v.is_null() {
                        Value::String(REDACTED.to_owned())
                    } else {
                        redacted(v)
                    };
                    (k.clone(), shown)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        Value::String(s) => Value::String(redact_url(s)),
        other => other.clone(),
    }
}

/// Whether a setting named `key` holds a secret. Keys are compared lower-cased with `.` and
/// `-` read as `_`, so librdkafka properties (`sasl.password`, `ssl.key.password`) match like
/// our own (`key_password`). A `…_file` or `…_location` key names a path, which is shown.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace(['.', '-'], "_");
    if k.ends_with("_file") || k.ends_with("_location") {
        return false;
    }
    const SECRET_WORDS: [&str; 10] = [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "hash",
        "private",
        "jaas",
        "key_pem",
        "oauthbearer_config",
    ];
    SECRET_WORDS.iter().any(|w| k.contains(w)) || k == "key" || k.ends_with("_key")
}

/// `s` with the password of a URL's `user:password@` and the value of any secret query
/// parameter (`?password=…`, as libpq accepts) redacted; anything that is not a URL is
/// returned as it is.
pub fn redact_url(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_owned();
    };
    let (scheme, rest) = s.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:{REDACTED}@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        None => tail.to_owned(),
        Some((path, query)) => {
            let (query, fragment) = match query.split_once('#') {
                Some((q, f)) => (q, Some(f)),
                None => (query, None),
            };
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_key(name) => format!("{name}={REDACTED}"),
                    _ => pair.to_owned(),
                })
                .collect();
            let mut t = format!("{path}?{}", query.join("&"));
            if let Some(f) = fragment {
                t.push('#');
                t.push_str(f);
            }
            t
        }
    };
    format!("{scheme}{authority}{tail}")
}

/// Answers about this caller or this instant's configuration: a cache must not replay them.
fn no_store(mut r: Response) -> Response {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::{Format, Serialized, Toml};
    use figment::Figment;
    use serde_json::json;

    #[test]
    fn a_url_keeps_everything_but_its_password() {
        assert_eq!(
            redact_url("postgres://tracker:s3cret@db:5432/saga?sslmode=require"),
            "postgres://tracker:<redacted>@db:5432/saga?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://tracker@db/saga?password=s3cret&application_name=t"),
            "postgres://tracker@db/saga?password=<redacted>&application_name=t"
        );
        // An `@` inside the password: the host is what follows the last one.
        assert_eq!(
            redact_url("postgres://u:p@ss@db/x"),
            "postgres://u:<redacted>@db/x"
        );
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
        assert_eq!(redact_url("127.0.0.1:9092"), "127.0.0.1:9092");
    }

    #[test]
    fn secret_names_are_recognised_in_every_spelling_and_paths_are_not_secrets() {
        for k in [
            "password",
            "key_password",
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "ssl.key.pem",
            "hash",
            "private_key",
            "api-token",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "password_file",
            "key_password_file",
            "key_file",
            "ssl.key.location",
            "url",
            "brokers",
            "username",
            "api_keys",
            "name",
            "role",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    /// Secrets in every place the configuration can hold them — a URL's password, a
    /// libpq `password=` parameter, librdkafka properties, API key hashes — set to
    /// recognisable values: none is in the view, and the settings around them are. (Typed
    /// secret fields such as `database.password` or `kafka.sasl.password` are hidden by their
    /// names, which the test above covers.)
    #[test]
    fn the_effective_configuration_shows_no_secret() {
        let fig = Figment::from(Toml::string(crate::config::DEFAULT_CONFIG))
            .merge(Serialized::default(
                "database.url",
                "postgres://tracker:db-url-secret@db:5432/saga?password=db-query-secret",
            ))
            .merge(Serialized::default(
                "kafka.properties",
                json!({
                    "sasl.password": "sasl-secret",
                    "ssl.key.password": "tls-key-secret",
                    "sasl.oauthbearer.client.secret": "prop-secret",
                    "sasl.username": "tracker-user",
                    "client.rack": "eu-1",
                }),
            ))
            .merge(Serialized::default("auth.enabled", true))
            .merge(Serialized::default(
                "auth.api_keys",
                json!([{"name": "grafana", "role": "reader",
                        "hash": format!("sha256:{}", "ab".repeat(32))}]),
            ));
        // Validation refuses secrets in raw librdkafka properties, so redaction is the second
        // line of defence there: check it on the merged sources directly.
        let refused = crate::config::Settings::from_figment(fig.clone())
            .expect_err("secrets in kafka.properties are refused");
        assert!(
            refused.to_string().contains("kafka.properties."),
            "{refused}"
        );
        let sources: serde_json::Value = fig.extract().expect("the sources merge");
        let view = redacted(&sources);
        let text = view.to_string();
        for secret in [
            "db-url-secret",
            "db-query-secret",
            "sasl-secret",
            "tls-key-secret",
            "prop-secret",
            &"ab".repeat(32),
        ] {
            assert!(!text.contains(secret), "{secret} shown: {text}");
        }
        assert_eq!(
            view["database"]["url"],
            "postgres://tracker:<redacted>@db:5432/saga?password=<redacted>"
        );
        assert_eq!(view["kafka"]["properties"]["sasl.username"], "tracker-user");
        assert_eq!(view["kafka"]["properties"]["client.rack"], "eu-1");
        assert_eq!(view["auth"]["api_keys"][0]["name"], "grafana");
        assert_eq!(view["auth"]["api_keys"][0]["hash"], REDACTED);
        assert_eq!(view["http"]["max_connections"], 1024);
    }
}
