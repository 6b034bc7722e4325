-- Which generation of the read-model tables a checkpoint belongs to. A rebuild's swap puts
-- new tables in place and bumps it, even when it hands over the very position the live
-- projector had reached. The projector keeps order views in memory that equal the rows of
-- the tables it has been writing; it writes a batch only while the generation it started
-- with is still the stored one (compare-and-set, with the position), and otherwise steps
-- down and empties its views.
ALTER TABLE projection_checkpoints ADD COLUMN generation bigint NOT NULL DEFAULT 0;
