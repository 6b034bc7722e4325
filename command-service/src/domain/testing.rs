//! Given/when/then for aggregates: given these past events, when this command, then these
//! events (or this refusal). No I/O.

use domain_events::{
    DomainEvent,
    values::{Currency, Money, OrderId, OrderLine, Quantity, Sku},
};

use super::{Aggregate, DomainError};

pub(crate) fn order_id() -> OrderId {
    OrderId::from_uuid(uuid::Uuid::from_u128(1))
}

pub(crate) fn eur(minor: i64) -> Money {
    Money::new(minor, Currency::parse("EUR").unwrap()).unwrap()
}

pub(crate) fn line(sku: &str, quantity: i64, unit_price: i64) -> OrderLine {
    OrderLine {
        sku: Sku::parse(sku).unwrap(),
        quantity: Quantity::new(quantity).unwrap(),
        unit_price: eur(unit_price),
    }
}

/// An aggregate rebuilt from past events.
pub(crate) struct Given<A: Aggregate>(A);

/// The outcome of a command.
pub(crate) struct Then(Result<Vec<DomainEvent>, DomainError>);

impl<A: Aggregate> Given<A> {
    pub(crate) fn nothing() -> Self {
        Self(A::default())
    }

    pub(crate) fn events(events: Vec<DomainEvent>) -> Self {
        let mut state = A::default();
        for e in &events {
            state.apply(e);
        }
        Self(state)
    }

    pub(crate) fn when(self, command: &A::Command) -> Then {
        Then(self.0.handle(command))
    }
}

impl Then {
    #[track_caller]
    pub(crate) fn then(self, expected: Vec<DomainEvent>) {
        assert_eq!(self.0, Ok(expected));
    }

    #[track_caller]
    pub(crate) fn then_refused(self, containing: &str) {
        match self.0 {
            Err(DomainError::Refused(reason)) => {
                assert!(
                    reason.contains(containing),
                    "refusal {reason:?} does not mention {containing:?}"
                )
            }
            other => panic!("expected a refusal mentioning {containing:?}, got {other:?}"),
        }
    }

    #[track_caller]
    pub(crate) fn then_not_found(self) {
        assert!(
            matches!(self.0, Err(DomainError::NotFound(_))),
            "expected not found, got {:?}",
            self.0
        );
    }
}
