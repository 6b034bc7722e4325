//! The statuses the read models show, by the names stored in their columns and sent over
//! the API: one list each. Migration 0012 checks the columns against the same names.

/// An enum of names: `ALL`, `as_str` and `parse`, from one list.
macro_rules! named {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in the order of its life.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stored and shown name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value named `text`, if any.
            pub fn parse(text: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named! {
    /// Where an order is in its life.
    OrderStatus {
        /// Being edited by the customer.
        Draft = "draft",
        /// Placed: the saga is reserving stock and authorising payment.
        Placed = "placed",
        /// Stock reserved and payment authorised.
        Confirmed = "confirmed",
        /// Shipped; final.
        Shipped = "shipped",
        /// Cancelled; final.
        Cancelled = "cancelled",
    }
}

impl OrderStatus {
    /// True once the order can no longer change.
    pub fn is_final(self) -> bool {
        match self {
            OrderStatus::Shipped | OrderStatus::Cancelled => true,
            OrderStatus::Draft | OrderStatus::Placed | OrderStatus::Confirmed => false,
        }
    }
}

named! {
    /// What happened to an order's stock.
    StockStatus {
        /// Nothing reserved.
        None = "none",
        /// Reserved for the order.
        Reserved = "reserved",
        /// Given back.
        Released = "released",
        /// Taken out of stock (shipped).
        Committed = "committed",
    }
}

named! {
    /// What happened to an order's payment.
    PaymentStatus {
        /// No payment yet.
        None = "none",
        /// Authorised, not yet captured.
        Authorized = "authorized",
        /// The gateway declined it.
        Declined = "declined",
        /// Captured (shipped).
        Captured = "captured",
        /// Given back.
        Refunded = "refunded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back() {
        for s in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(s.as_str()), Some(*s));
        }
        for s in StockStatus::ALL {
            assert_eq!(StockStatus::parse(s.as_str()), Some(*s));
        }
        for s in PaymentStatus::ALL {
            assert_eq!(PaymentStatus::parse(s.as_str()), Some(*s));
        }
        assert_eq!(OrderStatus::parse("lost"), None);
    }
}
