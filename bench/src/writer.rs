//! What command-service's group-commit writer did while a measurement ran, read from its
//! `/metrics` at both ends: how many appends it made, how many commands each carried, how
//! long they took, and so how much of the time the one writer was busy. A command waits
//! for the append in flight to end before its own can start, so these figures say how much
//! of a saga step's time is the writer's.
//!
//! `BENCH_COMMAND_METRICS` names the endpoint (`scripts/bench` sets it unless
//! `--no-metrics`); without it, or when the endpoint does not answer, nothing is reported.

use std::time::Duration;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::measure::Stats;

/// The writer's running totals at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Totals {
    appends: f64,
    seconds: f64,
    commands: f64,
}

impl Totals {
    /// Reads them now.
    pub async fn read() -> Option<Totals> {
        let addr = std::env::var("BENCH_COMMAND_METRICS").ok()?;
        let text = tokio::time::timeout(Duration::from_secs(2), get(&addr))
            .await
            .ok()?
            .ok()?;
        Some(Totals {
            appends: sum(&text, "event_store_append_seconds_count")?,
            seconds: sum(&text, "event_store_append_seconds_sum")?,
            commands: sum(&text, "event_store_group_commit_commands_sum")?,
        })
    }

    /// What the writer did between `self` and `later`, `elapsed` apart: appends/s as the
    /// rate, their mean duration as the mean, and a description.
    pub fn until(self, later: Totals, elapsed: Duration) -> (Stats, String) {
        let appends = later.appends - self.appends;
        let seconds = later.seconds - self.seconds;
        let commands = later.commands - self.commands;
        let per = |x: f64| if appends > 0.0 { x / appends } else { 0.0 };
        let stats = Stats {
            ops: appends as u64,
            rate: appends / elapsed.as_secs_f64(),
            mean_us: Some(per(seconds) * 1e6),
            ..Stats::default()
        };
        let words = format!(
            "{:.1} commands an append, {:.2} ms an append on average, the writer busy {:.0}% of the time",
            per(commands),
            per(seconds) * 1e3,
            100.0 * seconds / elapsed.as_secs_f64()
        );
        (stats, words)
    }
}

/// `GET /metrics` over HTTP/1.0 (so the body is not chunked), the body as text.
async fn get(addr: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, body)| body.to_owned()))
}

/// The sum of a metric's samples (every label set) in Prometheus' text format.
fn sum(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next()?.parse::<f64>().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_metric_over_its_labels_and_ignores_longer_names() {
        let text = "# HELP x\nevent_store_append_seconds_sum 1.5\n\
                    event_store_append_seconds_sum_other 9\n\
                    event_store_append_seconds_count{a=\"b\"} 2\n\
                    event_store_append_seconds_count{a=\"c\"} 3\n";
        assert_eq!(sum(text, "event_store_append_seconds_sum"), Some(1.5));
        assert_eq!(sum(text, "event_store_append_seconds_count"), Some(5.0));
        assert_eq!(sum(text, "event_store_group_commit_commands_sum"), None);
    }

    #[test]
    fn the_writers_figures_are_the_differences_over_the_time_between() {
        let before = Totals {
            appends: 100.0,
            seconds: 0.5,
            commands: 300.0,
        };
        let after = Totals {
            appends: 300.0,
            seconds: 1.5,
            commands: 1_300.0,
        };
        let (stats, words) = before.until(after, Duration::from_secs(2));
        assert_eq!(stats.rate, 100.0);
        assert_eq!(stats.mean_us, Some(5_000.0));
        assert_eq!(
            words,
            "5.0 commands an append, 5.00 ms an append on average, the writer busy 50% of the time"
        );
    }
}
