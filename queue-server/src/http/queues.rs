//! Routes under `/memq/server`: queues, items, leases, dead letters (API.md).

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use memq::types::headers;
use memq::{
    AckOutcome, AckResult, ApiError, CountResult, DeadLetter, DeadLetterList, ExtendOutcome,
    ExtendResult, ItemInfo, LeaseEntry, LeaseList, Message, MessageList, NackResult,
    QueueConfigPatch, QueueObject, QueueStats, ReleaseResult, Stats,
};

use super::batch::{BatchKind, check_item, check_key, parse_batch};
use super::extract::{
    Consumer, ItemPath, LeasePath, Params, QueueName, json_object, read_body, utf8,
};
use super::openapi::{
    BatchMode, DequeueAnswer, EnqueueAnswer, ItemBytes, PurgeResult, RequeueResult,
};
use super::wire::{EnqueueResultOut, MessageListOut, MessageOut};
use super::{AppState, auth};
use crate::broker::NewItem;
use crate::error::{Error, Result};
use crate::store::{
    Delivery, DequeueOutcome, DequeueRequest, FoundItem, HeldLease, ItemRef, LeaseSpec,
    Whereabouts, rfc3339_ms,
};

use memq::limits::{MAX_DELAY, MAX_DEQUEUE, MAX_LEASE, MAX_WAIT};

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

/// The `{queue}` of every queue route, as the API description shows it: the rule of
/// [`memq::name`] (a test holds the two together).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct QueuePath {
    /// Queue name
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    queue: String,
}

/// Every queue's figures
///
/// `GET /stats`: every queue's counters and config, sorted by name (kuard's stats).
#[utoipa::path(get, path = "/memq/server/stats", tag = "queues",
    responses((status = 200, description = "Every queue, sorted by name (kuard's stats); with a scoped token (`--tokens-file`), the queues its glob covers", body = Stats)))]
pub async fn stats(State(state): State<AppState>, seen: auth::Seen) -> Result<Json<Stats>> {
    let mut queues = state.store.stats().await?;
    if let Some(grant) = auth::narrowed(&seen) {
        queues.retain(|q| grant.queues.covers(&q.name));
    }
    Ok(Json(Stats {
        kind: "stats".into(),
        queues,
    }))
}

/// Create or configure a queue
///
/// `PUT /queues/{q}`: 201 when created, 200 when it existed (its config updated when a body
/// is given). Idempotent.
#[utoipa::path(put, path = "/memq/server/queues/{queue}", tag = "queues",
    params(QueuePath),
    request_body(content = Option<QueueConfigPatch>, content_type = "application/json",
        description = "Optional config; fields left out keep their value; no body is no change"),
    responses(
        (status = 201, description = "Created", body = QueueObject,
            links(("enqueue" = (operation_id = "enqueue", parameters(("queue" = "$request.path.queue")))), ("dequeue" = (operation_id = "dequeue", parameters(("queue" = "$request.path.queue")))), ("get_queue" = (operation_id = "get_queue", parameters(("queue" = "$request.path.queue")))), ("peek" = (operation_id = "peek", parameters(("queue" = "$request.path.queue")))), ("dead_letters" = (operation_id = "dead_letters", parameters(("queue" = "$request.path.queue")))), ("pause" = (operation_id = "pause", parameters(("queue" = "$request.path.queue")))), ("resume" = (operation_id = "resume", parameters(("queue" = "$request.path.queue")))), ("drain" = (operation_id = "drain", parameters(("queue" = "$request.path.queue")))), ("delete_queue" = (operation_id = "delete_queue", parameters(("queue" = "$request.path.queue")))))),
        (status = 200, description = "Existed (config updated when a body was given)", body = QueueObject),
        (status = 400, description = "Bad queue name or config (`invalid_queue_name`, `invalid_json`)", body = ApiError),
        (status = 409, description = "`--max-queues` reached (`too_many_queues`)", body = ApiError),
        (status = 413, description = "Body over 64 KiB (`body_too_large`)", body = ApiError),
    ))]
pub async fn create_queue(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    body: Body,
) -> Result<Response> {
    let bytes = read_body(body, 64 * 1024).await?;
    let patch = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        Some(json_object::<QueueConfigPatch>(&bytes)?)
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

/// Queue figures
///
/// `GET /queues/{q}`: one queue's counters and config.
#[utoipa::path(get, path = "/memq/server/queues/{queue}", tag = "queues",
    params(QueuePath), responses((status = 200, description = "The queue object", body = QueueObject)))]
pub async fn get_queue(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> Result<Json<QueueObject>> {
    Ok(queue_object(state.store.queue(&name).await?))
}

/// Delete a queue
///
/// `DELETE /queues/{q}`: the queue goes with its items, leases and dead letters; the answer is
/// its last figures.
#[utoipa::path(delete, path = "/memq/server/queues/{queue}", tag = "queues",
    params(QueuePath),
    responses((status = 200, description = "Deleted; the queue as it was", body = QueueObject)))]
pub async fn delete_queue(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> Result<Json<QueueObject>> {
    let queue = state.store.delete_queue(&name).await?;
    tracing::info!(queue = %name, depth = queue.depth, inflight = queue.inflight, "queue deleted");
    Ok(queue_object(queue))
}

/// Drop the ready items
///
/// `POST /queues/{q}/drain`: ready and delayed items are dropped (counted in `drained`);
/// leased items and dead letters stay.
#[utoipa::path(post, path = "/memq/server/queues/{queue}/drain", tag = "queues",
    params(QueuePath), responses((status = 200, description = "Ready and delayed items dropped", body = QueueObject)))]
pub async fn drain(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> Result<Json<QueueObject>> {
    Ok(queue_object(state.store.drain(&name).await?))
}

/// Pause hand-outs
///
/// `POST /queues/{q}/pause`: dequeues answer 204 with `X-Memq-Paused: true` until resumed;
/// enqueues go on.
#[utoipa::path(post, path = "/memq/server/queues/{queue}/pause", tag = "queues",
    params(QueuePath), responses((status = 200, description = "Paused: dequeues answer 204", body = QueueObject)))]
pub async fn pause(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> Result<Json<QueueObject>> {
    Ok(queue_object(state.store.set_paused(&name, true).await?))
}

/// Resume hand-outs
///
/// `POST /queues/{q}/resume`: dequeues hand out items again.
#[utoipa::path(post, path = "/memq/server/queues/{queue}/resume", tag = "queues",
    params(QueuePath), responses((status = 200, description = "The queue object", body = QueueObject)))]
pub async fn resume(
    State(state): State<AppState>,
    QueueName(name): QueueName,
) -> Result<Json<QueueObject>> {
    Ok(queue_object(state.store.set_paused(&name, false).await?))
}

/// Add an item, or a batch
///
/// `POST /queues/{q}/enqueue`: the body is one item, kept byte for byte whatever its
/// Content-Type (kuard's `curl -d` sends form-urlencoded); with `?batch=lines` one item per
/// line, with `?batch=json` a JSON array (typed: `POST .../enqueue/batch`).
#[utoipa::path(post, path = "/memq/server/queues/{queue}/enqueue", tag = "items",
    params(
        QueuePath,
        ("batch" = inline(Option<BatchMode>), Query, description = "Many items: one per line, or a JSON array given as text"),
        ("keepEmpty" = Option<bool>, Query, description = "With batch=lines: empty lines are items too"),
        DelayQuery,
        ("id" = Option<String>, Query, min_length = 1, max_length = 1024, description = "The producer's dedup key (not with batch)"),
    ),
    request_body(
        content(
            (inline(ItemBytes) = "application/octet-stream"),
            (String = "text/plain"),
        ),
        description = "The item, kept byte for byte: any UTF-8 text, whatever the Content-Type \
                       (these two are what clients generated from this description send). With \
                       batch=lines, one item per line; with batch=json, a JSON array of strings \
                       or {\"id\":KEY,\"body\":TEXT} objects"),
    responses(
        (status = 200, description = "The item (a message), or with batch= the batch's result", body = EnqueueAnswer,
            links(("dequeue" = (operation_id = "dequeue", parameters(("queue" = "$request.path.queue")))), ("peek" = (operation_id = "peek", parameters(("queue" = "$request.path.queue")))))),
        (status = 413, description = "An item over --max-item-bytes (`item_too_large`) or a body over --max-body-bytes (`body_too_large`)", body = ApiError),
        (status = 429, description = "The queue's maxDepth would be passed (`queue_full`)", body = ApiError,
            headers(("retry-after" = u32, description = "Seconds to wait"))),
        (status = 507, description = "--max-memory would be passed (`memory_full`)", body = ApiError,
            headers(("retry-after" = u32, description = "Seconds to wait"))),
    ))]
pub async fn enqueue(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    params: Params,
    body: Body,
) -> Result<Response> {
    add(&state, &name, &params, body, params.get("batch")).await
}

/// Add a JSON batch
///
/// `POST /queues/{q}/enqueue/batch`: the body is a JSON array of items, each a string or
/// `{"id":KEY,"body":TEXT}`; the same as `enqueue?batch=json`, with the body typed for
/// clients generated from this description. All or nothing.
#[utoipa::path(post, path = "/memq/server/queues/{queue}/enqueue/batch", tag = "items",
    params(QueuePath, DelayQuery),
    request_body(content = Vec<memq::BatchItem>, content_type = "application/json",
        description = "The items: strings, or {\"id\":KEY,\"body\":TEXT} with a producer's dedup key"),
    responses(
        (status = 200, description = "The batch's result: one id per item, in order", body = memq::EnqueueResult,
            links(("dequeue" = (operation_id = "dequeue", parameters(("queue" = "$request.path.queue")))))),
        (status = 413, description = "An item over --max-item-bytes (`item_too_large`) or a body over --max-body-bytes (`body_too_large`)", body = ApiError),
        (status = 429, description = "The queue's maxDepth would be passed (`queue_full`)", body = ApiError,
            headers(("retry-after" = u32, description = "Seconds to wait"))),
        (status = 507, description = "--max-memory would be passed (`memory_full`)", body = ApiError,
            headers(("retry-after" = u32, description = "Seconds to wait"))),
    ))]
pub async fn enqueue_batch(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    params: Params,
    body: Body,
) -> Result<Response> {
    add(&state, &name, &params, body, Some("json")).await
}

/// `?delay=` of the routes that add items.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct DelayQuery {
    /// Ready only after this long: seconds (30, 1.5) or 500ms, 30s, 2m; at most 900 s
    delay: Option<String>,
}

/// Adds the body as one item, or as the items of a `batch` (`lines` or `json`).
async fn add(
    state: &AppState,
    name: &str,
    params: &Params,
    body: Body,
    batch: Option<&str>,
) -> Result<Response> {
    let config = &state.config;
    let delay = params.duration("delay", MAX_DELAY, true)?.map_or(0, millis);
    let key = params.get("id");
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
        if let Some(key) = key {
            check_key(key)?;
        }
        let item = NewItem {
            body: text.into(),
            key: key.map(Box::from),
        };
        let (id, duplicate) = state.store.enqueue(name, vec![item], delay).await?[0];
        return Ok(MessageOut::new(id, text, None)
            .duplicate(duplicate)
            .into_response());
    };
    let kind = BatchKind::parse(batch, keep_empty)?;
    let items = parse_batch(kind, text, config.max_item_bytes)?;
    let results = if items.is_empty() {
        // Still answer 404 for a missing queue, as a non-empty batch would.
        state.store.queue(name).await?;
        Vec::new()
    } else {
        state.store.enqueue(name, items, delay).await?
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

/// Lease or take items
///
/// `POST /queues/{q}/dequeue`: with no parameter kuard's dequeue (the item is removed for
/// good); `?lease=` leases it instead, `?wait=` long-polls, `?max=` takes up to N items.
#[utoipa::path(post, path = "/memq/server/queues/{queue}/dequeue", tag = "items",
    params(
        QueuePath,
        ("lease" = Option<String>, Query, description = "Lease instead of removing: a duration (0 < S <= 12 h), `true` (the queue's leaseSeconds) or `false`"),
        ("wait" = Option<String>, Query, description = "Long poll up to this long (0 to 60 s)"),
        ("max" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Up to N items, as a messageList"),
        ("x-memq-consumer" = Option<String>, Header, description = "Who takes the items (printable ASCII, 1 to 253 bytes; e.g. the pod's name), listed with their leases"),
    ),
    responses(
        (status = 200, description = "An item (a message), or with max= a messageList", body = DequeueAnswer,
            links(("ack" = (operation_id = "ack", parameters(("queue" = "$request.path.queue"), ("lease" = "$response.body#/lease/id")))), ("nack" = (operation_id = "nack", parameters(("queue" = "$request.path.queue"), ("lease" = "$response.body#/lease/id")))), ("extend" = (operation_id = "extend", parameters(("queue" = "$request.path.queue"), ("lease" = "$response.body#/lease/id")))))),
        (status = 204, description = "Nothing ready (or paused)", headers(
            ("x-memq-depth" = u64, description = "Ready items"),
            ("x-memq-inflight" = u64, description = "Leased items: a lease may still expire and bring an item back"),
            ("x-memq-delayed" = u64, description = "Items waiting for their delay"),
            ("x-memq-paused" = String, description = "`true` when the queue is paused"),
        )),
    ))]
pub async fn dequeue(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    Consumer(consumer): Consumer,
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
    let max = params.int("max", 1, u64::from(MAX_DEQUEUE))?;
    let req = DequeueRequest {
        max: max.unwrap_or(1) as usize,
        lease,
        wait,
        consumer,
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

/// Ack a leased item
///
/// `POST /queues/{q}/leases/{lease}/ack`: the item is done and gone; `acked` grows.
#[utoipa::path(post, path = "/memq/server/queues/{queue}/leases/{lease}/ack", tag = "leases",
    params(QueuePath, ("lease" = String, Path, description = "Lease id (ULID) from a leased dequeue")),
    responses(
        (status = 200, description = "Acked: the item is gone; empty body"),
        (status = 410, description = "The lease expired (`lease_expired`)", body = ApiError),
    ))]
pub async fn ack(State(state): State<AppState>, path: LeasePath) -> Result<Response> {
    state.store.ack(&path.queue, &path.lease).await?;
    Ok(StatusCode::OK.into_response())
}

/// Give a leased item back
///
/// `POST /queues/{q}/leases/{lease}/nack?delay=S`: the item goes back to the front of the
/// ready items (after `delay`), its attempt counted; at `maxAttempts` it goes to the dead
/// letters instead.
#[utoipa::path(post, path = "/memq/server/queues/{queue}/leases/{lease}/nack", tag = "leases",
    params(QueuePath, ("lease" = String, Path, description = "Lease id (ULID) from a leased dequeue"),
        ("delay" = Option<String>, Query, description = "Ready again only after this long (at most 900 s)")),
    responses(
        (status = 200, description = "Given back; empty body"),
        (status = 410, description = "The lease expired (`lease_expired`)", body = ApiError),
    ))]
pub async fn nack(
    State(state): State<AppState>,
    path: LeasePath,
    params: Params,
) -> Result<Response> {
    let delay = params.duration("delay", MAX_DELAY, true)?.map_or(0, millis);
    state.store.nack(&path.queue, &path.lease, delay).await?;
    Ok(StatusCode::OK.into_response())
}

/// Extend a lease
///
/// `POST /queues/{q}/leases/{lease}/extend?seconds=S`: the lease now runs out S from now (the
/// queue's `leaseSeconds` by default); the answer is the message with its new lease.
/// `?lease=S` is accepted for `?seconds=S`.
#[utoipa::path(post, path = "/memq/server/queues/{queue}/leases/{lease}/extend", tag = "leases",
    params(QueuePath, ("lease" = String, Path, description = "Lease id (ULID) from a leased dequeue"),
        LeaseSeconds),
    responses(
        (status = 200, description = "The message with its new lease", body = Message),
        (status = 410, description = "The lease expired (`lease_expired`)", body = ApiError),
    ))]
pub async fn extend(
    State(state): State<AppState>,
    path: LeasePath,
    params: Params,
) -> Result<Response> {
    let lease = new_lease_length(&params)?;
    let (info, id, body) = state.store.extend(&path.queue, &path.lease, lease).await?;
    Ok(MessageOut::new(id, &body, Some(info)).into_response())
}

/// `?seconds=` of the extend routes: the new lease length. Not `?lease=`, which the path of
/// `.../leases/{lease}/extend` names already; `?lease=S`, which clients sent before, is
/// accepted for it.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub(crate) struct LeaseSeconds {
    /// New lease length from now: seconds (30, 1.5) or 500ms, 30s, 2m; default the queue's
    /// leaseSeconds; at most 12 h
    seconds: Option<String>,
}

/// The new lease length of an extend ([`LeaseSeconds`]) in milliseconds; `None` for the
/// queue's default.
fn new_lease_length(params: &Params) -> Result<Option<u64>> {
    let name = match (params.get("seconds"), params.get("lease")) {
        (Some(_), Some(_)) => {
            return Err(Error::param(
                "seconds",
                "give the new lease length once, as ?seconds= (or ?lease=)",
            ));
        }
        (None, Some(_)) => "lease",
        _ => "seconds",
    };
    let lease = params.duration(name, MAX_LEASE, false)?.map(millis);
    if lease == Some(0) {
        return Err(Error::param(name, "must be at least 1ms"));
    }
    Ok(lease)
}

/// The body of a batch lease route: a JSON array of lease ids.
async fn lease_ids(state: &AppState, body: Body) -> Result<Vec<String>> {
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidJson(format!("{e}; expected a JSON array of lease ids")))
}

/// One outcome per lease id, and how many were done.
fn outcomes(leases: Vec<String>, results: Vec<Result<()>>) -> (u64, Vec<AckOutcome>) {
    let outcomes: Vec<AckOutcome> = leases
        .into_iter()
        .zip(results)
        .map(|(lease, result)| {
            let (status, code) = status_of(&result);
            AckOutcome {
                lease,
                status,
                code,
            }
        })
        .collect();
    let done = outcomes.iter().filter(|o| o.status == 200).count() as u64;
    (done, outcomes)
}

/// The status and error code of one lease's result in a batch answer.
fn status_of<T>(result: &Result<T>) -> (u16, Option<String>) {
    match result {
        Ok(_) => (200, None),
        Err(e) => (e.status().as_u16(), Some(e.code().into())),
    }
}

/// Ack many leased items
///
/// `POST /queues/{q}/ack`: a JSON array of lease ids; one outcome each, in order.
#[utoipa::path(post, path = "/memq/server/queues/{queue}/ack", tag = "leases",
    params(QueuePath),
    request_body(content = Vec<String>, content_type = "application/json", description = "Lease ids"),
    responses(
        (status = 200, description = "One outcome per lease id", body = AckResult),
        (status = 413, description = "Body over --max-body-bytes (`body_too_large`)", body = ApiError),
    ))]
pub async fn ack_batch(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    body: Body,
) -> Result<Json<AckResult>> {
    let leases = lease_ids(&state, body).await?;
    let results = state.store.ack_many(&name, &leases).await?;
    let (acked, results) = outcomes(leases, results);
    Ok(Json(AckResult {
        kind: "ackResult".into(),
        acked,
        results,
    }))
}

/// Give many leased items back
///
/// `POST /queues/{q}/nack?delay=S`: a JSON array of lease ids; one outcome each, in order. The
/// items go back to the front (after `delay`), their attempts counted; at `maxAttempts` to the
/// dead letters.
#[utoipa::path(post, path = "/memq/server/queues/{queue}/nack", tag = "leases",
    params(QueuePath,
        ("delay" = Option<String>, Query, description = "Ready again only after this long (at most 900 s); without it the items go to the front, in the order given")),
    request_body(content = Vec<String>, content_type = "application/json", description = "Lease ids"),
    responses(
        (status = 200, description = "One outcome per lease id", body = NackResult),
        (status = 413, description = "Body over --max-body-bytes (`body_too_large`)", body = ApiError),
    ))]
pub async fn nack_batch(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    params: Params,
    body: Body,
) -> Result<Json<NackResult>> {
    let delay = params.duration("delay", MAX_DELAY, true)?.map_or(0, millis);
    let leases = lease_ids(&state, body).await?;
    let results = state.store.nack_many(&name, &leases, delay).await?;
    let (nacked, results) = outcomes(leases, results);
    Ok(Json(NackResult {
        kind: "nackResult".into(),
        nacked,
        results,
    }))
}

/// Extend many leases
///
/// `POST /queues/{q}/extend?seconds=S`: a JSON array of lease ids; each one's new end, S from
/// now (the queue's `leaseSeconds` by default). `?lease=S` is accepted for `?seconds=S`.
#[utoipa::path(post, path = "/memq/server/queues/{queue}/extend", tag = "leases",
    params(QueuePath, LeaseSeconds),
    request_body(content = Vec<String>, content_type = "application/json", description = "Lease ids"),
    responses(
        (status = 200, description = "One outcome per lease id, with the new expiresAt of each lease extended", body = ExtendResult),
        (status = 413, description = "Body over --max-body-bytes (`body_too_large`)", body = ApiError),
    ))]
pub async fn extend_batch(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    params: Params,
    body: Body,
) -> Result<Json<ExtendResult>> {
    let lease = new_lease_length(&params)?;
    let leases = lease_ids(&state, body).await?;
    let results = state.store.extend_many(&name, &leases, lease).await?;
    let results: Vec<ExtendOutcome> = leases
        .into_iter()
        .zip(results)
        .map(|(lease, result)| {
            let (status, code) = status_of(&result);
            ExtendOutcome {
                lease,
                status,
                code,
                expires_at: result.ok().map(rfc3339_ms),
            }
        })
        .collect();
    Ok(Json(ExtendResult {
        kind: "extendResult".into(),
        extended: results.iter().filter(|r| r.status == 200).count() as u64,
        results,
    }))
}

/// Release leased items never started
///
/// `POST /queues/{q}/release`: a JSON array of lease ids of items never started (a consumer's
/// prefetch buffer when it stops); they go back to the front, their attempt not counted. One
/// outcome each, in order.
#[utoipa::path(post, path = "/memq/server/queues/{queue}/release", tag = "leases",
    params(QueuePath),
    request_body(content = Vec<String>, content_type = "application/json", description = "Lease ids"),
    responses(
        (status = 200, description = "One outcome per lease id; the items released are back at the front, in the order given, their attempt not counted", body = ReleaseResult),
        (status = 413, description = "Body over --max-body-bytes (`body_too_large`)", body = ApiError),
    ))]
pub async fn release(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    body: Body,
) -> Result<Json<ReleaseResult>> {
    let leases = lease_ids(&state, body).await?;
    let results = state.store.release(&name, &leases).await?;
    let (released, results) = outcomes(leases, results);
    Ok(Json(ReleaseResult {
        kind: "releaseResult".into(),
        released,
        results,
    }))
}

/// List dead letters
///
/// `GET /queues/{q}/dead?limit=N` (default 100): items that ran out of attempts, oldest first.
#[utoipa::path(get, path = "/memq/server/queues/{queue}/dead", tag = "dead letters",
    params(QueuePath, ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Most dead letters (default 100)")),
    responses((status = 200, description = "Dead letters, oldest first", body = DeadLetterList)))]
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

/// Requeue dead letters
///
/// `POST /queues/{q}/dead/requeue`: every dead letter goes back to the ready items, at
/// attempt 0.
#[utoipa::path(post, path = "/memq/server/queues/{queue}/dead/requeue", tag = "dead letters",
    params(QueuePath), responses((status = 200, description = "Dead letters moved back to ready", body = RequeueResult)))]
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

/// Purge dead letters
///
/// `DELETE /queues/{q}/dead`: every dead letter is removed.
#[utoipa::path(delete, path = "/memq/server/queues/{queue}/dead", tag = "dead letters",
    params(QueuePath), responses((status = 200, description = "Dead letters removed", body = PurgeResult)))]
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

/// Peek at ready items
///
/// `GET /queues/{q}/messages?limit=N` (default 10): the next ready items, in hand-out order,
/// neither leased nor removed.
#[utoipa::path(get, path = "/memq/server/queues/{queue}/messages", tag = "items",
    params(QueuePath, ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most items (default 10)")),
    responses((status = 200, description = "Ready items in hand-out order, not leased", body = MessageList)))]
pub async fn peek(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    params: Params,
) -> Result<Response> {
    let limit = params
        .int("limit", 1, u64::from(MAX_DEQUEUE))?
        .unwrap_or(10) as usize;
    let items = state.store.peek(&name, limit).await?;
    let messages = items
        .iter()
        .map(|(id, body)| MessageOut::new(*id, body, None))
        .collect();
    Ok(MessageListOut::new(messages).into_response())
}

/// List leases
///
/// `GET /queues/{q}/leases?limit=N` (default 100): the leases held now, oldest first: who
/// holds which item, since when, until when.
#[utoipa::path(get, path = "/memq/server/queues/{queue}/leases", tag = "leases",
    params(QueuePath, ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Most leases (default 100)")),
    responses((status = 200, description = "Running leases, oldest first: who holds which item, since when, until when", body = LeaseList)))]
pub async fn leases(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    params: Params,
) -> Result<Json<LeaseList>> {
    let limit = params
        .int("limit", 1, u64::from(MAX_DEQUEUE))?
        .unwrap_or(100) as usize;
    let held = state.store.leases(&name, limit).await?;
    Ok(Json(LeaseList {
        kind: "leaseList".into(),
        leases: held.into_iter().map(lease_entry).collect(),
    }))
}

fn lease_entry(l: HeldLease) -> LeaseEntry {
    LeaseEntry {
        id: l.id.to_string(),
        item_id: l.item.to_string(),
        attempt: l.attempt,
        consumer: l.consumer.map(|c| c.to_string()),
        leased_at: rfc3339_ms(l.id.timestamp_ms()),
        expires_at: rfc3339_ms(l.deadline),
    }
}

fn item_info(found: FoundItem) -> ItemInfo {
    let (mut position, mut ready_at, mut lease, mut dead_at) = (None, None, None, None);
    let state = match found.state {
        Whereabouts::Ready { position: ahead } => {
            position = Some(ahead);
            "ready"
        }
        Whereabouts::Delayed { at } => {
            ready_at = Some(rfc3339_ms(at));
            "delayed"
        }
        Whereabouts::Leased(held) => {
            lease = Some(lease_entry(held));
            "leased"
        }
        Whereabouts::Dead { at } => {
            dead_at = Some(rfc3339_ms(at));
            "dead"
        }
    };
    ItemInfo {
        kind: "item".into(),
        id: found.id.to_string(),
        state: state.into(),
        attempts: found.attempts,
        enqueued_at: rfc3339_ms(found.id.timestamp_ms()),
        position,
        ready_at,
        lease,
        dead_at,
    }
}

/// Find an item
///
/// `GET /queues/{q}/items/{item}`: where an item is now: ready (and how many are ahead),
/// delayed, leased (by whom) or dead.
#[utoipa::path(get, path = "/memq/server/queues/{queue}/items/{item}", tag = "items",
    params(QueuePath, ("item" = String, Path, description = "Item id (ULID), as the enqueue answered it")),
    responses(
        (status = 200, description = "Ready (with how many are ahead), delayed (with when it is ready), leased (with its lease) or dead", body = ItemInfo),
        (status = 404, description = "Not in the queue now (`item_not_found`): acked, drained, taken, purged or never there", body = ApiError),
    ))]
pub async fn find_item(
    State(state): State<AppState>,
    ItemPath { queue, item }: ItemPath,
) -> Result<Json<ItemInfo>> {
    let found = state.store.find_item(&queue, ItemRef::Id(&item)).await?;
    Ok(Json(item_info(found)))
}

/// Find an item by its key
///
/// `GET /queues/{q}/items?key=KEY`: where the item enqueued with a producer key (`?id=`) is
/// now.
#[utoipa::path(get, path = "/memq/server/queues/{queue}/items", tag = "items",
    params(QueuePath, ("key" = String, Query, description = "The producer key (`?id=` of the enqueue)")),
    responses(
        (status = 200, description = "As for an item id", body = ItemInfo),
        (status = 404, description = "No item holds the key now (`item_not_found`)", body = ApiError),
    ))]
pub async fn find_item_by_key(
    State(state): State<AppState>,
    QueueName(name): QueueName,
    params: Params,
) -> Result<Json<ItemInfo>> {
    let key = params
        .get("key")
        .ok_or_else(|| Error::param("key", "required: the producer key to look up"))?;
    let found = state.store.find_item(&name, ItemRef::Key(key)).await?;
    Ok(Json(item_info(found)))
}
