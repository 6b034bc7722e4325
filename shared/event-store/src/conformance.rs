//! The behaviour every [`EventStore`] must have, as functions that panic on a deviation.
//!
//! Both stores run every case: the in-memory store in this crate's unit tests, PostgreSQL in
//! `tests/postgres.rs` (one fresh database per case). A new store implementation should run
//! them all too.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::json;

use crate::{
    AggregateId, AppendOptions, Error, EventEnvelope, EventId, EventQuery, EventStore,
    ExpectedVersion, InvalidAppend, Payload, Position, Snapshot, StreamAppend, Subscription,
    Version,
};

/// True when some item repeats.
fn has_duplicates<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> bool {
    let mut seen = std::collections::HashSet::new();
    items.into_iter().any(|item| !seen.insert(item))
}

/// An event for `stream` at `version`, with a recognisable payload.
pub fn event(stream: AggregateId, version: u64, event_type: &str) -> EventEnvelope {
    EventEnvelope::builder()
        .aggregate_id(stream)
        .aggregate_type("Thing")
        .event_type(event_type)
        .version(Version::new(version))
        .timestamp(
            Utc.timestamp_opt(1_700_000_000 + Version::new(version).as_i64(), 0)
                .unwrap(),
        )
        .payload_raw(json!({ "n": version }))
        .correlation_id(uuid::Uuid::from_u128(7))
        .build()
}

fn events(stream: AggregateId, versions: std::ops::RangeInclusive<u64>) -> Vec<EventEnvelope> {
    versions
        .map(|v| event(stream, v, "ThingHappened"))
        .collect()
}

/// Every stored event, committed or not yet below the read horizon.
async fn count_all<S: EventStore>(store: &S) -> usize {
    store.query(&EventQuery::new()).await.expect("query").len()
}

/// Reads the log from `after` until `count` events have come back. The PostgreSQL store only
/// hands out events below the oldest running transaction of the whole cluster, so a
/// transaction elsewhere (a test running in parallel, say) may hold events back for a moment.
async fn read_all_eventually<S: EventStore>(
    store: &S,
    after: Position,
    count: usize,
    batch: usize,
) -> Vec<crate::RecordedEvent> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut read = Vec::new();
    let mut after = after;
    while read.len() < count {
        let next = store.read_all(after, batch).await.expect("read_all");
        assert!(next.len() <= batch, "read_all returned more than its limit");
        match next.last() {
            Some(last) => after = last.position,
            None => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the log never returned {count} events"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        read.extend(next);
    }
    read
}

/// Appends then reads one stream back, whole and from a version.
pub async fn appends_and_reads_a_stream<S: EventStore>(store: &S) {
    let id = AggregateId::new();
    let mut written = events(id, 1..=3);
    // A payload comes back as the text it was written as: spacing, key order, number forms
    // and escapes included.
    written[1].payload =
        Payload::parse(r#"{ "n" : 2,"b":[1, 2.50, 1e2], "a": "\u00e9\n" }"#).expect("valid JSON");
    let result = store
        .append(written.clone(), AppendOptions::expect_new())
        .await
        .expect("append");
    assert_eq!(result.stream_version, Version::new(3));

    let read = store
        .get_events_for_aggregate(id, None)
        .await
        .expect("read");
    let envelopes: Vec<EventEnvelope> = read.iter().map(|e| e.envelope.clone()).collect();
    assert_eq!(
        envelopes, written,
        "events read back differ from those written"
    );
    assert_eq!(read.last().unwrap().position, result.position);

    let tail = store
        .get_events_for_aggregate(id, Some(Version::new(2)))
        .await
        .expect("read from");
    assert_eq!(
        tail.iter().map(|e| e.version.get()).collect::<Vec<_>>(),
        vec![2, 3]
    );

    let other = store
        .get_events_for_aggregate(AggregateId::new(), None)
        .await
        .expect("read");
    assert!(other.is_empty());
}

/// Exact, no-stream and any expectations.
pub async fn checks_expected_versions<S: EventStore>(store: &S) {
    let id = AggregateId::new();
    store
        .append(events(id, 1..=2), AppendOptions::expect_new())
        .await
        .expect("first append");

    match store
        .append(events(id, 1..=1), AppendOptions::expect_new())
        .await
    {
        Err(Error::VersionConflict {
            aggregate_id,
            expected,
            actual,
        }) => {
            assert_eq!(aggregate_id, id);
            assert_eq!(expected, ExpectedVersion::NoStream);
            assert_eq!(actual, Version::new(2));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    match store
        .append(
            events(id, 2..=2),
            AppendOptions::expect_version(Version::new(1)),
        )
        .await
    {
        Err(Error::VersionConflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, ExpectedVersion::Exact(Version::new(1)));
            assert_eq!(actual, Version::new(2));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    // Expecting a version the stream has not reached yet is a conflict too, not a gap.
    match store
        .append(
            events(id, 6..=6),
            AppendOptions::expect_version(Version::new(5)),
        )
        .await
    {
        Err(Error::VersionConflict { actual, .. }) => assert_eq!(actual, Version::new(2)),
        other => panic!("expected a version conflict, got {other:?}"),
    }

    let result = store
        .append(
            events(id, 3..=3),
            AppendOptions::expect_version(Version::new(2)),
        )
        .await
        .expect("exact append");
    assert_eq!(result.stream_version, Version::new(3));

    // With `Any` the store numbers the events after the current version.
    let result = store
        .append(events(id, 1..=2), AppendOptions::any())
        .await
        .expect("any append");
    assert_eq!(result.stream_version, Version::new(5));
    let versions: Vec<u64> = store
        .get_events_for_aggregate(id, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version.get())
        .collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
}

/// A multi-stream append writes every stream or none.
pub async fn appends_to_several_streams_atomically<S: EventStore>(store: &S) {
    let (a, b) = (AggregateId::new(), AggregateId::new());
    store
        .append(events(a, 1..=1), AppendOptions::expect_new())
        .await
        .unwrap();
    let before = count_all(store).await;

    let stale = vec![
        StreamAppend {
            expected_version: ExpectedVersion::NoStream,
            events: events(b, 1..=2),
        },
        StreamAppend {
            expected_version: ExpectedVersion::NoStream,
            events: events(a, 1..=1),
        },
    ];
    match store.append_streams(stale).await {
        Err(Error::VersionConflict {
            aggregate_id,
            actual,
            ..
        }) => {
            assert_eq!(aggregate_id, a);
            assert_eq!(actual, Version::new(1));
        }
        other => panic!("expected a version conflict, got {other:?}"),
    }
    assert_eq!(
        count_all(store).await,
        before,
        "a refused multi-stream append wrote something"
    );

    let fresh = vec![
        StreamAppend {
            expected_version: ExpectedVersion::NoStream,
            events: events(b, 1..=2),
        },
        StreamAppend {
            expected_version: ExpectedVersion::Exact(Version::new(1)),
            events: events(a, 2..=2),
        },
    ];
    let result = store.append_streams(fresh).await.expect("multi append");
    assert_eq!(
        result.streams,
        vec![(b, Version::new(2)), (a, Version::new(2))]
    );
    let all = read_all_eventually(store, Position::START, before + 3, 100).await;
    let written: Vec<_> = all.iter().skip(before).collect();
    assert_eq!(written.len(), 3);
    assert!(
        written
            .iter()
            .all(|e| e.position.transaction_id == result.position.transaction_id),
        "a multi-stream append must be one transaction"
    );
    assert_eq!(written.last().unwrap().position, result.position);
}

/// Appending event ids that are stored already does not store them twice.
pub async fn stores_each_event_id_once<S: EventStore>(store: &S) {
    let id = AggregateId::new();
    let batch = events(id, 1..=2);
    let first = store
        .append(batch.clone(), AppendOptions::expect_new())
        .await
        .unwrap();
    let again = store
        .append(batch.clone(), AppendOptions::expect_new())
        .await
        .expect("retry of a stored batch");
    assert_eq!(
        first, again,
        "a retried batch must report the original result"
    );
    assert_eq!(count_all(store).await, 2);

    // One stored id and one new: refused whole.
    let mut mixed = events(id, 3..=4);
    mixed[0].event_id = batch[1].event_id;
    match store
        .append(mixed, AppendOptions::expect_version(Version::new(2)))
        .await
    {
        Err(Error::DuplicateEventId(dup)) => assert_eq!(dup, batch[1].event_id),
        other => panic!("expected a duplicate event id, got {other:?}"),
    }
    assert_eq!(count_all(store).await, 2);
}

/// Malformed appends get typed errors and write nothing.
pub async fn refuses_malformed_appends<S: EventStore>(store: &S) {
    let id = AggregateId::new();
    let with = |f: &dyn Fn(&mut Vec<EventEnvelope>)| {
        let mut batch = events(id, 1..=2);
        f(&mut batch);
        batch
    };
    type Case = (&'static str, Vec<EventEnvelope>, fn(&InvalidAppend) -> bool);
    let cases: Vec<Case> = vec![
        ("empty batch", vec![], |e| {
            matches!(e, InvalidAppend::EmptyBatch)
        }),
        (
            "empty event type",
            with(&|b| b[1].event_type = " ".into()),
            |e| matches!(e, InvalidAppend::EmptyEventType(_)),
        ),
        (
            "empty aggregate type",
            with(&|b| b[0].aggregate_type = String::new()),
            |e| matches!(e, InvalidAppend::EmptyAggregateType(_)),
        ),
        (
            "payload not an object",
            with(&|b| b[0].payload = json!([1, 2]).into()),
            |e| matches!(e, InvalidAppend::PayloadNotObject(_)),
        ),
        (
            "non-contiguous versions",
            with(&|b| b[1].version = Version::new(3)),
            |e| matches!(e, InvalidAppend::NonContiguousVersions { .. }),
        ),
        (
            "first version does not follow the expected one",
            with(&|b| {
                b[0].version = Version::new(2);
                b[1].version = Version::new(3);
            }),
            |e| matches!(e, InvalidAppend::VersionDoesNotFollowExpected { .. }),
        ),
        (
            "events of two streams",
            with(&|b| b[1].aggregate_id = AggregateId::new()),
            |e| matches!(e, InvalidAppend::MixedStreams(_)),
        ),
        (
            "one event id twice",
            with(&|b| b[1].event_id = b[0].event_id),
            |e| matches!(e, InvalidAppend::RepeatedEventId(_)),
        ),
    ];
    for (name, batch, expected) in cases {
        match store.append(batch, AppendOptions::expect_new()).await {
            Err(Error::InvalidAppend(err)) => {
                assert!(expected(&err), "{name}: wrong error {err:?}")
            }
            other => panic!("{name}: expected an invalid-append error, got {other:?}"),
        }
    }
    match store.append_streams(vec![]).await {
        Err(Error::InvalidAppend(InvalidAppend::EmptyBatch)) => {}
        other => panic!("empty multi-stream append: got {other:?}"),
    }
    let twice = vec![
        StreamAppend {
            expected_version: ExpectedVersion::NoStream,
            events: events(id, 1..=1),
        },
        StreamAppend {
            expected_version: ExpectedVersion::Exact(Version::new(1)),
            events: events(id, 2..=2),
        },
    ];
    match store.append_streams(twice).await {
        Err(Error::InvalidAppend(InvalidAppend::MixedStreams(_))) => {}
        other => panic!("one stream twice: got {other:?}"),
    }
    assert_eq!(
        count_all(store).await,
        0,
        "a refused append wrote something"
    );
}

/// Each query filter returns exactly the matching events.
pub async fn filters_queries<S: EventStore>(store: &S) {
    let (a, b) = (AggregateId::new(), AggregateId::new());
    let mut batch_a = vec![
        event(a, 1, "Created"),
        event(a, 2, "Renamed"),
        event(a, 3, "Renamed"),
        event(a, 4, "Deleted"),
    ];
    batch_a[3].timestamp = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
    let mut batch_b = vec![event(b, 1, "Created"), event(b, 2, "Renamed")];
    for e in &mut batch_b {
        e.aggregate_type = "Other".into();
    }
    store
        .append(batch_a, AppendOptions::expect_new())
        .await
        .unwrap();
    store
        .append(batch_b, AppendOptions::expect_new())
        .await
        .unwrap();

    let summary = |events: Vec<crate::RecordedEvent>| -> Vec<(AggregateId, u64)> {
        events
            .iter()
            .map(|e| (e.aggregate_id, e.version.get()))
            .collect()
    };
    let run = |q: EventQuery| async move { summary(store.query(&q).await.expect("query")) };

    assert_eq!(run(EventQuery::new()).await.len(), 6);
    assert_eq!(
        run(EventQuery::new().aggregate_id(b)).await,
        vec![(b, 1), (b, 2)]
    );
    assert_eq!(
        run(EventQuery::new().aggregate_type("Other")).await,
        vec![(b, 1), (b, 2)]
    );
    assert_eq!(
        run(EventQuery::new().event_types(["Renamed"])).await,
        vec![(a, 2), (a, 3), (b, 2)]
    );
    assert_eq!(
        run(EventQuery::new().event_types(["Created", "Deleted"])).await,
        vec![(a, 1), (a, 4), (b, 1)]
    );
    assert_eq!(
        run(EventQuery::new()
            .aggregate_id(a)
            .version_range(Version::new(2), Version::new(3)))
        .await,
        vec![(a, 2), (a, 3)]
    );
    let from = Utc.timestamp_opt(1_700_000_002, 0).unwrap();
    let to = Utc.timestamp_opt(1_700_000_004, 0).unwrap();
    assert_eq!(
        run(EventQuery::new().time_range(from, to)).await,
        vec![(a, 2), (a, 3), (b, 2)],
        "time range is from inclusive, to exclusive"
    );
    assert_eq!(run(EventQuery::new().limit(2)).await, vec![(a, 1), (a, 2)]);
    assert_eq!(
        run(EventQuery::new()
            .aggregate_type("Thing")
            .event_types(["Renamed"])
            .limit(1))
        .await,
        vec![(a, 2)]
    );
    assert!(
        run(EventQuery::new().event_types(["Nothing"]))
            .await
            .is_empty()
    );

    let by_type = store.get_events_by_type("Created").await.expect("by type");
    assert_eq!(summary(by_type), vec![(a, 1), (b, 1)]);
}

/// The whole log, read in batches, gives every event once, in order.
pub async fn reads_the_log_in_batches<S: EventStore>(store: &S) {
    assert_eq!(store.head().await.unwrap(), None);
    let mut written = Vec::new();
    for _ in 0..4 {
        let id = AggregateId::new();
        let batch = events(id, 1..=3);
        written.extend(batch.iter().map(|e| e.event_id));
        store
            .append(batch, AppendOptions::expect_new())
            .await
            .unwrap();
    }
    let all = read_all_eventually(store, Position::START, written.len(), 5).await;
    let mut after = Position::START;
    for e in &all {
        assert!(e.position > after, "positions must increase");
        after = e.position;
    }
    let read: Vec<EventId> = all.iter().map(|e| e.event_id).collect();
    assert!(store.read_all(after, 5).await.unwrap().is_empty());
    assert_eq!(read, written);
    assert_eq!(store.head().await.unwrap(), Some(after));
}

/// A filtered read returns exactly the events of the asked types, in log order, and its
/// scan position lets the reader go on without missing or repeating one.
pub async fn reads_the_log_by_type<S: EventStore>(store: &S) {
    let types = ["Wanted".to_owned(), "AlsoWanted".to_owned()];
    let mut wanted = Vec::new();
    for n in 0..6u64 {
        let id = AggregateId::new();
        let batch: Vec<EventEnvelope> = (1..=3)
            .map(|v| {
                let event_type = match (n + v) % 3 {
                    0 => "Wanted",
                    1 => "Other",
                    _ => "AlsoWanted",
                };
                event(id, v, event_type)
            })
            .collect();
        wanted.extend(
            batch
                .iter()
                .filter(|e| e.event_type != "Other")
                .map(|e| e.event_id),
        );
        store
            .append(batch, AppendOptions::expect_new())
            .await
            .unwrap();
    }
    // The whole log must be readable first (see `read_all_eventually`).
    read_all_eventually(store, Position::START, 18, 100).await;

    let mut read = Vec::new();
    let mut after = Position::START;
    loop {
        let page = store.read_all_of_types(after, 4, &types).await.unwrap();
        assert!(page.events.len() <= 4, "more than the limit");
        assert!(page.scanned_to >= after, "the scan went backwards");
        if let Some(last) = page.events.last() {
            assert!(page.scanned_to >= last.position);
        }
        for e in &page.events {
            assert!(e.position > after, "positions must increase");
            assert!(
                types.contains(&e.event_type),
                "{} is not wanted",
                e.event_type
            );
        }
        let done = page.events.is_empty();
        read.extend(page.events.iter().map(|e| e.event_id));
        after = page.scanned_to;
        if done {
            break;
        }
    }
    assert_eq!(read, wanted);

    // Past the scan position, a new wanted event is found and an unwanted one is not.
    let id = AggregateId::new();
    store
        .append(
            vec![event(id, 1, "Other"), event(id, 2, "Wanted")],
            AppendOptions::expect_new(),
        )
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = store.read_all_of_types(after, 4, &types).await.unwrap();
        if !page.events.is_empty() {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new event never came"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].event_type, "Wanted");
    assert_eq!(page.events[0].aggregate_id, id);
}

/// Snapshots round-trip; older versions and other schema versions are ignored.
pub async fn keeps_the_latest_snapshot<S: EventStore>(store: &S) {
    let id = AggregateId::new();
    let snapshot = |version: u64, schema_version: u32| Snapshot {
        aggregate_id: id,
        aggregate_type: "Thing".into(),
        version: Version::new(version),
        schema_version,
        state: json!({ "at": version }),
        taken_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
    };
    assert_eq!(store.load_snapshot(id, 1).await.unwrap(), None);
    store.save_snapshot(snapshot(5, 1)).await.unwrap();
    assert_eq!(
        store.load_snapshot(id, 1).await.unwrap(),
        Some(snapshot(5, 1))
    );

    store.save_snapshot(snapshot(3, 1)).await.unwrap();
    assert_eq!(
        store.load_snapshot(id, 1).await.unwrap(),
        Some(snapshot(5, 1)),
        "an older snapshot must not replace a newer one"
    );
    store.save_snapshot(snapshot(8, 1)).await.unwrap();
    assert_eq!(
        store.load_snapshot(id, 1).await.unwrap(),
        Some(snapshot(8, 1))
    );

    assert_eq!(
        store.load_snapshot(id, 2).await.unwrap(),
        None,
        "a snapshot of another schema version must be ignored"
    );
    store.save_snapshot(snapshot(2, 2)).await.unwrap();
    assert_eq!(
        store.load_snapshot(id, 2).await.unwrap(),
        Some(snapshot(2, 2))
    );
    assert_eq!(store.load_snapshot(id, 1).await.unwrap(), None);
}

/// Fifty writers at the same expected version: exactly one wins, the rest get the typed
/// conflict, and the stream has no duplicate or missing versions.
pub async fn lets_one_of_many_concurrent_writers_win<S: EventStore + Clone + 'static>(store: &S) {
    let id = AggregateId::new();
    store
        .append(events(id, 1..=1), AppendOptions::expect_new())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(
                    events(id, 2..=3),
                    AppendOptions::expect_version(Version::new(1)),
                )
                .await
        }));
    }
    let (mut won, mut conflicts) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(result) => {
                won += 1;
                assert_eq!(result.stream_version, Version::new(3));
            }
            Err(Error::VersionConflict {
                expected, actual, ..
            }) => {
                conflicts += 1;
                assert_eq!(expected, ExpectedVersion::Exact(Version::new(1)));
                assert!(actual >= Version::new(1));
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!((won, conflicts), (1, 49));
    let versions: Vec<u64> = store
        .get_events_for_aggregate(id, None)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version.get())
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
}

/// A subscriber that was not listening while events were written still gets them from its
/// checkpoint, is woken for new ones, and resumes from a stored checkpoint without
/// duplicates.
pub async fn subscription_catches_up_and_resumes<S: EventStore + Clone + 'static>(store: &S) {
    let (a, b, c) = (AggregateId::new(), AggregateId::new(), AggregateId::new());
    // Written before anyone listens: no wake-up will ever come for these.
    store
        .append(events(a, 1..=3), AppendOptions::expect_new())
        .await
        .unwrap();

    let mut subscription = Subscription::start(store.clone(), Position::START)
        .await
        .unwrap()
        .with_batch_size(2)
        .with_poll_interval(Duration::from_millis(200));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.extend(
            subscription
                .next_batch()
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event_id),
        );
    }
    let checkpoint = subscription.position();

    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            store
                .append(events(b, 1..=2), AppendOptions::expect_new())
                .await
                .unwrap();
        })
    };
    let woken = tokio::time::timeout(Duration::from_secs(10), subscription.next_batch())
        .await
        .expect("the append must wake the subscriber")
        .unwrap();
    writer.await.unwrap();
    assert_eq!(woken.len(), 2);

    // "Restart": a new subscription from the checkpoint stored after the first three.
    drop(subscription);
    store
        .append(events(c, 1..=1), AppendOptions::expect_new())
        .await
        .unwrap();
    let mut resumed = Subscription::start(store.clone(), checkpoint)
        .await
        .unwrap();
    let mut after_restart = Vec::new();
    while after_restart.len() < 3 {
        after_restart.extend(
            resumed
                .next_batch()
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.event_id),
        );
    }
    assert!(resumed.poll_batch().await.unwrap().is_empty());
    let expected: Vec<EventId> = woken.iter().map(|e| e.event_id).collect();
    assert_eq!(&after_restart[..2], &expected[..]);
    assert_eq!(
        after_restart[2],
        store.get_events_for_aggregate(c, None).await.unwrap()[0].event_id
    );
    seen.extend(after_restart);
    assert!(
        !has_duplicates(seen.iter()),
        "a resumed subscription delivered an event twice"
    );
    assert_eq!(seen.len(), 6);
}

/// An append fires the wake-up a waiting subscriber listens to.
pub async fn wakes_listeners_on_append<S: EventStore + Clone + 'static>(store: &S) {
    let mut wakeup = store.wakeup().await.unwrap();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            store
                .append(
                    events(AggregateId::new(), 1..=1),
                    AppendOptions::expect_new(),
                )
                .await
                .unwrap();
        })
    };
    assert!(
        wakeup.wait(Duration::from_secs(20)).await,
        "no wake-up arrived after an append"
    );
    writer.await.unwrap();
}

fn record(command_id: uuid::Uuid, position: Position) -> crate::CommandRecord {
    crate::CommandRecord {
        command_id,
        command_type: "DoThing".into(),
        request_hash: vec![1, 2, 3],
        outcome: json!({ "done": true }),
        recorded_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
        position,
    }
}

/// The command log: a command's events and its record are stored together or not at all,
/// each command id once; a record alone keeps the position it was given.
pub async fn records_each_command_once<S: EventStore + crate::CommandLog>(store: &S) {
    use crate::{CommandAppend, CommandWrite};
    let id = AggregateId::new();
    let first = uuid::Uuid::new_v4();
    let append = |command_id, expected, events| CommandAppend {
        streams: vec![StreamAppend {
            expected_version: expected,
            events,
        }],
        record: record(command_id, Position::START),
    };
    let first_events = events(id, 1..=2);
    let written = store
        .append_command(append(
            first,
            ExpectedVersion::NoStream,
            first_events.clone(),
        ))
        .await
        .expect("first command");
    let CommandWrite::Appended(Some(result)) = written else {
        panic!("expected events appended, got {written:?}");
    };
    assert_eq!(result.streams, vec![(id, Version::new(2))]);
    let found = store
        .find_command(first)
        .await
        .expect("find")
        .expect("recorded");
    assert_eq!(found.command_type, "DoThing");
    assert_eq!(found.request_hash, vec![1, 2, 3]);
    assert_eq!(found.outcome, json!({ "done": true }));
    assert_eq!(
        found.position,
        Some(result.position),
        "the last event's position"
    );

    // The same command again, as a retry sends it (the same event ids): nothing more is
    // written.
    assert_eq!(
        store
            .append_command(append(first, ExpectedVersion::NoStream, first_events))
            .await
            .expect("retry"),
        CommandWrite::AlreadyRecorded
    );
    // The same id with other events: the id decides.
    assert_eq!(
        store
            .append_command(append(
                first,
                ExpectedVersion::Exact(Version::new(2)),
                events(id, 3..=3)
            ))
            .await
            .expect("reused id"),
        CommandWrite::AlreadyRecorded
    );
    assert_eq!(
        store
            .get_events_for_aggregate(id, None)
            .await
            .unwrap()
            .len(),
        2
    );

    // A stale expected version writes neither the events nor the record.
    let stale = uuid::Uuid::new_v4();
    let err = store
        .append_command(append(
            stale,
            ExpectedVersion::Exact(Version::new(1)),
            events(id, 2..=2),
        ))
        .await
        .expect_err("stale version");
    assert!(matches!(err, Error::VersionConflict { .. }), "{err:?}");
    assert_eq!(store.find_command(stale).await.unwrap(), None);

    // A record alone (a command that changed nothing, or a void) keeps its given position.
    let alone = uuid::Uuid::new_v4();
    let at = result.position;
    assert_eq!(
        store
            .append_command(CommandAppend {
                streams: vec![],
                record: record(alone, at),
            })
            .await
            .expect("record only"),
        CommandWrite::Appended(None)
    );
    assert_eq!(
        store.find_command(alone).await.unwrap().unwrap().position,
        Some(at)
    );
    assert_eq!(
        store
            .append_command(CommandAppend {
                streams: vec![],
                record: record(alone, at),
            })
            .await
            .expect("record only, again"),
        CommandWrite::AlreadyRecorded
    );
    assert_eq!(
        store.find_command(uuid::Uuid::new_v4()).await.unwrap(),
        None
    );
}
