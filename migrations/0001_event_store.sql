-- The event store: an append-only log of events, one stream per aggregate.

CREATE TABLE events (
    -- Global sequence number, unique across the store. Not gap-free and not commit order:
    -- readers order by (transaction_id, global_position) and stay below the oldest running
    -- transaction, so an event that commits late is never skipped.
    global_position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The id of the transaction that appended the event.
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL,
    aggregate_id    uuid        NOT NULL,
    aggregate_type  text        NOT NULL CHECK (aggregate_type <> ''),
    version         bigint      NOT NULL CHECK (version > 0),
    event_type      text        NOT NULL CHECK (event_type <> ''),
    payload         jsonb       NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    metadata        jsonb       NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    occurred_at     timestamptz NOT NULL,
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    -- Optimistic concurrency: two writers cannot both write version N of a stream.
    CONSTRAINT events_stream_version_key UNIQUE (aggregate_id, version)
);

-- Subscribers read the log in this order.
CREATE INDEX events_log_order_idx ON events (transaction_id, global_position);
CREATE INDEX events_event_type_idx ON events (event_type, global_position);
CREATE INDEX events_aggregate_type_idx ON events (aggregate_type, global_position);

-- Events are facts: once written they never change.
CREATE FUNCTION events_are_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are append-only: % is not allowed', TG_OP;
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_are_append_only();

-- The latest snapshot of each aggregate.
CREATE TABLE snapshots (
    aggregate_id   uuid        PRIMARY KEY,
    aggregate_type text        NOT NULL,
    version        bigint      NOT NULL CHECK (version > 0),
    -- The shape of `state`; a loader asks for the schema version it understands.
    schema_version integer     NOT NULL,
    state          jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL
);
