//! Commands as the pipeline receives them (already parsed into domain types), and the
//! outcome it records for each.

use domain_events::values::{
    Currency, CustomerId, Money, OrderId, PaymentId, PaymentMethod, ProductId, Quantity, Sku,
    StockLevel, Text,
};
use event_store::{AggregateId, Position, Version};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Every command the write side accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create a draft order.
    CreateOrder {
        /// The new order.
        order_id: OrderId,
        /// Who orders.
        customer_id: CustomerId,
        /// The order's currency.
        currency: Currency,
        /// Initial lines, priced from the catalogue.
        lines: Vec<LineRequest>,
    },
    /// Add a line to a draft.
    AddOrderLine {
        /// The order.
        order_id: OrderId,
        /// The line, priced from the catalogue.
        line: LineRequest,
    },
    /// Remove a line from a draft.
    RemoveOrderLine {
        /// The order.
        order_id: OrderId,
        /// The SKU whose line goes.
        sku: Sku,
    },
    /// Place a draft.
    PlaceOrder {
        /// The order.
        order_id: OrderId,
        /// How the customer pays.
        payment_method: PaymentMethod,
    },
    /// Confirm a placed order.
    ConfirmOrder {
        /// The order.
        order_id: OrderId,
    },
    /// Ship a confirmed order, committing its stock and capturing its payment.
    ShipOrder {
        /// The order.
        order_id: OrderId,
    },
    /// Cancel an order.
    CancelOrder {
        /// The order.
        order_id: OrderId,
        /// Why.
        reason: Text,
    },
    /// Create a product.
    CreateProduct {
        /// Its SKU.
        sku: Sku,
        /// Its name.
        name: Text,
        /// Its price.
        price: Money,
        /// Its first stock.
        initial_stock: StockLevel,
    },
    /// Add stock.
    RestockProduct {
        /// The product.
        sku: Sku,
        /// How much arrived.
        quantity: Quantity,
    },
    /// Reserve stock for every item, all or nothing.
    ReserveStock {
        /// The order.
        order_id: OrderId,
        /// What to reserve, one entry per SKU.
        items: Vec<(Sku, Quantity)>,
    },
    /// Release an order's reservations.
    ReleaseStock {
        /// The order.
        order_id: OrderId,
        /// The SKUs to release.
        skus: Vec<Sku>,
    },
    /// Authorise an order's payment.
    AuthorizePayment {
        /// The order.
        order_id: OrderId,
        /// Who pays.
        customer_id: CustomerId,
        /// How much.
        amount: Money,
        /// How.
        method: PaymentMethod,
    },
    /// Give back an order's payment.
    RefundPayment {
        /// The order.
        order_id: OrderId,
        /// Why.
        reason: Text,
    },
}

/// The aggregates a command is about, known before anything is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Streams {
    /// The aggregates whose commands queue behind each other in this process (sorted,
    /// without repeats, so two commands needing the same ones cannot deadlock). ShipOrder
    /// also writes its products and payment, found from the order once it is read; it
    /// queues on the order only.
    pub keys: Vec<AggregateId>,
    /// The command creates every aggregate it touches, so its first attempt may take them
    /// to be new without reading them (the append's "no stream" check confirms it).
    pub creates: bool,
}

/// An order's stream: its id is the order id.
pub fn order_stream(order_id: OrderId) -> AggregateId {
    AggregateId::from_uuid(order_id.as_uuid())
}

/// A product's inventory stream, derived from its SKU.
pub fn product_stream(sku: &Sku) -> AggregateId {
    AggregateId::from_uuid(ProductId::for_sku(sku).as_uuid())
}

/// An order's payment stream, derived from the order id.
pub fn payment_stream(order_id: OrderId) -> AggregateId {
    AggregateId::from_uuid(PaymentId::for_order(order_id).as_uuid())
}

impl Command {
    /// The aggregates this command is about: the one place that says so.
    pub fn streams(&self) -> Streams {
        let (mut keys, creates) = match self {
            Command::CreateOrder { order_id, .. } => (vec![order_stream(*order_id)], true),
            Command::AddOrderLine { order_id, .. }
            | Command::RemoveOrderLine { order_id, .. }
            | Command::PlaceOrder { order_id, .. }
            | Command::ConfirmOrder { order_id }
            | Command::ShipOrder { order_id }
            | Command::CancelOrder { order_id, .. } => (vec![order_stream(*order_id)], false),
            Command::CreateProduct { sku, .. } => (vec![product_stream(sku)], true),
            Command::RestockProduct { sku, .. } => (vec![product_stream(sku)], false),
            Command::ReserveStock { items, .. } => (
                items.iter().map(|(sku, _)| product_stream(sku)).collect(),
                false,
            ),
            Command::ReleaseStock { skus, .. } => {
                (skus.iter().map(product_stream).collect(), false)
            }
            Command::AuthorizePayment { order_id, .. } => (vec![payment_stream(*order_id)], true),
            Command::RefundPayment { order_id, .. } => (vec![payment_stream(*order_id)], false),
        };
        keys.sort();
        keys.dedup();
        Streams { keys, creates }
    }
}

/// An order line as a client asks for it: the price comes from the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRequest {
    /// What is ordered.
    pub sku: Sku,
    /// How many.
    pub quantity: Quantity,
    /// The unit price the client expects, if it said; a different catalogue price refuses
    /// the command.
    pub expected_price: Option<Money>,
}

/// A command together with what identifies and constrains this request.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The client's idempotency key.
    pub command_id: Uuid,
    /// Ties the events to the user request they came from.
    pub correlation_id: Uuid,
    /// The RPC's name, recorded with the idempotency key.
    pub command_type: &'static str,
    /// A hash of the whole request, to tell a retry from a different request.
    pub request_hash: Vec<u8>,
    /// When set, the target aggregate must be at exactly this version.
    pub expected_version: Option<Version>,
    /// The command itself.
    pub command: Command,
}

/// What a command did; recorded with its idempotency key so that a retry gets the same
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Each aggregate the command touched, with its version afterwards, in the order the
    /// command touched them.
    pub writes: Vec<Write>,
    /// The position of the last event written, or of the last event of the touched
    /// aggregates when nothing was written.
    pub position: Position,
    /// Command-specific results.
    pub detail: Detail,
}

/// One aggregate's version after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The aggregate.
    pub aggregate_id: Uuid,
    /// Its version afterwards.
    pub version: u64,
}

/// Results some commands return besides the versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Detail {
    /// Nothing more.
    None,
    /// The placed order's total.
    Total {
        /// In minor units.
        amount_minor: i64,
        /// ISO 4217 code.
        currency: String,
    },
    /// The gateway's answer.
    Payment {
        /// True when authorised.
        authorized: bool,
        /// Why declined, if declined.
        decline_reason: Option<String>,
    },
}
