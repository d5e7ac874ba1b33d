//! Enqueues that arrive together for one queue on this replica go to Redis as one call, as
//! the journal's group commit does for the disk: while a call for a queue is under way, the
//! requests that come meanwhile wait, and the next call carries them all. Each request keeps
//! its own answer (ids, duplicates) and its own refusal (`queue_full`: all or none per request),
//! and requests are applied in the order they arrived, so one connection's requests keep
//! their order. A lone request goes at once: nothing waits for company.
//!
//! Redis pays the fixed cost of a call (the function's entry, `TIME`, the config, the deadline
//! lookups, the reply) once per call rather than once per request.

use std::collections::HashMap;

use foldhash::fast::RandomState;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::RedisStore;
use super::reply::{array, groups, id, malformed, text, uint};
use crate::broker::{Id, NewItem, QueueFull};
use crate::error::{Error, Result};

/// Most items one call carries (a request larger than this goes alone).
const MAX_ITEMS_PER_CALL: usize = 10_000;

/// One waiting request.
pub(super) struct Pending {
    items: Vec<NewItem>,
    delay_ms: u64,
    ids: Vec<Id>,
    answer: oneshot::Sender<Result<Vec<(Id, bool)>>>,
}

/// The queues with a call under way, and the requests waiting for the next one.
#[derive(Default)]
pub(super) struct Enqueues {
    queues: Mutex<HashMap<Box<str>, Vec<Pending>, RandomState>>,
}

/// The same error again, for each request of a call that failed as a whole.
fn again(e: &Error) -> Error {
    match e {
        Error::QueueNotFound(q) => Error::QueueNotFound(q.clone()),
        Error::BackendFull(m) => Error::BackendFull(m.clone()),
        other => Error::BackendUnavailable(other.to_string()),
    }
}

impl RedisStore {
    /// Adds items, all or none: `(id, duplicate)` per item; shares a call with the requests
    /// for the same queue that arrive while one is under way.
    pub async fn enqueue(
        &self,
        name: &str,
        items: Vec<NewItem>,
        delay_ms: u64,
    ) -> Result<Vec<(Id, bool)>> {
        let ids = self.fresh_ids(items.len());
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            items,
            delay_ms,
            ids,
            answer,
        };
        let start = {
            let mut queues = self.inner.enqueues.queues.lock();
            match queues.get_mut(name) {
                Some(waiting) => {
                    waiting.push(pending);
                    false
                }
                None => {
                    queues.insert(name.into(), vec![pending]);
                    true
                }
            }
        };
        if start {
            // A task of its own, so that a request that goes away does not stop the calls
            // that others wait for.
            tokio::spawn(self.clone().run_enqueues(name.into()));
        }
        answered.await.unwrap_or_else(|_| {
            Err(Error::BackendUnavailable(
                "the enqueue was dropped at shutdown".into(),
            ))
        })
    }

    /// Calls Redis for the waiting requests of `name`, round after round, until none wait.
    async fn run_enqueues(self, name: Box<str>) {
        loop {
            let batch = {
                let mut queues = self.inner.enqueues.queues.lock();
                let Some(waiting) = queues.get_mut(&name) else {
                    return;
                };
                if waiting.is_empty() {
                    queues.remove(&name);
                    return;
                }
                let mut items = 0;
                let take = waiting
                    .iter()
                    .take_while(|p| {
                        items += p.items.len();
                        items <= MAX_ITEMS_PER_CALL
                    })
                    .count()
                    .max(1);
                waiting.drain(..take).collect::<Vec<_>>()
            };
            self.enqueue_call(&name, batch).await;
        }
    }

    /// One call for `batch`; answers each request.
    async fn enqueue_call(&self, name: &str, batch: Vec<Pending>) {
        let reply = self
            .call(name, "enqueue", |cmd| {
                cmd.arg(batch.len());
                for p in &batch {
                    cmd.arg(p.delay_ms).arg(p.items.len());
                    for (item, id) in p.items.iter().zip(&p.ids) {
                        cmd.arg(id.to_string())
                            .arg(item.key.as_deref().unwrap_or(""))
                            .arg(&*item.body);
                    }
                }
            })
            .await
            .and_then(|reply| array(reply.at(0)?.clone()));
        match reply {
            Ok(results) if results.len() == batch.len() => {
                for (p, result) in batch.into_iter().zip(results) {
                    let answer = group_result(p.ids, result);
                    let _ = p.answer.send(answer);
                }
            }
            Ok(_) => {
                for p in batch {
                    let _ = p.answer.send(Err(malformed("one result per request")));
                }
            }
            Err(e) => {
                for p in batch {
                    let _ = p.answer.send(Err(again(&e)));
                }
            }
        }
    }
}

/// One request's answer from its result: `{'ok', {index, holder, ...}}` or
/// `{'full', max_depth, held, adding}`.
fn group_result(ids: Vec<Id>, result: redis::Value) -> Result<Vec<(Id, bool)>> {
    let mut parts = array(result)?.into_iter();
    let status = text(parts.next().ok_or_else(|| malformed("enqueue result"))?)?;
    match status.as_str() {
        "ok" => {
            let mut out: Vec<(Id, bool)> = ids.into_iter().map(|id| (id, false)).collect();
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
