//! Producer dedup keys (taken from enqueue until the retention window, [`KEY_RETENTION_MS`] by
//! default, after the item leaves), and a bounded memory of expired lease ids.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use foldhash::fast::RandomState;

use super::{Id, KEY_RETENTION_MS, SPARE_ROOM_MIN};

/// Bytes a dedup key counts for `--max-memory` beyond its text: its shared string's header,
/// its entries in the key and item maps (with their share of the tables' spare room) and its
/// place in the release order.
pub const KEY_OVERHEAD_BYTES: u64 = 200;

/// What one key counts for `--max-memory`.
pub fn key_cost(key: &str) -> u64 {
    key.len() as u64 + KEY_OVERHEAD_BYTES
}

#[derive(Debug)]
struct KeyEntry {
    item: Id,
    released_at: Option<u64>,
}

/// Which keys are taken, by which item, and when released keys become free again.
#[derive(Debug)]
pub struct Keys {
    by_key: HashMap<Arc<str>, KeyEntry, RandomState>,
    by_item: HashMap<Id, Arc<str>, RandomState>,
    released: VecDeque<(u64, Arc<str>)>,
    /// How long a key stays taken after its item left (`--dedup-window`; 0: not at all).
    retention_ms: u64,
    /// What all keys count ([`key_cost`]), and the part of it held by released keys.
    bytes: u64,
    retained_bytes: u64,
}

impl Default for Keys {
    fn default() -> Self {
        Keys {
            by_key: HashMap::default(),
            by_item: HashMap::default(),
            released: VecDeque::new(),
            retention_ms: KEY_RETENTION_MS,
            bytes: 0,
            retained_bytes: 0,
        }
    }
}

impl Keys {
    /// Sets how long a key stays taken after its item left; keys released before keep the
    /// time they were released at.
    pub fn set_retention(&mut self, ms: u64) {
        self.retention_ms = ms;
    }

    /// What all keys count for `--max-memory`.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Keys kept after their item left (still refusing a second enqueue), and what they count.
    pub fn retained(&self) -> (u64, u64) {
        (self.released.len() as u64, self.retained_bytes)
    }

    /// When the next retained key becomes free.
    pub fn next_expiry(&self) -> Option<u64> {
        self.released
            .front()
            .map(|(at, _)| at.saturating_add(self.retention_ms))
    }

    /// The item holding `key`, if the key is taken.
    pub fn holder(&self, key: &str) -> Option<Id> {
        self.by_key.get(key).map(|e| e.item)
    }

    /// Marks `key` taken by `item`. The caller checked [`Keys::holder`] first.
    pub fn take(&mut self, key: &str, item: Id) {
        let key: Arc<str> = Arc::from(key);
        self.bytes += key_cost(&key);
        self.by_item.insert(item, key.clone());
        self.by_key.insert(
            key,
            KeyEntry {
                item,
                released_at: None,
            },
        );
    }

    /// Starts the retention clock of `item`'s key, if it has one: it left the queue at `now`.
    pub fn release(&mut self, item: Id, now: u64) {
        let Some(key) = self.by_item.remove(&item) else {
            return;
        };
        if self.retention_ms == 0 {
            self.by_key.remove(&key);
            self.bytes -= key_cost(&key);
            return;
        }
        if let Some(entry) = self.by_key.get_mut(&key) {
            entry.released_at = Some(now);
        }
        self.retained_bytes += key_cost(&key);
        self.released.push_back((now, key));
    }

    /// The maps' room back to the allocator once a burst of keys is gone.
    fn compact(&mut self) {
        let len = self.by_key.len();
        if self.by_key.capacity() > 4 * len + SPARE_ROOM_MIN {
            self.by_key.shrink_to(2 * len);
        }
        let len = self.by_item.len();
        if self.by_item.capacity() > 4 * len + SPARE_ROOM_MIN {
            self.by_item.shrink_to(2 * len);
        }
        let len = self.released.len();
        if self.released.capacity() > 4 * len + SPARE_ROOM_MIN {
            self.released.shrink_to(2 * len);
        }
    }

    /// Frees the keys whose retention ran out by `now`.
    pub fn prune(&mut self, now: u64) {
        while let Some((at, _)) = self.released.front() {
            if at.saturating_add(self.retention_ms) > now {
                break;
            }
            let (at, key) = self.released.pop_front().expect("front exists");
            self.retained_bytes -= key_cost(&key);
            if self
                .by_key
                .get(&key)
                .is_some_and(|e| e.released_at == Some(at))
            {
                self.by_key.remove(&key);
                self.bytes -= key_cost(&key);
            }
        }
        self.compact();
    }

    /// Every taken key with its item and release time, for a snapshot.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Id, Option<u64>)> {
        self.by_key
            .iter()
            .map(|(k, e)| (&**k, e.item, e.released_at))
    }

    /// Rebuilds the keys from [`Keys::entries`].
    pub fn from_entries(mut entries: Vec<(String, Id, Option<u64>)>) -> Self {
        // Released keys must be queued for pruning in release order.
        entries.sort_by_key(|(_, _, released)| *released);
        let mut keys = Keys::default();
        for (key, item, released) in entries {
            keys.take(&key, item);
            if let Some(at) = released {
                keys.release(item, at);
            }
        }
        keys
    }

    /// How many keys are taken (including released ones still retained).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }
}

/// The most recent expired lease ids, oldest forgotten first.
#[derive(Debug)]
pub struct RecentIds {
    set: HashSet<Id, RandomState>,
    order: VecDeque<Id>,
    cap: usize,
}

impl RecentIds {
    /// Remembers at most `cap` ids.
    pub fn new(cap: usize) -> Self {
        Self {
            set: HashSet::default(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// Remembers `id`, forgetting the oldest one beyond the cap.
    pub fn insert(&mut self, id: Id) {
        if self.cap == 0 {
            return;
        }
        if self.order.len() == self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id);
        self.order.push_back(id);
    }

    /// Whether `id` is remembered.
    pub fn contains(&self, id: Id) -> bool {
        self.set.contains(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::IdGen;

    #[test]
    fn released_key_stays_taken_for_the_retention_then_frees() {
        let mut ids = IdGen::new();
        let mut keys = Keys::default();
        let item = ids.next(0);
        keys.take("k", item);
        keys.release(item, 1_000);
        keys.prune(1_000 + KEY_RETENTION_MS - 1);
        assert_eq!(keys.holder("k"), Some(item));
        keys.prune(1_000 + KEY_RETENTION_MS);
        assert_eq!(keys.holder("k"), None);
        assert_eq!(keys.len(), 0);
    }

    #[test]
    fn recent_ids_forget_the_oldest_beyond_the_cap() {
        let mut ids = IdGen::new();
        let mut recent = RecentIds::new(2);
        let (a, b, c) = (ids.next(1), ids.next(2), ids.next(3));
        recent.insert(a);
        recent.insert(b);
        recent.insert(c);
        assert!(!recent.contains(a));
        assert!(recent.contains(b) && recent.contains(c));
    }
}
