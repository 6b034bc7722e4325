-- saga-service: one row per order fulfilment saga. Every change is written before the
-- next command is sent, and every command carries an idempotency key derived from the saga
-- and the step, so a crash at any point resumes without doing anything twice.
CREATE TABLE sagas (
    order_id         uuid        PRIMARY KEY,
    customer_id      uuid        NOT NULL,
    -- [{sku, quantity}]
    lines            jsonb       NOT NULL,
    total_minor      bigint      NOT NULL,
    currency         text        NOT NULL,
    payment_method   text        NOT NULL,
    -- running, compensating, completed, compensated, needs_attention
    state            text        NOT NULL,
    -- The state a parked saga returns to on RetrySaga.
    parked_from      text,
    -- The steps still to run, the current one first.
    plan             text[]      NOT NULL,
    -- Every step run so far: [{name, status, attempts, started_at, finished_at, last_error}]
    steps            jsonb       NOT NULL,
    -- Attempts at the current step.
    attempts         integer     NOT NULL DEFAULT 0,
    -- When the current step may next be tried (retries back off).
    next_attempt_at  timestamptz NOT NULL,
    -- When the current forward step times out.
    step_deadline    timestamptz,
    -- Why the saga is compensating.
    reason           text,
    -- Set when the order is cancelled or the saga aborted while a step may be in flight.
    cancel_requested boolean     NOT NULL DEFAULT false,
    cancel_reason    text,
    last_error       text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    -- Which instance drives the saga right now, and until when.
    lease_owner      uuid,
    lease_until      timestamptz
);

-- Workers look for sagas that are due.
CREATE INDEX sagas_due_idx ON sagas (next_attempt_at) WHERE state IN ('running', 'compensating');
-- ListSagas: newest first, optionally by state.
CREATE INDEX sagas_state_idx ON sagas (state, created_at DESC, order_id DESC);
CREATE INDEX sagas_newest_idx ON sagas (created_at DESC, order_id DESC);
