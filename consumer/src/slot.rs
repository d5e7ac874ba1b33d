//! One work slot of `--work` or `--exec`: take an item from the buffer, work on it, hand the
//! verdict to the settler; `--concurrency N` runs N of these over one [`Shared`]. How an item's
//! end becomes an ack or a nack ([`Shared::finish`]) is the same for `--worker`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use memq::Message;
use tracing::{debug, info, warn};

use crate::Shared;
use crate::fetch::key;
use crate::settle::Verdict;
use crate::work::{Job, Outcome, Work};

/// Longest delay before a failed item comes back.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

impl Shared {
    /// Works items from the buffer one at a time until it is closed and empty, or shutdown.
    pub async fn run_slot(&self, work: &Work) {
        while let Some(message) = self.buffer.take(&self.shutdown).await {
            if !self.still_held(&message) {
                continue;
            }
            let attempt = message.lease.as_ref().map_or(1, |l| l.attempt);
            let job = Job {
                id: &message.id,
                body: &message.body,
                queue: &self.queue,
                attempt,
            };
            let started = tokio::time::Instant::now();
            let outcome = tokio::select! {
                biased;
                outcome = self.timed(work.perform(&job)) => Some(outcome),
                _ = self.abandon.cancelled() => None,
            };
            debug!(id = %message.id, took_ms = started.elapsed().as_millis() as u64, ?outcome, "worked");
            self.finish(&message, outcome);
        }
    }

    /// Whether the lease of a buffered item still runs: one lost while the item waited is not
    /// started (the server may have handed the item to someone else).
    pub fn still_held(&self, message: &Message) -> bool {
        let held = self.held.contains(key(message));
        if !held {
            warn!(id = %message.id, "the item's lease ran out before it was started; skipping it");
        }
        held
    }

    /// `work`, given up after `--item-timeout`.
    pub async fn timed(&self, work: impl Future<Output = Outcome>) -> Outcome {
        match self.item_timeout {
            None => work.await,
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(outcome) => outcome,
                Err(_) => Outcome::Failed {
                    reason: format!(
                        "not done within --item-timeout {}",
                        memq::duration::format_duration(limit)
                    ),
                    retry_after: None,
                },
            },
        }
    }

    /// Settles an item taken from the buffer: `None` when its work was stopped unfinished
    /// (shutdown after `--grace`, a fatal error).
    pub fn finish(&self, message: &Message, outcome: Option<Outcome>) {
        self.held.remove(key(message));
        let id = &message.id;
        let Some(lease) = &message.lease else {
            // A kuard dequeue took the item for good: there is nothing to ack or give back.
            match outcome {
                Some(Outcome::Done) => {
                    self.counters.done.fetch_add(1, Ordering::Relaxed);
                }
                Some(Outcome::Failed { reason, .. }) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    warn!(%id, %reason, "work failed; a kuard queue cannot retry the item");
                }
                None => {
                    self.counters.returned.fetch_add(1, Ordering::Relaxed);
                    warn!(%id, "stopping: item dropped unfinished (a kuard dequeue has no lease to give back)");
                }
            }
            return;
        };
        let verdict = match outcome {
            Some(Outcome::Done) => Verdict::Ack,
            // Ctrl-C reaches the whole process group, so the command may have died of the very
            // signal that stops us: give the item back without spending an attempt's backoff.
            Some(Outcome::Failed { reason, .. }) if self.shutdown.is_cancelled() => {
                self.counters.returned.fetch_add(1, Ordering::Relaxed);
                info!(%id, %reason, "stopping: work failed during shutdown; giving the item back");
                Verdict::Nack(Duration::ZERO)
            }
            Some(Outcome::Failed {
                reason,
                retry_after,
            }) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                let delay = retry_after
                    .unwrap_or_else(|| retry_delay(self.retry_delay, lease.attempt))
                    .min(memq::limits::MAX_DELAY);
                warn!(%id, attempt = lease.attempt, %reason, retry_in_ms = delay.as_millis() as u64, "work failed; item goes back for a retry");
                Verdict::Nack(delay)
            }
            None => {
                self.counters.returned.fetch_add(1, Ordering::Relaxed);
                info!(%id, "stopping: giving the item back unfinished");
                Verdict::Nack(Duration::ZERO)
            }
        };
        self.settler.settle(lease.id.clone(), verdict);
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
