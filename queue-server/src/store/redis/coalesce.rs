//! Requests that arrive together for one queue on this replica go to Redis as one call, as the
//! journal's group commit does for the disk: while a call for a queue is under way, the
//! requests that come meanwhile wait, and the next call carries them all. Enqueues, looks for
//! items (dequeues, long polls' included) and acks share calls this way. Each request keeps its own answer (ids and duplicates, or a status per
//! lease) and its own refusal (`queue_full`: all or none per request), and requests are applied
//! in the order they arrived, so one connection's requests keep their order. A lone request
//! goes at once: nothing waits for company.
//!
//! Redis pays the fixed cost of a call (the function's entry, `TIME`, the config, the deadline
//! lookups, the reply) once per call rather than once per request.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::reply::{array, groups, id, int, malformed, text, uint};
use super::{Inner, RedisStore};
use crate::broker::{Id, LeaseInfo, NewItem, QueueFull};
use crate::error::{Error, Result};
use crate::store::{Delivery, DequeueOutcome};

/// Most items (or leases) one call carries; a request larger than this goes alone.
const MAX_PER_CALL: usize = 10_000;
/// Most bytes of item bodies one call carries (far below Redis's 1 GiB query buffer limit); a
/// request larger than this goes alone.
const MAX_BYTES_PER_CALL: usize = 8 << 20;

/// Requests of one kind waiting, per queue: a queue is in the map while a call for it is under
/// way, with the requests that wait for the next one.
pub(super) struct Coalescer<K: Kind> {
    queues: Mutex<HashMap<Box<str>, Vec<Waiting<K>>, RandomState>>,
}

/// A request waiting for its call, and where its answer goes.
type Waiting<K> = (<K as Kind>::Request, oneshot::Sender<<K as Kind>::Answer>);

impl<K: Kind> Default for Coalescer<K> {
    fn default() -> Self {
        Coalescer {
            queues: Mutex::default(),
        }
    }
}

/// A kind of request that shares calls.
pub(super) trait Kind: Sized + 'static {
    type Request: Send + 'static;
    type Answer: Send + 'static;
    /// Its waiting requests in the store.
    fn coalescer(inner: &Inner) -> &Coalescer<Self>;
    /// Items (or leases) in a request, against [`MAX_PER_CALL`].
    fn size(request: &Self::Request) -> usize;
    /// Bytes of item bodies in a request, against [`MAX_BYTES_PER_CALL`].
    fn bytes(_request: &Self::Request) -> usize {
        0
    }
    /// One call for `batch`: one answer per request, in order.
    fn call<'a>(
        store: &'a RedisStore,
        name: &'a str,
        batch: &'a [Self::Request],
    ) -> BoxFuture<'a, Vec<Self::Answer>>;
    /// The answer of a request that fails before its call (Redis away, shutdown).
    fn failed(e: Error) -> Self::Answer;
}

impl RedisStore {
    /// Answers `request` in a call shared with the requests of its kind for `name` that arrive
    /// while one is under way.
    pub(super) async fn coalesced<K: Kind>(&self, name: &str, request: K::Request) -> K::Answer {
        if !self.reachable() {
            return K::failed(self.away_error());
        }
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queues = K::coalescer(&self.inner).queues.lock();
            match queues.get_mut(name) {
                Some(waiting) => {
                    waiting.push((request, answer));
                    false
                }
                None => {
                    queues.insert(name.into(), vec![(request, answer)]);
                    true
                }
            }
        };
        if start {
            // A task of its own, so that a request that goes away does not stop the calls
            // that others wait for.
            tokio::spawn(self.clone().run_coalesced::<K>(name.into()));
        }
        answered.await.unwrap_or_else(|_| {
            K::failed(Error::BackendUnavailable(
                "the call for this request failed inside the server (see its log)".into(),
            ))
        })
    }

    /// Calls Redis for the waiting requests of `name`, round after round, until none wait.
    async fn run_coalesced<K: Kind>(self, name: Box<str>) {
        // Should a call panic, the queue leaves the map all the same, and those who wait get
        // an error rather than wait for ever.
        let _running = Running::<K> {
            store: &self,
            name: &name,
            kind: std::marker::PhantomData,
        };
        loop {
            let batch: Vec<_> = {
                let mut queues = K::coalescer(&self.inner).queues.lock();
                let Some(waiting) = queues.get_mut(&name) else {
                    return;
                };
                // A request whose caller went away (a 408, a closed connection) is not sent:
                // a look would lease items to nobody.
                waiting.retain(|(_, answer)| !answer.is_closed());
                if waiting.is_empty() {
                    queues.remove(&name);
                    return;
                }
                let (mut size, mut bytes) = (0, 0);
                let take = waiting
                    .iter()
                    .take_while(|(r, _)| {
                        size += K::size(r);
                        bytes += K::bytes(r);
                        size <= MAX_PER_CALL && bytes <= MAX_BYTES_PER_CALL
                    })
                    .count()
                    .max(1);
                waiting.drain(..take).collect()
            };
            let (requests, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
            // Redis went away while these waited: they fail at once, as a new request would.
            let results = if self.reachable() {
                K::call(&self, &name, &requests).await
            } else {
                requests
                    .iter()
                    .map(|_| K::failed(self.away_error()))
                    .collect()
            };
            for (answer, result) in answers.into_iter().zip(results) {
                let _ = answer.send(result);
            }
        }
    }

    /// Fails every request waiting for a call, of every kind (Redis went away): the calls
    /// under way end by themselves.
    pub(super) fn fail_waiting(&self) {
        fn fail<K: Kind>(store: &RedisStore) {
            let waiting: Vec<Waiting<K>> = K::coalescer(&store.inner)
                .queues
                .lock()
                .values_mut()
                .flat_map(|w| w.drain(..))
                .collect();
            for (_, answer) in waiting {
                let _ = answer.send(K::failed(store.away_error()));
            }
        }
        fail::<Enqueues>(self);
        fail::<Dequeues>(self);
        fail::<Acks>(self);
    }
}

/// A running [`RedisStore::run_coalesced`]; on drop (also by a panic) the queue leaves the map,
/// which drops what still waits (each gets an error).
struct Running<'a, K: Kind> {
    store: &'a RedisStore,
    name: &'a str,
    kind: std::marker::PhantomData<fn() -> K>,
}

impl<K: Kind> Drop for Running<'_, K> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            K::coalescer(&self.store.inner)
                .queues
                .lock()
                .remove(self.name);
        }
    }
}

/// The same error again, for each request of a call that failed as a whole.
fn again(e: &Error) -> Error {
    match e {
        Error::QueueNotFound(q) => Error::QueueNotFound(q.clone()),
        Error::BackendFull(m) => Error::BackendFull(m.clone()),
        other => Error::BackendUnavailable(other.to_string()),
    }
}

/// One enqueue request.
pub(super) struct Enqueue {
    items: Vec<NewItem>,
    delay_ms: u64,
    ids: Vec<Id>,
}

/// Enqueues share calls.
pub(super) struct Enqueues;

impl Kind for Enqueues {
    type Request = Enqueue;
    type Answer = Result<Vec<(Id, bool)>>;

    fn coalescer(inner: &Inner) -> &Coalescer<Self> {
        &inner.enqueues
    }

    fn size(request: &Enqueue) -> usize {
        request.items.len()
    }

    fn bytes(request: &Enqueue) -> usize {
        request.items.iter().map(|i| i.body.len()).sum()
    }

    fn call<'a>(
        store: &'a RedisStore,
        name: &'a str,
        batch: &'a [Enqueue],
    ) -> BoxFuture<'a, Vec<Self::Answer>> {
        Box::pin(per_request(
            store,
            name,
            "enqueue",
            batch,
            |cmd, e| {
                cmd.arg(e.delay_ms).arg(e.items.len());
                for (item, id) in e.items.iter().zip(&e.ids) {
                    cmd.arg(id.to_string())
                        .arg(item.key.as_deref().unwrap_or(""))
                        .arg(&*item.body);
                }
            },
            |e, result| enqueue_result(&e.ids, result),
        ))
    }

    fn failed(e: Error) -> Self::Answer {
        Err(e)
    }
}

/// One look for items: what `dequeue` takes (see `queue.lua`).
pub(super) struct Dequeue {
    pub max: usize,
    /// `""` (kuard's dequeue), `"default"` or the lease length in ms.
    pub lease: String,
    pub wait_ms: u64,
    /// Who takes the items (`X-Memq-Consumer`), kept with their leases.
    pub consumer: Option<std::sync::Arc<str>>,
    /// One fresh lease id per item that may be handed out (none without a lease).
    pub leases: Vec<Id>,
}

/// Looks for items share calls.
pub(super) struct Dequeues;

impl Kind for Dequeues {
    type Request = Dequeue;
    type Answer = Result<DequeueOutcome>;

    fn coalescer(inner: &Inner) -> &Coalescer<Self> {
        &inner.dequeues
    }

    fn size(request: &Dequeue) -> usize {
        request.max.max(1)
    }

    fn call<'a>(
        store: &'a RedisStore,
        name: &'a str,
        batch: &'a [Dequeue],
    ) -> BoxFuture<'a, Vec<Self::Answer>> {
        Box::pin(per_request(
            store,
            name,
            "dequeue",
            batch,
            |cmd, d| {
                cmd.arg(d.max)
                    .arg(&d.lease)
                    .arg(d.wait_ms)
                    .arg(d.consumer.as_deref().unwrap_or(""));
                for lease in &d.leases {
                    cmd.arg(lease.to_string());
                }
            },
            |_, result| dequeue_result(result),
        ))
    }

    fn failed(e: Error) -> Self::Answer {
        Err(e)
    }
}

/// One ack request: its well-formed lease ids.
pub(super) struct Acks;

impl Kind for Acks {
    type Request = Vec<String>;
    /// The script's status per lease (200, 404, 410).
    type Answer = Result<Vec<i64>>;

    fn coalescer(inner: &Inner) -> &Coalescer<Self> {
        &inner.acks
    }

    fn size(request: &Vec<String>) -> usize {
        request.len()
    }

    fn call<'a>(
        store: &'a RedisStore,
        name: &'a str,
        batch: &'a [Vec<String>],
    ) -> BoxFuture<'a, Vec<Self::Answer>> {
        Box::pin(async move {
            let total: usize = batch.iter().map(Vec::len).sum();
            let reply = store
                .call(name, "ack", |cmd| {
                    for lease in batch.iter().flatten() {
                        cmd.arg(lease.as_str());
                    }
                })
                .await
                .and_then(|reply| array(reply.at(0)?.clone()));
            match reply {
                Ok(statuses) if statuses.len() == total => {
                    let mut statuses = statuses.iter();
                    batch
                        .iter()
                        .map(|leases| statuses.by_ref().take(leases.len()).map(int).collect())
                        .collect()
                }
                Ok(_) => each(batch, &malformed("one ack status per lease")),
                Err(e) => each(batch, &e),
            }
        })
    }

    fn failed(e: Error) -> Self::Answer {
        Err(e)
    }
}

/// One call of `op` with one part per request (the count, then each request's arguments from
/// `args`), and one result per request in the reply, read by `answer`; a call that fails as a
/// whole fails each request the same way.
async fn per_request<R, T>(
    store: &RedisStore,
    name: &str,
    op: &str,
    batch: &[R],
    args: impl Fn(&mut redis::Cmd, &R),
    answer: impl Fn(&R, redis::Value) -> Result<T>,
) -> Vec<Result<T>> {
    let reply = store
        .call(name, op, |cmd| {
            cmd.arg(batch.len());
            for r in batch {
                args(cmd, r);
            }
        })
        .await
        .and_then(|reply| array(reply.at(0)?.clone()));
    match reply {
        Ok(results) if results.len() == batch.len() => batch
            .iter()
            .zip(results)
            .map(|(r, result)| answer(r, result))
            .collect(),
        Ok(_) => each(batch, &malformed("one result per request")),
        Err(e) => each(batch, &e),
    }
}

/// The same error for each request of a call that failed as a whole.
fn each<T, R>(batch: &[R], e: &Error) -> Vec<Result<T>> {
    batch.iter().map(|_| Err(again(e))).collect()
}

impl RedisStore {
    /// Adds items, all or none: `(id, duplicate)` per item; shares a call with the enqueues
    /// for the same queue that arrive while one is under way.
    pub async fn enqueue(
        &self,
        name: &str,
        items: Vec<NewItem>,
        delay_ms: u64,
    ) -> Result<Vec<(Id, bool)>> {
        let ids = self.fresh_ids(items.len());
        let request = Enqueue {
            items,
            delay_ms,
            ids,
        };
        self.coalesced::<Enqueues>(name, request).await
    }

    /// Acks leases (well-formed ids only): the script's status per lease; shares a call with
    /// the acks for the same queue that arrive while one is under way.
    pub(super) async fn ack_statuses(&self, name: &str, leases: Vec<String>) -> Result<Vec<i64>> {
        self.coalesced::<Acks>(name, leases).await
    }
}

/// One request's answer from its result: `{'ok', {index, holder, ...}}` or
/// `{'full', max_depth, held, adding}`.
fn enqueue_result(ids: &[Id], result: redis::Value) -> Result<Vec<(Id, bool)>> {
    let mut parts = array(result)?.into_iter();
    let status = text(parts.next().ok_or_else(|| malformed("enqueue result"))?)?;
    match status.as_str() {
        "ok" => {
            let mut out: Vec<(Id, bool)> = ids.iter().map(|id| (*id, false)).collect();
            let dups = parts.next().unwrap_or(redis::Value::Nil);
            for dup in groups(dups, 2)? {
                let mut dup = dup.into_iter();
                let index = uint(&dup.next().expect("pair"))? as usize;
                let holder = id(dup.next().expect("pair"))?;
                let slot = out
                    .get_mut(index.wrapping_sub(1))
                    .ok_or_else(|| malformed("duplicate index"))?;
                *slot = (holder, true);
            }
            Ok(out)
        }
        "full" => {
            let mut next =
                || -> Result<u64> { uint(&parts.next().ok_or_else(|| malformed("full result"))?) };
            Err(Error::QueueFull(QueueFull {
                max_depth: next()?,
                held: next()?,
                adding: next()?,
            }))
        }
        _ => Err(malformed("enqueue status")),
    }
}

/// One look's answer from its result: `{'ok', deadline, {id, body, lease, attempt, ...}}` or
/// `{'empty' or 'paused', ready, leased, delayed}`.
fn dequeue_result(result: redis::Value) -> Result<DequeueOutcome> {
    let mut parts = array(result)?.into_iter();
    let mut next = || parts.next().ok_or_else(|| malformed("dequeue result"));
    let status = text(next()?)?;
    match status.as_str() {
        "ok" => {
            let deadline = uint(&next()?)?;
            let items = groups(next()?, 4)?
                .into_iter()
                .map(|g| {
                    let mut g = g.into_iter();
                    let mut value = || g.next().expect("four values");
                    let item = id(value())?;
                    let body = text(value())?;
                    let lease = text(value())?;
                    let attempt = uint(&value())? as u32;
                    let lease = if lease.is_empty() {
                        None
                    } else {
                        Some(LeaseInfo {
                            id: Id::parse(&lease).ok_or_else(|| malformed("lease id"))?,
                            deadline,
                            attempt,
                        })
                    };
                    Ok(Delivery {
                        id: item,
                        body: body.into_boxed_str(),
                        lease,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(DequeueOutcome::Items(items))
        }
        "empty" | "paused" => Ok(DequeueOutcome::Empty {
            depth: uint(&next()?)?,
            inflight: uint(&next()?)?,
            delayed: uint(&next()?)?,
            paused: status == "paused",
        }),
        _ => Err(malformed("dequeue status")),
    }
}
