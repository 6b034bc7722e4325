//! query-service: the read side of the order system (CQRS).
//!
//! A [`projection`] follows the event log into read-model tables ([`db`]), folding events
//! with the pure [`model`]; the gRPC API ([`grpc`], parsing in [`edge`]) serves those tables,
//! waiting for a consistency token when asked; point reads of orders that miss memory share
//! a query ([`reads`]). [`rebuild`] replays the whole log into fresh
//! tables and swaps them in without stopping queries.

pub mod db;
pub mod edge;
pub mod grpc;
pub mod model;
pub mod projection;
pub mod reads;
pub mod rebuild;
pub mod status;
pub mod views;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use contracts::orders::v1::query_service_server::QueryServiceServer;
use event_store::PostgresEventStore;
use service_runtime::{server, task::AbortOnDrop, telemetry::LogFormat};
use tokio::{net::TcpListener, sync::watch};

/// The fully-qualified gRPC service name, as health checks know it.
pub const SERVICE_NAME: &str = "orders.v1.QueryService";

/// Command line: serve (the default) or rebuild.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "query-service",
    version,
    about = "The order system's read side (gRPC)."
)]
pub struct Cli {
    /// What to do; serves when omitted.
    #[command(subcommand)]
    pub command: Option<Subcommand>,
    /// Settings shared by every subcommand.
    #[command(flatten)]
    pub config: Config,
}

/// What the binary can do besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Subcommand {
    /// Serve the read API (the default).
    Serve,
    /// Replay the whole log into fresh read-model tables, then swap them in. Safe while
    /// query-service instances are serving.
    Rebuild,
}

/// Configuration, from flags or environment variables.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "QUERY_SERVICE_ADDR", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Most database connections to hold.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16)]
    pub pool_size: u32,
    /// Serve from a PostgreSQL hot standby (`DATABASE_URL` names it): never project or
    /// write; reads, read-your-writes and WatchOrder follow what the standby has replayed.
    /// The projector runs on a query-service attached to the primary.
    #[arg(long, env = "QUERY_REPLICA")]
    pub replica: bool,
    /// The most WatchOrder streams open at once; past this, a new one is refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_WATCH_STREAMS", default_value_t = 1_000)]
    pub max_watch_streams: usize,
    /// Limits, TLS and authentication of the gRPC server.
    #[command(flatten)]
    pub server: service_runtime::server::ServerConfig,
    /// Where to serve Prometheus metrics (`/metrics`), or `off`.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9102")]
    pub metrics_addr: service_runtime::metrics::MetricsAddr,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

/// Serves the read API on `listener` and runs the projector until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let basics = server::start(
        "query-service",
        &config.database_url,
        config.pool_size,
        &[],
        config.metrics_addr,
    )
    .await?;
    let pool = basics.pool.clone();
    let store = PostgresEventStore::new(pool.clone());
    let state = Arc::new(projection::ProjectionState::default());
    let (stop, stopping) = watch::channel(false);

    // Aborted if this future is dropped (a crash in tests), releasing the projection lock.
    let mut projector = if config.replica {
        tracing::info!("replica: serving from a standby; the primary's query-service projects");
        AbortOnDrop::spawn(projection::follow_replica(
            pool.clone(),
            state.clone(),
            stopping.clone(),
        ))
    } else {
        AbortOnDrop::spawn(projection::run_projector(
            pool.clone(),
            store.clone(),
            state.clone(),
            stopping.clone(),
        ))
    };

    let _status_metrics = status::sample(pool.clone(), store.clone(), state.clone());
    let health_state = state.clone();
    let api = service_runtime::limit_messages!(
        QueryServiceServer::new(grpc::QueryApi::new(
            pool.clone(),
            store,
            state,
            stopping,
            config.max_watch_streams,
        )),
        &config.server.limits
    );
    let signal = async move {
        shutdown.await;
        // Watch streams end first, so the drain does not wait for them.
        let _ = stop.send(true);
    };
    let result = server::serve_api(
        "query-service",
        SERVICE_NAME,
        &config.server,
        &pool,
        move || health_state.stopped().is_none(),
        api,
        listener,
        signal,
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(5), &mut projector.0).await;
    pool.close().await;
    result?;
    tracing::info!("query-service stopped");
    Ok(())
}

/// Runs a rebuild to completion, printing progress to stdout.
pub async fn run_rebuild(config: Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        !config.replica,
        "a rebuild writes the read models: run it against the primary, not with --replica"
    );
    let pool = service_runtime::database::connect_with_settings(
        &config.database_url,
        4,
        &[("application_name", "query-service rebuild")],
    )
    .await?;
    let store = PostgresEventStore::new(pool.clone());
    let (done, position) =
        rebuild::rebuild(&pool, &store, |p| println!("{}", p.describe())).await?;
    println!(
        "rebuild finished: {} events in {:.2}s ({:.0} events/s); live projection continues after {}",
        done.done,
        done.elapsed_secs,
        done.rate(),
        position
    );
    pool.close().await;
    Ok(())
}
