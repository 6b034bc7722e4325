//! Command routing: which aggregates each command loads, what it asks of each, and what
//! it answers. One exhaustive match: a new command fails to compile until it is routed
//! here and its streams are named in [`Command::streams`].

use domain_events::values::{OrderId, Sku};
use event_store::{EventStore, Version};

use crate::{
    commands::{Command, Detail, order_stream, payment_stream, product_stream},
    domain::{
        Order, OrderCommand, Payment, PaymentCommand, PaymentStatus, Product, ProductCommand,
    },
    error::CommandError,
    reference::{OrderFact, References},
    session::Session,
};

/// Loads what `command` needs and decides it. Returns the command-specific detail.
pub(crate) async fn decide<S: EventStore>(
    command: &Command,
    session: &mut Session<'_, S>,
    expected: Option<Version>,
    refs: &References,
) -> Result<Detail, CommandError> {
    let store = session.store;
    match command {
        Command::CreateOrder {
            order_id,
            customer_id,
            currency,
            lines,
        } => {
            let lines = refs.price_lines(store, lines).await?;
            let create = OrderCommand::Create {
                order_id: *order_id,
                customer_id: *customer_id,
                currency: *currency,
                lines,
            };
            order(session, *order_id, expected, &create).await?;
            Ok(Detail::None)
        }
        Command::AddOrderLine { order_id, line } => {
            let line = refs
                .price_lines(store, std::slice::from_ref(line))
                .await?
                .pop()
                .ok_or_else(|| CommandError::Internal("a priced line went missing".into()))?;
            order(session, *order_id, expected, &OrderCommand::AddLine(line)).await?;
            Ok(Detail::None)
        }
        Command::RemoveOrderLine { order_id, sku } => {
            let remove = OrderCommand::RemoveLine(sku.clone());
            order(session, *order_id, expected, &remove).await?;
            Ok(Detail::None)
        }
        Command::PlaceOrder {
            order_id,
            payment_method,
        } => {
            // A draft from before lines were checked against the catalogue may name a
            // product that does not exist.
            let (draft, _) = session.load::<Order>(order_stream(*order_id)).await?;
            let skus: Vec<Sku> = draft.lines().iter().map(|l| l.sku.clone()).collect();
            for sku in &skus {
                refs.price(store, sku).await?;
            }
            let place = OrderCommand::Place(payment_method.clone());
            let placed = order(session, *order_id, expected, &place).await?;
            Ok(placed.total().map_or(Detail::None, |total| Detail::Total {
                amount_minor: total.amount_minor(),
                currency: total.currency().to_string(),
            }))
        }
        Command::ConfirmOrder { order_id } => {
            order(session, *order_id, expected, &OrderCommand::Confirm).await?;
            Ok(Detail::None)
        }
        Command::CancelOrder { order_id, reason } => {
            let cancel = OrderCommand::Cancel(reason.clone());
            order(session, *order_id, expected, &cancel).await?;
            Ok(Detail::None)
        }
        Command::ShipOrder { order_id } => {
            ship(session, *order_id, expected).await?;
            Ok(Detail::None)
        }
        Command::CreateProduct {
            sku,
            name,
            price,
            initial_stock,
        } => {
            let create = ProductCommand::Create {
                sku: sku.clone(),
                name: name.clone(),
                price: *price,
                initial_stock: *initial_stock,
            };
            product(session, sku, &create).await?;
            Ok(Detail::None)
        }
        Command::RestockProduct { sku, quantity } => {
            product(session, sku, &ProductCommand::Restock(*quantity)).await?;
            Ok(Detail::None)
        }
        Command::ReserveStock { order_id, items } => {
            placed_order(refs, store, *order_id, true).await?;
            for (sku, quantity) in items {
                let reserve = ProductCommand::Reserve {
                    order_id: *order_id,
                    quantity: *quantity,
                };
                product(session, sku, &reserve).await?;
            }
            Ok(Detail::None)
        }
        Command::ReleaseStock { order_id, skus } => {
            placed_order(refs, store, *order_id, false).await?;
            for sku in skus {
                product(session, sku, &ProductCommand::Release(*order_id)).await?;
            }
            Ok(Detail::None)
        }
        Command::AuthorizePayment {
            order_id,
            customer_id,
            amount,
            method,
        } => {
            if let OrderFact::Placed(total) = placed_order(refs, store, *order_id, true).await?
                && total != *amount
            {
                return Err(CommandError::Refused(format!(
                    "the amount {amount} is not the total of order {order_id}, {total}"
                )));
            }
            let authorize = PaymentCommand::Authorize {
                order_id: *order_id,
                customer_id: *customer_id,
                amount: *amount,
                method: method.clone(),
            };
            let payment = payment(session, *order_id, &authorize).await?;
            Ok(Detail::Payment {
                authorized: matches!(
                    payment.status(),
                    PaymentStatus::Authorized | PaymentStatus::Captured
                ),
                decline_reason: payment.decline_reason().map(|r| r.to_string()),
            })
        }
        Command::RefundPayment { order_id, reason } => {
            placed_order(refs, store, *order_id, false).await?;
            payment(session, *order_id, &PaymentCommand::Refund(reason.clone())).await?;
            Ok(Detail::None)
        }
    }
}

/// Asks an order to handle `command`; returns the order afterwards.
async fn order<'s, S: EventStore>(
    session: &'s mut Session<'_, S>,
    order_id: OrderId,
    expected: Option<Version>,
    command: &OrderCommand,
) -> Result<&'s Order, CommandError> {
    decide_order(session, order_id, expected, command).await?;
    Ok(session.load::<Order>(order_stream(order_id)).await?.0)
}

/// Asks an order to handle `command`, at the client's expected version if it pinned one;
/// returns how many events it decided.
async fn decide_order<S: EventStore>(
    session: &mut Session<'_, S>,
    order_id: OrderId,
    expected: Option<Version>,
    command: &OrderCommand,
) -> Result<usize, CommandError> {
    let id = order_stream(order_id);
    let (_, version) = session.load::<Order>(id).await?;
    if let Some(expected) = expected
        && expected != version
    {
        return Err(CommandError::Conflict {
            aggregate_id: id.as_uuid(),
            expected,
            actual: version,
        });
    }
    session.decide::<Order>(id, &format!("order {order_id}"), command)
}

/// Asks a product's inventory to handle `command`.
async fn product<S: EventStore>(
    session: &mut Session<'_, S>,
    sku: &Sku,
    command: &ProductCommand,
) -> Result<(), CommandError> {
    let id = product_stream(sku);
    session.load::<Product>(id).await?;
    session.decide::<Product>(id, &format!("product {sku}"), command)?;
    Ok(())
}

/// Asks an order's payment to handle `command`; returns the payment afterwards.
async fn payment<'s, S: EventStore>(
    session: &'s mut Session<'_, S>,
    order_id: OrderId,
    command: &PaymentCommand,
) -> Result<&'s Payment, CommandError> {
    let id = payment_stream(order_id);
    session.load::<Payment>(id).await?;
    session.decide::<Payment>(id, &format!("payment for order {order_id}"), command)?;
    Ok(session.load::<Payment>(id).await?.0)
}

/// Ships an order: the order first; if that shipped it now (rather than before), its
/// reserved stock is committed and its payment captured, in the same append.
async fn ship<S: EventStore>(
    session: &mut Session<'_, S>,
    order_id: OrderId,
    expected: Option<Version>,
) -> Result<(), CommandError> {
    let (before, _) = session.load::<Order>(order_stream(order_id)).await?;
    let lines = before.lines().to_vec();
    if decide_order(session, order_id, expected, &OrderCommand::Ship).await? == 0 {
        // Shipped before: nothing more to do.
        return Ok(());
    }
    for line in &lines {
        product(session, &line.sku, &ProductCommand::Commit(order_id)).await?;
    }
    payment(session, order_id, &PaymentCommand::Capture).await?;
    Ok(())
}

/// What the stock and payment commands require of their order: that it exists, and when
/// `placed`, that it was placed.
async fn placed_order<S: EventStore>(
    refs: &References,
    store: &S,
    order_id: OrderId,
    placed: bool,
) -> Result<OrderFact, CommandError> {
    match refs.order(store, order_id).await? {
        OrderFact::Missing => Err(CommandError::NotFound(format!(
            "order {order_id} not found"
        ))),
        OrderFact::Draft if placed => Err(CommandError::Refused(format!(
            "order {order_id} has not been placed"
        ))),
        fact => Ok(fact),
    }
}
