//! The PostgreSQL store.
//!
//! - [`sql`]: every statement it runs, and the rows they return;
//! - [`append`]: appending events, and explaining an append that wrote nothing;
//! - [`command_log`]: commands' events and idempotency records, many per statement;
//! - [`writer`]: group commit, the tasks that gather concurrent commands into batches;
//! - [`notifier`]: the NOTIFY that wakes subscribers after a commit.

mod append;
mod command_log;
mod notifier;
mod sql;
mod writer;

use std::sync::{Arc, OnceLock};

use sqlx::{PgConnection, PgPool, Row};

pub use notifier::{NOTIFY_CHANNEL, Notifier};
pub use writer::{DEFAULT_WRITERS, MAX_BATCH};

use append::{Attempt, explain_failure, try_append};
use sql::*;
use writer::CommandWriter;

use crate::{
    AggregateId, CommandAppend, CommandLog, CommandWrite, Error, EventQuery, EventStore,
    ExpectedVersion, LogPage, MultiAppendResult, Position, RecordedCommand, RecordedEvent, Result,
    Snapshot, StreamAppend, Version, Wakeup, store::validate,
};

/// How often an append with [`ExpectedVersion::Any`] is retried when a concurrent writer
/// takes the version it computed.
const ANY_VERSION_ATTEMPTS: usize = 5;

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

    /// Appends several commands' events and records each command, in one transaction where
    /// it can: the commands must touch distinct streams to share it, and one whose version
    /// check fails (or whose id is recorded, or whose event ids are stored) is written alone
    /// afterwards, so each result is that command's own, as
    /// [`CommandLog::append_command`] would give it. Subscribers are woken once.
    pub async fn append_commands(&self, commands: &[CommandAppend]) -> Vec<Result<CommandWrite>> {
        let checked: Vec<Option<Error>> = commands
            .iter()
            .map(|c| {
                (!c.streams.is_empty())
                    .then(|| validate(&c.streams).err().map(Error::from))
                    .flatten()
            })
            .collect();
        let valid: Vec<CommandAppend> = commands
            .iter()
            .zip(&checked)
            .filter(|(_, refused)| refused.is_none())
            .map(|(c, _)| c.clone())
            .collect();
        let mut written = command_log::write_commands(&self.pool, &self.notifier, &valid)
            .await
            .into_iter();
        checked
            .into_iter()
            .map(|refused| match refused {
                Some(err) => Err(err),
                None => written
                    .next()
                    .unwrap_or_else(|| Err(Error::Corrupt("a command was not written".into()))),
            })
            .collect()
    }

    /// Wakes subscribers: asks the notifier to send one NOTIFY soon, outside any append
    /// transaction. Many calls close together send one notification.
    pub fn notify_appended(&self) {
        notifier::wake(&self.pool, &self.notifier);
    }
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
            .bind(after.to_columns().1)
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
            .bind(after.to_columns().1)
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
                Position::from_columns(horizon - 1, i64::MAX)?.max(after)
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
        row.map(|(tx, pos)| Position::from_columns(tx, pos))
            .transpose()
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
                schema_version: u32::try_from(schema).unwrap_or(0),
                state: state.0,
                taken_at,
            },
        ))
    }
}

impl CommandLog for PostgresEventStore {
    /// Subscribers are woken after the write. Concurrent calls are grouped: a writer task
    /// (or a few, see [`PostgresEventStore::with_command_writers`]) takes whatever commands
    /// are waiting and writes them together, so many commands share one statement and one
    /// WAL flush. Each still succeeds or fails alone.
    async fn append_command(&self, command: CommandAppend) -> Result<CommandWrite> {
        if command.streams.is_empty() {
            return command_log::record_only(&self.pool, &command.record).await;
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

    async fn find_command(&self, command_id: uuid::Uuid) -> Result<Option<RecordedCommand>> {
        let row: Option<CommandRow> = sqlx::query_as(FIND_COMMAND_SQL)
            .bind(command_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::from_sqlx)?;
        row.map(|(command_type, request_hash, outcome, tx, pos)| {
            let position = match tx.zip(pos) {
                Some((tx, pos)) => Some(Position::from_columns(tx, pos)?),
                None => None,
            };
            Ok(RecordedCommand {
                command_type,
                request_hash,
                outcome: outcome.0,
                position,
            })
        })
        .transpose()
    }
}
