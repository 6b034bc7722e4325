//! Waking subscribers: one coalesced NOTIFY, sent from its own task after the commit,
//! never inside an append transaction (that would serialise every commit on PostgreSQL's
//! notify lock).

use std::sync::OnceLock;

use sqlx::PgPool;
use tokio::sync::mpsc;

/// The channel appends are announced on. Payloads are empty: a notification only says
/// "read the log", the log says what happened.
pub const NOTIFY_CHANNEL: &str = "event_store_appended";

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

/// Asks `notifier` (started on first use) for one NOTIFY.
pub(super) fn wake(pool: &PgPool, notifier: &OnceLock<Notifier>) {
    notifier
        .get_or_init(|| Notifier::spawn(pool.clone()))
        .notify();
}
