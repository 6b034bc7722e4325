//! Scenario 8: reads from two query-service instances, one on the primary and one on a
//! streaming hot standby (`--replica`), each beside pgbench on its own database; then the
//! replica's read-your-writes latency and the replication lag at a fixed command rate.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hdrhistogram::Histogram;
use sqlx::PgPool;

use crate::{
    Mode,
    client::Channel,
    lifecycle::{ColdSet, get_orders_at_random, list_customer_orders, page_script, point_script},
    load::{CONNECTIONS, create_then_read, pgbench},
    measure::{Stats, fixed_rate},
    report::Row,
};

/// Where the replica scenario runs.
pub struct Targets<'a> {
    /// The primary's query-service (which projects).
    pub primary: &'a Arc<Vec<Channel>>,
    /// The standby's query-service (`--replica`).
    pub replica: &'a Arc<Vec<Channel>>,
    /// command-service, for the writes of the lag measurement.
    pub commands: &'a Arc<Vec<Channel>>,
    /// The primary database.
    pub primary_url: &'a str,
    /// The standby database.
    pub standby_url: &'a str,
    /// The pgbench binary.
    pub pgbench: &'a str,
}

/// Runs the scenario.
pub async fn run(mode: Mode, pool: &PgPool, t: Targets<'_>) -> anyhow::Result<Vec<Row>> {
    let d = mode.duration();
    let n = mode.cold_rows();
    let mut rows = Vec::new();
    eprintln!("8. reads on the primary and on a streaming standby");
    let ColdSet { ids, customers } = ColdSet::load(mode, pool).await?;
    let (point, page) = (point_script(mode), page_script(mode));
    for clients in mode.read_clients() {
        for (name, channels, url) in [
            ("primary", t.primary, t.primary_url),
            ("standby", t.replica, t.standby_url),
        ] {
            let gets = get_orders_at_random(
                &format!("GetOrder on the {name}'s query-service x{clients}"),
                channels,
                &ids,
                clients,
                d,
            )
            .await;
            let lists = list_customer_orders(
                &format!("ListOrders on the {name}'s query-service x{clients}"),
                channels,
                &customers,
                clients,
                d,
            )
            .await;
            eprintln!("  pgbench point SELECT and customer page on the {name} x{clients}");
            let select = pgbench(t.pgbench, url, clients, d, &point)?;
            let pages = pgbench(t.pgbench, url, clients, d, &page)?;
            rows.push(Row::new(
                format!("GetOrder at random over {n} orders, query-service on the {name}, {clients} clients"),
                gets,
                Some((&format!("pgbench point SELECT on the {name}"), select)),
                "",
            ));
            rows.push(Row::new(
                format!(
                    "ListOrders (first page of 10), query-service on the {name}, {clients} clients"
                ),
                lists,
                Some((
                    &format!("pgbench customer page SELECT on the {name}"),
                    pages,
                )),
                "",
            ));
        }
    }
    let (rate, _) = mode.rates();
    rows.extend(lag(mode, rate, pool, &t).await?);
    Ok(rows)
}

/// At `rate` commands/s: from each CreateOrder's response to its order visible on the
/// replica (read with the command's consistency token), and the standby's replay lag and
/// bytes behind, sampled on the primary every 20 ms.
async fn lag(mode: Mode, rate: u64, pool: &PgPool, t: &Targets<'_>) -> anyhow::Result<Vec<Row>> {
    let d = mode.duration();
    eprintln!("  replica read-your-writes and replication lag at {rate} commands/s");
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(Mutex::new((
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
        Histogram::<u64>::new_with_bounds(1, 1 << 40, 3)?,
    )));
    let sampler = {
        let (stop, samples, pool) = (stop.clone(), samples.clone(), pool.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let row: Option<(Option<i64>, Option<f64>)> = sqlx::query_as(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint, \
                            (extract(epoch FROM replay_lag) * 1000000)::float8 \
                     FROM pg_stat_replication LIMIT 1",
                )
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten();
                if let Some((bytes, micros)) = row {
                    let mut s = samples.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = s.0.record(micros.unwrap_or(0.0).max(1.0) as u64);
                    let _ = s.1.record(bytes.unwrap_or(0).max(1) as u64);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let (c, q) = (t.commands.clone(), t.replica.clone());
    let visible = fixed_rate(
        &format!("CreateOrder at {rate}/s, read on the replica"),
        rate,
        d,
        move |seq| {
            let slot = seq as usize % CONNECTIONS;
            create_then_read(c[slot].clone(), q[slot].clone())
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    let (replay, bytes) = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut replay_stats = Stats::from_histogram(&replay, 0, d);
    replay_stats.rate = rate as f64;
    Ok(vec![
        Row::new(
            format!(
                "replica read-your-writes at {rate} commands/s (command response → visible on the standby's query-service, with the token)"
            ),
            visible,
            None,
            "",
        ),
        Row::new(
            format!(
                "replication replay lag at {rate} commands/s, sampled every 20 ms (bytes behind: p50 {}, p99 {}, max {})",
                bytes.value_at_quantile(0.5),
                bytes.value_at_quantile(0.99),
                bytes.max()
            ),
            replay_stats,
            None,
            "",
        ),
    ])
}
