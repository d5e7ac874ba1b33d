//! Routes under `/memq/server`: queues, items, leases, dead letters (API.md).

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use memq::types::headers;
use memq::{
    AckOutcome, AckResult, BatchItem, CountResult, DeadLetter, DeadLetterList, QueueConfigPatch,
    QueueObject, QueueStats, Stats,
};

use super::AppState;
use super::extract::{LeasePath, Params, QueueName, read_body, utf8};
use super::wire::{EnqueueResultOut, MessageListOut, MessageOut};
use crate::broker::NewItem;
use crate::error::{Error, Result};
use crate::store::{Delivery, DequeueOutcome, DequeueRequest, LeaseSpec, rfc3339_ms};

/// Longest `delay` of an enqueue or nack.
const MAX_DELAY: Duration = Duration::from_secs(900);
/// Longest long poll.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// Longest lease one request may take or extend to.
const MAX_LEASE: Duration = Duration::from_secs(12 * 3600);
/// Longest producer key.
const MAX_KEY_BYTES: usize = 1024;

fn queue_object(queue: QueueStats) -> Json<QueueObject> {
    Json(QueueObject {
        kind: "queue".into(),
        queue,
    })
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

fn delivered(d: &Delivery) -> MessageOut<'_> {
    MessageOut::new(d.id, &d.body, d.lease)
}

/// `GET /stats`.
pub async fn stats(State(state): State<AppState>) -> Result<Json<Stats>> {
    Ok(Json(Stats {
        kind: "stats".into(),
        queues: state.store.stats().await?,
    }))
}

/// `PUT /queues/{q}`: 201 created, 200 existed (config updated when a body is given).
pub async fn create_queue(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    body: Body,
) -> Result<Response> {
    let bytes = read_body(body, 64 * 1024).await?;
    let patch = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(
            serde_json::from_slice::<QueueConfigPatch>(&bytes)
                .map_err(|e| Error::InvalidJson(e.to_string()))?,
        )
    };
    if patch
        .as_ref()
        .is_some_and(|p| matches!(p.autoscale, Some(Some(_))))
    {
        crate::kube::template::check_queue_label(&name).map_err(Error::InvalidJson)?;
    }
    let (queue, created) = state.store.create_queue(&name, patch.as_ref()).await?;
    if created {
        tracing::info!(queue = %name, "queue created");
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, queue_object(queue)).into_response())
}

/// `GET /queues/{q}`.
pub async fn get_queue(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> Result<Json<QueueObject>> {
    Ok(queue_object(state.store.queue(&name).await?))
}

/// `DELETE /queues/{q}`: answers the queue's last figures.
pub async fn delete_queue(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> Result<Json<QueueObject>> {
    let queue = state.store.delete_queue(&name).await?;
    tracing::info!(queue = %name, depth = queue.depth, inflight = queue.inflight, "queue deleted");
    Ok(queue_object(queue))
}

/// `POST /queues/{q}/drain`.
pub async fn drain(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> Result<Json<QueueObject>> {
    Ok(queue_object(state.store.drain(&name).await?))
}

/// `POST /queues/{q}/pause`.
pub async fn pause(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> Result<Json<QueueObject>> {
    Ok(queue_object(state.store.set_paused(&name, true).await?))
}

/// `POST /queues/{q}/resume`.
pub async fn resume(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> Result<Json<QueueObject>> {
    Ok(queue_object(state.store.set_paused(&name, false).await?))
}

/// Splits a `batch=lines` body: `\n` or `\r\n`, a final newline adds nothing, empty lines only
/// with `keep_empty`.
fn split_lines(text: &str, keep_empty: bool) -> impl Iterator<Item = &str> {
    let lines = (!text.is_empty()).then(|| text.strip_suffix('\n').unwrap_or(text).split('\n'));
    lines
        .into_iter()
        .flatten()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(move |l| keep_empty || !l.is_empty())
}

fn check_item(index: usize, body: &str, max: usize) -> Result<()> {
    if body.len() > max {
        return Err(Error::ItemTooLarge {
            index,
            size: body.len(),
            max,
        });
    }
    Ok(())
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(Error::param(
            "id",
            format!("a key must be 1 to {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// `POST /queues/{q}/enqueue`: one item, or a batch with `?batch=lines|json`.
pub async fn enqueue(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    params: Params,
    body: Body,
) -> Result<Response> {
    let config = &state.config;
    let delay = params.duration("delay", MAX_DELAY, true)?.map_or(0, millis);
    let key = params.get("id").map(str::to_owned);
    let batch = params.get("batch").map(str::to_owned);
    let keep_empty = params.flag("keepEmpty")?;
    if batch.is_some() && key.is_some() {
        return Err(Error::param(
            "id",
            "?id= names one item; give keys inside a JSON batch instead",
        ));
    }
    let bytes = read_body(body, config.max_body_bytes).await?;
    let text = utf8(&bytes)?;
    let Some(batch) = batch else {
        check_item(0, text, config.max_item_bytes)?;
        if let Some(key) = &key {
            check_key(key)?;
        }
        let item = NewItem {
            body: text.into(),
            key: key.map(String::into_boxed_str),
        };
        let (id, duplicate) = state.store.enqueue(&name, vec![item], delay).await?[0];
        return Ok(MessageOut::new(id, text, None)
            .duplicate(duplicate)
            .into_response());
    };
    let items: Vec<NewItem> = match batch.as_str() {
        "lines" => split_lines(text, keep_empty)
            .enumerate()
            .map(|(i, line)| {
                check_item(i, line, config.max_item_bytes)?;
                Ok(NewItem { body: line.into(), key: None })
            })
            .collect::<Result<_>>()?,
        "json" => serde_json::from_str::<Vec<BatchItem>>(text)
            .map_err(|e| {
                Error::InvalidJson(format!(
                    "{e}; a JSON batch is an array of strings or {{\"id\":KEY,\"body\":TEXT}} objects"
                ))
            })?
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let (body, key) = match item {
                    BatchItem::Body(body) => (body, None),
                    BatchItem::Keyed { id, body } => {
                        check_key(&id)?;
                        (body, Some(id.into_boxed_str()))
                    }
                };
                check_item(i, &body, config.max_item_bytes)?;
                Ok(NewItem { body: body.into_boxed_str(), key })
            })
            .collect::<Result<_>>()?,
        other => {
            return Err(Error::param("batch", format!("{other:?} is not lines or json")));
        }
    };
    let results = if items.is_empty() {
        // Still answer 404 for a missing queue, as a non-empty batch would.
        state.store.queue(&name).await?;
        Vec::new()
    } else {
        state.store.enqueue(&name, items, delay).await?
    };
    Ok(EnqueueResultOut::new(&results).into_response())
}

fn empty_response(depth: u64, inflight: u64, delayed: u64, paused: bool) -> Response {
    let mut h = HeaderMap::new();
    h.insert(headers::DEPTH, HeaderValue::from(depth));
    h.insert(headers::INFLIGHT, HeaderValue::from(inflight));
    h.insert(headers::DELAYED, HeaderValue::from(delayed));
    if paused {
        h.insert(headers::PAUSED, HeaderValue::from_static("true"));
    }
    (StatusCode::NO_CONTENT, h).into_response()
}

/// `POST /queues/{q}/dequeue`: kuard's dequeue, or leases, long polls and batches by parameter.
pub async fn dequeue(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    params: Params,
) -> Result<Response> {
    let lease = match params.get("lease") {
        None | Some("false") => LeaseSpec::None,
        Some("true") => LeaseSpec::QueueDefault,
        Some(_) => LeaseSpec::Millis(millis(
            params
                .duration("lease", MAX_LEASE, false)?
                .expect("present"),
        )),
    };
    if lease == LeaseSpec::Millis(0) {
        return Err(Error::param("lease", "must be at least 1ms"));
    }
    let wait = params.duration("wait", MAX_WAIT, true)?.unwrap_or_default();
    let max = params.int("max", 1, 1000)?;
    let req = DequeueRequest {
        max: max.unwrap_or(1) as usize,
        lease,
        wait,
    };
    // Not held through a long poll's wait.
    drop(params);
    match state.store.dequeue(&name, req).await? {
        DequeueOutcome::Empty {
            depth,
            inflight,
            delayed,
            paused,
        } => Ok(empty_response(depth, inflight, delayed, paused)),
        DequeueOutcome::Items(items) if max.is_some() => {
            Ok(MessageListOut::new(items.iter().map(delivered).collect()).into_response())
        }
        DequeueOutcome::Items(items) => {
            let first = items.first().expect("at least one item");
            Ok(delivered(first).into_response())
        }
    }
}

/// `POST /queues/{q}/leases/{lease}/ack`.
pub async fn ack(State(state): State<AppState>, path: LeasePath) -> Result<Response> {
    state.store.ack(&path.queue, &path.lease).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /queues/{q}/leases/{lease}/nack?delay=S`.
pub async fn nack(
    State(state): State<AppState>,
    path: LeasePath,
    params: Params,
) -> Result<Response> {
    let delay = params.duration("delay", MAX_DELAY, true)?.map_or(0, millis);
    state.store.nack(&path.queue, &path.lease, delay).await?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /queues/{q}/leases/{lease}/extend?lease=S`: answers the message with its new lease.
pub async fn extend(
    State(state): State<AppState>,
    path: LeasePath,
    params: Params,
) -> Result<Response> {
    let lease = params.duration("lease", MAX_LEASE, false)?.map(millis);
    let (info, id, body) = state.store.extend(&path.queue, &path.lease, lease).await?;
    Ok(MessageOut::new(id, &body, Some(info)).into_response())
}

/// `POST /queues/{q}/ack`: a JSON array of lease ids; one outcome each.
pub async fn ack_batch(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    body: Body,
) -> Result<Json<AckResult>> {
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let leases: Vec<String> = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidJson(format!("{e}; expected a JSON array of lease ids")))?;
    let outcomes = state.store.ack_many(&name, &leases).await?;
    let results: Vec<AckOutcome> = leases
        .into_iter()
        .zip(outcomes)
        .map(|(lease, outcome)| match outcome {
            Ok(()) => AckOutcome {
                lease,
                status: 200,
                code: None,
            },
            Err(e) => AckOutcome {
                lease,
                status: e.status().as_u16(),
                code: Some(e.code().into()),
            },
        })
        .collect();
    Ok(Json(AckResult {
        kind: "ackResult".into(),
        acked: results.iter().filter(|r| r.status == 200).count() as u64,
        results,
    }))
}

/// `GET /queues/{q}/dead?limit=N` (default 100).
pub async fn dead_letters(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    params: Params,
) -> Result<Json<DeadLetterList>> {
    let limit = params.int("limit", 1, 10_000)?.unwrap_or(100) as usize;
    let messages = state
        .store
        .dead_letters(&name, limit)
        .await?
        .into_iter()
        .map(|d| DeadLetter {
            id: d.id.to_string(),
            body: d.body.into(),
            creation_timestamp: rfc3339_ms(d.id.timestamp_ms()),
            attempts: d.attempts,
            dead_at: rfc3339_ms(d.died_at),
        })
        .collect();
    Ok(Json(DeadLetterList {
        kind: "deadLetterList".into(),
        messages,
    }))
}

/// `POST /queues/{q}/dead/requeue`.
pub async fn requeue_dead(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> Result<Json<CountResult>> {
    let count = state.store.requeue_dead(&name).await?;
    Ok(Json(CountResult {
        kind: "requeueResult".into(),
        count,
    }))
}

/// `DELETE /queues/{q}/dead`.
pub async fn purge_dead(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> Result<Json<CountResult>> {
    let count = state.store.purge_dead(&name).await?;
    Ok(Json(CountResult {
        kind: "purgeResult".into(),
        count,
    }))
}

/// `GET /queues/{q}/messages?limit=N` (default 10): ready items, not leased.
pub async fn peek(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    params: Params,
) -> Result<Response> {
    let limit = params.int("limit", 1, 1000)?.unwrap_or(10) as usize;
    let items = state.store.peek(&name, limit).await?;
    let messages = items
        .iter()
        .map(|(id, body)| MessageOut::new(*id, body, None))
        .collect();
    Ok(MessageListOut::new(messages).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_like_the_contract_says() {
        let v = |t, k| split_lines(t, k).collect::<Vec<_>>();
        assert_eq!(v("a\nb\n", false), ["a", "b"]);
        assert_eq!(v("a\r\nb", false), ["a", "b"]);
        assert_eq!(v("a\n\nb\n", false), ["a", "b"]);
        assert_eq!(v("a\n\nb\n", true), ["a", "", "b"]);
        assert!(v("", false).is_empty());
        assert!(v("\n", false).is_empty());
        assert_eq!(v("\n", true), [""]);
    }
}
