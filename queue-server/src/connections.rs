//! Accepting and serving connections, with the limits that protect the server from its clients.
//!
//! - At most `--max-connections` are open at once. The next one is not accepted until one
//!   closes: it waits in the kernel's listen backlog, costing this process nothing (a limit on
//!   requests, such as tower's `ConcurrencyLimit`, would still let every connection in, each
//!   with its buffers).
//! - Each connection is hyper's HTTP/1 with a cap on the request head (`--max-header-bytes`,
//!   431 beyond it). A connection that serves no request for `--header-read-timeout` (idle
//!   between requests, or stalled while sending a request head) is closed: a client that opens
//!   connections and stalls (slowloris) holds each slot only that long. One timer per
//!   connection watches this, re-armed only when it fires, rather than hyper's header timer,
//!   which is armed and dropped around every request (an allocation and two timer-wheel
//!   updates each time, ~5% of a small request's cost).
//! - On shutdown: stop accepting, let each connection finish the request it is serving (its
//!   response body included), and close the others at once, idle or stalled in a request head,
//!   rather than waiting up to `--header-read-timeout` for them.
//!
//! - With `--tls-cert`, each connection's task runs the TLS handshake first, within
//!   `--header-read-timeout`; one that fails (plain HTTP, garbage, a client that does not trust
//!   the certificate) ends that connection only, logged at debug.
//!
//! It knows nothing of the routes: it serves whatever handler it is given.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use futures_util::FutureExt;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
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

/// Serves `handler` on `listener` until `shutdown` resolves, then lets open connections finish
/// their requests and returns once all are closed.
pub async fn serve_connections<H, F>(
    listener: TcpListener,
    handler: H,
    limits: Limits,
    metrics: Arc<Metrics>,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(hyper::Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = axum::response::Response> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut http = http1::Builder::new();
    http.max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let http = Arc::new(http);
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
        let (http, handler, stop) = (http.clone(), handler.clone(), stop.clone());
        let (metrics, tls) = (metrics.clone(), tls.clone());
        let idle_limit = limits.header_read_timeout;
        connections.spawn(async move {
            let _slot = slot;
            let _open = metrics.connection_opened();
            let Some(tls) = tls else {
                return serve_one(&http, tcp, handler, idle_limit, stop).await;
            };
            // In this connection's task, never the accept loop: a client that stalls or
            // speaks something else ends only its own connection. The handshake gets the time
            // a request head gets.
            let handshake = tokio::select! {
                done = tokio::time::timeout(idle_limit, tls.accept(tcp)) => done,
                _ = stop.cancelled() => return,
            };
            match handshake {
                Ok(Ok(stream)) => serve_one(&http, stream, handler, idle_limit, stop).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => {
                    tracing::debug!("closing a connection that did not finish its TLS handshake within --header-read-timeout");
                }
            }
        });
    }
    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
}

/// Serves HTTP/1 on one connection (plain or TLS) until it closes, it idles past
/// `idle_limit`, or `stop` (then it finishes the request it is serving).
async fn serve_one<I, H, F>(
    http: &http1::Builder,
    io: I,
    handler: H,
    idle_limit: Duration,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Fn(hyper::Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = axum::response::Response> + Send + 'static,
{
    let in_flight = InFlight::new();
    let counted = {
        let in_flight = in_flight.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            counted(handler(req), in_flight.enter())
        })
    };
    let conn = http.serve_connection(TokioIo::new(io), counted);
    tokio::pin!(conn);
    let mut check_at = Instant::now() + idle_limit;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = tokio::time::sleep_until(check_at) => {
                match in_flight.idle_until(idle_limit) {
                    // Serving: each request has its own time limit (--request-timeout).
                    None => check_at = Instant::now() + idle_limit,
                    Some(until) if until > Instant::now() => check_at = until,
                    Some(_) => {
                        tracing::debug!("closing a connection that sent no request for --header-read-timeout");
                        break Ok(());
                    }
                }
            }
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                break if in_flight.is_idle() {
                    // Idle, or stalled in a request head: nothing to finish.
                    Ok(())
                } else {
                    conn.await
                };
            }
        }
    };
    if let Err(e) = result {
        // Timeouts, oversized heads, resets: the client's doing, not worth more.
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The answer of `request`, counted in flight by `guard` until its body is sent (or dropped),
/// not just its head; the body handed to hyper as it is (a boxed one would cost an allocation
/// per request).
///
/// A combinator, not an `async move` block that awaits `request`: that would hold the request's
/// future twice (captured, then awaited), and hyper keeps this future for as long as the request
/// runs, a long poll's whole wait.
fn counted<F>(
    request: F,
    guard: InFlightGuard,
) -> impl Future<Output = Result<hyper::Response<Counted>, Infallible>>
where
    F: Future<Output = axum::response::Response>,
{
    request.map(move |resp| {
        Ok(resp.map(|body| Counted {
            body,
            _guard: guard,
        }))
    })
}

/// Requests of one connection not yet fully answered, and since when it has had none.
#[derive(Clone)]
struct InFlight(Arc<InFlightState>);

struct InFlightState {
    /// Requests not yet fully answered.
    count: AtomicUsize,
    /// When the count last fell to 0 (or the connection was accepted), in µs after `epoch`.
    idle_since_us: AtomicU64,
    epoch: Instant,
}

impl InFlight {
    fn new() -> Self {
        Self(Arc::new(InFlightState {
            count: AtomicUsize::new(0),
            idle_since_us: AtomicU64::new(0),
            epoch: Instant::now(),
        }))
    }

    fn enter(&self) -> InFlightGuard {
        self.0.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.0.clone())
    }

    fn is_idle(&self) -> bool {
        self.0.count.load(Ordering::Acquire) == 0
    }

    /// `None` while a request is being served; else when the connection will have been
    /// without one for `limit`.
    fn idle_until(&self, limit: Duration) -> Option<Instant> {
        if !self.is_idle() {
            return None;
        }
        let since = Duration::from_micros(self.0.idle_since_us.load(Ordering::Acquire));
        Some(self.0.epoch + since + limit)
    }
}

/// One request in [`InFlight`], until dropped.
struct InFlightGuard(Arc<InFlightState>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let state = &self.0;
        if state.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            let us = u64::try_from(state.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
            state.idle_since_us.store(us, Ordering::Release);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// hyper holds a request's future for as long as it runs, a long poll's whole wait: counting
    /// it in flight must not hold it twice (10,000 long polls of a 4 kB future are 40 MB).
    #[test]
    fn counting_a_request_in_flight_does_not_hold_its_future_twice() {
        let request = async {
            let held = [7u8; 4096];
            tokio::task::yield_now().await;
            axum::response::Response::new(Body::from(held.to_vec()))
        };
        let alone = std::mem::size_of_val(&request);
        assert!(
            alone >= 4096,
            "the request's future holds its 4 kB: {alone}"
        );
        let answer = counted(request, InFlight::new().enter());
        let size = std::mem::size_of_val(&answer);
        assert!(
            size < alone + 64,
            "counted: {size} bytes for a request future of {alone}"
        );
    }
}
