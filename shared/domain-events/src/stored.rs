//! The stored JSON form of every event, and the upcasters that read older forms.
//!
//! Each payload is a JSON object with a `schema_version` field. Writers always write the
//! current version ([`schema_version`]). Readers first upcast an older payload step by step
//! to the current shape, then decode it into domain types, checking every value again: a
//! stored event that breaks a domain rule is reported, never trusted.
//!
//! Version history:
//! - `OrderCreated` v1 priced lines as `unit_price_minor` in the order's `currency`; v2 gives
//!   each line a full `unit_price` `{amount_minor, currency}`.
//! - Every other event is at v1.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    events::*,
    values::{
        Currency, CustomerId, InvalidValue, Money, OrderId, OrderLine, PaymentMethod, Quantity,
        Sku, StockLevel, Text,
    },
};

/// The longest reason text a stored event may carry.
pub const MAX_REASON_CHARS: usize = 500;
/// The longest product name.
pub const MAX_NAME_CHARS: usize = 200;

/// An event in its stored form: a type name and a JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The event type (`OrderPlaced`).
    pub event_type: &'static str,
    /// The payload, including `schema_version`.
    pub payload: Value,
}

/// Why a stored payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// This code does not know the event type (written by a newer version, say). Readers
    /// may skip it.
    #[error("unknown event type {0:?}")]
    UnknownEventType(String),
    /// The payload claims a schema version this code does not know.
    #[error("{event_type}: unsupported schema version {version}")]
    UnsupportedSchemaVersion {
        /// The event type.
        event_type: String,
        /// The version found.
        version: u64,
    },
    /// The payload does not have the shape or values its type and version require.
    #[error("{event_type}: malformed payload: {reason}")]
    Malformed {
        /// The event type.
        event_type: String,
        /// What is wrong.
        reason: String,
    },
}

/// The current schema version of an event type.
pub fn schema_version(event_type: &str) -> Option<u64> {
    match event_type {
        "OrderCreated" => Some(2),
        "OrderLineAdded" | "OrderLineRemoved" | "OrderPlaced" | "OrderConfirmed"
        | "OrderShipped" | "OrderCancelled" | "ProductCreated" | "StockRestocked"
        | "StockReserved" | "StockReleased" | "StockCommitted" | "PaymentAuthorized"
        | "PaymentDeclined" | "PaymentRefunded" | "PaymentCaptured" => Some(1),
        _ => None,
    }
}

#[derive(Serialize, Deserialize)]
struct StoredMoney {
    amount_minor: i64,
    currency: String,
}

#[derive(Serialize, Deserialize)]
struct StoredLine {
    sku: String,
    quantity: i64,
    unit_price: StoredMoney,
}

fn money(m: &Money) -> Value {
    json!({ "amount_minor": m.amount_minor(), "currency": m.currency().as_str() })
}

fn line(l: &OrderLine) -> Value {
    json!({ "sku": l.sku.as_str(), "quantity": l.quantity.get(), "unit_price": money(&l.unit_price) })
}

impl StoredEvent {
    /// The stored form of `event`, at the current schema version.
    pub fn encode(event: &DomainEvent) -> StoredEvent {
        let mut payload = match event {
            DomainEvent::OrderCreated(e) => json!({
                "order_id": e.order_id.as_uuid(),
                "customer_id": e.customer_id.as_uuid(),
                "currency": e.currency.as_str(),
                "lines": e.lines.iter().map(line).collect::<Vec<_>>(),
            }),
            DomainEvent::OrderLineAdded(e) => {
                json!({ "order_id": e.order_id.as_uuid(), "line": line(&e.line) })
            }
            DomainEvent::OrderLineRemoved(e) => {
                json!({ "order_id": e.order_id.as_uuid(), "sku": e.sku.as_str() })
            }
            DomainEvent::OrderPlaced(e) => json!({
                "order_id": e.order_id.as_uuid(),
                "customer_id": e.customer_id.as_uuid(),
                "lines": e.lines.iter().map(line).collect::<Vec<_>>(),
                "total": money(&e.total),
                "payment_method": e.payment_method.as_str(),
            }),
            DomainEvent::OrderConfirmed(e) => json!({ "order_id": e.order_id.as_uuid() }),
            DomainEvent::OrderShipped(e) => json!({ "order_id": e.order_id.as_uuid() }),
            DomainEvent::OrderCancelled(e) => {
                json!({ "order_id": e.order_id.as_uuid(), "reason": e.reason.as_str() })
            }
            DomainEvent::ProductCreated(e) => json!({
                "sku": e.sku.as_str(),
                "name": e.name.as_str(),
                "price": money(&e.price),
                "initial_stock": e.initial_stock.get(),
            }),
            DomainEvent::StockRestocked(e) => {
                json!({ "sku": e.sku.as_str(), "quantity": e.quantity.get() })
            }
            DomainEvent::StockReserved(e) => {
                json!({ "sku": e.sku.as_str(), "order_id": e.order_id.as_uuid(), "quantity": e.quantity.get() })
            }
            DomainEvent::StockReleased(e) => {
                json!({ "sku": e.sku.as_str(), "order_id": e.order_id.as_uuid(), "quantity": e.quantity.get() })
            }
            DomainEvent::StockCommitted(e) => {
                json!({ "sku": e.sku.as_str(), "order_id": e.order_id.as_uuid(), "quantity": e.quantity.get() })
            }
            DomainEvent::PaymentAuthorized(e) => json!({
                "order_id": e.order_id.as_uuid(),
                "customer_id": e.customer_id.as_uuid(),
                "amount": money(&e.amount),
                "method": e.method.as_str(),
            }),
            DomainEvent::PaymentDeclined(e) => json!({
                "order_id": e.order_id.as_uuid(),
                "customer_id": e.customer_id.as_uuid(),
                "amount": money(&e.amount),
                "reason": e.reason.as_str(),
            }),
            DomainEvent::PaymentRefunded(e) => json!({
                "order_id": e.order_id.as_uuid(),
                "amount": money(&e.amount),
                "reason": e.reason.as_str(),
            }),
            DomainEvent::PaymentCaptured(e) => {
                json!({ "order_id": e.order_id.as_uuid(), "amount": money(&e.amount) })
            }
        };
        let event_type = event.event_type();
        payload["schema_version"] = json!(schema_version(event_type).unwrap_or(1));
        StoredEvent {
            event_type,
            payload,
        }
    }

    /// Reads a stored payload of any known schema version back into a domain event.
    pub fn decode(event_type: &str, payload: &Value) -> Result<DomainEvent, DecodeError> {
        let current = schema_version(event_type)
            .ok_or_else(|| DecodeError::UnknownEventType(event_type.to_owned()))?;
        let version = match payload.get("schema_version") {
            None => 1,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| malformed(event_type, "schema_version is not a number"))?,
        };
        if version == 0 || version > current {
            return Err(DecodeError::UnsupportedSchemaVersion {
                event_type: event_type.to_owned(),
                version,
            });
        }
        let decoded = if version < current {
            decode_current(event_type, &upcast(event_type, version, payload.clone())?)
        } else {
            // The common case reads the stored payload as it is, without a copy.
            decode_current(event_type, payload)
        };
        decoded.map_err(|reason| malformed(event_type, reason))
    }
}

fn malformed(event_type: &str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Malformed {
        event_type: event_type.to_owned(),
        reason: reason.into(),
    }
}

/// Brings a payload from `version` up to the current version of its type, one step at a time.
fn upcast(event_type: &str, mut version: u64, mut payload: Value) -> Result<Value, DecodeError> {
    while version < schema_version(event_type).unwrap_or(version) {
        payload = match (event_type, version) {
            ("OrderCreated", 1) => order_created_v1_to_v2(payload)
                .ok_or_else(|| malformed(event_type, "bad v1 shape"))?,
            _ => {
                return Err(DecodeError::UnsupportedSchemaVersion {
                    event_type: event_type.to_owned(),
                    version,
                });
            }
        };
        version += 1;
    }
    Ok(payload)
}

/// v1 lines were `{sku, quantity, unit_price_minor}` in the order's currency.
fn order_created_v1_to_v2(mut payload: Value) -> Option<Value> {
    let currency = payload.get("currency")?.clone();
    for line in payload.get_mut("lines")?.as_array_mut()? {
        let line = line.as_object_mut()?;
        let amount = line.remove("unit_price_minor")?;
        line.insert(
            "unit_price".into(),
            json!({ "amount_minor": amount, "currency": currency }),
        );
    }
    payload["schema_version"] = json!(2);
    Some(payload)
}

type Decoded<T> = Result<T, String>;

fn field<T: DeserializeOwned>(payload: &Value, name: &str) -> Decoded<T> {
    let value = payload
        .get(name)
        .ok_or_else(|| format!("missing field {name}"))?;
    T::deserialize(value).map_err(|e| format!("field {name}: {e}"))
}

fn checked<T>(name: &str, result: Result<T, InvalidValue>) -> Decoded<T> {
    result.map_err(|e| format!("field {name}: {e}"))
}

fn to_money(name: &str, m: StoredMoney) -> Decoded<Money> {
    let currency = checked(name, Currency::parse(&m.currency))?;
    checked(name, Money::new(m.amount_minor, currency))
}

fn to_line(l: StoredLine) -> Decoded<OrderLine> {
    Ok(OrderLine {
        sku: checked("sku", Sku::parse(&l.sku))?,
        quantity: checked("quantity", Quantity::new(l.quantity))?,
        unit_price: to_money("unit_price", l.unit_price)?,
    })
}

fn order_id(p: &Value) -> Decoded<OrderId> {
    Ok(OrderId::from_uuid(field::<Uuid>(p, "order_id")?))
}

fn customer_id(p: &Value) -> Decoded<CustomerId> {
    Ok(CustomerId::from_uuid(field::<Uuid>(p, "customer_id")?))
}

fn sku(p: &Value) -> Decoded<Sku> {
    checked("sku", Sku::parse(&field::<String>(p, "sku")?))
}

fn quantity(p: &Value) -> Decoded<Quantity> {
    checked("quantity", Quantity::new(field(p, "quantity")?))
}

fn amount(p: &Value, name: &str) -> Decoded<Money> {
    to_money(name, field(p, name)?)
}

fn reason(p: &Value) -> Decoded<Text> {
    checked(
        "reason",
        Text::parse(&field::<String>(p, "reason")?, MAX_REASON_CHARS),
    )
}

fn lines(p: &Value) -> Decoded<Vec<OrderLine>> {
    field::<Vec<StoredLine>>(p, "lines")?
        .into_iter()
        .map(to_line)
        .collect()
}

fn decode_current(event_type: &str, p: &Value) -> Decoded<DomainEvent> {
    Ok(match event_type {
        "OrderCreated" => DomainEvent::OrderCreated(OrderCreated {
            order_id: order_id(p)?,
            customer_id: customer_id(p)?,
            currency: checked(
                "currency",
                Currency::parse(&field::<String>(p, "currency")?),
            )?,
            lines: lines(p)?,
        }),
        "OrderLineAdded" => DomainEvent::OrderLineAdded(OrderLineAdded {
            order_id: order_id(p)?,
            line: to_line(field(p, "line")?)?,
        }),
        "OrderLineRemoved" => DomainEvent::OrderLineRemoved(OrderLineRemoved {
            order_id: order_id(p)?,
            sku: sku(p)?,
        }),
        "OrderPlaced" => DomainEvent::OrderPlaced(OrderPlaced {
            order_id: order_id(p)?,
            customer_id: customer_id(p)?,
            lines: lines(p)?,
            total: amount(p, "total")?,
            payment_method: checked(
                "payment_method",
                PaymentMethod::parse(&field::<String>(p, "payment_method")?),
            )?,
        }),
        "OrderConfirmed" => DomainEvent::OrderConfirmed(OrderConfirmed {
            order_id: order_id(p)?,
        }),
        "OrderShipped" => DomainEvent::OrderShipped(OrderShipped {
            order_id: order_id(p)?,
        }),
        "OrderCancelled" => DomainEvent::OrderCancelled(OrderCancelled {
            order_id: order_id(p)?,
            reason: reason(p)?,
        }),
        "ProductCreated" => DomainEvent::ProductCreated(ProductCreated {
            sku: sku(p)?,
            name: checked(
                "name",
                Text::parse(&field::<String>(p, "name")?, MAX_NAME_CHARS),
            )?,
            price: amount(p, "price")?,
            initial_stock: checked("initial_stock", StockLevel::new(field(p, "initial_stock")?))?,
        }),
        "StockRestocked" => DomainEvent::StockRestocked(StockRestocked {
            sku: sku(p)?,
            quantity: quantity(p)?,
        }),
        "StockReserved" => DomainEvent::StockReserved(StockReserved {
            sku: sku(p)?,
            order_id: order_id(p)?,
            quantity: quantity(p)?,
        }),
        "StockReleased" => DomainEvent::StockReleased(StockReleased {
            sku: sku(p)?,
            order_id: order_id(p)?,
            quantity: quantity(p)?,
        }),
        "StockCommitted" => DomainEvent::StockCommitted(StockCommitted {
            sku: sku(p)?,
            order_id: order_id(p)?,
            quantity: quantity(p)?,
        }),
        "PaymentAuthorized" => DomainEvent::PaymentAuthorized(PaymentAuthorized {
            order_id: order_id(p)?,
            customer_id: customer_id(p)?,
            amount: amount(p, "amount")?,
            method: checked(
                "method",
                PaymentMethod::parse(&field::<String>(p, "method")?),
            )?,
        }),
        "PaymentDeclined" => DomainEvent::PaymentDeclined(PaymentDeclined {
            order_id: order_id(p)?,
            customer_id: customer_id(p)?,
            amount: amount(p, "amount")?,
            reason: reason(p)?,
        }),
        "PaymentRefunded" => DomainEvent::PaymentRefunded(PaymentRefunded {
            order_id: order_id(p)?,
            amount: amount(p, "amount")?,
            reason: reason(p)?,
        }),
        "PaymentCaptured" => DomainEvent::PaymentCaptured(PaymentCaptured {
            order_id: order_id(p)?,
            amount: amount(p, "amount")?,
        }),
        other => return Err(format!("no decoder for {other}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(n: i64) -> Money {
        Money::new(n, Currency::parse("EUR").unwrap()).unwrap()
    }

    fn sample_line() -> OrderLine {
        OrderLine {
            sku: Sku::parse("SKU-1").unwrap(),
            quantity: Quantity::new(2).unwrap(),
            unit_price: eur(1250),
        }
    }

    fn every_event() -> Vec<DomainEvent> {
        let order_id = OrderId::from_uuid(Uuid::from_u128(1));
        let customer_id = CustomerId::from_uuid(Uuid::from_u128(2));
        let sku = Sku::parse("SKU-1").unwrap();
        let q = Quantity::new(3).unwrap();
        let reason = Text::parse("changed my mind", 100).unwrap();
        vec![
            DomainEvent::OrderCreated(OrderCreated {
                order_id,
                customer_id,
                currency: Currency::parse("EUR").unwrap(),
                lines: vec![sample_line()],
            }),
            DomainEvent::OrderLineAdded(OrderLineAdded {
                order_id,
                line: sample_line(),
            }),
            DomainEvent::OrderLineRemoved(OrderLineRemoved {
                order_id,
                sku: sku.clone(),
            }),
            DomainEvent::OrderPlaced(OrderPlaced {
                order_id,
                customer_id,
                lines: vec![sample_line()],
                total: eur(2500),
                payment_method: PaymentMethod::parse("card").unwrap(),
            }),
            DomainEvent::OrderConfirmed(OrderConfirmed { order_id }),
            DomainEvent::OrderShipped(OrderShipped { order_id }),
            DomainEvent::OrderCancelled(OrderCancelled {
                order_id,
                reason: reason.clone(),
            }),
            DomainEvent::ProductCreated(ProductCreated {
                sku: sku.clone(),
                name: Text::parse("Widget", 100).unwrap(),
                price: eur(1250),
                initial_stock: StockLevel::new(10).unwrap(),
            }),
            DomainEvent::StockRestocked(StockRestocked {
                sku: sku.clone(),
                quantity: q,
            }),
            DomainEvent::StockReserved(StockReserved {
                sku: sku.clone(),
                order_id,
                quantity: q,
            }),
            DomainEvent::StockReleased(StockReleased {
                sku: sku.clone(),
                order_id,
                quantity: q,
            }),
            DomainEvent::StockCommitted(StockCommitted {
                sku,
                order_id,
                quantity: q,
            }),
            DomainEvent::PaymentAuthorized(PaymentAuthorized {
                order_id,
                customer_id,
                amount: eur(2500),
                method: PaymentMethod::parse("card").unwrap(),
            }),
            DomainEvent::PaymentDeclined(PaymentDeclined {
                order_id,
                customer_id,
                amount: eur(2500),
                reason: reason.clone(),
            }),
            DomainEvent::PaymentRefunded(PaymentRefunded {
                order_id,
                amount: eur(2500),
                reason,
            }),
            DomainEvent::PaymentCaptured(PaymentCaptured {
                order_id,
                amount: eur(2500),
            }),
        ]
    }

    #[test]
    fn every_event_round_trips_through_its_stored_form() {
        for event in every_event() {
            let stored = StoredEvent::encode(&event);
            assert_eq!(
                stored.payload["schema_version"],
                json!(schema_version(stored.event_type).unwrap()),
                "{}",
                stored.event_type
            );
            assert_eq!(
                StoredEvent::decode(stored.event_type, &stored.payload),
                Ok(event)
            );
        }
    }

    #[test]
    fn an_order_created_v1_is_upcast() {
        // Exactly what version 1 of the code wrote.
        let v1 = json!({
            "order_id": "00000000-0000-0000-0000-000000000001",
            "customer_id": "00000000-0000-0000-0000-000000000002",
            "currency": "EUR",
            "lines": [{ "sku": "SKU-1", "quantity": 2, "unit_price_minor": 1250 }],
        });
        let decoded = StoredEvent::decode("OrderCreated", &v1).expect("v1 must still decode");
        assert_eq!(decoded, every_event()[0]);
    }

    #[test]
    fn unknown_and_malformed_payloads_are_told_apart() {
        assert_eq!(
            StoredEvent::decode("OrderTeleported", &json!({})),
            Err(DecodeError::UnknownEventType("OrderTeleported".into()))
        );
        assert!(matches!(
            StoredEvent::decode(
                "OrderShipped",
                &json!({ "schema_version": 9, "order_id": Uuid::nil() })
            ),
            Err(DecodeError::UnsupportedSchemaVersion { version: 9, .. })
        ));
        assert!(matches!(
            StoredEvent::decode("OrderShipped", &json!({ "schema_version": 1 })),
            Err(DecodeError::Malformed { .. })
        ));
        // A value that breaks a domain rule is malformed even when the shape is right.
        let mut reserved = StoredEvent::encode(&every_event()[9]).payload;
        reserved["quantity"] = json!(0);
        assert!(matches!(
            StoredEvent::decode("StockReserved", &reserved),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
