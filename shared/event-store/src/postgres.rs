//! The PostgreSQL store. All of this crate's SQL is in this file.

use std::{
    collections::HashSet,
    sync::{Arc, OnceLock},
};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    AggregateId, Error, EventEnvelope, EventId, EventQuery, EventStore, ExpectedVersion, LogPage,
    Metadata, MultiAppendResult, Payload, Position, RecordedEvent, Result, Snapshot, StreamAppend,
    Version, Wakeup,
    memory::replayed,
    store::validate,
    writer::{CommandWriter, DEFAULT_WRITERS},
};

/// The channel appends are announced on. Payloads are empty: a notification only says
/// "read the log", the log says what happened.
pub const NOTIFY_CHANNEL: &str = "event_store_appended";

/// How often an append with [`ExpectedVersion::Any`] is retried when a concurrent writer
/// takes the version it computed.
const ANY_VERSION_ATTEMPTS: usize = 5;

/// Appends events: checks each stream's version, numbers the events after it, and inserts
/// them, all or nothing. An empty result means a version check failed; a unique violation
/// means a concurrent writer or a stored event id.
const APPEND_SQL: &str = r#"
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
const APPEND_COMMANDS_SQL: &str = r#"
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
const RECORD_SQL: &str = "INSERT INTO command_log (command_id, command_type, request_hash, outcome, transaction_id, \
     global_position, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7)";

const FIND_COMMAND_SQL: &str = "SELECT command_type, request_hash, outcome, transaction_id, global_position FROM command_log \
     WHERE command_id = $1";

const STREAM_VERSIONS_SQL: &str = "SELECT s.id, coalesce((SELECT max(version) FROM events WHERE aggregate_id = s.id), 0) \
     FROM unnest($1::uuid[]) AS s(id)";

/// The columns [`decode_event`] reads, in its order. `payload::text`: the column is `json`,
/// so this is its text as stored, already checked by PostgreSQL.
macro_rules! event_columns {
    () => {
        "global_position, transaction_id::text::bigint AS transaction_id, event_id, \
         aggregate_id, aggregate_type, version, event_type, payload::text, metadata, occurred_at"
    };
}

const STORED_IDS_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE event_id = ANY($1)"
);

const STREAM_SQL: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE aggregate_id = $1 AND version >= $2 ORDER BY version"
);

const QUERY_SQL: &str = concat!(
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
const READ_ALL_SQL: &str = concat!(
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
const READ_TYPES_SQL: &str = concat!(
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

const HEAD_SQL: &str = "SELECT transaction_id::text::bigint, global_position FROM events \
     WHERE events.transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
     ORDER BY events.transaction_id DESC, events.global_position DESC LIMIT 1";

const SAVE_SNAPSHOT_SQL: &str = "INSERT INTO snapshots (aggregate_id, aggregate_type, version, schema_version, state, taken_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (aggregate_id) DO UPDATE SET \
       aggregate_type = excluded.aggregate_type, version = excluded.version, \
       schema_version = excluded.schema_version, state = excluded.state, taken_at = excluded.taken_at \
     WHERE snapshots.version < excluded.version OR snapshots.schema_version <> excluded.schema_version";

const LOAD_SNAPSHOT_SQL: &str = "SELECT aggregate_type, version, schema_version, state, taken_at \
     FROM snapshots WHERE aggregate_id = $1 AND schema_version = $2";

/// An event store on PostgreSQL. Clones share the connection pool.
///
/// After each append it wakes subscribers with a NOTIFY sent from a separate connection,
/// after the commit and coalesced (see [`Notifier`]): NOTIFY inside the append transaction
/// would serialise every commit on PostgreSQL's notify lock.
#[derive(Debug, Clone)]
pub struct PostgresEventStore {
    pool: PgPool,
    notifier: Arc<OnceLock<Notifier>>,
    writer: Arc<std::sync::Mutex<Option<CommandWriter>>>,
    writers: usize,
}

impl PostgresEventStore {
    /// A store over `pool`. The schema must exist (see [`crate::MIGRATOR`]).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            notifier: Arc::new(OnceLock::new()),
            writer: Arc::new(std::sync::Mutex::new(None)),
            writers: DEFAULT_WRITERS,
        }
    }

    /// How many batches of commands [`Self::append_command`] may write at once (default
    /// [`DEFAULT_WRITERS`]). Takes effect if set before the first command is written.
    pub fn with_command_writers(mut self, writers: usize) -> Self {
        self.writers = writers.max(1);
        self
    }

    /// The connection pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends to several streams on `conn`, which must be inside a transaction, so that
    /// other writes (an idempotency record, say) commit with the events. A refused append
    /// is rolled back to a savepoint, so the transaction stays usable. Subscribers are not
    /// woken: call [`PostgresEventStore::notify_appended`] after the commit.
    pub async fn append_streams_in(
        &self,
        conn: &mut PgConnection,
        streams: &[StreamAppend],
    ) -> Result<MultiAppendResult> {
        validate(streams)?;
        sqlx::query("SAVEPOINT event_store_append")
            .execute(&mut *conn)
            .await
            .map_err(Error::from_sqlx)?;
        match try_append(conn, streams).await? {
            Attempt::Written(result) => Ok(result),
            Attempt::StoredEventId | Attempt::Conflict => {
                sqlx::query("ROLLBACK TO SAVEPOINT event_store_append")
                    .execute(&mut *conn)
                    .await
                    .map_err(Error::from_sqlx)?;
                explain_failure(conn, streams).await?
            }
        }
    }

    /// Appends a command's events and records the command (its id, request hash and outcome)
    /// in one transaction: either both are stored or neither. With no events, only the
    /// record is written, at `record.position`. [`CommandWrite::AlreadyRecorded`] means the
    /// command id was recorded first (by a concurrent retry, say): look it up with
    /// [`PostgresEventStore::find_command`]. Subscribers are woken after the write.
    ///
    /// Concurrent calls are grouped: a writer task (or a few, see
    /// [`Self::with_command_writers`]) takes whatever commands are waiting and writes them with [`PostgresEventStore::append_commands`], so many commands
    /// share one statement and one WAL flush. Each still succeeds or fails alone.
    pub async fn append_command(&self, command: CommandAppend) -> Result<CommandWrite> {
        if command.streams.is_empty() {
            return record_only(&self.pool, &command.record).await;
        }
        validate(&command.streams)?;
        let writer = {
            let mut slot = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(writer) if writer.is_running() => writer.clone(),
                // First use, or the writer tasks are gone (their runtime ended, or a
                // panic): start new ones rather than fail every command from now on.
                _ => {
                    let writer = CommandWriter::spawn(
                        self.pool.clone(),
                        self.notifier.clone(),
                        self.writers,
                    );
                    *slot = Some(writer.clone());
                    writer
                }
            }
        };
        writer.write(command).await
    }

    /// Appends several commands' events and records each command, in one transaction where
    /// it can: the commands must touch distinct streams to share it, and one whose version
    /// check fails (or whose id is recorded, or whose event ids are stored) is written alone
    /// afterwards, so each result is that command's own, as [`Self::append_command`] would
    /// give it. Subscribers are woken once.
    pub async fn append_commands(&self, commands: &[CommandAppend]) -> Vec<Result<CommandWrite>> {
        write_commands(&self.pool, &self.notifier, commands).await
    }

    /// A recorded command: its request hash, outcome and the position it was written at.
    pub async fn find_command(&self, command_id: uuid::Uuid) -> Result<Option<RecordedCommand>> {
        let row: Option<CommandRow> = sqlx::query_as(FIND_COMMAND_SQL)
            .bind(command_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::from_sqlx)?;
        Ok(row.map(
            |(command_type, request_hash, outcome, tx, pos)| RecordedCommand {
                command_type,
                request_hash,
                outcome: outcome.0,
                position: tx
                    .zip(pos)
                    .map(|(tx, pos)| Position::new(tx as u64, pos as u64)),
            },
        ))
    }

    /// Wakes subscribers: asks the notifier to send one NOTIFY soon, outside any append
    /// transaction. Many calls close together send one notification.
    pub fn notify_appended(&self) {
        wake(&self.pool, &self.notifier);
    }
}

/// A command's idempotency record, written with its events.
#[derive(Debug, Clone)]
pub struct CommandRecord {
    /// The client's idempotency key.
    pub command_id: uuid::Uuid,
    /// What kind of command (the RPC name).
    pub command_type: String,
    /// A hash of the whole request, to tell a retry from a different request.
    pub request_hash: Vec<u8>,
    /// What the command did, returned again on a retry.
    pub outcome: serde_json::Value,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The position to record when the command appends nothing (its aggregates' last
    /// event); with events, the position of the last one is recorded instead.
    pub position: Position,
}

/// One command's write: its events, by stream, and its idempotency record.
#[derive(Debug, Clone)]
pub struct CommandAppend {
    /// The events, one entry per stream, each with its expected version. May be empty.
    pub streams: Vec<StreamAppend>,
    /// The record stored with them.
    pub record: CommandRecord,
}

/// A command recorded earlier.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCommand {
    /// What the command was (the RPC's name, or a marker the caller chose).
    pub command_type: String,
    /// The request's hash then.
    pub request_hash: Vec<u8>,
    /// What the command did then.
    pub outcome: serde_json::Value,
    /// Where its last event (or its aggregates' last event) is.
    pub position: Option<Position>,
}

/// What [`PostgresEventStore::append_command`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandWrite {
    /// Stored: the append's result, or `None` when the command had no events.
    Appended(Option<MultiAppendResult>),
    /// The command id was recorded before; nothing was written.
    AlreadyRecorded,
}

/// Outcome of one append statement.
enum Attempt {
    Written(MultiAppendResult),
    /// A version check failed or a concurrent writer took a version.
    Conflict,
    /// A stored event id collided.
    StoredEventId,
}

/// The event columns of an append, one array per column, in the order the append
/// statements bind them.
struct EventColumns<'a> {
    event_ids: Vec<Uuid>,
    aggregate_ids: Vec<Uuid>,
    aggregate_types: Vec<&'a str>,
    event_types: Vec<&'a str>,
    /// JSON text: the columns are `json`, which stores the text as written.
    payloads: Vec<&'a str>,
    metadata: Vec<String>,
    occurred: Vec<DateTime<Utc>>,
}

impl<'a> EventColumns<'a> {
    fn of(streams: impl Iterator<Item = &'a StreamAppend>) -> sqlx::Result<Self> {
        let mut columns = Self {
            event_ids: Vec::new(),
            aggregate_ids: Vec::new(),
            aggregate_types: Vec::new(),
            event_types: Vec::new(),
            payloads: Vec::new(),
            metadata: Vec::new(),
            occurred: Vec::new(),
        };
        for event in streams.flat_map(|s| &s.events) {
            columns.event_ids.push(event.event_id.as_uuid());
            columns.aggregate_ids.push(event.aggregate_id.as_uuid());
            columns.aggregate_types.push(event.aggregate_type.as_str());
            columns.event_types.push(event.event_type.as_str());
            columns.payloads.push(event.payload.as_str());
            columns.metadata.push(
                serde_json::to_string(&event.metadata)
                    .map_err(|err| sqlx::Error::Encode(err.into()))?,
            );
            columns.occurred.push(event.timestamp);
        }
        Ok(columns)
    }

    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(&self.event_ids)
            .bind(&self.aggregate_ids)
            .bind(&self.aggregate_types)
            .bind(&self.event_types)
            .bind(&self.payloads)
            .bind(&self.metadata)
            .bind(&self.occurred)
    }
}

/// The expected version as the append statements take it: -1 for no check.
fn expected_as_i64(stream: &StreamAppend) -> i64 {
    stream
        .expected_version
        .required()
        .map_or(-1, Version::as_i64)
}

/// Reads the rows an append returned (global position, transaction id, aggregate id,
/// version) into each stream's new version and the position of the last event.
fn appended_result<'a>(
    streams: impl Iterator<Item = &'a StreamAppend>,
    rows: &[&PgRow],
) -> Result<MultiAppendResult> {
    let mut position = Position::START;
    let mut versions: Vec<(AggregateId, Version)> = streams
        .map(|s| (s.events[0].aggregate_id, Version::INITIAL))
        .collect();
    for row in rows {
        let global: i64 = row.try_get(0).map_err(Error::from_sqlx)?;
        let transaction: i64 = row.try_get(1).map_err(Error::from_sqlx)?;
        let id = AggregateId::from_uuid(row.try_get(2).map_err(Error::from_sqlx)?);
        let version = Version::from_i64(row.try_get(3).map_err(Error::from_sqlx)?);
        position = position.max(Position::new(transaction as u64, global as u64));
        if let Some(slot) = versions.iter_mut().find(|(sid, _)| *sid == id) {
            slot.1 = slot.1.max(version);
        }
    }
    Ok(MultiAppendResult {
        streams: versions,
        position,
    })
}

async fn try_append(conn: &mut PgConnection, streams: &[StreamAppend]) -> Result<Attempt> {
    let stream_ids: Vec<Uuid> = streams
        .iter()
        .map(|s| s.events[0].aggregate_id.as_uuid())
        .collect();
    let expected: Vec<i64> = streams.iter().map(expected_as_i64).collect();
    let columns = EventColumns::of(streams.iter()).map_err(Error::Database)?;
    let query = sqlx::query(APPEND_SQL).bind(&stream_ids).bind(&expected);
    let rows = match columns.bind(query).fetch_all(&mut *conn).await {
        Ok(rows) => rows,
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
            return Ok(match db.constraint() {
                Some("events_event_id_key") => Attempt::StoredEventId,
                _ => Attempt::Conflict,
            });
        }
        Err(err) => return Err(Error::from_sqlx(err)),
    };
    if rows.is_empty() {
        return Ok(Attempt::Conflict);
    }
    let rows: Vec<&PgRow> = rows.iter().collect();
    Ok(Attempt::Written(appended_result(streams.iter(), &rows)?))
}

/// Runs [`APPEND_COMMANDS_SQL`] for `commands` (each with events, on streams no other of
/// them touches). Per command: the append's result, or `None` when a version check failed.
async fn try_append_commands(
    conn: &mut PgConnection,
    commands: &[&CommandAppend],
) -> std::result::Result<Vec<Option<Result<MultiAppendResult>>>, sqlx::Error> {
    let mut numbers = Vec::new();
    let mut stream_ids = Vec::new();
    let mut expected = Vec::new();
    for (number, command) in (1_i64..).zip(commands) {
        for stream in &command.streams {
            numbers.push(number);
            stream_ids.push(stream.events[0].aggregate_id.as_uuid());
            expected.push(expected_as_i64(stream));
        }
    }
    let columns = EventColumns::of(commands.iter().flat_map(|c| &c.streams))?;
    let records = commands.iter().map(|c| &c.record);
    let command_ids: Vec<Uuid> = records.clone().map(|r| r.command_id).collect();
    let command_types: Vec<&str> = records.clone().map(|r| r.command_type.as_str()).collect();
    let hashes: Vec<&[u8]> = records.clone().map(|r| r.request_hash.as_slice()).collect();
    let outcomes: Vec<_> = records
        .clone()
        .map(|r| sqlx::types::Json(&r.outcome))
        .collect();
    let recorded_at: Vec<DateTime<Utc>> = records.map(|r| r.recorded_at).collect();
    metrics::histogram!("event_store_group_commit_commands").record(commands.len() as f64);
    metrics::histogram!("event_store_group_commit_events").record(columns.event_ids.len() as f64);
    let started = std::time::Instant::now();
    let query = sqlx::query(APPEND_COMMANDS_SQL)
        .bind(&numbers)
        .bind(&stream_ids)
        .bind(&expected);
    let rows = columns
        .bind(query)
        .bind(&command_ids)
        .bind(&command_types)
        .bind(&hashes)
        .bind(&outcomes)
        .bind(&recorded_at)
        .fetch_all(&mut *conn)
        .await;
    metrics::histogram!("event_store_append_seconds").record(started.elapsed().as_secs_f64());
    let rows = rows?;
    let mut by_command: Vec<Vec<&PgRow>> = vec![Vec::new(); commands.len()];
    for row in &rows {
        let number: i64 = row.try_get(4)?;
        if let Some(slot) = usize::try_from(number - 1)
            .ok()
            .and_then(|i| by_command.get_mut(i))
        {
            slot.push(row);
        }
    }
    Ok(commands
        .iter()
        .zip(by_command)
        .map(|(command, rows)| {
            (!rows.is_empty()).then(|| appended_result(command.streams.iter(), &rows))
        })
        .collect())
}

/// Records a command that appended nothing.
async fn record_only(pool: &PgPool, record: &CommandRecord) -> Result<CommandWrite> {
    let written = sqlx::query(RECORD_SQL)
        .bind(record.command_id)
        .bind(&record.command_type)
        .bind(&record.request_hash)
        .bind(sqlx::types::Json(&record.outcome))
        .bind(record.position.transaction_id as i64)
        .bind(record.position.global_position as i64)
        .bind(record.recorded_at)
        .execute(pool)
        .await;
    match written {
        Ok(_) => Ok(CommandWrite::Appended(None)),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
            Ok(CommandWrite::AlreadyRecorded)
        }
        Err(err) => Err(Error::from_sqlx(err)),
    }
}

/// Writes commands: those with events on distinct streams in one statement, then, one at a
/// time, any the shared statement could not take (a stream shared with an earlier command,
/// a failed version check, or a unique violation that failed the whole statement); a
/// command with no events only has its record written. Wakes subscribers once if any
/// event was written.
pub(crate) async fn write_commands(
    pool: &PgPool,
    notifier: &OnceLock<Notifier>,
    commands: &[CommandAppend],
) -> Vec<Result<CommandWrite>> {
    let mut results: Vec<Option<Result<CommandWrite>>> = Vec::with_capacity(commands.len());
    for command in commands {
        results.push(if command.streams.is_empty() {
            // Nothing to append: only the record.
            Some(record_only(pool, &command.record).await)
        } else {
            validate(&command.streams).err().map(|e| Err(e.into()))
        });
    }
    if results.iter().all(Option::is_some) {
        // Nothing left to append (records only, or refused before the database).
        return results.into_iter().flatten().collect();
    }
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(err) => {
            return results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(Error::shared(&err))))
                .collect();
        }
    };
    // Commands on distinct streams share the statement; the rest wait for their turn alone.
    let mut seen = HashSet::new();
    let (mut shared, mut alone): (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    for (i, command) in commands.iter().enumerate() {
        if results[i].is_some() {
            continue;
        }
        let ids: Vec<AggregateId> = command
            .streams
            .iter()
            .map(|s| s.events[0].aggregate_id)
            .collect();
        if ids.iter().any(|id| seen.contains(id)) {
            alone.push(i);
        } else {
            seen.extend(ids);
            shared.push(i);
        }
    }
    if shared.len() > 1 {
        let batch: Vec<&CommandAppend> = shared.iter().map(|&i| &commands[i]).collect();
        match try_append_commands(&mut conn, &batch).await {
            Ok(per_command) => {
                for (&i, written) in shared.iter().zip(per_command) {
                    match written {
                        Some(written) => {
                            results[i] = Some(written.map(|r| CommandWrite::Appended(Some(r))))
                        }
                        None => alone.push(i),
                    }
                }
            }
            // The statement failed as a whole (a unique violation, a row the database
            // refused, a lost connection): each command, alone, finds out its own result.
            Err(_) => alone.extend(&shared),
        }
    } else {
        alone.extend(&shared);
    }
    alone.sort_unstable();
    for i in alone {
        results[i] = Some(write_one(&mut conn, &commands[i]).await);
    }
    let results: Vec<Result<CommandWrite>> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Corrupt("a command was not written".into()))))
        .collect();
    if results
        .iter()
        .any(|r| matches!(r, Ok(CommandWrite::Appended(Some(_)))))
    {
        wake(pool, notifier);
    }
    for (command, result) in commands.iter().zip(&results) {
        if matches!(result, Ok(CommandWrite::Appended(Some(_)))) {
            for event in command.streams.iter().flat_map(|s| &s.events) {
                metrics::counter!("event_store_events_appended_total", "event_type" => event.event_type.clone())
                    .increment(1);
            }
        }
    }
    results
}

/// Asks `notifier` (started on first use) for one NOTIFY.
fn wake(pool: &PgPool, notifier: &OnceLock<Notifier>) {
    notifier
        .get_or_init(|| Notifier::spawn(pool.clone()))
        .notify();
}

/// Writes one command (with events) in its own statement, and says why when it cannot.
async fn write_one(conn: &mut PgConnection, command: &CommandAppend) -> Result<CommandWrite> {
    match try_append_commands(conn, &[command]).await {
        Ok(mut written) => {
            if let Some(written) = written.pop().flatten() {
                return written.map(|r| CommandWrite::Appended(Some(r)));
            }
        }
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
            if db.constraint() == Some("command_log_pkey") {
                return Ok(CommandWrite::AlreadyRecorded);
            }
        }
        Err(err) => return Err(Error::from_sqlx(err)),
    }
    // A version check failed, or an event collided with a stored one: find out which.
    match explain_failure(conn, &command.streams).await? {
        // Every event is stored: the same command was written by a concurrent retry.
        Ok(_) => Ok(CommandWrite::AlreadyRecorded),
        Err(err) => Err(err),
    }
}

/// Works out why an append wrote nothing: an idempotent retry (every event id is stored
/// already), a partly stored batch, or a version conflict.
///
/// Runs on the connection that tried the append, so it needs no second connection (a
/// second one could deadlock a busy pool).
async fn explain_failure(
    conn: &mut PgConnection,
    streams: &[StreamAppend],
) -> Result<Result<MultiAppendResult, Error>> {
    let ids: Vec<Uuid> = streams
        .iter()
        .flat_map(|s| s.events.iter().map(|e| e.event_id.as_uuid()))
        .collect();
    let stored: Vec<RecordedEvent> = sqlx::query(STORED_IDS_SQL)
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(Error::from_sqlx)?
        .iter()
        .map(decode_event)
        .collect::<Result<_>>()?;
    if !stored.is_empty() {
        if stored.len() == ids.len() {
            let refs: Vec<&RecordedEvent> = stored.iter().collect();
            return Ok(Ok(replayed(streams, &refs)));
        }
        return Ok(Err(Error::DuplicateEventId(stored[0].event_id)));
    }
    let stream_ids: Vec<Uuid> = streams
        .iter()
        .map(|s| s.events[0].aggregate_id.as_uuid())
        .collect();
    let actual: Vec<(Uuid, i64)> = sqlx::query_as(STREAM_VERSIONS_SQL)
        .bind(&stream_ids)
        .fetch_all(&mut *conn)
        .await
        .map_err(Error::from_sqlx)?;
    // Report the first stream whose check fails now; if every check passes now, the writer
    // that beat us has already moved on, and the first checked stream is reported.
    let conflict = streams
        .iter()
        .filter(|s| s.expected_version.required().is_some())
        .map(|s| {
            let id = s.events[0].aggregate_id;
            let now = actual
                .iter()
                .find(|(sid, _)| *sid == id.as_uuid())
                .map_or(Version::INITIAL, |(_, v)| Version::from_i64(*v));
            (id, s.expected_version, now)
        })
        .min_by_key(|(_, expected, now)| expected.required() == Some(*now));
    let (aggregate_id, expected, actual) = conflict.unwrap_or_else(|| {
        let id = streams[0].events[0].aggregate_id;
        (id, ExpectedVersion::Any, Version::INITIAL)
    });
    Ok(Err(Error::VersionConflict {
        aggregate_id,
        expected,
        actual,
    }))
}

impl EventStore for PostgresEventStore {
    async fn append_streams(&self, streams: Vec<StreamAppend>) -> Result<MultiAppendResult> {
        validate(&streams)?;
        let any_only = streams
            .iter()
            .all(|s| s.expected_version == ExpectedVersion::Any);
        let attempts = if any_only { ANY_VERSION_ATTEMPTS } else { 1 };
        let mut conn = self.pool.acquire().await.map_err(Error::from_sqlx)?;
        for attempt in 1..=attempts {
            match try_append(&mut conn, &streams).await? {
                Attempt::Written(result) => {
                    self.notify_appended();
                    return Ok(result);
                }
                Attempt::Conflict if attempt < attempts => continue,
                Attempt::Conflict | Attempt::StoredEventId => {}
            }
            // Autocommit: the failed statement left nothing behind to roll back.
            return explain_failure(&mut conn, &streams).await?;
        }
        unreachable!("the last attempt always returns")
    }

    async fn get_events_for_aggregate(
        &self,
        aggregate_id: AggregateId,
        from: Option<Version>,
    ) -> Result<Vec<RecordedEvent>> {
        let from = from.unwrap_or(Version::INITIAL).as_i64();
        sqlx::query(STREAM_SQL)
            .bind(aggregate_id.as_uuid())
            .bind(from)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::from_sqlx)?
            .iter()
            .map(decode_event)
            .collect()
    }

    async fn query(&self, query: &EventQuery) -> Result<Vec<RecordedEvent>> {
        let limit = query
            .limit
            .map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX));
        sqlx::query(QUERY_SQL)
            .bind(query.aggregate_id.map(|id| id.as_uuid()))
            .bind(query.aggregate_type.as_deref())
            .bind(query.event_types.as_deref())
            .bind(query.min_version.map(Version::as_i64))
            .bind(query.max_version.map(Version::as_i64))
            .bind(query.from_time)
            .bind(query.to_time)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::from_sqlx)?
            .iter()
            .map(decode_event)
            .collect()
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>> {
        sqlx::query(READ_ALL_SQL)
            .bind(after.transaction_id.to_string())
            .bind(i64::try_from(after.global_position).unwrap_or(i64::MAX))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(Error::from_sqlx)?
            .iter()
            .map(decode_event)
            .collect()
    }

    async fn read_all_of_types(
        &self,
        after: Position,
        limit: usize,
        event_types: &[String],
    ) -> Result<LogPage> {
        let rows = sqlx::query(READ_TYPES_SQL)
            .bind(after.transaction_id.to_string())
            .bind(i64::try_from(after.global_position).unwrap_or(i64::MAX))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(event_types)
            .fetch_all(&self.pool)
            .await
            .map_err(Error::from_sqlx)?;
        let mut events = Vec::with_capacity(rows.len());
        let mut horizon = None;
        for row in &rows {
            horizon = row.try_get::<i64, _>(10).ok();
            if row.try_get::<Option<i64>, _>(0).ok().flatten().is_some() {
                events.push(decode_event(row)?);
            }
        }
        let scanned_to = match (events.last(), horizon) {
            // A full page: more may match right after it.
            (Some(last), _) if events.len() >= limit => last.position,
            // Everything below the oldest running transaction has been scanned, and no
            // event can appear there later.
            (_, Some(horizon)) if horizon > 0 => {
                Position::new(horizon as u64 - 1, i64::MAX as u64).max(after)
            }
            (Some(last), _) => last.position,
            (None, _) => after,
        };
        Ok(LogPage { events, scanned_to })
    }

    async fn head(&self) -> Result<Option<Position>> {
        let row: Option<(i64, i64)> = sqlx::query_as(HEAD_SQL)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::from_sqlx)?;
        Ok(row.map(|(tx, pos)| Position::new(tx as u64, pos as u64)))
    }

    async fn wakeup(&self) -> Result<Wakeup> {
        Ok(Wakeup::postgres(self.pool.clone()).await)
    }

    async fn save_snapshot(&self, snapshot: Snapshot) -> Result<()> {
        sqlx::query(SAVE_SNAPSHOT_SQL)
            .bind(snapshot.aggregate_id.as_uuid())
            .bind(&snapshot.aggregate_type)
            .bind(snapshot.version.as_i64())
            .bind(i32::try_from(snapshot.schema_version).unwrap_or(i32::MAX))
            .bind(sqlx::types::Json(&snapshot.state))
            .bind(snapshot.taken_at)
            .execute(&self.pool)
            .await
            .map_err(Error::from_sqlx)?;
        Ok(())
    }

    async fn load_snapshot(
        &self,
        aggregate_id: AggregateId,
        schema_version: u32,
    ) -> Result<Option<Snapshot>> {
        let row: Option<SnapshotRow> = sqlx::query_as(LOAD_SNAPSHOT_SQL)
            .bind(aggregate_id.as_uuid())
            .bind(i32::try_from(schema_version).unwrap_or(i32::MAX))
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::from_sqlx)?;
        Ok(row.map(
            |(aggregate_type, version, schema, state, taken_at)| Snapshot {
                aggregate_id,
                aggregate_type,
                version: Version::from_i64(version),
                schema_version: schema as u32,
                state: state.0,
                taken_at,
            },
        ))
    }
}

/// A stored command row: command type, request hash, outcome, transaction id, global position.
type CommandRow = (
    String,
    Vec<u8>,
    sqlx::types::Json<serde_json::Value>,
    Option<i64>,
    Option<i64>,
);

/// A stored snapshot row: type, version, schema version, state, time taken.
type SnapshotRow = (
    String,
    i64,
    i32,
    sqlx::types::Json<serde_json::Value>,
    DateTime<Utc>,
);

/// Turns a row of the ten event columns, in table order, into an event.
fn decode_event(row: &PgRow) -> Result<RecordedEvent> {
    let corrupt = |err: sqlx::Error| Error::Corrupt(err.to_string());
    let global: i64 = row.try_get(0).map_err(corrupt)?;
    let transaction: i64 = row.try_get(1).map_err(corrupt)?;
    let metadata: sqlx::types::Json<Metadata> = row.try_get(8).map_err(corrupt)?;
    let payload: String = row.try_get(7).map_err(corrupt)?;
    Ok(RecordedEvent {
        position: Position::new(transaction as u64, global as u64),
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

/// Sends NOTIFY on [`NOTIFY_CHANNEL`] from its own task, outside every append transaction.
///
/// Requests are coalesced: while one NOTIFY is being sent, any number of further requests
/// cause exactly one more. The task ends when the last handle is dropped.
#[derive(Debug, Clone)]
pub struct Notifier {
    requests: mpsc::Sender<()>,
}

impl Notifier {
    /// Starts the sending task on the current tokio runtime.
    pub fn spawn(pool: PgPool) -> Self {
        let (requests, mut pending) = mpsc::channel::<()>(1);
        tokio::spawn(async move {
            while pending.recv().await.is_some() {
                if let Err(err) = sqlx::query("SELECT pg_notify($1, '')")
                    .bind(NOTIFY_CHANNEL)
                    .execute(&pool)
                    .await
                {
                    // Subscribers poll as well, so a lost wake-up only costs latency.
                    tracing::debug!(error = %err, "could not send the append notification");
                }
            }
        });
        Self { requests }
    }

    /// Asks for one NOTIFY; never waits.
    pub fn notify(&self) {
        // A full channel means a NOTIFY is already due, which covers this append too.
        let _ = self.requests.try_send(());
    }
}
