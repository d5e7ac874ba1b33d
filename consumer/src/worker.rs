//! One work slot: take an item (long poll, leased), work on it while a heartbeat keeps the lease
//! alive, ack or nack it, and decide from empty answers whether the queue is finished.
//! `--concurrency N` runs N of these loops over one shared [`Slots`].

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use memq::{DequeueOptions, Dequeued, Message};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::cli::Until;
use crate::retry::{Backoff, RetryError, retry, retry_with};
use crate::work::{Job, Outcome, Work};

/// Longest delay before a failed item comes back.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);
/// Pause between polls when the server answers "empty" at once (paused queue, no long poll).
const IDLE_PAUSE: Duration = Duration::from_millis(500);
/// Longest poll while other consumers hold the queue's last items: an ack wakes no poller, so
/// this bounds how long after the last ack a consumer notices the queue is finished.
const FINISH_POLL: Duration = Duration::from_secs(1);
/// How long a stopping slot still listens for the answer to its dequeue.
const LATE_ANSWER: Duration = Duration::from_millis(300);

/// Running totals of one consumer.
#[derive(Debug, Default)]
pub struct Counters {
    /// Items whose work succeeded and whose ack went through.
    pub done: AtomicU64,
    /// Items whose work failed (nacked for a later retry).
    pub failed: AtomicU64,
    /// Items given back unfinished at shutdown.
    pub returned: AtomicU64,
    /// Items done whose ack did not go through (the lease had expired): they will be redone.
    pub lost: AtomicU64,
}

/// What all slots of one consumer share.
#[derive(Debug)]
pub struct Slots {
    /// The server.
    pub client: memq::Client,
    /// The queue.
    pub queue: String,
    /// The work per item.
    pub work: Work,
    /// Lease length; None for kuard's plain dequeue.
    pub lease: Option<Duration>,
    /// Long-poll time; None for kuard.
    pub wait: Option<Duration>,
    /// When to stop by itself.
    pub until: Until,
    /// Stop after this many items.
    pub max_items: Option<u64>,
    /// Give up on a failing server after this long.
    pub give_up_after: Duration,
    /// First delay of a failed item's retry.
    pub retry_delay: Duration,
    /// Cancelled by SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Cancelled when no new items should be taken (finished, limit, signal, fatal error).
    pub stop: CancellationToken,
    /// Cancelled when held items must be given back now (grace over, fatal error).
    pub abandon: CancellationToken,
    /// Totals.
    pub counters: Counters,
    /// Items taken so far (for --max-items).
    pub taken: AtomicU64,
    /// Whether "waiting for a producer" was logged already.
    pub told_waiting: AtomicBool,
}

/// How a slot decided to stop taking items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    Stop,
}

impl Slots {
    /// Reserves one item of `--max-items`; false when the limit is reached.
    fn reserve(&self) -> bool {
        match self.max_items {
            None => true,
            Some(max) => self.taken.fetch_add(1, Ordering::SeqCst) < max,
        }
    }

    fn unreserve(&self) {
        if self.max_items.is_some() {
            self.taken.fetch_sub(1, Ordering::SeqCst);
        }
    }

    async fn dequeue(&self, wait: Option<Duration>) -> Result<Dequeued, RetryError> {
        let opts = DequeueOptions {
            lease: self.lease,
            lease_default: false,
            wait,
            max: None,
        };
        // A queue that does not exist yet is worth waiting for: the consumer Job may well start
        // before the producer has created it.
        let transient = |e: &memq::Error| e.is_retryable() || e.code() == Some("queue_not_found");
        retry_with(
            "dequeue",
            self.give_up_after,
            Backoff::default(),
            transient,
            || self.client.dequeue(&self.queue, &opts),
        )
        .await
    }

    /// Takes and works items until told to stop; Err only when the server failed for too long
    /// or refused us.
    pub async fn run_slot(&self) -> Result<(), RetryError> {
        // Ask without waiting first: while items flow that costs nothing extra, and on a
        // finished queue the answer is immediate. Only after an empty answer that does not end
        // the run do we long-poll.
        let mut long_poll: Option<Duration> = None;
        loop {
            if self.stop.is_cancelled() {
                return Ok(());
            }
            if !self.reserve() {
                // Not `stop`: a slot still polling holds a reservation of its own and should
                // get its item.
                info!(queue = %self.queue, "reached --max-items; this slot stops");
                return Ok(());
            }
            let asked = Instant::now();
            let wait = long_poll.take();
            let dequeue = self.dequeue(wait);
            tokio::pin!(dequeue);
            let answer = tokio::select! {
                biased;
                answer = &mut dequeue => answer?,
                _ = self.stop.cancelled() => {
                    self.unreserve();
                    // An answer may already be on its way with an item leased to us: give it a
                    // moment, and hand such an item straight back rather than let it sit out
                    // its lease. (An idle long poll is then simply dropped.)
                    if let Ok(Ok(Dequeued::Messages(late))) = tokio::time::timeout(LATE_ANSWER, dequeue).await {
                        for message in late {
                            self.give_back(message).await;
                        }
                    }
                    return Ok(());
                }
            };
            match answer {
                Dequeued::Messages(messages) => {
                    for message in messages {
                        self.handle(message).await;
                    }
                }
                Dequeued::Empty {
                    depth,
                    inflight,
                    paused,
                    ..
                } => {
                    self.unreserve();
                    if self.on_empty(depth, inflight, paused).await == Next::Stop {
                        self.stop.cancel();
                        return Ok(());
                    }
                    let configured = self.wait.unwrap_or_default();
                    let asked_wait = wait.unwrap_or_default();
                    let probe = asked_wait.is_zero() && !configured.is_zero();
                    // The server answered at once instead of holding the poll (paused queue,
                    // `--wait 0`): don't spin.
                    if !probe && asked.elapsed() < asked_wait / 2 + Duration::from_millis(50) {
                        tokio::select! {
                            _ = self.stop.cancelled() => {}
                            _ = tokio::time::sleep(IDLE_PAUSE) => {}
                        }
                    }
                    // An ack does not wake long polls, so while others hold the last items a
                    // shorter poll notices promptly that they finished.
                    long_poll = (!configured.is_zero()).then(|| {
                        if inflight > 0 && self.until == Until::Finished {
                            configured.min(FINISH_POLL)
                        } else {
                            configured
                        }
                    });
                }
            }
        }
    }

    async fn on_empty(&self, depth: u64, inflight: u64, paused: bool) -> Next {
        match self.until {
            Until::Empty => {
                info!(queue = %self.queue, depth, inflight, "queue empty; stopping (--until empty)");
                Next::Stop
            }
            Until::Forever => Next::Continue,
            Until::Finished if depth == 0 && inflight == 0 && !paused => {
                self.confirm_finished().await
            }
            Until::Finished => {
                debug!(queue = %self.queue, depth, inflight, paused, "nothing ready; others hold leases, polling on");
                Next::Continue
            }
        }
    }

    /// The 204's headers count ready and leased items but not delayed ones (nacked with a
    /// delay, or enqueued with one); those still have to be worked, so ask for the full count.
    async fn confirm_finished(&self) -> Next {
        match self.client.queue(&self.queue).await {
            // Never had an item: not finished but not started. Consumers of a Job may start
            // before the producer's first batch, and must not complete the Job with no work done.
            Ok(q) if q.enqueued == 0 => {
                if !self.told_waiting.swap(true, Ordering::Relaxed) {
                    info!(queue = %self.queue, "queue has had no items yet; waiting for a producer (--until empty would stop here)");
                }
                Next::Continue
            }
            Ok(q) if q.depth == 0 && q.inflight == 0 && q.delayed == 0 => {
                info!(queue = %self.queue, acked = q.acked, dead = q.dead, "queue finished; stopping");
                Next::Stop
            }
            Ok(q) => {
                debug!(queue = %self.queue, depth = q.depth, inflight = q.inflight, delayed = q.delayed, "not finished yet");
                Next::Continue
            }
            // The next dequeue retries and reports an outage; no decision on a failed read.
            Err(err) if err.is_retryable() => Next::Continue,
            Err(err) => {
                // A server without the queue object route (kuard-like): the 204 is all we have.
                debug!(queue = %self.queue, error = %err, "cannot read the queue; trusting the empty answer");
                Next::Stop
            }
        }
    }

    async fn handle(&self, message: Message) {
        let attempt = message.lease.as_ref().map_or(1, |l| l.attempt);
        let lease_id = message.lease.as_ref().map(|l| l.id.clone());
        let span = info_span!("item", id = %message.id, attempt);
        async {
            let job = Job { id: &message.id, body: &message.body, queue: &self.queue, attempt };
            let started = Instant::now();
            let outcome = tokio::select! {
                biased;
                outcome = self.work.perform(&job) => Some(outcome),
                _ = self.abandon.cancelled() => None,
                never = self.keep_alive(lease_id.as_deref()) => match never {},
            };
            let took_ms = started.elapsed().as_millis() as u64;
            match (outcome, lease_id) {
                (Some(Outcome::Done), Some(lease)) => self.ack(&lease, took_ms).await,
                (Some(Outcome::Done), None) => {
                    self.counters.done.fetch_add(1, Ordering::Relaxed);
                    debug!(took_ms, "done");
                }
                // Ctrl-C reaches the whole process group, so the command may have died of the
                // very signal that stops us: give the item back without spending an attempt's
                // backoff on it.
                (Some(Outcome::Failed(why)), Some(lease)) if self.shutdown.is_cancelled() => {
                    self.counters.returned.fetch_add(1, Ordering::Relaxed);
                    info!(reason = %why, "stopping: work failed during shutdown; giving the item back");
                    self.nack(&lease, Duration::ZERO).await;
                }
                (Some(Outcome::Failed(why)), lease) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    match lease {
                        Some(lease) => {
                            let delay = retry_delay(self.retry_delay, attempt);
                            warn!(reason = %why, retry_in_ms = delay.as_millis() as u64, "work failed; item goes back for a retry");
                            self.nack(&lease, delay).await;
                        }
                        None => warn!(reason = %why, "work failed; a kuard queue cannot retry the item"),
                    }
                }
                (None, Some(lease)) => {
                    self.counters.returned.fetch_add(1, Ordering::Relaxed);
                    info!("stopping: giving the item back unfinished");
                    self.nack(&lease, Duration::ZERO).await;
                }
                (None, None) => {
                    self.counters.returned.fetch_add(1, Ordering::Relaxed);
                    warn!("stopping: item dropped unfinished (a kuard dequeue has no lease to give back)");
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Extends the lease every third of its length while the work runs; never returns.
    async fn keep_alive(&self, lease: Option<&str>) -> Infallible {
        if let (Some(lease), Some(length)) = (lease, self.lease) {
            let period = length / 3;
            loop {
                tokio::time::sleep(period).await;
                match self.client.extend(&self.queue, lease, Some(length)).await {
                    Ok(_) => debug!("lease extended"),
                    Err(err) if err.is_retryable() => {
                        warn!(error = %err, "cannot extend the lease; trying again at the next beat");
                    }
                    Err(err) => {
                        // Expired or unknown: someone else may get the item; nothing to extend.
                        warn!(error = %err, "lease lost while working; the item may be handed out again");
                        break;
                    }
                }
            }
        }
        std::future::pending().await
    }

    /// Returns an item that arrived after we stopped, untouched.
    async fn give_back(&self, message: Message) {
        match &message.lease {
            Some(lease) => {
                debug!(id = %message.id, "stopping: handing back an item that arrived late");
                self.nack(&lease.id, Duration::ZERO).await;
            }
            // A kuard dequeue removed it from the queue: doing it is the only way not to lose it.
            None => self.handle(message).await,
        }
    }

    async fn ack(&self, lease: &str, took_ms: u64) {
        // Past the lease an ack can only fail, so retrying longer than that is pointless.
        let budget = self.lease.unwrap_or_default().min(self.give_up_after);
        match retry("ack", budget, || self.client.ack(&self.queue, lease)).await {
            Ok(()) => {
                self.counters.done.fetch_add(1, Ordering::Relaxed);
                debug!(took_ms, "done");
            }
            Err(err) => {
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
                warn!(error = %err, "work done but the ack failed; the item will be handed out again");
            }
        }
    }

    async fn nack(&self, lease: &str, delay: Duration) {
        // Best effort: if the nack does not arrive, the lease expires and has the same effect.
        let budget = self.lease.unwrap_or_default().min(Duration::from_secs(5));
        let delay = (!delay.is_zero()).then_some(delay);
        if let Err(err) = retry("nack", budget, || {
            self.client.nack(&self.queue, lease, delay)
        })
        .await
        {
            warn!(error = %err, "nack failed; the item comes back when its lease expires");
        }
    }
}

/// Delay before retry number `attempt` of a failed item: `base`, doubled per attempt, capped.
pub fn retry_delay(base: Duration, attempt: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_items_back_off_exponentially() {
        let base = Duration::from_secs(1);
        assert_eq!(retry_delay(base, 1), Duration::from_secs(1));
        assert_eq!(retry_delay(base, 2), Duration::from_secs(2));
        assert_eq!(retry_delay(base, 4), Duration::from_secs(8));
        assert_eq!(retry_delay(base, 20), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(base, 200), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(Duration::ZERO, 3), Duration::ZERO);
        assert_eq!(retry_delay(base, 0), Duration::from_secs(1));
    }
}
