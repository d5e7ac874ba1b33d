//! `queue-server`: a work-queue broker speaking kuard's MemQ API (`/memq/server/...`), made safe
//! for real work with leases, acks, dead letters, long polling and batches.
//!
//! A tour, from the wire down:
//! - [`http`]: axum routes of API.md; parse, call the store, shape the answer.
//! - [`store`]: where queues live and how waiters are woken: in this process (memory, with an
//!   optional journal) or in Redis, shared by several replicas.
//! - [`broker`]: the rules of one queue (FIFO, leases to the front on expiry, attempts, dead
//!   letters, dedup keys, delays), plain data structures with time passed in.
//! - [`dashboard`]: the browser page at `/`, its live stats stream and the history behind its
//!   charts, kept by a sampler task.
//! - [`kube`]: consumer Jobs through the Kubernetes API (`/jobs`) and the autoscaler that
//!   launches them by queue depth; it only reads the store's stats.
//! - [`connections`]: the accept loop and the limits that protect the server (connections,
//!   header size and time); [`tokens`]: who may do what (roles, queues); [`metrics`]:
//!   Prometheus exposition; [`config`]: flags; [`error`]: the JSON errors; [`tls`]: HTTPS, its
//!   certificate reloaded when the files change; [`version`]: the release, commit and stored
//!   formats of this build.
//!
//! [`serve`] takes a bound listener and a shutdown future, so tests run the real server on
//! `127.0.0.1:0`; `testing::TestServer` (feature `testing`, on for tests) does exactly that.

pub mod broker;
pub mod config;
pub mod connections;
pub mod dashboard;
pub mod error;
pub mod http;
pub mod kube;
pub mod metrics;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod tokens;
pub mod version;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, LogFormat};
pub use error::Error;

/// Serves the queue API on `listener` until `shutdown` resolves, then stops accepting, lets
/// requests in flight finish (long polls answer at once) and returns.
pub async fn serve(
    listener: TcpListener,
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    config.load_token_file()?;
    let tokens = Arc::new(tokens::Tokens::load(
        config.token.as_ref().map(config::Token::expose),
        config.tokens_file.as_deref(),
    )?);
    if !tokens.enabled() {
        tracing::warn!(
            "no --token or --tokens-file set: anyone who can reach this port can change the queues"
        );
    }
    let metrics = Arc::new(metrics::Metrics::new());
    // Before anything starts: a certificate that does not load stops the server here.
    let tls = match (config.tls_cert.clone(), config.tls_key.clone()) {
        (Some(cert), Some(key)) => Some(Arc::new(tls::Tls::load(
            tls::TlsFiles { cert, key },
            metrics.certificate_not_after(),
        )?)),
        (None, None) => None,
        _ => anyhow::bail!("give both --tls-cert and --tls-key, or neither"),
    };
    let max_memory = config.max_memory.resolve();
    let cancel = CancellationToken::new();
    let options = store::StoreOptions {
        default_lease_ms: config.default_lease.as_millis() as u64,
        data_dir: config.data_dir.clone(),
        fsync: config.fsync,
        compact_bytes: config.compact_bytes,
        redis: config.redis.clone().map(|url| store::RedisOptions {
            url,
            prefix: config.redis_prefix.clone(),
            cluster: config.redis_cluster,
        }),
        max_memory,
        max_queues: config.max_queues,
        key_retention_ms: config.dedup_window.as_millis() as u64,
    };
    let store = {
        let cancel = cancel.clone();
        tokio::task::spawn_blocking(move || store::Store::open(options, cancel)).await??
    };
    store.check_version().await?;
    let jobs = kube::Jobs::start(&config).await?;
    let (dashboard, sampler) = dashboard::Dashboard::new(store.clone(), cancel.clone()).await;
    let (autoscale, autoscale_interval) = (config.autoscale, config.autoscale_interval);
    let limits = connections::Limits {
        max_connections: config.max_connections as usize,
        header_read_timeout: config.header_read_timeout,
        max_header_bytes: config.max_header_bytes,
    };
    let state = http::AppState::new(http::Shared {
        store: store.clone(),
        config: Arc::new(config),
        metrics: metrics.clone(),
        dashboard,
        jobs: jobs.clone(),
        tokens: tokens.clone(),
    });
    let app = http::app(state);

    // After the last fallible step, so that an early return leaves no task behind.
    let background = tokio::spawn(store.clone().run_background());
    let sampler = tokio::spawn(sampler.run());
    let watcher = tokio::spawn(tokens.watch(metrics.tokens(), cancel.clone()));
    let autoscaler = match (&jobs, autoscale) {
        (kube::Jobs::Ready(launcher), true) => {
            let autoscaler = kube::Autoscaler::new(
                kube::Launcher::clone(launcher),
                store.clone(),
                metrics.autoscaler(),
            );
            Some(tokio::spawn(
                autoscaler.run(autoscale_interval, cancel.clone()),
            ))
        }
        (kube::Jobs::Unavailable(why), true) => {
            tracing::warn!(reason = %why, "--autoscale given but consumer Jobs are unavailable: autoscaler off");
            None
        }
        _ => None,
    };
    let reloader = tls
        .clone()
        .map(|tls| tokio::spawn(tls.reload_until(cancel.clone())));
    tracing::info!(
        %addr,
        scheme = if tls.is_some() { "https" } else { "http" },
        max_connections = limits.max_connections,
        max_memory = (max_memory != u64::MAX).then_some(max_memory),
        "queue server listening"
    );
    let stopping = cancel.clone();
    let handler = move |req| app.clone().handle(req);
    let acceptor = tls.map(|tls| tls.acceptor.clone());
    connections::serve_connections(listener, handler, limits, metrics, acceptor, async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        stopping.cancel();
    })
    .await;
    cancel.cancel();
    // All awaited before any failure is reported: no task outlives serve().
    let (background, sampled, watched) = (background.await, sampler.await, watcher.await);
    let scaled = match autoscaler {
        Some(task) => task.await,
        None => Ok(()),
    };
    let reloaded = match reloader {
        Some(task) => task.await,
        None => Ok(()),
    };
    store.close().await;
    background?;
    sampled?;
    watched?;
    scaled?;
    reloaded?;
    tracing::info!("queue server stopped");
    Ok(())
}
