//! Value types. Each constructor checks its invariant, so a value that exists is valid.
//!
//! The serde derives serve aggregate snapshots, a cache that is discarded when it does not
//! decode; events never use them (see [`crate::stored`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why a value was refused; names the rule that was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn invalid(msg: impl Into<String>) -> InvalidValue {
    InvalidValue(msg.into())
}

/// The namespace product ids are derived in: a product's id is the UUIDv5 of its SKU.
const PRODUCT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a8e_5d3b_4c79_9a10_b2c4_d6e8_f001);
/// The namespace payment ids are derived in: an order's payment id is the UUIDv5 of the
/// order id.
const PAYMENT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a8e_5d3b_4c79_9a10_b2c4_d6e8_f002);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(Uuid);

        impl $name {
            /// Wraps a UUID.
            pub const fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }

            /// Parses the hyphenated (or simple) text form of a UUID.
            pub fn parse(s: &str) -> Result<Self, InvalidValue> {
                Uuid::try_parse(s.trim())
                    .map(Self)
                    .map_err(|_| invalid(format!("{s:?} is not a UUID")))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// Identifies an order (and its order stream).
    OrderId
);
uuid_id!(
    /// Identifies a customer.
    CustomerId
);
uuid_id!(
    /// Identifies a product's inventory stream; derived from the SKU.
    ProductId
);
uuid_id!(
    /// Identifies an order's payment stream; derived from the order id.
    PaymentId
);

impl ProductId {
    /// The product id of a SKU: the same SKU always maps to the same stream.
    pub fn for_sku(sku: &Sku) -> Self {
        Self(Uuid::new_v5(&PRODUCT_NAMESPACE, sku.as_str().as_bytes()))
    }
}

impl PaymentId {
    /// The payment id of an order: one payment stream per order.
    pub fn for_order(order: OrderId) -> Self {
        Self(Uuid::new_v5(&PAYMENT_NAMESPACE, order.as_uuid().as_bytes()))
    }
}

/// A stock-keeping unit: 2 to 32 characters, upper-case letters, digits and `-`, starting
/// with a letter or digit (`^[A-Z0-9][A-Z0-9-]{1,31}$`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Sku(String);

impl Sku {
    /// The rule, as shown to users.
    pub const PATTERN: &'static str = "^[A-Z0-9][A-Z0-9-]{1,31}$";

    /// Checks `s` against [`Sku::PATTERN`].
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let ok_char = |c: u8| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-';
        let bytes = s.as_bytes();
        if (2..=32).contains(&bytes.len()) && bytes[0] != b'-' && bytes.iter().all(|&c| ok_char(c))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(invalid(format!(
                "{s:?} is not a SKU (expected {})",
                Self::PATTERN
            )))
        }
    }

    /// The SKU text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A quantity of one SKU in an order or a reservation: 1 to 10,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Quantity(u32);

impl Quantity {
    /// The largest quantity one line or one reservation may hold.
    pub const MAX: u32 = 10_000;

    /// Checks `n` is within `1..=10_000`.
    pub fn new(n: i64) -> Result<Self, InvalidValue> {
        match u32::try_from(n) {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(Self(n)),
            _ => Err(invalid(format!(
                "quantity {n} is outside 1..={}",
                Self::MAX
            ))),
        }
    }

    /// The number.
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// An amount of stock on hand: 0 to 1,000,000,000 units.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct StockLevel(u64);

impl StockLevel {
    /// The largest stock level a product can hold.
    pub const MAX: u64 = 1_000_000_000;

    /// Checks `n` is within `0..=1_000_000_000`.
    pub fn new(n: i64) -> Result<Self, InvalidValue> {
        match u64::try_from(n) {
            Ok(n) if n <= Self::MAX => Ok(Self(n)),
            _ => Err(invalid(format!(
                "stock level {n} is outside 0..={}",
                Self::MAX
            ))),
        }
    }

    /// The number.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// An ISO 4217 currency code: three upper-case letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Checks `s` is three upper-case ASCII letters.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        match s.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(invalid(format!(
                "{s:?} is not a currency code (three upper-case letters, e.g. EUR)"
            ))),
        }
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters get in.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of money in integer minor units (cents), never negative, at most
/// 10^15 minor units, in one currency. Never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    amount_minor: i64,
    currency: Currency,
}

impl Money {
    /// The largest amount a single price or total may hold, in minor units.
    pub const MAX_MINOR: i64 = 1_000_000_000_000_000;

    /// Checks the amount is within `0..=MAX_MINOR`.
    pub fn new(amount_minor: i64, currency: Currency) -> Result<Self, InvalidValue> {
        if (0..=Self::MAX_MINOR).contains(&amount_minor) {
            Ok(Self {
                amount_minor,
                currency,
            })
        } else {
            Err(invalid(format!(
                "amount {amount_minor} is outside 0..={}",
                Self::MAX_MINOR
            )))
        }
    }

    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Self {
        Self {
            amount_minor: 0,
            currency,
        }
    }

    /// The amount in minor units.
    pub const fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    /// The currency.
    pub const fn currency(&self) -> Currency {
        self.currency
    }

    /// `self + other`, or `None` when the currencies differ or the sum is too large.
    pub fn checked_add(self, other: Money) -> Option<Money> {
        if self.currency != other.currency {
            return None;
        }
        Money::new(
            self.amount_minor.checked_add(other.amount_minor)?,
            self.currency,
        )
        .ok()
    }

    /// `self × n`, or `None` when the product is too large.
    pub fn checked_mul(self, n: u32) -> Option<Money> {
        Money::new(self.amount_minor.checked_mul(i64::from(n))?, self.currency).ok()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_minor, self.currency)
    }
}

/// Free text with a length bound and no control characters: product names, cancellation
/// reasons, decline reasons.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Text(String);

impl Text {
    /// Checks `s` is 1 to `max` characters after trimming, without control characters.
    pub fn parse(s: &str, max: usize) -> Result<Self, InvalidValue> {
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if trimmed.chars().count() > max {
            return Err(invalid(format!("longer than {max} characters")));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(invalid("contains control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// Text the system writes itself (saga reasons), trusted not to need the checks.
    pub fn system(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a customer pays: 1 to 64 characters of `a-z`, `0-9` and `_`. The simulated gateway
/// declines `card_declined`; any other method is accepted up to the customer's limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PaymentMethod(String);

impl PaymentMethod {
    /// The test method the simulated gateway always declines.
    pub const DECLINED: &'static str = "card_declined";

    /// Checks `s` against `^[a-z0-9_]{1,64}$`.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(invalid(format!(
                "{s:?} is not a payment method (expected ^[a-z0-9_]{{1,64}}$)"
            )))
        }
    }

    /// The method name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One line of an order: a quantity of a SKU at a unit price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// What is ordered.
    pub sku: Sku,
    /// How many.
    pub quantity: Quantity,
    /// The price of one unit.
    pub unit_price: Money,
}

impl OrderLine {
    /// `quantity × unit_price`, or `None` above [`Money::MAX_MINOR`].
    pub fn total(&self) -> Option<Money> {
        self.unit_price.checked_mul(self.quantity.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_follow_the_pattern() {
        for ok in [
            "AB",
            "SKU-1",
            "A1",
            "0-0",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
        ] {
            assert!(Sku::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-AB",
            "ab",
            "SKU 1",
            "SKU_1",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456",
            "É1",
        ] {
            assert!(Sku::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quantities_are_bounded() {
        assert!(Quantity::new(0).is_err());
        assert!(Quantity::new(-1).is_err());
        assert!(Quantity::new(10_001).is_err());
        assert_eq!(Quantity::new(10_000).unwrap().get(), 10_000);
    }

    #[test]
    fn money_adds_within_one_currency() {
        let eur = Currency::parse("EUR").unwrap();
        let usd = Currency::parse("USD").unwrap();
        let a = Money::new(150, eur).unwrap();
        assert_eq!(a.checked_add(a).unwrap().amount_minor(), 300);
        assert!(a.checked_add(Money::zero(usd)).is_none());
        assert!(Money::new(-1, eur).is_err());
        assert!(
            Money::new(Money::MAX_MINOR, eur)
                .unwrap()
                .checked_mul(2)
                .is_none()
        );
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
    }

    #[test]
    fn derived_ids_are_stable() {
        let sku = Sku::parse("SKU-1").unwrap();
        assert_eq!(ProductId::for_sku(&sku), ProductId::for_sku(&sku.clone()));
        assert_ne!(
            ProductId::for_sku(&sku),
            ProductId::for_sku(&Sku::parse("SKU-2").unwrap())
        );
        let order = OrderId::from_uuid(Uuid::from_u128(1));
        assert_eq!(PaymentId::for_order(order), PaymentId::for_order(order));
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(Text::parse("  hi ", 10).unwrap().as_str(), "hi");
        assert!(Text::parse("   ", 10).is_err());
        assert!(Text::parse("abcdef", 5).is_err());
        assert!(Text::parse("a\u{7}b", 5).is_err());
    }
}
