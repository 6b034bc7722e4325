//! The benchmark harness behind `scripts/bench`: drives the real services over gRPC on
//! loopback, measures each scenario beside the limit it is bounded by (in the same run, on
//! the same machine), and writes a Markdown table and a JSON file.
//!
//! `bench load` runs scenarios 1 to 4 against running services; `bench rebuild` runs
//! scenario 5 against the database alone (query-service stopped, so the live projector does
//! not compete); `bench report` merges their results.

// A load generator does arithmetic on counters, rates and durations whose ranges its own
// settings bound (sequence numbers, clients, seconds); the workspace's cast lints are for
// values that come from outside.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss
)]

mod client;
mod lifecycle;
mod load;
mod measure;
mod replica;
mod report;
mod writer;

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

/// How long and how big.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// A few seconds, tiny data: proves the harness runs (scripts/test).
    Smoke,
    /// Under 30 seconds.
    Quick,
    /// The real run: `scripts/bench` takes about 10 minutes with it.
    Full,
}

impl Mode {
    /// Seconds per measured scenario.
    pub fn duration(self) -> Duration {
        match self {
            Mode::Smoke => Duration::from_millis(700),
            Mode::Quick => Duration::from_millis(1500),
            Mode::Full => Duration::from_secs(10),
        }
    }

    /// Client counts for the concurrency sweeps.
    pub fn clients(self) -> Vec<usize> {
        match self {
            Mode::Smoke => vec![1, 4],
            _ => vec![1, 16, 64],
        }
    }

    /// Orders in the read model for the query scenario.
    pub fn read_rows(self) -> i64 {
        match self {
            Mode::Smoke => 1_000,
            Mode::Quick => 10_000,
            Mode::Full => 100_000,
        }
    }

    /// Orders in the read model for the cold reads (more than query-service keeps in memory).
    pub fn cold_rows(self) -> i64 {
        match self {
            Mode::Smoke => 2_000,
            Mode::Quick => 50_000,
            Mode::Full => 300_000,
        }
    }

    /// Client counts for the read scenarios.
    pub fn read_clients(self) -> Vec<usize> {
        match self {
            Mode::Smoke => vec![4],
            _ => vec![16, 64],
        }
    }

    /// Events in the log for the rebuild scenario.
    pub fn rebuild_events(self) -> i64 {
        match self {
            Mode::Smoke => 5_000,
            Mode::Quick => 50_000,
            Mode::Full => 1_000_000,
        }
    }

    /// The fixed command rate of the lag scenario, and the order rate of the saga scenario.
    pub fn rates(self) -> (u64, u64) {
        match self {
            Mode::Smoke => (100, 20),
            _ => (1_000, 200),
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Benchmarks the order system beside the limits of this machine."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scenarios 1-4 against running services, with their baselines.
    Load {
        #[arg(long, value_enum, default_value_t = Mode::Full)]
        mode: Mode,
        #[arg(long, default_value = "http://127.0.0.1:50061")]
        command_url: String,
        #[arg(long, default_value = "http://127.0.0.1:50062")]
        query_url: String,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// pgbench binary.
        #[arg(long, default_value = "pgbench")]
        pgbench: String,
        /// Run only these scenarios (comma-separated); all by default.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<load::Scenario>,
        /// The lifecycle scenario's mix of commands, in percent.
        #[arg(long, default_value = "add=50,create=25,place=25")]
        mix: lifecycle::Mix,
        /// Where results go (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Scenario 7: cold reads, against a query-service restarted after `load` seeded them.
    Cold {
        #[arg(long, value_enum, default_value_t = Mode::Full)]
        mode: Mode,
        #[arg(long, default_value = "http://127.0.0.1:50062")]
        query_url: String,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// pgbench binary.
        #[arg(long, default_value = "pgbench")]
        pgbench: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Scenario 8: reads on the primary's and a standby's query-service, and the
    /// replication lag, after `load` seeded the orders.
    Replica {
        #[arg(long, value_enum, default_value_t = Mode::Full)]
        mode: Mode,
        #[arg(long, default_value = "http://127.0.0.1:50061")]
        command_url: String,
        /// The primary's query-service.
        #[arg(long, default_value = "http://127.0.0.1:50062")]
        query_url: String,
        /// The standby's query-service (`--replica`).
        #[arg(long)]
        replica_url: String,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        /// The standby's database.
        #[arg(long)]
        standby_url: String,
        /// pgbench binary.
        #[arg(long, default_value = "pgbench")]
        pgbench: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Scenario 5 (rebuild) and the ordered-scan baseline, against the database alone.
    Rebuild {
        #[arg(long, value_enum, default_value_t = Mode::Full)]
        mode: Mode,
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Merges result files into a Markdown table and one JSON file.
    Report {
        /// Result files from `load` and `rebuild`.
        inputs: Vec<PathBuf>,
        /// The Markdown table.
        #[arg(long)]
        markdown: PathBuf,
        /// The merged JSON.
        #[arg(long)]
        json: PathBuf,
    },
}

/// The same allocator as the services, so the load generator costs the machine little.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Load {
            mode,
            command_url,
            query_url,
            database_url,
            pgbench,
            only,
            mix,
            out,
        } => {
            let rows = load::run(
                mode,
                &command_url,
                &query_url,
                &database_url,
                &pgbench,
                &only,
                mix,
            )
            .await?;
            report::write_rows(&out, &rows)
        }
        Command::Cold {
            mode,
            query_url,
            database_url,
            pgbench,
            out,
        } => {
            let pool = sqlx::PgPool::connect(&database_url).await?;
            let mut queries = Vec::new();
            for _ in 0..load::CONNECTIONS {
                queries.push(client::connect(&query_url).await?);
            }
            let rows = lifecycle::cold(
                mode,
                &pool,
                &std::sync::Arc::new(queries),
                &pgbench,
                &database_url,
            )
            .await?;
            report::write_rows(&out, &rows)
        }
        Command::Replica {
            mode,
            command_url,
            query_url,
            replica_url,
            database_url,
            standby_url,
            pgbench,
            out,
        } => {
            let pool = sqlx::PgPool::connect(&database_url).await?;
            let connect = |url: String| async move {
                let mut channels = Vec::new();
                for _ in 0..load::CONNECTIONS {
                    channels.push(client::connect(&url).await?);
                }
                anyhow::Ok(std::sync::Arc::new(channels))
            };
            let primary = connect(query_url).await?;
            let replica = connect(replica_url).await?;
            let commands = connect(command_url).await?;
            let rows = replica::run(
                mode,
                &pool,
                replica::Targets {
                    primary: &primary,
                    replica: &replica,
                    commands: &commands,
                    primary_url: &database_url,
                    standby_url: &standby_url,
                    pgbench: &pgbench,
                },
            )
            .await?;
            report::write_rows(&out, &rows)
        }
        Command::Rebuild {
            mode,
            database_url,
            out,
        } => {
            let rows = load::rebuild(mode, &database_url).await?;
            report::write_rows(&out, &rows)
        }
        Command::Report {
            inputs,
            markdown,
            json,
        } => report::merge(&inputs, &markdown, &json),
    }
}
