//! The facts the order system records, shared by all three services.
//!
//! - [`values`]: the domain's value types (`Sku`, `Quantity`, `Money`, ids), each parsed
//!   once at the edge and trusted afterwards.
//! - [`DomainEvent`]: every event, named in the past tense.
//! - [`status`]: the statuses the read models show, one list each.
//! - [`stored`]: the events' stored JSON form, with a schema version per event and the
//!   upcasters that read older versions. The domain types and the stored form are separate
//!   so that one can change without silently changing the other.

mod events;
pub mod status;
pub mod stored;
pub mod values;

pub use events::*;
pub use stored::{DecodeError, StoredEvent};
