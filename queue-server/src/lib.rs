//! `queue-server`: a work-queue broker speaking kuard's MemQ API (`/memq/server/...`), made safe
//! for real work with leases, acks, dead letters, long polling and batches.
//!
//! A tour, from the wire down:
//! - [`http`]: axum routes of API.md; parse, call the store, shape the answer.
//! - [`store`]: where queues live and how waiters are woken; the memory backend for now.
//! - [`broker`]: the rules of one queue (FIFO, leases to the front on expiry, attempts, dead
//!   letters, dedup keys, delays), plain data structures with time passed in.
//! - [`kube`]: consumer Jobs through the Kubernetes API (`/jobs`) and the autoscaler that
//!   launches them by queue depth; it only reads the store's stats.
//! - [`metrics`]: Prometheus exposition; [`config`]: flags; [`error`]: the JSON errors.
//!
//! [`serve`] takes a bound listener and a shutdown future, so tests run the real server on
//! `127.0.0.1:0`; [`testing::TestServer`] does exactly that.

pub mod broker;
pub mod config;
pub mod error;
pub mod http;
pub mod kube;
pub mod metrics;
pub mod store;
pub mod telemetry;
pub mod testing;

use std::future::Future;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, LogFormat};
pub use error::Error;

/// Serves the queue API on `listener` until `shutdown` resolves, then stops accepting, lets
/// requests in flight finish (long polls answer at once) and returns.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let store = store::Store::new(config.default_lease.as_millis() as u64, cancel.clone());
    let metrics = Arc::new(metrics::Metrics::new(store.clone()));
    let jobs = kube::Jobs::start(&config).await?;
    let autoscaler = match (&jobs, config.autoscale) {
        (kube::Jobs::Ready(launcher), true) => {
            let autoscaler = kube::Autoscaler::new(kube::Launcher::clone(launcher), store.clone());
            Some(tokio::spawn(
                autoscaler.run(config.autoscale_interval, cancel.clone()),
            ))
        }
        (kube::Jobs::Unavailable(why), true) => {
            tracing::warn!(reason = %why, "--autoscale given but consumer Jobs are unavailable: autoscaler off");
            None
        }
        _ => None,
    };
    let state = http::AppState {
        store: store.clone(),
        config: Arc::new(config),
        metrics,
        jobs,
    };
    let router = http::app(state);

    let sweeper = tokio::spawn(store.clone().run_sweeper());
    tracing::info!(%addr, "queue server listening");
    let listener = listener.tap_io(|tcp| {
        // Small request/response pairs: don't let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
    });
    let stopping = cancel.clone();
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            stopping.cancel();
        })
        .await;
    cancel.cancel();
    sweeper.await?;
    if let Some(autoscaler) = autoscaler {
        autoscaler.await?;
    }
    tracing::info!("queue server stopped");
    Ok(result?)
}
