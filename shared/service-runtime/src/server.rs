//! Serving a gRPC router with health, reflection, metrics, tracing and graceful shutdown.

use std::{future::Future, time::Duration};

use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tonic::transport::server::Router;
use tonic_health::{ServingStatus, server::HealthReporter};

/// The reflection services (v1 and v1alpha: grpcurl 1.8 only speaks v1alpha), listing
/// `service` and the health service, and able to describe every message in `proto/` and the
/// google.rpc error details the services send.
pub fn reflection(
    service: &'static str,
) -> (
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
) {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(contracts::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc error details, so clients can decode BadRequest, ErrorInfo, ...
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(service)
            .with_service_name("grpc.health.v1.Health")
    };
    // Building from descriptors compiled into the binary only fails if they are corrupt,
    // which the build would have caught.
    let v1 = builder()
        .build_v1()
        .expect("the embedded descriptors are valid");
    let v1alpha = builder()
        .build_v1alpha()
        .expect("the embedded descriptors are valid");
    (v1, v1alpha)
}

/// How every service's server is set up: its limits, TLS and authentication.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerConfig {
    /// Message sizes, time, concurrency and connection limits.
    #[command(flatten)]
    pub limits: crate::limits::Limits,
    /// TLS, optionally mutual.
    #[command(flatten)]
    pub tls: crate::tls::TlsConfig,
    /// Bearer-token authentication.
    #[command(flatten)]
    pub auth: crate::auth::AuthConfig,
}

/// The layers every service's server runs its calls through: RED metrics outside (so
/// refused calls count too), authentication inside.
pub type Layers = tower_layer::Stack<
    crate::auth::AuthLayer,
    tower_layer::Stack<crate::rpc_metrics::RpcMetricsLayer, tower_layer::Identity>,
>;

/// The server every service starts from, the one place its settings are applied: the
/// limits, TLS, a span per call (continuing the caller's trace, see
/// [`crate::telemetry::server_span`]), RED metrics per RPC ([`crate::rpc_metrics`]) and
/// authentication ([`crate::auth`]), labelled with `service` (`command-service`, ...). Says
/// at start-up, loudly, when authentication is off.
pub fn builder(
    service: &'static str,
    config: &ServerConfig,
) -> anyhow::Result<tonic::transport::Server<Layers>> {
    let verifier = crate::auth::Verifier::from_config(&config.auth)?;
    if verifier.is_none() {
        tracing::warn!(
            service,
            "AUTHENTICATION IS OFF: anyone who can reach this port can call every RPC; \
             set AUTH_HS256_SECRET or AUTH_PUBLIC_KEY (README: Running it securely)"
        );
    }
    let mut server = config.limits.apply(tonic::transport::Server::builder());
    match config.tls.server()? {
        Some(tls) => {
            server = server.tls_config(tls)?;
            tracing::info!(
                service,
                mutual = config.tls.tls_client_ca.is_some(),
                "serving TLS"
            );
        }
        None => tracing::info!(service, "serving plaintext (no TLS_CERT)"),
    }
    Ok(server
        .trace_fn(move |request| crate::telemetry::server_span(service, request))
        .layer(crate::rpc_metrics::RpcMetricsLayer::new(service))
        .layer(crate::auth::AuthLayer::new(verifier)))
}

/// Health and reflection for `service` (its gRPC name), with the message limits: every
/// service serves them, open to callers without a token.
pub fn standard_services(
    service: &'static str,
    limits: &crate::limits::Limits,
) -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::v1alpha::ServerReflectionServer<
        impl tonic_reflection::server::v1alpha::ServerReflection,
    >,
) {
    let (reporter, health) = tonic_health::server::health_reporter();
    let (v1, v1alpha) = reflection(service);
    (
        reporter,
        crate::limit_messages!(health, limits),
        v1,
        v1alpha,
    )
}

/// Marks `service` (and the whole server, `""`) serving or not.
pub async fn set_health(reporter: &HealthReporter, service: &str, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    reporter.set_service_status(service, status).await;
    reporter.set_service_status("", status).await;
}

/// Keeps `service`'s health in step with the database and `healthy` (an extra check, for
/// example "no projection has stopped"), checking every 500 ms until the returned guard is
/// dropped.
pub fn watch_health(
    reporter: HealthReporter,
    service: &'static str,
    pool: PgPool,
    healthy: impl Fn() -> bool + Send + 'static,
) -> crate::task::AbortOnDrop<()> {
    crate::task::AbortOnDrop::spawn(async move {
        let mut last = None;
        loop {
            let serving = crate::database::is_reachable(&pool).await && healthy();
            if last != Some(serving) {
                if serving {
                    tracing::info!(service, "serving");
                } else {
                    tracing::warn!(
                        service,
                        "not serving (database unreachable or a component stopped)"
                    );
                }
                set_health(&reporter, service, serving).await;
                last = Some(serving);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops accepting and waits
/// for in-flight calls to finish. Health turns NOT_SERVING before the drain starts.
pub async fn serve(
    router: Router<Layers>,
    listener: TcpListener,
    reporter: HealthReporter,
    service: &'static str,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let signal = async move {
        shutdown.await;
        set_health(&reporter, service, false).await;
        tracing::info!(service, "draining in-flight calls");
    };
    // `serve_with_incoming` ignores the server's nodelay setting, so set it per connection:
    // without it Nagle's algorithm and delayed ACKs add tens of milliseconds to small calls.
    // An error item would stop the whole server, so a failed accept (or a connection that
    // is gone before nodelay could be set) is logged and skipped instead.
    let incoming = TcpListenerStream::new(listener).filter_map(|accepted| match accepted {
        Ok(stream) => {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "cannot set TCP_NODELAY; the peer is probably gone");
            }
            Some(Ok::<_, std::io::Error>(stream))
        }
        Err(err) => {
            tracing::warn!(error = %err, "accepting a connection failed");
            None
        }
    });
    router.serve_with_incoming_shutdown(incoming, signal).await
}

/// What every service holds while it runs: its database pool, and its metrics endpoint and
/// pool sampler (stopped when this is dropped).
pub struct Basics {
    /// The service's connection pool.
    pub pool: PgPool,
    _metrics: Option<crate::task::AbortOnDrop<()>>,
    _pool_metrics: crate::task::AbortOnDrop<()>,
}

/// The first steps of every service: connect to the database (named `service` in
/// `pg_stat_activity`, with `settings` on every connection; migrations applied as
/// [`crate::database::connect_with_settings`] does) and serve its metrics.
pub async fn start(
    service: &'static str,
    database_url: &str,
    pool_size: u32,
    settings: &[(&str, &str)],
    metrics: crate::metrics::MetricsAddr,
) -> anyhow::Result<Basics> {
    let mut all = vec![("application_name", service)];
    all.extend_from_slice(settings);
    let pool = crate::database::connect_with_settings(database_url, pool_size, &all).await?;
    let metrics = crate::metrics::start(metrics, service).await?;
    let pool_metrics = crate::metrics::sample_pool(pool.clone(), service);
    Ok(Basics {
        pool,
        _metrics: metrics,
        _pool_metrics: pool_metrics,
    })
}

/// Serves `api` (gRPC name `grpc_name`, message limits already applied) beside health and
/// reflection, through [`builder`]'s layers, on `listener` until `shutdown` resolves: the
/// one way every service serves. Health follows the database and `healthy`, and turns
/// NOT_SERVING before in-flight calls are drained. The caller closes its pool afterwards,
/// once its own tasks are done with it.
#[allow(clippy::too_many_arguments)]
pub async fn serve_api<S>(
    service: &'static str,
    grpc_name: &'static str,
    config: &ServerConfig,
    pool: &PgPool,
    healthy: impl Fn() -> bool + Send + 'static,
    api: S,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()>
where
    S: tonic::codegen::Service<
            tonic::codegen::http::Request<tonic::body::Body>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (reporter, health, reflection_v1, reflection_v1alpha) =
        standard_services(grpc_name, &config.limits);
    set_health(&reporter, grpc_name, true).await;
    let _health_watch = watch_health(reporter.clone(), grpc_name, pool.clone(), healthy);
    let router = builder(service, config)?
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(api);
    tracing::info!(service, addr = %listener.local_addr()?, "listening");
    serve(router, listener, reporter, grpc_name, shutdown).await?;
    Ok(())
}
