//! Facts a command reads but does not change, that never change once true: a product's
//! catalogue price (no command changes it; an order line is priced from it), and a placed
//! order's total (an order's lines are fixed when it is placed). They are read from the store once and then kept, so a
//! check costs no read after the first, and the command still writes only the aggregates
//! it changes.
//!
//! A check against such a fact guards input; it is not a lock. An order can be cancelled
//! while a reservation for it is being decided: what keeps the saga's own commands from
//! landing after that is `VoidCommand` (see `saga-service/src/saga.rs`).

use std::sync::Mutex;

use domain_events::values::{Currency, Money, OrderId, OrderLine, ProductId, Sku};
use event_store::{AggregateId, EventStore};
use service_runtime::bounded::BoundedMap;

use crate::{
    commands::LineRequest,
    domain::{Order, OrderStatus, Product},
    error::CommandError,
    session::load_state,
};

/// How many placed orders, and how many prices, are kept; past this, the one kept longest
/// is dropped.
pub const CAPACITY: usize = 100_000;

/// What a command may rely on about an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderFact {
    /// No such order.
    Missing,
    /// A draft: not placed yet.
    Draft,
    /// Placed (and maybe confirmed, shipped or cancelled since), with this total.
    Placed(Money),
}

/// Placed orders' totals by order, and catalogue prices by SKU.
pub struct References {
    placed: Mutex<BoundedMap<OrderId, Money>>,
    prices: Mutex<BoundedMap<Sku, Money>>,
}

impl Default for References {
    fn default() -> Self {
        Self {
            placed: Mutex::new(BoundedMap::new(CAPACITY)),
            prices: Mutex::new(BoundedMap::new(CAPACITY)),
        }
    }
}

impl References {
    /// What is known of `order_id`: from memory once it was seen placed, else from the store.
    pub async fn order<S: EventStore>(
        &self,
        store: &S,
        order_id: OrderId,
    ) -> Result<OrderFact, CommandError> {
        if let Some(total) = lock(&self.placed).get(&order_id) {
            return Ok(OrderFact::Placed(*total));
        }
        let (order, _) =
            load_state::<Order, S>(store, AggregateId::from_uuid(order_id.as_uuid())).await?;
        Ok(match (order.status(), order.total()) {
            (OrderStatus::Absent, _) => OrderFact::Missing,
            (OrderStatus::Draft, _) => OrderFact::Draft,
            (_, Some(total)) => {
                lock(&self.placed).insert(order_id, total);
                OrderFact::Placed(total)
            }
            // A placed order always has a total (placing checks it); be strict anyway.
            (_, None) => OrderFact::Draft,
        })
    }

    /// Remembers that `order_id` is placed with this total (once the placement is stored).
    pub fn remember_placed(&self, order_id: OrderId, amount_minor: i64, currency: &str) {
        if let Ok(total) = Currency::parse(currency).and_then(|c| Money::new(amount_minor, c)) {
            lock(&self.placed).insert(order_id, total);
        }
    }

    /// The catalogue price of `sku`; NOT_FOUND when there is no such product.
    pub async fn price<S: EventStore>(&self, store: &S, sku: &Sku) -> Result<Money, CommandError> {
        if let Some(price) = lock(&self.prices).get(sku) {
            return Ok(*price);
        }
        let id = AggregateId::from_uuid(ProductId::for_sku(sku).as_uuid());
        let (product, _) = load_state::<Product, S>(store, id).await?;
        let price = product
            .price()
            .ok_or_else(|| CommandError::NotFound(format!("product {sku} not found")))?;
        lock(&self.prices).insert(sku.clone(), price);
        Ok(price)
    }

    /// Prices requested lines from the catalogue: NOT_FOUND for an unknown SKU, and a
    /// refusal naming the current price when the client expected another.
    pub async fn price_lines<S: EventStore>(
        &self,
        store: &S,
        lines: &[LineRequest],
    ) -> Result<Vec<OrderLine>, CommandError> {
        let mut priced = Vec::with_capacity(lines.len());
        for line in lines {
            let price = self.price(store, &line.sku).await?;
            if let Some(expected) = line.expected_price
                && expected != price
            {
                return Err(CommandError::PriceChanged {
                    sku: line.sku.to_string(),
                    expected,
                    current: price,
                });
            }
            priced.push(OrderLine {
                sku: line.sku.clone(),
                quantity: line.quantity,
                unit_price: price,
            });
        }
        Ok(priced)
    }
}

fn lock<K, V>(map: &Mutex<BoundedMap<K, V>>) -> std::sync::MutexGuard<'_, BoundedMap<K, V>> {
    map.lock().unwrap_or_else(|p| p.into_inner())
}
