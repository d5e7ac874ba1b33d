//! Every change to a queue as one value: [`Op`]. The store applies ops through
//! [`Queue::apply`], and the durable store writes the same ops to its journal and replays them
//! through the same function on start, so a replayed queue ends in exactly the state the live
//! one was in (ids included: the id generator is part of the state).

use serde::{Deserialize, Serialize};

use super::{Id, LeaseError, LeaseInfo, NewItem, Queue, QueueConfig, QueueFull, Taken};

/// A change to one queue. Time is passed beside it.
#[derive(Debug, Serialize, Deserialize)]
pub enum Op {
    /// Add items (one or a batch), ready after `delay_ms`.
    Enqueue {
        /// The items.
        items: Vec<NewItem>,
        /// Delay in ms (0: ready now).
        delay_ms: u64,
    },
    /// Hand out up to `max` items, leased for `lease_ms` or removed for good.
    Dequeue {
        /// Most items.
        max: u32,
        /// Lease length, or `None` for kuard's dequeue.
        lease_ms: Option<u64>,
    },
    /// Ack leases.
    Ack {
        /// Lease ids.
        leases: Vec<Id>,
    },
    /// Give a leased item back.
    Nack {
        /// Lease id.
        lease: Id,
        /// Delay in ms.
        delay_ms: u64,
    },
    /// Move a lease's deadline to now + `lease_ms`.
    Extend {
        /// Lease id.
        lease: Id,
        /// New lease length in ms.
        lease_ms: u64,
    },
    /// Let time act (expiries, delays).
    Tick,
    /// Drop ready and delayed items.
    Drain,
    /// Pause or resume hand-outs.
    SetPaused(bool),
    /// Dead letters back to ready.
    RequeueDead,
    /// Remove the dead letters.
    PurgeDead,
    /// New settings.
    Configure(QueueConfig),
    // Added after 0.1.0: new kinds go last, so that the records written before keep their tag.
    /// Give many leased items back (a batch nack), after `delay_ms`.
    NackMany {
        /// Lease ids.
        leases: Vec<Id>,
        /// Delay in ms.
        delay_ms: u64,
    },
    /// Move many leases' deadlines to now + `lease_ms`.
    ExtendMany {
        /// Lease ids.
        leases: Vec<Id>,
        /// New lease length in ms.
        lease_ms: u64,
    },
    /// Give leased items back unstarted: to the front, their attempt not counted.
    Release {
        /// Lease ids.
        leases: Vec<Id>,
    },
}

impl Op {
    /// What the op does, in a few words, with the ids it names.
    pub fn summary(&self) -> String {
        let ids = |leases: &[Id]| {
            leases
                .iter()
                .map(Id::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Op::Enqueue { items, delay_ms } if *delay_ms > 0 => {
                format!("enqueue of {} items delayed {delay_ms} ms", items.len())
            }
            Op::Enqueue { items, .. } => format!("enqueue of {} items", items.len()),
            Op::Dequeue {
                max,
                lease_ms: Some(ms),
            } => format!("lease of up to {max} items for {ms} ms"),
            Op::Dequeue {
                max,
                lease_ms: None,
            } => format!("dequeue of up to {max} items"),
            Op::Ack { leases } => format!("ack of lease {}", ids(leases)),
            Op::Nack { lease, .. } => format!("nack of lease {lease}"),
            Op::Extend { lease, .. } => format!("extend of lease {lease}"),
            Op::Tick => "expiries and delays that fell due".into(),
            Op::Drain => "drain".into(),
            Op::SetPaused(true) => "pause".into(),
            Op::SetPaused(false) => "resume".into(),
            Op::RequeueDead => "requeue of the dead letters".into(),
            Op::PurgeDead => "purge of the dead letters".into(),
            Op::Configure(_) => "settings changed".into(),
            Op::NackMany { leases, .. } => format!("nack of leases {}", ids(leases)),
            Op::ExtendMany { leases, .. } => format!("extend of leases {}", ids(leases)),
            Op::Release { leases } => format!("release of leases {}", ids(leases)),
        }
    }
}

/// What applying an [`Op`] gave.
#[derive(Debug)]
pub enum Outcome {
    /// From `Enqueue`: `(id, duplicate)` per item, or the whole batch refused.
    Enqueued(Result<Vec<(Id, bool)>, QueueFull>),
    /// From `Dequeue`.
    Taken(Taken),
    /// From `Ack`, `NackMany` and `Release`: one result per lease.
    Each(Vec<Result<(), LeaseError>>),
    /// From `ExtendMany`: the new lease of each, or why not.
    ExtendedMany(Vec<Result<LeaseInfo, LeaseError>>),
    /// From `Nack`.
    Nacked(Result<(), LeaseError>),
    /// From `Extend`: the new lease and the item it holds.
    Extended(Result<(LeaseInfo, Id, Box<str>), LeaseError>),
    /// From `Drain`, `RequeueDead`, `PurgeDead`: how many items.
    Count(u64),
    /// From the others.
    Done,
}

/// The result of [`Queue::apply`].
#[derive(Debug)]
pub struct Applied {
    /// What the op gave.
    pub outcome: Outcome,
    /// Whether the queue changed (the op, or time acting before it): only then must a journal
    /// keep the op.
    pub changed: bool,
    /// Items that became ready (waiters to wake).
    pub readied: usize,
}

impl Queue {
    /// Lets time act up to `now`, then applies `op`.
    pub fn apply(&mut self, op: Op, now: u64) -> Applied {
        let tick = self.tick(now);
        let depth_before = self.depth();
        let (outcome, changed) = match op {
            Op::Enqueue { items, delay_ms } => {
                let result = if items.len() == 1 {
                    let item = items.into_iter().next().expect("one item");
                    self.enqueue(item, delay_ms, now).map(|r| vec![r])
                } else {
                    self.enqueue_batch(items, delay_ms, now)
                };
                let changed = result.as_ref().is_ok_and(|r| r.iter().any(|(_, dup)| !dup));
                (Outcome::Enqueued(result), changed)
            }
            Op::Dequeue { max, lease_ms } => {
                let taken = self.dequeue(max as usize, lease_ms, now);
                let changed = matches!(taken, Taken::Items(_));
                (Outcome::Taken(taken), changed)
            }
            Op::Ack { leases } => {
                let results: Vec<_> = leases.into_iter().map(|l| self.ack(l, now)).collect();
                let changed = results.iter().any(Result::is_ok);
                (Outcome::Each(results), changed)
            }
            Op::Nack { lease, delay_ms } => {
                let result = self.nack(lease, delay_ms, now);
                let changed = result.is_ok();
                (Outcome::Nacked(result), changed)
            }
            Op::Extend { lease, lease_ms } => {
                let result = self.extend(lease, lease_ms, now).map(|info| {
                    let (id, body) = self.leased_item(lease).expect("lease just extended");
                    (info, id, body)
                });
                let changed = result.is_ok();
                (Outcome::Extended(result), changed)
            }
            Op::NackMany { leases, delay_ms } => {
                let results = self.nack_many(&leases, delay_ms, now);
                let changed = results.iter().any(Result::is_ok);
                (Outcome::Each(results), changed)
            }
            Op::ExtendMany { leases, lease_ms } => {
                let results = self.extend_many(&leases, lease_ms, now);
                let changed = results.iter().any(Result::is_ok);
                (Outcome::ExtendedMany(results), changed)
            }
            Op::Release { leases } => {
                let results = self.release(&leases, now);
                let changed = results.iter().any(Result::is_ok);
                (Outcome::Each(results), changed)
            }
            Op::Tick => (Outcome::Done, false),
            Op::Drain => {
                let n = self.drain(now);
                (Outcome::Count(n), n > 0)
            }
            Op::SetPaused(paused) => {
                let changed = self.paused() != paused;
                self.set_paused(paused);
                (Outcome::Done, changed)
            }
            Op::RequeueDead => {
                let n = self.requeue_dead();
                (Outcome::Count(n), n > 0)
            }
            Op::PurgeDead => {
                let n = self.purge_dead(now);
                (Outcome::Count(n), n > 0)
            }
            Op::Configure(config) => {
                let changed = self.config() != config;
                self.set_config(config);
                (Outcome::Done, changed)
            }
        };
        let readied = tick.ready + (self.depth().saturating_sub(depth_before) as usize);
        Applied {
            outcome,
            changed: changed || tick.changed,
            readied,
        }
    }
}
