//! Appending events: the columns an append binds, the statement's result, and why an
//! append that wrote nothing wrote nothing.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row, postgres::PgRow};
use uuid::Uuid;

use super::sql::{APPEND_SQL, STORED_IDS_SQL, STREAM_VERSIONS_SQL, decode_event};
use crate::{
    AggregateId, Error, ExpectedVersion, MultiAppendResult, Position, RecordedEvent, Result,
    StreamAppend, Version, store::replayed,
};

/// Outcome of one append statement.
pub(super) enum Attempt {
    Written(MultiAppendResult),
    /// A version check failed or a concurrent writer took a version.
    Conflict,
    /// A stored event id collided.
    StoredEventId,
}

/// The event columns of an append, one array per column, in the order the append
/// statements bind them.
pub(super) struct EventColumns<'a> {
    pub(super) event_ids: Vec<Uuid>,
    pub(super) aggregate_ids: Vec<Uuid>,
    pub(super) aggregate_types: Vec<&'a str>,
    pub(super) event_types: Vec<&'a str>,
    /// JSON text: the columns are `json`, which stores the text as written.
    pub(super) payloads: Vec<&'a str>,
    pub(super) metadata: Vec<String>,
    pub(super) occurred: Vec<DateTime<Utc>>,
}

impl<'a> EventColumns<'a> {
    pub(super) fn of(streams: impl Iterator<Item = &'a StreamAppend>) -> sqlx::Result<Self> {
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

    pub(super) fn bind<'q>(
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
pub(super) fn expected_as_i64(stream: &StreamAppend) -> i64 {
    stream
        .expected_version
        .required()
        .map_or(-1, Version::as_i64)
}

/// Reads the rows an append returned (global position, transaction id, aggregate id,
/// version) into each stream's new version and the position of the last event.
pub(super) fn appended_result<'a>(
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
        position = position.max(Position::from_columns(transaction, global)?);
        if let Some(slot) = versions.iter_mut().find(|(sid, _)| *sid == id) {
            slot.1 = slot.1.max(version);
        }
    }
    Ok(MultiAppendResult {
        streams: versions,
        position,
    })
}

pub(super) async fn try_append(
    conn: &mut PgConnection,
    streams: &[StreamAppend],
) -> Result<Attempt> {
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

/// Works out why an append wrote nothing: an idempotent retry (every event id is stored
/// already), a partly stored batch, or a version conflict.
///
/// Runs on the connection that tried the append, so it needs no second connection (a
/// second one could deadlock a busy pool).
pub(super) async fn explain_failure(
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
