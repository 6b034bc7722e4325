-- The event types a follower reads (NULL: every type), so its lag can be counted in the
-- events it consumes: saga-service's follower reads OrderPlaced and OrderCancelled only.
ALTER TABLE projection_checkpoints ADD COLUMN event_types text[];
