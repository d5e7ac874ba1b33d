//! Where queues live. One interface for the HTTP layer, one variant per backend:
//! memory (the default) keeps every queue in this process (durable with `--data-dir`); redis
//! (`--redis`) keeps them in Redis, shared by every replica. Handlers never know which one
//! serves them.

mod clock;
pub mod journal;
mod memory;
mod redis;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

pub use self::redis::{
    LAYOUT as REDIS_LAYOUT, OLDEST_LAYOUT as OLDEST_REDIS_LAYOUT, RedisOptions, RedisStore,
};
pub use clock::{Clock, rfc3339_ms};
use journal::FsyncMode;
pub use memory::MemoryStore;

use memq::{QueueConfigPatch, QueueStats};
use tokio_util::sync::CancellationToken;

use crate::broker::{Autoscale, DeadItem, Id, LeaseInfo, NewItem, QueueConfig};
pub use crate::broker::{FoundItem, HeldLease, Whereabouts};
use crate::error::{Error, Result};
use memq::limits::{MAX_LEASE, MAX_PARALLELISM};

/// How a dequeue takes items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseSpec {
    /// kuard's dequeue: removed for good.
    None,
    /// Leased for the queue's `leaseSeconds`.
    QueueDefault,
    /// Leased for this many milliseconds.
    Millis(u64),
}

/// An item as `GET /queues/{q}/items/...` names it.
#[derive(Debug, Clone, Copy)]
pub enum ItemRef<'a> {
    /// Its id (as given: a malformed one is not found).
    Id(&'a str),
    /// The producer key it was enqueued with (`?id=` of the enqueue).
    Key(&'a str),
}

impl ItemRef<'_> {
    /// The 404 for an item the queue does not hold.
    pub fn not_found(self, queue: &str) -> Error {
        Error::ItemNotFound(match self {
            ItemRef::Id(id) => format!(
                "item {id:?} is not in queue {queue:?}: acked, drained, taken by a kuard-style dequeue, purged, or never there"
            ),
            ItemRef::Key(key) => format!(
                "no item with key {key:?} is in queue {queue:?}: its item left (acked, drained, taken, purged) or the key was never used"
            ),
        })
    }
}

/// One dequeue request.
#[derive(Debug, Clone)]
pub struct DequeueRequest {
    /// Most items to hand out.
    pub max: usize,
    /// Leasing mode.
    pub lease: LeaseSpec,
    /// Long-poll time; zero answers at once.
    pub wait: Duration,
    /// Who takes the items (`X-Memq-Consumer`), kept with their leases.
    pub consumer: Option<std::sync::Arc<str>>,
}

/// An item handed out, ready for the wire.
#[derive(Debug)]
pub struct Delivery {
    /// Item id.
    pub id: Id,
    /// Item text.
    pub body: Box<str>,
    /// Lease, unless removed for good.
    pub lease: Option<LeaseInfo>,
}

/// Result of a dequeue.
#[derive(Debug)]
pub enum DequeueOutcome {
    /// Items were handed out.
    Items(Vec<Delivery>),
    /// Nothing ready (or paused); the queue's counts for the 204 headers.
    Empty {
        /// Ready items.
        depth: u64,
        /// Leased items.
        inflight: u64,
        /// Items waiting for a delay.
        delayed: u64,
        /// The queue is paused.
        paused: bool,
    },
}

tokio::task_local! {
    /// The time the long poll of the request being served has spent waiting, when its caller
    /// keeps count ([`timing_waits`]): `None` until a poll with a `wait` starts.
    static WAITED: std::cell::Cell<Option<Duration>>;
}

/// Runs `request` and answers its output with the time its long polls spent waiting for an
/// item (`None` when none with a `wait` ran), so that the request's own latency can be told
/// from the idle wait its client asked for.
///
/// A combinator, not an `async` block that awaits `request`: that would hold the request's
/// future twice, and a waiting long poll holds this one for as long as it waits.
pub fn timing_waits<F: Future>(request: F) -> impl Future<Output = (F::Output, Option<Duration>)> {
    use futures_util::FutureExt;
    let timed = request.map(|output| (output, WAITED.with(std::cell::Cell::get)));
    WAITED.scope(std::cell::Cell::new(None), timed)
}

/// Adds `waited` to the count of [`timing_waits`], if a caller keeps one.
fn count_wait(waited: Duration) {
    let _ = WAITED.try_with(|w| w.set(Some(w.get().unwrap_or_default() + waited)));
}

/// The long poll both stores run: `look` (given the time left of `wait`) and, while it finds
/// nothing to hand out, wait for `notify`, the end of `wait` or `shutdown`, then look again.
/// Ends early when the queue is finished (nothing ready, delayed or leased) after this poll saw
/// work outstanding: the work it waited for was done elsewhere. A poll that starts on a finished
/// queue waits, for a producer that has not begun yet, also when a wake comes first: a wake
/// alone tells nothing (a `notify_one` whose item another consumer took leaves a permit that
/// wakes the next poll at once).
/// While it waits, it counts itself in `waiting` (the `memq_long_polls_waiting` gauge) and its
/// time in [`timing_waits`].
async fn long_poll<F, Fut>(
    notify: &tokio::sync::Notify,
    wait: Duration,
    shutdown: &CancellationToken,
    waiting: &std::sync::atomic::AtomicU64,
    mut look: F,
) -> Result<DequeueOutcome>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<DequeueOutcome>>,
{
    if wait.is_zero() {
        return look(Duration::ZERO).await;
    }
    let until = tokio::time::Instant::now() + wait;
    count_wait(Duration::ZERO);
    let mut saw_work = false;
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        // Registered before looking, so a wake between the look and the wait still counts.
        notified.as_mut().enable();
        let outcome = look(until.saturating_duration_since(tokio::time::Instant::now())).await?;
        let finished = matches!(
            outcome,
            DequeueOutcome::Empty {
                depth: 0,
                inflight: 0,
                delayed: 0,
                ..
            }
        );
        if matches!(
            outcome,
            DequeueOutcome::Items(_) | DequeueOutcome::Empty { paused: true, .. }
        ) || (saw_work && finished)
            || tokio::time::Instant::now() >= until
        {
            return Ok(outcome);
        }
        saw_work |= !finished;
        let _counted = Waiting::start(waiting);
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(until) => {}
            _ = shutdown.cancelled() => return Ok(outcome),
        }
    }
}

/// One long poll in a waiting count, and its time in [`timing_waits`], until dropped (also
/// when its request goes away or runs out of time).
struct Waiting<'a> {
    count: &'a std::sync::atomic::AtomicU64,
    since: tokio::time::Instant,
}

impl<'a> Waiting<'a> {
    fn start(count: &'a std::sync::atomic::AtomicU64) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            count,
            since: tokio::time::Instant::now(),
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.count
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        count_wait(self.since.elapsed());
    }
}

/// The queue store behind the HTTP routes: one variant per backend, the same answers from each.
#[derive(Clone)]
pub enum Store {
    /// Queues in this process (durable with `--data-dir`).
    Memory(MemoryStore),
    /// Queues in Redis, shared by every replica (`--redis`).
    Redis(RedisStore),
}

/// Where and how the store keeps its data.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Lease length of new queues, ms.
    pub default_lease_ms: u64,
    /// `Some`: durable in this directory.
    pub data_dir: Option<PathBuf>,
    /// When a change counts as stored.
    pub fsync: FsyncMode,
    /// Journal bytes after which a snapshot replaces the old segments.
    pub compact_bytes: u64,
    /// `Some`: the queues live in Redis instead (the other fields but the lease don't apply).
    pub redis: Option<RedisOptions>,
    /// Most bytes the items of all queues may count ([`crate::broker::item_cost`]);
    /// `u64::MAX`: no limit.
    pub max_memory: u64,
    /// Most queues; 0: no limit.
    pub max_queues: usize,
    /// How long a dedup key stays taken after its item left (`--dedup-window`), ms.
    pub key_retention_ms: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            default_lease_ms: 30_000,
            data_dir: None,
            fsync: FsyncMode::Always,
            compact_bytes: 64 << 20,
            redis: None,
            max_memory: u64::MAX,
            max_queues: 0,
            key_retention_ms: crate::broker::KEY_RETENTION_MS,
        }
    }
}

/// A lease id from a request; one that cannot be one is a lease that does not exist.
pub(crate) fn parse_lease(lease: &str) -> Result<Id> {
    Id::parse(lease).ok_or_else(|| Error::LeaseNotFound(lease.to_string()))
}

/// The lease ids of a batch request that can be lease ids, with their text, in order.
pub(crate) fn well_formed(given: &[String]) -> Vec<(Id, &str)> {
    given
        .iter()
        .filter_map(|text| Some((Id::parse(text)?, text.as_str())))
        .collect()
}

/// The answer to a batch request on leases: `results` (for its [`well_formed`] ids, in order)
/// beside every id given, a malformed one being a lease that does not exist.
pub(crate) fn in_given_order<T>(
    given: &[String],
    results: impl IntoIterator<Item = Result<T>>,
) -> Vec<Result<T>> {
    let mut results = results.into_iter();
    given
        .iter()
        .map(|lease| {
            parse_lease(lease)?;
            results.next().unwrap_or_else(|| {
                Err(Error::BackendUnavailable(format!(
                    "internal: no result for lease {lease:?}"
                )))
            })
        })
        .collect()
}

/// Applies a `PUT` body to a queue's config, checking it.
pub(crate) fn apply_patch(
    mut config: QueueConfig,
    patch: &QueueConfigPatch,
) -> Result<QueueConfig> {
    if let Some(secs) = patch.lease_seconds {
        if secs == 0 || secs > MAX_LEASE.as_secs() {
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
        config.max_depth = json_int("maxDepth", max)?;
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
        items_per_pod: json_int("autoscale.itemsPerPod", a.items_per_pod)?,
    })
}

/// Refuses a count past the API's integers (int64, as `/openapi.json` describes them): clients
/// in most languages hold no larger one.
fn json_int(field: &str, n: u64) -> Result<u64> {
    if n > i64::MAX as u64 {
        return Err(Error::InvalidJson(format!(
            "{field} must be at most {}",
            i64::MAX
        )));
    }
    Ok(n)
}

/// Runs `$body` with `$s` bound to the backend of `$store`.
macro_rules! each {
    ($store:expr, $s:ident => $body:expr) => {
        match $store {
            Store::Memory($s) => $body,
            Store::Redis($s) => $body,
        }
    };
}

impl Store {
    /// Opens the backend the options name.
    pub fn open(options: StoreOptions, shutdown: CancellationToken) -> anyhow::Result<Self> {
        if let Some(redis) = &options.redis {
            if options.max_memory != u64::MAX {
                tracing::info!(
                    "with --redis the items live in Redis: its maxmemory bounds them, not --max-memory"
                );
            }
            return Ok(Store::Redis(RedisStore::open(
                redis,
                options.default_lease_ms,
                options.max_queues,
                options.key_retention_ms,
                shutdown,
            )?));
        }
        Ok(Store::Memory(MemoryStore::open(options, shutdown)?))
    }

    /// Before serving: the stored data's version, where it is not read at open (the Redis key
    /// layout: a newer one stops the start).
    pub async fn check_version(&self) -> anyhow::Result<()> {
        match self {
            Store::Memory(_) => Ok(()),
            Store::Redis(s) => s.claim_layout().await,
        }
    }

    /// `PUT /queues/{q}`: true when created.
    pub async fn create_queue(
        &self,
        name: &str,
        patch: Option<&QueueConfigPatch>,
    ) -> Result<(QueueStats, bool)> {
        each!(self, s => s.create_queue(name, patch).await)
    }

    /// `GET /queues/{q}`.
    pub async fn queue(&self, name: &str) -> Result<QueueStats> {
        match self {
            Store::Memory(s) => s.queue(name),
            Store::Redis(s) => s.queue(name).await,
        }
    }

    /// `DELETE /queues/{q}`.
    pub async fn delete_queue(&self, name: &str) -> Result<QueueStats> {
        each!(self, s => s.delete_queue(name).await)
    }

    /// `POST /queues/{q}/drain`.
    pub async fn drain(&self, name: &str) -> Result<QueueStats> {
        each!(self, s => s.drain(name).await)
    }

    /// `POST /queues/{q}/pause` and `/resume`.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<QueueStats> {
        each!(self, s => s.set_paused(name, paused).await)
    }

    /// `GET /stats`, sorted by name.
    pub async fn stats(&self) -> Result<Vec<QueueStats>> {
        match self {
            Store::Memory(s) => Ok(s.stats()),
            Store::Redis(s) => s.stats().await,
        }
    }

    /// Adds items, all or none: `(id, duplicate)` per item.
    pub async fn enqueue(
        &self,
        name: &str,
        items: Vec<NewItem>,
        delay_ms: u64,
    ) -> Result<Vec<(Id, bool)>> {
        each!(self, s => s.enqueue(name, items, delay_ms).await)
    }

    /// Hands out items, long-polling up to `req.wait`.
    pub async fn dequeue(&self, name: &str, req: DequeueRequest) -> Result<DequeueOutcome> {
        each!(self, s => s.dequeue(name, req).await)
    }

    /// Acks one lease.
    pub async fn ack(&self, name: &str, lease: &str) -> Result<()> {
        each!(self, s => s.ack(name, lease).await)
    }

    /// Acks many leases: one result each.
    pub async fn ack_many(&self, name: &str, leases: &[String]) -> Result<Vec<Result<()>>> {
        each!(self, s => s.ack_many(name, leases).await)
    }

    /// Gives a leased item back after `delay_ms`.
    pub async fn nack(&self, name: &str, lease: &str, delay_ms: u64) -> Result<()> {
        each!(self, s => s.nack(name, lease, delay_ms).await)
    }

    /// Gives many leased items back after `delay_ms` (with none, to the front in the order
    /// given): one result each.
    pub async fn nack_many(
        &self,
        name: &str,
        leases: &[String],
        delay_ms: u64,
    ) -> Result<Vec<Result<()>>> {
        each!(self, s => s.nack_many(name, leases, delay_ms).await)
    }

    /// Extends many leases (`None`: the queue's lease length): each one's new deadline (ms
    /// since the epoch), or why not.
    pub async fn extend_many(
        &self,
        name: &str,
        leases: &[String],
        lease_ms: Option<u64>,
    ) -> Result<Vec<Result<u64>>> {
        each!(self, s => s.extend_many(name, leases, lease_ms).await)
    }

    /// Gives leased items back that were never started: to the front in the order given,
    /// their attempt not counted. One result each.
    pub async fn release(&self, name: &str, leases: &[String]) -> Result<Vec<Result<()>>> {
        each!(self, s => s.release(name, leases).await)
    }

    /// Extends a lease (`None`: the queue's lease length).
    pub async fn extend(
        &self,
        name: &str,
        lease: &str,
        lease_ms: Option<u64>,
    ) -> Result<(LeaseInfo, Id, Box<str>)> {
        each!(self, s => s.extend(name, lease, lease_ms).await)
    }

    /// Up to `limit` dead letters.
    pub async fn dead_letters(&self, name: &str, limit: usize) -> Result<Vec<DeadItem>> {
        match self {
            Store::Memory(s) => s.dead_letters(name, limit),
            Store::Redis(s) => s.dead_letters(name, limit).await,
        }
    }

    /// Dead letters back to ready.
    pub async fn requeue_dead(&self, name: &str) -> Result<u64> {
        each!(self, s => s.requeue_dead(name).await)
    }

    /// Removes the dead letters.
    pub async fn purge_dead(&self, name: &str) -> Result<u64> {
        each!(self, s => s.purge_dead(name).await)
    }

    /// Up to `limit` ready items, not leased.
    pub async fn peek(&self, name: &str, limit: usize) -> Result<Vec<(Id, Box<str>)>> {
        match self {
            Store::Memory(s) => s.peek(name, limit),
            Store::Redis(s) => s.peek(name, limit).await,
        }
    }

    /// Where an item is: by its id, or by the producer key it was enqueued with.
    pub async fn find_item(&self, name: &str, item: ItemRef<'_>) -> Result<FoundItem> {
        match self {
            Store::Memory(s) => s.find_item(name, item),
            Store::Redis(s) => s.find_item(name, item).await,
        }
    }

    /// Up to `limit` running leases, oldest first.
    pub async fn leases(&self, name: &str, limit: usize) -> Result<Vec<HeldLease>> {
        match self {
            Store::Memory(s) => s.leases(name, limit),
            Store::Redis(s) => s.leases(name, limit).await,
        }
    }

    /// Bytes the items of all queues count for `--max-memory`, and the limit (`u64::MAX`: none);
    /// `None` for Redis, whose own `maxmemory` bounds the items.
    pub fn memory(&self) -> Option<(u64, u64)> {
        match self {
            Store::Memory(s) => Some(s.memory()),
            Store::Redis(_) => None,
        }
    }

    /// Long polls waiting now (of this replica, with Redis).
    pub fn waiting_polls(&self) -> u64 {
        match self {
            Store::Memory(s) => s.waiting_polls(),
            Store::Redis(s) => s.waiting_polls(),
        }
    }

    /// Whether the store can serve (`/readyz`).
    pub async fn is_ready(&self) -> bool {
        match self {
            Store::Memory(s) => s.is_ready(),
            Store::Redis(s) => s.is_ready().await,
        }
    }

    /// Background work of the backend (sweeping deadlines, compacting), until shutdown.
    pub async fn run_background(self) {
        match self {
            Store::Memory(s) => {
                tokio::join!(s.clone().run_sweeper(), s.run_compactor());
            }
            Store::Redis(s) => s.run_background().await,
        }
    }

    /// Flushes and closes the backend after the server stopped serving.
    pub async fn close(&self) {
        if let Store::Memory(memory) = self {
            let memory = memory.clone();
            let _ = tokio::task::spawn_blocking(move || memory.close()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    fn empty() -> DequeueOutcome {
        DequeueOutcome::Empty {
            depth: 0,
            inflight: 1,
            delayed: 0,
            paused: false,
        }
    }

    /// A look that takes `work` and finds items when `found` says so.
    async fn look(work: Duration, found: bool) -> Result<DequeueOutcome> {
        tokio::time::sleep(work).await;
        Ok(if found {
            DequeueOutcome::Items(Vec::new())
        } else {
            empty()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_poll_counts_its_idle_wait_and_not_its_work() {
        let (notify, shutdown, waiting) = (
            tokio::sync::Notify::new(),
            CancellationToken::new(),
            AtomicU64::new(0),
        );
        let ms = Duration::from_millis;
        // Nothing comes: the whole wait is idle, the look's 5 ms are not.
        let poll = long_poll(&notify, ms(4000), &shutdown, &waiting, |_| {
            look(ms(5), false)
        });
        let (outcome, waited) = timing_waits(poll).await;
        assert!(matches!(outcome, Ok(DequeueOutcome::Empty { .. })));
        assert_eq!(waited, Some(ms(3995)));
        // Found at once: a long poll that did not wait.
        let poll = long_poll(&notify, ms(4000), &shutdown, &waiting, |_| {
            look(ms(5), true)
        });
        assert_eq!(timing_waits(poll).await.1, Some(Duration::ZERO));
        // No `wait`: no long poll at all.
        let poll = long_poll(&notify, Duration::ZERO, &shutdown, &waiting, |_| {
            look(ms(5), false)
        });
        assert_eq!(timing_waits(poll).await.1, None);
        // Woken after 2 s by an item: 2 s idle, then a second look finds it.
        let mut looks = 0;
        let poll = long_poll(&notify, ms(4000), &shutdown, &waiting, |_| {
            looks += 1;
            look(ms(5), looks > 1)
        });
        let wake = async {
            tokio::time::sleep(ms(2005)).await;
            notify.notify_waiters();
        };
        let ((outcome, waited), ()) = tokio::join!(timing_waits(poll), wake);
        assert!(matches!(outcome, Ok(DequeueOutcome::Items(_))));
        assert_eq!(waited, Some(ms(2000)));
        assert_eq!(waiting.load(std::sync::atomic::Ordering::Relaxed), 0);
    }
}
