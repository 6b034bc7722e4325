-- The W3C traceparent of the call that placed the order (from the OrderPlaced event's
-- metadata), so the saga's steps continue that trace.
ALTER TABLE sagas ADD COLUMN trace_parent text;
