//! Group commit against a real PostgreSQL: commands written together each get their own
//! result, exactly as if written alone, and share a transaction only when that is safe.
//!
//! Uses `DATABASE_URL`, or a throwaway PostgreSQL (see `tests/postgres.rs`).

test_support::database_for_tests!();

use chrono::Utc;
use event_store::{
    AggregateId, CommandAppend, CommandLog, CommandRecord, CommandWrite, Error, ExpectedVersion,
    Position, PostgresEventStore, StreamAppend, Version, conformance,
};
use sqlx::PgPool;
use uuid::Uuid;

/// A command appending `count` events to `stream`, expecting it at `expected`.
fn command(stream: AggregateId, expected: ExpectedVersion, count: u64) -> CommandAppend {
    let first = expected.required().map_or(1, |v| v.get() + 1);
    CommandAppend {
        streams: vec![StreamAppend {
            expected_version: expected,
            events: (first..first + count)
                .map(|v| conformance::event(stream, v, "Happened"))
                .collect(),
        }],
        record: CommandRecord {
            command_id: Uuid::new_v4(),
            command_type: "Test".into(),
            request_hash: vec![1, 2, 3],
            outcome: serde_json::json!({ "ok": true }),
            recorded_at: Utc::now(),
            position: Position::START,
        },
    }
}

fn written(result: &Result<CommandWrite, Error>) -> Position {
    match result {
        Ok(CommandWrite::Appended(Some(appended))) => appended.position,
        other => panic!("expected a write, got {other:?}"),
    }
}

fn conflict(result: &Result<CommandWrite, Error>) -> (ExpectedVersion, Version) {
    match result {
        Err(Error::VersionConflict {
            expected, actual, ..
        }) => (*expected, *actual),
        other => panic!("expected a version conflict, got {other:?}"),
    }
}

async fn stream_len(pool: &PgPool, stream: AggregateId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = $1")
        .bind(stream.as_uuid())
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn recorded_position(pool: &PgPool, command: &CommandAppend) -> Option<Position> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT transaction_id, global_position FROM command_log WHERE command_id = $1",
    )
    .bind(command.record.command_id)
    .fetch_optional(pool)
    .await
    .unwrap();
    row.map(|(tx, pos)| Position::from_columns(tx, pos).unwrap())
}

/// One statement carries the commands it can; a failed version check and a command on a
/// stream already in the batch are each answered alone, and hold nobody back.
#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn commands_in_one_batch_succeed_or_fail_alone(pool: PgPool) {
    let store = PostgresEventStore::new(pool.clone());
    let (a, b, e) = (AggregateId::new(), AggregateId::new(), AggregateId::new());
    let setup = store
        .append_commands(&[command(b, ExpectedVersion::NoStream, 1)])
        .await;
    written(&setup[0]);

    let batch = [
        command(a, ExpectedVersion::NoStream, 2),
        // b is at version 1, not 5.
        command(b, ExpectedVersion::Exact(Version::new(5)), 1),
        // a again: written after the batch, by when the first command has created it.
        command(a, ExpectedVersion::NoStream, 1),
        command(e, ExpectedVersion::NoStream, 1),
        // Malformed: no events.
        CommandAppend {
            streams: vec![StreamAppend {
                expected_version: ExpectedVersion::Any,
                events: vec![],
            }],
            ..command(e, ExpectedVersion::Any, 0)
        },
        // Nothing to append: only its record is written.
        CommandAppend {
            streams: vec![],
            ..command(e, ExpectedVersion::Any, 0)
        },
    ];
    let results = store.append_commands(&batch).await;
    let first = written(&results[0]);
    assert_eq!(
        conflict(&results[1]),
        (ExpectedVersion::Exact(Version::new(5)), Version::new(1))
    );
    assert_eq!(
        conflict(&results[2]),
        (ExpectedVersion::NoStream, Version::new(2))
    );
    let fourth = written(&results[3]);
    assert!(
        matches!(results[4], Err(Error::InvalidAppend(_))),
        "{:?}",
        results[4]
    );
    assert!(
        matches!(results[5], Ok(CommandWrite::Appended(None))),
        "{:?}",
        results[5]
    );
    assert_eq!(
        first.transaction_id, fourth.transaction_id,
        "the two good commands share one transaction"
    );

    assert_eq!(stream_len(&pool, a).await, 2);
    assert_eq!(stream_len(&pool, b).await, 1);
    assert_eq!(stream_len(&pool, e).await, 1);
    assert_eq!(recorded_position(&pool, &batch[0]).await, Some(first));
    assert_eq!(recorded_position(&pool, &batch[3]).await, Some(fourth));
    for refused in [&batch[1], &batch[2], &batch[4]] {
        assert_eq!(recorded_position(&pool, refused).await, None);
    }
    assert_eq!(
        recorded_position(&pool, &batch[5]).await,
        Some(Position::START)
    );
}

/// A recorded command id or a stored event fails the shared statement as a whole; every
/// command then gets the answer it would have got alone.
#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn a_unique_violation_in_a_batch_hits_only_its_command(pool: PgPool) {
    let store = PostgresEventStore::new(pool.clone());
    let retried = command(AggregateId::new(), ExpectedVersion::NoStream, 1);
    written(&store.append_commands(std::slice::from_ref(&retried)).await[0]);
    // The same command id with different events: the id is recorded.
    let reused_id = CommandAppend {
        record: retried.record.clone(),
        ..command(AggregateId::new(), ExpectedVersion::NoStream, 1)
    };
    let fresh = command(AggregateId::new(), ExpectedVersion::NoStream, 1);

    let results = store
        .append_commands(&[fresh.clone(), retried.clone(), reused_id.clone()])
        .await;
    written(&results[0]);
    assert!(
        matches!(results[1], Ok(CommandWrite::AlreadyRecorded)),
        "{:?}",
        results[1]
    );
    assert!(
        matches!(results[2], Ok(CommandWrite::AlreadyRecorded)),
        "{:?}",
        results[2]
    );
    assert_eq!(
        stream_len(&pool, reused_id.streams[0].events[0].aggregate_id).await,
        0
    );
    assert!(recorded_position(&pool, &fresh).await.is_some());
}

/// Many concurrent callers through the writer: each command is stored once, with its own
/// record at its own position, and versions stay contiguous on a shared stream.
#[sqlx::test(migrator = "event_store::MIGRATOR")]
async fn concurrent_commands_are_each_written_once(pool: PgPool) {
    let store = PostgresEventStore::new(pool.clone());
    let commands: Vec<CommandAppend> = (0..200)
        .map(|_| command(AggregateId::new(), ExpectedVersion::NoStream, 1))
        .collect();
    let tasks: Vec<_> = commands
        .iter()
        .cloned()
        .map(|c| {
            let store = store.clone();
            tokio::spawn(async move { store.append_command(c).await })
        })
        .collect();
    let mut positions = Vec::new();
    for (task, command) in tasks.into_iter().zip(&commands) {
        let position = written(&task.await.unwrap());
        assert_eq!(recorded_position(&pool, command).await, Some(position));
        positions.push(position);
    }
    positions.sort();
    positions.dedup();
    assert_eq!(positions.len(), 200);
    let (events, transactions): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT transaction_id) FROM events")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(events, 200);
    eprintln!("200 concurrent commands committed in {transactions} transactions");

    // Racing on one stream: exactly one of the commands expecting a new stream wins.
    let hot = AggregateId::new();
    let racers: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append_command(command(hot, ExpectedVersion::NoStream, 1))
                    .await
            })
        })
        .collect();
    let mut wins = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(CommandWrite::Appended(Some(_))) => wins += 1,
            Err(Error::VersionConflict { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(stream_len(&pool, hot).await, 1);
}
