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

/// The layers every service's server runs its calls through.
pub type Layers = tower_layer::Stack<crate::rpc_metrics::RpcMetricsLayer, tower_layer::Identity>;

/// The server every service starts from: a span per call (continuing the caller's trace,
/// see [`crate::telemetry::server_span`]) and RED metrics per RPC
/// ([`crate::rpc_metrics`]), both labelled with `service` (`command-service`, ...).
pub fn builder(service: &'static str) -> tonic::transport::Server<Layers> {
    tonic::transport::Server::builder()
        .trace_fn(move |request| crate::telemetry::server_span(service, request))
        .layer(crate::rpc_metrics::RpcMetricsLayer::new(service))
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
