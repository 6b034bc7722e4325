//! Every statement the PostgreSQL store runs, and the shapes of the rows they return.

use chrono::{DateTime, Utc};
use sqlx::{Row, postgres::PgRow};

use crate::{
    AggregateId, Error, EventEnvelope, EventId, Metadata, Payload, Position, RecordedEvent, Result,
    Version,
};

/// Appends events: checks each stream's version, numbers the events after it, and inserts
/// them, all or nothing. An empty result means a version check failed; a unique violation
/// means a concurrent writer or a stored event id.
pub(super) const APPEND_SQL: &str = r#"
WITH expected AS (
    SELECT e.aggregate_id, e.expected_version,
           coalesce((SELECT max(v.version) FROM events v WHERE v.aggregate_id = e.aggregate_id), 0) AS current_version
    FROM unnest($1::uuid[], $2::bigint[]) AS e(aggregate_id, expected_version)
), checked AS (
    SELECT bool_and(expected_version < 0 OR expected_version = current_version) AS ok FROM expected
), input AS (
    SELECT i.*, x.current_version + row_number() OVER (PARTITION BY i.aggregate_id ORDER BY i.ord) AS new_version
    FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::text[]::json[], $8::text[]::json[], $9::timestamptz[])
         WITH ORDINALITY AS i(event_id, aggregate_id, aggregate_type, event_type, payload, metadata, occurred_at, ord)
    JOIN expected x USING (aggregate_id)
), appended AS (
    INSERT INTO events (event_id, aggregate_id, aggregate_type, version, event_type, payload, metadata, occurred_at)
    SELECT event_id, aggregate_id, aggregate_type, new_version, event_type, payload, metadata, occurred_at
    FROM input
    WHERE (SELECT ok FROM checked)
    ORDER BY ord
    RETURNING global_position, transaction_id::text::bigint AS transaction_id, aggregate_id, version
)
SELECT * FROM appended"#;

/// Appends the events of several commands and records each command, in one statement (one
/// transaction, one WAL flush). `$1..$3` list every command's streams with the command's
/// number (1-based) and expected version; `$4..$10` the events; `$11..$15` the command
/// records, in command order. A command whose version checks
/// fail writes nothing, and the others are not held back by it; its number is missing from
/// the result. The streams of different commands must be distinct. A unique violation (a
/// concurrent writer, a stored event id, a recorded command id) fails the whole statement.
pub(super) const APPEND_COMMANDS_SQL: &str = r#"
WITH expected AS (
    SELECT e.command, e.aggregate_id, e.expected_version,
           coalesce((SELECT max(v.version) FROM events v WHERE v.aggregate_id = e.aggregate_id), 0) AS current_version
    FROM unnest($1::bigint[], $2::uuid[], $3::bigint[]) AS e(command, aggregate_id, expected_version)
), checked AS (
    SELECT command FROM expected GROUP BY command
    HAVING bool_and(expected_version < 0 OR expected_version = current_version)
), input AS (
    SELECT i.*, x.current_version + row_number() OVER (PARTITION BY i.aggregate_id ORDER BY i.ord) AS new_version
    FROM unnest($4::uuid[], $5::uuid[], $6::text[], $7::text[], $8::text[]::json[], $9::text[]::json[], $10::timestamptz[])
         WITH ORDINALITY AS i(event_id, aggregate_id, aggregate_type, event_type, payload, metadata, occurred_at, ord)
    JOIN expected x USING (aggregate_id)
    WHERE x.command IN (SELECT command FROM checked)
), appended AS (
    INSERT INTO events (event_id, aggregate_id, aggregate_type, version, event_type, payload, metadata, occurred_at)
    SELECT event_id, aggregate_id, aggregate_type, new_version, event_type, payload, metadata, occurred_at
    FROM input
    ORDER BY ord
    RETURNING global_position, transaction_id::text::bigint AS transaction_id, aggregate_id, version
), numbered AS (
    SELECT a.*, x.command FROM appended a JOIN expected x USING (aggregate_id)
), recorded AS (
    INSERT INTO command_log (command_id, command_type, request_hash, outcome, transaction_id, global_position, recorded_at)
    SELECT c.command_id, c.command_type, c.request_hash, c.outcome, n.transaction_id, n.global_position, c.recorded_at
    FROM unnest($11::uuid[], $12::text[], $13::bytea[], $14::jsonb[], $15::timestamptz[])
         WITH ORDINALITY AS c(command_id, command_type, request_hash, outcome, recorded_at, command)
    JOIN (SELECT command, max(transaction_id) AS transaction_id, max(global_position) AS global_position
          FROM numbered GROUP BY command) n USING (command)
)
SELECT global_position, transaction_id, aggregate_id, version, command FROM numbered"#;

/// Records a command that appended nothing.
pub(super) const RECORD_SQL: &str = "INSERT INTO command_log (command_id, command_type, request_hash, outcome, transaction_id, \
     global_position, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";

pub(super) const FIND_COMMAND_SQL: &str = "SELECT command_type, request_hash, outcome, transaction_id, global_position FROM command_log \
     WHERE command_id = $1";

pub(super) const STREAM_VERSIONS_SQL: &str = "SELECT s.id, coalesce((SELECT max(version) FROM events WHERE aggregate_id = s.id), 0) \
     FROM unnest($1::uuid[]) AS s(id)";

/// The columns [`decode_event`] reads, in its order. `payload::text`: the column is `json`,
/// so this is its text as stored, already checked by PostgreSQL.
macro_rules! event_columns {
    () => {
        "global_position, transaction_id::text::bigint AS transaction_id, event_id, \
         aggregate_id, aggregate_type, version, event_type, payload::text, metadata, occurred_at"
    };
}

pub(super) const STORED_IDS_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE event_id = ANY($1)"
);

pub(super) const STREAM_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE aggregate_id = $1 AND version >= $2 ORDER BY version"
);

pub(super) const QUERY_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events \
     WHERE ($1::uuid IS NULL OR aggregate_id = $1) \
       AND ($2::text IS NULL OR aggregate_type = $2) \
       AND ($3::text[] IS NULL OR event_type = ANY($3)) \
       AND ($4::bigint IS NULL OR version >= $4) \
       AND ($5::bigint IS NULL OR version <= $5) \
       AND ($6::timestamptz IS NULL OR occurred_at >= $6) \
       AND ($7::timestamptz IS NULL OR occurred_at < $7) \
     ORDER BY global_position \
     LIMIT $8"
);

/// Reads below the oldest running transaction, in one statement and so one snapshot: every
/// transaction below `pg_snapshot_xmin` has ended, so no event can appear later before the
/// returned ones. The columns are qualified because the output alias `transaction_id` (a
/// bigint) would otherwise win in ORDER BY and turn an index scan into a sort of the table.
pub(super) const READ_ALL_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events \
     WHERE (events.transaction_id, events.global_position) > ($1::text::xid8, $2) \
       AND events.transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY events.transaction_id, events.global_position \
     LIMIT $3"
);

/// [`READ_ALL_SQL`] for some event types only, plus the scan horizon: the oldest running
/// transaction, below which everything has been scanned when fewer than `$3` rows match.
/// One row with NULL event columns when nothing matches. The type test is written as an
/// expression so that the planner walks the log-order index from the reader's position
/// (a few new rows) rather than the event-type index (every event of the type, ever).
pub(super) const READ_TYPES_SQL: &str = concat!(
    "SELECT e.*, h.horizon \
     FROM (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon) AS h \
     LEFT JOIN LATERAL ( \
       SELECT ",
    event_columns!(),
    " FROM events \
       WHERE (events.transaction_id, events.global_position) > ($1::text::xid8, $2) \
         AND events.transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
         AND (events.event_type || '') = ANY($4) \
       ORDER BY events.transaction_id, events.global_position \
       LIMIT $3 \
     ) AS e ON true"
);

pub(super) const HEAD_SQL: &str = "SELECT transaction_id::text::bigint, global_position FROM events \
     WHERE events.transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY events.transaction_id DESC, events.global_position DESC LIMIT 1";

pub(super) const SAVE_SNAPSHOT_SQL: &str = "INSERT INTO snapshots (aggregate_id, aggregate_type, version, schema_version, state, taken_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (aggregate_id) DO UPDATE SET \
       aggregate_type = excluded.aggregate_type, version = excluded.version, \
       schema_version = excluded.schema_version, state = excluded.state, taken_at = excluded.taken_at \
     WHERE snapshots.version < excluded.version OR snapshots.schema_version <> excluded.schema_version";

pub(super) const LOAD_SNAPSHOT_SQL: &str = "SELECT aggregate_type, version, schema_version, state, taken_at \
     FROM snapshots WHERE aggregate_id = $1 AND schema_version = $2";

/// A stored command row: command type, request hash, outcome, transaction id, global position.
pub(super) type CommandRow = (
    String,
    Vec<u8>,
    sqlx::types::Json<serde_json::Value>,
    Option<i64>,
    Option<i64>,
);

/// A stored snapshot row: type, version, schema version, state, time taken.
pub(super) type SnapshotRow = (
    String,
    i64,
    i32,
    sqlx::types::Json<serde_json::Value>,
    DateTime<Utc>,
);

/// Turns a row of the ten event columns, in table order, into an event.
pub(super) fn decode_event(row: &PgRow) -> Result<RecordedEvent> {
    let corrupt = |err: sqlx::Error| Error::Corrupt(err.to_string());
    let global: i64 = row.try_get(0).map_err(corrupt)?;
    let transaction: i64 = row.try_get(1).map_err(corrupt)?;
    let metadata: sqlx::types::Json<Metadata> = row.try_get(8).map_err(corrupt)?;
    let payload: String = row.try_get(7).map_err(corrupt)?;
    Ok(RecordedEvent {
        position: Position::from_columns(transaction, global)?,
        envelope: EventEnvelope {
            event_id: EventId::from_uuid(row.try_get(2).map_err(corrupt)?),
            aggregate_id: AggregateId::from_uuid(row.try_get(3).map_err(corrupt)?),
            aggregate_type: row.try_get(4).map_err(corrupt)?,
            version: Version::from_i64(row.try_get(5).map_err(corrupt)?),
            event_type: row.try_get(6).map_err(corrupt)?,
            payload: Payload::from_stored(payload),
            metadata: metadata.0,
            timestamp: row.try_get(9).map_err(corrupt)?,
        },
    })
}
