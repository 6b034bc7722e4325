-- The read models' status columns hold only the names domain_events::status lists
-- (OrderStatus, StockStatus, PaymentStatus); the saga's states were checked in 0007.
-- A rebuild's shadow tables copy these constraints (LIKE ... INCLUDING ALL).
ALTER TABLE read_orders
    ADD CONSTRAINT read_orders_status_check
        CHECK (status IN ('draft', 'placed', 'confirmed', 'shipped', 'cancelled')),
    ADD CONSTRAINT read_orders_stock_status_check
        CHECK (stock_status IN ('none', 'reserved', 'released', 'committed')),
    ADD CONSTRAINT read_orders_payment_status_check
        CHECK (payment_status IN ('none', 'authorized', 'declined', 'captured', 'refunded'));
