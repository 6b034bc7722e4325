//! query-service called the way users call it, with command-service writing the events:
//! both started on port 0 against one fresh, migrated database per test.

test_support::database_for_tests!();

mod consistency;
mod errors;
mod helpers;
mod process;
mod reads;
mod rebuild;
mod replica;
mod resilience;
mod status;
mod watch;
