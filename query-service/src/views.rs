//! The leader's in-process copy of order views, so `GetOrder` need not ask PostgreSQL.
//!
//! Only the instance that applies the projection keeps it, because only it sees every
//! change: after each batch commits, the projector puts the orders it changed here before
//! it moves the in-memory checkpoint, so a read that waited for a consistency token finds
//! them. Orders read from the table are added too, unless a batch was put while they were
//! being read (the row read may then be older than the one put). Leadership changing, in
//! either direction, empties it.

use std::sync::{Arc, Mutex};

use service_runtime::bounded::BoundedMap;
use uuid::Uuid;

use crate::model::OrderView;

/// How many orders are kept; past this, the one kept longest (put by the projector or
/// after a read from the table; a hit does not renew it) is dropped.
pub const CAPACITY: usize = 200_000;

/// Order views by id, and a counter of the changes put in.
pub struct OrderViews {
    inner: Mutex<Inner>,
}

struct Inner {
    views: BoundedMap<Uuid, Arc<OrderView>>,
    epoch: u64,
}

impl Default for OrderViews {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                views: BoundedMap::new(CAPACITY),
                epoch: 0,
            }),
        }
    }
}

impl std::fmt::Debug for OrderViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderViews")
            .field("len", &self.len())
            .finish()
    }
}

impl OrderViews {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The view of `id`, if kept.
    pub fn get(&self, id: Uuid) -> Option<Arc<OrderView>> {
        self.inner().views.get(&id).cloned()
    }

    /// Marks the start of a read from the table: pass it to [`Self::add_read`].
    pub fn epoch(&self) -> u64 {
        self.inner().epoch
    }

    /// Keeps a view read from the table, unless a batch was put since `epoch`.
    pub fn add_read(&self, epoch: u64, view: Arc<OrderView>) {
        let mut inner = self.inner();
        if inner.epoch == epoch && !inner.views.contains(&view.order_id) {
            inner.views.insert(view.order_id, view);
        }
    }

    /// Puts the views a committed batch changed.
    pub fn put_batch(&self, views: impl IntoIterator<Item = OrderView>) {
        let mut inner = self.inner();
        inner.epoch += 1;
        for view in views {
            inner.views.insert(view.order_id, Arc::new(view));
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        let mut inner = self.inner();
        inner.epoch += 1;
        inner.views.clear();
    }

    /// How many views are kept.
    pub fn len(&self) -> usize {
        self.inner().views.len()
    }

    /// True when none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn view(id: Uuid, version: i64) -> OrderView {
        OrderView::draft(id, Utc::now(), version)
    }

    #[test]
    fn a_read_racing_a_batch_is_not_kept() {
        let views = OrderViews::default();
        let id = Uuid::new_v4();
        let before = views.epoch();
        // The projector commits and puts version 2 while the read (of version 1) runs.
        views.put_batch([view(id, 2)]);
        views.add_read(before, Arc::new(view(id, 1)));
        assert_eq!(views.get(id).unwrap().version, 2);

        let other = Uuid::new_v4();
        views.add_read(before, Arc::new(view(other, 1)));
        assert!(views.get(other).is_none(), "stale epoch");
        views.add_read(views.epoch(), Arc::new(view(other, 1)));
        assert_eq!(views.get(other).unwrap().version, 1);
    }

    #[test]
    fn a_batch_replaces_what_was_read_and_clear_empties() {
        let views = OrderViews::default();
        let id = Uuid::new_v4();
        views.add_read(views.epoch(), Arc::new(view(id, 1)));
        views.put_batch([view(id, 3)]);
        assert_eq!(views.get(id).unwrap().version, 3);
        let before = views.epoch();
        views.clear();
        assert!(views.is_empty());
        views.add_read(before, Arc::new(view(id, 3)));
        assert!(views.is_empty(), "a read begun before a clear is not kept");
    }
}
