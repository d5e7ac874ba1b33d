//! JSON bodies of the HTTP contract, field for field (kuard's names, camelCase).

use serde::{Deserialize, Serialize};

/// One work item as the server hands it out (kuard's `message`), with its lease when leased.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Always `"message"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::message))]
    pub kind: String,
    /// Server-assigned, time-ordered id (ULID).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9A-HJKMNP-TV-Z]{26}$"))]
    pub id: String,
    /// The item's text.
    pub body: String,
    /// When the item was first enqueued, RFC 3339 UTC.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The lease id, used in `/leases/{lease}/...`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9A-HJKMNP-TV-Z]{26}$"))]
    pub id: String,
    /// When the lease runs out, RFC 3339 UTC.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: String,
    /// How many times this item has been leased, this lease included (1 on first delivery).
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub attempt: u32,
}

/// Several items from one `dequeue?max=N`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageList {
    /// Always `"messageList"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::message_list))]
    pub kind: String,
    /// The items, oldest first.
    pub messages: Vec<Message>,
}

/// Per-queue settings, flat in the queue object and accepted as the body of `PUT /queues/{q}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueConfigPatch {
    /// Default lease length in whole seconds (1 to 43200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 43200))]
    pub lease_seconds: Option<u64>,
    /// Deliveries before an item goes to the dead letters; 0 means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = Int64, maximum = 4294967295_u32))]
    pub max_attempts: Option<u32>,
    /// Most ready + delayed items the queue holds; 0 means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(maximum = 9223372036854775807_u64))]
    pub max_depth: Option<u64>,
    /// Consumer Jobs launched by queue depth (`--autoscale`): `Some(Some(..))` turns it on or
    /// changes it, `Some(None)` (JSON `null`) turns it off, `None` (absent) leaves it as it is.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Autoscale>, nullable))]
    pub autoscale: Option<Option<Autoscale>>,
}

/// Tells a field that is present (even as `null`) from one that is absent: serde only calls
/// this for present fields, and `#[serde(default)]` gives `None` for absent ones.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// A queue's autoscaling: the server keeps `ceil(depth / itemsPerPod)` consumer pods, at most
/// `maxParallelism`, running or pending for it, launching consumer Jobs for the difference.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autoscale {
    /// Most consumer pods for this queue (1 to 1000).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub max_parallelism: u32,
    /// Ready items one pod is expected to handle (at least 1).
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 9223372036854775807_u64)
    )]
    pub items_per_pod: u64,
}

/// A queue's counters and config: one row of `/stats`, and the body of the queue routes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    /// Queue name.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    )]
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
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub oldest_age_seconds: f64,
    /// Default lease length in seconds.
    pub lease_seconds: u64,
    /// Deliveries before dead letters; 0 is unlimited.
    pub max_attempts: u32,
    /// Most ready + delayed items; 0 is unlimited.
    pub max_depth: u64,
    /// Autoscaling settings, when the queue opted in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
    /// Consumers that hold leases now, by the names they gave (`X-Memq-Consumer`); leases of
    /// consumers that gave none are not counted.
    #[serde(default)]
    pub consumers: u64,
    /// Dedup keys kept after their item left (`--dedup-window`): a producer's rerun still finds
    /// them, and they still take memory.
    #[serde(default)]
    pub retained_keys: u64,
    /// What the retained keys count for `--max-memory` (absent with Redis, whose own memory
    /// holds them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained_key_bytes: Option<u64>,
}

/// `GET/PUT/DELETE /queues/{q}` answer: a stats row with `"kind":"queue"`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueObject {
    /// Always `"queue"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::queue))]
    pub kind: String,
    /// The queue's counters and config.
    #[serde(flatten)]
    pub queue: QueueStats,
}

/// `GET /stats`: every queue, sorted by name (kuard's `stats`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Always `"stats"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::stats))]
    pub kind: String,
    /// One row per queue.
    pub queues: Vec<QueueStats>,
}

/// One item of a JSON batch: a plain string, or a body with the producer's dedup key.
///
/// Read only from a JSON string or object: serde's derived reading would also take an array
/// (`["key","body"]`) for the keyed form, which the contract does not allow.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum BatchItem {
    /// Just the body.
    Body(String),
    /// A body with its key.
    #[cfg_attr(feature = "openapi", schema(title = "KeyedItem"))]
    Keyed {
        /// The producer's dedup key.
        id: String,
        /// The item's text.
        body: String,
    },
}

impl<'de> Deserialize<'de> for BatchItem {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Item;

        impl<'de> serde::de::Visitor<'de> for Item {
            type Value = BatchItem;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a string or an object {"id":KEY,"body":TEXT}"#)
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<BatchItem, E> {
                Ok(BatchItem::Body(text.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<BatchItem, E> {
                Ok(BatchItem::Body(text))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<BatchItem, A::Error> {
                #[derive(Deserialize)]
                struct Keyed {
                    id: String,
                    body: String,
                }
                let keyed = Keyed::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(BatchItem::Keyed {
                    id: keyed.id,
                    body: keyed.body,
                })
            }
        }

        deserializer.deserialize_any(Item)
    }
}

/// Answer to a batch enqueue.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnqueueResult {
    /// Always `"enqueueResult"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::enqueue_result))]
    pub kind: String,
    /// Items added.
    pub count: u64,
    /// Items skipped because their key was taken.
    #[serde(default)]
    pub duplicates: u64,
    /// One id per input item (the original item's id for a duplicate).
    #[cfg_attr(feature = "openapi", schema(inline, value_type = Vec<ItemId>))]
    pub ids: Vec<String>,
}

/// Outcome for one lease id of a batch ack, nack or release.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckOutcome {
    /// The lease id as given.
    pub lease: String,
    /// 200 done, 404 unknown, 410 expired.
    #[cfg_attr(feature = "openapi", schema(minimum = 200, maximum = 599))]
    pub status: u16,
    /// Error code when not done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Answer to `POST /queues/{q}/ack`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckResult {
    /// Always `"ackResult"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::ack_result))]
    pub kind: String,
    /// How many lease ids were acked.
    pub acked: u64,
    /// One outcome per lease id, in input order.
    pub results: Vec<AckOutcome>,
}

/// Answer to `POST /queues/{q}/nack`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NackResult {
    /// Always `"nackResult"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::nack_result))]
    pub kind: String,
    /// How many lease ids were nacked.
    pub nacked: u64,
    /// One outcome per lease id, in input order.
    pub results: Vec<AckOutcome>,
}

/// Answer to `POST /queues/{q}/release`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseResult {
    /// Always `"releaseResult"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::release_result))]
    pub kind: String,
    /// How many lease ids were released.
    pub released: u64,
    /// One outcome per lease id, in input order.
    pub results: Vec<AckOutcome>,
}

/// Outcome for one lease id of a batch extend.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtendOutcome {
    /// The lease id as given.
    pub lease: String,
    /// 200 extended, 404 unknown, 410 expired.
    #[cfg_attr(feature = "openapi", schema(minimum = 200, maximum = 599))]
    pub status: u16,
    /// Error code when not extended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The lease's new end, when extended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: Option<String>,
}

/// Answer to `POST /queues/{q}/extend`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendResult {
    /// Always `"extendResult"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::extend_result))]
    pub kind: String,
    /// How many leases were extended.
    pub extended: u64,
    /// One outcome per lease id, in input order.
    pub results: Vec<ExtendOutcome>,
}

/// A dead letter: an item that ran out of attempts.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The item's id.
    pub id: String,
    /// The item's text.
    pub body: String,
    /// When the item was first enqueued.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub creation_timestamp: String,
    /// Deliveries it had.
    pub attempts: u32,
    /// When it was moved to the dead letters.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub dead_at: String,
}

/// `GET /queues/{q}/dead`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterList {
    /// Always `"deadLetterList"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::dead_letter_list))]
    pub kind: String,
    /// Dead letters, oldest first.
    pub messages: Vec<DeadLetter>,
}

/// A lease held now, as `GET /queues/{q}/leases` lists it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseEntry {
    /// The lease id (what ack, nack and extend take).
    pub id: String,
    /// The id of the item it holds.
    pub item_id: String,
    /// The item's delivery number, this one included.
    pub attempt: u32,
    /// The consumer that took it (`X-Memq-Consumer` of its dequeue), or null when it did not
    /// name itself.
    pub consumer: Option<String>,
    /// When it was taken.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub leased_at: String,
    /// When it runs out unless acked, nacked or extended.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub expires_at: String,
}

/// `GET /queues/{q}/items/{id}` and `GET /queues/{q}/items?key=KEY`: where an item is now.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ItemInfo {
    /// Always `"item"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::item))]
    pub kind: String,
    /// The item's id.
    pub id: String,
    /// `ready`, `delayed`, `leased` or `dead`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::item_state))]
    pub state: String,
    /// Deliveries so far.
    pub attempts: u32,
    /// When it was enqueued (the time in its id).
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub enqueued_at: String,
    /// Ready: how many items are handed out before it (0: it is next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    /// Delayed: when it becomes ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub ready_at: Option<String>,
    /// Leased: the lease that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseEntry>,
    /// Dead: when it became a dead letter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub dead_at: Option<String>,
}

/// `GET /queues/{q}/leases`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseList {
    /// Always `"leaseList"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::lease_list))]
    pub kind: String,
    /// The leases, oldest first, up to `?limit=`.
    pub leases: Vec<LeaseEntry>,
}

/// Answer to `POST /dead/requeue` and `DELETE /dead` (described as two schemas, one per
/// `kind`, by the server's API description).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountResult {
    /// `"requeueResult"` or `"purgeResult"`.
    pub kind: String,
    /// Items moved or removed.
    pub count: u64,
}

/// Body of `POST /jobs`: launch a consumer Job for a queue from the server's Job template.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateJobRequest {
    /// The queue the consumers work on; it must exist.
    pub queue: String,
    /// Consumer pods running at once (1 to 1000).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub parallelism: u32,
    /// Container image instead of the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Consumer arguments instead of the template's (`--server` and `--queue` are always set
    /// by the server).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Pod failures before the Job fails, instead of the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub backoff_limit: Option<i32>,
    /// Seconds a finished Job is kept before Kubernetes deletes it, instead of the template's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// One condition of a Job (`Complete`, `Failed`, `Suspended`, ...), as Kubernetes reports it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobCondition {
    /// Condition type, e.g. `Complete` or `Failed`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason, e.g. `BackoffLimitExceeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the condition last changed, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// A consumer Job as `GET /jobs` lists it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSummary {
    /// The Job's name (`consumer-<queue>-xxxxx`).
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The queue its consumers work on (label `memq.queue`).
    pub queue: String,
    /// `Pending` (no pod yet), `Running`, `Complete`, `Failed` or `Suspended`.
    pub state: String,
    /// Pods it runs at once.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub parallelism: i32,
    /// Pods pending or running now.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub active: i32,
    /// Pods that finished with exit 0.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub succeeded: i32,
    /// Pods that failed.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub failed: i32,
    /// Container image of the consumers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When the Job was created, RFC 3339 UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// When the Job controller started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    /// When it completed (not set for failed Jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<String>,
    /// Its conditions, as Kubernetes reports them.
    #[serde(default)]
    pub conditions: Vec<JobCondition>,
}

/// Answer to `POST /jobs` and `DELETE /jobs/{name}`: a Job summary with `"kind":"job"`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobObject {
    /// Always `"job"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::job))]
    pub kind: String,
    /// The Job.
    #[serde(flatten)]
    pub job: JobSummary,
}

/// `GET /jobs`: the consumer Jobs this server launched, oldest first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobList {
    /// Always `"jobList"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::job_list))]
    pub kind: String,
    /// The namespace they run in.
    pub namespace: String,
    /// The Jobs.
    pub jobs: Vec<JobSummary>,
}

/// Every error answer: `{"kind":"error","code":"...","message":"..."}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Always `"error"`.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::schema::kind::error))]
    pub kind: String,
    /// Stable machine-readable code, e.g. `queue_not_found`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// An item id (ULID): 26 characters of Crockford's base 32, time-ordered.
#[cfg(feature = "openapi")]
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^[0-9A-HJKMNP-TV-Z]{26}$")]
pub struct ItemId(pub String);

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
    /// Who dequeues (a consumer's name, e.g. its pod's), on a dequeue; shown with its leases.
    pub const CONSUMER: &str = "x-memq-consumer";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoscale_patch_tells_absent_from_null() {
        let absent: QueueConfigPatch = serde_json::from_str(r#"{"maxDepth":3}"#).unwrap();
        assert_eq!(absent.autoscale, None);
        let off: QueueConfigPatch = serde_json::from_str(r#"{"autoscale":null}"#).unwrap();
        assert_eq!(off.autoscale, Some(None));
        let on: QueueConfigPatch =
            serde_json::from_str(r#"{"autoscale":{"maxParallelism":10,"itemsPerPod":100}}"#)
                .unwrap();
        let want = Autoscale {
            max_parallelism: 10,
            items_per_pod: 100,
        };
        assert_eq!(on.autoscale, Some(Some(want)));
        assert_eq!(
            serde_json::to_string(&off).unwrap(),
            r#"{"autoscale":null}"#
        );
        assert!(serde_json::from_str::<QueueConfigPatch>(r#"{"autoscale":{"max":1}}"#).is_err());
    }

    #[test]
    fn batch_items_are_strings_or_objects_never_arrays() {
        let items: Vec<BatchItem> =
            serde_json::from_str(r#"["a",{"id":"k","body":"b","extra":1}]"#).unwrap();
        assert_eq!(items[0], BatchItem::Body("a".into()));
        assert_eq!(
            items[1],
            BatchItem::Keyed {
                id: "k".into(),
                body: "b".into()
            }
        );
        for bad in [r#"[["k","b"]]"#, "[1]", "[null]", r#"[{"id":"k"}]"#] {
            assert!(
                serde_json::from_str::<Vec<BatchItem>>(bad).is_err(),
                "{bad}"
            );
        }
        let wire = serde_json::to_string(&items).unwrap();
        assert_eq!(wire, r#"["a",{"id":"k","body":"b"}]"#);
    }

    #[test]
    fn create_job_request_refuses_unknown_fields() {
        let ok: CreateJobRequest =
            serde_json::from_str(r#"{"queue":"keygen","parallelism":5,"backoffLimit":2}"#).unwrap();
        assert_eq!(ok.backoff_limit, Some(2));
        assert!(
            serde_json::from_str::<CreateJobRequest>(r#"{"queue":"q","parallelism":1,"imag":"x"}"#)
                .is_err()
        );
    }
}
