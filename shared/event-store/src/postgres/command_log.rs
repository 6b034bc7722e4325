//! The command log on PostgreSQL: each command's events and its idempotency record in one
//! statement, many commands per statement when they touch distinct streams (group commit,
//! fed by [`super::writer`]).

use std::{collections::HashSet, sync::OnceLock};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row, postgres::PgRow};
use uuid::Uuid;

use super::{
    append::{EventColumns, appended_result, expected_as_i64, explain_failure},
    notifier::{Notifier, wake},
    sql::{APPEND_COMMANDS_SQL, RECORD_SQL},
};
use crate::{
    AggregateId, CommandAppend, CommandRecord, CommandWrite, Error, MultiAppendResult, Result,
};

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
pub(super) async fn record_only(pool: &PgPool, record: &CommandRecord) -> Result<CommandWrite> {
    let written = sqlx::query(RECORD_SQL)
        .bind(record.command_id)
        .bind(&record.command_type)
        .bind(&record.request_hash)
        .bind(sqlx::types::Json(&record.outcome))
        .bind(record.position.to_columns().0)
        .bind(record.position.to_columns().1)
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

/// Writes commands, already validated: those with events on distinct streams in one statement, then, one at a
/// time, any the shared statement could not take (a stream shared with an earlier command,
/// a failed version check, or a unique violation that failed the whole statement); a
/// command with no events only has its record written. Wakes subscribers once if any
/// event was written.
pub(super) async fn write_commands(
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
            None
        });
    }
    if results.iter().all(Option::is_some) {
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
