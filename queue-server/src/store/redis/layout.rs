//! The version of the Redis key layout. Redis holds the layout its queues are written in twice:
//! once for the deployment (`{prefix}:layout`, absent in a Redis that 0.1.0 wrote: layout 1),
//! read when a replica starts, and once per queue (its meta hash's `layout`), checked by every
//! call of the queue library atomically with the op (`queue.lua`).
//!
//! A replica raises the deployment's layout to its own when it starts and brings each queue up
//! to it in the first call that touches the queue; it refuses a newer layout without writing
//! anything: at start it exits with one line, and a queue found newer later (a replica of a
//! newer release migrated it) makes it unready and answer 503, so that traffic goes to the
//! replicas that read it. Layout by layout (docs/redis.md): 1, 0.1.0; 2, the queues and the
//! deployment record their layout.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::RedisStore;
use crate::error::Error;

/// The layout this release writes.
pub const LAYOUT: u32 = 2;
/// The oldest layout this release reads (and brings up to [`LAYOUT`]).
pub const OLDEST_LAYOUT: u32 = 1;

/// Reads the deployment's layout (absent: 1) and raises it to ARGV[1] when lower, in one atomic
/// call; a higher one is returned and left as it is.
const CLAIM: &str = r"
local found = tonumber(redis.call('GET', KEYS[1]) or '1')
local mine = tonumber(ARGV[1])
if found > mine then
    return found
end
if found < mine then
    redis.call('SET', KEYS[1], mine)
end
return mine
";

/// How long a start waits for Redis to answer the layout's claim before leaving it to the
/// heartbeat (a replica starts while Redis is down).
const START_WAIT: Duration = Duration::from_secs(5);

impl RedisStore {
    /// Claims the deployment's layout: `Ok(None)` once it is this release's, `Ok(Some(n))` for
    /// a newer one (nothing was written).
    async fn claim(&self) -> redis::RedisResult<Option<u32>> {
        let mut conn = self.inner.conn.clone();
        let found: u32 = redis::Script::new(CLAIM)
            .key(&self.inner.layout_key)
            .arg(LAYOUT)
            .invoke_async(&mut conn)
            .await?;
        if found > LAYOUT {
            return Ok(Some(found));
        }
        self.inner.layout_claimed.store(true, Ordering::Release);
        Ok(None)
    }

    /// At start: a Redis whose queues are in a newer layout stops the server before it writes
    /// anything. A Redis that does not answer is left to the heartbeat, which claims the layout
    /// before it loads the queue library.
    pub async fn claim_layout(&self) -> anyhow::Result<()> {
        match tokio::time::timeout(START_WAIT, self.claim()).await {
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(found))) => Err(anyhow::anyhow!(self.newer(found))),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the Redis layout yet; tried again before the queue library loads");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(wait = ?START_WAIT, "redis did not answer the layout's claim; tried again before the queue library loads");
                Ok(())
            }
        }
    }

    /// From the heartbeat, before the library loads: whether this replica may serve Redis.
    pub(super) async fn layout_ok(&self) -> bool {
        if self.inner.layout_claimed.load(Ordering::Acquire) {
            return true;
        }
        match self.claim().await {
            Ok(None) => true,
            Ok(Some(found)) => {
                self.refuse_layout(found);
                false
            }
            Err(e) => {
                if super::health::connection_lost(&e) {
                    self.mark_away(&e.to_string());
                }
                false
            }
        }
    }

    /// Redis holds queues in a newer layout: this replica stops serving (unready, 503) and
    /// says so once.
    pub(super) fn refuse_layout(&self, found: u32) {
        if self.inner.newer_layout.swap(found, Ordering::AcqRel) == 0 {
            tracing::error!(
                "{}; this replica answers 503 and stays unready",
                self.newer(found)
            );
        }
    }

    /// The layout found, when it is newer than this release reads.
    pub(super) fn newer_layout(&self) -> Option<u32> {
        match self.inner.newer_layout.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        }
    }

    fn newer(&self, found: u32) -> String {
        format!(
            "redis holds queues in key layout {found} (prefix {:?}), written by a newer release; this release reads layouts {OLDEST_LAYOUT} to {LAYOUT}: run the newer release, or see docs/upgrading.md; nothing was written",
            self.inner.prefix
        )
    }

    /// The error of a request while Redis holds a newer layout.
    pub(super) fn newer_layout_error(&self, found: u32) -> Error {
        Error::BackendUnavailable(self.newer(found))
    }
}

/// The layout a queue call refused (`MEMQ_LAYOUT n` from `queue.lua`).
pub(super) fn refused_layout(e: &redis::RedisError) -> Option<u32> {
    if e.code() != Some("MEMQ_LAYOUT") {
        return None;
    }
    e.detail()?.trim().parse().ok()
}
