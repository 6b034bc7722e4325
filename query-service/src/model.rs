//! The read models as plain values, and the pure fold that moves them forward one event at
//! a time. The projector loads the rows a batch touches, folds the batch here, and writes
//! the rows back; tests fold the whole log here and compare.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use domain_events::{
    DomainEvent,
    status::{OrderStatus, PaymentStatus, StockStatus},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One order line as shown to readers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineView {
    /// The SKU.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// Price of one unit, in the order's currency's minor units.
    pub unit_price_minor: i64,
}

/// An order as shown to readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    /// The order.
    pub order_id: Uuid,
    /// Who ordered.
    pub customer_id: Uuid,
    /// Where the order is in its life.
    pub status: OrderStatus,
    /// ISO 4217 code.
    pub currency: String,
    /// The lines.
    pub lines: Vec<LineView>,
    /// Sum of the lines, in minor units.
    pub total_minor: i64,
    /// How the customer pays, once placed.
    pub payment_method: Option<String>,
    /// What happened to its stock.
    pub stock_status: StockStatus,
    /// What happened to its payment.
    pub payment_status: PaymentStatus,
    /// Why it was cancelled.
    pub cancellation_reason: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The order stream's version.
    pub version: i64,
}

impl OrderView {
    /// True once the order can no longer change.
    pub fn is_terminal(&self) -> bool {
        self.status.is_final()
    }

    fn recompute_total(&mut self) {
        self.total_minor = self
            .lines
            .iter()
            .map(|l| l.unit_price_minor.saturating_mul(i64::from(l.quantity)))
            .fold(0i64, i64::saturating_add);
    }
}

/// A product's stock as shown to readers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductView {
    /// The SKU.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Catalogue price in minor units.
    pub price_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Units in stock.
    pub on_hand: i64,
    /// Units reserved by orders.
    pub reserved: i64,
    /// The inventory stream's version.
    pub version: i64,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl ProductView {
    /// Units that can still be reserved.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// A customer's order summary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CustomerView {
    /// The customer.
    pub customer_id: Uuid,
    /// Orders placed.
    pub order_count: i64,
    /// Orders confirmed (or shipped) and not cancelled.
    pub confirmed_count: i64,
    /// Minor units spent on those orders, per currency.
    pub spent: BTreeMap<String, i64>,
    /// The most recently placed order.
    pub last_order_id: Option<Uuid>,
    /// When it was placed.
    pub last_order_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
impl OrderView {
    /// An empty draft order, for tests.
    pub(crate) fn draft(order_id: Uuid, created_at: DateTime<Utc>, version: i64) -> Self {
        Self {
            order_id,
            customer_id: Uuid::nil(),
            status: OrderStatus::Draft,
            currency: "EUR".into(),
            lines: vec![],
            total_minor: 0,
            payment_method: None,
            stock_status: StockStatus::None,
            payment_status: PaymentStatus::None,
            cancellation_reason: None,
            created_at,
            updated_at: created_at,
            version,
        }
    }
}

/// What the fold needs to know about an event besides its payload.
#[derive(Debug, Clone, Copy)]
pub struct EventInfo {
    /// The event's stream.
    pub aggregate_id: Uuid,
    /// Its version in that stream.
    pub version: i64,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// The rows a batch touches (or, in tests, the whole read model).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadModel {
    /// Orders by id.
    pub orders: HashMap<Uuid, OrderView>,
    /// Products by SKU.
    pub products: HashMap<String, ProductView>,
    /// Customers by id.
    pub customers: HashMap<Uuid, CustomerView>,
}

/// The order ids, SKUs and customer ids an event touches, so the projector can load their
/// rows before folding.
pub fn touched(event: &DomainEvent) -> (Option<Uuid>, Option<String>, Option<Uuid>) {
    use DomainEvent::*;
    match event {
        OrderCreated(e) => (
            Some(e.order_id.as_uuid()),
            None,
            Some(e.customer_id.as_uuid()),
        ),
        OrderPlaced(e) => (
            Some(e.order_id.as_uuid()),
            None,
            Some(e.customer_id.as_uuid()),
        ),
        OrderLineAdded(e) => (Some(e.order_id.as_uuid()), None, None),
        OrderLineRemoved(e) => (Some(e.order_id.as_uuid()), None, None),
        OrderConfirmed(e) => (Some(e.order_id.as_uuid()), None, None),
        OrderShipped(e) => (Some(e.order_id.as_uuid()), None, None),
        OrderCancelled(e) => (Some(e.order_id.as_uuid()), None, None),
        ProductCreated(e) => (None, Some(e.sku.to_string()), None),
        StockRestocked(e) => (None, Some(e.sku.to_string()), None),
        StockReserved(e) => (Some(e.order_id.as_uuid()), Some(e.sku.to_string()), None),
        StockReleased(e) => (Some(e.order_id.as_uuid()), Some(e.sku.to_string()), None),
        StockCommitted(e) => (Some(e.order_id.as_uuid()), Some(e.sku.to_string()), None),
        PaymentAuthorized(e) => (Some(e.order_id.as_uuid()), None, None),
        PaymentDeclined(e) => (Some(e.order_id.as_uuid()), None, None),
        PaymentRefunded(e) => (Some(e.order_id.as_uuid()), None, None),
        PaymentCaptured(e) => (Some(e.order_id.as_uuid()), None, None),
    }
}

impl ReadModel {
    /// Folds one event in. Never fails: an event about a row that does not exist (which a
    /// valid log never holds) changes nothing.
    pub fn apply(&mut self, event: &DomainEvent, info: EventInfo) {
        use DomainEvent::*;
        let at = info.occurred_at;
        match event {
            OrderCreated(e) => {
                let mut order = OrderView {
                    order_id: e.order_id.as_uuid(),
                    customer_id: e.customer_id.as_uuid(),
                    status: OrderStatus::Draft,
                    currency: e.currency.to_string(),
                    lines: e.lines.iter().map(line_view).collect(),
                    total_minor: 0,
                    payment_method: None,
                    stock_status: StockStatus::None,
                    payment_status: PaymentStatus::None,
                    cancellation_reason: None,
                    created_at: at,
                    updated_at: at,
                    version: info.version,
                };
                order.recompute_total();
                self.orders.insert(order.order_id, order);
            }
            OrderLineAdded(e) => self.order(e.order_id.as_uuid(), info, |o| {
                o.lines.push(line_view(&e.line));
                o.recompute_total();
            }),
            OrderLineRemoved(e) => self.order(e.order_id.as_uuid(), info, |o| {
                o.lines.retain(|l| l.sku != e.sku.as_str());
                o.recompute_total();
            }),
            OrderPlaced(e) => {
                self.order(e.order_id.as_uuid(), info, |o| {
                    o.status = OrderStatus::Placed;
                    o.payment_method = Some(e.payment_method.as_str().to_owned());
                    o.total_minor = e.total.amount_minor();
                });
                let customer = self.customer(e.customer_id.as_uuid());
                customer.order_count += 1;
                customer.last_order_id = Some(e.order_id.as_uuid());
                customer.last_order_at = Some(at);
            }
            OrderConfirmed(e) => {
                let mut spend = None;
                self.order(e.order_id.as_uuid(), info, |o| {
                    o.status = OrderStatus::Confirmed;
                    spend = Some((o.customer_id, o.currency.clone(), o.total_minor));
                });
                if let Some((customer_id, currency, total)) = spend {
                    let customer = self.customer(customer_id);
                    customer.confirmed_count += 1;
                    *customer.spent.entry(currency).or_default() += total;
                }
            }
            OrderShipped(e) => self.order(e.order_id.as_uuid(), info, |o| {
                o.status = OrderStatus::Shipped
            }),
            OrderCancelled(e) => {
                let mut refund = None;
                self.order(e.order_id.as_uuid(), info, |o| {
                    if o.status == OrderStatus::Confirmed {
                        refund = Some((o.customer_id, o.currency.clone(), o.total_minor));
                    }
                    o.status = OrderStatus::Cancelled;
                    o.cancellation_reason = Some(e.reason.to_string());
                });
                if let Some((customer_id, currency, total)) = refund {
                    let customer = self.customer(customer_id);
                    customer.confirmed_count -= 1;
                    *customer.spent.entry(currency).or_default() -= total;
                }
            }
            ProductCreated(e) => {
                self.products.insert(
                    e.sku.to_string(),
                    ProductView {
                        sku: e.sku.to_string(),
                        name: e.name.to_string(),
                        price_minor: e.price.amount_minor(),
                        currency: e.price.currency().to_string(),
                        on_hand: i64::try_from(e.initial_stock.get()).unwrap_or(i64::MAX),
                        reserved: 0,
                        version: info.version,
                        updated_at: at,
                    },
                );
            }
            StockRestocked(e) => self.product(e.sku.as_str(), info, |p| {
                p.on_hand += i64::from(e.quantity.get())
            }),
            StockReserved(e) => {
                self.product(e.sku.as_str(), info, |p| {
                    p.reserved += i64::from(e.quantity.get())
                });
                self.order_side(e.order_id.as_uuid(), at, |o| {
                    o.stock_status = StockStatus::Reserved
                });
            }
            StockReleased(e) => {
                self.product(e.sku.as_str(), info, |p| {
                    p.reserved -= i64::from(e.quantity.get())
                });
                self.order_side(e.order_id.as_uuid(), at, |o| {
                    o.stock_status = StockStatus::Released
                });
            }
            StockCommitted(e) => {
                self.product(e.sku.as_str(), info, |p| {
                    p.reserved -= i64::from(e.quantity.get());
                    p.on_hand -= i64::from(e.quantity.get());
                });
                self.order_side(e.order_id.as_uuid(), at, |o| {
                    o.stock_status = StockStatus::Committed
                });
            }
            PaymentAuthorized(e) => self.order_side(e.order_id.as_uuid(), at, |o| {
                o.payment_status = PaymentStatus::Authorized
            }),
            PaymentDeclined(e) => self.order_side(e.order_id.as_uuid(), at, |o| {
                o.payment_status = PaymentStatus::Declined
            }),
            PaymentRefunded(e) => self.order_side(e.order_id.as_uuid(), at, |o| {
                o.payment_status = PaymentStatus::Refunded
            }),
            PaymentCaptured(e) => self.order_side(e.order_id.as_uuid(), at, |o| {
                o.payment_status = PaymentStatus::Captured
            }),
        }
    }

    /// Changes an order through one of its own events (which moves its version).
    fn order(&mut self, id: Uuid, info: EventInfo, change: impl FnOnce(&mut OrderView)) {
        if let Some(order) = self.orders.get_mut(&id) {
            change(order);
            order.version = info.version;
            order.updated_at = info.occurred_at;
        }
    }

    /// Changes an order through another stream's event (stock, payment): its version stays.
    fn order_side(&mut self, id: Uuid, at: DateTime<Utc>, change: impl FnOnce(&mut OrderView)) {
        if let Some(order) = self.orders.get_mut(&id) {
            change(order);
            order.updated_at = at;
        }
    }

    fn product(&mut self, sku: &str, info: EventInfo, change: impl FnOnce(&mut ProductView)) {
        if let Some(product) = self.products.get_mut(sku) {
            change(product);
            product.version = info.version;
            product.updated_at = info.occurred_at;
        }
    }

    fn customer(&mut self, id: Uuid) -> &mut CustomerView {
        self.customers.entry(id).or_insert_with(|| CustomerView {
            customer_id: id,
            ..CustomerView::default()
        })
    }
}

fn line_view(line: &domain_events::values::OrderLine) -> LineView {
    LineView {
        sku: line.sku.to_string(),
        quantity: line.quantity.get(),
        unit_price_minor: line.unit_price.amount_minor(),
    }
}
