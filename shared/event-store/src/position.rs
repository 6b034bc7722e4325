//! A place in the global log, as handed to subscribers and clients.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// Where an event sits in the global log.
///
/// The log is ordered by the id of the transaction that wrote an event, then by the event's
/// global sequence number. Ordering by transaction id first is what lets a reader wait for
/// slow transactions instead of skipping them (see `ARCHITECTURE.md`, "the late-commit gap").
/// Clients should treat the string form (`"<transaction>.<sequence>"`) as an opaque token.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub struct Position {
    /// The PostgreSQL `xid8` of the transaction that appended the event (a counter per
    /// append in memory).
    pub transaction_id: u64,
    /// The event's global sequence number, unique across the store.
    pub global_position: u64,
}

impl Position {
    /// Before the first event: reading after it returns the whole log.
    pub const START: Position = Position {
        transaction_id: 0,
        global_position: 0,
    };

    /// Builds a position from its two parts.
    pub const fn new(transaction_id: u64, global_position: u64) -> Self {
        Self {
            transaction_id,
            global_position,
        }
    }

    /// From the two `bigint` columns PostgreSQL stores it in. A negative part can only
    /// come from a corrupt row.
    pub fn from_columns(transaction_id: i64, global_position: i64) -> crate::Result<Self> {
        match (
            u64::try_from(transaction_id),
            u64::try_from(global_position),
        ) {
            (Ok(tx), Ok(pos)) => Ok(Self::new(tx, pos)),
            _ => Err(crate::Error::Corrupt(format!(
                "a negative position: {transaction_id}.{global_position}"
            ))),
        }
    }

    /// As the two `bigint` columns. A part beyond `i64::MAX` (which no store hands out)
    /// becomes `i64::MAX`, which still sorts after every stored position.
    pub fn to_columns(self) -> (i64, i64) {
        (
            i64::try_from(self.transaction_id).unwrap_or(i64::MAX),
            i64::try_from(self.global_position).unwrap_or(i64::MAX),
        )
    }

    /// The opaque token form, `"<transaction>.<sequence>"`.
    pub fn to_token(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.transaction_id, self.global_position)
    }
}

/// A consistency token that is not of the form `"<transaction>.<sequence>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a position token (expected two numbers joined by a dot, as returned by a command)")]
pub struct ParsePositionError;

impl FromStr for Position {
    type Err = ParsePositionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tx, pos) = s.split_once('.').ok_or(ParsePositionError)?;
        let parse = |part: &str| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParsePositionError);
            }
            part.parse::<u64>().map_err(|_| ParsePositionError)
        };
        let transaction_id = parse(tx)?;
        let global_position = parse(pos)?;
        // Both parts are stored as PostgreSQL bigints.
        if i64::try_from(transaction_id).is_err() || i64::try_from(global_position).is_err() {
            return Err(ParsePositionError);
        }
        Ok(Position::new(transaction_id, global_position))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips() {
        let p = Position::new(741, 12);
        assert_eq!(p.to_token(), "741.12");
        assert_eq!("741.12".parse::<Position>(), Ok(p));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "1",
            "1.",
            ".1",
            "a.1",
            "1.-2",
            "+1.2",
            "1.2.3",
            "99999999999999999999.1",
        ] {
            assert_eq!(bad.parse::<Position>(), Err(ParsePositionError), "{bad:?}");
        }
    }

    #[test]
    fn converts_to_and_from_bigint_columns() {
        let p = Position::new(741, 12);
        assert_eq!(Position::from_columns(741, 12).unwrap(), p);
        assert_eq!(p.to_columns(), (741, 12));
        assert!(Position::from_columns(-1, 12).is_err());
        assert_eq!(Position::new(u64::MAX, 1).to_columns(), (i64::MAX, 1));
    }

    #[test]
    fn orders_by_transaction_then_sequence() {
        assert!(Position::new(1, 9) < Position::new(2, 3));
        assert!(Position::new(2, 3) < Position::new(2, 4));
    }
}
