//! The edge: every request field is checked and parsed into domain types here, and every
//! outcome turned back into a response. After this module nothing re-checks input.

use std::collections::HashSet;

use contracts::orders::v1 as pb;
use domain_events::{
    stored::{MAX_NAME_CHARS, MAX_REASON_CHARS},
    values::{
        Currency, CustomerId, Money, OrderId, PaymentMethod, Quantity, Sku, StockLevel, Text,
    },
};
use event_store::Version;
use service_runtime::edge::FieldViolations;
use uuid::Uuid;

use crate::{
    commands::{Command, Detail, LineRequest, Outcome},
    domain::order::MAX_LINES,
};

/// A request parsed into a command, before the envelope is completed with metadata.
pub struct Parsed {
    /// The idempotency key.
    pub command_id: Uuid,
    /// A client-pinned version, if any.
    pub expected_version: Option<Version>,
    /// The command.
    pub command: Command,
}

/// Field-by-field parsing with every violation collected.
struct Fields(FieldViolations);

impl Fields {
    fn new() -> Self {
        Self(FieldViolations::new())
    }

    fn uuid(&mut self, field: &str, s: &str) -> Option<Uuid> {
        if s.is_empty() {
            self.0.add(field, "is required (a UUID)");
            return None;
        }
        self.0.check(
            field,
            Uuid::try_parse(s).map_err(|_| format!("{s:?} is not a UUID")),
        )
    }

    fn order_id(&mut self, field: &str, s: &str) -> Option<OrderId> {
        self.uuid(field, s).map(OrderId::from_uuid)
    }

    fn customer_id(&mut self, field: &str, s: &str) -> Option<CustomerId> {
        self.uuid(field, s).map(CustomerId::from_uuid)
    }

    fn sku(&mut self, field: &str, s: &str) -> Option<Sku> {
        self.0.check(field, Sku::parse(s))
    }

    fn quantity(&mut self, field: &str, n: i64) -> Option<Quantity> {
        self.0.check(field, Quantity::new(n))
    }

    fn currency(&mut self, field: &str, s: &str) -> Option<Currency> {
        self.0.check(field, Currency::parse(s))
    }

    fn money(&mut self, field: &str, m: Option<&pb::Money>) -> Option<Money> {
        let Some(m) = m else {
            self.0.add(field, "is required");
            return None;
        };
        let currency = self.currency(&format!("{field}.currency"), &m.currency)?;
        self.0.check(
            &format!("{field}.amount_minor"),
            Money::new(m.amount_minor, currency),
        )
    }

    fn text(&mut self, field: &str, s: &str, max: usize) -> Option<Text> {
        self.0.check(field, Text::parse(s, max))
    }

    fn payment_method(&mut self, field: &str, s: &str) -> Option<PaymentMethod> {
        self.0.check(field, PaymentMethod::parse(s))
    }

    fn line(&mut self, field: &str, line: Option<&pb::OrderLine>) -> Option<LineRequest> {
        let Some(line) = line else {
            self.0.add(field, "is required");
            return None;
        };
        let sku = self.sku(&format!("{field}.sku"), &line.sku);
        let quantity = self.quantity(&format!("{field}.quantity"), i64::from(line.quantity));
        // Optional: the price the client expects to pay; the catalogue sets the price.
        let expected_price = match &line.unit_price {
            Some(price) => Some(self.money(&format!("{field}.unit_price"), Some(price))?),
            None => None,
        };
        Some(LineRequest {
            sku: sku?,
            quantity: quantity?,
            expected_price,
        })
    }

    /// Checks a list's length and that no SKU appears twice.
    fn unique_skus<'a>(
        &mut self,
        field: &str,
        skus: impl ExactSizeIterator<Item = &'a str>,
        min: usize,
    ) {
        let count = skus.len();
        if count < min || count > MAX_LINES {
            self.0.add(
                field,
                format!("must hold {min} to {MAX_LINES} entries, got {count}"),
            );
            return;
        }
        let mut seen = HashSet::new();
        for sku in skus {
            if !seen.insert(sku) {
                self.0
                    .add(field, format!("SKU {sku} appears more than once"));
            }
        }
    }

    fn version(&mut self, v: Option<u64>) -> Option<Version> {
        v.map(Version::new)
    }

    fn finish(
        self,
        command_id: Option<Uuid>,
        expected_version: Option<Version>,
        command: impl FnOnce() -> Option<Command>,
    ) -> Result<Parsed, tonic::Status> {
        self.0.finish(|| {
            Some(Parsed {
                command_id: command_id?,
                expected_version,
                command: command()?,
            })
        })
    }
}

/// Parses `CreateOrder`.
pub fn create_order(r: &pb::CreateOrderRequest) -> Result<Parsed, tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let order_id = f.order_id("order_id", &r.order_id);
    let customer_id = f.customer_id("customer_id", &r.customer_id);
    let currency = f.currency("currency", &r.currency);
    f.unique_skus("lines", r.lines.iter().map(|l| l.sku.as_str()), 0);
    let lines: Vec<Option<LineRequest>> = if r.lines.len() <= MAX_LINES {
        r.lines
            .iter()
            .enumerate()
            .map(|(i, l)| f.line(&format!("lines[{i}]"), Some(l)))
            .collect()
    } else {
        vec![]
    };
    f.finish(command_id, None, || {
        Some(Command::CreateOrder {
            order_id: order_id?,
            customer_id: customer_id?,
            currency: currency?,
            lines: lines.into_iter().collect::<Option<_>>()?,
        })
    })
}

/// Parses `AddOrderLine`.
pub fn add_order_line(r: &pb::AddOrderLineRequest) -> Result<Parsed, tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let order_id = f.order_id("order_id", &r.order_id);
    let line = f.line("line", r.line.as_ref());
    let expected = f.version(r.expected_version);
    f.finish(command_id, expected, || {
        Some(Command::AddOrderLine {
            order_id: order_id?,
            line: line?,
        })
    })
}

/// Parses `RemoveOrderLine`.
pub fn remove_order_line(r: &pb::RemoveOrderLineRequest) -> Result<Parsed, tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let order_id = f.order_id("order_id", &r.order_id);
    let sku = f.sku("sku", &r.sku);
    let expected = f.version(r.expected_version);
    f.finish(command_id, expected, || {
        Some(Command::RemoveOrderLine {
            order_id: order_id?,
            sku: sku?,
        })
    })
}

/// Parses `PlaceOrder`.
pub fn place_order(r: &pb::PlaceOrderRequest) -> Result<Parsed, tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let order_id = f.order_id("order_id", &r.order_id);
    let payment_method = f.payment_method("payment_method", &r.payment_method);
    let expected = f.version(r.expected_version);
    f.finish(command_id, expected, || {
        Some(Command::PlaceOrder {
            order_id: order_id?,
            payment_method: payment_method?,
        })
    })
}

/// Parses `ConfirmOrder`.
pub fn confirm_order(r: &pb::ConfirmOrderRequest) -> Result<Parsed, tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let order_id = f.order_id("order_id", &r.order_id);
    f.finish(command_id, None, || {
        Some(Command::ConfirmOrder {
            order_id: order_id?,
        })
    })
}

/// Parses `ShipOrder`.
pub fn ship_order(r: &pb::ShipOrderRequest) -> Result<Parsed, tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let order_id = f.order_id("order_id", &r.order_id);
    f.finish(command_id, None, || {
        Some(Command::ShipOrder {
            order_id: order_id?,
        })
    })
}

/// Parses `CancelOrder`.
pub fn cancel_order(r: &pb::CancelOrderRequest) -> Result<Parsed, tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let order_id = f.order_id("order_id", &r.order_id);
    let reason = f.text("reason", &r.reason, MAX_REASON_CHARS);
    f.finish(command_id, None, || {
        Some(Command::CancelOrder {
            order_id: order_id?,
            reason: reason?,
        })
    })
}

/// Parses `CreateProduct`.
pub fn create_product(r: &pb::CreateProductRequest) -> Result<Parsed, tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let sku = f.sku("sku", &r.sku);
    let name = f.text("name", &r.name, MAX_NAME_CHARS);
    let price = f.money("price", r.price.as_ref());
    let initial_stock = f.0.check("initial_stock", StockLevel::new(r.initial_stock));
    f.finish(command_id, None, || {
        Some(Command::CreateProduct {
            sku: sku?,
            name: name?,
            price: price?,
            initial_stock: initial_stock?,
        })
    })
}

/// Parses `RestockProduct`.
pub fn restock_product(r: &pb::RestockProductRequest) -> Result<Parsed, tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let sku = f.sku("sku", &r.sku);
    let quantity = f.quantity("quantity", i64::from(r.quantity));
    f.finish(command_id, None, || {
        Some(Command::RestockProduct {
            sku: sku?,
            quantity: quantity?,
        })
    })
}

/// Parses `ReserveStock`.
pub fn reserve_stock(r: &pb::ReserveStockRequest) -> Result<Parsed, tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let order_id = f.order_id("order_id", &r.order_id);
    f.unique_skus("items", r.items.iter().map(|i| i.sku.as_str()), 1);
    let items: Vec<Option<(Sku, Quantity)>> = if r.items.len() <= MAX_LINES {
        r.items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let sku = f.sku(&format!("items[{i}].sku"), &item.sku);
                let quantity =
                    f.quantity(&format!("items[{i}].quantity"), i64::from(item.quantity));
                Some((sku?, quantity?))
            })
            .collect()
    } else {
        vec![]
    };
    f.finish(command_id, None, || {
        Some(Command::ReserveStock {
            order_id: order_id?,
            items: items.into_iter().collect::<Option<_>>()?,
        })
    })
}

/// Parses `ReleaseStock`.
pub fn release_stock(r: &pb::ReleaseStockRequest) -> Result<Parsed, tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let order_id = f.order_id("order_id", &r.order_id);
    f.unique_skus("skus", r.skus.iter().map(String::as_str), 1);
    let skus: Vec<Option<Sku>> = if r.skus.len() <= MAX_LINES {
        r.skus
            .iter()
            .enumerate()
            .map(|(i, s)| f.sku(&format!("skus[{i}]"), s))
            .collect()
    } else {
        vec![]
    };
    f.finish(command_id, None, || {
        Some(Command::ReleaseStock {
            order_id: order_id?,
            skus: skus.into_iter().collect::<Option<_>>()?,
        })
    })
}

/// Parses `AuthorizePayment`.
pub fn authorize_payment(r: &pb::AuthorizePaymentRequest) -> Result<Parsed, tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let order_id = f.order_id("order_id", &r.order_id);
    let customer_id = f.customer_id("customer_id", &r.customer_id);
    let amount = f.money("amount", r.amount.as_ref());
    if amount.is_some_and(|a| a.amount_minor() == 0) {
        f.0.add("amount.amount_minor", "must be more than 0");
    }
    let method = f.payment_method("payment_method", &r.payment_method);
    f.finish(command_id, None, || {
        Some(Command::AuthorizePayment {
            order_id: order_id?,
            customer_id: customer_id?,
            amount: amount?,
            method: method?,
        })
    })
}

/// Parses `RefundPayment`.
pub fn refund_payment(r: &pb::RefundPaymentRequest) -> Result<Parsed, tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let order_id = f.order_id("order_id", &r.order_id);
    let reason = f.text("reason", &r.reason, MAX_REASON_CHARS);
    f.finish(command_id, None, || {
        Some(Command::RefundPayment {
            order_id: order_id?,
            reason: reason?,
        })
    })
}

/// Parses `VoidCommand`: the command id to settle, and why.
pub fn void_command(r: &pb::VoidCommandRequest) -> Result<(Uuid, Text), tonic::Status> {
    let mut f = Fields::new();
    let command_id = f.uuid("command_id", &r.command_id);
    let reason = f.text("reason", &r.reason, MAX_REASON_CHARS);
    f.0.finish(|| Some((command_id?, reason?)))
}

impl Outcome {
    /// The write result of the `index`-th aggregate touched (the first, for single-aggregate
    /// commands).
    pub fn write_result(&self, index: usize) -> pb::WriteResult {
        let write = self.writes.get(index);
        pb::WriteResult {
            aggregate_id: write
                .map(|w| w.aggregate_id.to_string())
                .unwrap_or_default(),
            version: write.map(|w| w.version).unwrap_or_default(),
            consistency_token: self.position.to_token(),
        }
    }

    /// Every write result, for multi-aggregate commands.
    pub fn write_results(&self) -> Vec<pb::WriteResult> {
        (0..self.writes.len())
            .map(|i| self.write_result(i))
            .collect()
    }

    /// The total of a placed order.
    pub fn total(&self) -> Option<pb::Money> {
        match &self.detail {
            Detail::Total {
                amount_minor,
                currency,
            } => Some(pb::Money {
                amount_minor: *amount_minor,
                currency: currency.clone(),
            }),
            _ => None,
        }
    }

    /// The payment outcome and decline reason.
    pub fn payment(&self) -> (pb::PaymentOutcome, String) {
        match &self.detail {
            Detail::Payment {
                authorized: true, ..
            } => (pb::PaymentOutcome::Authorized, String::new()),
            Detail::Payment { decline_reason, .. } => (
                pb::PaymentOutcome::Declined,
                decline_reason.clone().unwrap_or_default(),
            ),
            _ => (pb::PaymentOutcome::Unspecified, String::new()),
        }
    }
}
