//! One queue and every rule of the contract that concerns it.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use foldhash::fast::RandomState;

use super::keys::{Keys, RecentIds};
use super::{EXPIRED_LEASES_REMEMBERED, Id, IdGen, SPARE_ROOM_MIN, item_cost};

/// Per-queue settings (API.md: `leaseSeconds`, `maxAttempts`, `maxDepth`, `autoscale`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueConfig {
    /// Default lease length in milliseconds.
    pub lease_ms: u64,
    /// Deliveries before the dead letters; 0 is unlimited.
    pub max_attempts: u32,
    /// Most ready + delayed items; 0 is unlimited.
    pub max_depth: u64,
    /// Consumer Jobs by queue depth; kept here, acted on by the autoscaler (`kube/`).
    pub autoscale: Option<Autoscale>,
}

/// A queue's autoscaling opt-in (API.md: `{"autoscale":{"maxParallelism":..,"itemsPerPod":..}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Autoscale {
    /// Most consumer pods for the queue.
    pub max_parallelism: u32,
    /// Ready items per consumer pod.
    pub items_per_pod: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease_ms: 30_000,
            max_attempts: 5,
            max_depth: 0,
            autoscale: None,
        }
    }
}

/// A queued item. Kept small: its creation time is the id's timestamp and its dedup key,
/// when it has one, lives in [`Keys`].
#[derive(Debug)]
pub(super) struct Item {
    pub(super) id: Id,
    pub(super) body: Box<str>,
    pub(super) attempts: u32,
}

#[derive(Debug)]
pub(super) struct Leased {
    pub(super) item: Item,
    pub(super) deadline: u64,
    /// Who took it (`X-Memq-Consumer`); not journaled (see [`Queue::name_leases`]).
    pub(super) consumer: Option<Arc<str>>,
}

impl Leased {
    /// This lease (id `lease`) as the lease list and the item lookup show it.
    fn held(&self, lease: Id) -> HeldLease {
        HeldLease {
            id: lease,
            item: self.item.id,
            attempt: self.item.attempts,
            consumer: self.consumer.clone(),
            deadline: self.deadline,
        }
    }
}

/// An item waiting for its delay; ordered by (ready time, arrival) so equal times stay FIFO.
#[derive(Debug)]
pub(super) struct Delayed {
    pub(super) at: u64,
    pub(super) seq: u64,
    pub(super) item: Item,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A dead letter as listed by `GET /dead`.
#[derive(Debug, Clone)]
pub struct DeadItem {
    /// Item id.
    pub id: Id,
    /// Item text.
    pub body: Box<str>,
    /// Deliveries it had.
    pub attempts: u32,
    /// When it died (ms since epoch).
    pub died_at: u64,
}

/// Running totals of a queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Items added.
    pub enqueued: u64,
    /// Hand-outs (kuard dequeues and leases).
    pub dequeued: u64,
    /// Dropped by drain.
    pub drained: u64,
    /// Acked.
    pub acked: u64,
    /// Put back by lease expiry or nack.
    pub requeued: u64,
    /// Moved to the dead letters.
    pub died: u64,
    /// Dead letters purged.
    pub purged: u64,
}

/// An item to add: its text and the producer's key, if any.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct NewItem {
    /// Item text.
    pub body: Box<str>,
    /// Dedup key.
    pub key: Option<Box<str>>,
}

/// The lease half of a hand-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Lease id.
    pub id: Id,
    /// When it runs out (ms since epoch).
    pub deadline: u64,
    /// Delivery number of the item, this one included.
    pub attempt: u32,
}

/// A lease held now (`GET /queues/{q}/leases`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    /// Lease id; its time is when the lease was taken.
    pub id: Id,
    /// The item it holds.
    pub item: Id,
    /// The item's delivery number.
    pub attempt: u32,
    /// Who took it, if it said.
    pub consumer: Option<Arc<str>>,
    /// When it runs out (ms since epoch).
    pub deadline: u64,
}

/// Where an item is now (`GET /queues/{q}/items/...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Whereabouts {
    /// Ready: this many items are handed out before it.
    Ready { position: u64 },
    /// Waiting for its delay, ready at this time (ms since epoch).
    Delayed { at: u64 },
    /// Held by a lease.
    Leased(HeldLease),
    /// A dead letter since this time (ms since epoch).
    Dead { at: u64 },
}

/// An item found in a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundItem {
    /// Item id.
    pub id: Id,
    /// Deliveries so far.
    pub attempts: u32,
    /// Where it is.
    pub state: Whereabouts,
}

/// An item handed out by a dequeue.
#[derive(Debug)]
pub struct Handed {
    /// Item id.
    pub id: Id,
    /// Item text.
    pub body: Box<str>,
    /// The lease, unless it was a kuard-style dequeue.
    pub lease: Option<LeaseInfo>,
}

/// What a dequeue found.
#[derive(Debug)]
pub enum Taken {
    /// One or more items.
    Items(Vec<Handed>),
    /// Nothing ready.
    Empty,
    /// The queue is paused.
    Paused,
}

/// What [`Queue::tick`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    /// Items that became ready (waiters to wake).
    pub ready: usize,
    /// Whether anything changed (also leases sent to the dead letters).
    pub changed: bool,
}

/// Why an ack/nack/extend did nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// Acked, nacked, never existed: 404.
    #[error("lease not found")]
    NotFound,
    /// Ran out before this call: 410.
    #[error("lease expired")]
    Expired,
}

/// A batch that would pass `maxDepth`: 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("queue is full: {held} items held, {adding} more would pass maxDepth {max_depth}")]
pub struct QueueFull {
    /// The queue's limit.
    pub max_depth: u64,
    /// Ready + delayed now.
    pub held: u64,
    /// Items the batch would add.
    pub adding: u64,
}

/// One queue: ready items in order, delayed items, leases with their deadlines, dead letters.
#[derive(Debug)]
pub struct Queue {
    pub(super) config: QueueConfig,
    pub(super) paused: bool,
    pub(super) ready: VecDeque<Item>,
    pub(super) delayed: BinaryHeap<Reverse<Delayed>>,
    pub(super) leases: HashMap<Id, Leased, RandomState>,
    /// Lease deadlines, earliest first. Extends push a new entry; stale entries (whose lease is
    /// gone or has another deadline) are skipped when they come up.
    pub(super) expiry: BinaryHeap<Reverse<(u64, Id)>>,
    pub(super) dead: VecDeque<DeadItem>,
    pub(super) keys: Keys,
    pub(super) expired: RecentIds,
    pub(super) ids: IdGen,
    pub(super) seq: u64,
    pub(super) counters: Counters,
    /// What the items held (ready, delayed, leased, dead) count for `--max-memory`.
    pub(super) held_bytes: u64,
}

impl Queue {
    /// An empty queue with `config`.
    pub fn new(config: QueueConfig) -> Self {
        Self::with_ids(config, IdGen::new())
    }

    /// An empty queue whose ids come from `ids` (a journal replays a queue with its original ids).
    pub fn with_ids(config: QueueConfig, ids: IdGen) -> Self {
        Self {
            config,
            paused: false,
            ready: VecDeque::new(),
            delayed: BinaryHeap::new(),
            leases: HashMap::default(),
            expiry: BinaryHeap::new(),
            dead: VecDeque::new(),
            keys: Keys::default(),
            expired: RecentIds::new(EXPIRED_LEASES_REMEMBERED),
            ids,
            seq: 0,
            counters: Counters::default(),
            held_bytes: 0,
        }
    }

    /// The queue's settings.
    pub fn config(&self) -> QueueConfig {
        self.config
    }

    /// Replaces the queue's settings; they apply to the next operation.
    pub fn set_config(&mut self, config: QueueConfig) {
        self.config = config;
    }

    /// The id generator's position (recorded when a queue is created).
    pub fn id_state(&self) -> (u64, u128) {
        self.ids.state()
    }

    /// Moves the id generator to a recorded position (a replay that skipped lost records).
    pub fn set_id_state(&mut self, state: (u64, u128)) {
        self.ids = IdGen::from_state(state);
    }

    /// Running totals.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Ready items.
    pub fn depth(&self) -> u64 {
        self.ready.len() as u64
    }

    /// Leased items.
    pub fn inflight(&self) -> u64 {
        self.leases.len() as u64
    }

    /// Items waiting for a delay.
    pub fn delayed(&self) -> u64 {
        self.delayed.len() as u64
    }

    /// Dead letters.
    pub fn dead(&self) -> u64 {
        self.dead.len() as u64
    }

    /// What this queue holds counts for `--max-memory`: its items (ready, delayed, leased and
    /// dead: their bodies plus [`super::ITEM_OVERHEAD_BYTES`] each) and their dedup keys, also
    /// those kept after their item left ([`super::keys::key_cost`] each).
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes + self.keys.bytes()
    }

    /// How many named consumers hold leases now (a walk of the leases: O(in flight)).
    pub fn consumers(&self) -> u64 {
        let names: std::collections::HashSet<&str> = self
            .leases
            .values()
            .filter_map(|l| l.consumer.as_deref())
            .collect();
        names.len() as u64
    }

    /// Dedup keys kept after their item left, and what they count for `--max-memory`.
    pub fn retained_keys(&self) -> (u64, u64) {
        self.keys.retained()
    }

    /// How long a dedup key stays taken after its item left (`--dedup-window`).
    pub fn set_key_retention(&mut self, ms: u64) {
        self.keys.set_retention(ms);
    }

    /// Forgets an item that leaves the queue for good.
    fn forget_bytes(&mut self, body: &str) {
        self.held_bytes = self.held_bytes.saturating_sub(item_cost(body));
    }

    /// Whether dequeues are paused.
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Pauses or resumes dequeues.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Creation time (ms) of the oldest ready item.
    pub fn oldest_ready_ms(&self) -> Option<u64> {
        // New items join at the back and requeued ones at the front, so the oldest item is at one
        // of the two ends in all but unusual orders (a delayed nack overtaken by later items);
        // looking at both keeps this O(1).
        let front = self.ready.front().map(|i| i.id.timestamp_ms());
        let back = self.ready.back().map(|i| i.id.timestamp_ms());
        match (front, back) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest time at which [`Queue::tick`] has work (a lease or a delay runs out, a
    /// retained key becomes free).
    pub fn next_deadline(&self) -> Option<u64> {
        let lease = self.expiry.peek().map(|Reverse((t, _))| *t);
        let delay = self.delayed.peek().map(|Reverse(d)| d.at);
        [lease, delay, self.keys.next_expiry()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Adds one item; see [`Queue::enqueue_batch`].
    pub fn enqueue(
        &mut self,
        item: NewItem,
        delay_ms: u64,
        now: u64,
    ) -> Result<(Id, bool), QueueFull> {
        if let Some(key) = &item.key
            && let Some(holder) = self.holder(key, now)
        {
            return Ok((holder, true));
        }
        self.check_room(1)?;
        Ok((self.insert(item, delay_ms, now), false))
    }

    /// Adds every item or none. Returns one `(id, duplicate)` per input item: an item whose key
    /// is taken (also by an earlier item of the same batch) is skipped and answers with the
    /// holder's id.
    pub fn enqueue_batch(
        &mut self,
        items: Vec<NewItem>,
        delay_ms: u64,
        now: u64,
    ) -> Result<Vec<(Id, bool)>, QueueFull> {
        let keyed = items.iter().any(|i| i.key.is_some());
        if !keyed {
            self.check_room(items.len() as u64)?;
            return Ok(items
                .into_iter()
                .map(|item| (self.insert(item, delay_ms, now), false))
                .collect());
        }
        self.keys.prune(now);
        let mut batch_keys = std::collections::HashSet::<&str, RandomState>::default();
        let adding = items
            .iter()
            .filter(|i| match &i.key {
                Some(k) => self.keys.holder(k).is_none() && batch_keys.insert(k),
                None => true,
            })
            .count();
        self.check_room(adding as u64)?;
        Ok(items
            .into_iter()
            .map(
                |item| match item.key.as_deref().and_then(|k| self.keys.holder(k)) {
                    Some(holder) => (holder, true),
                    None => (self.insert(item, delay_ms, now), false),
                },
            )
            .collect())
    }

    fn holder(&mut self, key: &str, now: u64) -> Option<Id> {
        self.keys.prune(now);
        self.keys.holder(key)
    }

    fn check_room(&self, adding: u64) -> Result<(), QueueFull> {
        let held = self.depth() + self.delayed();
        let max_depth = self.config.max_depth;
        if max_depth > 0 && held + adding > max_depth {
            return Err(QueueFull {
                max_depth,
                held,
                adding,
            });
        }
        Ok(())
    }

    fn insert(&mut self, new: NewItem, delay_ms: u64, now: u64) -> Id {
        let id = self.ids.next(now);
        if let Some(key) = new.key {
            self.keys.take(&key, id);
        }
        let item = Item {
            id,
            body: new.body,
            attempts: 0,
        };
        self.held_bytes += item_cost(&item.body);
        self.counters.enqueued += 1;
        if delay_ms == 0 {
            self.ready.push_back(item);
        } else {
            self.push_delayed(item, now + delay_ms);
        }
        id
    }

    fn push_delayed(&mut self, item: Item, at: u64) {
        self.seq += 1;
        self.delayed.push(Reverse(Delayed {
            at,
            seq: self.seq,
            item,
        }));
    }

    /// Hands out up to `max` ready items: removed for good (kuard's dequeue) when `lease_ms` is
    /// `None`, else leased for that long.
    pub fn dequeue(&mut self, max: usize, lease_ms: Option<u64>, now: u64) -> Taken {
        if self.paused {
            return Taken::Paused;
        }
        self.tick(now);
        if self.ready.is_empty() {
            return Taken::Empty;
        }
        let n = max.min(self.ready.len());
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let Some(mut item) = self.ready.pop_front() else {
                break;
            };
            self.counters.dequeued += 1;
            match lease_ms {
                None => {
                    self.keys.release(item.id, now);
                    self.forget_bytes(&item.body);
                    out.push(Handed {
                        id: item.id,
                        body: item.body,
                        lease: None,
                    });
                }
                Some(ms) => {
                    item.attempts = item.attempts.saturating_add(1);
                    let lease = LeaseInfo {
                        id: self.ids.next(now),
                        deadline: now.saturating_add(ms),
                        attempt: item.attempts,
                    };
                    out.push(Handed {
                        id: item.id,
                        body: item.body.clone(),
                        lease: Some(lease),
                    });
                    self.expiry.push(Reverse((lease.deadline, lease.id)));
                    self.leases.insert(
                        lease.id,
                        Leased {
                            item,
                            deadline: lease.deadline,
                            consumer: None,
                        },
                    );
                }
            }
        }
        self.compact_ready();
        Taken::Items(out)
    }

    /// Looks up a live lease and ends it (the caller may take it up again, as extend does); one
    /// that ran out by `now` is expired on the spot.
    fn live_lease(&mut self, lease: Id, now: u64) -> Result<Leased, LeaseError> {
        match self.leases.get(&lease) {
            Some(l) if l.deadline > now => {
                let leased = self.leases.remove(&lease).expect("present");
                self.compact_leases();
                Ok(leased)
            }
            Some(_) => {
                self.tick(now);
                Err(LeaseError::Expired)
            }
            None if self.expired.contains(lease) => Err(LeaseError::Expired),
            None => Err(LeaseError::NotFound),
        }
    }

    /// Done with the item: it is gone for good.
    pub fn ack(&mut self, lease: Id, now: u64) -> Result<(), LeaseError> {
        let leased = self.live_lease(lease, now)?;
        self.counters.acked += 1;
        self.keys.release(leased.item.id, now);
        self.forget_bytes(&leased.item.body);
        Ok(())
    }

    /// Gives the item back: to the front of the ready items, or after `delay_ms`; to the dead
    /// letters when it has used up its attempts.
    pub fn nack(&mut self, lease: Id, delay_ms: u64, now: u64) -> Result<(), LeaseError> {
        let leased = self.live_lease(lease, now)?;
        self.give_back(leased.item, delay_ms, now);
        Ok(())
    }

    /// [`Queue::nack`] of many leases at once: one result each, in the order given. Without a
    /// delay the items go to the front in the order given (the first one first), as their
    /// consumer had them; with one they become ready in that order.
    pub fn nack_many(
        &mut self,
        leases: &[Id],
        delay_ms: u64,
        now: u64,
    ) -> Vec<Result<(), LeaseError>> {
        let (results, items) = self.take_leases(leases, now);
        if delay_ms == 0 {
            // Each goes to the front: the last one first, so that the first ends up first.
            for item in items.into_iter().rev() {
                self.give_back(item, 0, now);
            }
        } else {
            for item in items {
                self.give_back(item, delay_ms, now);
            }
        }
        results
    }

    /// Gives leased items back that were never started (a consumer's prefetch buffer when it
    /// stops): to the front of the ready items in the order given, with their delivery not
    /// counted as an attempt, so never to the dead letters. One result per lease.
    pub fn release(&mut self, leases: &[Id], now: u64) -> Vec<Result<(), LeaseError>> {
        let (results, items) = self.take_leases(leases, now);
        for mut item in items.into_iter().rev() {
            item.attempts = item.attempts.saturating_sub(1);
            self.counters.requeued += 1;
            self.ready.push_front(item);
        }
        results
    }

    /// [`Queue::extend`] of many leases at once: the new lease (or why not) of each.
    pub fn extend_many(
        &mut self,
        leases: &[Id],
        lease_ms: u64,
        now: u64,
    ) -> Vec<Result<LeaseInfo, LeaseError>> {
        leases
            .iter()
            .map(|&lease| self.extend(lease, lease_ms, now))
            .collect()
    }

    /// Ends the live leases among `leases`: one result each, and their items in that order.
    fn take_leases(&mut self, leases: &[Id], now: u64) -> (Vec<Result<(), LeaseError>>, Vec<Item>) {
        let mut items = Vec::with_capacity(leases.len());
        let results = leases
            .iter()
            .map(|&lease| {
                let leased = self.live_lease(lease, now)?;
                items.push(leased.item);
                Ok(())
            })
            .collect();
        (results, items)
    }

    fn give_back(&mut self, item: Item, delay_ms: u64, now: u64) {
        let max = self.config.max_attempts;
        if max > 0 && item.attempts >= max {
            self.counters.died += 1;
            self.dead.push_back(DeadItem {
                id: item.id,
                body: item.body,
                attempts: item.attempts,
                died_at: now,
            });
        } else {
            self.counters.requeued += 1;
            if delay_ms == 0 {
                self.ready.push_front(item);
            } else {
                self.push_delayed(item, now.saturating_add(delay_ms));
            }
        }
    }

    /// Heartbeat: the lease now runs out `lease_ms` from `now`.
    pub fn extend(&mut self, lease: Id, lease_ms: u64, now: u64) -> Result<LeaseInfo, LeaseError> {
        let leased = self.live_lease(lease, now)?;
        let deadline = now.saturating_add(lease_ms);
        let info = LeaseInfo {
            id: lease,
            deadline,
            attempt: leased.item.attempts,
        };
        self.leases.insert(
            lease,
            Leased {
                item: leased.item,
                deadline,
                consumer: leased.consumer,
            },
        );
        self.expiry.push(Reverse((deadline, lease)));
        Ok(info)
    }

    /// The item that a producer's key names now (also after the item left: then
    /// [`Queue::find`] finds nothing).
    pub fn key_holder(&self, key: &str) -> Option<Id> {
        self.keys.holder(key)
    }

    /// Where item `id` is, looked up by walking the queue's lists (no index: an item costs no
    /// more memory for this), so O(items) under the queue's lock: a look for people.
    pub fn find(&self, id: Id) -> Option<FoundItem> {
        let found = |attempts, state| {
            Some(FoundItem {
                id,
                attempts,
                state,
            })
        };
        if let Some(position) = self.ready.iter().position(|i| i.id == id) {
            let attempts = self.ready[position].attempts;
            let position = position as u64;
            return found(attempts, Whereabouts::Ready { position });
        }
        if let Some(Reverse(d)) = self.delayed.iter().find(|Reverse(d)| d.item.id == id) {
            return found(d.item.attempts, Whereabouts::Delayed { at: d.at });
        }
        if let Some((lease, l)) = self.leases.iter().find(|(_, l)| l.item.id == id) {
            return found(l.item.attempts, Whereabouts::Leased(l.held(*lease)));
        }
        let dead = self.dead.iter().find(|d| d.id == id)?;
        found(dead.attempts, Whereabouts::Dead { at: dead.died_at })
    }

    /// Names who took `leases` (a dequeue's `X-Memq-Consumer`). Not journaled: leases do not
    /// outlive a restart ([`Queue::recover_leases`]), and a name is only ever shown with its lease.
    pub fn name_leases(&mut self, leases: impl IntoIterator<Item = Id>, consumer: &Arc<str>) {
        for lease in leases {
            if let Some(l) = self.leases.get_mut(&lease) {
                l.consumer = Some(consumer.clone());
            }
        }
    }

    /// Of the leases still running at `now`, the `limit` that run out soonest, listed oldest
    /// first (lease ids are made in time order): the same choice as the Redis store's.
    pub fn held_leases(&self, limit: usize, now: u64) -> Vec<HeldLease> {
        let mut running: Vec<(u64, Id)> = self
            .leases
            .iter()
            .filter(|(_, l)| l.deadline > now)
            .map(|(id, l)| (l.deadline, *id))
            .collect();
        if limit < running.len() {
            running.select_nth_unstable(limit);
            running.truncate(limit);
        }
        let mut ids: Vec<Id> = running.into_iter().map(|(_, id)| id).collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| self.leases[&id].held(id))
            .collect()
    }

    /// The id and text of the item held by a live lease.
    pub fn leased_item(&self, lease: Id) -> Option<(Id, Box<str>)> {
        self.leases
            .get(&lease)
            .map(|l| (l.item.id, l.item.body.clone()))
    }

    /// A lease that ends before its deadline (an ack, a nack, a release, an extend) leaves its
    /// deadline in `expiry` until that time comes up. Once such stale entries outnumber the live
    /// ones, the heap is built again from the live leases alone, at its size: O(live leases), so
    /// at most once per as many ended leases, O(1) a lease. Under lease + ack churn the heap so
    /// stays at about the leases held, not at every lease of the last lease length. The lease
    /// table, too, gives back its room once a burst of leases has ended.
    fn compact_leases(&mut self) {
        let live = self.leases.len();
        if self.expiry.len() > 2 * live + SPARE_ROOM_MIN {
            self.expiry = self
                .leases
                .iter()
                .map(|(id, l)| Reverse((l.deadline, *id)))
                .collect();
        }
        if self.leases.capacity() > 4 * live + SPARE_ROOM_MIN {
            self.leases.shrink_to(2 * live);
        }
    }

    /// The ready items' room back to the allocator once a burst of them has been taken.
    fn compact_ready(&mut self) {
        let len = self.ready.len();
        if self.ready.capacity() > 4 * len + SPARE_ROOM_MIN {
            self.ready.shrink_to(2 * len);
        }
    }

    /// Applies what time has done by `now`: expired leases go back to the front (or to the dead
    /// letters), delayed items whose time came go to the back.
    pub fn tick(&mut self, now: u64) -> Tick {
        let before = self.ready.len();
        let mut changed = false;
        let mut expired = Vec::new();
        while let Some(&Reverse((deadline, lease))) = self.expiry.peek() {
            if deadline > now {
                break;
            }
            self.expiry.pop();
            if self
                .leases
                .get(&lease)
                .is_some_and(|l| l.deadline == deadline)
            {
                let leased = self.leases.remove(&lease).expect("present");
                self.expired.insert(lease);
                expired.push(leased.item);
            }
        }
        // Put the expired items back at the front in their original order (earliest deadline
        // first), which pushing each to the front one by one would reverse.
        changed |= !expired.is_empty();
        for item in expired.into_iter().rev() {
            self.give_back(item, 0, now);
        }
        while self.delayed.peek().is_some_and(|Reverse(d)| d.at <= now) {
            let Reverse(d) = self.delayed.pop().expect("peeked");
            self.ready.push_back(d.item);
            changed = true;
        }
        self.keys.prune(now);
        Tick {
            ready: self.ready.len().saturating_sub(before),
            changed,
        }
    }

    /// After a restart: every lease is void, so each leased item goes back to the front in the
    /// order it was handed out. Its delivery still counts as an attempt, but a restart is not
    /// the item's fault, so it never sends an item to the dead letters. Returns how many.
    pub fn recover_leases(&mut self) -> usize {
        let mut leased: Vec<(Id, Leased)> = self.leases.drain().collect();
        leased.sort_unstable_by_key(|(id, _)| *id);
        self.expiry.clear();
        let n = leased.len();
        for (_, l) in leased.into_iter().rev() {
            self.counters.requeued += 1;
            self.ready.push_front(l.item);
        }
        n
    }

    /// Drops every ready and delayed item; returns how many.
    pub fn drain(&mut self, now: u64) -> u64 {
        let mut n = 0;
        for item in std::mem::take(&mut self.ready) {
            self.keys.release(item.id, now);
            self.forget_bytes(&item.body);
            n += 1;
        }
        for Reverse(d) in std::mem::take(&mut self.delayed) {
            self.keys.release(d.item.id, now);
            self.forget_bytes(&d.item.body);
            n += 1;
        }
        self.counters.drained += n;
        n
    }

    /// Up to `limit` dead letters, oldest first.
    pub fn dead_letters(&self, limit: usize) -> Vec<DeadItem> {
        self.dead.iter().take(limit).cloned().collect()
    }

    /// Moves every dead letter back to the end of the ready items with attempts reset to 0.
    pub fn requeue_dead(&mut self) -> u64 {
        let n = self.dead.len() as u64;
        for dead in self.dead.drain(..) {
            self.ready.push_back(Item {
                id: dead.id,
                body: dead.body,
                attempts: 0,
            });
        }
        n
    }

    /// Removes every dead letter; returns how many.
    pub fn purge_dead(&mut self, now: u64) -> u64 {
        let n = self.dead.len() as u64;
        for dead in std::mem::take(&mut self.dead) {
            self.keys.release(dead.id, now);
            self.forget_bytes(&dead.body);
        }
        self.counters.purged += n;
        n
    }

    /// Up to `limit` ready items in hand-out order, without leasing them.
    pub fn peek(&self, limit: usize) -> Vec<(Id, Box<str>)> {
        self.ready
            .iter()
            .take(limit)
            .map(|i| (i.id, i.body.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_800_000_000_000;

    fn item(body: &str) -> NewItem {
        NewItem {
            body: body.into(),
            key: None,
        }
    }

    fn keyed(key: &str, body: &str) -> NewItem {
        NewItem {
            body: body.into(),
            key: Some(key.into()),
        }
    }

    fn q() -> Queue {
        Queue::new(QueueConfig::default())
    }

    fn bodies(taken: Taken) -> Vec<String> {
        match taken {
            Taken::Items(items) => items.into_iter().map(|h| h.body.into()).collect(),
            other => panic!("expected items, got {other:?}"),
        }
    }

    fn lease_one(q: &mut Queue, lease_ms: u64, now: u64) -> (String, LeaseInfo) {
        match q.dequeue(1, Some(lease_ms), now) {
            Taken::Items(mut items) => {
                let h = items.pop().expect("one item");
                (h.body.into(), h.lease.expect("leased"))
            }
            other => panic!("expected an item, got {other:?}"),
        }
    }

    #[test]
    fn leases_ended_early_leave_no_deadline_behind_under_churn() {
        let mut q = q();
        // A million lease + ack cycles within one lease length (30 s): none of their
        // deadlines comes up, yet the deadline heap stays at the slack, not at a million.
        let mut most = 0;
        for i in 0..1_000_000u64 {
            let now = T0 + i / 100;
            q.enqueue(item("x"), 0, now).unwrap();
            let (_, lease) = lease_one(&mut q, 30_000, now);
            q.ack(lease.id, now).unwrap();
            most = most.max(q.expiry.len());
        }
        assert!(
            most <= 2 * SPARE_ROOM_MIN + 2,
            "{most} deadlines held at most"
        );
        assert_eq!((q.depth(), q.inflight()), (0, 0));
        assert_eq!(q.counters().acked, 1_000_000);
    }

    #[test]
    fn a_burst_of_leases_gives_its_room_back_once_it_is_over() {
        let mut q = q();
        for i in 0..200_000 {
            q.enqueue(item(&i.to_string()), 0, T0).unwrap();
        }
        let Taken::Items(held) = q.dequeue(200_000, Some(30_000), T0) else {
            panic!("items")
        };
        // The ready items' room went with them; the leases hold theirs while they last.
        assert!(
            q.ready.capacity() <= 4 * SPARE_ROOM_MIN,
            "{}",
            q.ready.capacity()
        );
        assert!(q.leases.capacity() >= 200_000);
        for h in &held {
            q.ack(h.lease.unwrap().id, T0 + 1).unwrap();
        }
        // The last of them and a few new ones: the room follows what is held now.
        q.enqueue(item("after"), 0, T0 + 2).unwrap();
        let (_, lease) = lease_one(&mut q, 30_000, T0 + 2);
        assert!(
            q.leases.capacity() <= 4 * SPARE_ROOM_MIN,
            "{}",
            q.leases.capacity()
        );
        assert!(
            q.ready.capacity() <= 4 * SPARE_ROOM_MIN,
            "{}",
            q.ready.capacity()
        );
        assert!(
            q.expiry.len() <= 2 * SPARE_ROOM_MIN + 1,
            "{}",
            q.expiry.len()
        );
        // And what is held is still right: the one lease runs out and comes back.
        assert_eq!(q.tick(T0 + 2 + 30_000).ready, 1);
        assert_eq!(q.ack(lease.id, T0 + 3 + 30_000), Err(LeaseError::Expired));
    }

    #[test]
    fn kuard_dequeue_is_fifo_and_removes_for_good() {
        let mut q = q();
        for b in ["a", "b", "c"] {
            q.enqueue(item(b), 0, T0).unwrap();
        }
        assert_eq!(bodies(q.dequeue(2, None, T0)), ["a", "b"]);
        assert_eq!(bodies(q.dequeue(5, None, T0)), ["c"]);
        assert!(matches!(q.dequeue(1, None, T0), Taken::Empty));
        let c = q.counters();
        assert_eq!((c.enqueued, c.dequeued), (3, 3));
        assert_eq!((q.depth(), q.inflight()), (0, 0));
    }

    #[test]
    fn expired_lease_returns_item_to_front() {
        let mut q = q();
        for b in ["a", "b", "c"] {
            q.enqueue(item(b), 0, T0).unwrap();
        }
        let (body, lease) = lease_one(&mut q, 1_000, T0);
        assert_eq!(body, "a");
        assert_eq!(lease.attempt, 1);
        assert_eq!(q.tick(T0 + 999).ready, 0);
        assert_eq!(q.inflight(), 1);
        assert_eq!(q.tick(T0 + 1_000).ready, 1);
        assert_eq!(q.inflight(), 0);
        assert_eq!(q.counters().requeued, 1);
        let (body, lease) = lease_one(&mut q, 1_000, T0 + 1_000);
        assert_eq!((body.as_str(), lease.attempt), ("a", 2));
    }

    fn lease_all(q: &mut Queue, max: usize, now: u64) -> Vec<LeaseInfo> {
        match q.dequeue(max, Some(60_000), now) {
            Taken::Items(items) => items
                .into_iter()
                .map(|h| h.lease.expect("leased"))
                .collect(),
            other => panic!("expected items, got {other:?}"),
        }
    }

    #[test]
    fn a_batch_nack_puts_items_back_in_the_order_given() {
        let mut q = q();
        for b in ["a", "b", "c", "d"] {
            q.enqueue(item(b), 0, T0).unwrap();
        }
        let l = lease_all(&mut q, 3, T0);
        let results = q.nack_many(&[l[2].id, l[0].id, l[2].id], 0, T0);
        assert_eq!(results, [Ok(()), Ok(()), Err(LeaseError::NotFound)]);
        assert_eq!(q.counters().requeued, 2);
        assert_eq!(bodies(q.dequeue(4, None, T0)), ["c", "a", "d"]);
        // With a delay they become ready in the order given.
        let mut q = self::q();
        for b in ["a", "b"] {
            q.enqueue(item(b), 0, T0).unwrap();
        }
        let l = lease_all(&mut q, 2, T0);
        q.nack_many(&[l[1].id, l[0].id], 100, T0);
        assert_eq!(q.delayed(), 2);
        q.tick(T0 + 100);
        assert_eq!(bodies(q.dequeue(2, None, T0 + 100)), ["b", "a"]);
    }

    #[test]
    fn a_release_returns_items_unstarted_without_spending_an_attempt() {
        let mut q = Queue::new(QueueConfig {
            max_attempts: 1,
            ..QueueConfig::default()
        });
        for b in ["a", "b", "c"] {
            q.enqueue(item(b), 0, T0).unwrap();
        }
        let l = lease_all(&mut q, 2, T0);
        assert_eq!(l[0].attempt, 1);
        // At their last attempt, yet not dead letters: the delivery does not count.
        let results = q.release(&[l[0].id, l[1].id], T0 + 5);
        assert_eq!(results, [Ok(()), Ok(())]);
        assert_eq!((q.depth(), q.inflight(), q.dead()), (3, 0, 0));
        assert_eq!(q.counters().requeued, 2);
        let again = lease_all(&mut q, 3, T0 + 5);
        let attempts: Vec<u32> = again.iter().map(|l| l.attempt).collect();
        assert_eq!(attempts, [1, 1, 1]);
        // An expired lease is not released.
        assert_eq!(
            q.release(&[again[0].id], T0 + 60_005),
            [Err(LeaseError::Expired)]
        );
    }

    #[test]
    fn a_batch_extend_moves_each_live_lease() {
        let mut q = q();
        for b in ["a", "b"] {
            q.enqueue(item(b), 0, T0).unwrap();
        }
        let l = lease_all(&mut q, 2, T0);
        q.ack(l[1].id, T0).unwrap();
        let results = q.extend_many(&[l[0].id, l[1].id], 120_000, T0 + 10);
        assert_eq!(results[0].map(|i| i.deadline), Ok(T0 + 120_010));
        assert_eq!(results[1], Err(LeaseError::NotFound));
        assert_eq!(
            q.tick(T0 + 60_000).ready,
            0,
            "the old deadline has no effect"
        );
    }

    #[test]
    fn several_expired_leases_keep_their_order_at_the_front() {
        let mut q = q();
        for b in ["a", "b", "c"] {
            q.enqueue(item(b), 0, T0).unwrap();
        }
        lease_one(&mut q, 100, T0);
        lease_one(&mut q, 200, T0);
        q.tick(T0 + 500);
        assert_eq!(bodies(q.dequeue(3, None, T0 + 500)), ["a", "b", "c"]);
    }

    #[test]
    fn ack_after_expiry_is_gone_and_changes_nothing() {
        let mut q = q();
        q.enqueue(item("a"), 0, T0).unwrap();
        let (_, lease) = lease_one(&mut q, 1_000, T0);
        // Touching an overdue lease expires it even before any sweep ran.
        assert_eq!(q.ack(lease.id, T0 + 1_000), Err(LeaseError::Expired));
        assert_eq!(q.depth(), 1);
        assert_eq!(q.counters().acked, 0);
        // The item is handed to someone else; the old lease can't touch it.
        let (_, second) = lease_one(&mut q, 1_000, T0 + 1_001);
        assert_eq!(q.ack(lease.id, T0 + 1_002), Err(LeaseError::Expired));
        assert_eq!(q.nack(lease.id, 0, T0 + 1_002), Err(LeaseError::Expired));
        assert_eq!(
            q.extend(lease.id, 5_000, T0 + 1_002),
            Err(LeaseError::Expired)
        );
        assert_eq!(q.inflight(), 1);
        assert_eq!(q.ack(second.id, T0 + 1_003), Ok(()));
        assert_eq!(q.ack(second.id, T0 + 1_004), Err(LeaseError::NotFound));
        assert_eq!(q.counters().acked, 1);
    }

    #[test]
    fn unknown_lease_is_not_found() {
        let mut q = q();
        let stranger = IdGen::new().next(T0);
        assert_eq!(q.ack(stranger, T0), Err(LeaseError::NotFound));
    }

    #[test]
    fn nack_puts_item_at_the_front_or_after_a_delay() {
        let mut q = q();
        for b in ["a", "b"] {
            q.enqueue(item(b), 0, T0).unwrap();
        }
        let (_, lease) = lease_one(&mut q, 10_000, T0);
        q.nack(lease.id, 0, T0 + 1).unwrap();
        assert_eq!(bodies(q.dequeue(1, None, T0 + 2)), ["a"]);

        let (_, lease) = lease_one(&mut q, 10_000, T0 + 3);
        q.nack(lease.id, 5_000, T0 + 4).unwrap();
        assert_eq!((q.depth(), q.delayed()), (0, 1));
        assert!(matches!(q.dequeue(1, None, T0 + 5_003), Taken::Empty));
        assert_eq!(bodies(q.dequeue(1, None, T0 + 5_004)), ["b"]);
        assert_eq!(q.counters().requeued, 2);
    }

    #[test]
    fn item_dies_after_max_attempts_and_requeued_dead_starts_over() {
        let mut q = Queue::new(QueueConfig {
            max_attempts: 3,
            ..QueueConfig::default()
        });
        q.enqueue(item("poison"), 0, T0).unwrap();
        let mut now = T0;
        for attempt in 1..=3 {
            let (_, lease) = lease_one(&mut q, 1_000, now);
            assert_eq!(lease.attempt, attempt);
            now += 1;
            q.nack(lease.id, 0, now).unwrap();
        }
        assert_eq!((q.depth(), q.dead(), q.counters().requeued), (0, 1, 2));
        let dead = q.dead_letters(10);
        assert_eq!((&*dead[0].body, dead[0].attempts), ("poison", 3));
        assert_eq!(q.requeue_dead(), 1);
        let (_, lease) = lease_one(&mut q, 1_000, now);
        assert_eq!(lease.attempt, 1);
    }

    #[test]
    fn lease_expiry_counts_as_an_attempt_towards_dead_letters() {
        let mut q = Queue::new(QueueConfig {
            max_attempts: 2,
            ..QueueConfig::default()
        });
        q.enqueue(item("slow"), 0, T0).unwrap();
        lease_one(&mut q, 100, T0);
        q.tick(T0 + 100);
        lease_one(&mut q, 100, T0 + 100);
        q.tick(T0 + 200);
        assert_eq!((q.depth(), q.dead(), q.inflight()), (0, 1, 0));
    }

    #[test]
    fn unlimited_attempts_never_die() {
        let mut q = Queue::new(QueueConfig {
            max_attempts: 0,
            ..QueueConfig::default()
        });
        q.enqueue(item("x"), 0, T0).unwrap();
        for i in 0..50 {
            let (_, lease) = lease_one(&mut q, 1_000, T0 + i);
            q.nack(lease.id, 0, T0 + i).unwrap();
        }
        assert_eq!((q.depth(), q.dead()), (1, 0));
    }

    #[test]
    fn extend_moves_the_deadline() {
        let mut q = q();
        q.enqueue(item("a"), 0, T0).unwrap();
        let (_, lease) = lease_one(&mut q, 1_000, T0);
        let info = q.extend(lease.id, 5_000, T0 + 900).unwrap();
        assert_eq!(info.deadline, T0 + 5_900);
        assert_eq!(q.tick(T0 + 5_000).ready, 0);
        assert_eq!(q.inflight(), 1);
        assert_eq!(q.tick(T0 + 5_900).ready, 1);
    }

    #[test]
    fn many_extends_do_not_grow_the_deadline_heap_without_bound() {
        let mut q = q();
        q.enqueue(item("a"), 0, T0).unwrap();
        let (_, lease) = lease_one(&mut q, 1_000, T0);
        for i in 0..10_000 {
            q.extend(lease.id, 1_000, T0 + i).unwrap();
        }
        assert!(
            q.expiry.len() <= 2 * q.leases.len() + 1025,
            "{}",
            q.expiry.len()
        );
    }

    #[test]
    fn delayed_items_become_ready_in_order_and_count_as_delayed() {
        let mut q = q();
        q.enqueue(item("late"), 2_000, T0).unwrap();
        q.enqueue(item("soon-1"), 1_000, T0).unwrap();
        q.enqueue(item("soon-2"), 1_000, T0).unwrap();
        q.enqueue(item("now"), 0, T0).unwrap();
        assert_eq!((q.depth(), q.delayed()), (1, 3));
        assert_eq!(q.next_deadline(), Some(T0 + 1_000));
        assert_eq!(q.tick(T0 + 1_000).ready, 2);
        assert_eq!(
            bodies(q.dequeue(10, None, T0 + 1_000)),
            ["now", "soon-1", "soon-2"]
        );
        assert_eq!(bodies(q.dequeue(10, None, T0 + 2_000)), ["late"]);
    }

    #[test]
    fn paused_queue_hands_out_nothing_but_accepts_items() {
        let mut q = q();
        q.set_paused(true);
        q.enqueue(item("a"), 0, T0).unwrap();
        assert!(matches!(q.dequeue(1, None, T0), Taken::Paused));
        q.set_paused(false);
        assert_eq!(bodies(q.dequeue(1, None, T0)), ["a"]);
    }

    #[test]
    fn drain_drops_ready_and_delayed_but_keeps_inflight_and_dead() {
        let mut q = Queue::new(QueueConfig {
            max_attempts: 1,
            ..QueueConfig::default()
        });
        for b in ["a", "b", "c", "d"] {
            q.enqueue(item(b), 0, T0).unwrap();
        }
        q.enqueue(item("later"), 60_000, T0).unwrap();
        let (_, dying) = lease_one(&mut q, 1_000, T0);
        q.nack(dying.id, 0, T0).unwrap();
        let (_, held) = lease_one(&mut q, 1_000, T0);
        assert_eq!(q.drain(T0), 3);
        assert_eq!(
            (q.depth(), q.delayed(), q.inflight(), q.dead()),
            (0, 0, 1, 1)
        );
        assert_eq!(q.counters().drained, 3);
        assert_eq!(q.ack(held.id, T0 + 1), Ok(()));
    }

    #[test]
    fn duplicate_key_answers_the_original_id_until_retention_after_ack() {
        let mut q = q();
        let (id, dup) = q.enqueue(keyed("k1", "a"), 0, T0).unwrap();
        assert!(!dup);
        assert_eq!(q.enqueue(keyed("k1", "again"), 0, T0).unwrap(), (id, true));
        assert_eq!(q.depth(), 1);
        let (_, lease) = lease_one(&mut q, 1_000, T0);
        assert_eq!(
            q.enqueue(keyed("k1", "in flight"), 0, T0).unwrap(),
            (id, true)
        );
        q.ack(lease.id, T0 + 10).unwrap();
        let retention = crate::broker::KEY_RETENTION_MS;
        assert_eq!(
            q.enqueue(keyed("k1", "acked"), 0, T0 + 10 + retention - 1)
                .unwrap(),
            (id, true)
        );
        let (new_id, dup) = q
            .enqueue(keyed("k1", "fresh"), 0, T0 + 10 + retention)
            .unwrap();
        assert!(!dup && new_id != id);
    }

    #[test]
    fn batch_dedups_against_the_queue_and_itself() {
        let mut q = q();
        let (first, _) = q.enqueue(keyed("a", "1"), 0, T0).unwrap();
        let out = q
            .enqueue_batch(
                vec![keyed("a", "x"), keyed("b", "2"), keyed("b", "y"), item("3")],
                0,
                T0,
            )
            .unwrap();
        assert_eq!(out.iter().filter(|(_, d)| *d).count(), 2);
        assert_eq!(out[0], (first, true));
        assert_eq!(out[2], (out[1].0, true));
        assert_eq!(q.depth(), 3);
    }

    #[test]
    fn batch_passing_max_depth_is_refused_whole() {
        let mut q = Queue::new(QueueConfig {
            max_depth: 3,
            ..QueueConfig::default()
        });
        q.enqueue(keyed("k", "a"), 5_000, T0).unwrap();
        let err = q
            .enqueue_batch(vec![item("b"), item("c"), item("d")], 0, T0)
            .unwrap_err();
        assert_eq!(
            err,
            QueueFull {
                max_depth: 3,
                held: 1,
                adding: 3
            }
        );
        assert_eq!((q.depth(), q.delayed()), (0, 1));
        assert!(q.enqueue_batch(vec![item("b"), item("c")], 0, T0).is_ok());
        assert!(q.enqueue(item("e"), 0, T0).is_err());
        // A duplicate adds nothing, so it is answered even when the queue is full.
        assert!(q.enqueue(keyed("k", "x"), 0, T0).unwrap().1);
    }

    #[test]
    fn purge_releases_keys_and_counts() {
        let mut q = Queue::new(QueueConfig {
            max_attempts: 1,
            ..QueueConfig::default()
        });
        q.enqueue(keyed("k", "x"), 0, T0).unwrap();
        let (_, lease) = lease_one(&mut q, 1_000, T0);
        q.nack(lease.id, 0, T0).unwrap();
        assert_eq!(q.purge_dead(T0), 1);
        assert_eq!((q.dead(), q.counters().purged), (0, 1));
        let later = T0 + crate::broker::KEY_RETENTION_MS;
        assert!(!q.enqueue(keyed("k", "y"), 0, later).unwrap().1);
    }

    #[test]
    fn peek_shows_ready_items_without_taking_them() {
        let mut q = q();
        for b in ["a", "b", "c"] {
            q.enqueue(item(b), 0, T0).unwrap();
        }
        let peeked: Vec<_> = q.peek(2).into_iter().map(|(_, b)| b.to_string()).collect();
        assert_eq!(peeked, ["a", "b"]);
        assert_eq!(q.depth(), 3);
    }

    #[test]
    fn recovered_leases_go_to_the_front_in_delivery_order() {
        let mut q = q();
        for b in ["a", "b", "c", "d"] {
            q.enqueue(item(b), 0, T0).unwrap();
        }
        lease_one(&mut q, 60_000, T0);
        lease_one(&mut q, 1_000, T0 + 1);
        assert_eq!(q.recover_leases(), 2);
        assert_eq!((q.inflight(), q.counters().requeued), (0, 2));
        assert_eq!(bodies(q.dequeue(4, None, T0 + 3)), ["a", "b", "c", "d"]);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn item_stays_small() {
        assert!(
            std::mem::size_of::<Item>() <= 40,
            "{}",
            std::mem::size_of::<Item>()
        );
    }
    #[test]
    fn held_bytes_count_items_until_they_leave_for_good() {
        use crate::broker::item_cost;
        let mut q = Queue::new(QueueConfig {
            max_attempts: 1,
            ..QueueConfig::default()
        });
        let cost = |b: &str| item_cost(b);
        for b in ["aaaa", "bb", "c", "dddddd"] {
            q.enqueue(item(b), 0, T0).unwrap();
        }
        q.enqueue(item("later"), 10_000, T0).unwrap();
        let all = cost("aaaa") + cost("bb") + cost("c") + cost("dddddd") + cost("later");
        assert_eq!(q.held_bytes(), all);
        // A keyed item counts its key too; a duplicate key adds nothing.
        q.enqueue(keyed("k", "x"), 0, T0).unwrap();
        q.enqueue(keyed("k", "x"), 0, T0).unwrap();
        let all = all + cost("x") + super::super::key_cost("k");
        assert_eq!(q.held_bytes(), all);
        // kuard's dequeue removes for good.
        assert_eq!(bodies(q.dequeue(1, None, T0)), ["aaaa"]);
        assert_eq!(q.held_bytes(), all - cost("aaaa"));
        // A lease holds the item; an ack lets it go; an expiry into the dead letters keeps it.
        let (_, acked) = lease_one(&mut q, 1_000, T0);
        let (_, dies) = lease_one(&mut q, 1_000, T0);
        let held = q.held_bytes();
        q.ack(acked.id, T0).unwrap();
        assert_eq!(q.held_bytes(), held - cost("bb"));
        q.tick(T0 + 1_000);
        assert_eq!(q.dead(), 1);
        assert_eq!(q.nack(dies.id, 0, T0 + 1_000), Err(LeaseError::Expired));
        assert_eq!(q.held_bytes(), held - cost("bb"));
        // Purge and drain release the items; the key stays (and counts) for its retention,
        // and the queue says when it will be free.
        q.purge_dead(T0 + 1_000);
        q.drain(T0 + 1_000);
        let key = super::super::key_cost("k");
        assert_eq!(q.held_bytes(), key);
        assert_eq!(q.retained_keys(), (1, key));
        let free_at = T0 + 1_000 + crate::broker::KEY_RETENTION_MS;
        assert_eq!(q.next_deadline(), Some(free_at));
        q.tick(free_at - 1);
        assert_eq!(q.held_bytes(), key);
        q.tick(free_at);
        assert_eq!((q.held_bytes(), q.retained_keys()), (0, (0, 0)));
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn a_dedup_window_of_zero_frees_a_key_when_its_item_leaves() {
        let mut q = Queue::new(QueueConfig::default());
        q.set_key_retention(0);
        q.enqueue(keyed("k", "x"), 0, T0).unwrap();
        assert_eq!(bodies(q.dequeue(1, None, T0)), ["x"]);
        assert_eq!((q.held_bytes(), q.retained_keys()), (0, (0, 0)));
        let (_, dup) = q.enqueue(keyed("k", "again"), 0, T0).unwrap();
        assert!(!dup, "the key is free at once");
    }
}
