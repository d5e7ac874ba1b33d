//! `GET /memq/server/stats/stream` (server-sent events, one stats snapshot a second) and
//! `GET /memq/server/stats/history` (the samples behind the charts).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt, stream};
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::dashboard::{QueueSeries, SAMPLE_EVERY, SAMPLES_KEPT};
use crate::error::Result;
use crate::http::AppState;
use crate::http::extract::Params;
use crate::store::rfc3339_ms;

/// How long a browser's `EventSource` waits before it reconnects.
const RECONNECT_HINT: Duration = Duration::from_secs(2);

/// `GET /memq/server/stats/stream`: the latest snapshot at once, then each new one, until the
/// client leaves or the server shuts down.
#[utoipa::path(get, path = "/memq/server/stats/stream", tag = "dashboard",
    responses((status = 200, description = "Server-sent events: one `data:` line per stats snapshot (a stats object with rateIn and rateOut per queue), the first at once, then one a second",
        body = String, content_type = "text/event-stream")))]
pub async fn stats_stream(State(state): State<AppState>) -> Response {
    let events = snapshots(
        state.dashboard.subscribe(),
        state.dashboard.shutdown().clone(),
    )
    .map(Ok::<_, Infallible>);
    let sse = Sse::new(events).keep_alive(KeepAlive::default());
    (
        // Proxies such as nginx would otherwise hold the events back in a buffer.
        [(
            HeaderName::from_static("x-accel-buffering"),
            HeaderValue::from_static("no"),
        )],
        sse,
    )
        .into_response()
}

/// One event per snapshot: the current one first, then each new one, ending at `shutdown`.
fn snapshots(
    mut live: watch::Receiver<Arc<str>>,
    shutdown: CancellationToken,
) -> impl Stream<Item = Event> + Send + 'static {
    // The current snapshot counts as unseen, so a new client gets it without waiting a second.
    live.mark_changed();
    stream::unfold(
        (live, shutdown, true),
        |(mut live, shutdown, first)| async move {
            tokio::select! {
                // Shutdown first: once it fires, no more events even if a snapshot is waiting.
                biased;
                // Without this a graceful shutdown would wait for every open page to close.
                _ = shutdown.cancelled() => return None,
                changed = live.changed() => changed.ok()?,
            }
            let json = live.borrow_and_update().clone();
            let mut event = Event::default().data(&*json);
            if first {
                event = event.retry(RECONNECT_HINT);
            }
            Some((event, (live, shutdown, false)))
        },
    )
}

/// Answer of `GET /memq/server/stats/history`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryBody {
    /// Always `"statsHistory"`.
    #[schema(value_type = String, pattern = "^statsHistory$")]
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
    params: Params,
) -> Result<Json<HistoryBody>> {
    let queue = params.get("queue");
    if let Some(name) = queue {
        memq::name::validate_queue_name(name).map_err(crate::Error::InvalidQueueName)?;
    }
    let most = SAMPLES_KEPT as u64 * SAMPLE_EVERY.as_secs();
    let seconds = params.int("seconds", 1, most)?.unwrap_or(most) as usize;
    let window = state.dashboard.window(queue, seconds);
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

    #[tokio::test]
    async fn a_new_client_gets_the_current_snapshot_at_once_then_each_new_one() {
        let (tx, rx) = watch::channel(Arc::<str>::from("{}"));
        let shutdown = CancellationToken::new();
        let mut events = Box::pin(snapshots(rx, shutdown.clone()));
        assert!(
            events.next().now_or_never().flatten().is_some(),
            "the current snapshot, without waiting for the next"
        );
        assert!(events.next().now_or_never().is_none(), "nothing new yet");
        tx.send_replace(Arc::from("{\"kind\":\"stats\"}"));
        assert!(events.next().now_or_never().flatten().is_some());
        tx.send_replace(Arc::from("{}"));
        shutdown.cancel();
        assert!(
            matches!(events.next().now_or_never(), Some(None)),
            "shutdown ends the stream at once"
        );
    }

    #[tokio::test]
    async fn the_stream_ends_when_the_sampler_is_gone() {
        let (tx, rx) = watch::channel(Arc::<str>::from("{}"));
        let mut events = Box::pin(snapshots(rx, CancellationToken::new()));
        assert!(events.next().now_or_never().flatten().is_some());
        drop(tx);
        assert!(matches!(events.next().now_or_never(), Some(None)));
    }
}
