//! Taking items from the server: one fetcher per consumer leases items (up to the room the
//! slots and `--prefetch` leave, in one request) into a [`Buffer`] that the slots take from,
//! and decides from empty answers whether the queue is finished.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use memq::{DequeueOptions, Dequeued, Message};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::Shared;
use crate::cli::Until;
use crate::retry::{Backoff, RetryError, retry_with};

/// Pause between polls when the server answers "empty" at once (paused queue, no long poll).
const IDLE_PAUSE: Duration = Duration::from_millis(500);
/// Longest poll while leases of the queue's last items are held (this consumer's or
/// others'): bounds how long after the last ack a consumer notices the queue is finished, if
/// the server's own wake-up on a finished queue is missed.
const FINISH_POLL: Duration = Duration::from_secs(1);
/// How long a stopping fetcher still listens for the answer to its dequeue.
const LATE_ANSWER: Duration = Duration::from_millis(300);

/// Items leased and not started yet, in the order the server handed them out.
#[derive(Debug, Default)]
pub struct Buffer {
    state: Mutex<BufferState>,
    /// Told when items arrive or the buffer closes.
    ready: Notify,
}

#[derive(Debug, Default)]
struct BufferState {
    items: VecDeque<Message>,
    /// No more items will come.
    closed: bool,
}

impl Buffer {
    fn lock(&self) -> std::sync::MutexGuard<'_, BufferState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds items for the slots.
    pub fn push(&self, items: Vec<Message>) {
        self.lock().items.extend(items);
        self.ready.notify_waiters();
    }

    /// No more items will come: slots finish what is left, then stop.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
    }

    /// The next item, waiting for one; `None` once the buffer is closed and empty, and after
    /// `shutdown` (when what is left is given back instead) but for items a kuard dequeue took
    /// for good, which are worked on whatever happens.
    pub async fn take(&self, shutdown: &CancellationToken) -> Option<Message> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            // Registered before looking, so that a push between the look and the wait counts.
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                let stopping = shutdown.is_cancelled();
                match state.items.front() {
                    Some(m) if !stopping || m.lease.is_none() => return state.items.pop_front(),
                    _ if state.closed || stopping => return None,
                    _ => {}
                }
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    /// Whether the buffer is closed and empty: no item will come out of it any more.
    pub fn is_finished(&self) -> bool {
        let state = self.lock();
        state.closed && state.items.is_empty()
    }

    /// Closes the buffer and takes every leased item still in it (to give them back).
    pub fn drain_leased(&self) -> Vec<Message> {
        let mut state = self.lock();
        state.closed = true;
        let (leased, kept): (VecDeque<Message>, VecDeque<Message>) =
            std::mem::take(&mut state.items)
                .into_iter()
                .partition(|m| m.lease.is_some());
        state.items = kept;
        drop(state);
        self.ready.notify_waiters();
        leased.into()
    }
}

/// What the fetcher decided after an empty answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Continue,
    Stop,
}

/// The key [`crate::settle::Held`] knows an item by: its lease, or its id when it has none.
pub fn key(message: &Message) -> &str {
    message.lease.as_ref().map_or(&message.id, |l| &l.id)
}

impl Shared {
    /// Leases items into the buffer until the queue is finished, `--until` or `--max-items`
    /// says so, or `stop`; then closes the buffer. Err only when the server failed for too
    /// long or refused us.
    pub async fn run_fetcher(&self) -> Result<(), RetryError> {
        let result = self.fetch().await;
        self.buffer.close();
        result
    }

    async fn fetch(&self) -> Result<(), RetryError> {
        // Ask without waiting first: while items flow that costs nothing extra, and on a
        // finished queue the answer is immediate. Only after an empty answer that does not end
        // the run do we long-poll.
        let mut long_poll: Option<Duration> = None;
        let mut taken: u64 = 0;
        loop {
            let Some(want) = self.room(taken).await else {
                return Ok(());
            };
            let asked = Instant::now();
            let wait = long_poll.take();
            let dequeue = self.dequeue(wait, want);
            tokio::pin!(dequeue);
            let answer = tokio::select! {
                biased;
                answer = &mut dequeue => answer?,
                _ = self.stop.cancelled() => {
                    // An answer may already be on its way with items leased to us: give it a
                    // moment, and hand such items straight back rather than let them sit out
                    // their leases. (An idle long poll is then simply dropped.)
                    if let Ok(Ok(Dequeued::Messages(late))) = tokio::time::timeout(LATE_ANSWER, dequeue).await {
                        self.held.add(late.iter().map(key));
                        self.buffer.push(late);
                    }
                    return Ok(());
                }
            };
            match answer {
                Dequeued::Messages(messages) => {
                    taken += messages.len() as u64;
                    self.held.add(messages.iter().map(key));
                    self.buffer.push(messages);
                }
                Dequeued::Empty {
                    depth,
                    inflight,
                    paused,
                    ..
                } => {
                    if self.on_empty(depth, inflight, paused).await == Next::Stop {
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
                    // An ack does not wake long polls, so while leases are held a shorter poll
                    // notices promptly that they finished.
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

    /// Waits until the slots and the buffer have room for a request's worth of items; how many
    /// to ask for. `None` when no more items are to be taken.
    async fn room(&self, taken: u64) -> Option<usize> {
        loop {
            if self.stop.is_cancelled() {
                return None;
            }
            let remaining = self
                .max_items
                .map_or(usize::MAX, |max| max.saturating_sub(taken) as usize);
            if remaining == 0 {
                info!(queue = %self.queue, "reached --max-items; taking no more items");
                return None;
            }
            let mut most = remaining.min(memq::limits::MAX_DEQUEUE as usize);
            if self.lease.is_none() {
                // A kuard dequeue hands out one item.
                most = most.min(1);
            }
            let room = self.capacity.saturating_sub(self.held.len());
            let want = room.min(most);
            // Never more than one request can take, or the wait below would never end.
            let least = self.low_water.min(most);
            if want > 0 && want >= least {
                return Some(want);
            }
            // Room for `least` items once no more than this many are held.
            let at = self.capacity.saturating_sub(least);
            tokio::select! {
                _ = self.held.until_at_most(at) => {}
                _ = self.stop.cancelled() => return None,
            }
        }
    }

    async fn dequeue(&self, wait: Option<Duration>, max: usize) -> Result<Dequeued, RetryError> {
        let leasing = self.lease.is_some();
        let opts = DequeueOptions {
            lease: self.lease,
            lease_default: false,
            wait,
            max: leasing.then_some(max as u32),
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
                debug!(queue = %self.queue, depth, inflight, paused, "nothing ready; leases are held, polling on");
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
}
