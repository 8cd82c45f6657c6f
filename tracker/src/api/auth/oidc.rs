//! OpenID Connect access tokens: JWTs signed by the provider, verified against its JWKS.
//!
//! What a token must satisfy: a signature by a key of the JWKS, with an algorithm from
//! `auth.oidc.algorithms` (asymmetric only, see [`JwtAlgorithm`]) that also fits the key
//! (its `kty`, curve and, when given, `alg`); `exp` present and not past; `nbf`, when
//! present, not in the future (both with `leeway_secs`); `iss` equal to the issuer and `aud`
//! containing the audience. The role comes from `role_claim`.
//!
//! The JWKS is fetched on first use and cached. It is fetched again when it is older than
//! `jwks_refresh_secs`, and when a token names a `kid` the cache lacks (the provider rotated
//! its keys) — but never more often than `jwks_min_refresh_secs`, whatever the cause, so
//! tokens with made-up key ids cost the provider nothing. Refreshing happens on the request
//! that notices, not in a background task: an idle tracker does not poll the provider, and
//! there is no task to stop. A failed fetch keeps the keys already cached.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::config::{JwtAlgorithm, OidcSettings, Role};

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// From `name_claim` (else `sub`), made safe to log.
    pub name: String,
    /// `None` when the role claim matched neither list: authenticated, allowed nothing.
    pub role: Option<Role>,
}

/// Why a token was refused. Logged (the variant name only, never the token or its claims);
/// the client only learns that it was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("not a well-formed JWT")]
    Malformed,
    #[error("signature algorithm not allowed")]
    AlgorithmNotAllowed,
    #[error("no key of the JWKS fits the token's kid and algorithm")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
    #[error("not valid yet (nbf)")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("a required claim (exp, iss, aud) is missing")]
    MissingClaim,
}

/// What kind of public key a JWK holds, to match it with an algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

#[derive(Clone)]
struct CachedKey {
    kid: Option<String>,
    /// The JWK's own `alg`, when it names one: the key is then used for nothing else.
    alg: Option<Algorithm>,
    kind: KeyKind,
    key: DecodingKey,
}

impl CachedKey {
    fn fits(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        use Algorithm::*;
        matches!(
            (self.kind, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::P256, ES256)
                | (KeyKind::P384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }
}

#[derive(Default)]
struct KeySet {
    keys: Vec<CachedKey>,
    fetched_at: Option<Instant>,
}

impl KeySet {
    /// The key for `kid`; without a `kid`, the only key that fits `alg`, if exactly one does.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
        match kid {
            Some(kid) => fitting.find(|k| k.kid.as_deref() == Some(kid)),
            None => match (fitting.next(), fitting.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            },
        }
        .map(|k| k.key.clone())
    }
}

/// Verifies OIDC access tokens; holds the JWKS cache.
pub struct OidcVerifier {
    issuer: String,
    audience: String,
    jwks_url: String,
    role_claim: Vec<String>,
    operator_values: HashSet<String>,
    reader_values: HashSet<String>,
    name_claim: String,
    algorithms: Vec<Algorithm>,
    leeway_secs: u64,
    refresh_after: Duration,
    min_refresh: Duration,
    http: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// When the JWKS was last fetched (or tried). Held across a fetch, so concurrent
    /// requests that need one wait for it instead of each fetching.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for OidcVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcVerifier")
            .field("issuer", &self.issuer)
            .field("jwks_url", &self.jwks_url)
            .finish_non_exhaustive()
    }
}

/// The JWKS document, each key parsed on its own so that one key of a kind we do not
/// support (or an encryption key) does not hide the others.
#[derive(Deserialize)]
struct RawJwks {
    keys: Vec<Value>,
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
    }
}

/// A JWK's `alg` as a signature algorithm we support; `Err` for anything else (HMAC,
/// encryption algorithms), which disqualifies the key.
fn key_algorithm(a: &KeyAlgorithm) -> Result<Algorithm, ()> {
    Ok(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return Err(()),
    })
}

/// A signing key we can verify with, or `None` (symmetric, encryption-only, unsupported
/// curve, malformed).
fn cached_key(jwk: &Jwk) -> Option<CachedKey> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::P256,
            EllipticCurve::P384 => KeyKind::P384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        // `oct` keys are shared secrets: never a verification key here.
        _ => return None,
    };
    let alg = match &jwk.common.key_algorithm {
        None => None,
        Some(a) => Some(key_algorithm(a).ok()?),
    };
    Some(CachedKey {
        kid: jwk.common.key_id.clone(),
        alg,
        kind,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}

/// The value at a dotted path of the claims.
fn claim_at<'a>(claims: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(claims, |v, segment| v.get(segment))
}

/// A claim's values: an array of strings, or a string of space-separated values (the form
/// of `scope`).
fn claim_values(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => s.split_whitespace().collect(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// A claim value fit for a log field: printable ASCII from a small set, at most 128
/// characters, so a token's `sub` cannot forge log lines or fill them.
pub(super) fn loggable_name(raw: &str) -> String {
    raw.chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.@:|".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl OidcVerifier {
    pub fn new(settings: &OidcSettings) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.jwks_timeout_ms))
            .build()
            .context("building the HTTP client for the OIDC JWKS")?;
        Ok(Self {
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            jwks_url: settings.jwks_url.clone(),
            role_claim: settings.role_claim.split('.').map(str::to_owned).collect(),
            operator_values: settings.operator_values.iter().cloned().collect(),
            reader_values: settings.reader_values.iter().cloned().collect(),
            name_claim: settings.name_claim.clone(),
            algorithms: settings.algorithms.iter().copied().map(algorithm).collect(),
            leeway_secs: settings.leeway_secs,
            refresh_after: Duration::from_secs(settings.jwks_refresh_secs),
            min_refresh: Duration::from_secs(settings.jwks_min_refresh_secs),
            http,
            keys: RwLock::new(Arc::new(KeySet::default())),
            last_fetch: tokio::sync::Mutex::new(None),
        })
    }

    /// Fetches the JWKS now, so a misconfigured `jwks_url` shows in the start-up log rather
    /// than with the first request. Failure is not fatal: the provider may come up later.
    pub async fn warm_up(&self) {
        self.refresh().await;
    }

    /// Checks `token` and returns who it names.
    pub async fn verify(&self, token: &str) -> Result<Verified, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        // `decode_header` cannot even represent `alg: none`; HS* are never in the list.
        if !self.algorithms.contains(&header.alg) {
            return Err(Rejection::AlgorithmNotAllowed);
        }
        let key = self
            .key_for(header.kid.as_deref(), header.alg)
            .await
            .ok_or(Rejection::UnknownKey)?;
        let mut validation = Validation::new(header.alg);
        // Exactly the header's algorithm, which fits the key: jsonwebtoken refuses a list
        // mixing key families.
        validation.algorithms = vec![header.alg];
        validation.leeway = self.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| match e
            .kind()
        {
            ErrorKind::ExpiredSignature => Rejection::Expired,
            ErrorKind::ImmatureSignature => Rejection::NotYetValid,
            ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
            ErrorKind::InvalidAudience => Rejection::WrongAudience,
            ErrorKind::MissingRequiredClaim(_) => Rejection::MissingClaim,
            ErrorKind::InvalidAlgorithm => Rejection::AlgorithmNotAllowed,
            ErrorKind::InvalidSignature | ErrorKind::Crypto(_) => Rejection::BadSignature,
            _ => Rejection::Malformed,
        })?;
        let claims = data.claims;
        let values = claim_values(claim_at(&claims, &self.role_claim));
        let role = if values.iter().any(|v| self.operator_values.contains(*v)) {
            Some(Role::Operator)
        } else if values.iter().any(|v| self.reader_values.contains(*v)) {
            Some(Role::Reader)
        } else {
            None
        };
        let name = [self.name_claim.as_str(), "sub"]
            .iter()
            .find_map(|c| claims.get(*c).and_then(Value::as_str))
            .map_or_else(|| "unknown".to_owned(), loggable_name);
        Ok(Verified { name, role })
    }

    fn snapshot(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn key_for(&self, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
        let stale = self
            .snapshot()
            .fetched_at
            .is_none_or(|t| t.elapsed() >= self.refresh_after);
        if stale {
            self.refresh().await;
        }
        if let Some(key) = self.snapshot().find(kid, alg) {
            return Some(key);
        }
        // Perhaps the provider rotated its keys since the last fetch.
        self.refresh().await;
        self.snapshot().find(kid, alg)
    }

    /// Fetches the JWKS unless a fetch happened (or was tried) within `min_refresh`.
    async fn refresh(&self) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(set) => {
                tracing::info!(url = %self.jwks_url, keys = set.keys.len(), "OIDC signing keys (JWKS) fetched");
                let mut slot = match self.keys.write() {
                    Ok(k) => k,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *slot = Arc::new(set);
            }
            Err(e) => {
                tracing::warn!(url = %self.jwks_url, error = format!("{e:#}"), "fetching the OIDC signing keys (JWKS) failed; keeping the keys cached before");
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<KeySet> {
        let raw: RawJwks = self
            .http
            .get(&self.jwks_url)
            .send()
            .await
            .context("requesting the JWKS")?
            .error_for_status()
            .context("the JWKS endpoint answered with an error")?
            .json()
            .await
            .context("the JWKS is not a JSON key set")?;
        let keys: Vec<CachedKey> = raw
            .keys
            .into_iter()
            .filter_map(|v| serde_json::from_value::<Jwk>(v).ok())
            .filter_map(|jwk| cached_key(&jwk))
            .collect();
        Ok(KeySet {
            keys,
            fetched_at: Some(Instant::now()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles_come_from_a_dotted_path_holding_an_array_or_a_spaced_string() {
        let claims = json!({
            "realm_access": {"roles": ["offline_access", "operator"]},
            "scope": "openid reader",
            "n": 3,
        });
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            claim_values(claim_at(&claims, &path("realm_access.roles"))),
            ["offline_access", "operator"]
        );
        assert_eq!(
            claim_values(claim_at(&claims, &path("scope"))),
            ["openid", "reader"]
        );
        assert!(claim_values(claim_at(&claims, &path("n"))).is_empty());
        assert!(claim_values(claim_at(&claims, &path("realm_access.nope"))).is_empty());
    }

    #[test]
    fn names_from_tokens_cannot_forge_log_lines() {
        assert_eq!(loggable_name("alice@example.com"), "alice@example.com");
        assert_eq!(loggable_name("eve\nlevel=ERROR"), "eve_level_ERROR");
        assert_eq!(loggable_name(&"x".repeat(500)).len(), 128);
    }

    #[test]
    fn symmetric_and_encryption_keys_are_never_used_for_verification() {
        let oct: Jwk = serde_json::from_value(json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"}))
            .expect("an oct JWK parses");
        assert!(cached_key(&oct).is_none());
        let enc: Jwk = serde_json::from_value(json!({
            "kty": "RSA", "use": "enc", "n": "sXch", "e": "AQAB", "kid": "e"
        }))
        .expect("an RSA JWK parses");
        assert!(cached_key(&enc).is_none());
        let hs_alg: Jwk = serde_json::from_value(json!({
            "kty": "RSA", "alg": "HS256", "n": "sXch", "e": "AQAB", "kid": "x"
        }))
        .expect("parses");
        assert!(cached_key(&hs_alg).is_none());
    }
}
