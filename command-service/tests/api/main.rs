//! command-service called the way users call it: a real server on port 0, a fresh migrated
//! database per test, and the generated gRPC client.

test_support::database_for_tests!();

mod errors;
mod helpers;
mod idempotency;
mod instances;
mod invariants;
mod lifecycle;
mod process;
mod snapshots;
