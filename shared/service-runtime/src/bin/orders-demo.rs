//! `orders-demo`: a client that walks orders through a running system, over gRPC.
//!
//! - `orders-demo walk` seeds a small catalogue and walks three sample orders through the
//!   saga (one confirmed, one out of stock, one declined), printing each outcome. It exits 1
//!   when an outcome is not the expected one. `scripts/demo` and the compose file's `demo`
//!   service run it.
//! - `orders-demo load --orders N` places N orders of four kinds (confirmed, out of stock,
//!   declined, cancelled by the customer at a random moment), retrying every call with the
//!   same command id until it is answered (so a service killed mid-call is survived), waits
//!   until every saga has finished and checks each outcome. `scripts/compose-test` and
//!   `scripts/chaos` run it while they kill services.
//!
//! Every command carries a fixed or recorded `command_id`, so a retried call never acts twice.

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    io::Write as _,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use contracts::orders::v1::{
    self as pb, command_service_client::CommandServiceClient,
    query_service_client::QueryServiceClient, saga_service_client::SagaServiceClient,
};
use tonic::{Code, transport::Channel};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "orders-demo",
    about = "Walks orders through a running order system over gRPC."
)]
struct Cli {
    /// command-service's URL.
    #[arg(
        long,
        env = "COMMAND_SERVICE_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    command: String,
    /// query-service's URL.
    #[arg(
        long,
        env = "QUERY_SERVICE_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    query: String,
    /// saga-service's URL.
    #[arg(
        long,
        env = "SAGA_SERVICE_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    saga: String,
    /// How long to keep retrying a call, or waiting for sagas to finish (seconds).
    #[arg(long, default_value_t = 120)]
    patience: u64,
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, Subcommand)]
enum What {
    /// Seed a catalogue and walk three sample orders through the saga.
    Walk,
    /// Place many orders of every kind, wait for their sagas, check every outcome.
    Load {
        /// How many orders.
        #[arg(long, default_value_t = 100)]
        orders: usize,
        /// Orders in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Pause between one client's orders (ms), to spread the load over time.
        #[arg(long, default_value_t = 0)]
        pause_ms: u64,
        /// Append every acknowledged command as `command_id order_id rpc` to this file.
        #[arg(long)]
        acks: Option<std::path::PathBuf>,
        /// Keep placing orders until this file exists (instead of a count).
        #[arg(long)]
        until: Option<std::path::PathBuf>,
        /// Faults are being injected: an order meant to be confirmed may also end
        /// compensated after a step's deadline (every other outcome is still checked).
        #[arg(long)]
        faults: bool,
    },
}

/// The three services.
#[derive(Clone)]
struct Clients {
    command: CommandServiceClient<Channel>,
    query: QueryServiceClient<Channel>,
    saga: SagaServiceClient<Channel>,
    patience: Duration,
    acks: Option<Arc<Mutex<std::fs::File>>>,
}

fn channel(url: &str) -> anyhow::Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect_lazy())
}

impl Clients {
    /// Sends `call` until it is answered with something other than a transient failure,
    /// for at most `patience`.
    async fn retry<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let give_up = Instant::now() + self.patience;
        let mut pause = Duration::from_millis(100);
        loop {
            match call().await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if transient(status.code()) && Instant::now() < give_up => {
                    tracing_line(&format!("{what}: {:?}, retrying", status.code()));
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(status) => return Err(status),
            }
        }
    }

    fn ack(&self, command_id: &str, order_id: &str, rpc: &str) {
        if let Some(file) = &self.acks {
            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
            let _ = writeln!(file, "{command_id} {order_id} {rpc}");
        }
    }

    async fn create_product(
        &self,
        command_id: &str,
        sku: &str,
        name: &str,
        price: i64,
        stock: i64,
    ) -> anyhow::Result<()> {
        let request = pb::CreateProductRequest {
            command_id: command_id.into(),
            sku: sku.into(),
            name: name.into(),
            price: Some(eur(price)),
            initial_stock: stock,
        };
        match self
            .retry("CreateProduct", || {
                let (mut client, request) = (self.command.clone(), request.clone());
                async move { client.create_product(request).await }
            })
            .await
        {
            Ok(_) => Ok(()),
            // Created by an earlier run with another command id.
            Err(status) if status.code() == Code::FailedPrecondition => Ok(()),
            Err(status) => Err(anyhow::anyhow!("CreateProduct {sku}: {status}")),
        }
    }

    /// Creates and places an order with one line; returns its id.
    async fn place(&self, order: &Order) -> anyhow::Result<()> {
        let order_id = order.id.to_string();
        let create = pb::CreateOrderRequest {
            command_id: Uuid::new_v4().to_string(),
            order_id: order_id.clone(),
            customer_id: Uuid::new_v4().to_string(),
            currency: "EUR".into(),
            lines: vec![pb::OrderLine {
                sku: order.sku.into(),
                quantity: order.quantity,
                unit_price: Some(eur(order.price)),
            }],
        };
        self.retry("CreateOrder", || {
            let (mut client, request) = (self.command.clone(), create.clone());
            async move { client.create_order(request).await }
        })
        .await
        .map_err(|s| anyhow::anyhow!("CreateOrder {order_id}: {s}"))?;
        self.ack(&create.command_id, &order_id, "CreateOrder");
        let place = pb::PlaceOrderRequest {
            command_id: Uuid::new_v4().to_string(),
            order_id: order_id.clone(),
            payment_method: order.method.into(),
            expected_version: None,
        };
        self.retry("PlaceOrder", || {
            let (mut client, request) = (self.command.clone(), place.clone());
            async move { client.place_order(request).await }
        })
        .await
        .map_err(|s| anyhow::anyhow!("PlaceOrder {order_id}: {s}"))?;
        self.ack(&place.command_id, &order_id, "PlaceOrder");
        Ok(())
    }

    async fn cancel(&self, order_id: Uuid) -> anyhow::Result<()> {
        let cancel = pb::CancelOrderRequest {
            command_id: Uuid::new_v4().to_string(),
            order_id: order_id.to_string(),
            reason: "changed my mind".into(),
        };
        match self
            .retry("CancelOrder", || {
                let (mut client, request) = (self.command.clone(), cancel.clone());
                async move { client.cancel_order(request).await }
            })
            .await
        {
            Ok(_) => {
                self.ack(&cancel.command_id, &cancel.order_id, "CancelOrder");
                Ok(())
            }
            Err(status) => Err(anyhow::anyhow!("CancelOrder {order_id}: {status}")),
        }
    }

    /// Waits until the order's saga is finished (completed, compensated, needs_attention);
    /// a cancelled order's saga finishes only once it has compensated.
    async fn finished_saga(&self, order_id: Uuid, cancelled: bool) -> anyhow::Result<pb::Saga> {
        let give_up = Instant::now() + self.patience;
        let mut client = self.saga.clone();
        loop {
            let request = pb::GetSagaRequest {
                order_id: order_id.to_string(),
            };
            let last = match client.get_saga(request).await {
                Ok(response) => {
                    let saga = response.into_inner().saga.unwrap_or_default();
                    let done = match saga.state.as_str() {
                        "compensated" | "needs_attention" => true,
                        "completed" => !cancelled,
                        _ => false,
                    };
                    if done {
                        return Ok(saga);
                    }
                    format!("saga is {}", saga.state)
                }
                Err(status) => format!("{:?}: {}", status.code(), status.message()),
            };
            if Instant::now() > give_up {
                anyhow::bail!("the saga of order {order_id} did not finish in time ({last})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The order's view once it shows a final status (for a cancelled order: cancelled).
    async fn order_view(&self, order_id: Uuid, cancelled: bool) -> anyhow::Result<pb::OrderView> {
        let mut client = self.query.clone();
        let request = pb::GetOrderRequest {
            order_id: order_id.to_string(),
            consistency_token: String::new(),
        };
        let give_up = Instant::now() + self.patience;
        loop {
            // The read model may still be a moment behind the saga.
            match client.get_order(request.clone()).await {
                Ok(r) => {
                    let view = r.into_inner().order.unwrap_or_default();
                    let done = match view.status.as_str() {
                        "cancelled" => true,
                        "confirmed" | "shipped" => !cancelled,
                        _ => false,
                    };
                    if done || Instant::now() > give_up {
                        return Ok(view);
                    }
                }
                Err(status) if !transient(status.code()) && status.code() != Code::NotFound => {
                    anyhow::bail!("GetOrder {order_id}: {status}")
                }
                Err(_) if Instant::now() > give_up => {
                    anyhow::bail!("GetOrder {order_id} timed out")
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Worth sending again: the service or the database is away, or busy (RESOURCE_EXHAUSTED:
/// a server limit, or PlaceOrder refused while the saga is behind).
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
    )
}

fn tracing_line(line: &str) {
    if std::env::var_os("ORDERS_DEMO_VERBOSE").is_some() {
        eprintln!("{line}");
    }
}

fn eur(amount_minor: i64) -> pb::Money {
    pb::Money {
        amount_minor,
        currency: "EUR".into(),
    }
}

/// What an order is meant to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// Stock and payment are fine: confirmed.
    Confirmed,
    /// More than is in stock: cancelled, nothing reserved.
    OutOfStock,
    /// The payment method is declined: stock released, cancelled.
    Declined,
    /// The customer cancels it at a random moment: cancelled, everything given back.
    CustomerCancel,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Confirmed => "confirmed",
            Kind::OutOfStock => "out of stock",
            Kind::Declined => "declined",
            Kind::CustomerCancel => "cancelled by the customer",
        })
    }
}

/// One order to place.
struct Order {
    id: Uuid,
    kind: Kind,
    sku: &'static str,
    quantity: i32,
    price: i64,
    method: &'static str,
}

/// Checks an order's finished saga and read model against its kind; `Err` says why not.
/// With `faults`, a step deadline may have cancelled an order meant to be confirmed.
fn check(kind: Kind, saga: &pb::Saga, view: &pb::OrderView, faults: bool) -> Result<(), String> {
    let (state, status) = (saga.state.as_str(), view.status.as_str());
    let timed_out = faults && saga.reason.contains("deadline");
    let ok = match kind {
        Kind::Confirmed if timed_out => state == "compensated" && status == "cancelled",
        Kind::Confirmed => state == "completed" && status == "confirmed",
        Kind::OutOfStock | Kind::Declined => state == "compensated" && status == "cancelled",
        // Cancelled before, during or after the saga: it ends compensated either way.
        Kind::CustomerCancel => state == "compensated" && status == "cancelled",
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected {kind}, but the saga is {state} ({}) and the order {status}",
            saga.reason
        ))
    }
}

async fn walk(clients: &Clients) -> anyhow::Result<bool> {
    println!("seeding the catalogue...");
    // Fixed command ids: a second run is answered from the idempotency log.
    let catalogue = [
        (
            "5eed0000-0000-4000-8000-000000000001",
            "WIDGET-1",
            "Widget",
            1999,
            1000,
        ),
        (
            "5eed0000-0000-4000-8000-000000000002",
            "GADGET-2",
            "Gadget",
            4999,
            1000,
        ),
        (
            "5eed0000-0000-4000-8000-000000000003",
            "RARE-3",
            "Rare gizmo",
            99999,
            1,
        ),
    ];
    for (id, sku, name, price, stock) in catalogue {
        clients.create_product(id, sku, name, price, stock).await?;
        println!("  {sku:<9} {name:<14} {price:>6} EUR cents, {stock} in stock at creation");
    }
    println!("\nwalking three orders through the saga...");
    let orders = [
        (
            "1. an order that is confirmed (reserve stock and authorise payment at once, confirm):",
            Order {
                id: Uuid::new_v4(),
                kind: Kind::Confirmed,
                sku: "WIDGET-1",
                quantity: 2,
                price: 1999,
                method: "card",
            },
        ),
        (
            "2. an order for more than is in stock (cancelled, nothing reserved, the payment refunded):",
            Order {
                id: Uuid::new_v4(),
                kind: Kind::OutOfStock,
                sku: "RARE-3",
                quantity: 5,
                price: 99999,
                method: "card",
            },
        ),
        (
            "3. an order whose payment is declined (stock released, then cancelled):",
            Order {
                id: Uuid::new_v4(),
                kind: Kind::Declined,
                sku: "GADGET-2",
                quantity: 1,
                price: 4999,
                method: "card_declined",
            },
        ),
    ];
    for (_, order) in &orders {
        clients.place(order).await?;
    }
    let mut all_right = true;
    for (title, order) in &orders {
        let saga = clients.finished_saga(order.id, false).await?;
        let view = clients.order_view(order.id, false).await?;
        println!("\n{title}");
        let reason = if view.cancellation_reason.is_empty() {
            String::new()
        } else {
            format!(" ({})", view.cancellation_reason)
        };
        println!("  order {}: {}{reason}", view.order_id, view.status);
        let total = view.total.clone().unwrap_or_default();
        println!(
            "  stock {}, payment {}, total {} {}",
            view.stock_status, view.payment_status, total.amount_minor, total.currency
        );
        println!("  saga {}:", saga.state);
        for step in &saga.steps {
            let error = if step.last_error.is_empty() {
                String::new()
            } else {
                format!("  ({})", step.last_error)
            };
            println!(
                "    {:<18} {:<10} attempts {}{error}",
                step.name, step.status, step.attempts
            );
        }
        if let Err(why) = check(order.kind, &saga, &view, false) {
            println!("  NOT AS EXPECTED: {why}");
            all_right = false;
        }
    }
    Ok(all_right)
}

async fn load(
    clients: &Clients,
    orders: usize,
    concurrency: usize,
    pause: Duration,
    faults: bool,
    until: Option<std::path::PathBuf>,
) -> anyhow::Result<bool> {
    // Plenty of stock for the confirmed kinds; none for the out-of-stock kind.
    clients
        .create_product(
            "10ad0000-0000-4000-8000-000000000001",
            "LOAD-PLENTY",
            "Load test",
            100,
            1_000_000_000,
        )
        .await?;
    clients
        .create_product(
            "10ad0000-0000-4000-8000-000000000002",
            "LOAD-NONE",
            "Never in stock",
            100,
            0,
        )
        .await?;
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(Vec::<(Kind, Result<(), String>)>::new()));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (clients, next, results) = (clients.clone(), next.clone(), results.clone());
        let until = until.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                if until.as_ref().is_some_and(|path| path.exists()) {
                    return;
                }
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if until.is_none() && i >= orders {
                    return;
                }
                let kind = match i % 10 {
                    0 => Kind::OutOfStock,
                    1 => Kind::Declined,
                    2 | 3 => Kind::CustomerCancel,
                    _ => Kind::Confirmed,
                };
                let order = Order {
                    id: Uuid::new_v4(),
                    kind,
                    sku: if kind == Kind::OutOfStock {
                        "LOAD-NONE"
                    } else {
                        "LOAD-PLENTY"
                    },
                    quantity: 1,
                    price: 100,
                    method: if kind == Kind::Declined {
                        "card_declined"
                    } else {
                        "card"
                    },
                };
                let outcome = run_one(&clients, &order, faults).await;
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((kind, outcome));
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let results = std::mem::take(&mut *results.lock().unwrap_or_else(|p| p.into_inner()));
    let mut table: BTreeMap<Kind, (usize, usize)> = BTreeMap::new();
    let mut failures = Vec::new();
    for (kind, outcome) in results {
        let row = table.entry(kind).or_default();
        match outcome {
            Ok(()) => row.0 += 1,
            Err(why) => {
                row.1 += 1;
                failures.push(why);
            }
        }
    }
    println!(
        "{} orders in {:.1} s ({concurrency} at a time):",
        table
            .values()
            .map(|(right, wrong)| right + wrong)
            .sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    println!("  {:<28} {:>6} {:>6}", "kind", "right", "wrong");
    for (kind, (right, wrong)) in &table {
        println!("  {:<28} {right:>6} {wrong:>6}", kind.to_string());
    }
    for why in failures.iter().take(20) {
        println!("  wrong: {why}");
    }
    Ok(failures.is_empty())
}

/// Places one order (and cancels it, for that kind), then checks how it ended.
async fn run_one(clients: &Clients, order: &Order, faults: bool) -> Result<(), String> {
    clients.place(order).await.map_err(|e| e.to_string())?;
    if order.kind == Kind::CustomerCancel {
        // At a random moment: before, during or after the saga.
        let delay = u64::from(Uuid::new_v4().as_bytes()[0]) * 2;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        clients.cancel(order.id).await.map_err(|e| e.to_string())?;
    }
    let saga = clients
        .finished_saga(order.id, order.kind == Kind::CustomerCancel)
        .await
        .map_err(|e| e.to_string())?;
    let view = clients
        .order_view(order.id, order.kind == Kind::CustomerCancel)
        .await
        .map_err(|e| e.to_string())?;
    check(order.kind, &saga, &view, faults).map_err(|why| format!("order {}: {why}", order.id))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = async {
        let acks = match &cli.what {
            What::Load {
                acks: Some(path), ..
            } => Some(Arc::new(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ))),
            _ => None,
        };
        let clients = Clients {
            command: CommandServiceClient::new(channel(&cli.command)?),
            query: QueryServiceClient::new(channel(&cli.query)?),
            saga: SagaServiceClient::new(channel(&cli.saga)?),
            patience: Duration::from_secs(cli.patience),
            acks,
        };
        match cli.what {
            What::Walk => walk(&clients).await,
            What::Load {
                orders,
                concurrency,
                pause_ms,
                faults,
                until,
                ..
            } => {
                let pause = Duration::from_millis(pause_ms);
                load(&clients, orders, concurrency, pause, faults, until).await
            }
        }
    }
    .await;
    match result {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("orders-demo: some orders did not end as expected");
            std::process::exit(1);
        }
        Err(err) => {
            eprintln!("orders-demo: {err:#}");
            std::process::exit(1);
        }
    }
}
