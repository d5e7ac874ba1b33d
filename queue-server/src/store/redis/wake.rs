//! Waking long polls: a `Notify` per queue that has waiters on this replica, woken by the
//! replies of this replica's own script calls and by the wake channel, on which the scripts of
//! every replica announce items that became ready on a queue somebody waits on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use foldhash::fast::RandomState;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::RedisStore;

/// Longest wait between two attempts to subscribe.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// A queue's `Notify` and how many long polls hold it.
type Entry = (Arc<Notify>, usize);

/// The queues that have waiters on this replica.
#[derive(Default)]
pub(super) struct Waiters {
    queues: Mutex<HashMap<Box<str>, Entry, RandomState>>,
}

/// One long poll's registration; unregisters on drop.
pub(super) struct Waiter<'a> {
    waiters: &'a Waiters,
    name: Box<str>,
    notify: Arc<Notify>,
}

impl Waiter<'_> {
    pub(super) fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut queues = self.waiters.queues.lock();
        if let Some(entry) = queues.get_mut(&self.name) {
            entry.1 -= 1;
            if entry.1 == 0 {
                queues.remove(&self.name);
            }
        }
    }
}

impl Waiters {
    pub(super) fn register(&self, name: &str) -> Waiter<'_> {
        let mut queues = self.queues.lock();
        let entry = queues
            .entry(name.into())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Waiter {
            waiters: self,
            name: name.into(),
            notify: entry.0.clone(),
        }
    }

    /// `count` items became ready on `name` (-1: every waiter must look again).
    pub(super) fn wake(&self, name: &str, count: i64) {
        if count == 0 {
            return;
        }
        let Some(notify) = self.queues.lock().get(name).map(|e| e.0.clone()) else {
            return;
        };
        if count == 1 {
            notify.notify_one();
        } else {
            notify.notify_waiters();
        }
    }

    /// Every waiter looks again (wake messages may have been lost).
    pub(super) fn wake_everyone(&self) {
        let all: Vec<Arc<Notify>> = self.queues.lock().values().map(|e| e.0.clone()).collect();
        for notify in all {
            notify.notify_waiters();
        }
    }
}

impl RedisStore {
    /// Listens on the wake channel until shutdown, subscribing again after any loss.
    pub(super) async fn run_subscriber(self) {
        let inner = &self.inner;
        let mut backoff = Duration::from_millis(50);
        loop {
            let Err(e) = self.listen().await else {
                return;
            };
            // Anything announced meanwhile is lost: let every waiter look again.
            inner.waiters.wake_everyone();
            if inner.subscribed.swap(false, Ordering::AcqRel) {
                backoff = Duration::from_millis(50);
                tracing::warn!(error = %e, channel = %inner.channel, "wake channel lost; subscribing again");
            } else {
                backoff = (backoff * 2).min(MAX_BACKOFF);
                tracing::debug!(error = %e, "cannot subscribe to the wake channel yet");
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = inner.shutdown.cancelled() => return,
            }
        }
    }

    /// One subscription: `Ok` at shutdown, `Err` when the connection fails or ends.
    async fn listen(&self) -> Result<(), String> {
        let inner = &self.inner;
        // Redis going away from now on ends this subscription, also while it is being made: its
        // connection may be one whose packets were lost (see `health.rs`). One made while Redis
        // was away is new, and stays.
        let away = inner.resubscribe.notified();
        tokio::pin!(away);
        away.as_mut().enable();
        // Through the next URL each time: with a Cluster, another node when one is away.
        let at = inner.pubsub_next.fetch_add(1, Ordering::Relaxed) % inner.pubsub.len();
        let connect = inner.pubsub[at].get_async_pubsub();
        let mut pubsub = match tokio::time::timeout(super::CONNECT_TIMEOUT, connect).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("timed out connecting".into()),
        };
        pubsub
            .subscribe(&inner.channel)
            .await
            .map_err(|e| e.to_string())?;
        if !inner.subscribed.swap(true, Ordering::AcqRel) {
            tracing::info!(channel = %inner.channel, "listening for wake-ups from other replicas");
        }
        // Announcements made before the subscription took effect are lost: look again.
        inner.waiters.wake_everyone();
        let mut messages = pubsub.on_message();
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        return Err("connection closed".into());
                    };
                    self.on_wake(message.get_payload_bytes());
                }
                _ = &mut away => {
                    return Err("redis went away: subscribing on a new connection".into());
                }
                _ = inner.shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// `origin:count:queue` from a script; ours were already handled by the reply.
    fn on_wake(&self, payload: &[u8]) {
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        let mut parts = text.splitn(3, ':');
        let (Some(origin), Some(count), Some(queue)) = (parts.next(), parts.next(), parts.next())
        else {
            return;
        };
        if origin == self.inner.origin {
            return;
        }
        if let Ok(count) = count.parse::<i64>() {
            self.inner.waiters.wake(queue, count);
        }
    }
}
