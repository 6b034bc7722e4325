-- Where a recorded command's last event is (or, for a command that changed nothing, its
-- aggregates' last event), written in the same statement as the events, so a retry gets
-- the same consistency token.
ALTER TABLE command_log ADD COLUMN transaction_id bigint, ADD COLUMN global_position bigint;
