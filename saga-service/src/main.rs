//! Starts saga-service: configuration, logging, then [`saga_service::run`].

use clap::Parser;
use saga_service::Config;

/// mimalloc: the services allocate many small, short-lived buffers (requests, JSON, rows),
/// and glibc's allocator took about a sixth of their CPU under load (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = service_runtime::telemetry::init(config.log_format, "saga-service");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    saga_service::run(config, listener, service_runtime::shutdown::signal()).await
}
