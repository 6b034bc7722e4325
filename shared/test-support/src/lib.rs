//! Helpers for integration tests: start a real service on `127.0.0.1:0`, talk to it over
//! loopback, stop it gracefully (or abruptly, to simulate a crash).

pub mod builders;
pub mod database;
pub mod process;
pub mod proxy;
pub mod security;
pub mod standby;

pub use ctor;

use std::{future::Future, net::SocketAddr, time::Duration};

use sqlx::PgPool;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A service's configuration as its binary parses it, for a test: the database behind
/// `pool`, port 0, metrics off, 8 connections, then `extra` flags; everything else at the
/// binary's defaults (environment variables apply, as for the binary; flags win).
pub fn config<C: clap::Parser>(binary: &str, pool: &PgPool, extra: &[&str]) -> C {
    let url = database_url(pool);
    let mut args = vec![
        binary,
        "--database-url",
        &url,
        "--listen",
        "127.0.0.1:0",
        "--metrics-addr",
        "off",
        "--pool-size",
        "8",
    ];
    args.extend_from_slice(extra);
    C::parse_from(args)
}

/// The URL of the database behind `pool` (one that `#[sqlx::test]` created), so a service
/// under test can open its own pool to it.
pub fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect(
        "DATABASE_URL must point at a PostgreSQL where tests may create databases (scripts/test starts one)",
    );
    let options = pool.connect_options();
    let database = options
        .get_database()
        .expect("the test pool names its database");
    let (without_query, query) = match base.split_once('?') {
        Some((url, query)) => (url.to_owned(), format!("?{query}")),
        None => (base.clone(), String::new()),
    };
    let server = match without_query.rfind('/') {
        Some(slash) if slash > "postgres://".len() => &without_query[..slash],
        _ => without_query.as_str(),
    };
    format!("{server}/{database}{query}")
}

/// A service running in this process.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Binds `127.0.0.1:0` and starts `run(listener, shutdown)` in a task.
    pub async fn start<F, Fut>(run: F) -> Running
    where
        F: FnOnce(TcpListener, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        Self::start_on(listener, run).await
    }

    /// Starts `run` on a listener the caller bound (to reuse a known address).
    pub async fn start_on<F, Fut>(listener: TcpListener, run: F) -> Running
    where
        F: FnOnce(TcpListener, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = rx.await;
        });
        let task = tokio::spawn(run(listener, shutdown));
        Running {
            addr,
            shutdown: Some(tx),
            task,
        }
    }

    /// A channel to the service (one HTTP/2 connection), once the service reports SERVING.
    ///
    /// The listener is bound before the service starts, so a TCP connection alone proves
    /// nothing: the service may still be connecting to its database. Tests that then break
    /// the database on purpose need it fully up first, and must take their channels before
    /// they break it.
    pub async fn channel(&self) -> Channel {
        let endpoint = Endpoint::from_shared(format!("http://{}", self.addr)).expect("endpoint");
        for _ in 0..400 {
            if let Ok(channel) = endpoint.connect().await {
                let mut health = HealthClient::new(channel.clone());
                let check = health
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                if check.is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving) {
                    return channel;
                }
            }
            if self.task.is_finished() {
                panic!("the service at {} stopped during start-up", self.addr);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the service at {} never reported SERVING", self.addr);
    }

    /// Graceful shutdown; returns what `run` returned.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("the service did not stop within 20 s")
            .expect("the service task panicked")
    }

    /// Stops the service the hard way, like `kill -9`: no drain, no cleanup.
    pub fn kill(mut self) {
        self.shutdown.take();
        self.task.abort();
    }
}

/// The sum of a metric's samples, in Prometheus' text format, whose labels include every
/// `label` (written as in the text: `le="16"`).
pub fn metric_value(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.split(['{', ' ']).next() == Some(name) && labels.iter().all(|l| line.contains(l))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
