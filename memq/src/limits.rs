//! The API's limits, in one place: the server holds requests to them, and the `consumer` and
//! `producer` CLIs hold their flags to them before sending anything. Queue names have their own
//! module, [`crate::name`].

use std::time::Duration;

/// Longest long poll of a dequeue (`?wait=`).
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Longest delay of an enqueue or a nack (`?delay=`).
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// Longest lease (`?lease=` of a dequeue or an extend, `leaseSeconds` of a queue): 12 hours.
pub const MAX_LEASE: Duration = Duration::from_secs(12 * 3600);

/// Most items one dequeue hands out (`?max=`), and most items a peek shows (`?limit=`).
pub const MAX_DEQUEUE: u32 = 1000;

/// Most pods of one consumer Job (`parallelism` of `POST /jobs`, `autoscale.maxParallelism`).
pub const MAX_PARALLELISM: u32 = 1000;
