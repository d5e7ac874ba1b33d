//! What the consumer holds and how it lets go of it, below the work: the leases held now
//! ([`Held`]: buffered or being worked on), acks and nacks sent in batches ([`Settler`]: every
//! [`FLUSH_AFTER`] or [`BATCH`] ids), one extend request per interval for every held lease
//! ([`Settler::keep_alive`]), and the release of items never started ([`Settler::release`]).
//!
//! A batch answer reports each lease: one that is gone (acked elsewhere, expired) is logged
//! and counted, never sent again. A request that fails as a whole (server away) is retried
//! while the leases can still be alive.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use memq::AckOutcome;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::retry::retry;

/// Most lease ids in one ack or nack request.
pub const BATCH: usize = 100;
/// Longest an ack or nack waits for others to share its request.
pub const FLUSH_AFTER: Duration = Duration::from_millis(5);
/// Ack and nack requests in flight at once.
const IN_FLIGHT: usize = 4;
/// Longest a nack is retried: past that the lease runs out and has the same effect.
const NACK_BUDGET: Duration = Duration::from_secs(5);

/// Running totals of one consumer.
#[derive(Debug, Default)]
pub struct Counters {
    /// Items whose work succeeded and whose ack went through.
    pub done: AtomicU64,
    /// Items whose work failed (nacked for a later retry).
    pub failed: AtomicU64,
    /// Items given back unfinished or unstarted at shutdown.
    pub returned: AtomicU64,
    /// Items whose ack did not go through (the lease had ended): they will be redone.
    pub lost: AtomicU64,
}

/// The leases this consumer holds: items leased and not yet acked, nacked or released (the
/// key is the item id for a kuard dequeue, which has no lease). Fetching stops when they fill
/// the slots and the prefetch buffer; slots make room as they finish.
#[derive(Debug)]
pub struct Held {
    leases: Mutex<HashSet<String>>,
    /// Told when a lease is let go of and at most [`Held::wake_at`] remain: room to fetch
    /// more. Not on every lease (a wake-up per item would cost more than the item).
    room: Notify,
    wake_at: AtomicUsize,
}

impl Default for Held {
    fn default() -> Self {
        Held {
            leases: Mutex::default(),
            room: Notify::new(),
            wake_at: AtomicUsize::new(usize::MAX),
        }
    }
}

impl Held {
    /// How many are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds what a dequeue handed out.
    pub fn add<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        self.lock().extend(keys.into_iter().map(str::to_owned));
    }

    /// Lets go of `key`; false if it was not held (its lease was lost meanwhile).
    pub fn remove(&self, key: &str) -> bool {
        let mut leases = self.lock();
        let removed = leases.remove(key);
        let left = leases.len();
        drop(leases);
        if left <= self.wake_at.load(Ordering::Acquire) {
            self.room.notify_one();
        }
        removed
    }

    /// Waits until at most `at` leases are held.
    pub async fn until_at_most(&self, at: usize) {
        loop {
            self.wake_at.store(at, Ordering::Release);
            let notified = self.room.notified();
            // Asked after telling `remove` when to wake us: a lease let go of in between
            // leaves a permit rather than being missed.
            if self.len() <= at {
                self.wake_at.store(usize::MAX, Ordering::Release);
                return;
            }
            notified.await;
        }
    }

    /// Whether `key` is still held.
    pub fn contains(&self, key: &str) -> bool {
        self.lock().contains(key)
    }

    /// Every lease held now.
    pub fn snapshot(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A panic while holding the set cannot leave it half changed.
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How an item ends, for the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done: ack.
    Ack,
    /// Back to the queue after this delay (attempt counted).
    Nack(Duration),
}

/// One lease to settle.
#[derive(Debug)]
struct Settle {
    lease: String,
    verdict: Verdict,
}

/// Sends acks and nacks in batches; cheap to clone (each clone can send).
#[derive(Debug, Clone)]
pub struct Settler {
    tx: mpsc::UnboundedSender<Settle>,
}

/// What the settler task needs.
#[derive(Debug, Clone)]
pub struct Settling {
    /// The server.
    pub client: memq::Client,
    /// The queue.
    pub queue: String,
    /// How long an ack may be retried (the lease length: past it the ack can only fail).
    pub ack_budget: Duration,
}

impl Settler {
    /// The settler and its task, which runs until every clone of the settler is dropped and
    /// the last batch is answered.
    pub fn start(
        settling: Settling,
        counters: std::sync::Arc<Counters>,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(settling, counters, rx));
        (Settler { tx }, task)
    }

    /// Queues the ack or nack of `lease`.
    pub fn settle(&self, lease: String, verdict: Verdict) {
        // The task outlives every sender: it ends only once they are all dropped.
        let _ = self.tx.send(Settle { lease, verdict });
    }
}

async fn run(
    settling: Settling,
    counters: std::sync::Arc<Counters>,
    mut rx: mpsc::UnboundedReceiver<Settle>,
) {
    let settling = std::sync::Arc::new(settling);
    let mut flushes = JoinSet::new();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            break;
        }
        // Others settled within FLUSH_AFTER share the request.
        let flush_at = Instant::now() + FLUSH_AFTER;
        while batch.len() < BATCH {
            let more = BATCH - batch.len();
            match tokio::time::timeout_at(flush_at, rx.recv_many(&mut batch, more)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if flushes.len() >= IN_FLIGHT {
            flushes.join_next().await;
        }
        let (settling, counters) = (settling.clone(), counters.clone());
        let taken = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
        flushes.spawn(async move { flush(&settling, &counters, taken).await });
    }
    while flushes.join_next().await.is_some() {}
}

/// Sends one batch: its acks in one request, its nacks in one per delay.
async fn flush(s: &Settling, counters: &Counters, batch: Vec<Settle>) {
    let mut acks = Vec::new();
    let mut nacks: HashMap<Duration, Vec<String>> = HashMap::new();
    for item in batch {
        match item.verdict {
            Verdict::Ack => acks.push(item.lease),
            Verdict::Nack(delay) => nacks.entry(delay).or_default().push(item.lease),
        }
    }
    if !acks.is_empty() {
        let sent = retry("ack", s.ack_budget, || s.client.ack_batch(&s.queue, &acks)).await;
        match sent {
            Ok(answer) => {
                counters.done.fetch_add(answer.acked, Ordering::Relaxed);
                let gone = refused(&answer.results);
                counters.lost.fetch_add(gone as u64, Ordering::Relaxed);
            }
            Err(err) => {
                counters
                    .lost
                    .fetch_add(acks.len() as u64, Ordering::Relaxed);
                warn!(error = %err, items = acks.len(), "work done but the acks failed; the items will be handed out again");
            }
        }
    }
    for (delay, leases) in nacks {
        let delay_opt = (!delay.is_zero()).then_some(delay);
        let budget = s.ack_budget.min(NACK_BUDGET);
        let sent = retry("nack", budget, || {
            s.client.nack_batch(&s.queue, &leases, delay_opt)
        })
        .await;
        match sent {
            Ok(answer) => {
                refused(&answer.results);
            }
            // Best effort: a lease that is not nacked runs out, with the same effect.
            Err(err) => {
                warn!(error = %err, items = leases.len(), "nack failed; the items come back when their leases run out")
            }
        }
    }
}

/// Logs each lease a batch answer reports gone; how many.
fn refused(results: &[AckOutcome]) -> usize {
    let mut gone = 0;
    for r in results.iter().filter(|r| r.status != 200) {
        gone += 1;
        warn!(
            lease = %r.lease,
            status = r.status,
            code = r.code.as_deref().unwrap_or(""),
            "the server no longer holds this lease (it ran out, or the queue was deleted); the item may be handed out again"
        );
    }
    gone
}

impl Settling {
    /// Extends every lease `held` holds, in one request every third of `length`, until
    /// dropped. A lease the server reports gone is let go of (a buffered item of it is not
    /// started: it may be handed to someone else).
    pub async fn keep_alive(&self, held: &Held, length: Duration) {
        let period = length / 3;
        loop {
            tokio::time::sleep(period).await;
            let leases = held.snapshot();
            if leases.is_empty() {
                continue;
            }
            match self
                .client
                .extend_batch(&self.queue, &leases, Some(length))
                .await
            {
                Ok(answer) => {
                    debug!(extended = answer.extended, "leases extended");
                    for r in answer.results.iter().filter(|r| r.status != 200) {
                        held.remove(&r.lease);
                        warn!(lease = %r.lease, status = r.status, "lease lost while held; the item may be handed out again");
                    }
                }
                Err(err) if err.is_retryable() => {
                    warn!(error = %err, leases = leases.len(), "cannot extend the leases; trying again at the next beat");
                }
                Err(err) => {
                    warn!(error = %err, "the server refuses to extend the leases; the items may be handed out again");
                }
            }
        }
    }

    /// Gives back items leased but never started (front of the queue, attempt not counted);
    /// how many the server took back.
    pub async fn release(&self, leases: &[String]) -> u64 {
        if leases.is_empty() {
            return 0;
        }
        let budget = self.ack_budget.min(NACK_BUDGET);
        match retry("release", budget, || {
            self.client.release(&self.queue, leases)
        })
        .await
        {
            Ok(answer) => {
                refused(&answer.results);
                info!(
                    released = answer.released,
                    "gave back the items never started"
                );
                answer.released
            }
            Err(err) => {
                warn!(error = %err, items = leases.len(), "release failed; the items come back when their leases run out");
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Held;
    use std::time::Duration;

    /// The fetcher sleeps through the leases let go of above its mark and wakes at the mark.
    #[tokio::test(start_paused = true)]
    async fn until_at_most_wakes_once_enough_leases_are_let_go_of() {
        let held = Held::default();
        let keys: Vec<String> = (0..10).map(|i| i.to_string()).collect();
        held.add(keys.iter().map(String::as_str));
        // Already at the mark: no wait.
        tokio::time::timeout(Duration::from_secs(1), held.until_at_most(10))
            .await
            .expect("10 held is at most 10");
        let wait = held.until_at_most(6);
        tokio::pin!(wait);
        for key in &keys[..3] {
            assert!(held.remove(key));
            let polled = tokio::time::timeout(Duration::from_millis(10), &mut wait).await;
            assert!(polled.is_err(), "woke with {} held", held.len());
        }
        assert!(held.remove(&keys[3]));
        tokio::time::timeout(Duration::from_millis(10), &mut wait)
            .await
            .expect("6 held wakes the wait for at most 6");
        assert_eq!(held.len(), 6);
    }
}
