//! A Confluent Schema Registry stand-in: no registry server is installable here, so the
//! Avro tests get this small HTTP server speaking the part of the registry's REST API the
//! tracker uses, exactly as the registry speaks it:
//!
//! - `GET /schemas/ids/{id}` → `200 {"schema": "<the .avsc as a JSON string>"}` (with
//!   `"schemaType"` only for non-Avro schemas, as the registry omits it for Avro), or
//!   `404 {"error_code": 40403, "message": "Schema 99 not found"}`;
//! - HTTP basic auth when credentials are set: anything else is `401 {"error_code": 401}`;
//! - and, on demand, `503` for every request, to play a registry that is down.
//!
//! It binds `127.0.0.1:0` (plain HTTP, or HTTPS with [`SchemaRegistryStandIn::start_tls`])
//! and counts what it served, so a test can tell "the tracker never
//! asked" from "the tracker asked and was refused".

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The registry's media type.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// One schema the stand-in serves.
#[derive(Debug, Clone)]
pub struct RegisteredSchema {
    /// The schema text (an `.avsc` for Avro).
    pub schema: String,
    /// `None` for Avro (the registry leaves it out); `PROTOBUF`, `JSON` otherwise.
    pub schema_type: Option<String>,
}

#[derive(Debug, Default)]
struct Shared {
    schemas: Mutex<BTreeMap<u32, RegisteredSchema>>,
    /// `Authorization` header value every request must carry, when set.
    expected_auth: Option<String>,
    unavailable: AtomicBool,
    served: AtomicU64,
    unavailable_answers: AtomicU64,
    unauthorized: AtomicU64,
    not_found: AtomicU64,
}

/// The running stand-in; stops when dropped.
#[derive(Debug)]
pub struct SchemaRegistryStandIn {
    addr: SocketAddr,
    scheme: &'static str,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl SchemaRegistryStandIn {
    /// Serves `schemas` on a free loopback port; `credentials` (user, password) turn on
    /// basic auth.
    pub async fn start(
        schemas: BTreeMap<u32, RegisteredSchema>,
        credentials: Option<(&str, &str)>,
    ) -> anyhow::Result<Self> {
        use base64::Engine as _;
        let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let shared = Arc::new(Shared {
            schemas: Mutex::new(schemas),
            expected_auth: credentials
                .map(|(u, p)| format!("Basic {}", encode(&format!("{u}:{p}")))),
            ..Shared::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the Schema Registry stand-in")?;
        let addr = listener.local_addr()?;
        let router = axum::Router::new()
            .route("/schemas/ids/{id}", axum::routing::get(schema_by_id))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Self {
            addr,
            scheme: "http",
            shared,
            task,
        })
    }

    /// As [`Self::start`], over HTTPS with the server certificate `cert` (e.g. from
    /// [`crate::pki::TestCa::server`] for `127.0.0.1`).
    pub async fn start_tls(
        schemas: BTreeMap<u32, RegisteredSchema>,
        credentials: Option<(&str, &str)>,
        cert: &crate::pki::CertFiles,
    ) -> anyhow::Result<Self> {
        // One process-wide provider; a second install (another test) is refused harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let plain = Self::start(schemas, credentials).await?;
        // Re-serve the same state over TLS on a fresh port; the plain listener stops.
        plain.task.abort();
        let shared = plain.shared.clone();
        let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert.cert, &cert.key)
            .await
            .context("loading the stand-in's certificate")?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .context("binding the HTTPS Schema Registry stand-in")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let router = axum::Router::new()
            .route("/schemas/ids/{id}", axum::routing::get(schema_by_id))
            .with_state(shared.clone());
        let server = axum_server::from_tcp_rustls(listener, tls);
        let task = tokio::spawn(async move {
            let _ = server.serve(router.into_make_service()).await;
        });
        Ok(Self {
            addr,
            scheme: "https",
            shared,
            task,
        })
    }

    /// `http(s)://127.0.0.1:<port>`, the value of `schema_registry.url`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// While on, every request is answered `503 Service Unavailable`.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.shared.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// Registers (or replaces) a schema under `id`.
    pub fn register(&self, id: u32, schema: RegisteredSchema) {
        if let Ok(mut schemas) = self.shared.schemas.lock() {
            schemas.insert(id, schema);
        }
    }

    /// Schemas served with `200`.
    pub fn served(&self) -> u64 {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// Requests answered `503` while unavailable.
    pub fn unavailable_answers(&self) -> u64 {
        self.shared.unavailable_answers.load(Ordering::SeqCst)
    }

    /// Requests refused for missing or wrong credentials.
    pub fn unauthorized(&self) -> u64 {
        self.shared.unauthorized.load(Ordering::SeqCst)
    }

    /// Requests for ids it does not have.
    pub fn not_found(&self) -> u64 {
        self.shared.not_found.load(Ordering::SeqCst)
    }
}

impl Drop for SchemaRegistryStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

async fn schema_by_id(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if shared.unavailable.load(Ordering::SeqCst) {
        shared.unavailable_answers.fetch_add(1, Ordering::SeqCst);
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error_code": 50003, "message": "Error while forwarding the request to the leader"}),
        );
    }
    if let Some(expected) = &shared.expected_auth {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            shared.unauthorized.fetch_add(1, Ordering::SeqCst);
            return answer(
                StatusCode::UNAUTHORIZED,
                json!({"error_code": 401, "message": "Unauthorized"}),
            );
        }
    }
    let found = id
        .parse::<u32>()
        .ok()
        .and_then(|id| shared.schemas.lock().ok()?.get(&id).cloned());
    match found {
        Some(s) => {
            shared.served.fetch_add(1, Ordering::SeqCst);
            let mut body = json!({"schema": s.schema});
            if let Some(t) = s.schema_type {
                body["schemaType"] = json!(t);
            }
            answer(StatusCode::OK, body)
        }
        None => {
            shared.not_found.fetch_add(1, Ordering::SeqCst);
            answer(
                StatusCode::NOT_FOUND,
                json!({"error_code": 40403, "message": format!("Schema {id} not found")}),
            )
        }
    }
}
