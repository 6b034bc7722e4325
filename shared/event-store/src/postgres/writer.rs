//! Group commit: concurrent commands share one append statement and one WAL flush.
//!
//! Callers hand their command to a channel and wait for its own result. A writer task
//! takes every command waiting (up to [`MAX_BATCH`]) and writes them together; commands
//! arriving meanwhile wait for the next batch. With one caller a batch is one command and
//! nothing waits; with many, a commit carries many commands, as EventStoreDB's single
//! writer does. Several writers can take turns at the channel, but on the two cores this
//! was measured on, one writer with bigger batches beat two (64 clients: 7,949 against
//! 6,992 commands/s in the same session).

use std::sync::{Arc, OnceLock};

use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use super::{command_log::write_commands, notifier::Notifier};
use crate::{CommandAppend, CommandWrite, Error, Result};

/// The most commands one statement carries.
pub const MAX_BATCH: usize = 256;

/// How many batches may be written at once by default: one, so that commands arriving
/// during a write all share the next one.
pub const DEFAULT_WRITERS: usize = 1;

struct Request {
    command: CommandAppend,
    reply: oneshot::Sender<Result<CommandWrite>>,
}

/// The handle callers write through; the writer tasks end when every clone is dropped.
#[derive(Debug, Clone)]
pub(crate) struct CommandWriter {
    requests: mpsc::Sender<Request>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("command_id", &self.command.record.command_id)
            .finish()
    }
}

impl CommandWriter {
    /// Starts `writers` writer tasks (at least one) on the current tokio runtime.
    pub(crate) fn spawn(pool: PgPool, notifier: Arc<OnceLock<Notifier>>, writers: usize) -> Self {
        let (requests, receiver) = mpsc::channel::<Request>(MAX_BATCH * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..writers.max(1) {
            let (pool, notifier, receiver) = (pool.clone(), notifier.clone(), receiver.clone());
            tokio::spawn(async move {
                while let Some(batch) = next_batch(&receiver).await {
                    let (commands, replies): (Vec<_>, Vec<_>) =
                        batch.into_iter().map(|r| (r.command, r.reply)).unzip();
                    let results = write_commands(&pool, &notifier, &commands).await;
                    for (reply, result) in replies.into_iter().zip(results) {
                        // The caller may have gone (a cancelled request); the write stands.
                        let _ = reply.send(result);
                    }
                }
            });
        }
        Self { requests }
    }

    /// False once the writer tasks are gone.
    pub(crate) fn is_running(&self) -> bool {
        !self.requests.is_closed()
    }

    /// Writes one command in the next batch and returns its own result.
    pub(crate) async fn write(&self, command: CommandAppend) -> Result<CommandWrite> {
        let (reply, result) = oneshot::channel();
        let stopped = || Error::Unavailable(sqlx::Error::PoolClosed);
        self.requests
            .send(Request { command, reply })
            .await
            .map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

/// Waits for a command, then takes every other one already waiting, up to [`MAX_BATCH`].
/// `None` when every handle is gone.
async fn next_batch(receiver: &Mutex<mpsc::Receiver<Request>>) -> Option<Vec<Request>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(request) => batch.push(request),
            Err(_) => break,
        }
    }
    Some(batch)
}
