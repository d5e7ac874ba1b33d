//! The Redis store (`--redis redis://host:6379/0`): queues live in Redis, so any number of
//! queue-server replicas serve the same queues, and this process holds nothing that a crash
//! could lose.
//!
//! Every change to a queue is one call of one Lua function (`queue.lua`, a Redis Functions
//! library called with FCALL), so it is atomic across replicas; the rules are those of `broker/`
//! written again for Redis types (tests/store_rules.rs holds the two to one behaviour).
//! Enqueues, looks for items and acks for one queue that arrive together share a call
//! (`coalesce.rs`).
//! Owns what Redis cannot do: ids (ULIDs made here, see [`RedisStore::fresh_ids`]), waking this
//! replica's long polls (a tokio `Notify` per queue, fed by the scripts' replies and by a Redis
//! pub/sub channel on which the scripts announce items for other replicas), and a sweeper
//! that runs the script's sweep when a known deadline falls due. Layout and reasoning:
//! docs/redis.md.

mod coalesce;
mod conn;
mod health;
mod layout;
mod reply;
mod wake;

pub use layout::{LAYOUT, OLDEST_LAYOUT};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

use foldhash::fast::RandomState;
use memq::{QueueConfigPatch, QueueStats};
use parking_lot::Mutex;
use redis::{Cmd, Value};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    Clock, DequeueOutcome, DequeueRequest, FoundItem, HeldLease, ItemRef, LeaseSpec, Whereabouts,
    apply_patch,
};
use crate::broker::{DeadItem, EXPIRED_LEASES_REMEMBERED, Id, IdGen, LeaseInfo, QueueConfig};
use crate::error::{Error, Result};
use conn::{CONNECT_TIMEOUT, Conn};
use reply::{Reply, array, groups, id, int, malformed, text, uint};
use wake::Waiters;

/// The per-queue keys, in the order `queue.lua` takes them as KEYS.
const KEY_SUFFIXES: [&str; 14] = [
    "meta",
    "items",
    "attempts",
    "ready",
    "delayed",
    "leases",
    "deadlines",
    "dead",
    "died",
    "keys",
    "keyof",
    "released",
    "expired",
    "holders",
];

/// How often each replica sweeps every queue, not only those whose deadlines it knows: this
/// finds the leases of a replica that died, at most this late.
const FULL_SWEEP: Duration = Duration::from_secs(2);
/// Script calls in flight at once in a full sweep or `GET /stats`.
const IN_FLIGHT: usize = 100;
/// Longest wait for `/readyz`'s PING.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the Redis store keeps its data.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://[user:password@]host:port/db` or `rediss://` for TLS; with `cluster`, one or
    /// more comma-separated seed nodes.
    pub url: String,
    /// The URL names nodes of a Redis Cluster (`--redis-cluster`).
    pub cluster: bool,
    /// Prefix of every key (`{prefix}:{queue}:ready`) and of the wake channel.
    pub prefix: String,
}

struct Inner {
    /// A client per `--redis` URL, for the wake channel's subscription: with a Cluster, one
    /// after the other while a node is unreachable (PUBLISH reaches every node's subscribers).
    pubsub: Vec<redis::Client>,
    /// Which of `pubsub` to subscribe through next.
    pubsub_next: AtomicUsize,
    conn: Conn,
    /// The Redis Functions library (`queue.lua`), loaded by `FUNCTION LOAD`.
    script_code: String,
    /// Its entry point, refused while Redis is at its maxmemory (`create`, `enqueue`).
    function: String,
    /// The same entry point, run at maxmemory too (every other op).
    function_oom: String,
    prefix: String,
    /// Set of queue names (one key, outside the queues' slots).
    registry: String,
    /// The deployment's key layout (see `layout.rs`).
    layout_key: String,
    /// This replica claimed the layout: Redis's is not newer than its own.
    layout_claimed: AtomicBool,
    /// A newer layout this replica found (0: none): it then serves nothing.
    newer_layout: AtomicU32,
    /// Pub/sub channel on which scripts announce `origin:count:queue`.
    channel: String,
    /// This replica's tag in wake messages, so it skips its own.
    origin: String,
    ids: Mutex<IdGen>,
    clock: Clock,
    default_lease_ms: u64,
    /// `--max-queues` (0: no limit).
    max_queues: usize,
    waiters: Waiters,
    /// Enqueues, looks for items and acks waiting to share a call (see `coalesce.rs`).
    enqueues: coalesce::Coalescer<coalesce::Enqueues>,
    dequeues: coalesce::Coalescer<coalesce::Dequeues>,
    acks: coalesce::Coalescer<coalesce::Acks>,
    /// Queue -> when its next known deadline falls due (this replica's clock).
    schedule: Mutex<HashMap<Box<str>, Instant, RandomState>>,
    sweeper: Notify,
    subscribed: AtomicBool,
    /// Redis did not answer this replica's last heartbeat, or a command lost its connection
    /// since (see `health.rs`).
    away: AtomicBool,
    /// Redis went away: tells the wake-channel subscriber to drop its connection and subscribe
    /// anew.
    resubscribe: Notify,
    /// `--redis-cluster`: one node's loss does not make Redis away (see `health.rs`).
    cluster: bool,
    /// The queue library was loaded (by this replica or found loaded); needed to be ready.
    loaded: AtomicBool,
    /// Redis refused the library last time (said once in the log).
    load_refused: AtomicBool,
    shutdown: CancellationToken,
    /// Long polls of this replica waiting now, in [`super::long_poll`].
    waiting: std::sync::atomic::AtomicU64,
}

/// The Redis-backed queues. Cheap to clone; clones share one connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

fn backend(e: redis::RedisError) -> Error {
    if e.code() == Some("OOM") {
        // Redis at its maxmemory (with a noeviction policy): the store is full, not down.
        return Error::BackendFull(format!("redis: {e}"));
    }
    Error::BackendUnavailable(format!("redis: {e}"))
}

fn lease_status(status: i64, lease: &str) -> Result<()> {
    match status {
        200 => Ok(()),
        410 => Err(Error::LeaseExpired(lease.to_string())),
        404 => Err(Error::LeaseNotFound(lease.to_string())),
        _ => Err(malformed("lease status")),
    }
}

/// A lease as `held` in queue.lua gives it: {lease, item id, attempt, consumer ('' = none),
/// deadline}.
fn held_lease(v: Value) -> Result<HeldLease> {
    let [lease, item, attempt, consumer, deadline]: [Value; 5] = array(v)?
        .try_into()
        .map_err(|_| malformed("a lease of five values"))?;
    let consumer = text(consumer)?;
    Ok(HeldLease {
        id: id(lease)?,
        item: id(item)?,
        attempt: uint(&attempt)? as u32,
        consumer: (!consumer.is_empty()).then(|| consumer.into()),
        deadline: uint(&deadline)?,
    })
}

fn stats_of(name: &str, v: &Value, now_ms: u64) -> Result<QueueStats> {
    let Value::Array(f) = v else {
        return Err(malformed("stats"));
    };
    if f.len() != 18 {
        return Err(malformed("stats length"));
    }
    let autoscale = text(f[15].clone())?;
    let autoscale = autoscale.split_once(':').and_then(|(max, per)| {
        Some(memq::Autoscale {
            max_parallelism: max.parse().ok()?,
            items_per_pod: per.parse().ok()?,
        })
    });
    let n = |i: usize| uint(&f[i]);
    let oldest = [&f[13], &f[14]]
        .into_iter()
        .filter_map(|v| text(v.clone()).ok().and_then(|t| Id::parse(&t)))
        .map(|id| id.timestamp_ms())
        .min();
    Ok(QueueStats {
        name: name.to_string(),
        enqueued: n(0)?,
        dequeued: n(1)?,
        drained: n(2)?,
        acked: n(3)?,
        requeued: n(4)?,
        paused: n(5)? == 1,
        lease_seconds: n(6)? / 1000,
        max_attempts: n(7)? as u32,
        max_depth: n(8)?,
        depth: n(9)?,
        inflight: n(10)?,
        delayed: n(11)?,
        dead: n(12)?,
        oldest_age_seconds: oldest.map_or(0.0, |t| now_ms.saturating_sub(t) as f64 / 1000.0),
        autoscale,
        retained_keys: n(16)?,
        consumers: n(17)?,
        retained_key_bytes: None,
    })
}

impl RedisStore {
    /// Prepares the store; connects lazily, so a server starts (not ready) while Redis is down.
    pub fn open(
        options: &RedisOptions,
        default_lease_ms: u64,
        max_queues: usize,
        key_retention_ms: u64,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let prefix = options.prefix.clone();
        if prefix.is_empty() || prefix.contains(['{', '}']) {
            anyhow::bail!("--redis-prefix must be non-empty and without braces: {prefix:?}");
        }
        let (conn, pubsub) = Conn::open(&options.url, options.cluster)?;
        let script_code = include_str!("queue.lua")
            .replace("{{KEY_RETENTION_MS}}", &key_retention_ms.to_string())
            .replace(
                "{{EXPIRED_LEASES_REMEMBERED}}",
                &EXPIRED_LEASES_REMEMBERED.to_string(),
            )
            .replace("{{LAYOUT}}", &LAYOUT.to_string());
        // Named by its content: replicas of different versions each call their own library,
        // side by side on one Redis, through a rolling upgrade.
        let library = format!(
            "memq_{}",
            &redis::Script::new(&script_code).get_hash()[..16]
        );
        let script_code = script_code.replace("{{LIBRARY}}", &library);
        Ok(Self {
            inner: Arc::new(Inner {
                pubsub,
                pubsub_next: AtomicUsize::new(0),
                conn,
                script_code,
                function: library.clone(),
                function_oom: format!("{library}_oom"),
                registry: format!("{prefix}:queues"),
                layout_key: format!("{prefix}:layout"),
                layout_claimed: AtomicBool::new(false),
                newer_layout: AtomicU32::new(0),
                channel: format!("{prefix}:wake"),
                prefix,
                origin: ulid::Ulid::new().to_string(),
                ids: Mutex::new(IdGen::new()),
                clock: Clock::new(),
                default_lease_ms,
                max_queues,
                waiters: Waiters::default(),
                enqueues: coalesce::Coalescer::default(),
                dequeues: coalesce::Coalescer::default(),
                acks: coalesce::Coalescer::default(),
                schedule: Mutex::new(HashMap::default()),
                sweeper: Notify::new(),
                subscribed: AtomicBool::new(false),
                away: AtomicBool::new(false),
                resubscribe: Notify::new(),
                cluster: options.cluster,
                loaded: AtomicBool::new(false),
                load_refused: AtomicBool::new(false),
                shutdown,
                waiting: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    fn key(&self, name: &str, suffix: &str) -> String {
        format!("{}:{{{name}}}:{suffix}", self.inner.prefix)
    }

    /// `n` new ids. Made here rather than in Lua: the ULID generator needs randomness that
    /// scripts don't have, and one generator per replica (a random 80-bit start, +1 per id)
    /// keeps ids unique across replicas and time-ordered within each.
    fn fresh_ids(&self, n: usize) -> Vec<Id> {
        let now = self.inner.clock.now_ms();
        let mut ids = self.inner.ids.lock();
        (0..n).map(|_| ids.next(now)).collect()
    }

    /// The library call for `op` on queue `name`; the op's arguments are added by the caller.
    fn script(&self, name: &str, op: &str) -> Cmd {
        let function = match op {
            "create" | "enqueue" => &self.inner.function,
            _ => &self.inner.function_oom,
        };
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(function).arg(KEY_SUFFIXES.len());
        for suffix in KEY_SUFFIXES {
            cmd.arg(self.key(name, suffix));
        }
        cmd.arg(op)
            .arg(&self.inner.channel)
            .arg(&self.inner.origin)
            .arg(name);
        cmd
    }

    /// Loads the library (on every primary of a Cluster); loading it again is harmless.
    async fn load_script(&self) -> Result<()> {
        self.load_library_raw().await.map_err(|e| self.failed(e))
    }

    /// [`RedisStore::load_script`] with Redis's own error.
    async fn load_library_raw(&self) -> redis::RedisResult<()> {
        let mut conn = self.inner.conn.clone();
        redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(&self.inner.script_code)
            .query_async::<Value>(&mut conn)
            .await
            .map(|_| self.inner.loaded.store(true, Ordering::Release))
    }

    /// Redis does not have the library (first call, restart, `FUNCTION FLUSH`, a new node).
    fn no_script(e: &redis::RedisError) -> bool {
        e.detail().is_some_and(|d| d.contains("Function not found"))
    }

    /// Sends one command; loads the library once if Redis lacks it.
    /// While Redis is away (see `health.rs`), fails at once.
    async fn query(&self, cmd: &Cmd) -> Result<Value> {
        if let Some(found) = self.newer_layout() {
            return Err(self.newer_layout_error(found));
        }
        if !self.reachable() {
            return Err(self.away_error());
        }
        let mut conn = self.inner.conn.clone();
        let answer = match cmd.query_async::<Value>(&mut conn).await {
            Err(e) if Self::no_script(&e) => {
                self.load_script().await?;
                cmd.query_async::<Value>(&mut conn).await
            }
            other => other,
        };
        answer.map_err(|e| self.failed(e))
    }

    /// The error of a failed command; one that lost its connection marks Redis away.
    fn failed(&self, e: redis::RedisError) -> Error {
        if let Some(found) = layout::refused_layout(&e) {
            self.refuse_layout(found);
            return self.newer_layout_error(found);
        }
        if health::connection_lost(&e) {
            self.mark_away(&e.to_string());
        }
        backend(e)
    }

    /// Runs `op` on queue `name`: wakes local waiters, schedules the next deadline, and turns a
    /// missing queue into 404.
    async fn call(&self, name: &str, op: &str, args: impl FnOnce(&mut Cmd)) -> Result<Reply> {
        let mut cmd = self.script(name, op);
        args(&mut cmd);
        let reply = Reply::parse(self.query(&cmd).await?)?;
        self.checked(name, reply)
    }

    /// Acts on what a script reported: wakes this replica's waiters, remembers the deadline.
    fn observe(&self, name: &str, reply: &Reply) {
        self.inner.waiters.wake(name, reply.readied);
        if reply.more {
            self.schedule(name, Instant::now());
        } else if reply.next > 0 {
            let due = Instant::now() + Duration::from_millis(reply.next.saturating_sub(reply.now));
            self.schedule(name, due);
        }
    }

    /// Makes sure the sweeper looks at `name` by `due`.
    fn schedule(&self, name: &str, due: Instant) {
        let mut schedule = self.inner.schedule.lock();
        match schedule.get_mut(name) {
            // Already due earlier (or within a few ms of it: replies jitter).
            Some(known) if *known <= due + Duration::from_millis(5) => return,
            Some(known) => *known = due,
            None => {
                schedule.insert(name.into(), due);
            }
        }
        drop(schedule);
        self.inner.sweeper.notify_one();
    }

    fn checked(&self, name: &str, reply: Reply) -> Result<Reply> {
        self.observe(name, &reply);
        if reply.status == "no_queue" {
            return Err(Error::QueueNotFound(name.to_string()));
        }
        Ok(reply)
    }

    /// `PUT /queues/{q}`: creates the queue, or updates its config. True when created.
    pub async fn create_queue(
        &self,
        name: &str,
        patch: Option<&QueueConfigPatch>,
    ) -> Result<(QueueStats, bool)> {
        let defaults = QueueConfig {
            lease_ms: self.inner.default_lease_ms,
            ..QueueConfig::default()
        };
        // Checked here, applied in the script (only the fields given, to whatever is stored).
        if let Some(patch) = patch {
            apply_patch(defaults, patch)?;
        }
        self.check_queue_count(name).await?;
        let field = |v: Option<u64>| v.map_or(String::new(), |v| v.to_string());
        let reply = self
            .call(name, "create", |cmd| {
                cmd.arg(defaults.lease_ms)
                    .arg(defaults.max_attempts)
                    .arg(defaults.max_depth)
                    .arg(field(patch.and_then(|p| p.lease_seconds).map(|s| s * 1000)))
                    .arg(field(patch.and_then(|p| p.max_attempts).map(u64::from)))
                    .arg(field(patch.and_then(|p| p.max_depth)))
                    .arg(match patch.and_then(|p| p.autoscale) {
                        None => String::new(),
                        Some(None) => "off".into(),
                        Some(Some(a)) => format!("{}:{}", a.max_parallelism, a.items_per_pod),
                    });
            })
            .await?;
        let created = int(reply.at(0)?)? == 1;
        let stats = stats_of(name, reply.at(1)?, self.inner.clock.now_ms())?;
        // Also when it existed: heals a registry that lost the name.
        self.registry_cmd("SADD", name).await?;
        Ok((stats, created))
    }

    /// Refuses a new queue beyond `--max-queues`. The queue names are one key and a queue's
    /// data another slot, so this check and the create are two steps: replicas creating
    /// queues at the same moment can pass the limit by one each.
    async fn check_queue_count(&self, name: &str) -> Result<()> {
        let max = self.inner.max_queues;
        if max == 0 {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("SISMEMBER")
            .arg(&self.inner.registry)
            .arg(name)
            .cmd("SCARD")
            .arg(&self.inner.registry);
        if !self.reachable() {
            return Err(self.away_error());
        }
        let mut conn = self.inner.conn.clone();
        let (member, count): (bool, usize) = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.failed(e))?;
        if !member && count >= max {
            return Err(Error::TooManyQueues { max });
        }
        Ok(())
    }

    async fn registry_cmd(&self, command: &str, name: &str) -> Result<Value> {
        let mut cmd = redis::cmd(command);
        cmd.arg(&self.inner.registry).arg(name);
        self.query(&cmd).await
    }

    /// `GET /queues/{q}`.
    pub async fn queue(&self, name: &str) -> Result<QueueStats> {
        let reply = self.call(name, "queue", |_| {}).await?;
        stats_of(name, reply.at(0)?, self.inner.clock.now_ms())
    }

    /// `DELETE /queues/{q}`: its keys go, its leases answer 404, its long polls 404.
    pub async fn delete_queue(&self, name: &str) -> Result<QueueStats> {
        let reply = self.call(name, "delete", |_| {}).await?;
        let stats = stats_of(name, reply.at(0)?, self.inner.clock.now_ms())?;
        self.inner.schedule.lock().remove(name);
        // Two keys in two slots can't change in one script; a create racing this delete has
        // made the queue again by now if its SADD could be undone by our SREM: look and mend.
        self.registry_cmd("SREM", name).await?;
        let mut exists = redis::cmd("EXISTS");
        exists.arg(self.key(name, KEY_SUFFIXES[0]));
        if int(&self.query(&exists).await?)? == 1 {
            self.registry_cmd("SADD", name).await?;
        }
        Ok(stats)
    }

    /// `POST /queues/{q}/drain`.
    pub async fn drain(&self, name: &str) -> Result<QueueStats> {
        let reply = self.call(name, "drain", |_| {}).await?;
        stats_of(name, reply.at(1)?, self.inner.clock.now_ms())
    }

    /// `POST /queues/{q}/pause` and `/resume`.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<QueueStats> {
        let flag = if paused { "1" } else { "0" };
        let reply = self.call(name, "pause", |cmd| {
            cmd.arg(flag);
        });
        let reply = reply.await?;
        stats_of(name, reply.at(0)?, self.inner.clock.now_ms())
    }

    async fn queue_names(&self) -> Result<Vec<String>> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(&self.inner.registry);
        let mut names: Vec<String> = reply::array(self.query(&cmd).await?)?
            .into_iter()
            .map(text)
            .collect::<Result<_>>()?;
        names.sort_unstable();
        Ok(names)
    }

    /// Runs `op` (no arguments) on many queues, `None` for queues that are gone. The calls are
    /// sent without waiting for each other ([`IN_FLIGHT`] at once), so the multiplexed
    /// connection pipelines them; not as one pipeline, which a Redis Cluster refuses when its
    /// queues live in different slots.
    async fn each_queue(&self, names: &[String], op: &str) -> Result<Vec<Option<Reply>>> {
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(IN_FLIGHT) {
            let calls = chunk.iter().map(|name| self.call_if_there(name, op));
            out.extend(futures_util::future::try_join_all(calls).await?);
        }
        Ok(out)
    }

    /// Runs `op` (no arguments) on queue `name`; `None` if it is gone.
    async fn call_if_there(&self, name: &str, op: &str) -> Result<Option<Reply>> {
        let reply = Reply::parse(self.query(&self.script(name, op)).await?)?;
        Ok(self.checked(name, reply).ok())
    }

    /// `GET /stats`: every queue, sorted by name.
    pub async fn stats(&self) -> Result<Vec<QueueStats>> {
        let names = self.queue_names().await?;
        let replies = self.each_queue(&names, "queue").await?;
        let now = self.inner.clock.now_ms();
        names
            .iter()
            .zip(replies)
            .filter_map(|(name, reply)| reply.map(|r| (name, r)))
            .map(|(name, reply)| stats_of(name, reply.at(0)?, now))
            .collect()
    }

    /// Long polls of this replica waiting now.
    pub fn waiting_polls(&self) -> u64 {
        self.inner
            .waiting
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Hands out items, long-polling up to `req.wait` when none is ready.
    pub async fn dequeue(&self, name: &str, req: DequeueRequest) -> Result<DequeueOutcome> {
        if req.wait.is_zero() {
            return self.try_dequeue(name, req, 0).await;
        }
        let waiter = self.inner.waiters.register(name);
        // A wait of at least 1 ms tells the script to announce items for this poll.
        let wait = req.wait;
        let look =
            |left: Duration| self.try_dequeue(name, req.clone(), (left.as_millis() as u64).max(1));
        let waiting = &self.inner.waiting;
        super::long_poll(waiter.notify(), wait, &self.inner.shutdown, waiting, look).await
    }

    /// One look for items (a long poll's included): `wait_ms` > 0 tells the script that this
    /// poll will wait, so items enqueued through other replicas are announced. Shares a call
    /// with the looks for the same queue that arrive while one is under way.
    async fn try_dequeue(
        &self,
        name: &str,
        req: DequeueRequest,
        wait_ms: u64,
    ) -> Result<DequeueOutcome> {
        let (lease, leases) = match req.lease {
            LeaseSpec::None => (String::new(), Vec::new()),
            LeaseSpec::QueueDefault => ("default".to_string(), self.fresh_ids(req.max)),
            LeaseSpec::Millis(ms) => (ms.to_string(), self.fresh_ids(req.max)),
        };
        let request = coalesce::Dequeue {
            max: req.max,
            lease,
            wait_ms,
            consumer: req.consumer,
            leases,
        };
        self.coalesced::<coalesce::Dequeues>(name, request).await
    }

    /// `POST /leases/{lease}/ack`.
    pub async fn ack(&self, name: &str, lease: &str) -> Result<()> {
        let mut results = self.ack_many(name, &[lease.to_string()]).await?;
        results.pop().expect("one result")
    }

    /// `POST /ack`: many acks in one script call; one result per lease id.
    pub async fn ack_many(&self, name: &str, leases: &[String]) -> Result<Vec<Result<()>>> {
        let valid = super::well_formed(leases);
        let texts = valid.iter().map(|(_, text)| text.to_string()).collect();
        let statuses = self.ack_statuses(name, texts).await?;
        let results = statuses
            .into_iter()
            .zip(&valid)
            .map(|(status, (_, text))| lease_status(status, text));
        Ok(super::in_given_order(leases, results))
    }

    /// `POST /leases/{lease}/nack`: [`RedisStore::nack_many`] of one.
    pub async fn nack(&self, name: &str, lease: &str, delay_ms: u64) -> Result<()> {
        super::parse_lease(lease)?;
        let mut results = self.nack_many(name, &[lease.to_string()], delay_ms).await?;
        results.pop().expect("one result")
    }

    /// `POST /nack`: many nacks in one script call; one result per lease id.
    pub async fn nack_many(
        &self,
        name: &str,
        leases: &[String],
        delay_ms: u64,
    ) -> Result<Vec<Result<()>>> {
        self.each_lease(name, "nack", leases, |cmd| {
            cmd.arg(delay_ms);
        })
        .await
    }

    /// `POST /release`: unstarted items back to the front; one result per lease id.
    pub async fn release(&self, name: &str, leases: &[String]) -> Result<Vec<Result<()>>> {
        self.each_lease(name, "release", leases, |_| {}).await
    }

    /// Runs `op` with `args`, then the well-formed ids among `leases`; one result per lease
    /// id given, from the script's status per lease.
    async fn each_lease(
        &self,
        name: &str,
        op: &str,
        leases: &[String],
        args: impl FnOnce(&mut Cmd),
    ) -> Result<Vec<Result<()>>> {
        let valid = super::well_formed(leases);
        let reply = self
            .call(name, op, |cmd| {
                args(cmd);
                for (_, text) in &valid {
                    cmd.arg(*text);
                }
            })
            .await?;
        let statuses = array(reply.at(0)?.clone())?;
        if statuses.len() != valid.len() {
            return Err(malformed("a status per lease"));
        }
        let results = statuses
            .iter()
            .zip(&valid)
            .map(|(status, (_, text))| lease_status(int(status)?, text));
        Ok(super::in_given_order(leases, results))
    }

    /// `POST /extend`: many extends in one script call (`None`: the queue's lease length);
    /// each one's new deadline.
    pub async fn extend_many(
        &self,
        name: &str,
        leases: &[String],
        lease_ms: Option<u64>,
    ) -> Result<Vec<Result<u64>>> {
        let valid = super::well_formed(leases);
        let length = lease_ms.map_or("default".to_string(), |ms| ms.to_string());
        let reply = self
            .call(name, "extend_many", |cmd| {
                cmd.arg(length);
                for (_, text) in &valid {
                    cmd.arg(*text);
                }
            })
            .await?;
        let pairs = groups(reply.at(0)?.clone(), 2)?;
        if pairs.len() != valid.len() {
            return Err(malformed("a status and deadline per lease"));
        }
        let results = pairs.iter().zip(&valid).map(|(pair, (_, text))| {
            lease_status(int(&pair[0])?, text)?;
            uint(&pair[1])
        });
        Ok(super::in_given_order(leases, results))
    }

    /// `POST /leases/{lease}/extend`: `None` uses the queue's lease length.
    pub async fn extend(
        &self,
        name: &str,
        lease: &str,
        lease_ms: Option<u64>,
    ) -> Result<(LeaseInfo, Id, Box<str>)> {
        let lease_id = super::parse_lease(lease)?;
        let length = lease_ms.map_or("default".to_string(), |ms| ms.to_string());
        let reply = self
            .call(name, "extend", |cmd| {
                cmd.arg(lease).arg(length);
            })
            .await?;
        lease_status(int(reply.at(0)?)?, lease)?;
        let info = LeaseInfo {
            id: lease_id,
            deadline: uint(reply.at(1)?)?,
            attempt: uint(reply.at(4)?)? as u32,
        };
        let item = id(reply.at(2)?.clone())?;
        let body = text(reply.at(3)?.clone())?;
        Ok((info, item, body.into_boxed_str()))
    }

    /// `GET /dead`: up to `limit` dead letters, oldest first.
    pub async fn dead_letters(&self, name: &str, limit: usize) -> Result<Vec<DeadItem>> {
        let reply = self
            .call(name, "dead", |cmd| {
                cmd.arg(limit);
            })
            .await?;
        groups(reply.at(0)?.clone(), 4)?
            .into_iter()
            .map(|g| {
                let mut g = g.into_iter();
                let mut next = || g.next().expect("four values");
                Ok(DeadItem {
                    id: id(next())?,
                    body: text(next())?.into_boxed_str(),
                    attempts: uint(&next())? as u32,
                    died_at: uint(&next())?,
                })
            })
            .collect()
    }

    /// `GET /queues/{q}/items/...`: where an item is (one call; see `item` in queue.lua).
    pub async fn find_item(&self, name: &str, item: ItemRef<'_>) -> Result<FoundItem> {
        let (by_id, by_key) = match item {
            ItemRef::Id(id) if Id::parse(id).is_none() => return Err(item.not_found(name)),
            ItemRef::Id(id) => (id, ""),
            ItemRef::Key(key) => ("", key),
        };
        let reply = self
            .call(name, "item", |cmd| {
                cmd.arg(by_id).arg(by_key);
            })
            .await?;
        let state = text(reply.at(0)?.clone())?;
        if state == "none" {
            return Err(item.not_found(name));
        }
        let item_id = id(reply.at(1)?.clone())?;
        let attempts = uint(reply.at(2)?)? as u32;
        let state = match state.as_str() {
            "ready" => Whereabouts::Ready {
                position: uint(reply.at(3)?)?,
            },
            "delayed" => Whereabouts::Delayed {
                at: uint(reply.at(3)?)?,
            },
            "dead" => Whereabouts::Dead {
                at: uint(reply.at(3)?)?,
            },
            "leased" => Whereabouts::Leased(held_lease(reply.at(3)?.clone())?),
            other => return Err(malformed(&format!("item state {other:?}"))),
        };
        Ok(FoundItem {
            id: item_id,
            attempts,
            state,
        })
    }

    /// `GET /queues/{q}/leases`: up to `limit` running leases, oldest first.
    pub async fn leases(&self, name: &str, limit: usize) -> Result<Vec<HeldLease>> {
        let reply = self
            .call(name, "leases", |cmd| {
                cmd.arg(limit);
            })
            .await?;
        array(reply.at(0)?.clone())?
            .into_iter()
            .map(held_lease)
            .collect()
    }

    /// `POST /dead/requeue`.
    pub async fn requeue_dead(&self, name: &str) -> Result<u64> {
        let reply = self.call(name, "requeue_dead", |_| {}).await?;
        uint(reply.at(0)?)
    }

    /// `DELETE /dead`.
    pub async fn purge_dead(&self, name: &str) -> Result<u64> {
        let reply = self.call(name, "purge_dead", |_| {}).await?;
        uint(reply.at(0)?)
    }

    /// `GET /messages`: up to `limit` ready items in hand-out order.
    pub async fn peek(&self, name: &str, limit: usize) -> Result<Vec<(Id, Box<str>)>> {
        let reply = self
            .call(name, "peek", |cmd| {
                cmd.arg(limit);
            })
            .await?;
        groups(reply.at(0)?.clone(), 2)?
            .into_iter()
            .map(|g| {
                let mut g = g.into_iter();
                let item = id(g.next().expect("pair"))?;
                let body = text(g.next().expect("pair"))?;
                Ok((item, body.into_boxed_str()))
            })
            .collect()
    }

    /// Ready while Redis answers and this replica hears the wake channel.
    pub async fn is_ready(&self) -> bool {
        if self.inner.shutdown.is_cancelled()
            || self.newer_layout().is_some()
            || !self.inner.subscribed.load(Ordering::Acquire)
            || !self.inner.loaded.load(Ordering::Acquire)
            || !self.reachable()
        {
            return false;
        }
        match self.ping().await {
            Ok(()) => true,
            Err(why) => {
                self.mark_away(&why);
                false
            }
        }
    }

    /// Background work until shutdown: the sweeper, the wake-channel subscriber and the
    /// heartbeat.
    pub async fn run_background(self) {
        tokio::join!(
            self.clone().run_sweeper(),
            self.clone().run_subscriber(),
            self.run_heartbeat()
        );
    }

    /// Sweeps queues whose known deadline fell due, and every queue each [`FULL_SWEEP`].
    async fn run_sweeper(self) {
        let inner = &self.inner;
        let mut next_full = Instant::now();
        let mut failing = false;
        loop {
            let earliest = inner.schedule.lock().values().min().copied();
            let wake = earliest.map_or(next_full, |e| e.min(next_full));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = inner.sweeper.notified() => continue,
                _ = inner.shutdown.cancelled() => return,
            }
            let now = Instant::now();
            let names: Vec<String> = {
                let mut schedule = inner.schedule.lock();
                let due: Vec<String> = schedule
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(name, _)| name.to_string())
                    .collect();
                // Replies put back what is still pending, at its true time.
                for name in &due {
                    schedule.remove(name.as_str());
                }
                due
            };
            let result = if now >= next_full {
                // Spread the replicas' full sweeps apart.
                let jitter = Duration::from_millis((ulid::Ulid::new().random() % 500) as u64);
                next_full = now + FULL_SWEEP + jitter;
                match self.queue_names().await {
                    Ok(all) => self.each_queue(&all, "sweep").await.map(|_| ()),
                    Err(e) => Err(e),
                }
            } else {
                self.each_queue(&names, "sweep").await.map(|_| ())
            };
            match result {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("sweeper reaches Redis again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "sweeper cannot reach Redis; retrying every {FULL_SWEEP:?}");
                }
                Err(_) => {}
            }
        }
    }
}
