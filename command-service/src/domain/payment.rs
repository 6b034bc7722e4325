//! The Payment aggregate: one per order, against a simulated gateway.
//!
//! The gateway is deterministic so demos and tests can force either outcome: it declines
//! the method `card_declined`, and any amount above [`CUSTOMER_LIMIT_MINOR`]; it authorises
//! everything else.

use domain_events::{
    DomainEvent, PaymentAuthorized, PaymentCaptured, PaymentDeclined, PaymentRefunded,
    aggregate_type,
    values::{CustomerId, Money, OrderId, PaymentMethod, Text},
};
use serde::{Deserialize, Serialize};

use super::{Aggregate, DomainError, refused};

/// The most the simulated gateway authorises for one customer's order, in minor units.
pub const CUSTOMER_LIMIT_MINOR: i64 = 1_000_000;

/// What can be asked of an order's payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentCommand {
    /// Ask the gateway; a no-op when the order already has an outcome.
    Authorize {
        /// The order.
        order_id: OrderId,
        /// Who pays.
        customer_id: CustomerId,
        /// How much.
        amount: Money,
        /// How.
        method: PaymentMethod,
    },
    /// Give back an authorised or captured payment; a no-op otherwise.
    Refund(Text),
    /// Capture an authorised payment.
    Capture,
}

/// Where a payment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PaymentStatus {
    /// Nothing asked yet.
    #[default]
    None,
    /// Authorised, not captured.
    Authorized,
    /// Declined by the gateway.
    Declined,
    /// Captured at shipment.
    Captured,
    /// Given back.
    Refunded,
}

/// An order's payment, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    order_id: Option<OrderId>,
    status: PaymentStatus,
    amount: Option<Money>,
    decline_reason: Option<Text>,
}

impl Payment {
    /// The payment's status.
    pub fn status(&self) -> PaymentStatus {
        self.status
    }

    /// Why the gateway declined, if it did.
    pub fn decline_reason(&self) -> Option<&Text> {
        self.decline_reason.as_ref()
    }
}

/// The simulated gateway's decision: `Err(reason)` to decline.
fn gateway(amount: &Money, method: &PaymentMethod) -> Result<(), Text> {
    if method.as_str() == PaymentMethod::DECLINED {
        return Err(Text::system("card declined by the issuer"));
    }
    if amount.amount_minor() > CUSTOMER_LIMIT_MINOR {
        return Err(Text::system(format!(
            "amount {amount} is over the customer limit of {CUSTOMER_LIMIT_MINOR} minor units"
        )));
    }
    Ok(())
}

impl Aggregate for Payment {
    const TYPE: &'static str = aggregate_type::PAYMENT;
    const SNAPSHOT_SCHEMA: u32 = 1;
    type Command = PaymentCommand;

    super::in_state!(Payment);

    fn handle(&self, command: &PaymentCommand) -> Result<Vec<DomainEvent>, DomainError> {
        match command {
            PaymentCommand::Authorize {
                order_id,
                customer_id,
                amount,
                method,
            } => {
                if self.status != PaymentStatus::None {
                    return Ok(vec![]);
                }
                Ok(vec![match gateway(amount, method) {
                    Ok(()) => DomainEvent::PaymentAuthorized(PaymentAuthorized {
                        order_id: *order_id,
                        customer_id: *customer_id,
                        amount: *amount,
                        method: method.clone(),
                    }),
                    Err(reason) => DomainEvent::PaymentDeclined(PaymentDeclined {
                        order_id: *order_id,
                        customer_id: *customer_id,
                        amount: *amount,
                        reason,
                    }),
                }])
            }
            PaymentCommand::Refund(reason) => match (self.status, self.order_id, self.amount) {
                (
                    PaymentStatus::Authorized | PaymentStatus::Captured,
                    Some(order_id),
                    Some(amount),
                ) => Ok(vec![DomainEvent::PaymentRefunded(PaymentRefunded {
                    order_id,
                    amount,
                    reason: reason.clone(),
                })]),
                _ => Ok(vec![]),
            },
            PaymentCommand::Capture => match (self.status, self.order_id, self.amount) {
                (PaymentStatus::Authorized, Some(order_id), Some(amount)) => {
                    Ok(vec![DomainEvent::PaymentCaptured(PaymentCaptured {
                        order_id,
                        amount,
                    })])
                }
                (PaymentStatus::Captured, ..) => Ok(vec![]),
                (status, ..) => Err(refused(format!(
                    "cannot capture the payment: it is {status:?}, not authorised"
                ))),
            },
        }
    }

    fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::PaymentAuthorized(e) => {
                self.order_id = Some(e.order_id);
                self.amount = Some(e.amount);
                self.status = PaymentStatus::Authorized;
            }
            DomainEvent::PaymentDeclined(e) => {
                self.order_id = Some(e.order_id);
                self.amount = Some(e.amount);
                self.decline_reason = Some(e.reason.clone());
                self.status = PaymentStatus::Declined;
            }
            DomainEvent::PaymentCaptured(_) => self.status = PaymentStatus::Captured,
            DomainEvent::PaymentRefunded(_) => self.status = PaymentStatus::Refunded,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::{Given, eur, order_id};

    fn customer() -> CustomerId {
        CustomerId::from_uuid(uuid::Uuid::from_u128(2))
    }

    fn authorize(amount: i64, method: &str) -> PaymentCommand {
        PaymentCommand::Authorize {
            order_id: order_id(),
            customer_id: customer(),
            amount: eur(amount),
            method: PaymentMethod::parse(method).unwrap(),
        }
    }

    fn authorized(amount: i64) -> DomainEvent {
        DomainEvent::PaymentAuthorized(PaymentAuthorized {
            order_id: order_id(),
            customer_id: customer(),
            amount: eur(amount),
            method: PaymentMethod::parse("card").unwrap(),
        })
    }

    #[test]
    fn the_gateway_authorises_declines_by_method_and_by_limit() {
        Given::<Payment>::nothing()
            .when(&authorize(1000, "card"))
            .then(vec![authorized(1000)]);
        Given::<Payment>::nothing()
            .when(&authorize(1000, "card_declined"))
            .then(vec![DomainEvent::PaymentDeclined(PaymentDeclined {
                order_id: order_id(),
                customer_id: customer(),
                amount: eur(1000),
                reason: Text::system("card declined by the issuer"),
            })]);
        let over = Given::<Payment>::nothing().when(&authorize(CUSTOMER_LIMIT_MINOR + 1, "card"));
        over.then(vec![DomainEvent::PaymentDeclined(PaymentDeclined {
            order_id: order_id(),
            customer_id: customer(),
            amount: eur(CUSTOMER_LIMIT_MINOR + 1),
            reason: Text::system(format!(
                "amount {} is over the customer limit of {CUSTOMER_LIMIT_MINOR} minor units",
                eur(CUSTOMER_LIMIT_MINOR + 1)
            )),
        })]);
    }

    #[test]
    fn authorising_twice_is_a_no_op() {
        Given::<Payment>::events(vec![authorized(1000)])
            .when(&authorize(1000, "card"))
            .then(vec![]);
    }

    #[test]
    fn refunds_an_authorised_payment_once() {
        let refunded = DomainEvent::PaymentRefunded(PaymentRefunded {
            order_id: order_id(),
            amount: eur(1000),
            reason: Text::system("out of stock"),
        });
        Given::<Payment>::events(vec![authorized(1000)])
            .when(&PaymentCommand::Refund(Text::system("out of stock")))
            .then(vec![refunded.clone()]);
        Given::<Payment>::events(vec![authorized(1000), refunded])
            .when(&PaymentCommand::Refund(Text::system("again")))
            .then(vec![]);
        Given::<Payment>::nothing()
            .when(&PaymentCommand::Refund(Text::system("nothing to refund")))
            .then(vec![]);
    }

    #[test]
    fn captures_only_an_authorised_payment() {
        Given::<Payment>::events(vec![authorized(1000)])
            .when(&PaymentCommand::Capture)
            .then(vec![DomainEvent::PaymentCaptured(PaymentCaptured {
                order_id: order_id(),
                amount: eur(1000),
            })]);
        Given::<Payment>::nothing()
            .when(&PaymentCommand::Capture)
            .then_refused("not authorised");
    }
}
