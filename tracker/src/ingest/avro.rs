//! Confluent-framed Avro events: the earlier design's wire format, accepted on the same topic
//! as JSON.
//!
//! Its emitters send `SagaTracker` records through Confluent's serializer: magic byte `0`, the
//! writer schema's id as 4 bytes big-endian, then the Avro binary of the record. JSON never
//! starts with byte 0, so the format is told apart per message. This module owns that frame,
//! finding the writer schema by id (local `.avsc` files first, then a Confluent-compatible
//! Schema Registry; usable schemas cached by id, since an id never changes its schema),
//! checking that the writer schema is the `SagaTracker` record or a compatible evolution of
//! it (Avro schema resolution against [`READER_SCHEMA`] succeeds), and decoding. The decoded
//! record becomes the legacy JSON object and goes through the contract's legacy mapping
//! ([`contract::decode_legacy`]), so Avro and legacy JSON events map identically.
//!
//! It must not decide what happens to a message: an answer about the *message* (unknown id,
//! wrong schema, undecodable bytes) is a [`ContractError`] the consumer dead-letters; a
//! registry that cannot answer is an `Err` from [`AvroDecoder::writer_schema`] the consumer
//! retries, never a dead letter.

use std::collections::{BTreeMap, HashMap};
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use chrono::{DateTime, Utc};
use saga_tracker_sdk::contract::{self, AvroRejection, ContractError, SagaEvent};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config::SchemaRegistrySettings;

/// The first byte of a Confluent-framed message.
pub const MAGIC_BYTE: u8 = 0;
/// Magic byte plus the 4-byte schema id.
pub const HEADER_LEN: usize = 5;
/// Full name of the record every writer schema must resolve to.
pub const RECORD_NAME: &str = "com.groom.ecommerce.saga.event.avro.SagaTracker";
/// The `SagaTracker` record as the earlier design defined it: the reader schema writer
/// schemas are resolved against. Also shipped for operators who map local schema files.
pub const READER_SCHEMA: &str = include_str!("../../avro/SagaTracker.avsc");

/// The schema id of a Confluent-framed payload, or `None` when the payload is not framed
/// (JSON, or anything else the JSON contract will judge).
pub fn framed_schema_id(payload: &[u8]) -> Option<Result<u32, ContractError>> {
    if payload.first() != Some(&MAGIC_BYTE) {
        return None;
    }
    Some(match payload.get(1..HEADER_LEN) {
        Some(&[a, b, c, d]) => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(ContractError::avro(
            AvroRejection::Malformed,
            format!(
                "message starts with the Avro magic byte 0 but is {} bytes, shorter than the \
                 {HEADER_LEN}-byte header (magic byte and schema id)",
                payload.len()
            ),
        )),
    })
}

/// What is known about one schema id.
#[derive(Debug, Clone)]
pub enum WriterSchema {
    /// A `SagaTracker` record (or a compatible evolution): messages written with it decode.
    Usable(Arc<Schema>),
    /// A schema that is not `SagaTracker`, with the reason (cached: ids never change).
    Mismatch(Arc<str>),
    /// Neither a local file nor the registry knows this id (not cached: it may be
    /// registered later, or the registry may be replaced).
    Unknown,
}

/// Verdicts on the schema ids of one batch, looked up before the batch is decoded.
pub type BatchSchemas = HashMap<u32, WriterSchema>;

/// Finds writer schemas and decodes framed payloads.
pub struct AvroDecoder {
    reader: Schema,
    /// From `schema_registry.schemas`, checked at start-up.
    local: HashMap<u32, WriterSchema>,
    /// Registry answers that cannot change (usable or mismatched schemas), by id.
    cache: Mutex<HashMap<u32, WriterSchema>>,
    registry: Option<Registry>,
}

impl std::fmt::Debug for AvroDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroDecoder")
            .field("local_ids", &self.local.keys().collect::<Vec<_>>())
            .field("registry", &self.registry.as_ref().map(|r| r.base.as_str()))
            .finish_non_exhaustive()
    }
}

impl AvroDecoder {
    /// Loads the local schema files and builds the registry client. A local file that does
    /// not parse or is not a `SagaTracker` record is a configuration error, named by key.
    pub fn new(settings: &SchemaRegistrySettings) -> anyhow::Result<Self> {
        // Every length in a payload is bounded by the payload, itself at most 64 KiB: refuse
        // to allocate more, whatever garbage says (the crate's default is 512 MiB).
        apache_avro::util::max_allocation_bytes(contract::MAX_EVENT_BYTES);
        let reader = reader_schema();
        let mut local = HashMap::new();
        for (id, path) in settings.local_schemas()? {
            let key = format!("schema_registry.schemas.{id}");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "invalid configuration: `{key}` ({}) cannot be read",
                    path.display()
                )
            })?;
            match judge(&reader, &text) {
                Ok(schema) => {
                    local.insert(id, WriterSchema::Usable(schema));
                }
                Err(why) => bail!("invalid configuration: `{key}` ({}) {why}", path.display()),
            }
        }
        let registry = if settings.url.trim().is_empty() {
            None
        } else {
            Some(Registry::new(settings)?)
        };
        Ok(Self {
            reader,
            local,
            cache: Mutex::new(HashMap::new()),
            registry,
        })
    }

    /// Whether a registry is configured (else unknown ids are dead-lettered at once).
    pub fn has_registry(&self) -> bool {
        self.registry.is_some()
    }

    /// The ids of `payloads` that are framed, each once, in first-seen order.
    pub fn framed_ids<'a>(payloads: impl IntoIterator<Item = &'a [u8]>) -> Vec<u32> {
        let mut seen = BTreeMap::new();
        let mut ids = Vec::new();
        for p in payloads {
            if let Some(Ok(id)) = framed_schema_id(p) {
                if seen.insert(id, ()).is_none() {
                    ids.push(id);
                }
            }
        }
        ids
    }

    /// What schema `id` is: from the local files, the cache, or the registry. `Err` only when
    /// the registry could not answer (unreachable, timeout, 5xx, refused credentials): the
    /// caller retries, since the message is not at fault.
    pub async fn writer_schema(&self, id: u32) -> anyhow::Result<(WriterSchema, Source)> {
        if let Some(known) = self.local.get(&id) {
            return Ok((known.clone(), Source::Local));
        }
        if let Some(known) = self.cache.lock().ok().and_then(|c| c.get(&id).cloned()) {
            return Ok((known, Source::Cache));
        }
        let Some(registry) = &self.registry else {
            return Ok((WriterSchema::Unknown, Source::None));
        };
        let verdict = match registry.fetch(id).await? {
            Fetched::NotFound => WriterSchema::Unknown,
            Fetched::NotAvro(kind) => {
                WriterSchema::Mismatch(format!("is a {kind} schema, not Avro").into())
            }
            Fetched::Avro(text) => match judge(&self.reader, &text) {
                Ok(schema) => WriterSchema::Usable(schema),
                Err(why) => WriterSchema::Mismatch(why),
            },
        };
        if !matches!(verdict, WriterSchema::Unknown) {
            if let Ok(mut cache) = self.cache.lock() {
                cache.insert(id, verdict.clone());
            }
        }
        Ok((verdict, Source::Registry))
    }

    /// Decodes one framed payload with the verdicts looked up for its batch.
    pub fn decode(
        &self,
        payload: &[u8],
        schemas: &BatchSchemas,
        now: DateTime<Utc>,
    ) -> Result<SagaEvent, ContractError> {
        let id = match framed_schema_id(payload) {
            Some(id) => id?,
            None => {
                return Err(ContractError::avro(
                    AvroRejection::Malformed,
                    "message is not Confluent-framed (no magic byte 0)",
                ))
            }
        };
        if payload.len() > contract::MAX_EVENT_BYTES {
            // The same limit, and the same reason, as for JSON.
            return contract::decode(payload, now);
        }
        let writer = match schemas.get(&id) {
            Some(WriterSchema::Usable(schema)) => schema,
            Some(WriterSchema::Mismatch(why)) => {
                return Err(ContractError::avro(
                    AvroRejection::SchemaMismatch,
                    format!("schema id {id} {why}"),
                ))
            }
            Some(WriterSchema::Unknown) | None => {
                let looked = if self.has_registry() {
                    "in `schema_registry.schemas` nor in the Schema Registry"
                } else {
                    "in `schema_registry.schemas` (and no `schema_registry.url` is set)"
                };
                return Err(ContractError::avro(
                    AvroRejection::UnknownSchema,
                    format!("schema id {id} is found neither {looked}"),
                ));
            }
        };
        let body = &payload[HEADER_LEN..];
        let mut cursor = Cursor::new(body);
        let malformed = |detail: String| {
            ContractError::avro(
                AvroRejection::Malformed,
                format!("the Avro body does not decode with schema id {id}: {detail}"),
            )
        };
        let value = apache_avro::from_avro_datum(writer, &mut cursor, Some(&self.reader))
            .map_err(|e| malformed(e.to_string()))?;
        let read = usize::try_from(cursor.position()).unwrap_or(usize::MAX);
        if read != body.len() {
            return Err(malformed(format!(
                "{} bytes follow the record",
                body.len().saturating_sub(read)
            )));
        }
        let json = Value::try_from(value).map_err(|e| malformed(e.to_string()))?;
        let Value::Object(obj) = json else {
            return Err(malformed("the value is not a record".into()));
        };
        contract::decode_legacy(&obj, now)
    }
}

/// Where [`AvroDecoder::writer_schema`] found its answer (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Local,
    Cache,
    Registry,
    /// No local file and no registry.
    None,
}

/// The built-in reader schema.
fn reader_schema() -> Schema {
    // A test parses the same text, so this cannot fail in a build that passed its tests.
    Schema::parse_str(READER_SCHEMA).expect("tracker/avro/SagaTracker.avsc is a valid schema")
}

/// Whether writer schema `text` can be read as `SagaTracker`: the schema, or why not.
fn judge(reader: &Schema, text: &str) -> Result<Arc<Schema>, Arc<str>> {
    let writer = Schema::parse_str(text)
        .map_err(|e| Arc::<str>::from(format!("is not a valid Avro schema: {e}")))?;
    let Schema::Record(record) = &writer else {
        return Err(format!(
            "is not a record but {:?}, so it cannot be {RECORD_NAME}",
            apache_avro::schema::SchemaKind::from(&writer)
        )
        .into());
    };
    let name = record.name.fullname(None);
    SchemaCompatibility::can_read(&writer, reader).map_err(|e| {
        Arc::<str>::from(format!(
            "(record {name}) cannot be read as {RECORD_NAME}: {e}"
        ))
    })?;
    Ok(Arc::new(writer))
}

/// What the registry said about one id.
#[derive(Debug)]
enum Fetched {
    Avro(String),
    /// `schemaType` was `PROTOBUF`, `JSON`, …
    NotAvro(String),
    NotFound,
}

/// A Confluent-compatible Schema Registry: `GET {url}/schemas/ids/{id}`.
struct Registry {
    http: reqwest::Client,
    base: String,
    auth: Option<(String, SecretString)>,
}

/// The body of `GET /schemas/ids/{id}`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaById {
    schema: String,
    /// Absent means `AVRO` (the registry's default type).
    #[serde(default)]
    schema_type: Option<String>,
}

impl Registry {
    fn new(settings: &SchemaRegistrySettings) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.timeout_ms))
            .connect_timeout(Duration::from_millis(settings.timeout_ms))
            .user_agent(concat!("saga-tracker/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ssl_root_cert {
            let pem = std::fs::read(path).with_context(|| {
                format!(
                    "invalid configuration: `schema_registry.ssl_root_cert` ({}) cannot be read",
                    path.display()
                )
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                anyhow::anyhow!(
                    "invalid configuration: `schema_registry.ssl_root_cert` ({}) is not a PEM \
                     certificate bundle: {e}",
                    path.display()
                )
            })?;
            if certs.is_empty() {
                bail!(
                    "invalid configuration: `schema_registry.ssl_root_cert` ({}) holds no \
                     certificate",
                    path.display()
                );
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .context("building the Schema Registry HTTP client")?;
        let auth = match settings.resolved_password()? {
            Some(password) if !settings.username.is_empty() => {
                Some((settings.username.clone(), password))
            }
            _ => None,
        };
        Ok(Self {
            http,
            base: settings.url.trim().trim_end_matches('/').to_owned(),
            auth,
        })
    }

    async fn fetch(&self, id: u32) -> anyhow::Result<Fetched> {
        let url = format!("{}/schemas/ids/{id}", self.base);
        let mut request = self.http.get(&url).header(
            reqwest::header::ACCEPT,
            "application/vnd.schemaregistry.v1+json, application/json",
        );
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password.expose_secret()));
        }
        // reqwest's errors name the URL, which never holds credentials (config validation).
        let response = request
            .send()
            .await
            .with_context(|| format!("Schema Registry request GET {url}"))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Fetched::NotFound);
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            bail!(
                "Schema Registry refused the credentials (HTTP {status}) for GET {url}; check \
                 `schema_registry.username` and its password"
            );
        }
        if !status.is_success() {
            bail!("Schema Registry answered HTTP {status} for GET {url}");
        }
        let body: SchemaById = response
            .json()
            .await
            .with_context(|| format!("reading the Schema Registry's answer to GET {url}"))?;
        match body.schema_type.as_deref() {
            None | Some("AVRO") => Ok(Fetched::Avro(body.schema)),
            Some(other) => Ok(Fetched::NotAvro(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::{Record, Value as Avro};
    use chrono::TimeZone;
    use serde_json::json;

    const ID: u32 = 7;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
            .single()
            .expect("a valid date")
    }

    fn decoder() -> AvroDecoder {
        AvroDecoder::new(&SchemaRegistrySettings::default()).expect("no registry, no files")
    }

    fn schemas_with(id: u32, text: &str) -> BatchSchemas {
        let verdict = match judge(&reader_schema(), text) {
            Ok(schema) => WriterSchema::Usable(schema),
            Err(why) => WriterSchema::Mismatch(why),
        };
        BatchSchemas::from([(id, verdict)])
    }

    fn frame(id: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![MAGIC_BYTE];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    const METADATA: &str = r#"{"producerService":"payment-service","producerTimestamp":"2025-11-21T12:00:00Z","traceId":"4bf92f3577b34da6a3ce929d0e0e4736","spanId":"00f067aa0ba902b7","amount":12}"#;

    /// The record the earlier SDK writes, encoded by apache-avro with the reader schema.
    fn sagatracker_bytes(metadata: Option<&str>) -> Vec<u8> {
        let schema = reader_schema();
        let mut r = Record::new(&schema).expect("a record schema");
        r.put("eventId", "3f0c1a9e-2b7d-4c55-9e41-0d8a6b2f7c10");
        r.put("eventTimestamp", Avro::TimestampMillis(1_763_726_400_000));
        r.put("sagaId", "order-8812");
        r.put("sagaType", Avro::Enum(0, "ORDER_CREATION".into()));
        r.put("step", "PAYMENT_CAPTURED");
        r.put("status", Avro::Enum(3, "FAILED".into()));
        r.put("orderId", "8812");
        r.put(
            "metadata",
            match metadata {
                Some(m) => Avro::Union(1, Box::new(Avro::String(m.into()))),
                None => Avro::Union(0, Box::new(Avro::Null)),
            },
        );
        r.put("recordedAt", Avro::TimestampMillis(1_763_726_400_250));
        apache_avro::to_avro_datum(&schema, r).expect("encodes")
    }

    #[test]
    fn the_shipped_reader_schema_is_the_sagatracker_record() {
        let Schema::Record(r) = reader_schema() else {
            panic!("not a record")
        };
        assert_eq!(r.name.fullname(None), RECORD_NAME);
        let fields: Vec<&str> = r.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            fields,
            [
                "eventId",
                "eventTimestamp",
                "sagaId",
                "sagaType",
                "step",
                "status",
                "orderId",
                "metadata",
                "recordedAt"
            ]
        );
    }

    #[test]
    fn only_payloads_starting_with_byte_zero_are_framed() {
        assert!(framed_schema_id(br#"{"sagaId":"x"}"#).is_none());
        assert!(framed_schema_id(b"").is_none());
        assert_eq!(
            framed_schema_id(&frame(0x0102_0304, b"x")).map(|r| r.ok()),
            Some(Some(0x0102_0304))
        );
        let short = framed_schema_id(&[0, 0, 7])
            .expect("framed")
            .expect_err("too short");
        assert_eq!(short.reason(), "avro_malformed");
        assert_eq!(
            AvroDecoder::framed_ids([
                frame(7, b"a").as_slice(),
                b"{}",
                frame(9, b"b").as_slice(),
                frame(7, b"c").as_slice(),
            ]),
            [7, 9]
        );
    }

    #[test]
    fn an_avro_event_and_its_legacy_json_twin_decode_to_the_same_event() {
        let d = decoder();
        let payload = frame(ID, &sagatracker_bytes(Some(METADATA)));
        let from_avro = d
            .decode(&payload, &schemas_with(ID, READER_SCHEMA), now())
            .expect("decodes");
        let twin = json!({
            "eventId": "3f0c1a9e-2b7d-4c55-9e41-0d8a6b2f7c10",
            "eventTimestamp": 1_763_726_400_000_i64,
            "sagaId": "order-8812",
            "sagaType": "ORDER_CREATION",
            "step": "PAYMENT_CAPTURED",
            "status": "FAILED",
            "orderId": "8812",
            "metadata": METADATA,
            "recordedAt": 1_763_726_400_250_i64,
        });
        let from_json = contract::decode(twin.to_string().as_bytes(), now()).expect("decodes");
        assert_eq!(from_avro, from_json);
        // And what that mapping is: the metadata keys of the earlier SDK fill the gaps.
        assert_eq!(from_avro.service, "payment-service");
        assert_eq!(
            from_avro.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!(from_avro.span_id.as_deref(), Some("00f067aa0ba902b7"));
        assert_eq!(from_avro.business_key.as_deref(), Some("8812"));
        assert_eq!(from_avro.saga_status, Some(contract::SagaStatus::Failed));
        assert_eq!(from_avro.step_status, contract::StepStatus::Failed);
        assert_eq!(from_avro.occurred_at.timestamp_millis(), 1_763_726_400_000);
    }

    #[test]
    fn a_null_metadata_union_is_no_metadata() {
        let payload = frame(ID, &sagatracker_bytes(None));
        let e = decoder()
            .decode(&payload, &schemas_with(ID, READER_SCHEMA), now())
            .expect("decodes");
        assert_eq!(e.metadata, None);
        assert_eq!(e.service, contract::LEGACY_UNKNOWN_SERVICE);
    }

    #[test]
    fn a_compatible_evolution_of_the_writer_schema_is_read() {
        // A later writer: one more field, plain `long` timestamps, no `metadata` at all.
        let evolved = r#"{"type":"record","name":"SagaTracker",
            "namespace":"com.groom.ecommerce.saga.event.avro","fields":[
            {"name":"eventId","type":"string"},
            {"name":"eventTimestamp","type":"long"},
            {"name":"sagaId","type":"string"},
            {"name":"sagaType","type":{"type":"enum","name":"SagaType","symbols":["ORDER_CREATION","PAYMENT_COMPLETION"]}},
            {"name":"step","type":"string"},
            {"name":"status","type":{"type":"enum","name":"SagaStatus","symbols":["STARTED","IN_PROGRESS","COMPLETED","FAILED","COMPENSATED"]}},
            {"name":"orderId","type":"string"},
            {"name":"region","type":"string","default":"eu"},
            {"name":"recordedAt","type":"long"}]}"#;
        let writer = Schema::parse_str(evolved).expect("parses");
        let mut r = Record::new(&writer).expect("a record schema");
        r.put("eventId", "e-1");
        r.put("eventTimestamp", Avro::Long(1_763_726_400_000));
        r.put("sagaId", "order-1");
        r.put("sagaType", Avro::Enum(1, "PAYMENT_COMPLETION".into()));
        r.put("step", "CAPTURE");
        r.put("status", Avro::Enum(2, "COMPLETED".into()));
        r.put("orderId", "1");
        r.put("region", "us");
        r.put("recordedAt", Avro::Long(1_763_726_400_001));
        let body = apache_avro::to_avro_datum(&writer, r).expect("encodes");
        let e = decoder()
            .decode(&frame(ID, &body), &schemas_with(ID, evolved), now())
            .expect("an evolution decodes");
        assert_eq!(
            (e.saga_type.as_str(), e.step.as_str()),
            ("PAYMENT_COMPLETION", "CAPTURE")
        );
        assert_eq!(e.saga_status, Some(contract::SagaStatus::Completed));
        assert_eq!(e.metadata, None);
    }

    #[test]
    fn an_unknown_id_a_foreign_schema_and_bad_bytes_each_have_their_reason() {
        let d = decoder();
        let good = frame(ID, &sagatracker_bytes(Some(METADATA)));
        let err = d
            .decode(&good, &BatchSchemas::new(), now())
            .expect_err("unknown");
        assert_eq!(err.reason(), "avro_unknown_schema");
        assert!(err.detail().contains("schema id 7"), "{err}");

        let foreign = r#"{"type":"record","name":"PaymentCompleted","namespace":"com.groom.ecommerce.payment.event.avro",
            "fields":[{"name":"paymentId","type":"string"}]}"#;
        let err = d
            .decode(&good, &schemas_with(ID, foreign), now())
            .expect_err("mismatch");
        assert_eq!(err.reason(), "avro_schema_mismatch");
        assert!(err.detail().contains("PaymentCompleted"), "{err}");
        for not_the_record in [
            r#""string""#,
            "{not json",
            r#"{"type":"record","name":"SagaTracker","namespace":"com.groom.ecommerce.saga.event.avro","fields":[{"name":"eventId","type":"long"}]}"#,
        ] {
            let err = d
                .decode(&good, &schemas_with(ID, not_the_record), now())
                .expect_err("mismatch");
            assert_eq!(
                err.reason(),
                "avro_schema_mismatch",
                "{not_the_record}: {err}"
            );
        }

        let schemas = schemas_with(ID, READER_SCHEMA);
        let body = sagatracker_bytes(Some(METADATA));
        for bad in [
            frame(ID, &body[..body.len() / 2]),
            frame(ID, &[0xff; 12]),
            frame(ID, b""),
            [good.as_slice(), b"extra"].concat(),
        ] {
            let err = d.decode(&bad, &schemas, now()).expect_err("malformed");
            assert_eq!(err.reason(), "avro_malformed", "{err}");
        }
    }

    #[test]
    fn a_decoded_record_still_meets_the_contract() {
        // Avro cannot express the contract's rules; the shared mapping applies them.
        let schema = reader_schema();
        let mut r = Record::new(&schema).expect("a record schema");
        r.put("eventId", "e-1");
        r.put("eventTimestamp", Avro::TimestampMillis(5));
        r.put("sagaId", "order-1");
        r.put("sagaType", Avro::Enum(0, "ORDER_CREATION".into()));
        r.put("step", "S");
        r.put("status", Avro::Enum(0, "STARTED".into()));
        r.put("orderId", "1");
        r.put("metadata", Avro::Union(0, Box::new(Avro::Null)));
        r.put("recordedAt", Avro::TimestampMillis(5));
        let body = apache_avro::to_avro_datum(&schema, r).expect("encodes");
        let err = decoder()
            .decode(&frame(ID, &body), &schemas_with(ID, READER_SCHEMA), now())
            .expect_err("1970 is not a plausible event time");
        assert_eq!(
            (err.reason(), err.field()),
            ("invalid_timestamp", Some("occurredAt"))
        );
    }

    #[test]
    fn local_schema_files_are_checked_at_start_up() {
        let dir = std::env::temp_dir().join(format!("avro-local-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("sagatracker.avsc");
        std::fs::write(&good, READER_SCHEMA).expect("write");
        let foreign = dir.join("foreign.avsc");
        std::fs::write(&foreign, r#"{"type":"record","name":"X","fields":[]}"#).expect("write");

        let mut settings = SchemaRegistrySettings::default();
        settings.schemas.insert("7".into(), good.clone());
        let d = AvroDecoder::new(&settings).expect("a SagaTracker file loads");
        let (verdict, source) = futures::executor::block_on(d.writer_schema(7)).expect("local");
        assert!(matches!(verdict, WriterSchema::Usable(_)));
        assert_eq!(source, Source::Local);
        let (verdict, _) = futures::executor::block_on(d.writer_schema(8)).expect("no registry");
        assert!(matches!(verdict, WriterSchema::Unknown));

        settings.schemas.insert("8".into(), foreign);
        let err = AvroDecoder::new(&settings)
            .expect_err("not SagaTracker")
            .to_string();
        assert!(err.contains("`schema_registry.schemas.8`"), "{err}");

        let mut settings = SchemaRegistrySettings::default();
        settings.schemas.insert("seven".into(), good);
        let err = AvroDecoder::new(&settings).expect_err("bad id").to_string();
        assert!(err.contains("\"seven\""), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
