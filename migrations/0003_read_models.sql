-- query-service's read models. The projector keeps them in step with the event log and
-- stores its checkpoint in the same transaction as every change (projection_checkpoints).

CREATE TABLE read_orders (
    order_id            uuid        PRIMARY KEY,
    customer_id         uuid        NOT NULL,
    -- draft, placed, confirmed, shipped, cancelled
    status              text        NOT NULL,
    currency            text        NOT NULL,
    -- [{sku, quantity, unit_price_minor}]
    lines               jsonb       NOT NULL,
    total_minor         bigint      NOT NULL,
    payment_method      text,
    -- none, reserved, released, committed
    stock_status        text        NOT NULL,
    -- none, authorized, declined, captured, refunded
    payment_status      text        NOT NULL,
    cancellation_reason text,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    -- The order stream's version this row reflects.
    version             bigint      NOT NULL
);
-- ListOrders: newest first, optionally per customer or per status.
CREATE INDEX read_orders_newest_idx ON read_orders (created_at DESC, order_id DESC);
CREATE INDEX read_orders_customer_idx ON read_orders (customer_id, created_at DESC, order_id DESC);
CREATE INDEX read_orders_status_idx ON read_orders (status, created_at DESC, order_id DESC);

CREATE TABLE read_products (
    sku         text        PRIMARY KEY,
    name        text        NOT NULL,
    price_minor bigint      NOT NULL,
    currency    text        NOT NULL,
    on_hand     bigint      NOT NULL,
    reserved    bigint      NOT NULL,
    version     bigint      NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE read_customers (
    customer_id     uuid        PRIMARY KEY,
    -- Orders placed.
    order_count     bigint      NOT NULL,
    -- Of those, confirmed or shipped and not cancelled.
    confirmed_count bigint      NOT NULL,
    -- {currency: minor units} spent on confirmed orders.
    spent           jsonb       NOT NULL,
    last_order_id   uuid,
    last_order_at   timestamptz
);

CREATE TABLE projection_checkpoints (
    projection      text        PRIMARY KEY,
    -- Position of the last event applied (see event_store::Position).
    transaction_id  bigint      NOT NULL,
    global_position bigint      NOT NULL,
    events_applied  bigint      NOT NULL DEFAULT 0,
    -- Events of a type this projection does not know, skipped with a warning.
    unknown_skipped bigint      NOT NULL DEFAULT 0,
    -- running, rebuilding, stopped
    state           text        NOT NULL DEFAULT 'running',
    last_error      text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
