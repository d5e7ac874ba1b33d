//! Golden data: one fixed scenario of queue operations, driven through the HTTP API, and the
//! state it leaves as the clients saw it. `examples/golden.rs` runs it against a durable server
//! and a Redis-backed one and keeps what they wrote under `tests/golden/`, beside that state
//! (`expected.json`); `tests/golden.rs` checks that every later release reads those files back
//! to exactly that state. The scenario reaches every state a queue can hold: ready (new and
//! returned), delayed, leased (one lease extended, one taken by a named consumer), dead
//! letters (also requeued and purged), dedup keys (held and retained), paused, drained, config
//! (with autoscale, changed after creation), a deleted queue and an empty one.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use memq::{BatchItem, DequeueOptions, Dequeued, EnqueueOptions, Message, QueueConfigPatch};
use serde::{Deserialize, Serialize};

/// What a store held at the end of the scenario, queue by queue (sorted by name).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Golden {
    /// The release and commit that wrote the data (`queue-server --version`'s first line).
    pub written_by: String,
    /// Every queue.
    pub queues: Vec<QueueState>,
}

/// One queue, in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueState {
    /// Queue name.
    pub name: String,
    /// Default lease length.
    pub lease_ms: u64,
    /// Deliveries before the dead letters (0: unlimited).
    pub max_attempts: u32,
    /// Most ready + delayed items (0: unlimited).
    pub max_depth: u64,
    /// Autoscale `(maxParallelism, itemsPerPod)`, when on.
    pub autoscale: Option<(u32, u64)>,
    /// Whether hand-outs are paused.
    pub paused: bool,
    /// Running totals.
    pub counters: Counters,
    /// Ready items in hand-out order.
    pub ready: Vec<ItemState>,
    /// Delayed items by the time they become ready.
    pub delayed: Vec<DelayedState>,
    /// Leases by lease id.
    pub leases: Vec<LeaseState>,
    /// Dead letters, oldest first.
    pub dead: Vec<DeadState>,
    /// Dedup keys by key.
    pub keys: Vec<KeyState>,
}

/// A queue's running totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Items added.
    pub enqueued: u64,
    /// Hand-outs.
    pub dequeued: u64,
    /// Dropped by drain.
    pub drained: u64,
    /// Acked.
    pub acked: u64,
    /// Put back by expiry or nack.
    pub requeued: u64,
    /// Sent to the dead letters.
    pub died: u64,
    /// Dead letters purged.
    pub purged: u64,
}

/// An item.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemState {
    /// Item id.
    pub id: String,
    /// Its text.
    pub body: String,
    /// Deliveries so far.
    pub attempts: u32,
}

/// A delayed item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelayedState {
    /// The item.
    pub item: ItemState,
    /// When it becomes ready (ms since the epoch).
    pub ready_at_ms: u64,
}

/// A lease held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseState {
    /// Lease id.
    pub lease: String,
    /// The item it holds.
    pub item: ItemState,
    /// When it runs out (ms since the epoch).
    pub expires_at_ms: u64,
    /// Who took it, when it said (`X-Memq-Consumer`; kept by the Redis store only).
    pub consumer: Option<String>,
}

/// A dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadState {
    /// The item.
    pub item: ItemState,
    /// When it died (ms since the epoch).
    pub died_at_ms: u64,
}

/// A producer's dedup key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyState {
    /// The key.
    pub key: String,
    /// The item it names.
    pub item: String,
    /// True when the item left the queue and the key is only kept for the dedup window.
    pub retained: bool,
}

impl Golden {
    /// Reads `expected.json`.
    pub fn load(path: &std::path::Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Writes `expected.json`.
    pub fn save(&self, path: &std::path::Path) {
        let text = serde_json::to_string_pretty(self).expect("encode the golden state");
        std::fs::write(path, text + "\n")
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// The same state with the consumer names of the leases left out (a data directory does
    /// not keep them: leases do not outlive a restart).
    pub fn without_consumers(mut self) -> Self {
        for q in &mut self.queues {
            for l in &mut q.leases {
                l.consumer = None;
            }
        }
        self
    }

    /// The queue named `name`.
    pub fn queue(&self, name: &str) -> &QueueState {
        self.queues
            .iter()
            .find(|q| q.name == name)
            .unwrap_or_else(|| panic!("no queue {name} in the golden state"))
    }
}

/// Milliseconds since the epoch of an RFC 3339 time the server wrote.
pub fn ms_of(rfc3339: &str) -> u64 {
    let t = humantime::parse_rfc3339(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?} is not an RFC 3339 time: {e}"));
    t.duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as u64
}

/// What the scenario did that the API does not show afterwards: every body it enqueued (by
/// item id), every key it used, and the dead-letter totals.
#[derive(Debug, Default)]
pub struct Scenario {
    bodies: BTreeMap<String, String>,
    /// key -> item id, per queue.
    keys: BTreeMap<String, BTreeMap<String, String>>,
    /// Items sent to the dead letters and dead letters purged, per queue.
    died: BTreeMap<String, u64>,
    purged: BTreeMap<String, u64>,
    /// The queues that exist at the end.
    queues: Vec<String>,
}

fn lease_opts(max: u32) -> DequeueOptions {
    DequeueOptions {
        lease_default: true,
        max: Some(max),
        ..Default::default()
    }
}

async fn take(client: &memq::Client, queue: &str, opts: &DequeueOptions) -> Vec<Message> {
    match client.dequeue(queue, opts).await.expect("dequeue") {
        Dequeued::Messages(m) => m,
        other => panic!("{queue}: expected items, got {other:?}"),
    }
}

fn lease_id(m: &Message) -> &str {
    &m.lease.as_ref().expect("a leased item").id
}

impl Scenario {
    async fn enqueue(&mut self, c: &memq::Client, q: &str, body: &str, key: Option<&str>) {
        self.enqueue_after(c, q, body, key, None).await;
    }

    async fn enqueue_after(
        &mut self,
        c: &memq::Client,
        q: &str,
        body: &str,
        key: Option<&str>,
        delay: Option<Duration>,
    ) {
        let opts = EnqueueOptions {
            delay,
            id: key.map(str::to_string),
        };
        let m = c.enqueue(q, body, &opts).await.expect("enqueue");
        assert!(!m.duplicate, "{q}: {body} is new");
        self.bodies.insert(m.id.clone(), body.to_string());
        if let Some(key) = key {
            self.keys
                .entry(q.to_string())
                .or_default()
                .insert(key.to_string(), m.id);
        }
    }

    /// Runs every operation of the scenario but the last (see [`Scenario::last`]).
    pub async fn run(c: &memq::Client) -> Self {
        let mut s = Scenario::default();
        let named = c.clone().with_consumer(Some("worker-1".into()));

        // work: every item state at once.
        let work = "work";
        let config = QueueConfigPatch {
            lease_seconds: Some(120),
            max_attempts: Some(2),
            max_depth: Some(1000),
            ..Default::default()
        };
        c.create_queue(work, Some(&config)).await.expect("create");
        // A poison item: leased and nacked until it dies.
        s.enqueue(c, work, "poison", Some("k-poison")).await;
        for _ in 0..2 {
            let m = take(c, work, &lease_opts(1)).await;
            c.nack(work, lease_id(&m[0]), None).await.expect("nack");
        }
        *s.died.entry(work.into()).or_default() += 1;
        let lines = "alpha\nbravo\ncharlie\ndelta\necho\n";
        let added = c.enqueue_lines(work, lines, None).await.expect("batch");
        for (id, body) in added.ids.iter().zip(lines.lines()) {
            s.bodies.insert(id.clone(), body.to_string());
        }
        s.enqueue(c, work, "foxtrot", Some("k-foxtrot")).await;
        let dup = c
            .enqueue(
                work,
                "foxtrot again",
                &EnqueueOptions {
                    id: Some("k-foxtrot".into()),
                    ..Default::default()
                },
            )
            .await
            .expect("enqueue");
        assert!(dup.duplicate, "the key is taken");
        let batch = [
            BatchItem::Body("hotel".into()),
            BatchItem::Keyed {
                id: "k-golf".into(),
                body: "golf".into(),
            },
        ];
        let added = c.enqueue_batch(work, &batch, None).await.expect("batch");
        s.bodies.insert(added.ids[0].clone(), "hotel".into());
        s.bodies.insert(added.ids[1].clone(), "golf".into());
        s.keys
            .entry(work.into())
            .or_default()
            .insert("k-golf".into(), added.ids[1].clone());
        let delay = Some(Duration::from_secs(900));
        s.enqueue_after(c, work, "later", Some("k-later"), delay)
            .await;
        // alpha leased by a named consumer; bravo leased and extended.
        let alpha = take(&named, work, &lease_opts(1)).await;
        assert_eq!(alpha[0].body, "alpha");
        let bravo = take(c, work, &lease_opts(1)).await;
        c.extend(work, lease_id(&bravo[0]), Some(Duration::from_secs(600)))
            .await
            .expect("extend");
        // charlie nacked with a delay; delta acked.
        let charlie = take(c, work, &lease_opts(1)).await;
        c.nack(work, lease_id(&charlie[0]), Some(Duration::from_secs(300)))
            .await
            .expect("nack");
        let delta = take(c, work, &lease_opts(1)).await;
        c.ack(work, lease_id(&delta[0])).await.expect("ack");
        // echo nacked back to the front, foxtrot acked in a batch (its key is retained), then
        // echo nacked again: maxAttempts is 2, it dies.
        let two = take(c, work, &lease_opts(2)).await;
        assert_eq!(
            (two[0].body.as_str(), two[1].body.as_str()),
            ("echo", "foxtrot")
        );
        c.nack(work, lease_id(&two[0]), None).await.expect("nack");
        c.ack_batch(work, &[lease_id(&two[1]).to_string()])
            .await
            .expect("ack");
        let echo = take(c, work, &lease_opts(1)).await;
        assert_eq!(echo[0].body, "echo");
        c.nack(work, lease_id(&echo[0]), None).await.expect("nack");
        *s.died.entry(work.into()).or_default() += 1;
        // hotel taken kuard-style; golf nacked back to the front (ready, attempt 1).
        let hotel = take(c, work, &DequeueOptions::default()).await;
        assert_eq!(hotel[0].body, "hotel");
        let golf = take(c, work, &lease_opts(1)).await;
        c.nack(work, lease_id(&golf[0]), None).await.expect("nack");

        // dead: dead letters requeued, then one purged.
        let dead = "dead";
        let config = QueueConfigPatch {
            max_attempts: Some(1),
            ..Default::default()
        };
        c.create_queue(dead, Some(&config)).await.expect("create");
        for body in ["d1", "d2", "d3"] {
            s.enqueue(c, dead, body, None).await;
        }
        for _ in 0..2 {
            let m = take(c, dead, &lease_opts(1)).await;
            c.nack(dead, lease_id(&m[0]), None).await.expect("nack");
        }
        assert_eq!(c.requeue_dead(dead).await.expect("requeue"), 2);
        let m = take(c, dead, &lease_opts(1)).await;
        c.nack(dead, lease_id(&m[0]), None).await.expect("nack");
        assert_eq!(c.purge_dead(dead).await.expect("purge"), 1);
        let m = take(c, dead, &lease_opts(1)).await;
        c.nack(dead, lease_id(&m[0]), None).await.expect("nack");
        s.died.insert(dead.into(), 4);
        s.purged.insert(dead.into(), 1);

        // paused: items that wait for a resume.
        let paused = "paused";
        c.create_queue(paused, None).await.expect("create");
        for body in ["p1", "p2", "p3"] {
            s.enqueue(c, paused, body, None).await;
        }
        c.queue_action(paused, "pause").await.expect("pause");

        // drained: ready and delayed items dropped, one added after.
        let drained = "drained";
        c.create_queue(drained, None).await.expect("create");
        s.enqueue(c, drained, "r1", Some("k-r1")).await;
        s.enqueue(c, drained, "r2", None).await;
        s.enqueue_after(c, drained, "l1", None, Some(Duration::from_secs(600)))
            .await;
        c.queue_action(drained, "drain").await.expect("drain");
        s.enqueue(c, drained, "after", None).await;

        // scaled: config changed after creation, autoscale on.
        let scaled = "scaled";
        c.create_queue(scaled, None).await.expect("create");
        let config = QueueConfigPatch {
            lease_seconds: Some(45),
            max_attempts: Some(0),
            autoscale: Some(Some(memq::Autoscale {
                max_parallelism: 3,
                items_per_pod: 10,
            })),
            ..Default::default()
        };
        c.create_queue(scaled, Some(&config)).await.expect("update");
        s.enqueue(c, scaled, "s1", None).await;
        let gone = take(c, scaled, &DequeueOptions::default()).await;
        assert_eq!(gone[0].body, "s1");
        s.enqueue(c, scaled, "s2", None).await;

        // gone: created and deleted; empty: created only.
        c.create_queue("gone", None).await.expect("create");
        s.enqueue(c, "gone", "lost with its queue", None).await;
        c.delete_queue("gone").await.expect("delete");
        c.create_queue("empty", None).await.expect("create");

        s.queues = ["dead", "drained", "empty", "paused", "scaled", "work"]
            .map(String::from)
            .to_vec();
        s
    }

    /// The scenario's last operation, one enqueue: a torn copy of the journal loses it.
    pub async fn last(&mut self, c: &memq::Client) {
        self.enqueue(c, "work", "last", None).await;
    }

    /// The state of every queue as the API shows it now, with what only the scenario knows.
    pub async fn capture(&self, c: &memq::Client, written_by: &str) -> Golden {
        let mut queues = Vec::new();
        for name in &self.queues {
            queues.push(self.capture_queue(c, name).await);
        }
        Golden {
            written_by: written_by.to_string(),
            queues,
        }
    }

    async fn capture_queue(&self, c: &memq::Client, name: &str) -> QueueState {
        let stats = c.queue(name).await.expect("queue");
        let attempts =
            |id: String| async move { c.item(name, &id).await.expect("item lookup").attempts };
        let mut ready = Vec::new();
        for m in c.peek(name, Some(1000)).await.expect("peek") {
            let attempts = attempts(m.id.clone()).await;
            ready.push(ItemState {
                id: m.id,
                body: m.body,
                attempts,
            });
        }
        let mut leases = Vec::new();
        for l in c.leases(name, Some(1000)).await.expect("leases").leases {
            leases.push(LeaseState {
                item: ItemState {
                    body: self.bodies[&l.item_id].clone(),
                    id: l.item_id,
                    attempts: l.attempt,
                },
                lease: l.id,
                expires_at_ms: ms_of(&l.expires_at),
                consumer: l.consumer,
            });
        }
        leases.sort_by(|a, b| a.lease.cmp(&b.lease));
        let dead: Vec<DeadState> = c
            .dead_letters(name, Some(1000))
            .await
            .expect("dead letters")
            .into_iter()
            .map(|d| DeadState {
                item: ItemState {
                    id: d.id,
                    body: d.body,
                    attempts: d.attempts,
                },
                died_at_ms: ms_of(&d.dead_at),
            })
            .collect();
        let mut delayed = Vec::new();
        for (id, body) in &self.bodies {
            match c.item(name, id).await {
                Ok(info) if info.state == "delayed" => delayed.push(DelayedState {
                    item: ItemState {
                        id: id.clone(),
                        body: body.clone(),
                        attempts: info.attempts,
                    },
                    ready_at_ms: ms_of(info.ready_at.as_deref().expect("readyAt")),
                }),
                Ok(_) => {}
                Err(e) if e.status() == Some(404) => {}
                Err(e) => panic!("item lookup: {e}"),
            }
        }
        delayed.sort_by(|a, b| (a.ready_at_ms, &a.item.id).cmp(&(b.ready_at_ms, &b.item.id)));
        let mut keys = Vec::new();
        for (key, item) in self.keys.get(name).into_iter().flatten() {
            let retained = match c.item_by_key(name, key).await {
                Ok(info) => {
                    assert_eq!(&info.id, item, "{name}: key {key}");
                    false
                }
                Err(e) if e.status() == Some(404) => true,
                Err(e) => panic!("key lookup: {e}"),
            };
            keys.push(KeyState {
                key: key.clone(),
                item: item.clone(),
                retained,
            });
        }
        // A key whose item left counts only while it is retained (the dedup window).
        assert_eq!(
            stats.retained_keys,
            keys.iter().filter(|k| k.retained).count() as u64,
            "{name}: retained keys"
        );
        assert_eq!(stats.depth, ready.len() as u64, "{name}: ready");
        assert_eq!(stats.delayed, delayed.len() as u64, "{name}: delayed");
        assert_eq!(stats.inflight, leases.len() as u64, "{name}: leased");
        assert_eq!(stats.dead, dead.len() as u64, "{name}: dead");
        QueueState {
            name: name.to_string(),
            lease_ms: stats.lease_seconds * 1000,
            max_attempts: stats.max_attempts,
            max_depth: stats.max_depth,
            autoscale: stats
                .autoscale
                .map(|a| (a.max_parallelism, a.items_per_pod)),
            paused: stats.paused,
            counters: Counters {
                enqueued: stats.enqueued,
                dequeued: stats.dequeued,
                drained: stats.drained,
                acked: stats.acked,
                requeued: stats.requeued,
                died: self.died.get(name).copied().unwrap_or(0),
                purged: self.purged.get(name).copied().unwrap_or(0),
            },
            ready,
            delayed,
            leases,
            dead,
            keys,
        }
    }
}
