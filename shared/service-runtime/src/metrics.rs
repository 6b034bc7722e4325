//! Prometheus metrics: the process-wide recorder (`metrics` facade, rendered by
//! `metrics-exporter-prometheus`), the `/metrics` endpoint each service serves on its own
//! port, and the samplers every service shares (its database pool).
//!
//! The crate's own HTTP listener is not used: it cannot bind port 0 and say which port it
//! got, which tests need, and it would add a second HTTP server stack; `/metrics` is one
//! GET answered here in a few lines.
//!
//! Names follow Prometheus conventions: `_total` counters, `_seconds` and base units.

use std::{
    net::SocketAddr,
    sync::OnceLock,
    time::{Duration, Instant},
};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::task::AbortOnDrop;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets (seconds): from 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Batch-size buckets (commands, events or reads per statement).
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// The histograms that count things rather than time.
pub const SIZE_HISTOGRAMS: [&str; 4] = [
    "event_store_group_commit_commands",
    "event_store_group_commit_events",
    "query_order_reads_per_query",
    "saga_rows_per_statement",
];

/// Installs the process-wide recorder once and returns its handle (several services in
/// one test process share it; their series differ by the `service` label).
pub fn recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("the buckets are not empty");
            for name in SIZE_HISTOGRAMS {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.into()), SIZE_BUCKETS)
                    .expect("the buckets are not empty");
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; the handle then renders
            // nothing, which the tests would show.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe();
            handle
        })
        .clone()
}

/// Every metric the services record, with its help text: one list, so `/metrics` says
/// what each series means (and `promtool check metrics` passes).
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    // Every service.
    describe_counter!(
        "grpc_server_handled_total",
        "RPCs completed, by service, gRPC service, method and status code."
    );
    describe_histogram!(
        "grpc_server_handling_seconds",
        Unit::Seconds,
        "RPC latency, from the request to the last byte of the response."
    );
    describe_gauge!(
        "db_pool_connections",
        "Database connections open (state=open) and idle (state=idle)."
    );
    describe_gauge!(
        "db_pool_max_connections",
        "The most database connections the pool opens."
    );
    describe_histogram!(
        "db_pool_acquire_seconds",
        Unit::Seconds,
        "How long taking a connection from the pool waited (one probe every 5 s)."
    );
    // command-service and the event store.
    describe_counter!(
        "event_store_events_appended_total",
        "Events appended, by event type."
    );
    describe_histogram!(
        "event_store_append_seconds",
        Unit::Seconds,
        "Duration of one append statement (a group commit of one or more commands)."
    );
    describe_histogram!(
        "event_store_group_commit_commands",
        "Commands written by one append statement."
    );
    describe_histogram!(
        "event_store_group_commit_events",
        "Events written by one append statement."
    );
    describe_counter!(
        "command_version_conflicts_total",
        "Commands that met a stale version (retried, or refused with ABORTED when pinned)."
    );
    describe_counter!(
        "command_redecisions_total",
        "Commands decided again: after a version conflict (reason=conflict), or because cached state could not be confirmed (reason=unverified)."
    );
    describe_counter!(
        "command_replays_total",
        "Commands answered from the idempotency log (a retry of a recorded command id)."
    );
    describe_counter!(
        "command_aggregate_cache_total",
        "Aggregate loads from command-service's cache, by result (hit, miss)."
    );
    describe_counter!(
        "command_snapshots_written_total",
        "Aggregate snapshots written."
    );
    describe_gauge!(
        "command_saga_backlog",
        "Placed orders whose saga has not finished, as last read from the saga_backlog view."
    );
    describe_counter!(
        "command_backpressure_refusals_total",
        "PlaceOrder calls refused with RESOURCE_EXHAUSTED because the saga backlog was full."
    );
    describe_counter!(
        "command_voids_total",
        "VoidCommand calls, by result (voided: it had not run; ran: it had)."
    );
    // query-service.
    describe_counter!(
        "projection_events_applied_total",
        "Events folded into the read models, by projection."
    );
    describe_counter!(
        "projection_events_skipped_total",
        "Events of unknown types skipped, by projection."
    );
    describe_histogram!(
        "projection_batch_seconds",
        Unit::Seconds,
        "Duration of one projection batch (read models and checkpoint, one transaction)."
    );
    describe_gauge!(
        "projection_checkpoint_position",
        "Global position of the last event at or before each follower's checkpoint."
    );
    describe_gauge!(
        "projection_lag_events",
        "Events each follower reads that the log can hand out after its checkpoint."
    );
    describe_gauge!(
        "projection_lag_seconds",
        Unit::Seconds,
        "Age of the oldest event each follower has yet to read."
    );
    describe_gauge!(
        "projection_leader",
        "1 on the query-service instance that applies events, 0 on standbys."
    );
    describe_gauge!(
        "event_log_head_position",
        "Global position of the newest event readers may see."
    );
    describe_gauge!(
        "event_log_held_back_events",
        "Committed events no reader may see yet, because an older transaction is still open."
    );
    describe_gauge!(
        "event_log_held_back_seconds",
        Unit::Seconds,
        "Age of the oldest held-back event: how long the log's horizon has been behind its head."
    );
    describe_gauge!(
        "query_watch_streams",
        "WatchOrder streams open on this instance."
    );
    describe_counter!(
        "query_consistency_waits_total",
        "Reads that waited for a consistency token, by result (reached, timed_out)."
    );
    describe_histogram!(
        "query_consistency_wait_seconds",
        Unit::Seconds,
        "How long a read waited for its consistency token."
    );
    describe_histogram!(
        "query_order_reads_per_query",
        "Reads of an order's row (GetOrder misses, WatchOrder checks) answered by one query."
    );
    // saga-service.
    describe_gauge!(
        "sagas",
        "Sagas not yet finished, by state (running, compensating, needs_attention); \
         finished ones are counted by saga_finished_total."
    );
    describe_counter!(
        "saga_started_total",
        "Sagas started (one per placed order)."
    );
    describe_counter!(
        "saga_handed_off_total",
        "Sagas the follower started with its own instance's lease, for an idle worker to drive without a claim."
    );
    describe_counter!(
        "saga_claims_total",
        "Looks for a due saga in the saga table, by result (found, none, error): made when a claim is owed or the idle poll asks."
    );
    describe_histogram!(
        "saga_rows_per_statement",
        "Saves and checks of leased sagas that shared one statement."
    );
    describe_counter!(
        "saga_finished_total",
        "Sagas that reached a final state, by state (completed, compensated)."
    );
    describe_counter!(
        "saga_compensations_started_total",
        "Sagas that turned to compensation."
    );
    describe_counter!("saga_parked_total", "Sagas parked as needs_attention.");
    describe_histogram!(
        "saga_step_seconds",
        Unit::Seconds,
        "Duration of one saga call to command-service, by step and outcome."
    );
    describe_counter!(
        "saga_step_retries_total",
        "Saga step attempts that got no trustworthy answer, by step."
    );
    describe_counter!(
        "saga_deadline_expiries_total",
        "Saga steps still unanswered at their deadline (then settled), by step."
    );
    describe_counter!(
        "saga_voids_total",
        "Voids of saga steps in doubt, by step and result."
    );
    describe_gauge!(
        "saga_follower_leader",
        "1 on the saga-service instance that follows the log, 0 otherwise."
    );
}

/// Where a service serves `/metrics`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<SocketAddr>);

impl MetricsAddr {
    /// No metrics endpoint.
    pub const OFF: MetricsAddr = MetricsAddr(None);
}

impl std::str::FromStr for MetricsAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" | "" => Ok(MetricsAddr(None)),
            addr => addr
                .parse()
                .map(|a| MetricsAddr(Some(a)))
                .map_err(|e| format!("{addr:?}: {e} (an address such as 0.0.0.0:9101, or off)")),
        }
    }
}

impl std::fmt::Display for MetricsAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("off"),
        }
    }
}

/// Serves `GET /metrics` (Prometheus text format) on `listener` until dropped.
pub fn serve(listener: TcpListener) -> AbortOnDrop<()> {
    let handle = recorder();
    AbortOnDrop::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut request = vec![0u8; 4096];
                let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut request))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                let line = String::from_utf8_lossy(&request[..read]);
                let response = if line.starts_with("GET /metrics ") || line.starts_with("GET / ") {
                    let body = handle.render();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .into()
                };
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    })
}

/// Binds `addr` and serves `/metrics` there; `None` when metrics are off.
pub async fn start(addr: MetricsAddr, service: &str) -> std::io::Result<Option<AbortOnDrop<()>>> {
    let Some(addr) = addr.0 else {
        tracing::info!(service, "metrics are off");
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(service, addr = %listener.local_addr()?, "serving Prometheus metrics at /metrics");
    Ok(Some(serve(listener)))
}

/// Samples `pool` every few seconds: connections open and idle, and how long taking a
/// connection waits (one probe acquire per sample).
pub fn sample_pool(pool: PgPool, service: &'static str) -> AbortOnDrop<()> {
    AbortOnDrop::spawn(async move {
        loop {
            let size = f64::from(pool.size());
            let idle = pool.num_idle() as f64;
            metrics::gauge!("db_pool_connections", "service" => service, "state" => "open")
                .set(size);
            metrics::gauge!("db_pool_connections", "service" => service, "state" => "idle")
                .set(idle);
            metrics::gauge!("db_pool_max_connections", "service" => service)
                .set(f64::from(pool.options().get_max_connections()));
            let started = Instant::now();
            if let Ok(conn) = pool.acquire().await {
                metrics::histogram!("db_pool_acquire_seconds", "service" => service)
                    .record(started.elapsed().as_secs_f64());
                drop(conn);
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, fs, path::Path};

    /// The metric names in `text` that follow one of `macros` (`counter!(` and so on),
    /// skipping any whose macro name is the tail of a longer identifier.
    fn names_after(text: &str, macros: &[&str]) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for mac in macros {
            for (at, _) in text.match_indices(mac) {
                let before = text[..at].chars().next_back();
                if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                let rest = text[at + mac.len()..].trim_start();
                if let Some(quoted) = rest.strip_prefix('"') {
                    let name: String = quoted.chars().take_while(|&c| c != '"').collect();
                    if !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    {
                        names.insert(name);
                    }
                }
            }
        }
        names
    }

    fn rust_sources(dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).expect("a source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                rust_sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(fs::read_to_string(&path).expect("a readable source file"));
            }
        }
    }

    /// `promtool check metrics` refuses a series without help text, so a metric recorded
    /// anywhere in the services must be described in `describe()`.
    #[test]
    fn every_metric_the_services_record_is_described() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut sources = Vec::new();
        for crate_dir in ["command-service", "query-service", "saga-service", "shared"] {
            rust_sources(&root.join(crate_dir), &mut sources);
        }
        let recorded: BTreeSet<String> = sources
            .iter()
            .flat_map(|text| names_after(text, &["counter!(", "gauge!(", "histogram!("]))
            .collect();
        let described = names_after(
            include_str!("metrics.rs"),
            &[
                "describe_counter!(",
                "describe_gauge!(",
                "describe_histogram!(",
            ],
        );
        assert!(recorded.len() > 20, "the scan found the services' metrics");
        let missing: Vec<_> = recorded.difference(&described).collect();
        assert!(missing.is_empty(), "metrics without help text: {missing:?}");
    }
}
