//! A queue's whole state as plain data (and back), for snapshots of the durable store.
//! Borrowed on the way out, so writing a snapshot copies no item body twice.

use std::borrow::Cow;
use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

use super::keys::{Keys, RecentIds};
use super::queue::{Delayed, Item, Leased};
use super::{Counters, DeadItem, EXPIRED_LEASES_REMEMBERED, Id, IdGen, Queue, QueueConfig};

/// One item.
#[derive(Debug, Serialize, Deserialize)]
pub struct ItemImage<'a> {
    id: Id,
    #[serde(borrow)]
    body: Cow<'a, str>,
    attempts: u32,
}

/// Everything a queue holds, except the memory of expired lease ids.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueueImage<'a> {
    lease_ms: u64,
    max_attempts: u32,
    max_depth: u64,
    paused: bool,
    ids: (u64, u128),
    seq: u64,
    counters: [u64; 7],
    #[serde(borrow)]
    ready: Vec<ItemImage<'a>>,
    #[serde(borrow)]
    delayed: Vec<(u64, u64, ItemImage<'a>)>,
    #[serde(borrow)]
    leases: Vec<(Id, u64, ItemImage<'a>)>,
    #[serde(borrow)]
    dead: Vec<(ItemImage<'a>, u64)>,
    #[serde(borrow)]
    keys: Vec<(Cow<'a, str>, Id, Option<u64>)>,
}

fn out(item: &Item) -> ItemImage<'_> {
    ItemImage {
        id: item.id,
        body: Cow::Borrowed(&item.body),
        attempts: item.attempts,
    }
}

fn back(image: ItemImage<'_>) -> Item {
    Item {
        id: image.id,
        body: image.body.into_owned().into_boxed_str(),
        attempts: image.attempts,
    }
}

impl Queue {
    /// The queue's state as plain data.
    pub fn image(&self) -> QueueImage<'_> {
        let c = self.counters;
        QueueImage {
            lease_ms: self.config.lease_ms,
            max_attempts: self.config.max_attempts,
            max_depth: self.config.max_depth,
            paused: self.paused,
            ids: self.ids.state(),
            seq: self.seq,
            counters: [
                c.enqueued, c.dequeued, c.drained, c.acked, c.requeued, c.died, c.purged,
            ],
            ready: self.ready.iter().map(out).collect(),
            delayed: self
                .delayed
                .iter()
                .map(|Reverse(d)| (d.at, d.seq, out(&d.item)))
                .collect(),
            leases: self
                .leases
                .iter()
                .map(|(id, l)| (*id, l.deadline, out(&l.item)))
                .collect(),
            dead: self
                .dead
                .iter()
                .map(|d| {
                    let item = ItemImage {
                        id: d.id,
                        body: Cow::Borrowed(&d.body),
                        attempts: d.attempts,
                    };
                    (item, d.died_at)
                })
                .collect(),
            keys: self
                .keys
                .entries()
                .map(|(k, id, at)| (Cow::Borrowed(k), id, at))
                .collect(),
        }
    }

    /// A queue in exactly the state of `image`.
    pub fn from_image(image: QueueImage<'_>) -> Queue {
        let [enqueued, dequeued, drained, acked, requeued, died, purged] = image.counters;
        let config = QueueConfig {
            lease_ms: image.lease_ms,
            max_attempts: image.max_attempts,
            max_depth: image.max_depth,
        };
        let mut q = Queue::new(config);
        q.paused = image.paused;
        q.ids = IdGen::from_state(image.ids);
        q.seq = image.seq;
        q.counters = Counters {
            enqueued,
            dequeued,
            drained,
            acked,
            requeued,
            died,
            purged,
        };
        q.ready = image.ready.into_iter().map(back).collect();
        q.delayed = image
            .delayed
            .into_iter()
            .map(|(at, seq, item)| {
                Reverse(Delayed {
                    at,
                    seq,
                    item: back(item),
                })
            })
            .collect();
        for (id, deadline, item) in image.leases {
            q.expiry.push(Reverse((deadline, id)));
            q.leases.insert(
                id,
                Leased {
                    item: back(item),
                    deadline,
                },
            );
        }
        q.dead = image
            .dead
            .into_iter()
            .map(|(item, died_at)| {
                let item = back(item);
                DeadItem {
                    id: item.id,
                    body: item.body,
                    attempts: item.attempts,
                    died_at,
                }
            })
            .collect();
        q.keys = Keys::from_entries(
            image
                .keys
                .into_iter()
                .map(|(k, id, at)| (k.into_owned(), id, at))
                .collect(),
        );
        q.expired = RecentIds::new(EXPIRED_LEASES_REMEMBERED);
        q
    }
}
