-- Durable idempotency for command-service: one row per command id, written in the same
-- transaction as the command's events.
CREATE TABLE command_log (
    command_id   uuid        PRIMARY KEY,
    -- The RPC that carried the command.
    command_type text        NOT NULL,
    -- SHA-256 of the RPC name and the encoded request: tells a retry from a different request.
    request_hash bytea       NOT NULL,
    -- What the command did (versions, position, details), returned again on a retry.
    outcome      jsonb       NOT NULL,
    recorded_at  timestamptz NOT NULL
);
