//! The scenarios and their baselines.

use std::{
    process::Command as Process,
    sync::Arc,
    time::{Duration, Instant},
};

use contracts::orders::v1::{
    self as pb, command_service_client::CommandServiceClient,
    query_service_client::QueryServiceClient,
};
use event_store::{EventStore, Position, PostgresEventStore};
use futures::StreamExt;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    Mode,
    client::{Channel, connect},
    measure::{Stats, closed_loop, fixed_rate},
    report::Row,
};

/// Connections per service: one HTTP/2 connection each, shared round-robin by clients.
pub(crate) const CONNECTIONS: usize = 4;

async fn channels(url: &str) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..CONNECTIONS {
        out.push(connect(url).await?);
    }
    Ok(out)
}

fn eur(amount_minor: i64) -> Option<pb::Money> {
    Some(pb::Money {
        amount_minor,
        currency: "EUR".into(),
    })
}

pub(crate) fn id() -> String {
    Uuid::new_v4().to_string()
}

/// Runs a pgbench script; returns transactions/s and mean latency.
pub(crate) fn pgbench(
    pgbench: &str,
    url: &str,
    clients: usize,
    duration: Duration,
    script: &str,
) -> anyhow::Result<Stats> {
    let file = std::env::temp_dir().join(format!("bench-{}.sql", Uuid::new_v4()));
    std::fs::write(&file, script)?;
    let seconds = duration.as_secs().max(1).to_string();
    let output = Process::new(pgbench)
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &seconds,
            "-f",
        ])
        .arg(&file)
        .arg(url)
        .output()?;
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        anyhow::bail!(
            "pgbench failed: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let number_after = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    let tps = number_after("tps =").unwrap_or(0.0);
    let latency_ms = number_after("latency average =");
    let ops = number_after("number of transactions actually processed:").unwrap_or(0.0);
    Ok(Stats {
        ops: ops as u64,
        rate: tps,
        mean_us: latency_ms.map(|ms| ms * 1000.0),
        ..Stats::default()
    })
}

pub(crate) const INSERT_SCRIPT: &str = "INSERT INTO bench_events (event_id, aggregate_id, aggregate_type, version, event_type, \
     payload, metadata, occurred_at) VALUES (gen_random_uuid(), gen_random_uuid(), 'Order', 1, 'OrderCreated', \
     '{\"schema_version\": 2, \"currency\": \"EUR\", \"lines\": []}', '{}', now());\n";

/// pgbench's one-row INSERT into `bench_events` (the baseline for appends), then the table
/// emptied: its rows belong to no scenario, and left there they would have autovacuum work
/// through them in the middle of a later one.
pub(crate) async fn insert_baseline(
    pgbench_bin: &str,
    url: &str,
    pool: &PgPool,
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Stats> {
    let stats = pgbench(pgbench_bin, url, clients, duration, INSERT_SCRIPT)?;
    sqlx::query("TRUNCATE bench_events").execute(pool).await?;
    Ok(stats)
}

/// The scenarios `load` can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// 1: commands on distinct aggregates.
    Commands,
    /// 1b: commands on one hot aggregate.
    Hot,
    /// 2: GetOrder.
    Queries,
    /// 3: read-model lag.
    Lag,
    /// 4: the saga.
    Saga,
    /// 6: the order-lifecycle mix, closed and open loop, with the saga keeping up.
    Lifecycle,
    /// 7: cold reads (seeded here; read by `bench cold` after query-service restarts).
    Cold,
    /// 8: reads on a streaming standby (seeded here as for 7; read by `bench replica`).
    Replica,
}

/// Scenarios 1 to 4 (those in `only`, or all when it is empty).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mode: Mode,
    command_url: &str,
    query_url: &str,
    database_url: &str,
    pgbench_bin: &str,
    only: &[Scenario],
    mix: crate::lifecycle::Mix,
) -> anyhow::Result<Vec<Row>> {
    let wants = |scenario| only.is_empty() || only.contains(&scenario);
    let pool = PgPool::connect(database_url).await?;
    let commands = Arc::new(channels(command_url).await?);
    let queries = Arc::new(channels(query_url).await?);
    let d = mode.duration();
    let mut rows = Vec::new();
    sqlx::query("DROP TABLE IF EXISTS bench_events")
        .execute(&pool)
        .await?;
    sqlx::query("CREATE TABLE bench_events (LIKE events INCLUDING ALL)")
        .execute(&pool)
        .await?;

    let mut setup = CommandServiceClient::new(commands[0].clone());
    let command_clients = if wants(Scenario::Commands) {
        mode.clients()
    } else {
        vec![]
    };
    eprintln!("1. commands: one event each, on distinct aggregates");
    for &clients in &command_clients {
        let c = commands.clone();
        let customer = id();
        let figure = closed_loop(
            &format!("CreateOrder x{clients} clients"),
            clients,
            d,
            move |client, _| {
                let mut client = CommandServiceClient::new(c[client % CONNECTIONS].clone());
                let customer = customer.clone();
                async move {
                    client
                        .create_order(pb::CreateOrderRequest {
                            command_id: id(),
                            order_id: id(),
                            customer_id: customer,
                            currency: "EUR".into(),
                            lines: vec![],
                        })
                        .await
                        .is_ok()
                }
            },
        )
        .await;
        eprintln!("  pgbench one-row INSERT x{clients}");
        let baseline = insert_baseline(pgbench_bin, database_url, &pool, clients, d).await?;
        rows.push(Row::new(
            format!("commands/s, {clients} client(s)"),
            figure,
            Some(("pgbench one-row INSERT, same clients", baseline)),
            if clients == 64 {
                "≥ 1.0 × baseline"
            } else if clients == 1 {
                "p99 < 2 ms"
            } else {
                ""
            },
        ));
    }

    if wants(Scenario::Hot) {
        hot_aggregate(mode, &commands, &mut setup, &mut rows).await?;
    }
    if wants(Scenario::Queries) {
        queries_scenario(mode, &pool, &queries, pgbench_bin, database_url, &mut rows).await?;
    }
    if wants(Scenario::Lag) {
        lag_scenario(mode, &commands, &queries, &mut rows).await;
    }
    if wants(Scenario::Saga) {
        saga_scenario(mode, &commands, &queries, &mut setup, &mut rows).await?;
    }
    if wants(Scenario::Lifecycle) {
        let ctx = crate::lifecycle::Ctx {
            mode,
            pool: &pool,
            commands: &commands,
            queries: &queries,
            pgbench: pgbench_bin,
            database_url,
        };
        lifecycle_scenario(&ctx, &mut setup, mix, &mut rows).await?;
    }
    if wants(Scenario::Cold) || wants(Scenario::Replica) {
        crate::lifecycle::seed_cold(mode, &pool).await?;
    }
    Ok(rows)
}

/// Scenario 6: the order lifecycle, closed loop at each concurrency, then open loop at
/// shares of the mix's saturation, to find the highest rate served in full.
async fn lifecycle_scenario(
    ctx: &crate::lifecycle::Ctx<'_>,
    setup: &mut CommandServiceClient<Channel>,
    mix: crate::lifecycle::Mix,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    use crate::lifecycle;
    let mode = ctx.mode;
    eprintln!("6. the order lifecycle: {mix}");
    lifecycle::create_products(setup).await?;
    let concurrencies: &[usize] = if mode == Mode::Smoke { &[4] } else { &[16, 64] };
    // The rate the mix is served at in full: the closed loop's commands/s at 16 clients,
    // or, when the saga confirms fewer orders than that rate places, the rate whose
    // placements the saga confirms (backpressure refuses the rest).
    let place_share = f64::from(mix.place) / f64::from(mix.add + mix.create + mix.place);
    let mut saturation = 0.0;
    for &clients in concurrencies {
        let reached = lifecycle::closed(ctx, mix, clients, rows).await?;
        if saturation == 0.0 {
            saturation = if place_share > 0.0 {
                reached.commands.min(reached.confirmed / place_share)
            } else {
                reached.commands
            };
        }
    }
    let shares: &[u64] = if mode == Mode::Smoke {
        &[70]
    } else {
        &[50, 70, 90, 100]
    };
    // The highest rate served in full with every lower rate tried served too: a phase that
    // refuses or leaves a backlog sets the limit, whatever a later phase shows.
    let mut bounded = None;
    let mut served_so_far = true;
    for &share in shares {
        let rate = ((saturation * share as f64 / 100.0) as u64).max(10);
        let label = format!("{share}% of the mix's saturation");
        let (left, refused) = lifecycle::open(ctx, mix, rate, &label, rows).await;
        // Served in full: nothing refused, and less than one second's placements still
        // waiting for the saga at the end.
        served_so_far &= refused == 0 && (left as f64) <= rate as f64 * place_share;
        if served_so_far {
            bounded = Some(rate);
        }
    }
    rows.push(Row::new(
        match bounded {
            Some(rate) => format!(
                "highest open-loop lifecycle rate served in full, as was every lower rate tried (nothing refused, under a second's placements waiting at the end): {rate} commands/s ({:.0} orders placed/s)",
                rate as f64 * place_share
            ),
            None => "highest open-loop lifecycle rate served in full: not even the lowest tried".into(),
        },
        crate::measure::Stats {
            rate: bounded.unwrap_or(0) as f64,
            ..Default::default()
        },
        None,
        "",
    ));
    Ok(())
}

/// Scenario 1b: one hot aggregate.
async fn hot_aggregate(
    mode: Mode,
    commands: &Arc<Vec<Channel>>,
    setup: &mut CommandServiceClient<Channel>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let d = mode.duration();
    eprintln!("1b. commands on one hot aggregate");
    let hot_sku = format!("HOT-{}", &id()[..8]).to_uppercase();
    setup
        .create_product(pb::CreateProductRequest {
            command_id: id(),
            sku: hot_sku.clone(),
            name: "Hot product".into(),
            price: eur(100),
            initial_stock: 0,
        })
        .await?;
    let c = commands.clone();
    let hot_clients = *mode.clients().last().unwrap_or(&16);
    let hot = closed_loop(
        &format!("RestockProduct on one SKU x{hot_clients}"),
        hot_clients,
        d,
        move |client, _| {
            let mut client = CommandServiceClient::new(c[client % CONNECTIONS].clone());
            let sku = hot_sku.clone();
            async move {
                client
                    .restock_product(pb::RestockProductRequest {
                        command_id: id(),
                        sku,
                        quantity: 1,
                    })
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    rows.push(Row::new(
        format!("commands/s, one hot aggregate, {hot_clients} clients (errors = conflicts left after retries)"),
        hot,
        None,
        "",
    ));
    Ok(())
}

/// The gRPC limit: the cheapest call the server answers (a health check, with no
/// database), closed loop over the same connections.
pub(crate) async fn bare_rpc(queries: &Arc<Vec<Channel>>, clients: usize, d: Duration) -> Stats {
    let q = queries.clone();
    closed_loop(
        &format!("bare gRPC (health check) x{clients}"),
        clients,
        d,
        move |client, _| {
            let mut client =
                tonic_health::pb::health_client::HealthClient::new(q[client % CONNECTIONS].clone());
            async move {
                client
                    .check(tonic_health::pb::HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .is_ok()
            }
        },
    )
    .await
}

/// Scenario 2: GetOrder against the bare gRPC and PostgreSQL limits.
async fn queries_scenario(
    mode: Mode,
    pool: &PgPool,
    queries: &Arc<Vec<Channel>>,
    pgbench_bin: &str,
    database_url: &str,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let d = mode.duration();
    eprintln!(
        "2. queries: GetOrder on a read model of {} orders",
        mode.read_rows()
    );
    sqlx::query(
        "INSERT INTO read_orders (order_id, customer_id, status, currency, lines, total_minor, stock_status, \
           payment_status, created_at, updated_at, version) \
         SELECT md5('bench' || i)::uuid, md5('customer' || (i % 1000))::uuid, 'draft', 'EUR', '[]', 0, 'none', \
           'none', now(), now(), 1 \
         FROM generate_series(1, $1) AS i ON CONFLICT DO NOTHING",
    )
    .bind(mode.read_rows())
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE read_orders").execute(pool).await?;
    let ids: Arc<Vec<String>> = Arc::new(
        sqlx::query_scalar::<_, Uuid>(
            "SELECT md5('bench' || i)::uuid FROM generate_series(1, $1) AS i",
        )
        .bind(mode.read_rows())
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|u| u.to_string())
        .collect(),
    );
    // One read of every order first: the projecting instance then answers from memory,
    // as it does in steady state (a cold read costs a PostgreSQL round trip).
    eprintln!("  warming up: one GetOrder per order");
    let started = Instant::now();
    let warmed = futures::stream::iter(ids.iter().cloned())
        .map(|order_id| get_order(QueryServiceClient::new(queries[0].clone()), order_id))
        .buffer_unordered(32)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    eprintln!(
        "    {warmed} orders read in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let read_clients: Vec<usize> = if mode == Mode::Smoke {
        vec![4]
    } else {
        vec![16, 64]
    };
    for clients in read_clients {
        let q = queries.clone();
        let ids_for = ids.clone();
        let figure = closed_loop(
            &format!("GetOrder x{clients}"),
            clients,
            d,
            move |client, seq| {
                let order_id =
                    ids_for[(seq as usize * 7919 + client * 104_729) % ids_for.len()].clone();
                get_order(
                    QueryServiceClient::new(q[client % CONNECTIONS].clone()),
                    order_id,
                )
            },
        )
        .await;
        let echo = bare_rpc(queries, clients, d).await;
        eprintln!("  pgbench point SELECT x{clients}");
        let select = pgbench(
            pgbench_bin,
            database_url,
            clients,
            d,
            &format!(
                "\\set id random(1, {})\nSELECT * FROM read_orders WHERE order_id = md5('bench' || :id)::uuid;\n",
                mode.read_rows()
            ),
        )?;
        rows.push(Row::new(
            format!("queries/s (GetOrder), {clients} clients"),
            figure.clone(),
            Some(("bare tonic RPC on the same server", echo)),
            "≥ 0.8 × baseline",
        ));
        rows.push(Row::new(
            format!("queries/s (GetOrder), {clients} clients, vs PostgreSQL"),
            figure,
            Some(("pgbench point SELECT on read_orders", select)),
            "",
        ));
    }
    Ok(())
}

/// One GetOrder without a consistency token; true when it found the order.
async fn get_order(mut client: QueryServiceClient<Channel>, order_id: String) -> bool {
    client
        .get_order(pb::GetOrderRequest {
            order_id,
            consistency_token: String::new(),
        })
        .await
        .is_ok()
}

/// One CreateOrder, then a GetOrder with its consistency token: how long after the
/// command's response the order could be read (None when a call failed).
pub(crate) async fn create_then_read(commands: Channel, queries: Channel) -> Option<Duration> {
    let order_id = id();
    let written = CommandServiceClient::new(commands)
        .create_order(pb::CreateOrderRequest {
            command_id: id(),
            order_id: order_id.clone(),
            customer_id: id(),
            currency: "EUR".into(),
            lines: vec![],
        })
        .await
        .ok()?
        .into_inner();
    let responded = Instant::now();
    QueryServiceClient::new(queries)
        .get_order(pb::GetOrderRequest {
            order_id,
            consistency_token: written.result?.consistency_token,
        })
        .await
        .ok()?;
    Some(responded.elapsed())
}

/// Scenario 3: read-model lag at a fixed command rate.
async fn lag_scenario(
    mode: Mode,
    commands: &Arc<Vec<Channel>>,
    queries: &Arc<Vec<Channel>>,
    rows: &mut Vec<Row>,
) {
    let d = mode.duration();
    let (command_rate, _) = mode.rates();
    eprintln!("3. read-model lag at {command_rate} commands/s");
    let c = commands.clone();
    let q = queries.clone();
    let lag = fixed_rate(
        &format!("CreateOrder then GetOrder(token) at {command_rate}/s"),
        command_rate,
        d,
        move |seq| {
            let slot = seq as usize % CONNECTIONS;
            create_then_read(c[slot].clone(), q[slot].clone())
        },
    )
    .await;
    rows.push(Row::new(
        format!("read-model lag at {command_rate} commands/s (command response → visible; includes one GetOrder)"),
        lag,
        None,
        "p99 < 10 ms",
    ));
}

/// Scenario 4: the saga at a fixed order rate, then back to back.
async fn saga_scenario(
    mode: Mode,
    commands: &Arc<Vec<Channel>>,
    queries: &Arc<Vec<Channel>>,
    setup: &mut CommandServiceClient<Channel>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let d = mode.duration();
    let (_, order_rate) = mode.rates();
    eprintln!("4. saga: PlaceOrder → confirmed at {order_rate} orders/s");
    let saga_sku = format!("SAGA-{}", &id()[..8]).to_uppercase();
    setup
        .create_product(pb::CreateProductRequest {
            command_id: id(),
            sku: saga_sku.clone(),
            name: "Saga product".into(),
            price: eur(100),
            initial_stock: 1_000_000_000,
        })
        .await?;
    let saga_op = {
        let c = commands.clone();
        let q = queries.clone();
        move |seq: u64| {
            let mut commands = CommandServiceClient::new(c[seq as usize % CONNECTIONS].clone());
            let mut queries = QueryServiceClient::new(q[seq as usize % CONNECTIONS].clone());
            let sku = saga_sku.clone();
            async move { place_and_confirm(&mut commands, &mut queries, sku).await }
        }
    };
    let saga = fixed_rate(
        &format!("orders at {order_rate}/s"),
        order_rate,
        d,
        saga_op.clone(),
    )
    .await;
    rows.push(Row::new(
        format!("saga PlaceOrder → confirmed at {order_rate} orders/s"),
        saga,
        None,
        "p99 < 50 ms",
    ));
    let saturation = closed_loop("orders back to back x32", 32, d, move |client, seq| {
        let op = saga_op.clone();
        async move { op(seq * 64 + client as u64).await.is_some() }
    })
    .await;
    rows.push(Row::new(
        "saga saturation: confirmed orders/s, 32 clients".into(),
        saturation,
        None,
        "",
    ));
    Ok(())
}

/// Creates and places an order, then follows it until confirmed; the latency is from the
/// PlaceOrder response to the confirmed view.
async fn place_and_confirm(
    commands: &mut CommandServiceClient<Channel>,
    queries: &mut QueryServiceClient<Channel>,
    sku: String,
) -> Option<Duration> {
    let order_id = id();
    commands
        .create_order(pb::CreateOrderRequest {
            command_id: id(),
            order_id: order_id.clone(),
            customer_id: id(),
            currency: "EUR".into(),
            lines: vec![pb::OrderLine {
                sku,
                quantity: 1,
                unit_price: eur(100),
            }],
        })
        .await
        .ok()?;
    let placed = commands
        .place_order(pb::PlaceOrderRequest {
            command_id: id(),
            order_id: order_id.clone(),
            payment_method: "card".into(),
            expected_version: None,
        })
        .await
        .ok()?
        .into_inner();
    let responded = Instant::now();
    let mut stream = queries
        .watch_order(pb::WatchOrderRequest {
            order_id,
            consistency_token: placed.result?.consistency_token,
        })
        .await
        .ok()?
        .into_inner();
    while let Ok(Some(update)) = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .ok()?
    {
        match update.order?.status.as_str() {
            "confirmed" => return Some(responded.elapsed()),
            "cancelled" => return None,
            _ => {}
        }
    }
    None
}

/// Scenario 5: a full rebuild, beside an ordered scan of the same log.
pub async fn rebuild(mode: Mode, database_url: &str) -> anyhow::Result<Vec<Row>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(database_url)
        .await?;
    let have: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;
    let missing = (mode.rebuild_events() - have).max(0);
    eprintln!(
        "5. rebuild: seeding {missing} events (orders of 10 events each) to reach {}",
        mode.rebuild_events()
    );
    let orders = missing / 10;
    // One order: OrderCreated then nine lines, written as command-service writes them
    // (compact JSON, schema version first, correlation and causation ids).
    sqlx::query(
        "INSERT INTO events (event_id, aggregate_id, aggregate_type, version, event_type, payload, metadata, occurred_at) \
         SELECT gen_random_uuid(), md5('replay' || o)::uuid, 'Order', v, \
           CASE WHEN v = 1 THEN 'OrderCreated' ELSE 'OrderLineAdded' END, \
           CASE WHEN v = 1 THEN format('{\"schema_version\":2,\"order_id\":\"%s\",\"customer_id\":\"%s\",\"currency\":\"EUR\",\"lines\":[]}', \
                  md5('replay' || o)::uuid, md5('c' || (o % 5000))::uuid)::json \
                ELSE format('{\"schema_version\":1,\"order_id\":\"%s\",\"line\":{\"sku\":\"SKU-%s\",\"quantity\":1,\"unit_price\":{\"amount_minor\":100,\"currency\":\"EUR\"}}}', \
                  md5('replay' || o)::uuid, v)::json END, \
           format('{\"correlation_id\":\"%s\",\"causation_id\":\"%s\"}', md5('replay' || o)::uuid, gen_random_uuid())::json, \
           now() \
         FROM generate_series(1, $1) AS o, generate_series(1, 10) AS v ORDER BY o, v",
    )
    .bind(orders)
    .execute(&pool)
    .await?;
    sqlx::query("VACUUM ANALYZE events").execute(&pool).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await?;

    eprintln!("  ordered scan of {total} events (the replay limit)");
    let started = Instant::now();
    let scanned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT * FROM events ORDER BY transaction_id, global_position) AS ordered",
    )
    .fetch_one(&pool)
    .await?;
    let scan = Stats {
        ops: scanned as u64,
        rate: scanned as f64 / started.elapsed().as_secs_f64(),
        ..Stats::default()
    };

    eprintln!("  reading the whole log through the event store, 5000 per batch");
    let store = PostgresEventStore::new(pool.clone());
    let started = Instant::now();
    let mut after = Position::START;
    let mut read = 0u64;
    loop {
        let batch = store.read_all(after, 5000).await?;
        let Some(last) = batch.last() else { break };
        after = last.position;
        read += batch.len() as u64;
    }
    let read_rate = Stats {
        ops: read,
        rate: read as f64 / started.elapsed().as_secs_f64(),
        ..Stats::default()
    };

    eprintln!("  rebuilding the read models from {total} events");
    let (progress, _) =
        query_service::rebuild::rebuild(&pool, &store, |p| eprintln!("    {}", p.describe()))
            .await?;
    let figure = Stats {
        ops: progress.done,
        rate: progress.rate(),
        ..Stats::default()
    };
    Ok(vec![
        Row::new(
            format!("rebuild events/s ({total} events)"),
            figure.clone(),
            Some(("ordered scan inside PostgreSQL", scan)),
            "≥ 300,000 events/s",
        ),
        Row::new(
            format!("rebuild events/s ({total} events), vs reading the log"),
            figure,
            Some(("event store read_all, no projection", read_rate)),
            "",
        ),
    ])
}
