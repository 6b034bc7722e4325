//! Starts command-service: configuration, logging, then [`command_service::run`].

use clap::Parser;
use command_service::Config;

/// mimalloc: the services allocate many small, short-lived buffers (requests, JSON, rows),
/// and glibc's allocator took about a sixth of their CPU under load (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let _telemetry = service_runtime::telemetry::init(config.log_format, "command-service");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    command_service::run(config, listener, service_runtime::shutdown::signal()).await
}
