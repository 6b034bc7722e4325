//! saga-service: the order fulfilment saga.
//!
//! The [`follower`] reads the event log and starts a [`saga`] for every placed order;
//! [`worker`]s drive due sagas step by step, sending commands to command-service over gRPC
//! ([`steps`]) and compensating on refusal, deadline or cancellation. Saga state lives in
//! PostgreSQL ([`db`]); operators see and steer it through the admin API ([`grpc`]).

pub mod db;
pub mod follower;
pub mod grpc;
pub mod leased;
pub mod saga;
pub mod steps;
pub mod worker;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use contracts::orders::v1::{
    command_service_client::CommandServiceClient, saga_service_server::SagaServiceServer,
};
use event_store::PostgresEventStore;
use service_runtime::{Clock, SystemClock, server, task::AbortOnDrop, telemetry::LogFormat};
use tokio::{
    net::TcpListener,
    sync::{Notify, watch},
};
use tonic::transport::Endpoint;

/// The fully-qualified gRPC service name, as health checks know it.
pub const SERVICE_NAME: &str = "orders.v1.SagaService";

/// Configuration, from flags or environment variables.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "saga-service",
    version,
    about = "The order fulfilment saga and its admin API (gRPC)."
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SAGA_SERVICE_ADDR", default_value = "127.0.0.1:50053")]
    pub listen: SocketAddr,
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// Where command-service listens.
    #[arg(
        long,
        env = "COMMAND_SERVICE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub command_service_url: String,
    /// PEM CA certificate to trust for command-service's TLS (an `https://` URL).
    #[arg(long, env = "COMMAND_SERVICE_CA")]
    pub command_service_ca: Option<std::path::PathBuf>,
    /// PEM client certificate to present to command-service (mutual TLS).
    #[arg(
        long,
        env = "COMMAND_SERVICE_CLIENT_CERT",
        requires = "command_service_client_key"
    )]
    pub command_service_client_cert: Option<std::path::PathBuf>,
    /// PEM key of --command-service-client-cert.
    #[arg(
        long,
        env = "COMMAND_SERVICE_CLIENT_KEY",
        requires = "command_service_client_cert"
    )]
    pub command_service_client_key: Option<std::path::PathBuf>,
    /// The token (a JWT with the role orders.write) saga-service presents to
    /// command-service, when command-service checks tokens.
    #[arg(long, env = "COMMAND_SERVICE_TOKEN", hide_env_values = true)]
    pub command_service_token: Option<String>,
    /// Most database connections to hold.
    #[arg(long, env = "DB_POOL_SIZE", default_value_t = 16)]
    pub pool_size: u32,
    /// Sagas driven at once by this instance. A saga spends most of its time waiting for
    /// command-service, so this is well above the cores: 32 confirmed 13% more orders/s
    /// than 8 on 2 cores, and 64 halved the open-loop tail of 32, whose workers were all
    /// busy whenever the machine stalled, so new sagas waited to be claimed; 128 did no
    /// better (BENCHMARKS.md).
    #[arg(long, env = "SAGA_WORKERS", default_value_t = 64)]
    pub workers: usize,
    /// How long a saga stays leased to this instance from its claim, or from its hand-off
    /// by this instance's follower (ms); a crashed instance's sagas are taken over after
    /// this. A worker whose saga takes longer keeps it within its instance, but another
    /// instance may claim it then, and the first worker's next save or check finds the
    /// lease lost.
    #[arg(long, env = "SAGA_LEASE_MS", default_value_t = 10_000)]
    pub lease_ms: u64,
    /// Deadline of the reserve-stock step, retries included (ms); a step still unanswered
    /// then is settled (voided, or its recorded answer read).
    #[arg(long, env = "SAGA_RESERVE_DEADLINE_MS", default_value_t = 10_000)]
    pub reserve_deadline_ms: u64,
    /// Deadline of the authorise-payment step (ms).
    #[arg(long, env = "SAGA_AUTHORIZE_DEADLINE_MS", default_value_t = 10_000)]
    pub authorize_deadline_ms: u64,
    /// Deadline of the confirm-order step (ms).
    #[arg(long, env = "SAGA_CONFIRM_DEADLINE_MS", default_value_t = 10_000)]
    pub confirm_deadline_ms: u64,
    /// First retry delay (ms); doubles per attempt.
    #[arg(long, env = "SAGA_BACKOFF_BASE_MS", default_value_t = 50)]
    pub backoff_base_ms: u64,
    /// Longest retry delay (ms).
    #[arg(long, env = "SAGA_BACKOFF_MAX_MS", default_value_t = 5_000)]
    pub backoff_max_ms: u64,
    /// Attempts at a compensation step (or at voiding a step in doubt) before the saga is
    /// parked as needs_attention.
    #[arg(long, env = "SAGA_MAX_COMPENSATION_ATTEMPTS", default_value_t = 10)]
    pub max_compensation_attempts: u32,
    /// The longest one call to command-service may take (ms).
    #[arg(long, env = "SAGA_ATTEMPT_TIMEOUT_MS", default_value_t = 5_000)]
    pub attempt_timeout_ms: u64,
    /// Make every saga save wait for the WAL flush (synchronous_commit=on). Off by default:
    /// a lost save is harmless (ARCHITECTURE.md); this exists to measure what it would cost.
    #[arg(long, env = "SAGA_DURABLE_SAVES")]
    pub durable_saves: bool,
    /// Authorise the payment only once the stock is reserved. Off by default: a saga sends
    /// ReserveStock and AuthorizePayment at once (one hop less before ConfirmOrder), and an
    /// order out of stock has its authorisation voided, or refunded if it ran.
    #[arg(long, env = "SAGA_SEQUENTIAL_STEPS")]
    pub sequential_steps: bool,
    /// Test-only: `abort-after:STEP` aborts the process right after STEP's command (or
    /// void) comes back, before the saga is saved; `freeze-after:STEP` stops the worker
    /// there instead. For crash tests; never set in production.
    #[arg(long, env = "SAGA_FAILPOINT", hide = true)]
    pub failpoint: Option<worker::Failpoint>,
    /// Limits, TLS and authentication of the gRPC server.
    #[command(flatten)]
    pub server: service_runtime::server::ServerConfig,
    /// Where to serve Prometheus metrics (`/metrics`), or `off`.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9103")]
    pub metrics_addr: service_runtime::metrics::MetricsAddr,
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

impl Config {
    /// The saga's timing rules.
    pub fn policy(&self) -> saga::Policy {
        saga::Policy {
            reserve_deadline: Duration::from_millis(self.reserve_deadline_ms),
            authorize_deadline: Duration::from_millis(self.authorize_deadline_ms),
            confirm_deadline: Duration::from_millis(self.confirm_deadline_ms),
            backoff_base: Duration::from_millis(self.backoff_base_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            max_compensation_attempts: self.max_compensation_attempts.max(1),
            attempt_timeout: Duration::from_millis(self.attempt_timeout_ms.max(1)),
            sequential: self.sequential_steps,
        }
    }
}

/// Serves the admin API and drives sagas until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    run_with_clock(config, listener, Arc::new(SystemClock), shutdown).await
}

/// [`run`] with a clock of the caller's choosing.
pub async fn run_with_clock(
    config: Config,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let basics = server::start(
        "saga-service",
        &config.database_url,
        config.pool_size,
        // Saga rows are a cache of decisions whose every input is recorded, durably, by
        // command-service under each step's fixed idempotency key (answers and voids
        // alike): a save lost in a crash only makes a worker redo steps from an older state,
        // and each redone step gets its recorded answer, so the saga reaches the same
        // outcome. So commits here do not wait for the WAL flush (the follower's checkpoint
        // and the sagas it starts still commit together, and are lost or kept together).
        &[(
            "synchronous_commit",
            if config.durable_saves { "on" } else { "off" },
        )],
        config.metrics_addr,
    )
    .await?;
    let pool = basics.pool.clone();
    let store = PostgresEventStore::new(pool.clone());
    let policy = config.policy();
    // Lazy: the saga retries while command-service is away instead of refusing to start.
    let mut endpoint = Endpoint::from_shared(config.command_service_url.clone())?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true);
    if let Some(ca) = &config.command_service_ca {
        let identity = config
            .command_service_client_cert
            .as_deref()
            .zip(config.command_service_client_key.as_deref());
        endpoint = endpoint.tls_config(service_runtime::tls::client(ca, identity, None)?)?;
    }
    let client = CommandServiceClient::with_interceptor(
        endpoint.connect_lazy(),
        service_runtime::auth::BearerToken::new(config.command_service_token.as_deref())?,
    );
    let work = Arc::new(worker::Work::new());
    let (stop, stopping) = watch::channel(false);
    let owner = uuid::Uuid::new_v4();
    let handoffs = Arc::new(worker::Handoffs::new(
        owner,
        Duration::from_millis(config.lease_ms),
    ));

    let mut tasks = vec![AbortOnDrop::spawn(follower::run(
        pool.clone(),
        store,
        clock.clone(),
        policy.clone(),
        work.clone(),
        handoffs.clone(),
        stopping.clone(),
    ))];
    let poll = Arc::new(Notify::new());
    let rows = leased::LeasedRows::start(&pool, owner);
    tasks.push(AbortOnDrop::spawn(worker::tick_polls(
        poll.clone(),
        Duration::from_secs(1),
        stopping.clone(),
    )));
    for _ in 0..config.workers.max(1) {
        let worker = worker::Worker {
            pool: pool.clone(),
            rows: rows.clone(),
            client: client.clone(),
            clock: clock.clone(),
            policy: policy.clone(),
            work: work.clone(),
            poll: poll.clone(),
            handoffs: handoffs.clone(),
            failpoint: config.failpoint,
        };
        tasks.push(AbortOnDrop::spawn(worker.run(stopping.clone())));
    }

    let _state_metrics = worker::sample_states(pool.clone());
    let api = service_runtime::limit_messages!(
        SagaServiceServer::new(grpc::SagaApi::new(pool.clone(), clock, policy, work)),
        &config.server.limits
    );
    tracing::info!(instance = %owner, "saga-service instance");
    let result = server::serve_api(
        "saga-service",
        SERVICE_NAME,
        &config.server,
        &pool,
        || true,
        api,
        listener,
        shutdown,
    )
    .await;
    // Workers finish the step in hand (its result is saved) before the pool closes.
    let _ = stop.send(true);
    for mut task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut task.0).await;
    }
    // Sagas handed off but never driven go back to whoever claims first.
    let undriven = handoffs.drain();
    if !undriven.is_empty()
        && let Err(err) = db::release(&pool, &undriven, owner).await
    {
        tracing::warn!(error = %err, sagas = undriven.len(), "cannot release sagas handed off; their lease runs out instead");
    }
    pool.close().await;
    result?;
    tracing::info!("saga-service stopped");
    Ok(())
}
