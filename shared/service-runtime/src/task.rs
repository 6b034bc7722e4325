//! Background tasks that never outlive their owner.

/// Aborts a spawned task when dropped. A service keeps its background tasks in these, so
/// dropping the service's future (a crash, in tests) stops them too: nothing keeps running
/// or holding a database connection or lock.
#[derive(Debug)]
pub struct AbortOnDrop<T>(pub tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    /// Spawns `future` on the current runtime.
    pub fn spawn<F>(future: F) -> Self
    where
        F: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        Self(tokio::spawn(future))
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
