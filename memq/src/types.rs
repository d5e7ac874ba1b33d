//! JSON bodies of the HTTP contract, field for field (kuard's names, camelCase).

use serde::{Deserialize, Serialize};

/// One work item as the server hands it out (kuard's `message`), with its lease when leased.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Always `"message"`.
    pub kind: String,
    /// Server-assigned, time-ordered id (ULID).
    pub id: String,
    /// The item's text.
    pub body: String,
    /// When the item was first enqueued, RFC 3339 UTC.
    pub creation_timestamp: String,
    /// Present when the item was leased rather than removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// Present (true) on an enqueue answer whose key was already taken.
    #[serde(default, skip_serializing_if = "is_false")]
    pub duplicate: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A lease on one item: the handle to ack, nack or extend it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The lease id, used in `/leases/{lease}/...`.
    pub id: String,
    /// When the lease runs out, RFC 3339 UTC.
    pub expires_at: String,
    /// How many times this item has been leased, this lease included (1 on first delivery).
    pub attempt: u32,
}

/// Several items from one `dequeue?max=N`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageList {
    /// Always `"messageList"`.
    pub kind: String,
    /// The items, oldest first.
    pub messages: Vec<Message>,
}

/// Per-queue settings, flat in the queue object and accepted as the body of `PUT /queues/{q}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueConfigPatch {
    /// Default lease length in whole seconds (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_seconds: Option<u64>,
    /// Deliveries before an item goes to the dead letters; 0 means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Most ready + delayed items the queue holds; 0 means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u64>,
}

/// A queue's counters and config: one row of `/stats`, and the body of the queue routes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// Queue name.
    pub name: String,
    /// Ready items (not delayed, not in flight, not dead).
    pub depth: u64,
    /// Items ever added (running total).
    pub enqueued: u64,
    /// Hand-outs: kuard-style dequeues and leases (running total).
    pub dequeued: u64,
    /// Items dropped by drain (running total).
    pub drained: u64,
    /// Items leased and not yet acked.
    pub inflight: u64,
    /// Items acked (running total).
    pub acked: u64,
    /// Lease expiries and nacks that put an item back (running total).
    pub requeued: u64,
    /// Items in the dead letters now.
    pub dead: u64,
    /// Items waiting for their delay to pass.
    pub delayed: u64,
    /// Whether dequeues are paused.
    pub paused: bool,
    /// Age of the oldest ready item in seconds, 0 when none is ready.
    pub oldest_age_seconds: f64,
    /// Default lease length in seconds.
    pub lease_seconds: u64,
    /// Deliveries before dead letters; 0 is unlimited.
    pub max_attempts: u32,
    /// Most ready + delayed items; 0 is unlimited.
    pub max_depth: u64,
}

/// `GET/PUT/DELETE /queues/{q}` answer: a stats row with `"kind":"queue"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueObject {
    /// Always `"queue"`.
    pub kind: String,
    /// The queue's counters and config.
    #[serde(flatten)]
    pub queue: QueueStats,
}

/// `GET /stats`: every queue, sorted by name (kuard's `stats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Always `"stats"`.
    pub kind: String,
    /// One row per queue.
    pub queues: Vec<QueueStats>,
}

/// One item of a JSON batch: a plain string, or a body with the producer's dedup key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BatchItem {
    /// Just the body.
    Body(String),
    /// A body with its key.
    Keyed {
        /// The producer's dedup key.
        id: String,
        /// The item's text.
        body: String,
    },
}

/// Answer to a batch enqueue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnqueueResult {
    /// Always `"enqueueResult"`.
    pub kind: String,
    /// Items added.
    pub count: u64,
    /// Items skipped because their key was taken.
    #[serde(default)]
    pub duplicates: u64,
    /// One id per input item (the original item's id for a duplicate).
    pub ids: Vec<String>,
}

/// Outcome for one lease id of a batch ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckOutcome {
    /// The lease id as given.
    pub lease: String,
    /// 200 acked, 404 unknown, 410 expired.
    pub status: u16,
    /// Error code when not acked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Answer to `POST /queues/{q}/ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckResult {
    /// Always `"ackResult"`.
    pub kind: String,
    /// How many lease ids were acked.
    pub acked: u64,
    /// One outcome per lease id, in input order.
    pub results: Vec<AckOutcome>,
}

/// A dead letter: an item that ran out of attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The item's id.
    pub id: String,
    /// The item's text.
    pub body: String,
    /// When the item was first enqueued.
    pub creation_timestamp: String,
    /// Deliveries it had.
    pub attempts: u32,
    /// When it was moved to the dead letters.
    pub dead_at: String,
}

/// `GET /queues/{q}/dead`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterList {
    /// Always `"deadLetterList"`.
    pub kind: String,
    /// Dead letters, oldest first.
    pub messages: Vec<DeadLetter>,
}

/// Answer to `POST /dead/requeue` and `DELETE /dead`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountResult {
    /// `"requeueResult"` or `"purgeResult"`.
    pub kind: String,
    /// Items moved or removed.
    pub count: u64,
}

/// Every error answer: `{"kind":"error","code":"...","message":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Always `"error"`.
    pub kind: String,
    /// Stable machine-readable code, e.g. `queue_not_found`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// Response headers of the queue routes.
pub mod headers {
    /// Ready items, on every 204 dequeue.
    pub const DEPTH: &str = "x-memq-depth";
    /// Items in flight, on every 204 dequeue.
    pub const INFLIGHT: &str = "x-memq-inflight";
    /// Items waiting for a delay, on every 204 dequeue.
    pub const DELAYED: &str = "x-memq-delayed";
    /// `true` on a 204 from a paused queue.
    pub const PAUSED: &str = "x-memq-paused";
}
