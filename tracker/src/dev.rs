//! `saga-tracker dev`: the whole tracker on one machine without a broker to build or run.
//!
//! The Kafka-protocol broker is librdkafka's mock cluster, which is compiled into this binary
//! anyway (rdkafka vendors librdkafka): one in-memory broker, hosted by this process, holding
//! the tracker's topics. PostgreSQL is the local server as for `run` (the database is created
//! if missing and migrated). Demo traffic goes through the SDK unless `--no-demo`.
//!
//! The mock broker always listens on a port the kernel picks — librdkafka has no setting to
//! choose it (`rd_kafka_mock_broker_set_host_port` changes only the address it *advertises*).
//! So that clients can be pointed at a stated address, [`run`] binds that address itself
//! (`127.0.0.1:9092` by default), relays each connection to the broker's own port, and makes
//! the broker advertise the stated address in its metadata: every client — the tracker's
//! consumer, the demo, the SDK in a service, kcat — bootstraps from and talks to the stated
//! address only.
//!
//! What it is not: a persistent broker. The mock cluster keeps at most about 5 MiB (and
//! 100,000 message sets) per partition in memory, dropping the oldest, and nothing survives
//! the process. Sagas already written to PostgreSQL stay. For a broker that keeps its data,
//! `scripts/up.sh --broker tansu`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::ClientConfig;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::config::Settings;
use crate::{demo, store};

/// The options of `saga-tracker dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Loopback port the embedded broker is reached on (`0`: any free port; the address is
    /// printed either way).
    #[arg(long, default_value_t = 9092)]
    pub broker_port: u16,
    /// Partitions of the saga topic (`kafka.topic`); the DLQ gets one.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Do not generate demo traffic.
    #[arg(long)]
    pub no_demo: bool,
    /// Demo events per second.
    #[arg(long, default_value_t = 20)]
    pub demo_rate: u32,
}

/// The in-process broker: a client handle owning librdkafka's mock cluster (it lives as
/// long as the handle), and the relay from the stated address to it.
struct EmbeddedBroker {
    _owner: BaseProducer,
    /// The address clients use.
    addr: SocketAddr,
    relay: tokio::task::JoinHandle<()>,
    relay_stop: CancellationToken,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl EmbeddedBroker {
    /// Binds `127.0.0.1:port`, starts the mock cluster with `topics` and relays to it.
    async fn start(port: u16, topics: &[(&str, i32)]) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| {
                format!(
                "binding 127.0.0.1:{port} for the embedded broker (is a broker already running \
                 there? stop it, or pass --broker-port 0 for any free port)"
            )
            })?;
        let addr = listener.local_addr()?;
        let owner: BaseProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .context("starting librdkafka's mock cluster")?;
        let own_addr: SocketAddr = {
            let mock = owner
                .client()
                .mock_cluster()
                .context("the client has no mock cluster")?;
            for (name, partitions) in topics {
                mock.create_topic(name, *partitions, 1)
                    .with_context(|| format!("creating topic {name} on the embedded broker"))?;
            }
            mock.bootstrap_servers()
                .parse()
                .context("reading the mock broker's address")?
        };
        advertise(&owner, addr)?;
        let relay_stop = CancellationToken::new();
        let relay = tokio::spawn(relay(listener, own_addr, relay_stop.clone()));
        Ok(Self {
            _owner: owner,
            addr,
            relay,
            relay_stop,
        })
    }

    async fn stop(self) {
        self.relay_stop.cancel();
        let _ = self.relay.await;
    }
}

/// Makes broker 1 advertise `addr` in its metadata, and join consumer groups at once instead
/// of after the mock's default 3 s delay.
#[allow(unsafe_code)]
fn advertise(owner: &BaseProducer, addr: SocketAddr) -> anyhow::Result<()> {
    let host = std::ffi::CString::new(addr.ip().to_string()).context("broker host")?;
    // SAFETY: the mock-cluster pointer comes from the live client `owner`, which outlives
    // this call; `host` is a NUL-terminated string that librdkafka copies.
    unsafe {
        let raw = rdkafka_sys::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
        if raw.is_null() {
            bail!("the client has no mock cluster");
        }
        rdkafka_sys::rd_kafka_mock_group_initial_rebalance_delay_ms(raw, 0);
        rdkafka_sys::rd_kafka_mock_broker_set_host_port(
            raw,
            1,
            host.as_ptr(),
            i32::from(addr.port()),
        );
    }
    Ok(())
}

/// Accepts on `listener` and copies bytes both ways between each client and `broker` until
/// `stop`; open connections are dropped then.
async fn relay(listener: TcpListener, broker: SocketAddr, stop: CancellationToken) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (mut client, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "embedded broker: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Reap finished connections so the set does not grow with every client.
        while conns.try_join_next().is_some() {}
        conns.spawn(async move {
            let _ = client.set_nodelay(true);
            match TcpStream::connect(broker).await {
                Ok(mut upstream) => {
                    let _ = upstream.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => tracing::warn!(%peer, error = %e, "embedded broker: cannot reach the mock cluster"),
            }
        });
    }
    conns.shutdown().await;
}

/// Creates the database `database.url` names if the server lacks it (connecting to the
/// server's `postgres` database as the same role), so a fresh machine needs no `createdb`.
async fn ensure_database(settings: &Settings) -> anyhow::Result<()> {
    let options: PgConnectOptions = store::connect_options(&settings.database)?;
    let name = options
        .get_database()
        .context("`database.url` names no database")?
        .to_owned();
    let mut admin = tokio::time::timeout(
        Duration::from_secs(10),
        options.clone().database("postgres").connect(),
    )
    .await
    .context("PostgreSQL did not answer within 10 s")?
    .context(
        "cannot connect to PostgreSQL at `database.url` (is it running? scripts/ensure-postgres.sh \
         starts or installs it)",
    )?;
    let exists: bool =
        sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .context("looking for the tracker's database")?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        sqlx::query(&format!("create database {quoted}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        tracing::info!(database = %name, "created the database");
    }
    let _ = admin.close().await;
    Ok(())
}

/// Runs the embedded broker, migrates, and runs the tracker (and the demo traffic) until
/// `shutdown`; then stops the demo, drains the tracker while the broker still runs, and
/// stops the broker.
pub async fn run(
    mut settings: Settings,
    args: DevArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if settings.kafka.tls.enabled || settings.kafka.sasl.mechanism.is_some() {
        bail!(
            "`saga-tracker dev` runs an embedded plaintext broker: unset `kafka.tls.enabled` and \
             `kafka.sasl.mechanism` (or use `saga-tracker run` against a real broker)"
        );
    }
    if !(1..=64).contains(&args.partitions) {
        bail!("--partitions must be between 1 and 64");
    }
    let topic = settings.kafka.topic.clone();
    let dlq = settings.kafka.dlq_topic.clone();
    let broker =
        EmbeddedBroker::start(args.broker_port, &[(&topic, args.partitions), (&dlq, 1)]).await?;
    let bootstrap = broker.addr.to_string();
    settings.kafka.brokers = bootstrap.clone();
    tracing::info!(%bootstrap, "embedded broker (librdkafka mock cluster) listening");

    let result = run_tracker(settings, &args, &bootstrap, &topic, shutdown).await;
    broker.stop().await;
    result
}

async fn run_tracker(
    settings: Settings,
    args: &DevArgs,
    bootstrap: &str,
    topic: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    ensure_database(&settings).await?;
    let pool = store::connect_lazy(&settings.database)?;
    store::migrate(&pool).await?;
    pool.close().await;

    let dlq = settings.kafka.dlq_topic.clone();
    let app = Application::build(settings).await?;
    let http = app.local_addr()?;
    let demo = (!args.no_demo).then(|| demo::DemoOptions {
        brokers: bootstrap.to_owned(),
        topic: topic.to_owned(),
        rate: args.demo_rate,
        sagas: None,
        seed: 8812,
    });
    println!("{}", banner(http, bootstrap, topic, &dlq, args));

    // On shutdown the demo stops first and the tracker after it, so the tracker's last batch
    // holds what the demo sent; if the tracker ends on its own, the demo stops too.
    let demo_stop = CancellationToken::new();
    let run_stop = CancellationToken::new();
    let tracker_done = CancellationToken::new();
    let tracker = async {
        let result = app.run(run_stop.clone()).await;
        tracker_done.cancel();
        result
    };
    let traffic = async {
        if let Some(opts) = demo {
            if let Err(e) = demo::run(opts, demo_stop.clone()).await {
                tracing::warn!(error = format!("{e:#}"), "demo traffic failed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tracker_done.cancelled() => {}
        }
        run_stop.cancel();
    };
    let watch = async {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tracker_done.cancelled() => {}
        }
        demo_stop.cancel();
    };
    let (result, (), ()) = tokio::join!(tracker, traffic, watch);
    result
}

/// What a person needs to use the running dev tracker.
fn banner(http: SocketAddr, bootstrap: &str, topic: &str, dlq: &str, args: &DevArgs) -> String {
    let demo = if args.no_demo {
        "off".to_owned()
    } else {
        format!(
            "on, about {} events/s (--no-demo turns it off)",
            args.demo_rate
        )
    };
    format!(
        "\n\
         Saga Tracker dev mode is running (Ctrl-C stops it).\n\
         \n\
         \x20 UI:        http://{http}/ui\n\
         \x20 API:       http://{http}/api/v1/sagas\n\
         \x20 Bootstrap: {bootstrap}  (embedded broker; topics {topic} x{parts}, {dlq})\n\
         \x20 Demo:      {demo}\n\
         \n\
         \x20 Produce from a service with the SDK:\n\
         \x20   SAGA_TRACKER_BROKERS={bootstrap} SAGA_TRACKER_SERVICE=my-service SAGA_TRACKER_TOPIC={topic}\n\
         \x20 or by hand with kcat:\n\
         \x20   printf 'order-1|{{\"schemaVersion\":1,\"eventId\":\"%s\",\"sagaId\":\"order-1\",\"sagaType\":\"ORDER_CREATION\",\"step\":\"ORDER_PLACED\",\"stepStatus\":\"STARTED\",\"occurredAt\":\"%s\",\"service\":\"shop\"}}\\n' \\\n\
         \x20     \"$(cat /proc/sys/kernel/random/uuid)\" \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" | kcat -P -b {bootstrap} -t {topic} -K '|'\n\
         \n\
         \x20 The embedded broker keeps about 5 MiB per partition in memory and nothing across\n\
         \x20 restarts (the sagas in PostgreSQL stay). A persistent broker: scripts/up.sh --broker tansu\n",
        parts = args.partitions,
    )
}
