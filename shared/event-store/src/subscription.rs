//! Following the global log: "every event after checkpoint C, in order, forever".

use std::time::Duration;

use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::watch;

use crate::{EventStore, NOTIFY_CHANNEL, Position, RecordedEvent, Result};

/// Something that fires soon after events are appended. A wake-up may be lost (PostgreSQL
/// does not store notifications for a listener that was disconnected), so waiting always has
/// a timeout and the caller reads the log either way.
pub struct Wakeup {
    source: Source,
}

enum Source {
    /// LISTEN on [`NOTIFY_CHANNEL`]; `None` while the connection is being re-established.
    Postgres {
        pool: PgPool,
        listener: Option<PgListener>,
    },
    /// The in-memory store's append counter.
    Local(watch::Receiver<u64>),
}

impl Wakeup {
    pub(crate) async fn postgres(pool: PgPool) -> Self {
        let listener = listen(&pool).await;
        Self {
            source: Source::Postgres { pool, listener },
        }
    }

    pub(crate) fn local(receiver: watch::Receiver<u64>) -> Self {
        Self {
            source: Source::Local(receiver),
        }
    }

    /// Waits until events may have been appended, or `timeout` passes. Returns true when a
    /// wake-up arrived, false on timeout or when the wake-up source is down (the caller polls).
    pub async fn wait(&mut self, timeout: Duration) -> bool {
        match &mut self.source {
            Source::Local(receiver) => matches!(
                tokio::time::timeout(timeout, receiver.changed()).await,
                Ok(Ok(()))
            ),
            Source::Postgres { pool, listener } => {
                if listener.is_none() {
                    *listener = listen(pool).await;
                }
                let Some(active) = listener.as_mut() else {
                    tokio::time::sleep(timeout).await;
                    return false;
                };
                match tokio::time::timeout(timeout, active.recv()).await {
                    Ok(Ok(_)) => {
                        // Drain notifications that are already buffered: one read covers them all.
                        while active.next_buffered().is_some() {}
                        true
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, "lost the LISTEN connection; polling until it is back");
                        *listener = None;
                        tokio::time::sleep(timeout).await;
                        false
                    }
                    Err(_) => false,
                }
            }
        }
    }
}

async fn listen(pool: &PgPool) -> Option<PgListener> {
    let mut listener = match PgListener::connect_with(pool).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::debug!(error = %err, "cannot open a LISTEN connection yet");
            return None;
        }
    };
    match listener.listen(NOTIFY_CHANNEL).await {
        Ok(()) => Some(listener),
        Err(err) => {
            tracing::debug!(error = %err, "cannot LISTEN yet");
            None
        }
    }
}

/// Reads the global log forward from a checkpoint, waking on appends and polling as a
/// fallback.
///
/// The subscription tracks the position of the last event it returned. It does not store
/// checkpoints: the consumer stores the position of the last event it handled in the same
/// transaction as the handling, and starts a new subscription from there after a restart.
pub struct Subscription<S> {
    store: S,
    wakeup: Wakeup,
    position: Position,
    batch_size: usize,
    poll_interval: Duration,
    event_types: Option<Vec<String>>,
    /// The last read came back short of a full batch: the log had nothing more to give.
    caught_up: bool,
}

impl<S: EventStore> Subscription<S> {
    /// Starts listening, then reads from just after `after`. Listening starts before the
    /// first read, so nothing appended in between is missed.
    pub async fn start(store: S, after: Position) -> Result<Self> {
        let wakeup = store.wakeup().await?;
        Ok(Self {
            store,
            wakeup,
            position: after,
            batch_size: 500,
            poll_interval: Duration::from_millis(250),
            event_types: None,
            caught_up: false,
        })
    }

    /// The most events one batch holds (default 500).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// How long to wait for a wake-up before reading anyway (default 250 ms).
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Only events of these types are returned; the rest of the log is skipped over
    /// inside the store (see [`EventStore::read_all_of_types`]).
    pub fn with_event_types(mut self, event_types: &[&str]) -> Self {
        self.event_types = Some(event_types.iter().map(|t| (*t).to_owned()).collect());
        self
    }

    /// How far the log has been read: the last event returned, or past it when events of
    /// other types were skipped (or the starting checkpoint).
    pub fn position(&self) -> Position {
        self.position
    }

    /// Goes back (or forward) to `position`, for example after the consumer failed to store
    /// a batch and reloaded its checkpoint.
    pub fn seek(&mut self, position: Position) {
        self.position = position;
    }

    /// The next batch of events that is available now, possibly empty.
    pub async fn poll_batch(&mut self) -> Result<Vec<RecordedEvent>> {
        if let Some(types) = &self.event_types {
            let page = self
                .store
                .read_all_of_types(self.position, self.batch_size, types)
                .await?;
            self.position = page.scanned_to;
            self.caught_up = page.events.len() < self.batch_size;
            return Ok(page.events);
        }
        let batch = self.store.read_all(self.position, self.batch_size).await?;
        self.caught_up = batch.len() < self.batch_size;
        if let Some(last) = batch.last() {
            self.position = last.position;
        }
        Ok(batch)
    }

    /// The next non-empty batch, waiting for one as long as it takes. An error leaves the
    /// position where it was, so calling again retries the same read.
    ///
    /// After a read that came back short of a full batch the log had nothing more to give,
    /// so the next call waits for a wake-up (or the poll interval) before reading again
    /// rather than spending a read to learn that.
    pub async fn next_batch(&mut self) -> Result<Vec<RecordedEvent>> {
        loop {
            if self.caught_up {
                self.wakeup.wait(self.poll_interval).await;
            }
            let batch = self.poll_batch().await?;
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    /// Waits for the next wake-up or the poll interval; for consumers that call
    /// [`Subscription::poll_batch`] themselves.
    pub async fn wait(&mut self) -> bool {
        self.wakeup.wait(self.poll_interval).await
    }
}
