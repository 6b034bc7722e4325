//! The Order aggregate: a customer's order from draft to shipped or cancelled.

use domain_events::{
    DomainEvent, OrderCancelled, OrderConfirmed, OrderCreated, OrderLineAdded, OrderLineRemoved,
    OrderPlaced, OrderShipped, aggregate_type,
    values::{Currency, CustomerId, Money, OrderId, OrderLine, PaymentMethod, Sku, Text},
};
use serde::{Deserialize, Serialize};

use super::{Aggregate, DomainError, refused};

/// The most lines an order may hold.
pub const MAX_LINES: usize = 100;

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum OrderStatus {
    /// No order with this id exists.
    #[default]
    Absent,
    /// Being edited by the customer.
    Draft,
    /// Placed: the fulfilment saga is reserving stock and authorising payment. The order
    /// can no longer be edited, only confirmed or cancelled.
    Placed,
    /// Stock reserved and payment authorised.
    Confirmed,
    /// Shipped; final.
    Shipped,
    /// Cancelled; final.
    Cancelled,
}

impl OrderStatus {
    /// The name shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Absent => "absent",
            OrderStatus::Draft => "draft",
            OrderStatus::Placed => "placed",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

/// What can be asked of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Create a draft.
    Create {
        /// The new order's id.
        order_id: OrderId,
        /// Who orders.
        customer_id: CustomerId,
        /// The currency every line must use.
        currency: Currency,
        /// Initial lines.
        lines: Vec<OrderLine>,
    },
    /// Add a line to a draft.
    AddLine(OrderLine),
    /// Remove a SKU's line from a draft.
    RemoveLine(Sku),
    /// Place a draft.
    Place(PaymentMethod),
    /// Confirm a placed order.
    Confirm,
    /// Ship a confirmed order.
    Ship,
    /// Cancel an order that has not shipped.
    Cancel(Text),
}

/// An order's state, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    id: Option<OrderId>,
    customer_id: Option<CustomerId>,
    currency: Option<Currency>,
    lines: Vec<OrderLine>,
    status: OrderStatus,
}

impl Order {
    /// The order's status.
    pub fn status(&self) -> OrderStatus {
        self.status
    }

    /// The order's lines.
    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    /// The sum of the lines, or `None` if it exceeds [`Money::MAX_MINOR`].
    pub fn total(&self) -> Option<Money> {
        let currency = self.currency?;
        self.lines
            .iter()
            .try_fold(Money::zero(currency), |sum, line| {
                sum.checked_add(line.total()?)
            })
    }

    fn id(&self) -> Result<OrderId, DomainError> {
        self.id
            .ok_or_else(|| DomainError::NotFound("order not found".into()))
    }

    fn require_draft(&self, action: &str) -> Result<OrderId, DomainError> {
        let id = self.id()?;
        if self.status != OrderStatus::Draft {
            return Err(refused(format!(
                "cannot {action}: order {id} is {}, only a draft can be changed",
                self.status.as_str()
            )));
        }
        Ok(id)
    }

    fn check_line(&self, line: &OrderLine, lines: &[OrderLine]) -> Result<(), DomainError> {
        if Some(line.unit_price.currency()) != self.currency {
            return Err(refused(format!(
                "line for {} is priced in {}, but the order is in {}",
                line.sku,
                line.unit_price.currency(),
                self.currency.map(|c| c.to_string()).unwrap_or_default()
            )));
        }
        if lines.iter().any(|l| l.sku == line.sku) {
            return Err(refused(format!(
                "the order already has a line for {}",
                line.sku
            )));
        }
        if lines.len() >= MAX_LINES {
            return Err(refused(format!("an order holds at most {MAX_LINES} lines")));
        }
        Ok(())
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = aggregate_type::ORDER;
    const SNAPSHOT_SCHEMA: u32 = 1;
    type Command = OrderCommand;

    super::in_state!(Order);

    fn handle(&self, command: &OrderCommand) -> Result<Vec<DomainEvent>, DomainError> {
        match command {
            OrderCommand::Create {
                order_id,
                customer_id,
                currency,
                lines,
            } => {
                if self.status != OrderStatus::Absent {
                    return Err(refused(format!("order {order_id} already exists")));
                }
                let draft = Order {
                    id: Some(*order_id),
                    customer_id: Some(*customer_id),
                    currency: Some(*currency),
                    lines: vec![],
                    status: OrderStatus::Draft,
                };
                let mut accepted = Vec::with_capacity(lines.len());
                for line in lines {
                    draft.check_line(line, &accepted)?;
                    accepted.push(line.clone());
                }
                let created = Order {
                    lines: accepted.clone(),
                    ..draft
                };
                if created.total().is_none() {
                    return Err(refused(
                        "the order total exceeds the largest amount allowed",
                    ));
                }
                Ok(vec![DomainEvent::OrderCreated(OrderCreated {
                    order_id: *order_id,
                    customer_id: *customer_id,
                    currency: *currency,
                    lines: accepted,
                })])
            }
            OrderCommand::AddLine(line) => {
                let order_id = self.require_draft("add a line")?;
                self.check_line(line, &self.lines)?;
                let mut with_line = self.clone();
                with_line.lines.push(line.clone());
                if with_line.total().is_none() {
                    return Err(refused(
                        "the order total would exceed the largest amount allowed",
                    ));
                }
                Ok(vec![DomainEvent::OrderLineAdded(OrderLineAdded {
                    order_id,
                    line: line.clone(),
                })])
            }
            OrderCommand::RemoveLine(sku) => {
                let order_id = self.require_draft("remove a line")?;
                if !self.lines.iter().any(|l| &l.sku == sku) {
                    return Err(refused(format!("the order has no line for {sku}")));
                }
                Ok(vec![DomainEvent::OrderLineRemoved(OrderLineRemoved {
                    order_id,
                    sku: sku.clone(),
                })])
            }
            OrderCommand::Place(payment_method) => {
                let order_id = self.require_draft("place the order")?;
                if self.lines.is_empty() {
                    return Err(refused("cannot place an order with no lines"));
                }
                let total = self
                    .total()
                    .ok_or_else(|| refused("the order total exceeds the largest amount allowed"))?;
                Ok(vec![DomainEvent::OrderPlaced(OrderPlaced {
                    order_id,
                    customer_id: self
                        .customer_id
                        .ok_or_else(|| refused("order has no customer"))?,
                    lines: self.lines.clone(),
                    total,
                    payment_method: payment_method.clone(),
                })])
            }
            OrderCommand::Confirm => {
                let order_id = self.id()?;
                match self.status {
                    OrderStatus::Placed => Ok(vec![DomainEvent::OrderConfirmed(OrderConfirmed {
                        order_id,
                    })]),
                    OrderStatus::Confirmed => Ok(vec![]),
                    other => Err(refused(format!(
                        "cannot confirm order {order_id}: it is {}, only a placed order can be confirmed",
                        other.as_str()
                    ))),
                }
            }
            OrderCommand::Ship => {
                let order_id = self.id()?;
                match self.status {
                    OrderStatus::Confirmed => {
                        Ok(vec![DomainEvent::OrderShipped(OrderShipped { order_id })])
                    }
                    OrderStatus::Shipped => Ok(vec![]),
                    other => Err(refused(format!(
                        "cannot ship order {order_id}: it is {}, only a confirmed order can be shipped",
                        other.as_str()
                    ))),
                }
            }
            OrderCommand::Cancel(reason) => {
                let order_id = self.id()?;
                match self.status {
                    OrderStatus::Shipped => Err(refused(format!(
                        "cannot cancel order {order_id}: it has shipped"
                    ))),
                    OrderStatus::Cancelled => Ok(vec![]),
                    _ => Ok(vec![DomainEvent::OrderCancelled(OrderCancelled {
                        order_id,
                        reason: reason.clone(),
                    })]),
                }
            }
        }
    }

    fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::OrderCreated(e) => {
                self.id = Some(e.order_id);
                self.customer_id = Some(e.customer_id);
                self.currency = Some(e.currency);
                self.lines = e.lines.clone();
                self.status = OrderStatus::Draft;
            }
            DomainEvent::OrderLineAdded(e) => self.lines.push(e.line.clone()),
            DomainEvent::OrderLineRemoved(e) => self.lines.retain(|l| l.sku != e.sku),
            DomainEvent::OrderPlaced(_) => self.status = OrderStatus::Placed,
            DomainEvent::OrderConfirmed(_) => self.status = OrderStatus::Confirmed,
            DomainEvent::OrderShipped(_) => self.status = OrderStatus::Shipped,
            DomainEvent::OrderCancelled(_) => self.status = OrderStatus::Cancelled,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use domain_events::values::{Quantity, Text};

    use super::*;
    use crate::domain::testing::{Given, eur, line, order_id};

    fn created(lines: Vec<OrderLine>) -> DomainEvent {
        DomainEvent::OrderCreated(OrderCreated {
            order_id: order_id(),
            customer_id: CustomerId::from_uuid(uuid::Uuid::from_u128(2)),
            currency: Currency::parse("EUR").unwrap(),
            lines,
        })
    }

    fn placed() -> DomainEvent {
        DomainEvent::OrderPlaced(OrderPlaced {
            order_id: order_id(),
            customer_id: CustomerId::from_uuid(uuid::Uuid::from_u128(2)),
            lines: vec![line("SKU-1", 2, 500)],
            total: eur(1000),
            payment_method: PaymentMethod::parse("card").unwrap(),
        })
    }

    #[test]
    fn creates_a_draft_and_refuses_to_create_twice() {
        let create = OrderCommand::Create {
            order_id: order_id(),
            customer_id: CustomerId::from_uuid(uuid::Uuid::from_u128(2)),
            currency: Currency::parse("EUR").unwrap(),
            lines: vec![line("SKU-1", 2, 500)],
        };
        Given::<Order>::nothing()
            .when(&create)
            .then(vec![created(vec![line("SKU-1", 2, 500)])]);
        Given::<Order>::events(vec![created(vec![])])
            .when(&create)
            .then_refused("already exists");
    }

    #[test]
    fn refuses_a_line_in_another_currency_or_for_a_sku_twice() {
        let mut usd = line("SKU-2", 1, 100);
        usd.unit_price = Money::new(100, Currency::parse("USD").unwrap()).unwrap();
        Given::<Order>::events(vec![created(vec![])])
            .when(&OrderCommand::AddLine(usd))
            .then_refused("priced in USD");
        Given::<Order>::events(vec![created(vec![line("SKU-1", 1, 100)])])
            .when(&OrderCommand::AddLine(line("SKU-1", 3, 100)))
            .then_refused("already has a line for SKU-1");
    }

    #[test]
    fn adds_and_removes_lines_while_draft() {
        Given::<Order>::events(vec![created(vec![])])
            .when(&OrderCommand::AddLine(line("SKU-1", 2, 500)))
            .then(vec![DomainEvent::OrderLineAdded(OrderLineAdded {
                order_id: order_id(),
                line: line("SKU-1", 2, 500),
            })]);
        Given::<Order>::events(vec![created(vec![line("SKU-1", 2, 500)])])
            .when(&OrderCommand::RemoveLine(Sku::parse("SKU-1").unwrap()))
            .then(vec![DomainEvent::OrderLineRemoved(OrderLineRemoved {
                order_id: order_id(),
                sku: Sku::parse("SKU-1").unwrap(),
            })]);
        Given::<Order>::events(vec![created(vec![])])
            .when(&OrderCommand::RemoveLine(Sku::parse("SKU-9").unwrap()))
            .then_refused("no line for SKU-9");
    }

    #[test]
    fn holds_at_most_a_hundred_lines() {
        let lines: Vec<OrderLine> = (0..MAX_LINES)
            .map(|i| line(&format!("SKU-{i}"), 1, 1))
            .collect();
        Given::<Order>::events(vec![created(lines)])
            .when(&OrderCommand::AddLine(line("SKU-X", 1, 1)))
            .then_refused("at most 100 lines");
    }

    #[test]
    fn places_with_a_computed_total_but_not_when_empty() {
        Given::<Order>::events(vec![created(vec![line("SKU-1", 2, 500)])])
            .when(&OrderCommand::Place(PaymentMethod::parse("card").unwrap()))
            .then(vec![placed()]);
        Given::<Order>::events(vec![created(vec![])])
            .when(&OrderCommand::Place(PaymentMethod::parse("card").unwrap()))
            .then_refused("no lines");
    }

    #[test]
    fn a_placed_order_cannot_be_edited() {
        Given::<Order>::events(vec![created(vec![line("SKU-1", 2, 500)]), placed()])
            .when(&OrderCommand::AddLine(line("SKU-2", 1, 1)))
            .then_refused("only a draft can be changed");
    }

    #[test]
    fn confirms_ships_and_refuses_out_of_order() {
        let history = vec![created(vec![line("SKU-1", 2, 500)]), placed()];
        Given::<Order>::events(history.clone())
            .when(&OrderCommand::Ship)
            .then_refused("only a confirmed order can be shipped");
        let confirmed = DomainEvent::OrderConfirmed(OrderConfirmed {
            order_id: order_id(),
        });
        Given::<Order>::events(history.clone())
            .when(&OrderCommand::Confirm)
            .then(vec![confirmed.clone()]);
        let mut shipped_history = history.clone();
        shipped_history.push(confirmed.clone());
        Given::<Order>::events(shipped_history.clone())
            .when(&OrderCommand::Confirm)
            .then(vec![]);
        Given::<Order>::events(shipped_history.clone())
            .when(&OrderCommand::Ship)
            .then(vec![DomainEvent::OrderShipped(OrderShipped {
                order_id: order_id(),
            })]);
        shipped_history.push(DomainEvent::OrderShipped(OrderShipped {
            order_id: order_id(),
        }));
        Given::<Order>::events(shipped_history)
            .when(&OrderCommand::Cancel(Text::system("too late")))
            .then_refused("has shipped");
    }

    #[test]
    fn cancels_once() {
        let cancelled = DomainEvent::OrderCancelled(OrderCancelled {
            order_id: order_id(),
            reason: Text::system("changed my mind"),
        });
        Given::<Order>::events(vec![created(vec![])])
            .when(&OrderCommand::Cancel(Text::system("changed my mind")))
            .then(vec![cancelled.clone()]);
        Given::<Order>::events(vec![created(vec![]), cancelled])
            .when(&OrderCommand::Cancel(Text::system("again")))
            .then(vec![]);
    }

    #[test]
    fn commands_on_an_unknown_order_are_not_found() {
        Given::<Order>::nothing()
            .when(&OrderCommand::Confirm)
            .then_not_found();
        Given::<Order>::nothing()
            .when(&OrderCommand::AddLine(line("SKU-1", 1, 1)))
            .then_not_found();
    }

    #[test]
    fn refuses_a_total_above_the_limit() {
        let huge = OrderLine {
            sku: Sku::parse("GOLD").unwrap(),
            quantity: Quantity::new(10_000).unwrap(),
            unit_price: eur(Money::MAX_MINOR),
        };
        Given::<Order>::events(vec![created(vec![])])
            .when(&OrderCommand::AddLine(huge))
            .then_refused("exceed the largest amount");
    }
}
