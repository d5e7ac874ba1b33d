//! A queue's whole state as plain data (and back), for snapshots of the durable store.
//! Borrowed on the way out, so writing a snapshot copies no item body twice.

use std::borrow::Cow;
use std::cmp::Reverse;

use serde::{Deserialize, Serialize};

use super::keys::{Keys, RecentIds};
use super::queue::{Delayed, Item, Leased};
use super::{
    Counters, DeadItem, EXPIRED_LEASES_REMEMBERED, Id, IdGen, Queue, QueueConfig, item_cost,
};

/// One item.
#[derive(Debug, Serialize, Deserialize)]
pub struct ItemImage<'a> {
    /// Item id.
    pub id: Id,
    /// Item text.
    #[serde(borrow)]
    pub body: Cow<'a, str>,
    /// Deliveries so far.
    pub attempts: u32,
}

/// Everything a queue holds, except the memory of expired lease ids.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueueImage<'a> {
    /// Settings.
    pub config: QueueConfig,
    /// Whether hand-outs are paused.
    pub paused: bool,
    /// The id generator's position.
    pub ids: (u64, u128),
    /// The last arrival number of a delayed item (orders equal ready times).
    pub seq: u64,
    /// Running totals: enqueued, dequeued, drained, acked, requeued, died, purged.
    pub counters: [u64; 7],
    /// Ready items in hand-out order.
    #[serde(borrow)]
    pub ready: Vec<ItemImage<'a>>,
    /// Delayed items: (ready time, arrival number, item), in no order.
    #[serde(borrow)]
    pub delayed: Vec<(u64, u64, ItemImage<'a>)>,
    /// Leases: (lease id, deadline, item), in no order.
    #[serde(borrow)]
    pub leases: Vec<(Id, u64, ItemImage<'a>)>,
    /// Dead letters, oldest first, with the time each died.
    #[serde(borrow)]
    pub dead: Vec<(ItemImage<'a>, u64)>,
    /// Dedup keys: (key, item, when the item left if it did).
    #[serde(borrow)]
    pub keys: Vec<(Cow<'a, str>, Id, Option<u64>)>,
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
            config: self.config,
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
        let mut q = Queue::new(image.config);
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
                    consumer: None,
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
        q.held_bytes = q.ready.iter().map(|i| item_cost(&i.body)).sum::<u64>()
            + q.delayed
                .iter()
                .map(|Reverse(d)| item_cost(&d.item.body))
                .sum::<u64>()
            + q.leases
                .values()
                .map(|l| item_cost(&l.item.body))
                .sum::<u64>()
            + q.dead.iter().map(|d| item_cost(&d.body)).sum::<u64>();
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{NewItem, Taken};

    const T0: u64 = 1_800_000_000_000;

    fn item(body: &str, key: Option<&str>) -> NewItem {
        NewItem {
            body: body.into(),
            key: key.map(Into::into),
        }
    }

    #[test]
    fn a_queue_survives_the_round_trip_through_its_image() {
        let autoscale = Some(crate::broker::Autoscale {
            max_parallelism: 3,
            items_per_pod: 10,
        });
        let config = QueueConfig {
            lease_ms: 5_000,
            max_attempts: 2,
            max_depth: 100,
            autoscale,
        };
        let mut q = Queue::new(config);
        for (b, k) in [
            ("a", Some("ka")),
            ("b", None),
            ("c", None),
            ("poison", Some("kp")),
        ] {
            q.enqueue(item(b, k), 0, T0).unwrap();
        }
        q.enqueue(item("later", None), 60_000, T0).unwrap();
        let Taken::Items(held) = q.dequeue(1, Some(10_000), T0) else {
            panic!()
        };
        // Take "b" and "c" for good, then lease and nack "poison" until it dies.
        let Taken::Items(_) = q.dequeue(2, None, T0) else {
            panic!()
        };
        for _ in 0..2 {
            let Taken::Items(mut p) = q.dequeue(1, Some(1_000), T0) else {
                panic!()
            };
            q.nack(p.pop().unwrap().lease.unwrap().id, 0, T0).unwrap();
        }
        q.set_paused(true);
        assert_eq!(
            (q.depth(), q.delayed(), q.inflight(), q.dead()),
            (0, 1, 1, 1)
        );

        let bytes = postcard::to_allocvec(&q.image()).unwrap();
        let image: QueueImage<'_> = postcard::from_bytes(&bytes).unwrap();
        let mut back = Queue::from_image(image);

        assert_eq!(back.config(), config);
        assert_eq!(back.held_bytes(), q.held_bytes());
        assert_eq!(back.counters(), q.counters());
        assert!(back.paused());
        assert_eq!(
            (back.depth(), back.delayed(), back.inflight(), back.dead()),
            (0, 1, 1, 1)
        );
        assert_eq!(back.dead_letters(5)[0].body.as_ref(), "poison");
        // The key of the held item is still taken; the ids continue where they were.
        let lease = held[0].lease.unwrap();
        assert_eq!(
            back.enqueue(item("again", Some("ka")), 0, T0).unwrap(),
            (held[0].id, true)
        );
        assert_eq!(back.ack(lease.id, T0 + 1), Ok(()));
        let (next_back, _) = back.enqueue(item("n", None), 0, T0 + 2).unwrap();
        let (next_live, _) = q.enqueue(item("n", None), 0, T0 + 2).unwrap();
        assert_eq!(
            next_back, next_live,
            "the id generator continues identically"
        );
        assert_eq!(back.tick(T0 + 60_000).ready, 1);
    }
}
