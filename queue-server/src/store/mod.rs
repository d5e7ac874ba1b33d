//! Where queues live. One interface for the HTTP layer, one variant per backend:
//! memory (the default) keeps every queue in this process. Durable and Redis backends join
//! here as variants of [`Store`], so handlers never know which one serves them.

mod clock;
pub mod journal;
mod memory;

use std::time::Duration;

pub use clock::{Clock, rfc3339_ms};
pub use memory::{MemoryStore, StoreOptions};

use crate::broker::{Id, LeaseInfo};

/// How a dequeue takes items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseSpec {
    /// kuard's dequeue: removed for good.
    None,
    /// Leased for the queue's `leaseSeconds`.
    QueueDefault,
    /// Leased for this many milliseconds.
    Millis(u64),
}

/// One dequeue request.
#[derive(Debug, Clone, Copy)]
pub struct DequeueRequest {
    /// Most items to hand out.
    pub max: usize,
    /// Leasing mode.
    pub lease: LeaseSpec,
    /// Long-poll time; zero answers at once.
    pub wait: Duration,
}

/// An item handed out, ready for the wire.
#[derive(Debug)]
pub struct Delivery {
    /// Item id.
    pub id: Id,
    /// Item text.
    pub body: Box<str>,
    /// Lease, unless removed for good.
    pub lease: Option<LeaseInfo>,
}

/// Result of a dequeue.
#[derive(Debug)]
pub enum DequeueOutcome {
    /// Items were handed out.
    Items(Vec<Delivery>),
    /// Nothing ready (or paused); the queue's counts for the 204 headers.
    Empty {
        /// Ready items.
        depth: u64,
        /// Leased items.
        inflight: u64,
        /// The queue is paused.
        paused: bool,
    },
}

/// The queue store behind the HTTP routes.
pub type Store = MemoryStore;
