//! Whether this replica reaches Redis. A heartbeat (`PING` every second, every quarter second
//! while Redis is away) and every command that fails for want of a connection keep it current.
//!
//! While Redis is unreachable the replica says so at once rather than after a command's
//! timeout: every request answers `503 backend_unavailable` (with `Retry-After`), `/readyz`
//! fails so that a Service stops sending it traffic, and its long polls end with that 503. The
//! heartbeat finds Redis again by itself; the wake channel is subscribed anew then.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::Value;

use super::{PING_TIMEOUT, RedisStore};
use crate::error::Error;

/// Between two heartbeats while Redis answers.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Between two heartbeats while it does not.
const HEARTBEAT_AWAY: Duration = Duration::from_millis(250);

/// Whether a failed command says the connection is gone (rather than the command refused).
pub(super) fn connection_lost(e: &redis::RedisError) -> bool {
    e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
}

impl RedisStore {
    /// Whether Redis answered the last heartbeat (and no command has failed for want of a
    /// connection since).
    pub(super) fn reachable(&self) -> bool {
        !self.inner.away.load(Ordering::Acquire)
    }

    /// The error a request gets at once while Redis is away.
    pub(super) fn away_error(&self) -> Error {
        Error::BackendUnavailable(
            "redis does not answer this replica; it is retried every 250 ms".into(),
        )
    }

    /// Redis did not answer: say so once, end the long polls, drop the wake subscription.
    pub(super) fn mark_away(&self, why: &str) {
        let inner = &self.inner;
        if inner.away.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            error = why,
            "redis unreachable: answering 503 until it answers again"
        );
        inner.waiters.wake_everyone();
        inner.resubscribe.notify_waiters();
    }

    /// Redis answered again.
    fn mark_back(&self) {
        let inner = &self.inner;
        if inner.away.swap(false, Ordering::AcqRel) {
            tracing::info!("redis reachable again");
            inner.resubscribe.notify_waiters();
            inner.waiters.wake_everyone();
        }
    }

    /// One `PING`, within [`PING_TIMEOUT`].
    pub(super) async fn ping(&self) -> Result<(), String> {
        let mut conn = self.inner.conn.clone();
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<Value>(&mut conn);
        match tokio::time::timeout(PING_TIMEOUT, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer to PING within {PING_TIMEOUT:?}")),
        }
    }

    /// The heartbeat, until shutdown.
    pub(super) async fn run_heartbeat(self) {
        loop {
            let pause = if self.reachable() {
                HEARTBEAT
            } else {
                HEARTBEAT_AWAY
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.inner.shutdown.cancelled() => return,
            }
            match self.ping().await {
                Ok(()) => self.mark_back(),
                Err(why) => self.mark_away(&why),
            }
        }
    }
}
