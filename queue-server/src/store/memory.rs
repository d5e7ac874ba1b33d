//! The queue store: every queue in this process, one lock per queue, optionally journaled to a
//! data directory (`--data-dir`) so that a restart or crash loses no acknowledged change.
//!
//! Owns what the broker must not: locking, the journal, waking long-poll waiters (a tokio
//! `Notify` per queue, so a waiting request costs no CPU), and one sweeper task that applies
//! lease expiries and delays when they fall due, sleeping until the earliest deadline of all
//! queues. Every change goes through [`Queue::apply`] with an [`Op`]: the same function that
//! replays the journal on start, so the live and the recovered state cannot drift apart.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use foldhash::fast::RandomState;
use memq::{QueueConfigPatch, QueueStats};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::journal::{self, DataDir, Lsn, RecordRef};
use super::{
    Clock, Delivery, DequeueOutcome, DequeueRequest, FoundItem, HeldLease, ItemRef, LeaseSpec,
    StoreOptions, apply_patch, parse_lease,
};
use crate::broker::{
    DeadItem, Id, LeaseError, LeaseInfo, NewItem, Op, Outcome, Queue, QueueConfig, Taken,
    item_cost, key_cost,
};
use crate::error::{Error, Result};

/// How long a request waits for its change to reach the journal before answering 503.
const JOURNAL_WAIT: Duration = Duration::from_secs(5);

struct QueueState {
    queue: Queue,
    deleted: bool,
}

struct Shared {
    state: Mutex<QueueState>,
    /// Woken when items become ready, and when the queue is paused or deleted.
    ready: Notify,
}

impl Shared {
    fn new(queue: Queue) -> Arc<Self> {
        Arc::new(Shared {
            state: Mutex::new(QueueState {
                queue,
                deleted: false,
            }),
            ready: Notify::new(),
        })
    }

    fn wake(&self, became_ready: usize) {
        match became_ready {
            0 => {}
            1 => self.ready.notify_one(),
            _ => self.ready.notify_waiters(),
        }
    }
}

struct Inner {
    queues: RwLock<HashMap<Box<str>, Arc<Shared>, RandomState>>,
    clock: Clock,
    options: StoreOptions,
    data: Option<DataDir>,
    /// What the items of all queues count for `--max-memory`: the sum of their
    /// [`Queue::held_bytes`], plus enqueues under way.
    held: AtomicU64,
    /// Earliest deadline the sweeper must act on (u64::MAX: none).
    next_wake: AtomicU64,
    sweeper: Notify,
    shutdown: CancellationToken,
    /// Long polls waiting now, in [`super::long_poll`].
    waiting: AtomicU64,
}

/// The queues. Cheap to clone; clones share the queues.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

fn stats_of(name: &str, q: &Queue, now: u64) -> QueueStats {
    let c = q.counters();
    let config = q.config();
    QueueStats {
        name: name.to_string(),
        depth: q.depth(),
        enqueued: c.enqueued,
        dequeued: c.dequeued,
        drained: c.drained,
        inflight: q.inflight(),
        acked: c.acked,
        requeued: c.requeued,
        dead: q.dead(),
        delayed: q.delayed(),
        paused: q.paused(),
        oldest_age_seconds: q
            .oldest_ready_ms()
            .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0),
        lease_seconds: config.lease_ms / 1000,
        max_attempts: config.max_attempts,
        max_depth: config.max_depth,
        autoscale: config.autoscale.map(|a| memq::Autoscale {
            max_parallelism: a.max_parallelism,
            items_per_pod: a.items_per_pod,
        }),
        consumers: q.consumers(),
        retained_keys: q.retained_keys().0,
        retained_key_bytes: Some(q.retained_keys().1),
    }
}

/// Nothing ready, in flight or delayed: no item can appear unless someone enqueues one.
/// Whether `op` may make ids (items, leases): its record then carries the queue's id generator
/// position (see [`RecordRef::Apply`]).
fn makes_ids(op: &Op) -> bool {
    matches!(
        op,
        Op::Enqueue { .. }
            | Op::Dequeue {
                lease_ms: Some(_),
                ..
            }
    )
}

fn is_finished(q: &Queue) -> bool {
    q.depth() == 0 && q.inflight() == 0 && q.delayed() == 0
}

fn lease_error(e: LeaseError, lease: &str) -> Error {
    match e {
        LeaseError::NotFound => Error::LeaseNotFound(lease.to_string()),
        LeaseError::Expired => Error::LeaseExpired(lease.to_string()),
    }
}

fn unexpected(outcome: Outcome) -> Error {
    Error::BackendUnavailable(format!("internal: unexpected outcome {outcome:?}"))
}

impl MemoryStore {
    /// Opens the store: empty in memory, or recovered from `options.data_dir`.
    pub fn open(options: StoreOptions, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let clock = Clock::new();
        let mut queues = HashMap::default();
        let mut data = None;
        // Recovered items count even past --max-memory: they were acknowledged to producers.
        let mut held = 0u64;
        if let Some(dir) = &options.data_dir {
            let started = std::time::Instant::now();
            // Replay keeps dedup keys for the window each file was written with; the flag's
            // window applies from now on, and the files written from now on say so.
            let (dir_handle, recovery) =
                journal::open(dir, options.fsync, options.key_retention_ms)?;
            for line in &recovery.dropped {
                tracing::warn!(cut = %line, "a torn tail of the journal was cut");
            }
            for (queue, records) in &recovery.orphans {
                tracing::warn!(queue = %queue, records, "records of a queue whose create record was lost were skipped");
            }
            for queue in &recovery.recreated {
                tracing::warn!(queue = %queue, "a queue whose create record was lost was made again with the default settings");
            }
            for gap in &recovery.id_gaps {
                tracing::warn!(queue = %gap.queue, ids = gap.count, first = %gap.first, last = %gap.last, "ids made by lost records were skipped");
            }
            let mut items = 0u64;
            let mut leases = 0usize;
            for (name, mut queue) in recovery.queues {
                queue.set_key_retention(options.key_retention_ms);
                leases += queue.recover_leases();
                items += queue.depth() + queue.delayed() + queue.dead();
                held += queue.held_bytes();
                queues.insert(name.into_boxed_str(), Shared::new(queue));
            }
            tracing::info!(
                dir = %dir.display(),
                queues = queues.len(),
                items,
                leases_returned = leases,
                records = recovery.records,
                snapshot = ?recovery.snapshot,
                formats = ?recovery.formats,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "recovered queues from the data directory"
            );
            data = Some(dir_handle);
        }
        let store = Self {
            inner: Arc::new(Inner {
                queues: RwLock::new(queues),
                clock,
                options,
                data,
                held: AtomicU64::new(held),
                next_wake: AtomicU64::new(u64::MAX),
                sweeper: Notify::new(),
                shutdown,
                waiting: AtomicU64::new(0),
            }),
        };
        if store.inner.data.is_some() {
            // The recovered state (leases returned) becomes the new base, in the current
            // format; older files go.
            store.compact_now()?;
        }
        for shared in store.inner.queues.read().values() {
            if let Some(deadline) = shared.state.lock().queue.next_deadline() {
                store.schedule(deadline);
            }
        }
        Ok(store)
    }

    /// Long polls waiting now.
    pub fn waiting_polls(&self) -> u64 {
        self.inner.waiting.load(Ordering::Relaxed)
    }

    /// The store's clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.clock
    }

    fn get(&self, name: &str) -> Result<Arc<Shared>> {
        self.inner
            .queues
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::QueueNotFound(name.to_string()))
    }

    /// Refuses changes while the journal cannot write, so nothing is changed that can't be kept.
    fn check_writable(&self) -> Result<()> {
        match &self.inner.data {
            Some(d) if !d.writer.healthy() => Err(Error::BackendUnavailable(format!(
                "the data directory cannot be written ({}); free space or fix {}",
                d.writer.error().unwrap_or_default(),
                d.path().display()
            ))),
            _ => Ok(()),
        }
    }

    /// Applies `op` to a queue under its lock; journals it when it changed anything; wakes
    /// waiters. Returns the outcome and the journal position to wait for.
    fn apply(&self, name: &str, shared: &Shared, op: Op) -> Result<(Outcome, Option<Lsn>)> {
        let mut state = shared.state.lock();
        if state.deleted {
            return Err(Error::QueueNotFound(name.to_string()));
        }
        let now = self.inner.clock.now_ms();
        let reserved = match &op {
            Op::Enqueue { items, .. } => self.reserve(
                items
                    .iter()
                    .map(|i| item_cost(&i.body) + i.key.as_deref().map_or(0, key_cost))
                    .sum(),
            )?,
            _ => 0,
        };
        let held_before = state.queue.held_bytes();
        let encoded = self.inner.data.as_ref().map(|_| {
            let mut buf = Vec::new();
            journal::frame(
                &RecordRef::Apply {
                    queue: name,
                    now,
                    ids: makes_ids(&op).then(|| state.queue.id_state()),
                    op: &op,
                },
                &mut buf,
            );
            buf
        });
        let applied = state.queue.apply(op, now);
        self.settle_memory(held_before, state.queue.held_bytes(), reserved);
        let finished = applied.changed && is_finished(&state.queue);
        let lsn = match (&self.inner.data, encoded) {
            (Some(d), Some(bytes)) if applied.changed => {
                Some(d.writer.append(|buf| buf.extend_from_slice(&bytes)))
            }
            _ => None,
        };
        let deadline = state.queue.next_deadline();
        drop(state);
        shared.wake(applied.readied);
        if finished {
            // Long polls waiting for the last leases to come back can stop waiting.
            shared.ready.notify_waiters();
        }
        if let Some(deadline) = deadline {
            self.schedule(deadline);
        }
        Ok((applied.outcome, lsn))
    }

    /// Takes `bytes` of `--max-memory` for an enqueue about to be applied, or refuses it whole.
    fn reserve(&self, bytes: u64) -> Result<u64> {
        let max = self.inner.options.max_memory;
        self.inner
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&total| total <= max)
            })
            .map_err(|held| Error::MemoryFull {
                held,
                adding: bytes,
                max,
                holders: String::new(),
            })?;
        Ok(bytes)
    }

    /// Brings the memory count in line with what a queue holds after an op, giving back what
    /// was reserved for it (duplicates and refused batches add nothing).
    fn settle_memory(&self, before: u64, after: u64, reserved: u64) {
        let held = &self.inner.held;
        let grown = after.saturating_sub(before);
        let shrunk = before.saturating_sub(after) + reserved;
        // Add before subtracting, so the count never dips below zero on the way.
        held.fetch_add(grown, Ordering::AcqRel);
        held.fetch_sub(shrunk, Ordering::AcqRel);
    }

    /// Every queue with its name, taken from the registry without holding it (each queue's own
    /// lock is taken after, one at a time).
    fn queue_list(&self) -> Vec<(Box<str>, Arc<Shared>)> {
        self.inner
            .queues
            .read()
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect()
    }

    /// What holds the memory, for a `memory_full` message: the dedup keys kept after their item
    /// left, and the queue that holds the most.
    fn memory_holders(&self) -> String {
        let queues = self.queue_list();
        let (mut retained, mut top) = (0, None::<(Box<str>, u64)>);
        for (name, shared) in queues {
            let state = shared.state.lock();
            retained += state.queue.retained_keys().1;
            let held = state.queue.held_bytes();
            if top.as_ref().is_none_or(|(_, most)| held > *most) {
                top = Some((name, held));
            }
        }
        let mut text = format!(", of which {retained} are dedup keys kept after their items left");
        if let Some((name, held)) = top {
            text.push_str(&format!("; queue {name:?} holds the most, {held} bytes"));
        }
        text
    }

    /// Bytes the items of all queues count for `--max-memory`, and the limit (`u64::MAX`: none).
    pub fn memory(&self) -> (u64, u64) {
        (
            self.inner.held.load(Ordering::Acquire),
            self.inner.options.max_memory,
        )
    }

    /// Waits until the change at `lsn` is stored as `--fsync` promises.
    async fn settle(&self, lsn: Option<Lsn>) -> Result<()> {
        match (lsn, &self.inner.data) {
            // Boxed: every store future (a long poll's too) would otherwise carry the room
            // for this wait and its timer, used only with --data-dir.
            (Some(lsn), Some(d)) => Box::pin(d.writer.wait(lsn, JOURNAL_WAIT))
                .await
                .map_err(Error::BackendUnavailable),
            _ => Ok(()),
        }
    }

    /// Applies a change and waits until it is stored.
    async fn change(&self, name: &str, op: Op) -> Result<Outcome> {
        self.check_writable()?;
        let shared = self.get(name)?;
        let (outcome, lsn) = self.apply(name, &shared, op)?;
        self.settle(lsn).await?;
        Ok(outcome)
    }

    /// Reads a queue under its lock, without changing it.
    fn read<T>(&self, name: &str, f: impl FnOnce(&Queue, u64) -> T) -> Result<T> {
        let shared = self.get(name)?;
        let state = shared.state.lock();
        if state.deleted {
            return Err(Error::QueueNotFound(name.to_string()));
        }
        Ok(f(&state.queue, self.inner.clock.now_ms()))
    }

    /// Makes sure the sweeper wakes by `deadline`.
    fn schedule(&self, deadline: u64) {
        let next = &self.inner.next_wake;
        if deadline < next.load(Ordering::Acquire) {
            next.fetch_min(deadline, Ordering::AcqRel);
            self.inner.sweeper.notify_one();
        }
    }

    /// `PUT /queues/{q}`: creates the queue, or updates its config. True when created.
    pub async fn create_queue(
        &self,
        name: &str,
        patch: Option<&QueueConfigPatch>,
    ) -> Result<(QueueStats, bool)> {
        self.check_writable()?;
        let existing = self.inner.queues.read().get(name).cloned();
        if let Some(shared) = existing {
            if let Some(patch) = patch {
                let config = apply_patch(shared.state.lock().queue.config(), patch)?;
                let (_, lsn) = self.apply(name, &shared, Op::Configure(config))?;
                self.settle(lsn).await?;
            }
            return Ok((self.queue(name)?, false));
        }
        let defaults = QueueConfig {
            lease_ms: self.inner.options.default_lease_ms,
            ..QueueConfig::default()
        };
        let config = match patch {
            Some(patch) => apply_patch(defaults, patch)?,
            None => defaults,
        };
        let created = {
            let mut queues = self.inner.queues.write();
            let max = self.inner.options.max_queues;
            if queues.contains_key(name) {
                None
            } else if max > 0 && queues.len() >= max {
                return Err(Error::TooManyQueues { max });
            } else {
                let mut queue = Queue::new(config);
                queue.set_key_retention(self.inner.options.key_retention_ms);
                let stats = stats_of(name, &queue, self.inner.clock.now_ms());
                let lsn = self.inner.data.as_ref().map(|d| {
                    let record = RecordRef::Create {
                        queue: name,
                        config: &config,
                        ids: queue.id_state(),
                    };
                    d.writer.append(|buf| journal::frame(&record, buf))
                });
                queues.insert(name.into(), Shared::new(queue));
                Some((stats, lsn))
            }
        };
        // None: created by a concurrent request between the two looks; it exists now.
        let Some((stats, lsn)) = created else {
            return Ok((self.queue(name)?, false));
        };
        self.settle(lsn).await?;
        Ok((stats, true))
    }

    /// `GET /queues/{q}`.
    pub fn queue(&self, name: &str) -> Result<QueueStats> {
        self.read(name, |q, now| stats_of(name, q, now))
    }

    /// `DELETE /queues/{q}`: its leases become invalid and its long polls answer 404.
    pub async fn delete_queue(&self, name: &str) -> Result<QueueStats> {
        self.check_writable()?;
        let (shared, stats, lsn) = {
            let mut queues = self.inner.queues.write();
            let shared = queues
                .remove(name)
                .ok_or_else(|| Error::QueueNotFound(name.to_string()))?;
            let mut state = shared.state.lock();
            state.deleted = true;
            self.settle_memory(state.queue.held_bytes(), 0, 0);
            let lsn = self.inner.data.as_ref().map(|d| {
                d.writer
                    .append(|buf| journal::frame(&RecordRef::Delete { queue: name }, buf))
            });
            let stats = stats_of(name, &state.queue, self.inner.clock.now_ms());
            drop(state);
            (shared, stats, lsn)
        };
        shared.ready.notify_waiters();
        self.settle(lsn).await?;
        Ok(stats)
    }

    /// `POST /queues/{q}/drain`.
    pub async fn drain(&self, name: &str) -> Result<QueueStats> {
        self.change(name, Op::Drain).await?;
        self.queue(name)
    }

    /// `POST /queues/{q}/pause` and `/resume`.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<QueueStats> {
        self.change(name, Op::SetPaused(paused)).await?;
        // Paused: waiters answer 204 at once. Resumed: they may find items now.
        self.get(name)?.ready.notify_waiters();
        self.queue(name)
    }

    /// `GET /stats`: every queue, sorted by name.
    pub fn stats(&self) -> Vec<QueueStats> {
        let mut queues = self.queue_list();
        queues.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let now = self.inner.clock.now_ms();
        queues
            .iter()
            .map(|(name, shared)| stats_of(name, &shared.state.lock().queue, now))
            .collect()
    }

    /// Adds items, all or none. One `(id, duplicate)` per item.
    pub async fn enqueue(
        &self,
        name: &str,
        items: Vec<NewItem>,
        delay_ms: u64,
    ) -> Result<Vec<(Id, bool)>> {
        let changed = match self.change(name, Op::Enqueue { items, delay_ms }).await {
            // Taken apart here, with no queue's lock held: what holds the memory.
            Err(Error::MemoryFull {
                held, adding, max, ..
            }) => {
                return Err(Error::MemoryFull {
                    held,
                    adding,
                    max,
                    holders: self.memory_holders(),
                });
            }
            other => other?,
        };
        match changed {
            Outcome::Enqueued(result) => Ok(result?),
            other => Err(unexpected(other)),
        }
    }

    /// Hands out items, long-polling up to `req.wait` when none is ready.
    pub async fn dequeue(&self, name: &str, req: DequeueRequest) -> Result<DequeueOutcome> {
        self.check_writable()?;
        let shared = self.get(name)?;
        let wait = req.wait;
        let look = |_left| self.try_dequeue(name, &shared, req.clone());
        let waiting = &self.inner.waiting;
        super::long_poll(&shared.ready, wait, &self.inner.shutdown, waiting, look).await
    }

    async fn try_dequeue(
        &self,
        name: &str,
        shared: &Shared,
        req: DequeueRequest,
    ) -> Result<DequeueOutcome> {
        let lease_ms = match req.lease {
            LeaseSpec::None => None,
            LeaseSpec::QueueDefault => Some(shared.state.lock().queue.config().lease_ms),
            LeaseSpec::Millis(ms) => Some(ms),
        };
        let op = Op::Dequeue {
            max: req.max as u32,
            lease_ms,
        };
        let (outcome, lsn) = self.apply(name, shared, op)?;
        let Outcome::Taken(taken) = outcome else {
            return Err(unexpected(outcome));
        };
        if let (Some(consumer), Taken::Items(items)) = (&req.consumer, &taken) {
            let leases = items.iter().filter_map(|h| Some(h.lease?.id));
            shared.state.lock().queue.name_leases(leases, consumer);
        }
        match taken {
            Taken::Items(items) => {
                self.settle(lsn).await?;
                Ok(DequeueOutcome::Items(
                    items
                        .into_iter()
                        .map(|h| Delivery {
                            id: h.id,
                            body: h.body,
                            lease: h.lease,
                        })
                        .collect(),
                ))
            }
            Taken::Empty | Taken::Paused => {
                self.settle(lsn).await?;
                let state = shared.state.lock();
                Ok(DequeueOutcome::Empty {
                    depth: state.queue.depth(),
                    inflight: state.queue.inflight(),
                    delayed: state.queue.delayed(),
                    paused: state.queue.paused(),
                })
            }
        }
    }

    /// `POST /leases/{lease}/ack`: [`MemoryStore::ack_many`] of one, without its lists.
    pub async fn ack(&self, name: &str, lease: &str) -> Result<()> {
        let Some(id) = Id::parse(lease) else {
            // As a batch ack would answer: the queue's own errors first.
            self.check_writable()?;
            self.get(name)?;
            return Err(Error::LeaseNotFound(lease.to_string()));
        };
        match self.change(name, Op::Ack { leases: vec![id] }).await? {
            Outcome::Each(mut results) => results
                .pop()
                .expect("one result")
                .map_err(|e| lease_error(e, lease)),
            other => Err(unexpected(other)),
        }
    }

    /// `POST /ack`: many acks in one change; one result per lease id.
    pub async fn ack_many(&self, name: &str, leases: &[String]) -> Result<Vec<Result<()>>> {
        self.each_lease(name, leases, |leases| Op::Ack { leases })
            .await
    }

    /// `POST /nack`: many nacks in one change; one result per lease id.
    pub async fn nack_many(
        &self,
        name: &str,
        leases: &[String],
        delay_ms: u64,
    ) -> Result<Vec<Result<()>>> {
        self.each_lease(name, leases, |leases| Op::NackMany { leases, delay_ms })
            .await
    }

    /// `POST /release`: unstarted items back to the front; one result per lease id.
    pub async fn release(&self, name: &str, leases: &[String]) -> Result<Vec<Result<()>>> {
        self.each_lease(name, leases, |leases| Op::Release { leases })
            .await
    }

    /// `POST /extend`: many extends in one change (`None`: the queue's lease length); each
    /// one's new deadline.
    pub async fn extend_many(
        &self,
        name: &str,
        leases: &[String],
        lease_ms: Option<u64>,
    ) -> Result<Vec<Result<u64>>> {
        let lease_ms = match lease_ms {
            Some(ms) => ms,
            None => self.read(name, |q, _| q.config().lease_ms)?,
        };
        let valid = super::well_formed(leases);
        let ids = valid.iter().map(|(id, _)| *id).collect();
        let outcome = self
            .change(
                name,
                Op::ExtendMany {
                    leases: ids,
                    lease_ms,
                },
            )
            .await?;
        let Outcome::ExtendedMany(results) = outcome else {
            return Err(unexpected(outcome));
        };
        let results = results.into_iter().zip(&valid).map(|(r, (_, text))| {
            r.map(|info| info.deadline)
                .map_err(|e| lease_error(e, text))
        });
        Ok(super::in_given_order(leases, results))
    }

    /// Applies the op `make` builds from the well-formed lease ids among `leases`; one result
    /// per lease id given.
    async fn each_lease(
        &self,
        name: &str,
        leases: &[String],
        make: impl FnOnce(Vec<Id>) -> Op,
    ) -> Result<Vec<Result<()>>> {
        let valid = super::well_formed(leases);
        let outcome = self
            .change(name, make(valid.iter().map(|(id, _)| *id).collect()))
            .await?;
        let Outcome::Each(results) = outcome else {
            return Err(unexpected(outcome));
        };
        let results = results
            .into_iter()
            .zip(&valid)
            .map(|(r, (_, text))| r.map_err(|e| lease_error(e, text)));
        Ok(super::in_given_order(leases, results))
    }

    /// `POST /leases/{lease}/nack`.
    pub async fn nack(&self, name: &str, lease: &str, delay_ms: u64) -> Result<()> {
        let id = parse_lease(lease)?;
        match self
            .change(
                name,
                Op::Nack {
                    lease: id,
                    delay_ms,
                },
            )
            .await?
        {
            Outcome::Nacked(result) => result.map_err(|e| lease_error(e, lease)),
            other => Err(unexpected(other)),
        }
    }

    /// `POST /leases/{lease}/extend`: `None` uses the queue's lease length.
    pub async fn extend(
        &self,
        name: &str,
        lease: &str,
        lease_ms: Option<u64>,
    ) -> Result<(LeaseInfo, Id, Box<str>)> {
        let id = parse_lease(lease)?;
        let lease_ms = match lease_ms {
            Some(ms) => ms,
            None => self.read(name, |q, _| q.config().lease_ms)?,
        };
        match self
            .change(
                name,
                Op::Extend {
                    lease: id,
                    lease_ms,
                },
            )
            .await?
        {
            Outcome::Extended(result) => result.map_err(|e| lease_error(e, lease)),
            other => Err(unexpected(other)),
        }
    }

    /// `GET /dead`.
    pub fn dead_letters(&self, name: &str, limit: usize) -> Result<Vec<DeadItem>> {
        self.read(name, |q, _| q.dead_letters(limit))
    }

    async fn count(&self, name: &str, op: Op) -> Result<u64> {
        match self.change(name, op).await? {
            Outcome::Count(n) => Ok(n),
            other => Err(unexpected(other)),
        }
    }

    /// `POST /dead/requeue`.
    pub async fn requeue_dead(&self, name: &str) -> Result<u64> {
        self.count(name, Op::RequeueDead).await
    }

    /// `DELETE /dead`.
    pub async fn purge_dead(&self, name: &str) -> Result<u64> {
        self.count(name, Op::PurgeDead).await
    }

    /// `GET /messages`.
    pub fn peek(&self, name: &str, limit: usize) -> Result<Vec<(Id, Box<str>)>> {
        self.read(name, |q, _| q.peek(limit))
    }

    /// `GET /queues/{q}/items/...`: where an item is (a walk of the queue, see [`Queue::find`]).
    pub fn find_item(&self, name: &str, item: ItemRef<'_>) -> Result<FoundItem> {
        // Time acts first (as every Redis call does): a lease past its deadline is not shown
        // as held, its item is back where it went.
        let shared = self.get(name)?;
        self.apply(name, &shared, Op::Tick)?;
        self.read(name, |q, _| {
            let id = match item {
                ItemRef::Id(text) => Id::parse(text),
                ItemRef::Key(key) => q.key_holder(key),
            };
            id.and_then(|id| q.find(id))
        })?
        .ok_or_else(|| item.not_found(name))
    }

    /// `GET /queues/{q}/leases`: up to `limit` running leases, oldest first.
    pub fn leases(&self, name: &str, limit: usize) -> Result<Vec<HeldLease>> {
        self.read(name, |q, now| q.held_leases(limit, now))
    }

    /// Whether the store can serve requests (`/readyz`).
    pub fn is_ready(&self) -> bool {
        !self.inner.shutdown.is_cancelled() && self.check_writable().is_ok()
    }

    /// Applies lease expiries and delays as they fall due, waking waiters, until shutdown.
    pub async fn run_sweeper(self) {
        let inner = &self.inner;
        loop {
            let next = inner.next_wake.load(Ordering::Acquire);
            let sleep = async {
                if next == u64::MAX {
                    std::future::pending::<()>().await;
                } else {
                    tokio::time::sleep_until(inner.clock.instant_at(next)).await;
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = inner.sweeper.notified() => continue,
                _ = inner.shutdown.cancelled() => return,
            }
            inner.next_wake.store(u64::MAX, Ordering::Release);
            let queues: Vec<(Box<str>, Arc<Shared>)> = inner
                .queues
                .read()
                .iter()
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect();
            for (name, shared) in queues {
                // Errors here mean "deleted meanwhile": nothing to sweep.
                let _ = self.apply(&name, &shared, Op::Tick);
            }
        }
    }

    /// Writes a snapshot when the journal has grown past `--compact-bytes`, until shutdown.
    pub async fn run_compactor(self) {
        let Some(data) = &self.inner.data else { return };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.inner.shutdown.cancelled() => return,
            }
            if data.writer.bytes_since_rotate() < self.inner.options.compact_bytes {
                continue;
            }
            let store = self.clone();
            match tokio::task::spawn_blocking(move || store.compact_now()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "snapshot failed; the journal keeps every change meanwhile")
                }
                Err(e) => tracing::error!(error = %e, "snapshot task failed"),
            }
        }
    }

    /// Snapshots every queue at one consistent point and drops the journal before it.
    /// Blocks: changes wait while the queues are copied out (not while the file is written).
    pub fn compact_now(&self) -> anyhow::Result<()> {
        let Some(data) = &self.inner.data else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let (cut, body, queues) = {
            let registry = self.inner.queues.read();
            let mut entries: Vec<_> = registry.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let guards: Vec<_> = entries.iter().map(|(n, s)| (n, s.state.lock())).collect();
            let cut = data.writer.rotate();
            let mut body = Vec::new();
            for (name, state) in &guards {
                journal::encode_queue(name, &state.queue, &mut body);
            }
            (cut, body, guards.len())
        };
        let paused_ms = started.elapsed().as_millis() as u64;
        let bytes = body.len();
        data.write_snapshot(cut, body, queues)?;
        tracing::info!(
            segment = cut,
            queues,
            bytes,
            paused_ms,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot written; older journal segments removed"
        );
        Ok(())
    }

    /// Flushes and closes the journal (after the server stopped taking requests).
    pub fn close(&self) {
        if let Some(data) = &self.inner.data {
            data.writer.close();
        }
    }
}
