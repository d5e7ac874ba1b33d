//! The in-memory store: every queue in this process, one lock per queue.
//!
//! Owns what the broker must not: locking, waking long-poll waiters (a tokio `Notify` per
//! queue, so a waiting request costs no CPU), and one sweeper task that applies lease expiries
//! and delays when they fall due, sleeping until the earliest deadline of all queues.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use foldhash::fast::RandomState;
use memq::{QueueConfigPatch, QueueStats};
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Clock, Delivery, DequeueOutcome, DequeueRequest, LeaseSpec};
use crate::broker::{
    Autoscale, DeadItem, Id, LeaseError, LeaseInfo, MAX_PARALLELISM, NewItem, Queue, QueueConfig,
    Taken,
};
use crate::error::{Error, Result};

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
    default_lease_ms: u64,
    /// Earliest deadline the sweeper must act on (u64::MAX: none).
    next_wake: AtomicU64,
    sweeper: Notify,
    shutdown: CancellationToken,
}

/// Queues in memory. Cheap to clone; clones share the queues.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

fn apply_patch(mut config: QueueConfig, patch: &QueueConfigPatch) -> Result<QueueConfig> {
    if let Some(secs) = patch.lease_seconds {
        if secs == 0 || secs > 12 * 3600 {
            return Err(Error::InvalidJson(
                "leaseSeconds must be between 1 and 43200".into(),
            ));
        }
        config.lease_ms = secs * 1000;
    }
    if let Some(max) = patch.max_attempts {
        config.max_attempts = max;
    }
    if let Some(max) = patch.max_depth {
        config.max_depth = max;
    }
    if let Some(autoscale) = patch.autoscale {
        config.autoscale = autoscale.map(autoscale_config).transpose()?;
    }
    Ok(config)
}

fn autoscale_config(a: memq::Autoscale) -> Result<Autoscale> {
    if a.max_parallelism == 0 || a.max_parallelism > MAX_PARALLELISM {
        return Err(Error::InvalidJson(format!(
            "autoscale.maxParallelism must be between 1 and {MAX_PARALLELISM}"
        )));
    }
    if a.items_per_pod == 0 {
        return Err(Error::InvalidJson(
            "autoscale.itemsPerPod must be at least 1".into(),
        ));
    }
    Ok(Autoscale {
        max_parallelism: a.max_parallelism,
        items_per_pod: a.items_per_pod,
    })
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
    }
}

fn lease_error(e: LeaseError, lease: &str) -> Error {
    match e {
        LeaseError::NotFound => Error::LeaseNotFound(lease.to_string()),
        LeaseError::Expired => Error::LeaseExpired(lease.to_string()),
    }
}

impl MemoryStore {
    /// An empty store; new queues lease for `default_lease_ms` unless told otherwise.
    pub fn new(default_lease_ms: u64, shutdown: CancellationToken) -> Self {
        Self {
            inner: Arc::new(Inner {
                queues: RwLock::new(HashMap::default()),
                clock: Clock::new(),
                default_lease_ms,
                next_wake: AtomicU64::new(u64::MAX),
                sweeper: Notify::new(),
                shutdown,
            }),
        }
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

    /// Runs `f` on the queue under its lock; a queue deleted meanwhile is not found.
    fn with<T>(&self, name: &str, f: impl FnOnce(&mut Queue, u64) -> T) -> Result<T> {
        let shared = self.get(name)?;
        let mut state = shared.state.lock();
        if state.deleted {
            return Err(Error::QueueNotFound(name.to_string()));
        }
        let now = self.inner.clock.now_ms();
        let became_ready = state.queue.tick(now);
        let out = f(&mut state.queue, now);
        let deadline = state.queue.next_deadline();
        drop(state);
        shared.wake(became_ready);
        if let Some(deadline) = deadline {
            self.schedule(deadline);
        }
        Ok(out)
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
    pub fn create_queue(
        &self,
        name: &str,
        patch: Option<&QueueConfigPatch>,
    ) -> Result<(QueueStats, bool)> {
        let defaults = QueueConfig {
            lease_ms: self.inner.default_lease_ms,
            ..QueueConfig::default()
        };
        let mut queues = self.inner.queues.write();
        if let Some(shared) = queues.get(name).cloned() {
            drop(queues);
            let mut state = shared.state.lock();
            if let Some(patch) = patch {
                let config = apply_patch(state.queue.config(), patch)?;
                state.queue.set_config(config);
            }
            return Ok((
                stats_of(name, &state.queue, self.inner.clock.now_ms()),
                false,
            ));
        }
        let config = match patch {
            Some(patch) => apply_patch(defaults, patch)?,
            None => defaults,
        };
        let queue = Queue::new(config);
        let stats = stats_of(name, &queue, self.inner.clock.now_ms());
        queues.insert(
            name.into(),
            Arc::new(Shared {
                state: Mutex::new(QueueState {
                    queue,
                    deleted: false,
                }),
                ready: Notify::new(),
            }),
        );
        Ok((stats, true))
    }

    /// `GET /queues/{q}`.
    pub fn queue(&self, name: &str) -> Result<QueueStats> {
        self.with(name, |q, now| stats_of(name, q, now))
    }

    /// `DELETE /queues/{q}`: its leases become invalid and its long polls answer 404.
    pub fn delete_queue(&self, name: &str) -> Result<QueueStats> {
        let shared = self
            .inner
            .queues
            .write()
            .remove(name)
            .ok_or_else(|| Error::QueueNotFound(name.to_string()))?;
        let mut state = shared.state.lock();
        state.deleted = true;
        let stats = stats_of(name, &state.queue, self.inner.clock.now_ms());
        drop(state);
        shared.ready.notify_waiters();
        Ok(stats)
    }

    /// `POST /queues/{q}/drain`.
    pub fn drain(&self, name: &str) -> Result<QueueStats> {
        self.with(name, |q, now| {
            q.drain(now);
            stats_of(name, q, now)
        })
    }

    /// `POST /queues/{q}/pause` and `/resume`.
    pub fn set_paused(&self, name: &str, paused: bool) -> Result<QueueStats> {
        let stats = self.with(name, |q, now| {
            q.set_paused(paused);
            stats_of(name, q, now)
        })?;
        if let Ok(shared) = self.get(name) {
            // Paused: waiters answer 204 at once. Resumed: they may find items now.
            shared.ready.notify_waiters();
        }
        Ok(stats)
    }

    /// `GET /stats`: every queue, sorted by name.
    pub fn stats(&self) -> Vec<QueueStats> {
        let mut queues: Vec<(Box<str>, Arc<Shared>)> = self
            .inner
            .queues
            .read()
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        queues.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let now = self.inner.clock.now_ms();
        queues
            .iter()
            .map(|(name, shared)| {
                let mut state = shared.state.lock();
                state.queue.tick(now);
                stats_of(name, &state.queue, now)
            })
            .collect()
    }

    /// Adds items, all or none. One `(id, duplicate)` per item.
    pub fn enqueue(
        &self,
        name: &str,
        items: Vec<NewItem>,
        delay_ms: u64,
    ) -> Result<Vec<(Id, bool)>> {
        let shared = self.get(name)?;
        let mut state = shared.state.lock();
        if state.deleted {
            return Err(Error::QueueNotFound(name.to_string()));
        }
        let now = self.inner.clock.now_ms();
        let before = state.queue.depth();
        let out = if items.len() == 1 {
            let item = items.into_iter().next().expect("one item");
            vec![state.queue.enqueue(item, delay_ms, now)?]
        } else {
            state.queue.enqueue_batch(items, delay_ms, now)?
        };
        let became_ready = (state.queue.depth() - before) as usize;
        let deadline = if delay_ms > 0 {
            state.queue.next_deadline()
        } else {
            None
        };
        drop(state);
        shared.wake(became_ready);
        if let Some(deadline) = deadline {
            self.schedule(deadline);
        }
        Ok(out)
    }

    /// Hands out items, long-polling up to `req.wait` when none is ready.
    pub async fn dequeue(&self, name: &str, req: DequeueRequest) -> Result<DequeueOutcome> {
        let shared = self.get(name)?;
        let until = tokio::time::Instant::now() + req.wait;
        loop {
            let notified = shared.ready.notified();
            tokio::pin!(notified);
            // Registered before looking, so an enqueue between the look and the wait still wakes us.
            notified.as_mut().enable();
            let outcome = self.try_dequeue(name, &shared, req)?;
            if matches!(
                outcome,
                DequeueOutcome::Items(_) | DequeueOutcome::Empty { paused: true, .. }
            ) || req.wait.is_zero()
                || tokio::time::Instant::now() >= until
            {
                return Ok(outcome);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
                _ = self.inner.shutdown.cancelled() => return Ok(outcome),
            }
        }
    }

    fn try_dequeue(
        &self,
        name: &str,
        shared: &Shared,
        req: DequeueRequest,
    ) -> Result<DequeueOutcome> {
        let mut state = shared.state.lock();
        if state.deleted {
            return Err(Error::QueueNotFound(name.to_string()));
        }
        let now = self.inner.clock.now_ms();
        let lease_ms = match req.lease {
            LeaseSpec::None => None,
            LeaseSpec::QueueDefault => Some(state.queue.config().lease_ms),
            LeaseSpec::Millis(ms) => Some(ms),
        };
        let taken = state.queue.dequeue(req.max, lease_ms, now);
        let outcome = match taken {
            Taken::Items(items) => DequeueOutcome::Items(
                items
                    .into_iter()
                    .map(|h| Delivery {
                        id: h.id,
                        body: h.body,
                        lease: h.lease,
                    })
                    .collect(),
            ),
            Taken::Empty | Taken::Paused => DequeueOutcome::Empty {
                depth: state.queue.depth(),
                inflight: state.queue.inflight(),
                paused: state.queue.paused(),
            },
        };
        let deadline = state.queue.next_deadline();
        drop(state);
        if let Some(deadline) = deadline {
            self.schedule(deadline);
        }
        Ok(outcome)
    }

    /// `POST /leases/{lease}/ack`.
    pub fn ack(&self, name: &str, lease: &str) -> Result<()> {
        let id = Id::parse(lease).ok_or_else(|| Error::LeaseNotFound(lease.to_string()))?;
        self.with(name, |q, now| q.ack(id, now))?
            .map_err(|e| lease_error(e, lease))
    }

    /// `POST /ack`: many acks under one lock; one result per lease id.
    pub fn ack_many(&self, name: &str, leases: &[String]) -> Result<Vec<Result<(), Error>>> {
        self.with(name, |q, now| {
            leases
                .iter()
                .map(|lease| match Id::parse(lease) {
                    None => Err(Error::LeaseNotFound(lease.clone())),
                    Some(id) => q.ack(id, now).map_err(|e| lease_error(e, lease)),
                })
                .collect()
        })
    }

    /// `POST /leases/{lease}/nack`.
    pub fn nack(&self, name: &str, lease: &str, delay_ms: u64) -> Result<()> {
        let id = Id::parse(lease).ok_or_else(|| Error::LeaseNotFound(lease.to_string()))?;
        let shared = self.get(name)?;
        self.with(name, |q, now| {
            let before = q.depth();
            let result = q.nack(id, delay_ms, now);
            (result, q.depth() > before)
        })
        .and_then(|(result, readied)| {
            if readied {
                shared.wake(1);
            }
            result.map_err(|e| lease_error(e, lease))
        })
    }

    /// `POST /leases/{lease}/extend`: `None` uses the queue's lease length.
    pub fn extend(
        &self,
        name: &str,
        lease: &str,
        lease_ms: Option<u64>,
    ) -> Result<(LeaseInfo, Id, Box<str>)> {
        let id = Id::parse(lease).ok_or_else(|| Error::LeaseNotFound(lease.to_string()))?;
        self.with(name, |q, now| {
            let ms = lease_ms.unwrap_or(q.config().lease_ms);
            q.extend(id, ms, now).map(|info| {
                let (item, body) = q.leased_item(id).expect("lease just extended");
                (info, item, body)
            })
        })?
        .map_err(|e| lease_error(e, lease))
    }

    /// `GET /dead`.
    pub fn dead_letters(&self, name: &str, limit: usize) -> Result<Vec<DeadItem>> {
        self.with(name, |q, _| q.dead_letters(limit))
    }

    /// `POST /dead/requeue`.
    pub fn requeue_dead(&self, name: &str) -> Result<u64> {
        let shared = self.get(name)?;
        let n = self.with(name, |q, _| q.requeue_dead())?;
        shared.wake(n as usize);
        Ok(n)
    }

    /// `DELETE /dead`.
    pub fn purge_dead(&self, name: &str) -> Result<u64> {
        self.with(name, |q, now| q.purge_dead(now))
    }

    /// `GET /messages`.
    pub fn peek(&self, name: &str, limit: usize) -> Result<Vec<(Id, Box<str>)>> {
        self.with(name, |q, _| q.peek(limit))
    }

    /// Whether the store can serve requests (`/readyz`).
    pub fn is_ready(&self) -> bool {
        !self.inner.shutdown.is_cancelled()
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
            let queues: Vec<Arc<Shared>> = inner.queues.read().values().cloned().collect();
            let now = inner.clock.now_ms();
            for shared in queues {
                let mut state = shared.state.lock();
                let became_ready = state.queue.tick(now);
                let deadline = state.queue.next_deadline();
                drop(state);
                shared.wake(became_ready);
                if let Some(deadline) = deadline {
                    inner.next_wake.fetch_min(deadline, Ordering::AcqRel);
                }
            }
        }
    }
}
