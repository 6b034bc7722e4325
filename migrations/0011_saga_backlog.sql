-- How many placed orders wait for the fulfilment saga: sagas still running or
-- compensating, plus orders placed past the saga follower's checkpoint (not yet started).
-- command-service reads it to refuse new PlaceOrder commands while the saga is too far
-- behind (backpressure). A view, so command-service needs no access to the saga's tables.
-- The second count compares global positions only (the checkpoint is a (transaction,
-- position) pair): an event committed late may be counted or missed, which an estimate
-- of a backlog can afford.
CREATE VIEW saga_backlog AS
SELECT
    (SELECT count(*) FROM sagas WHERE state IN ('running', 'compensating')) AS in_flight,
    (SELECT count(*) FROM events
      WHERE event_type = 'OrderPlaced'
        AND global_position > COALESCE(
            (SELECT global_position FROM projection_checkpoints WHERE projection = 'saga_follower'),
            0)) AS not_started;

GRANT SELECT ON saga_backlog TO orders_command;
