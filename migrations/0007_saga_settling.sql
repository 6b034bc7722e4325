-- saga-service settles a forward step whose outcome is in doubt before it compensates
-- (saga-service/src/saga.rs): 'void' while the step's command id is being voided,
-- 'reread' while the recorded answer of a command that did run is read again.
ALTER TABLE sagas ADD COLUMN settling text CHECK (settling IN ('void', 'reread'));

ALTER TABLE sagas ADD CONSTRAINT sagas_state_check
    CHECK (state IN ('running', 'compensating', 'completed', 'compensated', 'needs_attention'));
ALTER TABLE sagas ADD CONSTRAINT sagas_parked_from_check
    CHECK (parked_from IN ('running', 'compensating'));

-- A completed saga whose order is cancelled afterwards is due again: it gives back the
-- stock and the payment.
DROP INDEX sagas_due_idx;
CREATE INDEX sagas_due_idx ON sagas (next_attempt_at)
    WHERE state IN ('running', 'compensating') OR (state = 'completed' AND cancel_requested);
