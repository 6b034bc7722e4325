//! A map that holds at most a fixed number of entries, for in-process caches.

use std::{collections::HashMap, hash::Hash};

/// Holds up to `capacity` entries; inserting a new key into a full map first drops the
/// oldest quarter (by insertion). Not synchronised: callers wrap it in a mutex.
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    entries: HashMap<K, (u64, V)>,
    capacity: usize,
    next: u64,
}

impl<K: Hash + Eq, V> BoundedMap<K, V> {
    /// An empty map holding at most `capacity` entries (at least 4).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(4),
            next: 0,
        }
    }

    /// The value for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(_, value)| value)
    }

    /// True when `key` has a value.
    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    /// Sets the value for `key`, making room if the map is full.
    pub fn insert(&mut self, key: K, value: V) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let mut ages: Vec<u64> = self.entries.values().map(|(age, _)| *age).collect();
            let cut = ages.len() / 4;
            let (_, oldest_kept, _) = ages.select_nth_unstable(cut);
            let oldest_kept = *oldest_kept;
            self.entries.retain(|_, (age, _)| *age >= oldest_kept);
        }
        self.next += 1;
        self.entries.insert(key, (self.next, value));
    }

    /// Takes the value for `key` out.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        self.entries.remove(key).map(|(_, value)| value)
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_insert_and_forgets_on_remove() {
        let mut map = BoundedMap::new(10);
        assert!(map.get(&1).is_none());
        map.insert(1, "a");
        map.insert(1, "b");
        assert_eq!(map.get(&1), Some(&"b"));
        map.remove(&1);
        assert!(!map.contains(&1));
    }

    #[test]
    fn drops_the_oldest_quarter_when_full() {
        let mut map = BoundedMap::new(1000);
        for n in 0..1000 {
            map.insert(n, n);
        }
        assert_eq!(map.len(), 1000);
        map.insert(1000, 1000);
        assert_eq!(map.len(), 751);
        assert!(!map.contains(&0), "the oldest is dropped");
        assert!(!map.contains(&249));
        assert!(map.contains(&250));
        assert!(
            map.contains(&999) && map.contains(&1000),
            "the newest are kept"
        );
        // Overwriting a key never evicts.
        map.insert(500, 0);
        assert_eq!(map.len(), 751);
    }
}
