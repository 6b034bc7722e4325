//! Requests that share one database statement: one statement is in flight at a time, a
//! request asked while none is leaves at once, and those asked meanwhile (up to a limit a
//! statement; more wait for the next) leave together as soon as it returns.
//!
//! It waits for nothing, so a lone request pays no delay, and under load the statements
//! grow by themselves to what arrives during one round trip. On this machine most of a
//! small statement's cost is the round trip, so sharing it is what makes one statement
//! per request affordable. query-service's order reads and saga-service's saves and
//! checks of the sagas it leases use it; what each statement does and how its rows become answers stays
//! with them.
//!
//! A request whose caller has stopped waiting (its deadline passed, or its task ended)
//! before its statement left is not sent. A statement that stalls holds every request in
//! it, and those queued behind it, until it returns: callers bound their wait with their
//! own deadline or the database's `statement_timeout`.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// One request waiting for its statement, and where its answer goes.
#[derive(Debug)]
pub struct Ask<Req, Ans> {
    /// What was asked.
    pub request: Req,
    reply: oneshot::Sender<Ans>,
}

impl<Req, Ans> Ask<Req, Ans> {
    /// Sends the answer; a caller that has stopped waiting is not an error.
    pub fn answer(self, answer: Ans) {
        let _ = self.reply.send(answer);
    }

    /// The request and a handle to answer it with, for a statement built from the
    /// requests before the answers are known.
    pub fn into_parts(self) -> (Req, Reply<Ans>) {
        (self.request, Reply(self.reply))
    }
}

/// Where one request's answer goes.
#[derive(Debug)]
pub struct Reply<Ans>(oneshot::Sender<Ans>);

impl<Ans> Reply<Ans> {
    /// Sends the answer; a caller that has stopped waiting is not an error.
    pub fn send(self, answer: Ans) {
        let _ = self.0.send(answer);
    }
}

/// No answer will come: the batching task has ended (the service is stopping), or the
/// statement let the request go unanswered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the batching task has stopped")]
pub struct Stopped;

/// A handle on a batching task; the task ends when the last handle is dropped.
#[derive(Debug)]
pub struct Batcher<Req, Ans> {
    asks: mpsc::UnboundedSender<Ask<Req, Ans>>,
}

impl<Req, Ans> Clone for Batcher<Req, Ans> {
    fn clone(&self) -> Self {
        Self {
            asks: self.asks.clone(),
        }
    }
}

impl<Req: Send + 'static, Ans: Send + 'static> Batcher<Req, Ans> {
    /// Starts the task. `statement` runs once per batch of at most `max_batch` requests
    /// (at least 1), never two at once, and must answer every request it is given:
    /// a request dropped unanswered reaches its caller as [`Stopped`].
    pub fn start<F, Fut>(max_batch: usize, mut statement: F) -> Self
    where
        F: FnMut(Vec<Ask<Req, Ans>>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let max_batch = max_batch.max(1);
        let (asks, mut rx) = mpsc::unbounded_channel::<Ask<Req, Ans>>();
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            while rx.recv_many(&mut batch, max_batch).await > 0 {
                batch.retain(|ask| !ask.reply.is_closed());
                if !batch.is_empty() {
                    statement(std::mem::take(&mut batch)).await;
                }
            }
        });
        Self { asks }
    }

    /// Asks `request` and waits for its answer.
    pub async fn ask(&self, request: Req) -> Result<Ans, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.asks
            .send(Ask { request, reply })
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use tokio::sync::Notify;

    use super::*;

    /// The requests of each statement, in the order the statements ran.
    type Seen = Arc<Mutex<Vec<Vec<u32>>>>;

    /// A statement that records each batch it is given and answers each request with its
    /// double; the first statement waits for `hold` to be notified before it answers.
    fn recording(max_batch: usize, hold: Arc<Notify>) -> (Batcher<u32, u32>, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let batcher = Batcher::start(max_batch, move |batch: Vec<Ask<u32, u32>>| {
            let log = log.clone();
            let hold = hold.clone();
            async move {
                let requests: Vec<u32> = batch.iter().map(|ask| ask.request).collect();
                let first = log.lock().unwrap().is_empty();
                log.lock().unwrap().push(requests);
                if first {
                    hold.notified().await;
                }
                for ask in batch {
                    let double = ask.request * 2;
                    ask.answer(double);
                }
            }
        });
        (batcher, seen)
    }

    /// Asks `n` from a task of its own.
    fn spawn_ask(
        batcher: &Batcher<u32, u32>,
        n: u32,
    ) -> tokio::task::JoinHandle<Result<u32, Stopped>> {
        let batcher = batcher.clone();
        tokio::spawn(async move { batcher.ask(n).await })
    }

    /// Asks 1, and waits until the first statement holds it.
    async fn first_statement_held(
        batcher: &Batcher<u32, u32>,
        seen: &Seen,
    ) -> tokio::task::JoinHandle<Result<u32, Stopped>> {
        let first = spawn_ask(batcher, 1);
        until(|| seen.lock().unwrap().len() == 1).await;
        first
    }

    async fn until<F: Fn() -> bool>(done: F) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !done() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the condition held within 5 s");
    }

    // One thread: a task spawned here has run up to its first wait once the test yields.
    #[tokio::test(flavor = "current_thread")]
    async fn requests_asked_while_a_statement_is_in_flight_share_the_next_up_to_the_limit() {
        let hold = Arc::new(Notify::new());
        let (batcher, seen) = recording(3, hold.clone());

        let first = first_statement_held(&batcher, &seen).await;
        let rest: Vec<_> = (2..=6).map(|n| spawn_ask(&batcher, n)).collect();
        // Let every ask reach the queue while the first statement is held.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(seen.lock().unwrap().len(), 1, "one statement in flight");
        hold.notify_one();

        assert_eq!(first.await.unwrap(), Ok(2));
        for (n, task) in (2..=6).zip(rest) {
            assert_eq!(task.await.unwrap(), Ok(n * 2));
        }
        let mut batches = seen.lock().unwrap().clone();
        assert_eq!(batches.remove(0), vec![1]);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 2]);
        let mut asked: Vec<u32> = batches.into_iter().flatten().collect();
        asked.sort_unstable();
        assert_eq!(asked, vec![2, 3, 4, 5, 6]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_whose_caller_has_gone_is_not_sent() {
        let hold = Arc::new(Notify::new());
        let (batcher, seen) = recording(8, hold.clone());

        let first = first_statement_held(&batcher, &seen).await;
        // `ask` queues its request before its first wait, so once the task has started
        // the request is in the queue.
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gone = tokio::spawn({
            let batcher = batcher.clone();
            let started = started.clone();
            async move {
                started.store(true, std::sync::atomic::Ordering::SeqCst);
                batcher.ask(2).await
            }
        });
        until(|| started.load(std::sync::atomic::Ordering::SeqCst)).await;
        let kept = spawn_ask(&batcher, 3);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        hold.notify_one();

        assert_eq!(first.await.unwrap(), Ok(2));
        assert_eq!(kept.await.unwrap(), Ok(6));
        assert_eq!(seen.lock().unwrap().clone(), vec![vec![1], vec![3]]);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_request_left_unanswered_is_stopped_not_a_hang() {
        let batcher: Batcher<u32, u32> = Batcher::start(4, |batch: Vec<Ask<u32, u32>>| {
            drop(batch);
            async {}
        });
        let answer = tokio::time::timeout(Duration::from_secs(5), batcher.ask(1)).await;
        assert_eq!(answer, Ok(Err(Stopped)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_task_ends_with_its_last_handle() {
        let held = Arc::new(());
        let batcher: Batcher<u32, u32> = Batcher::start(0, {
            let held = held.clone();
            move |batch: Vec<Ask<u32, u32>>| {
                let _held = &held;
                async move {
                    for ask in batch {
                        let n = ask.request;
                        ask.answer(n);
                    }
                }
            }
        });
        // A limit of 0 is taken as 1: the request is still answered.
        assert_eq!(batcher.ask(7).await, Ok(7));
        let other = batcher.clone();
        drop(batcher);
        assert_eq!(other.ask(8).await, Ok(8), "a clone keeps the task");
        drop(other);
        until(|| Arc::strong_count(&held) == 1).await;
    }
}
