//! Request parsing and response building for the read API: ids, page sizes, page tokens,
//! consistency tokens and deadlines in; views out.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use contracts::orders::v1 as pb;
use domain_events::status::OrderStatus;
use event_store::Position;
use service_runtime::edge::{FieldViolations, decode_page_token, encode_page_token};
use tonic::Status;
use uuid::Uuid;

use crate::{
    db::OrderCursor,
    model::{OrderView, ProductView},
};

/// The page size when the request leaves it at 0.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
/// The largest page size allowed.
pub const MAX_PAGE_SIZE: i64 = 500;
/// The longest a query waits for its consistency token.
pub const MAX_CONSISTENCY_WAIT: Duration = Duration::from_secs(5);

/// Collects violations while parsing one request.
pub struct Fields(pub FieldViolations);

impl Fields {
    /// Nothing wrong yet.
    pub fn new() -> Self {
        Self(FieldViolations::new())
    }

    /// A required UUID.
    pub fn uuid(&mut self, field: &str, s: &str) -> Option<Uuid> {
        if s.is_empty() {
            self.0.add(field, "is required (a UUID)");
            return None;
        }
        self.0.check(
            field,
            Uuid::try_parse(s).map_err(|_| format!("{s:?} is not a UUID")),
        )
    }

    /// An optional UUID (empty means absent). The outer `None` means invalid.
    pub fn optional_uuid(&mut self, field: &str, s: &str) -> Option<Option<Uuid>> {
        if s.is_empty() {
            return Some(None);
        }
        self.uuid(field, s).map(Some)
    }

    /// An optional consistency token. The outer `None` means invalid.
    pub fn token(&mut self, field: &str, s: &str) -> Option<Option<Position>> {
        if s.is_empty() {
            return Some(None);
        }
        self.0.check(field, s.parse::<Position>()).map(Some)
    }

    /// A page size: 0 for the default, else 1..=500.
    pub fn page_size(&mut self, field: &str, n: i32) -> Option<i64> {
        match i64::from(n) {
            0 => Some(DEFAULT_PAGE_SIZE),
            n if (1..=MAX_PAGE_SIZE).contains(&n) => Some(n),
            n => {
                self.0.add(
                    field,
                    format!("must be 1 to {MAX_PAGE_SIZE} (or 0 for {DEFAULT_PAGE_SIZE}), got {n}"),
                );
                None
            }
        }
    }

    /// An optional order status filter. The outer `None` means invalid.
    pub fn status(&mut self, field: &str, s: &str) -> Option<Option<OrderStatus>> {
        if s.is_empty() {
            return Some(None);
        }
        match OrderStatus::parse(s) {
            Some(status) => Some(Some(status)),
            None => {
                let names: Vec<&str> = OrderStatus::ALL.iter().map(|s| s.as_str()).collect();
                self.0
                    .add(field, format!("must be one of {}", names.join(", ")));
                None
            }
        }
    }

    /// An optional order-page token. The outer `None` means invalid.
    pub fn order_cursor(&mut self, field: &str, s: &str) -> Option<Option<OrderCursor>> {
        if s.is_empty() {
            return Some(None);
        }
        let cursor = decode_page_token(s).and_then(|text| {
            let (micros, id) = text.split_once('|')?;
            Some(OrderCursor {
                created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
                order_id: Uuid::try_parse(id).ok()?,
            })
        });
        match cursor {
            Some(cursor) => Some(Some(cursor)),
            None => {
                self.0
                    .add(field, "is not a page token returned by this service");
                None
            }
        }
    }

    /// An optional product-page token. The outer `None` means invalid.
    pub fn product_cursor(&mut self, field: &str, s: &str) -> Option<Option<String>> {
        if s.is_empty() {
            return Some(None);
        }
        match decode_page_token(s).filter(|sku| domain_events::values::Sku::parse(sku).is_ok()) {
            Some(sku) => Some(Some(sku)),
            None => {
                self.0
                    .add(field, "is not a page token returned by this service");
                None
            }
        }
    }

    /// `Ok(value)` when nothing was wrong.
    pub fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, Status> {
        self.0.finish(value)
    }
}

impl Default for Fields {
    fn default() -> Self {
        Self::new()
    }
}

/// The token for the page after `last`.
pub fn order_page_token(last: &OrderView) -> String {
    encode_page_token(&format!(
        "{}|{}",
        last.created_at.timestamp_micros(),
        last.order_id
    ))
}

/// The token for the page after `last`.
pub fn product_page_token(last: &ProductView) -> String {
    encode_page_token(&last.sku)
}

/// How long a call may wait for its consistency token: a little less than its
/// `grpc-timeout` (so the client hears why, rather than timing out), capped.
pub fn consistency_wait(metadata: &tonic::metadata::MetadataMap) -> Duration {
    metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(MAX_CONSISTENCY_WAIT, |d| {
            let margin = (d / 10).max(Duration::from_millis(10));
            d.saturating_sub(margin).min(MAX_CONSISTENCY_WAIT)
        })
}

/// Parses a `grpc-timeout` header value: digits then a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// RFC 3339 with microseconds.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

impl From<&OrderView> for pb::OrderView {
    fn from(o: &OrderView) -> Self {
        pb::OrderView {
            order_id: o.order_id.to_string(),
            customer_id: o.customer_id.to_string(),
            status: o.status.as_str().to_owned(),
            lines: o
                .lines
                .iter()
                .map(|l| pb::OrderLine {
                    sku: l.sku.clone(),
                    quantity: i32::try_from(l.quantity).unwrap_or(i32::MAX),
                    unit_price: Some(pb::Money {
                        amount_minor: l.unit_price_minor,
                        currency: o.currency.clone(),
                    }),
                })
                .collect(),
            total: Some(pb::Money {
                amount_minor: o.total_minor,
                currency: o.currency.clone(),
            }),
            payment_method: o.payment_method.clone().unwrap_or_default(),
            stock_status: o.stock_status.as_str().to_owned(),
            payment_status: o.payment_status.as_str().to_owned(),
            cancellation_reason: o.cancellation_reason.clone().unwrap_or_default(),
            created_at: timestamp(o.created_at),
            updated_at: timestamp(o.updated_at),
            version: u64::try_from(o.version).unwrap_or(0),
        }
    }
}

impl From<&ProductView> for pb::ProductView {
    fn from(p: &ProductView) -> Self {
        pb::ProductView {
            sku: p.sku.clone(),
            name: p.name.clone(),
            price: Some(pb::Money {
                amount_minor: p.price_minor,
                currency: p.currency.clone(),
            }),
            on_hand: p.on_hand,
            reserved: p.reserved,
            available: p.available(),
            version: u64::try_from(p.version).unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_refused() {
        let mut f = Fields::new();
        let order = OrderView::draft(
            Uuid::from_u128(5),
            DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            1,
        );
        let cursor = f
            .order_cursor("page_token", &order_page_token(&order))
            .unwrap()
            .unwrap();
        assert_eq!(cursor.order_id, order.order_id);
        assert_eq!(cursor.created_at, order.created_at);
        for bad in ["zz", "abc", "41", "7c"] {
            assert!(
                Fields::new().order_cursor("page_token", bad).is_none(),
                "{bad}"
            );
        }
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("3x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(
            Fields::new().page_size("page_size", 0),
            Some(DEFAULT_PAGE_SIZE)
        );
        assert_eq!(Fields::new().page_size("page_size", 500), Some(500));
        assert_eq!(Fields::new().page_size("page_size", 501), None);
        assert_eq!(Fields::new().page_size("page_size", -1), None);
    }
}
