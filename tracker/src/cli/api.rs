//! The REST client behind `sagas …` and `doctor`: a base URL, an optional API key, and
//! errors that say what the server answered (its problem+json `detail`) rather than a bare
//! status code.

use anyhow::Context as _;
use secrecy::{ExposeSecret as _, SecretString};

/// Where the tracker's API is. Not `TRACKER_*` variables: those are the server's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The tracker's base URL.
    #[arg(
        long = "url",
        env = "SAGA_TRACKER_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// An API key (a reader key suffices for reads) when access control is on.
    #[arg(
        long = "api-key",
        env = "SAGA_TRACKER_API_KEY",
        hide_env_values = true,
        global = true
    )]
    pub api_key: Option<SecretString>,
    /// Seconds to wait for each response.
    #[arg(long = "timeout", default_value_t = 30, global = true)]
    pub timeout_secs: u64,
}

/// A client for one tracker.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: reqwest::Url,
    key: Option<SecretString>,
    http: reqwest::Client,
    /// `--timeout`: the bound of each whole request but a streamed one.
    timeout: std::time::Duration,
}

impl ApiClient {
    pub fn new(args: &ApiArgs) -> anyhow::Result<Self> {
        let mut base = reqwest::Url::parse(&args.url)
            .with_context(|| format!("--url {:?} is not a URL", args.url))?;
        if !matches!(base.scheme(), "http" | "https") {
            anyhow::bail!("--url must be http:// or https://, not {:?}", args.url);
        }
        // `join` treats a base without a trailing slash as a file name and would drop its
        // last segment (e.g. a tracker behind a proxy under /tracker).
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        // No overall timeout on the client: an export streams for as long as it has rows.
        // Every ordinary request gets one (`get`); a stream fails only when the server goes
        // silent for that long (`read_timeout`).
        let timeout = std::time::Duration::from_secs(args.timeout_secs.max(1));
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .user_agent(concat!("saga-tracker-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base,
            key: args.api_key.clone(),
            http,
            timeout,
        })
    }

    /// The base URL, for messages.
    pub fn base(&self) -> &reqwest::Url {
        &self.base
    }

    /// `GET {base}/{path}` with the API key; `path` has no leading slash, e.g.
    /// `api/v1/sagas?status=FAILED`. Returns the response whatever its status.
    pub async fn get(&self, path: &str) -> anyhow::Result<reqwest::Response> {
        let url = self
            .base
            .join(path.trim_start_matches('/'))
            .with_context(|| format!("building a URL from {path:?}"))?;
        self.send(url, true).await
    }

    /// `{base}/{segments…}?{query}`: each segment percent-encoded as one path segment (a
    /// saga id with `/` or `#` stays one), the query form-encoded as the API decodes it (a
    /// `+` offset becomes `%2B`).
    pub fn url(
        &self,
        segments: &[&str],
        query: &[(String, String)],
    ) -> anyhow::Result<reqwest::Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| anyhow::anyhow!("--url {} cannot take a path", self.base))?
            .pop_if_empty()
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// `GET url` (from [`ApiClient::url`]) with the API key, bounded by `--timeout`.
    pub async fn get_url(&self, url: reqwest::Url) -> anyhow::Result<reqwest::Response> {
        self.send(url, true).await
    }

    /// `GET url` for a body that streams for as long as it has to (an export): only the
    /// connection and each read are bounded by `--timeout`.
    pub async fn get_stream(&self, url: reqwest::Url) -> anyhow::Result<reqwest::Response> {
        self.send(url, false).await
    }

    async fn send(&self, url: reqwest::Url, bounded: bool) -> anyhow::Result<reqwest::Response> {
        let mut req = self.http.get(url);
        if bounded {
            req = req.timeout(self.timeout);
        }
        if let Some(key) = &self.key {
            req = req.bearer_auth(key.expose_secret());
        }
        req.send()
            .await
            .with_context(|| format!("cannot reach the tracker at {}", self.base))
    }

    /// [`ApiClient::get_url`] that must answer 2xx with JSON.
    pub async fn get_url_json<T: serde::de::DeserializeOwned>(
        &self,
        url: reqwest::Url,
    ) -> anyhow::Result<T> {
        let path = url.path().to_owned();
        let resp = ensure_ok(self.get_url(url).await?).await?;
        resp.json()
            .await
            .with_context(|| format!("the tracker's answer to {path} is not the JSON expected"))
    }

    /// `GET` that must answer 2xx with JSON; anything else becomes an error carrying the
    /// server's own explanation.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let resp = ensure_ok(self.get(path).await?).await?;
        resp.json()
            .await
            .with_context(|| format!("the tracker's answer to {path} is not the JSON expected"))
    }
}

/// The tracker answered with an error status: what it said, in words. Callers that treat a
/// status specially (a 404 for an unknown saga) find it with `downcast_ref`.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: reqwest::StatusCode,
    /// The problem's `type` (e.g. `https://saga-tracker.dev/problems/saga-not-found`).
    pub problem_type: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// Passes a 2xx response through; turns anything else into an [`ApiFailure`] with the
/// problem document's `title`/`detail` (or the body's start), every `invalidParams` entry on
/// a line of its own (name: reason, as the server wrote it), and a hint for 401/403.
pub async fn ensure_ok(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let url = resp.url().path().to_string();
    let body = resp.text().await.unwrap_or_default();
    Err(failure(status, &url, &body).into())
}

fn failure(status: reqwest::StatusCode, url: &str, body: &str) -> ApiFailure {
    let doc = serde_json::from_str::<serde_json::Value>(body).ok();
    let text =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|t| t.as_str()).map(str::to_string);
    let said = doc
        .as_ref()
        .and_then(|v| match (text(v, "title"), text(v, "detail")) {
            (Some(t), Some(d)) => Some(format!("{t}: {d}")),
            (t, d) => t.or(d),
        })
        .unwrap_or_else(|| body.chars().take(300).collect());
    let params: Vec<String> = doc
        .as_ref()
        .and_then(|v| v.get("invalidParams"))
        .and_then(|v| v.as_array())
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    format!(
                        "\n  {}: {}",
                        text(p, "name").unwrap_or_default(),
                        text(p, "reason").unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let hint = match status.as_u16() {
        401 => " (pass an API key with --api-key or SAGA_TRACKER_API_KEY)",
        403 => " (this API key's role may not do that)",
        _ => "",
    };
    ApiFailure {
        status,
        problem_type: doc.as_ref().and_then(|v| text(v, "type")),
        message: format!(
            "the tracker answered {status} to {url}: {said}{hint}{}",
            params.concat()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_request_lists_every_parameter_the_server_named() {
        let body = r#"{"type":"https://saga-tracker.dev/problems/invalid-parameter",
            "title":"Invalid request parameter","status":400,
            "detail":"invalid parameter(s): limit, status",
            "invalidParams":[{"name":"limit","reason":"must be an integer between 1 and 500"},
                             {"name":"status","reason":"unknown status \"DONE\""}]}"#;
        let f = failure(reqwest::StatusCode::BAD_REQUEST, "/api/v1/sagas", body);
        assert_eq!(
            f.message,
            "the tracker answered 400 Bad Request to /api/v1/sagas: Invalid request parameter: \
             invalid parameter(s): limit, status\n  limit: must be an integer between 1 and \
             500\n  status: unknown status \"DONE\""
        );
        assert_eq!(
            f.problem_type.as_deref(),
            Some("https://saga-tracker.dev/problems/invalid-parameter")
        );
    }

    #[test]
    fn a_401_says_how_to_pass_a_key_and_a_non_json_body_is_quoted() {
        let f = failure(reqwest::StatusCode::UNAUTHORIZED, "/api/v1/sagas", "nope");
        assert!(f
            .message
            .ends_with("nope (pass an API key with --api-key or SAGA_TRACKER_API_KEY)"));
    }

    #[test]
    fn segments_are_encoded_one_by_one_and_queries_as_the_api_decodes_them() {
        let args = ApiArgs {
            url: "http://127.0.0.1:9/tracker".into(),
            api_key: None,
            timeout_secs: 1,
        };
        let c = ApiClient::new(&args).expect("a valid URL");
        let u = c
            .url(
                &["api", "v1", "sagas", "tenant/1 #2"],
                &[("startedAfter".into(), "2026-11-01T11:00:00+01:00".into())],
            )
            .expect("a URL");
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/tracker/api/v1/sagas/tenant%2F1%20%232?startedAfter=2026-11-01T11%3A00%3A00%2B01%3A00"
        );
    }
}
