//! Measuring: closed-loop and fixed-rate load, HDR histograms, progress lines.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// One measured figure.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// Operations completed.
    pub ops: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Operations per second.
    pub rate: f64,
    /// Latency percentiles in microseconds (absent for baselines that only report a mean).
    pub p50_us: Option<u64>,
    /// 95th percentile.
    pub p95_us: Option<u64>,
    /// 99th percentile.
    pub p99_us: Option<u64>,
    /// 99.9th percentile.
    pub p999_us: Option<u64>,
    /// Slowest.
    pub max_us: Option<u64>,
    /// Mean latency in microseconds.
    pub mean_us: Option<f64>,
}

/// A histogram of microseconds, 1 µs to 60 s, 3 significant digits (every latency here).
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

impl Stats {
    /// From a histogram of microseconds.
    pub fn from_histogram(h: &Histogram<u64>, errors: u64, elapsed: Duration) -> Stats {
        Stats {
            ops: h.len(),
            errors,
            rate: h.len() as f64 / elapsed.as_secs_f64(),
            p50_us: Some(h.value_at_quantile(0.50)),
            p95_us: Some(h.value_at_quantile(0.95)),
            p99_us: Some(h.value_at_quantile(0.99)),
            p999_us: Some(h.value_at_quantile(0.999)),
            max_us: Some(h.max()),
            mean_us: Some(h.mean()),
        }
    }
}

fn progress(
    label: String,
    done: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let n = done.load(Ordering::Relaxed);
            eprintln!(
                "    {label}: {n} ops after {:.0}s",
                started.elapsed().as_secs_f64()
            );
        }
    })
}

/// `clients` tasks each run `op` back to back for `duration`.
pub async fn closed_loop<F, Fut>(label: &str, clients: usize, duration: Duration, op: F) -> Stats
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    eprintln!("  {label}");
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = progress(label.to_owned(), done.clone(), stop.clone());
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let op = op.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let mut h = histogram();
                let mut errors = 0;
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if op(client, seq).await {
                        let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors += 1;
                    }
                    seq += 1;
                }
                (h, errors)
            })
        })
        .collect();
    let mut total = histogram();
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await.expect("load task");
        total.add(&h).expect("same histogram bounds");
        errors += e;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    ticker.abort();
    Stats::from_histogram(&total, errors, elapsed)
}

/// Starts `op` `rate` times a second for `duration` (open loop: a slow operation does not
/// slow the arrivals); each returns the latency to record, or `None` on failure.
pub async fn fixed_rate<F, Fut>(label: &str, rate: u64, duration: Duration, op: F) -> Stats
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Duration>> + Send + 'static,
{
    eprintln!("  {label}");
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = progress(label.to_owned(), done.clone(), stop.clone());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let total = (rate as f64 * duration.as_secs_f64()) as u64;
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for seq in 0..total {
        interval.tick().await;
        let op = op.clone();
        let tx = tx.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let result = op(seq).await;
            done.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(result);
        });
    }
    drop(tx);
    let mut h = histogram();
    let mut errors = 0;
    while let Some(result) = rx.recv().await {
        match result {
            Some(latency) => {
                let _ = h.record(latency.as_micros().max(1) as u64);
            }
            None => errors += 1,
        }
    }
    stop.store(true, Ordering::Relaxed);
    ticker.abort();
    let mut stats = Stats::from_histogram(&h, errors, started.elapsed());
    stats.rate = h.len() as f64 / duration.as_secs_f64();
    stats
}
