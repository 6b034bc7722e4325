//! The saga end to end: command-service, query-service and saga-service on port 0 against
//! one fresh database, driven through their gRPC clients.

test_support::database_for_tests!();

mod backpressure;
mod failures;
mod follower;
mod helpers;
mod in_doubt;
mod leased;
mod metrics;
mod operations;
mod paths;
mod process;
mod security;
