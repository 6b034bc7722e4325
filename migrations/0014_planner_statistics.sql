-- ANALYZE keeps planner statistics only for the columns some statement searches, joins
-- or sorts on. Under load autovacuum re-analyses sagas and command_log about once a
-- minute, and most of that work was sorting a 30,000-row sample of columns no statement
-- searches: the saga's steps and lines (JSON), the recorded outcomes (JSON), the request
-- hashes. Measured on a full benchmark run's tables, ANALYZE of sagas took 400 ms and of
-- command_log 310-450 ms; without those columns, 90-130 ms and 120 ms. On two cores that
-- share everything, a second of ANALYZE each minute shows in the lifecycle's latency tail
-- (BENCHMARKS.md, History).
--
-- Kept: sagas (order_id, state, cancel_requested, next_attempt_at, created_at,
-- lease_owner, lease_until) and command_log (command_id). The events table is left as it
-- is: its payload and metadata are json, which ANALYZE does not sort, and dropping them
-- saved nothing measurable. A column added later gets statistics again unless its
-- migration says otherwise; the event store's tests list these columns.
ALTER TABLE sagas
    ALTER COLUMN customer_id SET STATISTICS 0,
    ALTER COLUMN lines SET STATISTICS 0,
    ALTER COLUMN total_minor SET STATISTICS 0,
    ALTER COLUMN currency SET STATISTICS 0,
    ALTER COLUMN payment_method SET STATISTICS 0,
    ALTER COLUMN parked_from SET STATISTICS 0,
    ALTER COLUMN plan SET STATISTICS 0,
    ALTER COLUMN steps SET STATISTICS 0,
    ALTER COLUMN attempts SET STATISTICS 0,
    ALTER COLUMN step_deadline SET STATISTICS 0,
    ALTER COLUMN reason SET STATISTICS 0,
    ALTER COLUMN cancel_reason SET STATISTICS 0,
    ALTER COLUMN last_error SET STATISTICS 0,
    ALTER COLUMN updated_at SET STATISTICS 0,
    ALTER COLUMN settling SET STATISTICS 0,
    ALTER COLUMN trace_parent SET STATISTICS 0;

ALTER TABLE command_log
    ALTER COLUMN command_type SET STATISTICS 0,
    ALTER COLUMN request_hash SET STATISTICS 0,
    ALTER COLUMN outcome SET STATISTICS 0,
    ALTER COLUMN recorded_at SET STATISTICS 0,
    ALTER COLUMN transaction_id SET STATISTICS 0,
    ALTER COLUMN global_position SET STATISTICS 0;
