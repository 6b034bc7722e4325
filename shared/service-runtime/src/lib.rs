//! What every service binary needs, written once: logging, shutdown, the gRPC server with
//! health and reflection, the database connection, a clock that tests can set, and the
//! helpers that turn bad fields into `INVALID_ARGUMENT` with field violations.

pub mod auth;
pub mod batch;
pub mod bounded;
pub mod clock;
pub mod database;
pub mod edge;
pub mod limits;
pub mod metrics;
pub mod rpc_metrics;
pub mod server;
pub mod shutdown;
pub mod task;
pub mod telemetry;
pub mod tls;

pub use clock::{Clock, FixedClock, SystemClock};
