//! The aggregates this process wrote last, kept so the next command on them reads nothing.
//!
//! An entry is what a successful append left: the state after it, its version and
//! position. Another instance may have written since, so the pipeline treats a cached
//! state as unverified: a decision made from it stands only when the append confirms it
//! (the append expects the cached version, so a stale entry fails with a version conflict
//! and is evicted); a refusal or a no-op made from it is decided again from the store.

use std::{
    any::Any,
    collections::HashMap,
    sync::{Arc, Mutex},
};

use event_store::{AggregateId, Position, Version};

/// How many aggregates are kept; past this, the oldest quarter is dropped.
pub const CAPACITY: usize = 100_000;

/// One cached aggregate.
#[derive(Clone)]
pub struct Cached {
    /// The aggregate's state (the concrete aggregate type behind `Any`).
    pub state: Arc<dyn Any + Send + Sync>,
    /// Its version.
    pub version: Version,
    /// The position of its last event.
    pub last_position: Option<Position>,
}

/// Cached aggregates by id, in insertion order for eviction.
#[derive(Default)]
pub struct AggregateCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<AggregateId, (u64, Cached)>,
    next: u64,
}

impl AggregateCache {
    /// The cached aggregate, if any.
    pub fn get(&self, id: AggregateId) -> Option<Cached> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.entries.get(&id).map(|(_, cached)| cached.clone())
    }

    /// Keeps `cached` as the latest state of `id`.
    pub fn put(&self, id: AggregateId, cached: Cached) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.entries.len() >= CAPACITY && !inner.entries.contains_key(&id) {
            let mut ages: Vec<u64> = inner.entries.values().map(|(age, _)| *age).collect();
            let cut = ages.len() / 4;
            let (_, oldest_kept, _) = ages.select_nth_unstable(cut);
            let oldest_kept = *oldest_kept;
            inner.entries.retain(|_, (age, _)| *age >= oldest_kept);
        }
        inner.next += 1;
        let age = inner.next;
        inner.entries.insert(id, (age, cached));
    }

    /// Forgets `id`.
    pub fn evict(&self, id: AggregateId) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.entries.remove(&id);
    }

    /// How many aggregates are cached.
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(n: u64) -> Cached {
        Cached {
            state: Arc::new(n),
            version: Version::new(n),
            last_position: None,
        }
    }

    #[test]
    fn keeps_the_latest_put_and_forgets_on_evict() {
        let cache = AggregateCache::default();
        let id = AggregateId::new();
        assert!(cache.get(id).is_none());
        cache.put(id, cached(1));
        cache.put(id, cached(2));
        assert_eq!(cache.get(id).unwrap().version, Version::new(2));
        cache.evict(id);
        assert!(cache.get(id).is_none());
    }

    #[test]
    fn drops_the_oldest_quarter_when_full() {
        let cache = AggregateCache::default();
        let ids: Vec<AggregateId> = (0..CAPACITY).map(|_| AggregateId::new()).collect();
        for (n, id) in ids.iter().enumerate() {
            cache.put(*id, cached(n as u64));
        }
        assert_eq!(cache.len(), CAPACITY);
        let newest = AggregateId::new();
        cache.put(newest, cached(0));
        assert!(cache.len() <= CAPACITY * 3 / 4 + 1, "{}", cache.len());
        assert!(cache.get(ids[0]).is_none(), "the oldest is dropped");
        assert!(
            cache.get(ids[CAPACITY - 1]).is_some(),
            "the newest are kept"
        );
        assert!(cache.get(newest).is_some());
    }
}
