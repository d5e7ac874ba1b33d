//! Whether this replica reaches Redis. A heartbeat (`PING` every second, every quarter second
//! while Redis is away) and every command that fails for want of a connection keep it current.
//!
//! While Redis is unreachable the replica says so at once rather than after a command's
//! timeout: every request answers `503 backend_unavailable` (with `Retry-After`), `/readyz`
//! fails so that a Service stops sending it traffic, and its long polls end with that 503. The
//! heartbeat finds Redis again by itself; the wake channel, dropped when Redis went away, is
//! subscribed anew on a new connection.

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
        Error::BackendUnavailable(format!(
            "redis does not answer this replica; it is tried again every {HEARTBEAT_AWAY:?}"
        ))
    }

    /// Redis did not answer: say so once, end the long polls, drop the wake subscription.
    ///
    /// Not with a Cluster: there a node's loss would stop the queues of every other node too
    /// (PING goes to every primary); each command's own error speaks for its queue instead.
    pub(super) fn mark_away(&self, why: &str) {
        let inner = &self.inner;
        if inner.cluster || inner.away.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            error = why,
            "redis unreachable: answering 503 until it answers again"
        );
        self.fail_waiting();
        inner.waiters.wake_everyone();
        inner.resubscribe.notify_waiters();
    }

    /// Redis answered again.
    fn mark_back(&self) {
        let inner = &self.inner;
        if inner.away.swap(false, Ordering::AcqRel) {
            tracing::info!("redis reachable again");
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

    /// Loads the queue library, or says (once) why Redis refuses it; the replica is not
    /// ready without it.
    async fn load_library(&self) {
        match self.load_library_raw().await {
            Ok(()) => {
                if self.inner.load_refused.swap(false, Ordering::AcqRel) {
                    tracing::info!("redis took the queue library");
                }
            }
            // Not a refusal: the next beat tries again.
            Err(e) if connection_lost(&e) => self.mark_away(&e.to_string()),
            Err(e) => {
                if !self.inner.load_refused.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        error = %e,
                        "redis refuses the queue library (FUNCTION LOAD); this replica stays \
                         unready: it needs Redis 7.0 or newer and, with ACLs, the FUNCTION and \
                         FCALL commands"
                    );
                }
            }
        }
    }

    /// The heartbeat, until shutdown; the first beat is at once, and a beat that reaches Redis
    /// loads the queue library if it is not loaded yet.
    pub(super) async fn run_heartbeat(self) {
        loop {
            match self.ping().await {
                Ok(()) => self.mark_back(),
                Err(why) => self.mark_away(&why),
            }
            // The layout first: a replica that finds a newer one writes nothing, the library
            // included.
            if self.reachable()
                && !self.inner.loaded.load(Ordering::Acquire)
                && self.layout_ok().await
            {
                self.load_library().await;
            }
            let pause = if self.reachable() {
                HEARTBEAT
            } else {
                HEARTBEAT_AWAY
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = self.inner.shutdown.cancelled() => return,
            }
        }
    }
}
