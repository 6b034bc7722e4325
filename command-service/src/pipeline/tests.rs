//! The pipeline's hardest logic against the in-memory store (no PostgreSQL): replays of
//! recorded outcomes, decisions from a stale cache, bounded re-decides against a rival
//! writer, per-aggregate queueing, voids and backpressure.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use chrono::{TimeZone, Utc};
use domain_events::values::{
    Currency, CustomerId, Money, OrderId, PaymentMethod, Quantity, Sku, StockLevel, Text,
};
use event_store::{
    CommandAppend, CommandLog, CommandWrite, EventStore, InMemoryEventStore, RecordedCommand,
    Version,
};
use service_runtime::FixedClock;
use uuid::Uuid;

use super::*;
use crate::{
    commands::{LineRequest, order_stream, product_stream},
    domain::{Order, OrderStatus},
    session::load_state,
};

fn clock() -> Arc<FixedClock> {
    Arc::new(FixedClock::at(Utc.timestamp_opt(1_800_000_000, 0).unwrap()))
}

fn pipeline<S: Store>(store: S) -> Pipeline<S> {
    Pipeline::new(store, clock(), 100)
}

fn envelope(command: Command) -> Envelope {
    envelope_with(Uuid::new_v4(), command)
}

fn envelope_with(command_id: Uuid, command: Command) -> Envelope {
    Envelope {
        command_id,
        correlation_id: Uuid::new_v4(),
        command_type: "Test",
        request_hash: format!("{command:?}").into_bytes(),
        expected_version: None,
        command,
    }
}

fn sku() -> Sku {
    Sku::parse("TEA-1").unwrap()
}

fn eur(n: i64) -> Money {
    Money::new(n, Currency::parse("EUR").unwrap()).unwrap()
}

fn create_product(stock: i64) -> Command {
    Command::CreateProduct {
        sku: sku(),
        name: Text::parse("Tea", 100).unwrap(),
        price: eur(450),
        initial_stock: StockLevel::new(stock).unwrap(),
    }
}

fn restock(n: i64) -> Command {
    Command::RestockProduct {
        sku: sku(),
        quantity: Quantity::new(n).unwrap(),
    }
}

fn create_order(order_id: OrderId) -> Command {
    Command::CreateOrder {
        order_id,
        customer_id: CustomerId::from_uuid(Uuid::new_v4()),
        currency: Currency::parse("EUR").unwrap(),
        lines: vec![],
    }
}

fn add_line(order_id: OrderId, sku: &str) -> Command {
    Command::AddOrderLine {
        order_id,
        line: LineRequest {
            sku: Sku::parse(sku).unwrap(),
            quantity: Quantity::new(1).unwrap(),
            expected_price: None,
        },
    }
}

fn place(order_id: OrderId) -> Command {
    Command::PlaceOrder {
        order_id,
        payment_method: PaymentMethod::parse("card").unwrap(),
    }
}

/// Products TEA-1 and TEA-2 in stock, through `p`.
async fn catalogue<S: Store>(p: &Pipeline<S>) {
    p.execute(&envelope(create_product(100))).await.unwrap();
    p.execute(&envelope(Command::CreateProduct {
        sku: Sku::parse("TEA-2").unwrap(),
        name: Text::parse("Green tea", 100).unwrap(),
        price: eur(300),
        initial_stock: StockLevel::new(100).unwrap(),
    }))
    .await
    .unwrap();
}

async fn order_state<S: Store>(store: &S, order_id: OrderId) -> (Order, Version) {
    load_state::<Order, S>(store, order_stream(order_id))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retry_gets_the_recorded_outcome_and_writes_nothing() {
    let store = InMemoryEventStore::new();
    let p = pipeline(store.clone());
    let create = envelope(create_product(5));
    let first = p.execute(&create).await.unwrap();
    let again = p.execute(&create).await.unwrap();
    assert_eq!(first, again);
    // A fresh pipeline (a restarted process, say) knows it too.
    let again = pipeline(store.clone()).execute(&create).await.unwrap();
    assert_eq!(first, again);
    let stream = product_stream(&sku());
    assert_eq!(
        store
            .get_events_for_aggregate(stream, None)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_reused_command_id_with_another_request_is_refused() {
    let p = pipeline(InMemoryEventStore::new());
    let id = Uuid::new_v4();
    p.execute(&envelope_with(id, create_product(5)))
        .await
        .unwrap();
    let reused = p.execute(&envelope_with(id, create_product(6))).await;
    assert!(
        matches!(reused, Err(CommandError::CommandIdReused(reused)) if reused == id),
        "{reused:?}"
    );
}

#[tokio::test]
async fn a_decision_from_a_stale_cache_is_made_again_from_the_store() {
    let store = InMemoryEventStore::new();
    let (a, b) = (pipeline(store.clone()), pipeline(store.clone()));
    catalogue(&a).await;
    let order_id = OrderId::from_uuid(Uuid::new_v4());
    a.execute(&envelope(create_order(order_id))).await.unwrap();
    // Another instance adds a line: `a`'s cached order is now one version behind.
    b.execute(&envelope(add_line(order_id, "TEA-2")))
        .await
        .unwrap();
    let outcome = a
        .execute(&envelope(add_line(order_id, "TEA-1")))
        .await
        .unwrap();
    assert_eq!(outcome.writes[0].version, 3);
    let (order, version) = order_state(&store, order_id).await;
    assert_eq!(version, Version::new(3));
    assert_eq!(order.lines().len(), 2, "both lines, neither lost");

    // A refusal is not taken from the cache either: `b` places the order, and `a`'s
    // cached draft would accept a line; the store says it is placed.
    b.execute(&envelope(place(order_id))).await.unwrap();
    let refused = a.execute(&envelope(add_line(order_id, "TEA-2"))).await;
    assert!(
        matches!(refused, Err(CommandError::Refused(_))),
        "{refused:?}"
    );
    assert_eq!(
        order_state(&store, order_id).await.0.status(),
        OrderStatus::Placed
    );
}

/// The in-memory store with a rival writer: before each of the first `rivals` command
/// appends, another instance restocks the same product, so that append loses the race.
/// Every append first yields to the other tasks. Counts the version conflicts it reports.
#[derive(Clone)]
struct Contended {
    inner: InMemoryEventStore,
    rival: Arc<Mutex<Option<Pipeline<InMemoryEventStore>>>>,
    rivals: Arc<AtomicUsize>,
    conflicts: Arc<AtomicUsize>,
    /// Every aggregate whose events were read.
    reads: Arc<Mutex<Vec<event_store::AggregateId>>>,
}

impl Contended {
    fn new(rivals: usize) -> Self {
        let inner = InMemoryEventStore::new();
        Self {
            rival: Arc::new(Mutex::new(Some(pipeline(inner.clone())))),
            inner,
            rivals: Arc::new(AtomicUsize::new(rivals)),
            conflicts: Arc::new(AtomicUsize::new(0)),
            reads: Arc::new(Mutex::new(Vec::new())),
        }
    }
}

impl EventStore for Contended {
    async fn append_streams(
        &self,
        streams: Vec<event_store::StreamAppend>,
    ) -> event_store::Result<event_store::MultiAppendResult> {
        self.inner.append_streams(streams).await
    }

    async fn get_events_for_aggregate(
        &self,
        aggregate_id: event_store::AggregateId,
        from: Option<Version>,
    ) -> event_store::Result<Vec<event_store::RecordedEvent>> {
        self.inner
            .get_events_for_aggregate(aggregate_id, from)
            .await
    }

    async fn query(
        &self,
        query: &event_store::EventQuery,
    ) -> event_store::Result<Vec<event_store::RecordedEvent>> {
        self.inner.query(query).await
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
    ) -> event_store::Result<Vec<event_store::RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }

    async fn head(&self) -> event_store::Result<Option<Position>> {
        self.inner.head().await
    }

    async fn wakeup(&self) -> event_store::Result<event_store::Wakeup> {
        self.inner.wakeup().await
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> event_store::Result<()> {
        self.inner.save_snapshot(snapshot).await
    }

    async fn load_snapshot(
        &self,
        aggregate_id: event_store::AggregateId,
        schema_version: u32,
    ) -> event_store::Result<Option<Snapshot>> {
        self.inner.load_snapshot(aggregate_id, schema_version).await
    }
}

impl CommandLog for Contended {
    async fn append_command(&self, command: CommandAppend) -> event_store::Result<CommandWrite> {
        let rival_turn = self
            .rivals
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if rival_turn && !command.streams.is_empty() {
            let rival = self.rival.lock().unwrap().clone();
            if let Some(rival) = rival {
                rival.execute(&envelope(restock(1))).await.unwrap();
            }
        }
        // Lets every other task run between this command's read and its append, as a
        // database round trip would: commands that did not queue would all collide here.
        tokio::task::yield_now().await;
        let written = self.inner.append_command(command).await;
        if matches!(written, Err(event_store::Error::VersionConflict { .. })) {
            self.conflicts.fetch_add(1, Ordering::SeqCst);
        }
        written
    }

    async fn find_command(&self, command_id: Uuid) -> event_store::Result<Option<RecordedCommand>> {
        self.inner.find_command(command_id).await
    }
}

#[tokio::test]
async fn a_lost_race_is_decided_again_up_to_the_limit() {
    let store = Contended::new(0);
    pipeline(store.clone())
        .execute(&envelope(create_product(5)))
        .await
        .unwrap();
    // A fresh pipeline each time, so no attempt starts from the cache (an attempt from
    // the cache that loses is decided again from the store, on top of these).
    let p = || pipeline(store.clone());

    // Every attempt but the last loses to the rival: the last one lands.
    store.rivals.store(MAX_ATTEMPTS - 1, Ordering::SeqCst);
    p().execute(&envelope(restock(10))).await.unwrap();
    assert_eq!(store.conflicts.load(Ordering::SeqCst), MAX_ATTEMPTS - 1);

    // Every attempt loses: the client gets the conflict, and nothing of its command lands.
    store.conflicts.store(0, Ordering::SeqCst);
    store.rivals.store(MAX_ATTEMPTS, Ordering::SeqCst);
    let lost = envelope(restock(1000));
    let result = p().execute(&lost).await;
    assert!(
        matches!(result, Err(CommandError::Conflict { .. })),
        "{result:?}"
    );
    assert_eq!(store.conflicts.load(Ordering::SeqCst), MAX_ATTEMPTS);
    assert_eq!(store.find_command(lost.command_id).await.unwrap(), None);

    // A client that pinned the version is told at once.
    store.conflicts.store(0, Ordering::SeqCst);
    store.rivals.store(1, Ordering::SeqCst);
    let stream = product_stream(&sku());
    let (_, version) = load_state::<crate::domain::Product, _>(&store, stream)
        .await
        .unwrap();
    let mut pinned = envelope(restock(1));
    pinned.expected_version = Some(version);
    let result = p().execute(&pinned).await;
    assert!(
        matches!(result, Err(CommandError::Conflict { .. })),
        "{result:?}"
    );
    assert_eq!(
        store.conflicts.load(Ordering::SeqCst),
        1,
        "no second attempt"
    );
}

#[tokio::test]
async fn commands_on_one_aggregate_queue_instead_of_racing() {
    let store = Contended::new(0);
    let p = pipeline(store.clone());
    p.execute(&envelope(create_product(0))).await.unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let p = p.clone();
            tokio::spawn(async move { p.execute(&envelope(restock(1))).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(store.conflicts.load(Ordering::SeqCst), 0);
    let (product, version) =
        load_state::<crate::domain::Product, _>(&store, product_stream(&sku()))
            .await
            .unwrap();
    assert_eq!(version, Version::new(21));
    assert_eq!(product.on_hand(), 20);
}

#[tokio::test]
async fn a_voided_command_id_never_runs_and_a_run_one_cannot_be_voided() {
    let store = InMemoryEventStore::new();
    let p = pipeline(store.clone());
    let voided = Uuid::new_v4();
    assert!(p.void(voided, "deadline passed").await.unwrap());
    let result = p.execute(&envelope_with(voided, create_product(5))).await;
    assert!(
        matches!(&result, Err(CommandError::Voided { reason, .. }) if reason == "deadline passed"),
        "{result:?}"
    );
    assert!(
        store
            .get_events_for_aggregate(product_stream(&sku()), None)
            .await
            .unwrap()
            .is_empty()
    );
    let ran = Uuid::new_v4();
    p.execute(&envelope_with(ran, create_product(5)))
        .await
        .unwrap();
    assert!(
        !p.void(ran, "too late").await.unwrap(),
        "it ran: not voided"
    );
}

#[tokio::test]
async fn a_full_saga_backlog_refuses_new_orders_and_changes_nothing() {
    let store = InMemoryEventStore::new();
    let backlog = Arc::new(SagaBacklog::new(1));
    let p = pipeline(store.clone()).with_backlog(backlog.clone());
    catalogue(&p).await;
    let (first, second) = (
        OrderId::from_uuid(Uuid::new_v4()),
        OrderId::from_uuid(Uuid::new_v4()),
    );
    for order_id in [first, second] {
        p.execute(&envelope(create_order(order_id))).await.unwrap();
        p.execute(&envelope(add_line(order_id, "TEA-1")))
            .await
            .unwrap();
    }
    let placed = envelope(place(first));
    p.execute(&placed).await.unwrap();
    assert_eq!(backlog.waiting(), 1, "counted before the next reading");

    let refused = envelope(place(second));
    let result = p.execute(&refused).await;
    assert!(
        matches!(
            result,
            Err(CommandError::SagaBacklog {
                waiting: 1,
                limit: 1,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(
        order_state(&store, second).await.0.status(),
        OrderStatus::Draft
    );
    assert_eq!(store.find_command(refused.command_id).await.unwrap(), None);
    // Lines can still be added, and the order already placed replays.
    p.execute(&envelope(add_line(second, "TEA-2")))
        .await
        .unwrap();
    p.execute(&placed).await.unwrap();

    // The saga caught up: the same command now places the order.
    backlog.observe(0);
    p.execute(&refused).await.unwrap();
    assert_eq!(
        order_state(&store, second).await.0.status(),
        OrderStatus::Placed
    );
}

#[tokio::test]
async fn the_saga_commands_of_an_order_placed_here_do_not_read_the_order() {
    let store = Contended::new(0);
    let p = pipeline(store.clone());
    catalogue(&p).await;
    let order_id = OrderId::from_uuid(Uuid::new_v4());
    p.execute(&envelope(create_order(order_id))).await.unwrap();
    p.execute(&envelope(add_line(order_id, "TEA-1")))
        .await
        .unwrap();
    p.execute(&envelope(place(order_id))).await.unwrap();
    store.reads.lock().unwrap().clear();
    p.execute(&envelope(Command::ReserveStock {
        order_id,
        items: vec![(sku(), Quantity::new(1).unwrap())],
    }))
    .await
    .unwrap();
    let authorized = p
        .execute(&envelope(Command::AuthorizePayment {
            order_id,
            customer_id: CustomerId::from_uuid(Uuid::new_v4()),
            amount: eur(450),
            method: PaymentMethod::parse("card").unwrap(),
        }))
        .await
        .unwrap();
    assert!(matches!(
        authorized.detail,
        Detail::Payment {
            authorized: true,
            ..
        }
    ));
    assert!(
        !store
            .reads
            .lock()
            .unwrap()
            .contains(&order_stream(order_id)),
        "the placed order's total was remembered"
    );
    // Another instance (a fresh pipeline) reads it once, and refuses a wrong amount.
    let other = pipeline(store.clone());
    let wrong = other
        .execute(&envelope(Command::AuthorizePayment {
            order_id,
            customer_id: CustomerId::from_uuid(Uuid::new_v4()),
            amount: eur(1),
            method: PaymentMethod::parse("card").unwrap(),
        }))
        .await;
    assert!(matches!(wrong, Err(CommandError::Refused(_))), "{wrong:?}");
}
