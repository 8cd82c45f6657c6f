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
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(args.timeout_secs.max(1)))
            .user_agent(concat!("saga-tracker-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base,
            key: args.api_key.clone(),
            http,
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
        let mut req = self.http.get(url.clone());
        if let Some(key) = &self.key {
            req = req.bearer_auth(key.expose_secret());
        }
        req.send()
            .await
            .with_context(|| format!("cannot reach the tracker at {}", self.base))
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

/// Passes a 2xx response through; turns anything else into an error with the problem
/// document's `title`/`detail` (or the body's start) and a hint for 401/403.
pub async fn ensure_ok(resp: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let url = resp.url().path().to_string();
    let body = resp.text().await.unwrap_or_default();
    let said = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let title = v.get("title").and_then(|t| t.as_str()).map(str::to_string);
            let detail = v.get("detail").and_then(|t| t.as_str()).map(str::to_string);
            match (title, detail) {
                (Some(t), Some(d)) => Some(format!("{t}: {d}")),
                (t, d) => t.or(d),
            }
        })
        .unwrap_or_else(|| body.chars().take(300).collect());
    let hint = match status.as_u16() {
        401 => " (pass an API key with --api-key or SAGA_TRACKER_API_KEY)",
        403 => " (this API key's role may not do that)",
        _ => "",
    };
    anyhow::bail!("the tracker answered {status} to {url}: {said}{hint}")
}
