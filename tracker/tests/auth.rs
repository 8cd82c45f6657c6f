//! API access control against the real router on `127.0.0.1:0` and a real PostgreSQL: API
//! keys, OpenID Connect JWTs signed by keys this test generates and serves from a JWKS
//! endpoint of its own, the roles, the public probes, the ops listener of the real
//! `Application`, and the log lines all of that writes.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use saga_tracker::api::auth::keys::{generate_token, hash_token};
use saga_tracker::api::Authenticator;
use saga_tracker::config::Settings;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use common::{settings_with, ServedApi, TestDb};

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

const ISSUER: &str = "https://idp.test/realms/ops";
const AUDIENCE: &str = "saga-tracker";

/// The tracker's router with `settings`, on a fresh migrated database.
struct Tracker {
    api: ServedApi,
    // Declared last so it is dropped after the server.
    _db: TestDb,
}

/// `[[auth.api_keys]]` entries for `(name, role, token)`.
fn api_keys(keys: &[(&str, &str, &str)]) -> Value {
    keys.iter()
        .map(|(name, role, token)| json!({"name": name, "role": role, "hash": hash_token(token)}))
        .collect()
}

async fn spawn(settings: Settings) -> Tracker {
    let (db, pool) = common::migrated_test_db("saga_auth").await;
    Tracker {
        api: common::serve_api(pool, settings, false).await,
        _db: db,
    }
}

impl Tracker {
    /// GET `path` with `token` (if any) as the bearer.
    async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        get(&self.api.http, &format!("{}{path}", self.api.base), token).await
    }

    /// Status and JSON body (`null` when not JSON).
    async fn get_json(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let r = self.get(path, token).await;
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

async fn get(http: &reqwest::Client, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = http.get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.expect("request is answered")
}

/// Asserts a 401 problem with the challenge RFC 6750 asks for.
fn assert_unauthenticated(r: &reqwest::Response, token_rejected: bool, what: &str) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let expected = if token_rejected {
        r#"Bearer realm="saga-tracker", error="invalid_token""#
    } else {
        r#"Bearer realm="saga-tracker""#
    };
    assert_eq!(challenge, expected, "{what}");
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{what}"
    );
}

async fn assert_refused_token(t: &Tracker, path: &str, token: &str, what: &str) {
    let r = t.get(path, Some(token)).await;
    assert_unauthenticated(&r, true, what);
    let body: Value = r.json().await.expect("problem body");
    assert_eq!(
        body["type"], "https://saga-tracker.dev/problems/unauthenticated",
        "{what}: {body}"
    );
}

// ---------------------------------------------------------------------------------------
// A tiny OpenID provider: keys, tokens, and a JWKS endpoint
// ---------------------------------------------------------------------------------------

/// An ECDSA P-256 key pair with its key id and JWK.
struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
    public_pem: String,
}

impl SigningKey {
    fn generate(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("P-256 key generation");
        let encoding =
            EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("PKCS#8 EC key");
        // The SEC 1 uncompressed point: 0x04, then x and y, 32 bytes each.
        let raw = pair.public_key_raw();
        assert_eq!((raw.len(), raw[0]), (65, 4), "uncompressed P-256 point");
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
        });
        Self {
            kid: kid.to_owned(),
            encoding,
            jwk,
            public_pem: pair.public_key_pem(),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signs")
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims that pass every check, with `roles` in `realm_access.roles`.
fn claims(sub: &str, roles: &[&str]) -> Value {
    json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": sub,
        "exp": now() + 300,
        "nbf": now() - 10,
        "iat": now() - 10,
        "realm_access": {"roles": roles},
    })
}

/// Serves a JWKS at `/jwks` and counts how often it is fetched.
struct Idp {
    jwks_url: String,
    jwks: Arc<Mutex<Value>>,
    fetches: Arc<AtomicUsize>,
}

impl Idp {
    async fn start(keys: &[&SigningKey]) -> Self {
        let jwks = Arc::new(Mutex::new(Value::Null));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (j, f) = (jwks.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (j, f) = (j.clone(), f.clone());
                async move {
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = j.lock().expect("not poisoned").clone();
                    axum::Json(body)
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let idp = Self {
            jwks_url: format!("http://{addr}/jwks"),
            jwks,
            fetches,
        };
        idp.publish(keys);
        idp
    }

    /// Replaces the published keys (a rotation).
    fn publish(&self, keys: &[&SigningKey]) {
        let set = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()});
        *self.jwks.lock().expect("not poisoned") = set;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// The settings of a tracker trusting this provider.
    fn overrides(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("auth.enabled", json!(true)),
            ("auth.oidc.enabled", json!(true)),
            ("auth.oidc.issuer", json!(ISSUER)),
            ("auth.oidc.audience", json!(AUDIENCE)),
            ("auth.oidc.jwks_url", json!(self.jwks_url)),
            ("auth.oidc.role_claim", json!("realm_access.roles")),
            ("auth.oidc.leeway_secs", json!(5)),
        ]
    }

    fn settings(&self, extra: &[(&'static str, Value)]) -> Settings {
        let mut all = self.overrides();
        all.extend(extra.iter().cloned());
        settings_with(&all)
    }
}

// ---------------------------------------------------------------------------------------
// API keys and roles
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_reader_key_reads_and_is_forbidden_the_admin_endpoint_an_operator_key_is_not() {
    let reader = generate_token();
    let operator = generate_token();
    let t = spawn(settings_with(&[
        ("auth.enabled", json!(true)),
        (
            "auth.api_keys",
            api_keys(&[
                ("grafana", "reader", &reader),
                ("oncall", "operator", &operator),
            ]),
        ),
    ]))
    .await;

    for path in [
        "/api/v1/sagas",
        "/api/v1/stats",
        "/api/v1/saga-types",
        "/openapi.json",
    ] {
        let (status, body) = t.get_json(path, Some(&reader)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let docs = t.get("/docs", Some(&reader)).await;
    assert_eq!(docs.status(), StatusCode::OK);

    let r = t.get("/api/v1/admin/config", Some(&reader)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let problem: Value = r.json().await.expect("problem body");
    assert_eq!(
        problem["type"],
        "https://saga-tracker.dev/problems/forbidden"
    );
    assert_eq!(problem["status"], 403);

    let (status, config) = t.get_json("/api/v1/admin/config", Some(&operator)).await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(config["auth"]["api_keys"][0]["name"], "grafana");
    assert_eq!(config["auth"]["api_keys"][0]["hash"], "<redacted>");
    let text = config.to_string();
    assert!(
        !text.contains(&hash_token(&reader)[7..]) && !text.contains(&hash_token(&operator)[7..]),
        "{text}"
    );

    let (_, me) = t.get_json("/api/v1/whoami", Some(&reader)).await;
    assert_eq!(
        me,
        json!({"name": "grafana", "role": "reader", "method": "api_key"})
    );
    let (_, me) = t.get_json("/api/v1/whoami", Some(&operator)).await;
    assert_eq!(
        me,
        json!({"name": "oncall", "role": "operator", "method": "api_key"})
    );
}

#[tokio::test]
async fn no_token_is_challenged_and_a_wrong_or_malformed_one_is_refused() {
    let reader = generate_token();
    let t = spawn(settings_with(&[
        ("auth.enabled", json!(true)),
        ("auth.api_keys", api_keys(&[("grafana", "reader", &reader)])),
    ]))
    .await;

    for path in ["/api/v1/sagas", "/api/v1/admin/config", "/nowhere"] {
        let r = t.get(path, None).await;
        assert_unauthenticated(&r, false, path);
    }
    // The API's description and its reference page hold no data: open, so the page can load
    // the document before anyone has a key.
    for path in ["/openapi.json", "/docs/", "/docs/openapi.json"] {
        let r = t.get(path, None).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // Another scheme offers no bearer token.
    let r = t
        .api
        .http
        .get(format!("{}/api/v1/sagas", t.api.base))
        .basic_auth("grafana", Some(&reader))
        .send()
        .await
        .expect("answered");
    assert_unauthenticated(&r, false, "basic auth");

    // The right key's neighbours: one character off, a prefix, a fresh key.
    let mut off_by_one = reader.clone();
    off_by_one.pop();
    off_by_one.push(if reader.ends_with('A') { 'B' } else { 'A' });
    for wrong in [
        off_by_one.as_str(),
        &reader[..reader.len() - 1],
        &generate_token(),
    ] {
        assert_refused_token(&t, "/api/v1/sagas", wrong, "a wrong key").await;
    }
    // With OIDC off, a JWT-shaped token is just an unknown key.
    assert_refused_token(
        &t,
        "/api/v1/sagas",
        "eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
        "a JWT",
    )
    .await;
    let r = t
        .api
        .http
        .get(format!("{}/api/v1/sagas", t.api.base))
        .header("authorization", "Bearer has space")
        .send()
        .await
        .expect("answered");
    assert_unauthenticated(&r, true, "a malformed bearer value");

    let (status, _) = t.get_json("/api/v1/sagas", Some(&reader)).await;
    assert_eq!(status, StatusCode::OK, "the right key still works");
}

#[tokio::test]
async fn the_probes_and_metrics_answer_without_a_token() {
    let t = spawn(settings_with(&[
        ("auth.enabled", json!(true)),
        (
            "auth.api_keys",
            api_keys(&[("grafana", "reader", &generate_token())]),
        ),
    ]))
    .await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = t.get(path, None).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    // A bad token does not spoil a probe either: probes do not look at it.
    let r = t.get("/healthz", Some("st_not-a-key")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_auth_every_caller_is_an_anonymous_operator() {
    let t = spawn(settings_with(&[])).await;
    let (status, me) = t.get_json("/api/v1/whoami", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        me,
        json!({"name": "anonymous", "role": "operator", "method": "anonymous"})
    );
    let (status, _) = t.get_json("/api/v1/admin/config", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = t.get_json("/api/v1/sagas", Some("st_ignored")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a token is ignored when auth is off"
    );
}

#[tokio::test]
async fn keys_in_the_api_keys_file_are_read_at_start_and_again_when_it_changes() {
    let dir = std::env::temp_dir().join(common::unique("saga-auth-keys"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("api-keys.toml");
    let first = generate_token();
    let second = generate_token();
    let inline = generate_token();
    let file = |name: &str, token: &str| {
        format!(
            "[[api_keys]]\nname = \"{name}\"\nrole = \"operator\"\nhash = \"{}\"\n",
            hash_token(token)
        )
    };
    std::fs::write(&path, file("from-file", &first)).expect("write keys");
    let t = spawn(settings_with(&[
        ("auth.enabled", json!(true)),
        ("auth.api_keys", api_keys(&[("inline", "reader", &inline)])),
        ("auth.api_keys_file", json!(path)),
        ("auth.api_keys_file_check_secs", json!(1)),
    ]))
    .await;

    let (status, me) = t.get_json("/api/v1/whoami", Some(&first)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["name"], "from-file");
    assert_eq!(me["role"], "operator");

    // Rotate: the file now holds only the second key (a longer file, so the size differs
    // even on a file system with coarse modification times).
    std::fs::write(&path, format!("# rotated\n{}", file("rotated", &second))).expect("rewrite");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = t.get_json("/api/v1/whoami", Some(&second)).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotated key was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_refused_token(&t, "/api/v1/whoami", &first, "the removed key").await;
    let (status, _) = t.get_json("/api/v1/sagas", Some(&inline)).await;
    assert_eq!(status, StatusCode::OK, "inline keys are unaffected");

    // A broken edit keeps the last good keys rather than locking everyone out.
    std::fs::write(&path, "[[api_keys]]\nname = \"broken\"\nthis is not toml").expect("break");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _) = t.get_json("/api/v1/whoami", Some(&second)).await;
    assert_eq!(status, StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_bad_api_keys_file_stops_start_up_naming_it() {
    let dir = std::env::temp_dir().join(common::unique("saga-auth-bad"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("api-keys.toml");
    std::fs::write(
        &path,
        "[[api_keys]]\nname = \"x\"\nrole = \"reader\"\nhash = \"sha256:1234\"\n",
    )
    .expect("write");
    let s = settings_with(&[
        ("auth.enabled", json!(true)),
        ("auth.api_keys_file", json!(path)),
    ]);
    let err = Authenticator::new(&s.auth)
        .await
        .expect_err("a malformed hash is refused");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("api_keys[0].hash") && msg.contains("api-keys.toml"),
        "{msg}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------
// OpenID Connect
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn an_oidc_token_is_accepted_with_the_role_its_claim_maps_to() {
    let key = SigningKey::generate("k1");
    let idp = Idp::start(&[&key]).await;
    let t = spawn(idp.settings(&[])).await;

    let operator = key.sign(&claims("alice", &["offline_access", "operator"]));
    let (status, me) = t.get_json("/api/v1/whoami", Some(&operator)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(
        me,
        json!({"name": "alice", "role": "operator", "method": "oidc"})
    );
    let (status, _) = t.get_json("/api/v1/admin/config", Some(&operator)).await;
    assert_eq!(status, StatusCode::OK);

    let reader = key.sign(&claims("bob", &["reader"]));
    let (status, _) = t.get_json("/api/v1/sagas", Some(&reader)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = t.get_json("/api/v1/admin/config", Some(&reader)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Valid, but its roles map to nothing: it may ask who it is, and nothing else.
    let nobody = key.sign(&claims("carol", &["offline_access"]));
    let (status, me) = t.get_json("/api/v1/whoami", Some(&nobody)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me, json!({"name": "carol", "role": null, "method": "oidc"}));
    let (status, problem) = t.get_json("/api/v1/sagas", Some(&nobody)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
}

#[tokio::test]
async fn oidc_tokens_failing_any_check_are_refused() {
    let key = SigningKey::generate("k1");
    let stranger = SigningKey::generate("k1");
    let idp = Idp::start(&[&key]).await;
    let t = spawn(idp.settings(&[])).await;
    let good = claims("alice", &["operator"]);
    let with = |field: &str, value: Value| {
        let mut c = good.clone();
        c[field] = value;
        c
    };
    let without = |field: &str| {
        let mut c = good.clone();
        c.as_object_mut().expect("claims object").remove(field);
        c
    };
    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT", "kid": "k1"})),
        b64(&good)
    );
    // Algorithm confusion: an HMAC "signed" with the public key, which anyone can read.
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("k1".to_owned());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &good,
        &EncodingKey::from_secret(key.public_pem.as_bytes()),
    )
    .expect("signs");

    let cases = [
        ("expired", key.sign(&with("exp", json!(now() - 120)))),
        ("not yet valid", key.sign(&with("nbf", json!(now() + 120)))),
        (
            "wrong audience",
            key.sign(&with("aud", json!("another-service"))),
        ),
        (
            "wrong issuer",
            key.sign(&with("iss", json!("https://evil.test/"))),
        ),
        ("no exp", key.sign(&without("exp"))),
        ("no aud", key.sign(&without("aud"))),
        ("alg none", unsigned),
        ("HS256 with the public key", confused),
        (
            "signed by another key under a known kid",
            stranger.sign(&good),
        ),
        (
            "garbage in JWT shape",
            "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln".to_owned(),
        ),
    ];
    for (what, token) in &cases {
        assert_refused_token(&t, "/api/v1/sagas", token, what).await;
    }
    let (status, _) = t.get_json("/api/v1/sagas", Some(&key.sign(&good))).await;
    assert_eq!(status, StatusCode::OK, "the untouched token passes");
}

#[tokio::test]
async fn after_a_key_rotation_the_new_key_is_fetched_and_the_old_one_refused() {
    let old = SigningKey::generate("2025-old");
    let new = SigningKey::generate("2026-new");
    let idp = Idp::start(&[&old]).await;
    let t = spawn(idp.settings(&[("auth.oidc.jwks_min_refresh_secs", json!(0))])).await;

    let (status, _) = t
        .get_json("/api/v1/sagas", Some(&old.sign(&claims("a", &["reader"]))))
        .await;
    assert_eq!(status, StatusCode::OK);
    let fetched = idp.fetches();

    idp.publish(&[&new]);
    let (status, _) = t
        .get_json("/api/v1/sagas", Some(&new.sign(&claims("a", &["reader"]))))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the unknown kid made the tracker re-fetch"
    );
    assert!(idp.fetches() > fetched);
    assert_refused_token(
        &t,
        "/api/v1/sagas",
        &old.sign(&claims("a", &["reader"])),
        "a token of the retired key",
    )
    .await;
}

#[tokio::test]
async fn tokens_naming_unknown_keys_cannot_make_the_tracker_hammer_the_provider() {
    let key = SigningKey::generate("k1");
    let idp = Idp::start(&[&key]).await;
    let t = spawn(idp.settings(&[("auth.oidc.jwks_min_refresh_secs", json!(300))])).await;
    let (status, _) = t
        .get_json("/api/v1/sagas", Some(&key.sign(&claims("a", &["reader"]))))
        .await;
    assert_eq!(status, StatusCode::OK);
    let before = idp.fetches();
    assert!(before >= 1, "the JWKS was fetched");
    for i in 0..50 {
        let impostor = SigningKey::generate(&format!("made-up-{i}"));
        assert_refused_token(
            &t,
            "/api/v1/sagas",
            &impostor.sign(&claims("a", &["operator"])),
            "an unknown kid",
        )
        .await;
    }
    assert_eq!(
        idp.fetches(),
        before,
        "50 unknown kids within jwks_min_refresh_secs fetched nothing more"
    );
}

// ---------------------------------------------------------------------------------------
// The real Application: the ops listener, and what reaches the log
// ---------------------------------------------------------------------------------------

/// The whole tracker (consumer included) on the mock Kafka cluster, with `extra` settings.
struct App {
    base: String,
    ops: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    db_name: String,
    _kafka: rdkafka::producer::FutureProducer,
}

async fn spawn_application(database_url: Option<String>, extra: &[(&str, Value)]) -> App {
    let (kafka, bootstrap) = common::mock_cluster(&[("saga.tracker", 1), ("saga.tracker.dlq", 1)]);
    let db_name = common::create_database("saga_auth_app").await;
    let url = database_url.unwrap_or_else(|| common::db_url(&db_name));
    let mut all = vec![
        ("kafka.brokers", json!(bootstrap)),
        ("kafka.group_id", json!(common::unique("g"))),
        ("database.url", json!(url.replace("{db}", &db_name))),
        ("http.addr", json!("127.0.0.1:0")),
    ];
    all.extend(extra.iter().cloned());
    let app = saga_tracker::app::Application::build(settings_with(&all))
        .await
        .expect("tracker builds");
    saga_tracker::store::migrate(app.pool())
        .await
        .expect("migrations apply");
    let base = format!("http://{}", app.local_addr().expect("bound"));
    let ops = format!("http://{}", app.ops_addr().expect("bound"));
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(app.run(shutdown.clone()));
    App {
        base,
        ops,
        shutdown,
        handle,
        db_name,
        _kafka: kafka,
    }
}

impl App {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("stops within 30 s")
            .expect("does not panic")
            .expect("exits cleanly");
        common::drop_database(&self.db_name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ops_addr_the_probes_and_metrics_move_to_their_own_port() {
    let reader = generate_token();
    let app = spawn_application(
        None,
        &[
            ("http.ops_addr", json!("127.0.0.1:0")),
            ("auth.enabled", json!(true)),
            ("auth.api_keys", api_keys(&[("grafana", "reader", &reader)])),
        ],
    )
    .await;
    assert_ne!(app.base, app.ops);
    let http = reqwest::Client::new();
    let at = |base: &str, path: &str| format!("{base}{path}");

    for path in ["/healthz", "/metrics"] {
        let r = get(&http, &at(&app.ops, path), None).await;
        assert_eq!(r.status(), StatusCode::OK, "ops {path}");
        let r = get(&http, &at(&app.base, path), Some(&reader)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "api {path}");
    }
    let r = get(&http, &at(&app.base, "/readyz"), None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = get(&http, &at(&app.ops, "/readyz"), None).await;
    assert!(
        matches!(r.status(), StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE),
        "readiness is answered on the ops port: {}",
        r.status()
    );
    // The ops port serves nothing else, with or without a token.
    let r = get(&http, &at(&app.ops, "/api/v1/sagas"), Some(&reader)).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = get(&http, &at(&app.base, "/api/v1/sagas"), Some(&reader)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = get(&http, &at(&app.base, "/api/v1/sagas"), None).await;
    assert_unauthenticated(&r, false, "the API port still needs a token");
    app.stop().await;
}

/// Everything the tracker logs in this test binary, once [`capture_logs`] has run.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    let sink = Capture(captured().clone());
    saga_tracker::telemetry::init_with_writer(
        &saga_tracker::config::LogSettings {
            format: "text".to_owned(),
            level: "debug".to_owned(),
        },
        move || sink.clone(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_password_reaches_the_log_but_the_callers_name_does() {
    capture_logs();
    let key = SigningKey::generate("k1");
    let idp = Idp::start(&[&key]).await;
    let reader = generate_token();
    let operator = generate_token();
    let wrong = generate_token();
    let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
    // The test server trusts local connections, so a password in the URL is sent nowhere
    // but still passes through everything that handles the URL.
    let admin = common::admin_url();
    let url = match admin.split_once("://") {
        Some((scheme, rest)) if !rest.split('/').next().unwrap_or("").contains('@') => {
            let server = rest.split('/').next().unwrap_or(rest);
            Some(format!("{scheme}://postgres:{password}@{server}/{{db}}"))
        }
        // TEST_DATABASE_URL has credentials of its own: keep them.
        _ => None,
    };
    let with_password = url.is_some();
    let mut extra = idp.overrides();
    extra.push((
        "auth.api_keys",
        api_keys(&[
            ("log-reader", "reader", &reader),
            ("log-operator", "operator", &operator),
        ]),
    ));
    let app = spawn_application(url, &extra).await;
    let http = reqwest::Client::new();
    let at = |path: &str| format!("{}{path}", app.base);

    let jwt = key.sign(&claims("log-oidc-user", &["reader"]));
    let expired = key.sign(&{
        let mut c = claims("log-expired-user", &["reader"]);
        c["exp"] = json!(now() - 3600);
        c
    });
    assert_eq!(
        get(&http, &at("/api/v1/sagas"), Some(&reader))
            .await
            .status(),
        200
    );
    assert_eq!(
        get(&http, &at("/api/v1/sagas"), Some(&jwt)).await.status(),
        200
    );
    assert_eq!(
        get(&http, &at("/api/v1/sagas"), Some(&wrong))
            .await
            .status(),
        401
    );
    assert_eq!(
        get(&http, &at("/api/v1/sagas"), Some(&expired))
            .await
            .status(),
        401
    );
    assert_eq!(
        get(&http, &at("/api/v1/admin/config"), Some(&reader))
            .await
            .status(),
        403
    );
    let r = get(&http, &at("/api/v1/admin/config"), Some(&operator)).await;
    assert_eq!(r.status(), 200);
    let config: Value = r.json().await.expect("config json");
    let shown_url = config["database"]["url"].as_str().unwrap_or_default();
    if with_password {
        assert!(shown_url.contains("postgres:<redacted>@"), "{shown_url}");
    }
    assert!(!shown_url.contains(&password), "{shown_url}");
    app.stop().await;

    let logs = String::from_utf8_lossy(&captured().lock().expect("not poisoned")).into_owned();
    assert!(
        logs.contains("request served"),
        "the access log is captured"
    );
    for (what, secret) in [
        ("the reader key", reader.as_str()),
        ("the operator key", &operator),
        ("the wrong key", &wrong),
        ("the JWT", &jwt),
        ("the expired JWT", &expired),
        ("the reader key's hash", &hash_token(&reader)[7..]),
        ("the database password", &password),
    ] {
        assert!(!logs.contains(secret), "{what} was logged");
    }
    // Not even the signature part of a JWT on its own.
    let signature = jwt.rsplit('.').next().unwrap_or_default();
    assert!(!logs.contains(signature));
    for name in ["log-reader", "log-operator", "log-oidc-user"] {
        assert!(
            logs.lines()
                .any(|l| l.contains(name) && l.contains("request served")),
            "no access log line names {name}"
        );
    }
    assert!(
        logs.lines()
            .any(|l| l.contains("request refused") && l.contains("expired")),
        "the refusal and its reason are logged"
    );
}

// ---------------------------------------------------------------------------------------
// The `api-key` command
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_api_key_command_prints_a_token_and_an_entry_the_tracker_accepts() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_saga-tracker"))
        .args(["api-key", "new", "--name", "cli-made", "--role", "operator"])
        .output()
        .await
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let token = stdout
        .lines()
        .find(|l| l.starts_with("st_"))
        .expect("a token line")
        .to_owned();
    let hash = stdout
        .lines()
        .find_map(|l| l.strip_prefix("hash = \""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("a hash line")
        .to_owned();
    assert_eq!(hash, hash_token(&token));
    assert!(stdout.contains("[[auth.api_keys]]") && stdout.contains("role = \"operator\""));

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_saga-tracker"))
        .args(["api-key", "hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all(format!("{token}\n").as_bytes())
            .await
            .expect("write token");
    }
    let out = child.wait_with_output().await.expect("exits");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hash);

    let t = spawn(settings_with(&[
        ("auth.enabled", json!(true)),
        (
            "auth.api_keys",
            json!([{"name": "cli-made", "role": "operator", "hash": hash}]),
        ),
    ]))
    .await;
    let (status, me) = t.get_json("/api/v1/whoami", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["name"], "cli-made");
}
