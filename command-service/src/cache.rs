//! The aggregates this process wrote last, kept so the next command on them reads nothing.
//!
//! An entry is what a successful append left: the state after it, its version and
//! position. Another instance may have written since, so the pipeline treats a cached
//! state as unverified: a decision made from it stands only when the append confirms it
//! (the append expects the cached version, so a stale entry fails with a version conflict
//! and is evicted); a refusal or a no-op made from it is decided again from the store.

use std::sync::{Arc, Mutex};

use event_store::{AggregateId, Position, Version};
use service_runtime::bounded::BoundedMap;

use crate::domain::State;

/// How many aggregates are kept; past this, the one written longest ago is dropped.
pub const CAPACITY: usize = 100_000;

/// One cached aggregate.
pub struct Cached {
    /// The aggregate's state (shared with the snapshot being written, if any).
    pub state: Arc<State>,
    /// Its version.
    pub version: Version,
    /// The position of its last event.
    pub last_position: Option<Position>,
}

/// Cached aggregates by id.
pub struct AggregateCache {
    inner: Mutex<BoundedMap<AggregateId, Cached>>,
}

impl Default for AggregateCache {
    fn default() -> Self {
        Self {
            inner: Mutex::new(BoundedMap::new(CAPACITY)),
        }
    }
}

impl AggregateCache {
    fn map(&self) -> std::sync::MutexGuard<'_, BoundedMap<AggregateId, Cached>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the cached aggregate out, so its state can be used without a copy; the
    /// pipeline puts the new state back after a successful append. Commands on one
    /// aggregate queue in-process, so no other command of this process wants it meanwhile.
    pub fn take(&self, id: AggregateId) -> Option<Cached> {
        self.map().remove(&id)
    }

    /// Keeps `cached` as the latest state of `id`.
    pub fn put(&self, id: AggregateId, cached: Cached) {
        self.map().insert(id, cached);
    }

    /// Forgets `id`.
    pub fn evict(&self, id: AggregateId) {
        self.map().remove(&id);
    }
}
