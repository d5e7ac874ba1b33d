//! Accepting and serving connections, with the limits that protect the server from its clients.
//!
//! - At most `--max-connections` are open at once. The next one is not accepted until one
//!   closes: it waits in the kernel's listen backlog, costing this process nothing (a limit on
//!   requests, such as tower's `ConcurrencyLimit`, would still let every connection in, each
//!   with its buffers).
//! - Each connection is hyper's HTTP/1 with a cap on the request head (`--max-header-bytes`,
//!   431 beyond it) and a time limit for sending it (`--header-read-timeout`), which also ends
//!   idle kept-alive connections: a client that opens connections and stalls (slowloris) holds
//!   each slot only that long.
//! - On shutdown: stop accepting, let each connection finish the request it is serving (its
//!   response body included), and close the others at once, idle or stalled in a request head,
//!   rather than waiting up to `--header-read-timeout` for them.
//!
//! It knows nothing of the routes: it serves whatever [`axum::Router`] it is given.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// Limits on connections (from [`crate::Config`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most open connections.
    pub max_connections: usize,
    /// Longest time to send a request head, or to stay idle between requests.
    pub header_read_timeout: Duration,
    /// Largest request head in bytes.
    pub max_header_bytes: usize,
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests and returns once all are closed.
pub async fn serve_connections(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let service = TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        // A slot first, then accept: at the limit, new connections wait in the backlog.
        let slot = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let tcp = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Small request/response pairs: don't let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
        let in_flight = InFlight::default();
        let counted = {
            let (service, in_flight) = (service.clone(), in_flight.clone());
            hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let guard = in_flight.enter();
                let answer = service.call(req);
                async move {
                    let resp = match answer.await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    };
                    // Counted until the body is sent (or dropped), not just the head.
                    Ok::<_, Infallible>(resp.map(|body| {
                        Body::new(Counted {
                            body,
                            _guard: guard,
                        })
                    }))
                }
            })
        };
        let conn = http.serve_connection(TokioIo::new(tcp), counted);
        let stop = stop.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            let _slot = slot;
            let _open = metrics.connection_opened();
            tokio::pin!(conn);
            let result = tokio::select! {
                result = conn.as_mut() => result,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    if in_flight.is_idle() {
                        // Idle, or stalled in a request head: nothing to finish.
                        Ok(())
                    } else {
                        conn.await
                    }
                }
            };
            if let Err(e) = result {
                // Timeouts, oversized heads, resets: the client's doing, not worth more.
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
}

/// Requests of one connection not yet fully answered.
#[derive(Clone, Default)]
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.0.clone())
    }

    fn is_idle(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }
}

/// One request in [`InFlight`], until dropped.
struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted in flight until it is sent or dropped.
struct Counted {
    body: Body,
    _guard: InFlightGuard,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
