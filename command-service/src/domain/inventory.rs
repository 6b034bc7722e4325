//! The Inventory aggregate: one product's stock, and the reservations orders hold on it.
//!
//! Invariant: `reserved ≤ on_hand`, so available stock (`on_hand − reserved`) is never
//! negative.
//!
//! A product holds a reservation for every order that reserved it and has not shipped or
//! released it, so the reservations of a busy product run to thousands: their total is
//! kept as they change, not summed for each command.

use std::collections::BTreeMap;

use domain_events::{
    DomainEvent, ProductCreated, StockCommitted, StockReleased, StockReserved, StockRestocked,
    aggregate_type,
    values::{Money, OrderId, Quantity, Sku, StockLevel, Text},
};
use serde::{Deserialize, Serialize};

use super::{Aggregate, DomainError, refused};

/// What can be asked of a product's inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductCommand {
    /// Add the product to the catalogue.
    Create {
        /// Its SKU.
        sku: Sku,
        /// Its name.
        name: Text,
        /// Its price.
        price: Money,
        /// Stock on hand to start with.
        initial_stock: StockLevel,
    },
    /// Stock arrived.
    Restock(Quantity),
    /// Set stock aside for an order; a no-op if the order already holds a reservation.
    Reserve {
        /// The order.
        order_id: OrderId,
        /// How much.
        quantity: Quantity,
    },
    /// Give an order's reservation back; a no-op if it holds none.
    Release(OrderId),
    /// An order's reservation ships; a no-op if it holds none.
    Commit(OrderId),
}

/// A product's stock, folded from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    sku: Option<Sku>,
    price: Option<Money>,
    on_hand: u64,
    reservations: Reservations,
}

/// The reservations orders hold, and their total. A snapshot holds the map alone, as it
/// did before the total was kept; the total is summed once as a snapshot is read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "BTreeMap<OrderId, Quantity>")]
struct Reservations {
    by_order: BTreeMap<OrderId, Quantity>,
    total: u64,
}

impl Reservations {
    fn get(&self, order_id: &OrderId) -> Option<&Quantity> {
        self.by_order.get(order_id)
    }

    fn insert(&mut self, order_id: OrderId, quantity: Quantity) {
        let replaced = self.by_order.insert(order_id, quantity);
        self.total = self.total + units(quantity) - replaced.map_or(0, units);
    }

    fn remove(&mut self, order_id: &OrderId) -> Option<Quantity> {
        let removed = self.by_order.remove(order_id);
        self.total -= removed.map_or(0, units);
        removed
    }
}

fn units(quantity: Quantity) -> u64 {
    u64::from(quantity.get())
}

impl From<BTreeMap<OrderId, Quantity>> for Reservations {
    fn from(by_order: BTreeMap<OrderId, Quantity>) -> Self {
        let total = by_order.values().copied().map(units).sum();
        Self { by_order, total }
    }
}

impl Serialize for Reservations {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.by_order.serialize(serializer)
    }
}

impl Product {
    /// The catalogue price of one unit; `None` before the product exists.
    pub fn price(&self) -> Option<Money> {
        self.price
    }

    /// Units physically in stock.
    pub fn on_hand(&self) -> u64 {
        self.on_hand
    }

    /// Units held by reservations.
    pub fn reserved(&self) -> u64 {
        self.reservations.total
    }

    /// Units that can still be reserved.
    pub fn available(&self) -> u64 {
        self.on_hand.saturating_sub(self.reserved())
    }

    fn sku(&self) -> Result<&Sku, DomainError> {
        self.sku
            .as_ref()
            .ok_or_else(|| DomainError::NotFound("product not found".into()))
    }
}

impl Aggregate for Product {
    const TYPE: &'static str = aggregate_type::INVENTORY;
    const SNAPSHOT_SCHEMA: u32 = 2;
    type Command = ProductCommand;

    super::in_state!(Product);

    fn handle(&self, command: &ProductCommand) -> Result<Vec<DomainEvent>, DomainError> {
        match command {
            ProductCommand::Create {
                sku,
                name,
                price,
                initial_stock,
            } => {
                if self.sku.is_some() {
                    return Err(refused(format!("product {sku} already exists")));
                }
                Ok(vec![DomainEvent::ProductCreated(ProductCreated {
                    sku: sku.clone(),
                    name: name.clone(),
                    price: *price,
                    initial_stock: *initial_stock,
                })])
            }
            ProductCommand::Restock(quantity) => {
                let sku = self.sku()?;
                if self.on_hand + u64::from(quantity.get()) > StockLevel::MAX {
                    return Err(refused(format!(
                        "restocking {sku} by {} would exceed {} units on hand",
                        quantity.get(),
                        StockLevel::MAX
                    )));
                }
                Ok(vec![DomainEvent::StockRestocked(StockRestocked {
                    sku: sku.clone(),
                    quantity: *quantity,
                })])
            }
            ProductCommand::Reserve { order_id, quantity } => {
                let sku = self.sku()?;
                if self.reservations.get(order_id).is_some() {
                    return Ok(vec![]);
                }
                let available = self.available();
                if u64::from(quantity.get()) > available {
                    return Err(refused(format!(
                        "out of stock: {sku} (requested {}, available {available})",
                        quantity.get()
                    )));
                }
                Ok(vec![DomainEvent::StockReserved(StockReserved {
                    sku: sku.clone(),
                    order_id: *order_id,
                    quantity: *quantity,
                })])
            }
            ProductCommand::Release(order_id) => {
                let sku = self.sku()?;
                Ok(self
                    .reservations
                    .get(order_id)
                    .map(|quantity| {
                        DomainEvent::StockReleased(StockReleased {
                            sku: sku.clone(),
                            order_id: *order_id,
                            quantity: *quantity,
                        })
                    })
                    .into_iter()
                    .collect())
            }
            ProductCommand::Commit(order_id) => {
                let sku = self.sku()?;
                Ok(self
                    .reservations
                    .get(order_id)
                    .map(|quantity| {
                        DomainEvent::StockCommitted(StockCommitted {
                            sku: sku.clone(),
                            order_id: *order_id,
                            quantity: *quantity,
                        })
                    })
                    .into_iter()
                    .collect())
            }
        }
    }

    fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::ProductCreated(e) => {
                self.sku = Some(e.sku.clone());
                self.price = Some(e.price);
                self.on_hand = e.initial_stock.get();
            }
            DomainEvent::StockRestocked(e) => self.on_hand += u64::from(e.quantity.get()),
            DomainEvent::StockReserved(e) => {
                self.reservations.insert(e.order_id, e.quantity);
            }
            DomainEvent::StockReleased(e) => {
                self.reservations.remove(&e.order_id);
            }
            DomainEvent::StockCommitted(e) => {
                self.reservations.remove(&e.order_id);
                self.on_hand = self.on_hand.saturating_sub(u64::from(e.quantity.get()));
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::{Given, eur, order_id};

    fn sku() -> Sku {
        Sku::parse("SKU-1").unwrap()
    }

    fn created(stock: i64) -> DomainEvent {
        DomainEvent::ProductCreated(ProductCreated {
            sku: sku(),
            name: Text::system("Widget"),
            price: eur(500),
            initial_stock: StockLevel::new(stock).unwrap(),
        })
    }

    fn reserved(order: OrderId, n: i64) -> DomainEvent {
        DomainEvent::StockReserved(StockReserved {
            sku: sku(),
            order_id: order,
            quantity: Quantity::new(n).unwrap(),
        })
    }

    fn other_order() -> OrderId {
        OrderId::from_uuid(uuid::Uuid::from_u128(99))
    }

    #[test]
    fn reserves_what_is_available_and_names_the_short_sku() {
        let reserve = |n| ProductCommand::Reserve {
            order_id: order_id(),
            quantity: Quantity::new(n).unwrap(),
        };
        Given::<Product>::events(vec![created(5)])
            .when(&reserve(5))
            .then(vec![reserved(order_id(), 5)]);
        Given::<Product>::events(vec![created(5), reserved(other_order(), 3)])
            .when(&reserve(3))
            .then_refused("out of stock: SKU-1 (requested 3, available 2)");
    }

    #[test]
    fn reserving_twice_for_one_order_is_a_no_op() {
        Given::<Product>::events(vec![created(5), reserved(order_id(), 2)])
            .when(&ProductCommand::Reserve {
                order_id: order_id(),
                quantity: Quantity::new(2).unwrap(),
            })
            .then(vec![]);
    }

    #[test]
    fn releases_only_what_an_order_holds() {
        Given::<Product>::events(vec![created(5), reserved(order_id(), 2)])
            .when(&ProductCommand::Release(order_id()))
            .then(vec![DomainEvent::StockReleased(StockReleased {
                sku: sku(),
                order_id: order_id(),
                quantity: Quantity::new(2).unwrap(),
            })]);
        Given::<Product>::events(vec![created(5)])
            .when(&ProductCommand::Release(order_id()))
            .then(vec![]);
    }

    #[test]
    fn committing_takes_stock_off_hand() {
        let committed = DomainEvent::StockCommitted(StockCommitted {
            sku: sku(),
            order_id: order_id(),
            quantity: Quantity::new(2).unwrap(),
        });
        Given::<Product>::events(vec![created(5), reserved(order_id(), 2)])
            .when(&ProductCommand::Commit(order_id()))
            .then(vec![committed.clone()]);
        let mut product = Product::default();
        for e in [created(5), reserved(order_id(), 2), committed] {
            product.apply(&e);
        }
        assert_eq!(
            (product.on_hand(), product.reserved(), product.available()),
            (3, 0, 3)
        );
    }

    #[test]
    fn the_reserved_total_follows_every_change_and_a_snapshot_keeps_the_map_alone() {
        let third = OrderId::from_uuid(uuid::Uuid::from_u128(7));
        let mut product = Product::default();
        for e in [
            created(20),
            reserved(order_id(), 2),
            reserved(other_order(), 3),
            reserved(third, 4),
            DomainEvent::StockReleased(StockReleased {
                sku: sku(),
                order_id: other_order(),
                quantity: Quantity::new(3).unwrap(),
            }),
            DomainEvent::StockCommitted(StockCommitted {
                sku: sku(),
                order_id: order_id(),
                quantity: Quantity::new(2).unwrap(),
            }),
        ] {
            product.apply(&e);
        }
        assert_eq!(
            (product.on_hand(), product.reserved(), product.available()),
            (18, 4, 14)
        );

        // Schema 2: the reservations are a map from order to quantity, nothing else.
        let encoded = serde_json::to_value(&product).unwrap();
        assert_eq!(
            encoded["reservations"],
            serde_json::json!({ third.as_uuid().to_string(): 4 })
        );
        let decoded: Product = serde_json::from_value(encoded).unwrap();
        assert_eq!(decoded, product);
        assert_eq!(decoded.reserved(), 4);
    }

    #[test]
    fn restocks_an_existing_product_only() {
        Given::<Product>::events(vec![created(0)])
            .when(&ProductCommand::Restock(Quantity::new(7).unwrap()))
            .then(vec![DomainEvent::StockRestocked(StockRestocked {
                sku: sku(),
                quantity: Quantity::new(7).unwrap(),
            })]);
        Given::<Product>::nothing()
            .when(&ProductCommand::Restock(Quantity::new(7).unwrap()))
            .then_not_found();
        Given::<Product>::events(vec![created(i64::try_from(StockLevel::MAX).unwrap())])
            .when(&ProductCommand::Restock(Quantity::new(1).unwrap()))
            .then_refused("would exceed");
    }
}
