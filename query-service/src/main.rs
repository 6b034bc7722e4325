//! Starts query-service: configuration, logging, then serve or rebuild.

use clap::Parser;
use query_service::{Cli, Subcommand};

/// mimalloc: the services allocate many small, short-lived buffers (requests, JSON, rows),
/// and glibc's allocator took about a sixth of their CPU under load (perf).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = service_runtime::telemetry::init(cli.config.log_format, "query-service");
    match cli.command.unwrap_or(Subcommand::Serve) {
        Subcommand::Serve => {
            let listener = tokio::net::TcpListener::bind(cli.config.listen)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", cli.config.listen))?;
            query_service::run(cli.config, listener, service_runtime::shutdown::signal()).await
        }
        Subcommand::Rebuild => query_service::run_rebuild(cli.config).await,
    }
}
