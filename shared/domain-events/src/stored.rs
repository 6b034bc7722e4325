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
use serde_json::{Value, json, value::RawValue};
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
#[derive(Debug)]
pub struct StoredEvent {
    /// The event type (`OrderPlaced`).
    pub event_type: &'static str,
    /// The payload as JSON text, including `schema_version`.
    pub payload: Box<RawValue>,
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

/// The current schema version of an event type (`None` for a type this code does not know).
pub fn schema_version(event_type: &str) -> Option<u64> {
    EventType::parse(event_type).map(current_version)
}

/// The current schema version of each event type.
const fn current_version(event_type: EventType) -> u64 {
    match event_type {
        EventType::OrderCreated => 2,
        EventType::OrderLineAdded
        | EventType::OrderLineRemoved
        | EventType::OrderPlaced
        | EventType::OrderConfirmed
        | EventType::OrderShipped
        | EventType::OrderCancelled
        | EventType::ProductCreated
        | EventType::StockRestocked
        | EventType::StockReserved
        | EventType::StockReleased
        | EventType::StockCommitted
        | EventType::PaymentAuthorized
        | EventType::PaymentDeclined
        | EventType::PaymentRefunded
        | EventType::PaymentCaptured => 1,
    }
}

// The stored form of each event type, at its current schema version. One struct per shape
// both writes and reads it; `schema_version` is added on the way out and checked on the way
// in, apart from the body. Values are checked again when read (see `decode_current`).

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

#[derive(Serialize, Deserialize)]
struct OrderCreatedForm {
    order_id: Uuid,
    customer_id: Uuid,
    currency: String,
    lines: Vec<StoredLine>,
}

#[derive(Serialize, Deserialize)]
struct OrderLineAddedForm {
    order_id: Uuid,
    line: StoredLine,
}

#[derive(Serialize, Deserialize)]
struct OrderSkuForm {
    order_id: Uuid,
    sku: String,
}

#[derive(Serialize, Deserialize)]
struct OrderPlacedForm {
    order_id: Uuid,
    customer_id: Uuid,
    lines: Vec<StoredLine>,
    total: StoredMoney,
    payment_method: String,
}

#[derive(Serialize, Deserialize)]
struct OrderForm {
    order_id: Uuid,
}

#[derive(Serialize, Deserialize)]
struct OrderReasonForm {
    order_id: Uuid,
    reason: String,
}

#[derive(Serialize, Deserialize)]
struct ProductCreatedForm {
    sku: String,
    name: String,
    price: StoredMoney,
    initial_stock: i64,
}

#[derive(Serialize, Deserialize)]
struct RestockForm {
    sku: String,
    quantity: i64,
}

#[derive(Serialize, Deserialize)]
struct StockMoveForm {
    sku: String,
    order_id: Uuid,
    quantity: i64,
}

#[derive(Serialize, Deserialize)]
struct PaymentAuthorizedForm {
    order_id: Uuid,
    customer_id: Uuid,
    amount: StoredMoney,
    method: String,
}

#[derive(Serialize, Deserialize)]
struct PaymentDeclinedForm {
    order_id: Uuid,
    customer_id: Uuid,
    amount: StoredMoney,
    reason: String,
}

#[derive(Serialize, Deserialize)]
struct PaymentRefundedForm {
    order_id: Uuid,
    amount: StoredMoney,
    reason: String,
}

#[derive(Serialize, Deserialize)]
struct PaymentCapturedForm {
    order_id: Uuid,
    amount: StoredMoney,
}

/// A body with its schema version, as written.
#[derive(Serialize)]
struct Versioned<T> {
    schema_version: u64,
    #[serde(flatten)]
    body: T,
}

/// What a reader looks at first: the schema version, present or not.
#[derive(Deserialize)]
struct Header {
    #[serde(default, deserialize_with = "present")]
    schema_version: Option<Value>,
}

/// `Some` for any value that is there, `null` included.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// The schema version where [`StoredEvent::encode`] writes it, first: `{"schema_version":N,`.
/// Reading it there saves a pass over the text; `None` sends the caller to read the header
/// properly (a payload laid out by another writer, say).
fn leading_version(payload: &str) -> Option<u64> {
    let rest = payload.strip_prefix(r#"{"schema_version":"#)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    match rest.as_bytes().get(digits) {
        Some(b',' | b'}') => rest[..digits].parse().ok(),
        _ => None,
    }
}

fn money(m: &Money) -> StoredMoney {
    StoredMoney {
        amount_minor: m.amount_minor(),
        currency: m.currency().as_str().to_owned(),
    }
}

fn line(l: &OrderLine) -> StoredLine {
    StoredLine {
        sku: l.sku.as_str().to_owned(),
        quantity: i64::from(l.quantity.get()),
        unit_price: money(&l.unit_price),
    }
}

fn lines_of(lines: &[OrderLine]) -> Vec<StoredLine> {
    lines.iter().map(line).collect()
}

fn stock_move(sku: &Sku, order_id: OrderId, quantity: Quantity) -> StockMoveForm {
    StockMoveForm {
        sku: sku.as_str().to_owned(),
        order_id: order_id.as_uuid(),
        quantity: i64::from(quantity.get()),
    }
}

fn versioned<T: Serialize>(event_type: &str, body: T) -> Box<RawValue> {
    let stored = Versioned {
        schema_version: schema_version(event_type).unwrap_or(1),
        body,
    };
    // Plain structs of strings, numbers and UUIDs: serialising them cannot fail.
    serde_json::value::to_raw_value(&stored).expect("stored forms always serialise")
}

impl StoredEvent {
    /// The stored form of `event`, at the current schema version.
    pub fn encode(event: &DomainEvent) -> StoredEvent {
        let event_type = event.event_type();
        let payload = match event {
            DomainEvent::OrderCreated(e) => versioned(
                event_type,
                OrderCreatedForm {
                    order_id: e.order_id.as_uuid(),
                    customer_id: e.customer_id.as_uuid(),
                    currency: e.currency.as_str().to_owned(),
                    lines: lines_of(&e.lines),
                },
            ),
            DomainEvent::OrderLineAdded(e) => versioned(
                event_type,
                OrderLineAddedForm {
                    order_id: e.order_id.as_uuid(),
                    line: line(&e.line),
                },
            ),
            DomainEvent::OrderLineRemoved(e) => versioned(
                event_type,
                OrderSkuForm {
                    order_id: e.order_id.as_uuid(),
                    sku: e.sku.as_str().to_owned(),
                },
            ),
            DomainEvent::OrderPlaced(e) => versioned(
                event_type,
                OrderPlacedForm {
                    order_id: e.order_id.as_uuid(),
                    customer_id: e.customer_id.as_uuid(),
                    lines: lines_of(&e.lines),
                    total: money(&e.total),
                    payment_method: e.payment_method.as_str().to_owned(),
                },
            ),
            DomainEvent::OrderConfirmed(OrderConfirmed { order_id })
            | DomainEvent::OrderShipped(OrderShipped { order_id }) => versioned(
                event_type,
                OrderForm {
                    order_id: order_id.as_uuid(),
                },
            ),
            DomainEvent::OrderCancelled(e) => versioned(
                event_type,
                OrderReasonForm {
                    order_id: e.order_id.as_uuid(),
                    reason: e.reason.as_str().to_owned(),
                },
            ),
            DomainEvent::ProductCreated(e) => versioned(
                event_type,
                ProductCreatedForm {
                    sku: e.sku.as_str().to_owned(),
                    name: e.name.as_str().to_owned(),
                    price: money(&e.price),
                    // A stock level is made from an i64, so it always fits.
                    initial_stock: i64::try_from(e.initial_stock.get()).unwrap_or(i64::MAX),
                },
            ),
            DomainEvent::StockRestocked(e) => versioned(
                event_type,
                RestockForm {
                    sku: e.sku.as_str().to_owned(),
                    quantity: i64::from(e.quantity.get()),
                },
            ),
            DomainEvent::StockReserved(StockReserved {
                sku,
                order_id,
                quantity,
            })
            | DomainEvent::StockReleased(StockReleased {
                sku,
                order_id,
                quantity,
            })
            | DomainEvent::StockCommitted(StockCommitted {
                sku,
                order_id,
                quantity,
            }) => versioned(event_type, stock_move(sku, *order_id, *quantity)),
            DomainEvent::PaymentAuthorized(e) => versioned(
                event_type,
                PaymentAuthorizedForm {
                    order_id: e.order_id.as_uuid(),
                    customer_id: e.customer_id.as_uuid(),
                    amount: money(&e.amount),
                    method: e.method.as_str().to_owned(),
                },
            ),
            DomainEvent::PaymentDeclined(e) => versioned(
                event_type,
                PaymentDeclinedForm {
                    order_id: e.order_id.as_uuid(),
                    customer_id: e.customer_id.as_uuid(),
                    amount: money(&e.amount),
                    reason: e.reason.as_str().to_owned(),
                },
            ),
            DomainEvent::PaymentRefunded(e) => versioned(
                event_type,
                PaymentRefundedForm {
                    order_id: e.order_id.as_uuid(),
                    amount: money(&e.amount),
                    reason: e.reason.as_str().to_owned(),
                },
            ),
            DomainEvent::PaymentCaptured(e) => versioned(
                event_type,
                PaymentCapturedForm {
                    order_id: e.order_id.as_uuid(),
                    amount: money(&e.amount),
                },
            ),
        };
        StoredEvent {
            event_type,
            payload,
        }
    }

    /// Reads a stored payload (JSON text) of any known schema version back into a domain
    /// event. The current version is read straight into its stored form; an older one is
    /// upcast first.
    pub fn decode(event_type: &str, payload: &str) -> Result<DomainEvent, DecodeError> {
        let kind = EventType::parse(event_type)
            .ok_or_else(|| DecodeError::UnknownEventType(event_type.to_owned()))?;
        let current = current_version(kind);
        let version = match leading_version(payload) {
            Some(version) => version,
            None => {
                let header: Header = serde_json::from_str(payload)
                    .map_err(|e| malformed(event_type, e.to_string()))?;
                match header.schema_version {
                    None => 1,
                    Some(v) => v
                        .as_u64()
                        .ok_or_else(|| malformed(event_type, "schema_version is not a number"))?,
                }
            }
        };
        if version == 0 || version > current {
            return Err(DecodeError::UnsupportedSchemaVersion {
                event_type: event_type.to_owned(),
                version,
            });
        }
        let decoded = if version < current {
            let older: Value =
                serde_json::from_str(payload).map_err(|e| malformed(event_type, e.to_string()))?;
            let upcast = upcast(kind, version, older)?;
            decode_current(kind, &upcast.to_string())
        } else {
            decode_current(kind, payload)
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
fn upcast(kind: EventType, mut version: u64, mut payload: Value) -> Result<Value, DecodeError> {
    while version < current_version(kind) {
        payload = match (kind, version) {
            (EventType::OrderCreated, 1) => order_created_v1_to_v2(payload)
                .ok_or_else(|| malformed(kind.as_str(), "bad v1 shape"))?,
            _ => {
                return Err(DecodeError::UnsupportedSchemaVersion {
                    event_type: kind.as_str().to_owned(),
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

fn parse<T: DeserializeOwned>(payload: &str) -> Decoded<T> {
    serde_json::from_str(payload).map_err(|e| e.to_string())
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

fn to_lines(lines: Vec<StoredLine>) -> Decoded<Vec<OrderLine>> {
    lines.into_iter().map(to_line).collect()
}

fn to_sku(sku: &str) -> Decoded<Sku> {
    checked("sku", Sku::parse(sku))
}

fn to_quantity(quantity: i64) -> Decoded<Quantity> {
    checked("quantity", Quantity::new(quantity))
}

fn to_reason(reason: &str) -> Decoded<Text> {
    checked("reason", Text::parse(reason, MAX_REASON_CHARS))
}

fn to_stock_move(p: &str) -> Decoded<(Sku, OrderId, Quantity)> {
    let s: StockMoveForm = parse(p)?;
    Ok((
        to_sku(&s.sku)?,
        OrderId::from_uuid(s.order_id),
        to_quantity(s.quantity)?,
    ))
}

fn decode_current(kind: EventType, p: &str) -> Decoded<DomainEvent> {
    Ok(match kind {
        EventType::OrderCreated => {
            let s: OrderCreatedForm = parse(p)?;
            DomainEvent::OrderCreated(OrderCreated {
                order_id: OrderId::from_uuid(s.order_id),
                customer_id: CustomerId::from_uuid(s.customer_id),
                currency: checked("currency", Currency::parse(&s.currency))?,
                lines: to_lines(s.lines)?,
            })
        }
        EventType::OrderLineAdded => {
            let s: OrderLineAddedForm = parse(p)?;
            DomainEvent::OrderLineAdded(OrderLineAdded {
                order_id: OrderId::from_uuid(s.order_id),
                line: to_line(s.line)?,
            })
        }
        EventType::OrderLineRemoved => {
            let s: OrderSkuForm = parse(p)?;
            DomainEvent::OrderLineRemoved(OrderLineRemoved {
                order_id: OrderId::from_uuid(s.order_id),
                sku: to_sku(&s.sku)?,
            })
        }
        EventType::OrderPlaced => {
            let s: OrderPlacedForm = parse(p)?;
            DomainEvent::OrderPlaced(OrderPlaced {
                order_id: OrderId::from_uuid(s.order_id),
                customer_id: CustomerId::from_uuid(s.customer_id),
                lines: to_lines(s.lines)?,
                total: to_money("total", s.total)?,
                payment_method: checked("payment_method", PaymentMethod::parse(&s.payment_method))?,
            })
        }
        EventType::OrderConfirmed => DomainEvent::OrderConfirmed(OrderConfirmed {
            order_id: OrderId::from_uuid(parse::<OrderForm>(p)?.order_id),
        }),
        EventType::OrderShipped => DomainEvent::OrderShipped(OrderShipped {
            order_id: OrderId::from_uuid(parse::<OrderForm>(p)?.order_id),
        }),
        EventType::OrderCancelled => {
            let s: OrderReasonForm = parse(p)?;
            DomainEvent::OrderCancelled(OrderCancelled {
                order_id: OrderId::from_uuid(s.order_id),
                reason: to_reason(&s.reason)?,
            })
        }
        EventType::ProductCreated => {
            let s: ProductCreatedForm = parse(p)?;
            DomainEvent::ProductCreated(ProductCreated {
                sku: to_sku(&s.sku)?,
                name: checked("name", Text::parse(&s.name, MAX_NAME_CHARS))?,
                price: to_money("price", s.price)?,
                initial_stock: checked("initial_stock", StockLevel::new(s.initial_stock))?,
            })
        }
        EventType::StockRestocked => {
            let s: RestockForm = parse(p)?;
            DomainEvent::StockRestocked(StockRestocked {
                sku: to_sku(&s.sku)?,
                quantity: to_quantity(s.quantity)?,
            })
        }
        EventType::StockReserved => {
            let (sku, order_id, quantity) = to_stock_move(p)?;
            DomainEvent::StockReserved(StockReserved {
                sku,
                order_id,
                quantity,
            })
        }
        EventType::StockReleased => {
            let (sku, order_id, quantity) = to_stock_move(p)?;
            DomainEvent::StockReleased(StockReleased {
                sku,
                order_id,
                quantity,
            })
        }
        EventType::StockCommitted => {
            let (sku, order_id, quantity) = to_stock_move(p)?;
            DomainEvent::StockCommitted(StockCommitted {
                sku,
                order_id,
                quantity,
            })
        }
        EventType::PaymentAuthorized => {
            let s: PaymentAuthorizedForm = parse(p)?;
            DomainEvent::PaymentAuthorized(PaymentAuthorized {
                order_id: OrderId::from_uuid(s.order_id),
                customer_id: CustomerId::from_uuid(s.customer_id),
                amount: to_money("amount", s.amount)?,
                method: checked("method", PaymentMethod::parse(&s.method))?,
            })
        }
        EventType::PaymentDeclined => {
            let s: PaymentDeclinedForm = parse(p)?;
            DomainEvent::PaymentDeclined(PaymentDeclined {
                order_id: OrderId::from_uuid(s.order_id),
                customer_id: CustomerId::from_uuid(s.customer_id),
                amount: to_money("amount", s.amount)?,
                reason: to_reason(&s.reason)?,
            })
        }
        EventType::PaymentRefunded => {
            let s: PaymentRefundedForm = parse(p)?;
            DomainEvent::PaymentRefunded(PaymentRefunded {
                order_id: OrderId::from_uuid(s.order_id),
                amount: to_money("amount", s.amount)?,
                reason: to_reason(&s.reason)?,
            })
        }
        EventType::PaymentCaptured => {
            let s: PaymentCapturedForm = parse(p)?;
            DomainEvent::PaymentCaptured(PaymentCaptured {
                order_id: OrderId::from_uuid(s.order_id),
                amount: to_money("amount", s.amount)?,
            })
        }
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
            let payload: Value = serde_json::from_str(stored.payload.get()).unwrap();
            assert_eq!(
                payload["schema_version"],
                json!(schema_version(stored.event_type).unwrap()),
                "{}",
                stored.event_type
            );
            assert_eq!(
                StoredEvent::decode(stored.event_type, stored.payload.get()),
                Ok(event)
            );
        }
    }

    #[test]
    fn the_schema_version_is_read_wherever_it_is() {
        let shipped = |text: &str| StoredEvent::decode("OrderShipped", text);
        let id = Uuid::from_u128(1);
        let expected = Ok(DomainEvent::OrderShipped(OrderShipped {
            order_id: OrderId::from_uuid(id),
        }));
        // First, as written; later, or with spaces, as another writer might put it.
        assert_eq!(
            shipped(&format!(r#"{{"schema_version":1,"order_id":"{id}"}}"#)),
            expected
        );
        assert_eq!(
            shipped(&format!(r#"{{"order_id":"{id}","schema_version":1}}"#)),
            expected
        );
        assert_eq!(
            shipped(&format!(
                r#"{{ "schema_version" : 1, "order_id": "{id}" }}"#
            )),
            expected
        );
        assert!(matches!(
            shipped(&format!(r#"{{"order_id":"{id}","schema_version":7}}"#)),
            Err(DecodeError::UnsupportedSchemaVersion { version: 7, .. })
        ));
        assert!(matches!(
            shipped(&format!(r#"{{"schema_version":"1","order_id":"{id}"}}"#)),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            shipped(&format!(r#"{{"schema_version":1,"order_id":"{id}""#)),
            Err(DecodeError::Malformed { .. })
        ));
        assert_eq!(leading_version(r#"{"schema_version":12}"#), Some(12));
        assert_eq!(leading_version(r#"{"schema_version":1x,"a":1}"#), None);
        assert_eq!(leading_version(r#"{"schema_version":-1,"a":1}"#), None);
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
        let decoded =
            StoredEvent::decode("OrderCreated", &v1.to_string()).expect("v1 must still decode");
        assert_eq!(decoded, every_event()[0]);
    }

    #[test]
    fn unknown_and_malformed_payloads_are_told_apart() {
        assert_eq!(
            StoredEvent::decode("OrderTeleported", "{}"),
            Err(DecodeError::UnknownEventType("OrderTeleported".into()))
        );
        assert!(matches!(
            StoredEvent::decode(
                "OrderShipped",
                &json!({ "schema_version": 9, "order_id": Uuid::nil() }).to_string()
            ),
            Err(DecodeError::UnsupportedSchemaVersion { version: 9, .. })
        ));
        assert!(matches!(
            StoredEvent::decode("OrderShipped", r#"{"schema_version": 1}"#),
            Err(DecodeError::Malformed { .. })
        ));
        // A value that breaks a domain rule is malformed even when the shape is right.
        let mut reserved: Value =
            serde_json::from_str(StoredEvent::encode(&every_event()[9]).payload.get()).unwrap();
        reserved["quantity"] = json!(0);
        assert!(matches!(
            StoredEvent::decode("StockReserved", &reserved.to_string()),
            Err(DecodeError::Malformed { .. })
        ));
    }
}
