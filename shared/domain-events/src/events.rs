//! The domain events: past-tense facts, in domain types.

use crate::values::{
    Currency, CustomerId, Money, OrderId, OrderLine, PaymentMethod, Quantity, Sku, StockLevel, Text,
};

/// The kinds of aggregate, as stored in the event store's `aggregate_type`.
pub mod aggregate_type {
    /// An order's stream; its id is the order id.
    pub const ORDER: &str = "Order";
    /// A product's inventory stream; its id is derived from the SKU.
    pub const INVENTORY: &str = "Inventory";
    /// An order's payment stream; its id is derived from the order id.
    pub const PAYMENT: &str = "Payment";
}

/// Every event the system records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainEvent {
    /// A draft order was created.
    OrderCreated(OrderCreated),
    /// A line was added to a draft order.
    OrderLineAdded(OrderLineAdded),
    /// A line was removed from a draft order.
    OrderLineRemoved(OrderLineRemoved),
    /// The customer placed the order; fulfilment (the saga) starts.
    OrderPlaced(OrderPlaced),
    /// Stock is reserved and payment authorised: the order will be fulfilled.
    OrderConfirmed(OrderConfirmed),
    /// The order left the warehouse.
    OrderShipped(OrderShipped),
    /// The order was cancelled, by the customer or by the saga.
    OrderCancelled(OrderCancelled),
    /// A product was added to the catalogue with its first stock.
    ProductCreated(ProductCreated),
    /// Stock arrived.
    StockRestocked(StockRestocked),
    /// Stock was set aside for an order.
    StockReserved(StockReserved),
    /// An order's reservation was given back.
    StockReleased(StockReleased),
    /// An order's reservation left with the shipment.
    StockCommitted(StockCommitted),
    /// The gateway authorised the order's amount.
    PaymentAuthorized(PaymentAuthorized),
    /// The gateway declined the order's payment.
    PaymentDeclined(PaymentDeclined),
    /// An authorised or captured payment was given back.
    PaymentRefunded(PaymentRefunded),
    /// An authorised payment was captured at shipment.
    PaymentCaptured(PaymentCaptured),
}

/// A draft order was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCreated {
    /// The order.
    pub order_id: OrderId,
    /// Who ordered.
    pub customer_id: CustomerId,
    /// The currency every line is priced in.
    pub currency: Currency,
    /// The lines the order starts with (may be empty).
    pub lines: Vec<OrderLine>,
}

/// A line was added to a draft order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLineAdded {
    /// The order.
    pub order_id: OrderId,
    /// The new line.
    pub line: OrderLine,
}

/// A line was removed from a draft order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderLineRemoved {
    /// The order.
    pub order_id: OrderId,
    /// The SKU whose line was removed.
    pub sku: Sku,
}

/// The customer placed the order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderPlaced {
    /// The order.
    pub order_id: OrderId,
    /// Who ordered (carried so the saga needs no other read).
    pub customer_id: CustomerId,
    /// The lines at the time of placing.
    pub lines: Vec<OrderLine>,
    /// The sum of the lines.
    pub total: Money,
    /// How the customer pays.
    pub payment_method: PaymentMethod,
}

/// The order is confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderConfirmed {
    /// The order.
    pub order_id: OrderId,
}

/// The order shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderShipped {
    /// The order.
    pub order_id: OrderId,
}

/// The order was cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderCancelled {
    /// The order.
    pub order_id: OrderId,
    /// Why, in words a person understands.
    pub reason: Text,
}

/// A product was created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductCreated {
    /// The product's SKU.
    pub sku: Sku,
    /// Its display name.
    pub name: Text,
    /// Its catalogue price.
    pub price: Money,
    /// Stock on hand at creation.
    pub initial_stock: StockLevel,
}

/// Stock arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRestocked {
    /// The product.
    pub sku: Sku,
    /// How much arrived.
    pub quantity: Quantity,
}

/// Stock was reserved for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockReserved {
    /// The product.
    pub sku: Sku,
    /// The order it is reserved for.
    pub order_id: OrderId,
    /// How much.
    pub quantity: Quantity,
}

/// An order's reservation was released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockReleased {
    /// The product.
    pub sku: Sku,
    /// The order whose reservation ended.
    pub order_id: OrderId,
    /// How much went back to available stock.
    pub quantity: Quantity,
}

/// An order's reservation shipped: it leaves stock on hand for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockCommitted {
    /// The product.
    pub sku: Sku,
    /// The order that shipped.
    pub order_id: OrderId,
    /// How much left stock on hand.
    pub quantity: Quantity,
}

/// The gateway authorised a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentAuthorized {
    /// The order paid for.
    pub order_id: OrderId,
    /// Who pays.
    pub customer_id: CustomerId,
    /// How much was authorised.
    pub amount: Money,
    /// How.
    pub method: PaymentMethod,
}

/// The gateway declined a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentDeclined {
    /// The order.
    pub order_id: OrderId,
    /// Who tried to pay.
    pub customer_id: CustomerId,
    /// How much was asked for.
    pub amount: Money,
    /// The gateway's reason.
    pub reason: Text,
}

/// A payment was given back (voided before capture, refunded after).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRefunded {
    /// The order.
    pub order_id: OrderId,
    /// How much was given back.
    pub amount: Money,
    /// Why.
    pub reason: Text,
}

/// An authorised payment was captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentCaptured {
    /// The order.
    pub order_id: OrderId,
    /// How much was captured.
    pub amount: Money,
}

/// Every event type, by the name it is stored under: the one list of event names. A new
/// event fails to compile until [`DomainEvent::event_type`], the stored form and every
/// reader's exhaustive match handle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `OrderCreated`.
    OrderCreated,
    /// `OrderLineAdded`.
    OrderLineAdded,
    /// `OrderLineRemoved`.
    OrderLineRemoved,
    /// `OrderPlaced`.
    OrderPlaced,
    /// `OrderConfirmed`.
    OrderConfirmed,
    /// `OrderShipped`.
    OrderShipped,
    /// `OrderCancelled`.
    OrderCancelled,
    /// `ProductCreated`.
    ProductCreated,
    /// `StockRestocked`.
    StockRestocked,
    /// `StockReserved`.
    StockReserved,
    /// `StockReleased`.
    StockReleased,
    /// `StockCommitted`.
    StockCommitted,
    /// `PaymentAuthorized`.
    PaymentAuthorized,
    /// `PaymentDeclined`.
    PaymentDeclined,
    /// `PaymentRefunded`.
    PaymentRefunded,
    /// `PaymentCaptured`.
    PaymentCaptured,
}

impl EventType {
    /// Every event type.
    pub const ALL: [EventType; 16] = [
        EventType::OrderCreated,
        EventType::OrderLineAdded,
        EventType::OrderLineRemoved,
        EventType::OrderPlaced,
        EventType::OrderConfirmed,
        EventType::OrderShipped,
        EventType::OrderCancelled,
        EventType::ProductCreated,
        EventType::StockRestocked,
        EventType::StockReserved,
        EventType::StockReleased,
        EventType::StockCommitted,
        EventType::PaymentAuthorized,
        EventType::PaymentDeclined,
        EventType::PaymentRefunded,
        EventType::PaymentCaptured,
    ];

    /// The name the event is stored under (the event store's `event_type`).
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::OrderCreated => "OrderCreated",
            EventType::OrderLineAdded => "OrderLineAdded",
            EventType::OrderLineRemoved => "OrderLineRemoved",
            EventType::OrderPlaced => "OrderPlaced",
            EventType::OrderConfirmed => "OrderConfirmed",
            EventType::OrderShipped => "OrderShipped",
            EventType::OrderCancelled => "OrderCancelled",
            EventType::ProductCreated => "ProductCreated",
            EventType::StockRestocked => "StockRestocked",
            EventType::StockReserved => "StockReserved",
            EventType::StockReleased => "StockReleased",
            EventType::StockCommitted => "StockCommitted",
            EventType::PaymentAuthorized => "PaymentAuthorized",
            EventType::PaymentDeclined => "PaymentDeclined",
            EventType::PaymentRefunded => "PaymentRefunded",
            EventType::PaymentCaptured => "PaymentCaptured",
        }
    }

    /// The type stored under `name`, if this code knows it.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DomainEvent {
    /// The event's type.
    pub fn kind(&self) -> EventType {
        match self {
            DomainEvent::OrderCreated(_) => EventType::OrderCreated,
            DomainEvent::OrderLineAdded(_) => EventType::OrderLineAdded,
            DomainEvent::OrderLineRemoved(_) => EventType::OrderLineRemoved,
            DomainEvent::OrderPlaced(_) => EventType::OrderPlaced,
            DomainEvent::OrderConfirmed(_) => EventType::OrderConfirmed,
            DomainEvent::OrderShipped(_) => EventType::OrderShipped,
            DomainEvent::OrderCancelled(_) => EventType::OrderCancelled,
            DomainEvent::ProductCreated(_) => EventType::ProductCreated,
            DomainEvent::StockRestocked(_) => EventType::StockRestocked,
            DomainEvent::StockReserved(_) => EventType::StockReserved,
            DomainEvent::StockReleased(_) => EventType::StockReleased,
            DomainEvent::StockCommitted(_) => EventType::StockCommitted,
            DomainEvent::PaymentAuthorized(_) => EventType::PaymentAuthorized,
            DomainEvent::PaymentDeclined(_) => EventType::PaymentDeclined,
            DomainEvent::PaymentRefunded(_) => EventType::PaymentRefunded,
            DomainEvent::PaymentCaptured(_) => EventType::PaymentCaptured,
        }
    }

    /// The event's type name as stored (`OrderPlaced`).
    pub fn event_type(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The kind of aggregate whose stream holds the event.
    pub fn aggregate_type(&self) -> &'static str {
        match self {
            DomainEvent::OrderCreated(_)
            | DomainEvent::OrderLineAdded(_)
            | DomainEvent::OrderLineRemoved(_)
            | DomainEvent::OrderPlaced(_)
            | DomainEvent::OrderConfirmed(_)
            | DomainEvent::OrderShipped(_)
            | DomainEvent::OrderCancelled(_) => aggregate_type::ORDER,
            DomainEvent::ProductCreated(_)
            | DomainEvent::StockRestocked(_)
            | DomainEvent::StockReserved(_)
            | DomainEvent::StockReleased(_)
            | DomainEvent::StockCommitted(_) => aggregate_type::INVENTORY,
            DomainEvent::PaymentAuthorized(_)
            | DomainEvent::PaymentDeclined(_)
            | DomainEvent::PaymentRefunded(_)
            | DomainEvent::PaymentCaptured(_) => aggregate_type::PAYMENT,
        }
    }
}
