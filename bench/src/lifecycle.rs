//! The scenarios a user would recognise: the order lifecycle as a mix of commands (drafts
//! created, lines added, orders placed, and the saga confirming them), closed loop and
//! open loop, and reads of orders nobody has read before.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use contracts::orders::v1::{
    self as pb, command_service_client::CommandServiceClient,
    query_service_client::QueryServiceClient,
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    Mode,
    client::Channel,
    load::{CONNECTIONS, bare_rpc, id, insert_baseline, pgbench},
    measure::{Stats, closed_loop, histogram},
    report::Row,
};

/// What every lifecycle run works against.
pub struct Ctx<'a> {
    /// How long and how big.
    pub mode: Mode,
    /// The database (for the saga backlog and the confirmations).
    pub pool: &'a PgPool,
    /// command-service's connections.
    pub commands: &'a Arc<Vec<Channel>>,
    /// query-service's connections.
    pub queries: &'a Arc<Vec<Channel>>,
    /// The pgbench binary, for the baselines.
    pub pgbench: &'a str,
    /// The database's URL, for pgbench.
    pub database_url: &'a str,
}

/// Products the lifecycle orders are made of (plenty of stock, one price).
const PRODUCTS: usize = 100;
/// Lines a draft gets at most before it is placed anyway.
const MAX_LINES: usize = 8;

/// The share of each command in the mix, in percent.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    /// AddOrderLine on an existing draft.
    pub add: u32,
    /// CreateOrder (a draft with one line).
    pub create: u32,
    /// PlaceOrder of a draft (the saga then runs).
    pub place: u32,
}

impl std::str::FromStr for Mix {
    type Err = String;

    /// `add=50,create=25,place=25`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut mix = Mix {
            add: 0,
            create: 0,
            place: 0,
        };
        for part in s.split(',') {
            let (name, share) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected name=percent"))?;
            let share: u32 = share
                .parse()
                .map_err(|_| format!("{part:?}: not a number"))?;
            match name.trim() {
                "add" => mix.add = share,
                "create" => mix.create = share,
                "place" => mix.place = share,
                other => return Err(format!("{other:?}: expected add, create or place")),
            }
        }
        if mix.add + mix.create + mix.place == 0 {
            return Err("the mix is empty".into());
        }
        Ok(mix)
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "add={},create={},place={}",
            self.add, self.create, self.place
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Create,
    Place,
}

impl Mix {
    fn pick(&self, n: u64) -> Op {
        let total = u64::from(self.add + self.create + self.place);
        let x = (n.wrapping_mul(2_654_435_761) >> 7) % total;
        if x < u64::from(self.add) {
            Op::Add
        } else if x < u64::from(self.add + self.create) {
            Op::Create
        } else {
            Op::Place
        }
    }
}

/// A draft waiting for lines or for placing: its id, its lines, and the index of its
/// first product (line `i` is product `first + 13 i`, so a draft never repeats a SKU).
struct Draft {
    order_id: String,
    lines: usize,
    first: usize,
}

/// Drafts waiting for lines or for placing, shared by the clients.
#[derive(Default)]
struct Drafts(Mutex<VecDeque<Draft>>);

impl Drafts {
    fn take(&self) -> Option<Draft> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }

    fn put(&self, draft: Draft) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(draft);
    }
}

/// Per-type counts of successful commands, and of placements refused by backpressure.
#[derive(Default)]
struct Counts {
    add: AtomicU64,
    create: AtomicU64,
    place: AtomicU64,
    refused: AtomicU64,
}

/// What one command of the mix came to.
enum Done {
    /// A draft was created or got a line.
    Changed,
    /// An order was placed: the saga now runs.
    Placed {
        order_id: String,
        token: String,
        at: Instant,
        /// `at` by the wall clock, to set beside the log's times.
        answered: chrono::DateTime<chrono::Utc>,
    },
    /// command-service refused the placement while the saga is behind
    /// (RESOURCE_EXHAUSTED): nothing changed, the draft waits for a later turn.
    Refused,
}

fn sku(i: usize) -> String {
    format!("LIFE-{:03}", i % PRODUCTS)
}

/// The products every lifecycle order is made of.
pub async fn create_products(setup: &mut CommandServiceClient<Channel>) -> anyhow::Result<()> {
    for i in 0..PRODUCTS {
        let _ = setup
            .create_product(pb::CreateProductRequest {
                command_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, sku(i).as_bytes()).to_string(),
                sku: sku(i),
                name: format!("Lifecycle product {i}"),
                price: Some(pb::Money {
                    amount_minor: 100,
                    currency: "EUR".into(),
                }),
                initial_stock: 1_000_000_000,
            })
            .await;
    }
    Ok(())
}

/// One command of the mix. A refused placement is not an error: the client goes on with
/// its next command, and the draft is placed on a later turn.
async fn one(
    op: Op,
    channel: Channel,
    drafts: &Drafts,
    counts: &Counts,
    n: u64,
) -> Result<Done, tonic::Status> {
    let mut c = CommandServiceClient::new(channel);
    let draft = match op {
        Op::Create => None,
        Op::Add | Op::Place => drafts.take(),
    };
    match (op, draft) {
        (Op::Add, Some(draft)) if draft.lines < MAX_LINES => {
            let result = c
                .add_order_line(pb::AddOrderLineRequest {
                    command_id: id(),
                    order_id: draft.order_id.clone(),
                    line: Some(pb::OrderLine {
                        sku: sku(draft.first + draft.lines * 13),
                        quantity: 1,
                        unit_price: None,
                    }),
                    expected_version: None,
                })
                .await;
            let added = usize::from(result.is_ok());
            drafts.put(Draft {
                lines: draft.lines + added,
                ..draft
            });
            result?;
            counts.add.fetch_add(1, Ordering::Relaxed);
            Ok(Done::Changed)
        }
        (Op::Add | Op::Place, Some(draft)) => {
            let placed = c
                .place_order(pb::PlaceOrderRequest {
                    command_id: id(),
                    order_id: draft.order_id.clone(),
                    payment_method: "card".into(),
                    expected_version: None,
                })
                .await;
            let (at, answered) = (Instant::now(), chrono::Utc::now());
            match placed {
                Ok(placed) => {
                    counts.place.fetch_add(1, Ordering::Relaxed);
                    let token = placed
                        .into_inner()
                        .result
                        .map(|r| r.consistency_token)
                        .unwrap_or_default();
                    Ok(Done::Placed {
                        order_id: draft.order_id,
                        token,
                        at,
                        answered,
                    })
                }
                Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                    drafts.put(draft);
                    Ok(Done::Refused)
                }
                Err(status) => Err(status),
            }
        }
        (_, None) | (Op::Create, _) => {
            let order_id = id();
            let first = n as usize % PRODUCTS;
            c.create_order(pb::CreateOrderRequest {
                command_id: id(),
                order_id: order_id.clone(),
                customer_id: id(),
                currency: "EUR".into(),
                lines: vec![pb::OrderLine {
                    sku: sku(first),
                    quantity: 1,
                    unit_price: None,
                }],
            })
            .await?;
            counts.create.fetch_add(1, Ordering::Relaxed);
            drafts.put(Draft {
                order_id,
                lines: 1,
                first,
            });
            Ok(Done::Changed)
        }
    }
}

/// Placed orders waiting for the saga, as command-service's backpressure counts them:
/// sagas running or compensating, and orders placed that the saga has not started yet.
async fn backlog(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT in_flight + not_started FROM saga_backlog")
        .fetch_one(pool)
        .await
        .unwrap_or(-1)
}

/// Orders confirmed since `since` (by the events' own time).
async fn confirmed_since(pool: &PgPool, since: chrono::DateTime<chrono::Utc>) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type = 'OrderConfirmed' AND occurred_at >= $1",
    )
    .bind(since)
    .fetch_one(pool)
    .await
    .unwrap_or(0)
}

/// Commands command-service recorded in [from, to) (by their own time): the client's and
/// the saga's (its steps and voids); refusals are not recorded.
async fn recorded_between(
    pool: &PgPool,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM command_log WHERE recorded_at >= $1 AND recorded_at < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
    .unwrap_or(0)
}

/// Waits until nothing waits for the saga; how long it took (at most a minute).
async fn drain(pool: &PgPool) -> Duration {
    let started = Instant::now();
    while backlog(pool).await > 0 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

fn count_stats(count: u64, elapsed: Duration) -> Stats {
    Stats {
        ops: count,
        rate: count as f64 / elapsed.as_secs_f64(),
        ..Stats::default()
    }
}

/// Where a closed-loop run stood when its steady state began.
struct Mark {
    at: Instant,
    wall: chrono::DateTime<chrono::Utc>,
    placed: u64,
    backlog: i64,
}

/// What the closed-loop lifecycle mix reached at one concurrency.
pub struct Reached {
    /// Commands/s admitted and done (refused placements not counted).
    pub commands: f64,
    /// Orders confirmed/s in the steady state.
    pub confirmed: f64,
}

/// The lifecycle mix, closed loop at `clients`: every command counted, the saga's
/// confirmations beside the placements, the backlog and how long it takes to drain.
///
/// Confirmed and placed orders are compared in the steady state: from when the saga's
/// backlog stopped growing (it filled to where command-service's backpressure holds it,
/// or the saga keeps up without) to the end of the run. While the backlog fills, fewer
/// orders are confirmed than placed by design, which says nothing about whether the saga
/// keeps up. The run lasts twice the mode's duration; the steady state is taken to begin
/// a sixth of the way in at the earliest, half way at the latest.
pub async fn closed(
    ctx: &Ctx<'_>,
    mix: Mix,
    clients: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<Reached> {
    let (pool, commands) = (ctx.pool, ctx.commands);
    let d = ctx.mode.duration();
    drain(pool).await;
    let drafts = Arc::new(Drafts::default());
    let counts = Arc::new(Counts::default());
    let run = d * 2;
    let started = Instant::now();
    let mark = {
        let (counts, pool) = (counts.clone(), pool.clone());
        tokio::spawn(async move {
            // The backlog now and about a second ago, sampled every 250 ms.
            let mut samples = std::collections::VecDeque::new();
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = backlog(&pool).await;
                samples.push_back((Instant::now(), now));
                while samples
                    .front()
                    .is_some_and(|(at, _)| at.elapsed() > Duration::from_millis(1_100))
                {
                    samples.pop_front();
                }
                let grew = now - samples.front().map_or(now, |(_, then)| *then);
                let steady = grew <= (now / 20).max(10);
                let elapsed = started.elapsed();
                if (steady && elapsed >= run / 6) || elapsed >= run / 2 {
                    return Mark {
                        at: Instant::now(),
                        wall: chrono::Utc::now(),
                        placed: counts.place.load(Ordering::Relaxed),
                        backlog: now,
                    };
                }
            }
        })
    };
    let mut figure = {
        let (c, drafts, counts) = (commands.clone(), drafts.clone(), counts.clone());
        closed_loop(
            &format!("lifecycle mix ({mix}) x{clients}"),
            clients,
            run,
            move |client, seq| {
                let n = seq * 1_000 + client as u64;
                let channel = c[client % CONNECTIONS].clone();
                let (drafts, counts) = (drafts.clone(), counts.clone());
                async move {
                    // A refused placement is neither a command done nor an error (below).
                    matches!(
                        one(mix.pick(n), channel, &drafts, &counts, n).await,
                        Ok(Done::Changed | Done::Placed { .. })
                    )
                }
            },
        )
        .await
    };
    let elapsed = started.elapsed();
    let ended = chrono::Utc::now();
    let mark = mark.await?;
    let recorded = recorded_between(pool, mark.wall, ended).await as u64;
    let recorded_window = (ended - mark.wall).to_std().unwrap_or(d);
    let steady = mark.at.elapsed();
    let window = format!(
        "steady state: the last {:.1} s of {:.0} s, from when the saga's backlog stopped growing",
        steady.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    let confirmed = confirmed_since(pool, mark.wall).await as u64;
    let left = backlog(pool).await;
    let drained = drain(pool).await;
    let placed = counts.place.load(Ordering::Relaxed);
    let refused = counts.refused.load(Ordering::Relaxed);
    figure.errors = figure.errors.saturating_sub(refused);
    eprintln!("  pgbench one-row INSERT x{clients}");
    let insert = insert_baseline(ctx.pgbench, ctx.database_url, pool, clients, d).await?;
    let per_s = |n: u64| n as f64 / elapsed.as_secs_f64();
    let by_type = format!(
        "AddOrderLine {:.0}/s, CreateOrder {:.0}/s, PlaceOrder {:.0}/s; PlaceOrder refused by backpressure {:.0}/s",
        per_s(counts.add.load(Ordering::Relaxed)),
        per_s(counts.create.load(Ordering::Relaxed)),
        per_s(placed),
        per_s(refused),
    );
    let commands_rate = figure.rate;
    let target = if clients == 64 {
        "≥ 0.5 × baseline"
    } else {
        ""
    };
    rows.push(Row::new(
        format!("lifecycle mix, {clients} clients: commands/s ({by_type})"),
        figure,
        Some(("pgbench one-row INSERT, same clients", insert.clone())),
        target,
    ));
    rows.push(Row::new(
        format!(
            "lifecycle mix, {clients} clients: every command recorded/s, the saga's steps included, {window}"
        ),
        count_stats(recorded, recorded_window),
        Some(("pgbench one-row INSERT, same clients", insert)),
        target,
    ));
    let confirmed_stats = count_stats(confirmed, steady);
    let confirmed_rate = confirmed_stats.rate;
    rows.push(Row::new(
        format!(
            "lifecycle mix, {clients} clients: orders confirmed/s by the saga, {window} (backlog {} then {left} at the end, drained in {:.1} s)",
            mark.backlog,
            drained.as_secs_f64()
        ),
        confirmed_stats,
        Some((
            "orders placed/s, same window",
            count_stats(placed - mark.placed, steady),
        )),
        "≥ 0.95 × baseline",
    ));
    Ok(Reached {
        commands: commands_rate,
        confirmed: confirmed_rate,
    })
}

/// The lifecycle mix open loop at `rate` commands/s: PlaceOrder → confirmed latency, with
/// the other commands of the mix running. Returns the backlog left at the end and how
/// many placements were refused.
pub async fn open(
    ctx: &Ctx<'_>,
    mix: Mix,
    rate: u64,
    label: &str,
    rows: &mut Vec<Row>,
) -> (i64, u64) {
    let (pool, commands, queries) = (ctx.pool, ctx.commands, ctx.queries);
    let d = ctx.mode.duration();
    drain(pool).await;
    eprintln!("  lifecycle mix open loop at {rate} commands/s ({label})");
    let drafts = Arc::new(Drafts::default());
    let counts = Arc::new(Counts::default());
    let latencies = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(AtomicU64::new(0));
    // Per confirmed order: when PlaceOrder was answered and when WatchOrder showed it
    // confirmed, by the wall clock, to set beside the log's times.
    let seen_by_client = Arc::new(Mutex::new(Vec::new()));
    let total = (rate as f64 * d.as_secs_f64()) as u64;
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let writer_before = crate::writer::Totals::read().await;
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        interval.tick().await;
        let channel = commands[n as usize % CONNECTIONS].clone();
        let query = queries[n as usize % CONNECTIONS].clone();
        let (drafts, counts, latencies, errors, seen_by_client) = (
            drafts.clone(),
            counts.clone(),
            latencies.clone(),
            errors.clone(),
            seen_by_client.clone(),
        );
        tasks.push(tokio::spawn(async move {
            match one(mix.pick(n), channel, &drafts, &counts, n).await {
                Ok(Done::Placed {
                    order_id,
                    token,
                    at,
                    answered,
                }) => match confirmed(query, order_id.clone(), token, at).await {
                    Some(latency) => {
                        let seen = chrono::Utc::now();
                        let _ = latencies
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .record(latency.as_micros().max(1) as u64);
                        if let Ok(id) = order_id.parse::<Uuid>() {
                            seen_by_client
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((id, answered, seen));
                        }
                    }
                    None => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Ok(Done::Changed | Done::Refused) => {}
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let issued = started.elapsed();
    let issued_at = Instant::now();
    let issued_until = chrono::Utc::now();
    let writer_after = crate::writer::Totals::read().await;
    let left = backlog(pool).await;
    for task in tasks {
        let _ = task.await;
    }
    drain(pool).await;
    // From the last command sent to nothing left waiting for the saga.
    let drained = issued_at.elapsed();
    let refused = counts.refused.load(Ordering::Relaxed);
    let h = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut stats = Stats::from_histogram(&h, errors.load(Ordering::Relaxed), issued);
    stats.rate = rate as f64;
    rows.push(Row::new(
        format!(
            "lifecycle mix open loop at {rate} commands/s ({label}): PlaceOrder → confirmed (placed {:.0}/s, refused {refused}; backlog at the end {left}, drained {:.1} s after the last command)",
            counts.place.load(Ordering::Relaxed) as f64 / issued.as_secs_f64(),
            drained.as_secs_f64()
        ),
        stats,
        None,
        if label.starts_with("70%") { "p99 < 100 ms" } else { "" },
    ));
    if let (Some(before), Some(after)) = (writer_before, writer_after) {
        let (stats, words) = before.until(after, issued);
        rows.push(Row::new(
            format!("lifecycle mix open loop at {rate} commands/s ({label}), command-service's group commit while the commands were sent: appends/s ({words})"),
            stats,
            None,
            "",
        ));
    }
    if label.starts_with("70%") {
        let seen = std::mem::take(&mut *seen_by_client.lock().unwrap_or_else(|p| p.into_inner()));
        match hops(pool, started_at, issued_until, &seen).await {
            Ok(hops) => rows.extend(hops.into_iter().map(|(hop, stats)| {
                Row::new(
                    format!("lifecycle mix open loop at {rate} commands/s ({label}), hop by hop in the log: {hop}"),
                    stats,
                    None,
                    "",
                )
            })),
            Err(err) => eprintln!("  could not read the saga's hops from the log: {err}"),
        }
    }
    (left, refused)
}

/// The hops between PlaceOrder and the confirmation, for the orders the client saw
/// confirmed (`seen`: order id, when PlaceOrder was answered, when WatchOrder showed the
/// order confirmed, by the wall clock). The log gives the times command-service stamped on
/// each event when it decided it (before its write), and the time the saga's follower
/// started the saga (before its commit), so each hop includes the write that ends the one
/// before it. The client's figure is the last four hops less the first. Orders the log does
/// not show all the way, and hops that come out negative (a clock step), are counted as
/// errors instead of recorded.
async fn hops(
    pool: &PgPool,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    seen: &[(
        Uuid,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )],
) -> anyhow::Result<Vec<(&'static str, Stats)>> {
    const NAMES: [&str; 5] = [
        "PlaceOrder decided → answered (its own write)",
        "PlaceOrder decided → saga started (the write, the follower)",
        "saga started → stock reserved and payment authorised, the later of the two (the follower's commit, the hand-off to an idle worker or a claim, ReserveStock and AuthorizePayment sent at once)",
        "stock reserved and payment authorised → order confirmed (the writes, ConfirmOrder)",
        "order confirmed → WatchOrder shows it (the write, the projector, the stream)",
    ];
    let (ids, answered, shown): (Vec<Uuid>, Vec<_>, Vec<_>) = seen.iter().copied().collect();
    let rows: Vec<[i64; 5]> = sqlx::query_as::<_, (i64, i64, i64, i64, i64)>(
        // One pass over the events (a self-join of the steps made the planner nest loops).
        "SELECT (extract(epoch FROM c.answered - t.placed) * 1e6)::bigint, \
                (extract(epoch FROM s.created_at - t.placed) * 1e6)::bigint, \
                (extract(epoch FROM greatest(t.reserved, t.authorised) - s.created_at) * 1e6)::bigint, \
                (extract(epoch FROM t.confirmed - greatest(t.reserved, t.authorised)) * 1e6)::bigint, \
                (extract(epoch FROM c.shown - t.confirmed) * 1e6)::bigint \
         FROM (SELECT (payload->>'order_id')::uuid AS order_id, \
                 min(occurred_at) FILTER (WHERE event_type = 'OrderPlaced') AS placed, \
                 min(occurred_at) FILTER (WHERE event_type = 'StockReserved') AS reserved, \
                 min(occurred_at) FILTER (WHERE event_type = 'PaymentAuthorized') AS authorised, \
                 min(occurred_at) FILTER (WHERE event_type = 'OrderConfirmed') AS confirmed \
               FROM events \
               WHERE event_type IN ('OrderPlaced', 'StockReserved', 'PaymentAuthorized', 'OrderConfirmed') \
                 AND occurred_at >= $1 \
               GROUP BY 1) AS t \
         JOIN sagas s USING (order_id) \
         JOIN unnest($2::uuid[], $3::timestamptz[], $4::timestamptz[]) AS c(order_id, answered, shown) \
           USING (order_id) \
         WHERE t.placed IS NOT NULL AND t.reserved IS NOT NULL AND t.authorised IS NOT NULL \
           AND t.confirmed IS NOT NULL",
    )
    .bind(from)
    .bind(ids)
    .bind(answered)
    .bind(shown)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|(a, b, c, d, e)| [a, b, c, d, e])
    .collect();
    let unmatched = seen.len().saturating_sub(rows.len()) as u64;
    let elapsed = (to - from).to_std().unwrap_or(Duration::from_secs(1));
    let mut hops = Vec::with_capacity(NAMES.len());
    for (i, name) in NAMES.into_iter().enumerate() {
        let mut h = histogram();
        let mut negative = 0;
        for row in &rows {
            match u64::try_from(row[i]) {
                Ok(micros) => h.saturating_record(micros.max(1)),
                Err(_) => negative += 1,
            }
        }
        hops.push((
            name,
            Stats::from_histogram(&h, unmatched + negative, elapsed),
        ));
    }
    Ok(hops)
}

/// From an acknowledged PlaceOrder to the confirmed view, followed with WatchOrder (up
/// to 30 s); `None` when the order is cancelled or never confirmed.
async fn confirmed(
    channel: Channel,
    order_id: String,
    token: String,
    acknowledged: Instant,
) -> Option<Duration> {
    let mut q = QueryServiceClient::new(channel);
    let mut stream = q
        .watch_order(pb::WatchOrderRequest {
            order_id,
            consistency_token: token,
        })
        .await
        .ok()?
        .into_inner();
    let left = Duration::from_secs(30).saturating_sub(acknowledged.elapsed());
    while let Ok(Some(update)) = tokio::time::timeout(left, stream.message()).await.ok()? {
        match update.order?.status.as_str() {
            "confirmed" => return Some(acknowledged.elapsed()),
            "cancelled" => return None,
            _ => {}
        }
    }
    None
}

/// Reads of orders nobody has read since query-service started: each order read once,
/// then reads over a working set larger than the in-memory views (query-service keeps
/// 200,000), beside PostgreSQL's point SELECT and ordered page at the same concurrency.
pub async fn cold(
    mode: Mode,
    pool: &PgPool,
    queries: &Arc<Vec<Channel>>,
    pgbench_bin: &str,
    database_url: &str,
) -> anyhow::Result<Vec<Row>> {
    let d = mode.duration();
    let n = mode.cold_rows();
    let mut rows = Vec::new();
    eprintln!("6. cold reads: {n} orders in the read model, none read since the restart");
    let ColdSet { ids, customers } = ColdSet::load(mode, pool).await?;
    let next = Arc::new(AtomicU64::new(0));
    for clients in mode.read_clients() {
        let (q, first_ids, next) = (queries.clone(), ids.clone(), next.clone());
        let first_reads = closed_loop(
            &format!("GetOrder, each order read once, x{clients}"),
            clients,
            d,
            move |client, _| {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % first_ids.len();
                get_order(q[client % CONNECTIONS].clone(), first_ids[i].clone())
            },
        )
        .await;
        let beyond_cache = get_orders_at_random(
            &format!("GetOrder at random over {n} orders x{clients}"),
            queries,
            &ids,
            clients,
            d,
        )
        .await;
        let lists = list_customer_orders(
            &format!("ListOrders of one customer, first page, x{clients}"),
            queries,
            &customers,
            clients,
            d,
        )
        .await;
        eprintln!("  pgbench point SELECT and customer page x{clients}");
        let select = pgbench(pgbench_bin, database_url, clients, d, &point_script(mode))?;
        let page = pgbench(pgbench_bin, database_url, clients, d, &page_script(mode))?;
        let rpc = bare_rpc(queries, clients, d).await;
        rows.push(Row::new(
            format!("cold GetOrder (each order's first read since the restart), {clients} clients"),
            first_reads.clone(),
            Some(("pgbench point SELECT on read_orders", select.clone())),
            "≥ 0.8 × baseline",
        ));
        let parts = format!(
            "its two parts one after the other, 1 ÷ (1 ÷ bare tonic RPC {:.0}/s + 1 ÷ pgbench point SELECT {:.0}/s)",
            rpc.rate, select.rate
        );
        rows.push(Row::new(
            format!("cold GetOrder, {clients} clients, against a gRPC call and a point SELECT for each read"),
            first_reads,
            Some((&parts, one_after_the_other(&rpc, &select))),
            "",
        ));
        let kept = if n > 200_000 {
            ", more than the 200,000 views kept"
        } else {
            ""
        };
        rows.push(Row::new(
            format!("GetOrder at random over {n} orders{kept}, {clients} clients"),
            beyond_cache,
            Some(("pgbench point SELECT on read_orders", select)),
            "",
        ));
        rows.push(Row::new(
            format!("ListOrders (one customer, first page of 10), {clients} clients"),
            lists,
            Some(("pgbench customer page SELECT on read_orders", page)),
            "",
        ));
    }
    Ok(rows)
}

/// The rate of a read made of two parts measured apart on the same cores, one after the
/// other: their times add, so the rate is 1 ÷ (1 ÷ a + 1 ÷ b). A service whose reads share
/// one SELECT can beat it.
fn one_after_the_other(a: &Stats, b: &Stats) -> Stats {
    let rate = if a.rate > 0.0 && b.rate > 0.0 {
        1.0 / (1.0 / a.rate + 1.0 / b.rate)
    } else {
        0.0
    };
    Stats {
        rate,
        mean_us: a.mean_us.zip(b.mean_us).map(|(a, b)| a + b),
        ..Stats::default()
    }
}

/// Seeds the cold-read orders (spread over up to 10,000 customers) before query-service
/// restarts.
pub async fn seed_cold(mode: Mode, pool: &PgPool) -> anyhow::Result<()> {
    let n = mode.cold_rows();
    eprintln!("  seeding {n} read-model orders for the cold reads");
    sqlx::query(
        "INSERT INTO read_orders (order_id, customer_id, status, currency, lines, total_minor, stock_status, \
           payment_status, created_at, updated_at, version) \
         SELECT md5('cold' || i)::uuid, md5('cold-customer' || (i % $2))::uuid, 'confirmed', 'EUR', \
           '[{\"sku\": \"LIFE-001\", \"quantity\": 1, \"unit_price_minor\": 100}]', 100, 'reserved', \
           'authorized', now() - (i || ' seconds')::interval, now(), 3 \
         FROM generate_series(1, $1) AS i ON CONFLICT DO NOTHING",
    )
    .bind(n)
    .bind(cold_customers(mode))
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE read_orders").execute(pool).await?;
    Ok(())
}

/// One GetOrder without a consistency token; true when it was answered.
async fn get_order(channel: Channel, order_id: String) -> bool {
    QueryServiceClient::new(channel)
        .get_order(pb::GetOrderRequest {
            order_id,
            consistency_token: String::new(),
        })
        .await
        .is_ok()
}

/// How many customers the cold-read orders are spread over.
fn cold_customers(mode: Mode) -> i64 {
    mode.cold_rows().min(10_000)
}

/// The ids of the cold-read orders and of their customers, as `seed_cold` wrote them.
pub(crate) struct ColdSet {
    /// Every order's id.
    pub ids: Arc<Vec<String>>,
    /// Every customer's id.
    pub customers: Arc<Vec<String>>,
}

impl ColdSet {
    /// Computes the ids in PostgreSQL, with the same expressions `seed_cold` used.
    pub async fn load(mode: Mode, pool: &PgPool) -> anyhow::Result<ColdSet> {
        let uuids = |sql: &'static str, count: i64| async move {
            anyhow::Ok(Arc::new(
                sqlx::query_scalar::<_, Uuid>(sql)
                    .bind(count)
                    .fetch_all(pool)
                    .await?
                    .into_iter()
                    .map(|u| u.to_string())
                    .collect::<Vec<_>>(),
            ))
        };
        Ok(ColdSet {
            ids: uuids(
                "SELECT md5('cold' || i)::uuid FROM generate_series(1, $1) AS i",
                mode.cold_rows(),
            )
            .await?,
            customers: uuids(
                "SELECT md5('cold-customer' || i)::uuid FROM generate_series(0, $1 - 1) AS i",
                cold_customers(mode),
            )
            .await?,
        })
    }
}

/// pgbench's baseline for GetOrder: a point SELECT of a cold-read order at random.
pub(crate) fn point_script(mode: Mode) -> String {
    format!(
        "\\set id random(1, {})\nSELECT * FROM read_orders WHERE order_id = md5('cold' || :id)::uuid;\n",
        mode.cold_rows()
    )
}

/// pgbench's baseline for ListOrders: one customer's first page (11 rows, as the service
/// reads one more than the page to know whether another follows).
pub(crate) fn page_script(mode: Mode) -> String {
    format!(
        "\\set c random(0, {})\nSELECT * FROM read_orders WHERE customer_id = md5('cold-customer' || :c)::uuid ORDER BY created_at DESC, order_id DESC LIMIT 11;\n",
        cold_customers(mode) - 1
    )
}

/// GetOrder at random over `ids`, closed loop.
pub(crate) async fn get_orders_at_random(
    label: &str,
    channels: &Arc<Vec<Channel>>,
    ids: &Arc<Vec<String>>,
    clients: usize,
    d: Duration,
) -> Stats {
    let (q, ids) = (channels.clone(), ids.clone());
    closed_loop(label, clients, d, move |client, seq| {
        let i = (seq as usize * 7919 + client * 104_729 + seq as usize * seq as usize) % ids.len();
        get_order(q[client % CONNECTIONS].clone(), ids[i].clone())
    })
    .await
}

/// ListOrders of one customer at random, first page of 10, closed loop.
pub(crate) async fn list_customer_orders(
    label: &str,
    channels: &Arc<Vec<Channel>>,
    customers: &Arc<Vec<String>>,
    clients: usize,
    d: Duration,
) -> Stats {
    let (q, customers) = (channels.clone(), customers.clone());
    closed_loop(label, clients, d, move |client, seq| {
        let customer = customers[(seq as usize * 31 + client * 977) % customers.len()].clone();
        let mut c = QueryServiceClient::new(q[client % CONNECTIONS].clone());
        async move {
            c.list_orders(pb::ListOrdersRequest {
                customer_id: customer,
                page_size: 10,
                ..Default::default()
            })
            .await
            .is_ok()
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(rate: f64, mean_us: f64) -> Stats {
        Stats {
            rate,
            mean_us: Some(mean_us),
            ..Stats::default()
        }
    }

    #[test]
    fn two_parts_one_after_the_other_add_their_times() {
        let both = one_after_the_other(&rate(30_000.0, 500.0), &rate(15_000.0, 1_000.0));
        assert!((both.rate - 10_000.0).abs() < 1e-6, "{}", both.rate);
        assert_eq!(both.mean_us, Some(1_500.0));
        assert_eq!(
            one_after_the_other(&rate(0.0, 1.0), &rate(1.0, 1.0)).rate,
            0.0
        );
    }
}
