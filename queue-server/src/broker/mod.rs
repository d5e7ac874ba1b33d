//! The queue core: ready items, delayed items, leases, dead letters, dedup keys and counters.
//!
//! Plain structs and methods with no I/O, no HTTP and no clock of their own: every method that
//! depends on time takes `now` in milliseconds since the Unix epoch, so each rule is unit-tested
//! here by passing times, without sleeping. Locking, waking long-poll waiters and sweeping
//! deadlines belong to `store/`.

mod ids;
mod image;
mod keys;
mod op;
mod queue;

pub use ids::{Id, IdGen};
pub use image::{ItemImage, QueueImage};
pub use keys::{KEY_OVERHEAD_BYTES, key_cost};
pub use op::{Applied, Op, Outcome};
pub use queue::{
    Autoscale, Counters, DeadItem, FoundItem, Handed, HeldLease, LeaseError, LeaseInfo, NewItem,
    Queue, QueueConfig, QueueFull, Taken, Tick, Whereabouts,
};

/// How long a dedup key stays taken after its item left the queue.
pub const KEY_RETENTION_MS: u64 = 10 * 60 * 1000;

/// Bytes an item counts for `--max-memory` beyond its body: its id, attempts and its slot in
/// the queue's collections (about what `cargo bench --bench memory` measures per item).
pub const ITEM_OVERHEAD_BYTES: u64 = 64;

/// What one item with this body counts for `--max-memory`.
pub fn item_cost(body: &str) -> u64 {
    body.len() as u64 + ITEM_OVERHEAD_BYTES
}

/// Spare room (entries) a queue's collections keep before they give it back to the allocator:
/// below it, shrinking would cost more than it frees.
const SPARE_ROOM_MIN: usize = 1024;

/// How many expired lease ids a queue remembers, to answer 410 instead of 404.
pub const EXPIRED_LEASES_REMEMBERED: usize = 100_000;
