//! `GET /memq/server/stats/stream` (server-sent events, one stats snapshot a second) and
//! `GET /memq/server/stats/history` (the samples behind the charts).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures_util::{Stream, StreamExt, stream};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::dashboard::{Published, QueueSeries, SAMPLE_EVERY, SAMPLES_KEPT};
use crate::error::Result;
use crate::http::extract::Params;
use crate::http::{AppState, auth};
use crate::store::rfc3339_ms;
use crate::tokens::{Grant, Tokens};

/// How long a browser's `EventSource` waits before it reconnects.
const RECONNECT_HINT: Duration = Duration::from_secs(2);

/// Live figures
///
/// `GET /memq/server/stats/stream`: the latest snapshot at once, then each new one (or with
/// `?changes=true` only what changed), until the client leaves or the server shuts down.
#[utoipa::path(get, path = "/memq/server/stats/stream", tag = "dashboard",
    params(("changes" = Option<bool>, Query, description = "After the first snapshot, send only what changed: `statsDelta` events with the rows that changed and `removed`, the queues that went (a whole `stats` snapshot again whenever a sample was skipped)")),
    responses((status = 200, description = "Server-sent events: one `data:` line per stats snapshot (a stats object with rateIn and rateOut per queue and the sample's `seq`), the first at once, then one a second",
        body = String, content_type = "text/event-stream")))]
pub async fn stats_stream(
    State(state): State<AppState>,
    seen: auth::Seen,
    params: Params,
) -> Result<Response> {
    let changes = match params.get("changes") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(crate::Error::param("changes", "true or false")),
    };
    let events = snapshots(
        state.dashboard.subscribe(),
        state.dashboard.shutdown().clone(),
        changes,
        seen.map(|Extension(grant)| (grant, state.tokens.clone())),
    )
    .map(Ok::<_, Infallible>);
    let sse = Sse::new(events).keep_alive(KeepAlive::default());
    Ok((
        // Proxies such as nginx would otherwise hold the events back in a buffer.
        [(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        )],
        sse,
    )
        .into_response())
}

/// One event per snapshot: the current one first, then each new one, ending at `shutdown`.
/// With `changes`, a sample that follows the one sent before goes as its delta; after a gap (a
/// slow client skipped samples) the whole snapshot goes again. With the token it was opened
/// with, each event keeps only the queues the token covers, and the stream ends once the tokens
/// are reloaded (the client's next request is checked against the new ones: a retired token's
/// stream does not go on).
fn snapshots(
    mut live: watch::Receiver<Arc<Published>>,
    shutdown: CancellationToken,
    changes: bool,
    token: Option<(Arc<Grant>, Arc<Tokens>)>,
) -> impl Stream<Item = Event> + Send + 'static {
    // The current snapshot counts as unseen, so a new client gets it without waiting a second.
    live.mark_changed();
    stream::unfold(
        (live, shutdown, None::<u64>, token),
        move |(mut live, shutdown, sent, token)| async move {
            tokio::select! {
                // Shutdown first: once it fires, no more events even if a snapshot is waiting.
                biased;
                // Without this a graceful shutdown would wait for every open page to close.
                _ = shutdown.cancelled() => return None,
                changed = live.changed() => changed.ok()?,
            }
            let sample = live.borrow_and_update().clone();
            let data = match sent {
                Some(seq) if changes && sample.seq == seq + 1 => &sample.delta,
                _ => &sample.full,
            };
            let mut event = match &token {
                None => Event::default().data(&**data),
                Some((grant, tokens)) if !tokens.holds(grant) => return None,
                Some((grant, _)) if grant.queues.is_all() => Event::default().data(&**data),
                Some((grant, _)) => Event::default().data(covered_only(data, grant)),
            };
            if sent.is_none() {
                event = event.retry(RECONNECT_HINT);
            }
            Some((event, (live, shutdown, Some(sample.seq), token)))
        },
    )
}

/// A published event (a `stats` or `statsDelta` object) with only the rows and `removed` names
/// of the queues `grant` covers.
fn covered_only(data: &str, grant: &Grant) -> String {
    let Ok(mut event) = serde_json::from_str::<serde_json::Value>(data) else {
        // The sampler's own JSON: never here. Nothing rather than everything.
        return "{}".to_string();
    };
    let covers = |name: &serde_json::Value| name.as_str().is_some_and(|n| grant.queues.covers(n));
    if let Some(rows) = event.get_mut("queues").and_then(|v| v.as_array_mut()) {
        rows.retain(|row| covers(&row["name"]));
    }
    if let Some(removed) = event.get_mut("removed").and_then(|v| v.as_array_mut()) {
        removed.retain(covers);
    }
    event.to_string()
}

/// Answer of `GET /memq/server/stats/history`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryBody {
    #[schema(schema_with = history_kind)]
    kind: &'static str,
    /// Seconds between samples.
    interval_seconds: u64,
    /// When each sample was taken, RFC 3339 UTC.
    #[schema(value_type = Vec<String>)]
    times: Vec<String>,
    /// One entry per queue; every array as long as `times`, `null` where the queue did not
    /// exist yet.
    queues: Vec<QueueSeries>,
}

fn history_kind() -> utoipa::openapi::schema::Object {
    memq::schema::constant("statsHistory")
}

/// Recent figures
///
/// `GET /memq/server/stats/history?queue=NAME&seconds=N`: the last N seconds (default and most
/// 900) of samples, of one queue or of all.
#[utoipa::path(get, path = "/memq/server/stats/history", tag = "dashboard",
    params(
        ("queue" = Option<String>, Query, description = "One queue (default: every queue)", pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"),
        ("seconds" = Option<u32>, Query, minimum = 1, maximum = 900, description = "How far back (default 900)"),
    ),
    responses(
        (status = 200, description = "Samples of the last seconds", body = HistoryBody),
        (status = 400, description = "Bad queue name or seconds (`invalid_queue_name`, `invalid_parameter`)", body = memq::ApiError),
    ))]
pub async fn stats_history(
    State(state): State<AppState>,
    seen: auth::Seen,
    params: Params,
) -> Result<Json<HistoryBody>> {
    let queue = params.get("queue");
    let only = auth::narrowed(&seen);
    if let Some(name) = queue {
        memq::name::validate_queue_name(name).map_err(crate::Error::InvalidQueueName)?;
        if let Some(grant) = only.filter(|g| !g.queues.covers(name)) {
            return Err(crate::Error::Forbidden(format!(
                "token {:?} covers queues {:?}, not {name:?}",
                grant.name,
                grant.queues.as_str()
            )));
        }
    }
    let most = SAMPLES_KEPT as u64 * SAMPLE_EVERY.as_secs();
    let seconds = params.int("seconds", 1, most)?.unwrap_or(most) as usize;
    let mut window = state.dashboard.window(queue, seconds);
    if let Some(grant) = only {
        window.queues.retain(|q| grant.queues.covers(&q.name));
    }
    Ok(Json(HistoryBody {
        kind: "statsHistory",
        interval_seconds: SAMPLE_EVERY.as_secs(),
        times: window.times.into_iter().map(rfc3339_ms).collect(),
        queues: window.queues,
    }))
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    fn sample(seq: u64) -> Arc<Published> {
        Arc::new(Published {
            seq,
            full: format!("full {seq}").into(),
            delta: format!("delta {seq}").into(),
        })
    }

    fn text(event: Option<Option<Event>>) -> String {
        let event = event.flatten().expect("an event");
        // The event as it goes on the wire; its data line is what the tests compare.
        let wire = format!("{event:?}");
        ["full", "delta"]
            .iter()
            .find_map(|kind| {
                let at = wire.find(&format!("{kind} "))?;
                let digits: String = wire[at + kind.len() + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                Some(format!("{kind} {digits}"))
            })
            .unwrap_or(wire)
    }

    #[tokio::test]
    async fn a_new_client_gets_the_current_snapshot_at_once_then_each_new_one() {
        let (tx, rx) = watch::channel(sample(1));
        let shutdown = CancellationToken::new();
        let mut events = Box::pin(snapshots(rx, shutdown.clone(), false, None));
        assert_eq!(text(events.next().now_or_never()), "full 1", "at once");
        assert!(events.next().now_or_never().is_none(), "nothing new yet");
        tx.send_replace(sample(2));
        assert_eq!(text(events.next().now_or_never()), "full 2");
        tx.send_replace(sample(3));
        shutdown.cancel();
        assert!(
            matches!(events.next().now_or_never(), Some(None)),
            "shutdown ends the stream at once"
        );
    }

    #[tokio::test]
    async fn with_changes_a_client_gets_deltas_and_the_whole_snapshot_after_a_gap() {
        let (tx, rx) = watch::channel(sample(5));
        let mut events = Box::pin(snapshots(rx, CancellationToken::new(), true, None));
        assert_eq!(text(events.next().now_or_never()), "full 5");
        tx.send_replace(sample(6));
        assert_eq!(text(events.next().now_or_never()), "delta 6");
        // The client was slow: 7 was replaced by 8 before it read; 8's delta would miss 7's.
        tx.send_replace(sample(7));
        tx.send_replace(sample(8));
        assert_eq!(text(events.next().now_or_never()), "full 8");
        tx.send_replace(sample(9));
        assert_eq!(text(events.next().now_or_never()), "delta 9");
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_sampler_is_gone() {
        let (tx, rx) = watch::channel(sample(1));
        let mut events = Box::pin(snapshots(rx, CancellationToken::new(), true, None));
        assert!(events.next().now_or_never().flatten().is_some());
        drop(tx);
        assert!(matches!(events.next().now_or_never(), Some(None)));
    }

    #[test]
    fn a_scoped_token_sees_only_the_rows_and_removals_of_its_queues() {
        let grant = crate::tokens::TokenSet::parse("look reader q* t\n").unwrap();
        let grant = grant.find(b"t").unwrap();
        let delta = r#"{"kind":"statsDelta","seq":3,"queues":[{"name":"q1","depth":1},{"name":"other","depth":2},{"name":"q2","depth":0}],"removed":["q9","secret"]}"#;
        let seen: serde_json::Value = serde_json::from_str(&covered_only(delta, grant)).unwrap();
        assert_eq!(
            seen,
            serde_json::json!({"kind":"statsDelta","seq":3,"queues":[{"name":"q1","depth":1},{"name":"q2","depth":0}],"removed":["q9"]})
        );
        assert_eq!(covered_only("not json", grant), "{}");
    }
}
