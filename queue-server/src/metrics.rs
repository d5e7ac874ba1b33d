//! Prometheus metrics: per-queue gauges and counters taken from the store's stats at scrape time
//! (the hot path pays nothing for them), a request-latency histogram per route, and beside it
//! the idle wait of long polls, which is not latency.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::http::Method;
use foldhash::fast::RandomState;
use parking_lot::{Mutex, RwLock};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Arc<Requests>,
    connections: Gauge,
    /// Long polls waiting now, set from the store at each scrape.
    long_polls: Gauge,
    /// What the autoscaler did, counted by its loop.
    autoscaler: AutoscalerMetrics,
    /// The stats of the scrape being encoded (a scrape fetches them first, asynchronously).
    queues: Arc<Mutex<Scrape>>,
    /// One scrape encodes at a time, so each sees its own stats.
    scrape: Mutex<()>,
    /// The serving certificate's notAfter in unix seconds; [`NO_CERTIFICATE`] without TLS.
    certificate_not_after: Arc<AtomicI64>,
    tokens: TokenMetrics,
}

/// [`Metrics::certificate_not_after`] while no certificate is served: the gauge is absent.
pub const NO_CERTIFICATE: i64 = i64::MIN;

impl Metrics {
    /// An empty set of metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Arc::new(Requests::default());
        registry.register_collector(Box::new(RequestCollector(requests.clone())));
        let connections = Gauge::default();
        registry.register(
            "memq_http_open_connections",
            "Client connections open now (at most --max-connections)",
            connections.clone(),
        );
        let long_polls = Gauge::default();
        registry.register(
            "memq_long_polls_waiting",
            "Dequeues waiting now for an item to arrive (long polls with ?wait=; this replica's with --redis)",
            long_polls.clone(),
        );
        let autoscaler = AutoscalerMetrics::default();
        registry.register(
            "memq_autoscaler_passes",
            "Autoscaler passes, by result: ok, or error (the Kubernetes API failed; retried with backoff)",
            autoscaler.passes.clone(),
        );
        registry.register(
            "memq_autoscaler_launched_jobs",
            "Consumer Jobs the autoscaler launched",
            autoscaler.launched_jobs.clone(),
        );
        let tokens = TokenMetrics::default();
        registry.register(
            "memq_tokens",
            "Bearer tokens accepted now (--tokens-file entries, plus one for --token)",
            tokens.count.clone(),
        );
        registry.register(
            "memq_tokens_file_reloads",
            "Changes of --tokens-file seen, by result: loaded, or kept (it did not parse; the tokens before stay)",
            tokens.reloads.clone(),
        );
        let build = Family::<Vec<(&'static str, String)>, Gauge>::default();
        build
            .get_or_create(&crate::version::labels().to_vec())
            .set(1);
        registry.register(
            "memq_build_info",
            "This build, always 1: its release, git commit, and the data directory format and Redis key layout it writes",
            build,
        );
        let queues = Arc::new(Mutex::new(Scrape::default()));
        registry.register_collector(Box::new(QueueCollector {
            queues: queues.clone(),
        }));
        let certificate_not_after = Arc::new(AtomicI64::new(NO_CERTIFICATE));
        registry.register_collector(Box::new(CertificateCollector(
            certificate_not_after.clone(),
        )));
        Self {
            registry,
            requests,
            connections,
            long_polls,
            autoscaler,
            queues,
            scrape: Mutex::new(()),
            certificate_not_after,
            tokens,
        }
    }

    /// Sets `memq_long_polls_waiting` (before a scrape renders it).
    pub fn set_long_polls(&self, waiting: u64) {
        self.long_polls
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    /// `memq_tls_certificate_expiry_timestamp_seconds`: the TLS setup stores the served
    /// certificate's notAfter here (unix seconds), at start and on every reload.
    pub fn certificate_not_after(&self) -> Arc<AtomicI64> {
        self.certificate_not_after.clone()
    }

    /// `memq_tokens` and `memq_tokens_file_reloads_total`, for the tokens file's watch.
    pub fn tokens(&self) -> TokenMetrics {
        self.tokens.clone()
    }

    /// The autoscaler's counters, for its loop to update.
    pub fn autoscaler(&self) -> AutoscalerMetrics {
        self.autoscaler.clone()
    }

    /// Records one answered request: its method, route pattern (`/memq/server/queues/{queue}`,
    /// never the raw path), status and time taken; and for a long poll, the time of `elapsed`
    /// it waited idle for an item, which is recorded on its own and not as the request's.
    pub fn observe(
        &self,
        method: &Method,
        route: &str,
        status: u16,
        elapsed: Duration,
        waited: Option<Duration>,
    ) {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        if let Some(waited) = waited {
            let outcome = match status {
                200 => "items",
                204 => "empty",
                _ => "error",
            };
            self.requests.waits.record(route, outcome, ns(waited));
        }
        let busy = elapsed.saturating_sub(waited.unwrap_or_default());
        self.requests
            .durations
            .record(route, (method.clone(), status), ns(busy));
    }

    /// Counts an open connection until the returned guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections.inc();
        OpenConnection(self.connections.clone())
    }

    /// The exposition text, with per-queue figures from `stats` and the items' memory
    /// (`(held, limit)` bytes, `u64::MAX` for no limit; `None` when the store does not count it).
    pub fn render(
        &self,
        stats: Vec<memq::QueueStats>,
        memory: Option<(u64, u64)>,
    ) -> Result<String, std::fmt::Error> {
        let _one_at_a_time = self.scrape.lock();
        *self.queues.lock() = Scrape { stats, memory };
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        *self.queues.lock() = Scrape::default();
        Ok(out)
    }
}

/// Upper bounds of `memq_http_request_duration_seconds`, in nanoseconds (`+Inf` follows): from
/// 100 µs doubling to ~105 s, past the default `--request-timeout` (60 s), so that even the
/// slowest answer the server allows falls in a bucket of its own.
const REQUEST_BOUNDS: [u64; 21] = {
    let mut bounds = [0; 21];
    let mut i = 0;
    while i < bounds.len() {
        bounds[i] = 100_000 << i;
        i += 1;
    }
    bounds
};

/// Upper bounds of `memq_long_poll_wait_seconds`, in nanoseconds, up to the longest `wait`
/// (`memq::limits::MAX_WAIT`, 60 s).
const WAIT_BOUNDS: [u64; 13] = {
    const MS: u64 = 1_000_000;
    [
        MS,
        5 * MS,
        10 * MS,
        50 * MS,
        100 * MS,
        500 * MS,
        1_000 * MS,
        2_000 * MS,
        5_000 * MS,
        10_000 * MS,
        20_000 * MS,
        30_000 * MS,
        60_000 * MS,
    ]
};

/// A histogram family labelled by route pattern and a small key (method and status, or an
/// outcome). It is recorded on every request, so it takes no lock beyond a shared read of the
/// series table, and counts in relaxed atomics (prometheus-client's `Family<_, Histogram>`
/// wants owned label strings to look a series up, and locks a mutex per observation).
#[derive(Debug)]
struct Histograms<K> {
    bounds: &'static [u64],
    /// Route pattern -> one series per key seen on it.
    routes: RwLock<HashMap<Box<str>, Vec<Series<K>>, RandomState>>,
}

impl<K: PartialEq> Histograms<K> {
    fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            routes: RwLock::default(),
        }
    }

    fn record(&self, route: &str, key: K, ns: u64) {
        let find = |list: &[Series<K>]| list.iter().position(|s| s.key == key);
        {
            let routes = self.routes.read();
            if let Some(list) = routes.get(route)
                && let Some(i) = find(list)
            {
                list[i].record(self.bounds, ns);
                return;
            }
        }
        // First observation of its kind: add its series.
        let mut routes = self.routes.write();
        let list = routes.entry(route.into()).or_default();
        let i = find(list).unwrap_or_else(|| {
            let counts = (0..=self.bounds.len()).map(|_| AtomicU64::new(0)).collect();
            list.push(Series {
                key,
                counts,
                sum_ns: AtomicU64::new(0),
            });
            list.len() - 1
        });
        list[i].record(self.bounds, ns);
    }

    /// Writes the family, each series labelled as `labels` says from its route and key.
    fn encode(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        labels: impl Fn(&str, &K) -> Vec<(&'static str, String)>,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        let routes = self.routes.read();
        for (route, list) in routes.iter() {
            for s in list {
                let labels = labels(route, &s.key);
                let bounds = self.bounds.iter().map(|&ns| ns as f64 / 1e9);
                let buckets: Vec<(f64, u64)> = bounds
                    .chain([f64::INFINITY])
                    .zip(s.counts.iter().map(|c| c.load(Ordering::Relaxed)))
                    .collect();
                let count = buckets.iter().map(|(_, n)| n).sum();
                let sum = s.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
                family
                    .encode_family(&labels)?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Series<K> {
    key: K,
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl<K> Series<K> {
    fn record(&self, bounds: &[u64], ns: u64) {
        let bucket = bounds.partition_point(|&bound| bound < ns);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// `memq_http_request_duration_seconds` by method, route and status, and
/// `memq_long_poll_wait_seconds` by route and outcome.
#[derive(Debug)]
struct Requests {
    durations: Histograms<(Method, u16)>,
    waits: Histograms<&'static str>,
}

impl Default for Requests {
    fn default() -> Self {
        Self {
            durations: Histograms::new(&REQUEST_BOUNDS),
            waits: Histograms::new(&WAIT_BOUNDS),
        }
    }
}

#[derive(Debug)]
struct RequestCollector(Arc<Requests>);

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.0.durations.encode(
            &mut encoder,
            "memq_http_request_duration_seconds",
            "Time to answer an HTTP request, less the time a long poll waited idle for an item (memq_long_poll_wait_seconds)",
            |route, (method, status)| {
                vec![
                    ("method", method.as_str().to_owned()),
                    ("route", route.to_owned()),
                    ("status", status.to_string()),
                ]
            },
        )?;
        self.0.waits.encode(
            &mut encoder,
            "memq_long_poll_wait_seconds",
            "Time a long poll (?wait=) waited idle for an item, by how it ended: items, empty (204: the wait ran out, the queue was paused or finished) or error",
            |route, outcome| {
                vec![
                    ("route", route.to_owned()),
                    ("outcome", (*outcome).to_owned()),
                ]
            },
        )
    }
}

/// `memq_autoscaler_passes_total{result}` and `memq_autoscaler_launched_jobs_total`. Cheap to
/// clone: clones count into the same series.
#[derive(Debug, Clone, Default)]
pub struct AutoscalerMetrics {
    passes: Family<[(&'static str, &'static str); 1], Counter>,
    launched_jobs: Counter,
}

impl AutoscalerMetrics {
    /// Counts one finished pass, `ok` or not.
    pub fn pass(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.passes.get_or_create(&[("result", result)]).inc();
    }

    /// Counts one launched Job.
    pub fn launched(&self) {
        self.launched_jobs.inc();
    }
}

/// `memq_tokens` and `memq_tokens_file_reloads_total{result}`. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct TokenMetrics {
    count: Gauge,
    reloads: Family<[(&'static str, &'static str); 1], Counter>,
}

impl TokenMetrics {
    /// Sets how many tokens are accepted now.
    pub fn accepted(&self, tokens: usize) {
        self.count.set(i64::try_from(tokens).unwrap_or(i64::MAX));
    }

    /// Counts one change of the file: `loaded`, or `kept` (it did not parse).
    pub fn reloaded(&self, loaded: bool) {
        let result = if loaded { "loaded" } else { "kept" };
        self.reloads.get_or_create(&[("result", result)]).inc();
    }
}

/// One open connection in `memq_http_open_connections`, until dropped.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `memq_tls_certificate_expiry_timestamp_seconds`, only while a certificate is served.
#[derive(Debug)]
struct CertificateCollector(Arc<AtomicI64>);

impl Collector for CertificateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let not_after = self.0.load(Ordering::Relaxed);
        if not_after == NO_CERTIFICATE {
            return Ok(());
        }
        let family = encoder.encode_descriptor(
            "memq_tls_certificate_expiry_timestamp_seconds",
            "When the TLS certificate served to new connections expires (its notAfter), in unix seconds",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(not_after).encode(family)
    }
}

/// What one scrape reads from the store.
#[derive(Debug, Default)]
struct Scrape {
    stats: Vec<memq::QueueStats>,
    memory: Option<(u64, u64)>,
}

struct QueueCollector {
    queues: Arc<Mutex<Scrape>>,
}

impl std::fmt::Debug for QueueCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QueueCollector")
    }
}

impl Collector for QueueCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let scrape = self.queues.lock();
        let stats = &scrape.stats;
        let (held, limit) = scrape.memory.map_or((None, None), |(held, limit)| {
            (Some(held), (limit != u64::MAX).then_some(limit))
        });
        let memory = [
            (
                "memq_item_memory_bytes",
                "What the items of all queues and their dedup keys count for --max-memory (bodies, keys and bookkeeping)",
                held,
            ),
            (
                "memq_item_memory_limit_bytes",
                "--max-memory in bytes (absent when there is no limit)",
                limit,
            ),
        ];
        for (name, help, value) in memory {
            let Some(value) = value else { continue };
            let family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            ConstGauge::new(value as i64).encode(family)?;
        }
        type Get = fn(&memq::QueueStats) -> u64;
        let gauges: [(&str, &str, Get); 6] = [
            ("memq_queue_depth", "Ready items", |s| s.depth),
            ("memq_queue_inflight", "Leased items not yet acked", |s| {
                s.inflight
            }),
            ("memq_queue_delayed", "Items waiting for their delay", |s| {
                s.delayed
            }),
            ("memq_queue_dead", "Items in the dead letters", |s| s.dead),
            (
                "memq_queue_consumers",
                "Named consumers (X-Memq-Consumer) holding leases",
                |s| s.consumers,
            ),
            (
                "memq_queue_retained_keys",
                "Dedup keys kept after their item left (--dedup-window)",
                |s| s.retained_keys,
            ),
        ];
        for (name, help, get) in gauges {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for s in stats.iter() {
                let labels = [("queue", s.name.as_str())];
                ConstGauge::new(get(s) as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        // Memory store only: Redis's own memory holds its keys.
        if stats.iter().any(|s| s.retained_key_bytes.is_some()) {
            let mut family = encoder.encode_descriptor(
                "memq_queue_retained_key_bytes",
                "What the dedup keys kept after their item left count for --max-memory",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for s in stats.iter() {
                let Some(bytes) = s.retained_key_bytes else {
                    continue;
                };
                let labels = [("queue", s.name.as_str())];
                ConstGauge::new(bytes as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        let counters: [(&str, &str, Get); 5] = [
            ("memq_queue_enqueued", "Items added", |s| s.enqueued),
            (
                "memq_queue_dequeued",
                "Items handed out (kuard dequeues and leases)",
                |s| s.dequeued,
            ),
            ("memq_queue_acked", "Items acked", |s| s.acked),
            (
                "memq_queue_requeued",
                "Items put back by lease expiry or nack",
                |s| s.requeued,
            ),
            ("memq_queue_drained", "Items dropped by drain", |s| {
                s.drained
            }),
        ];
        for (name, help, get) in counters {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for s in stats.iter() {
                let labels = [("queue", s.name.as_str())];
                ConstCounter::new(get(s)).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut oldest = encoder.encode_descriptor(
            "memq_queue_oldest_age_seconds",
            "Age of the oldest ready item",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for s in stats.iter() {
            let labels = [("queue", s.name.as_str())];
            ConstGauge::new(s.oldest_age_seconds).encode(oldest.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_latency_is_a_cumulative_histogram_per_method_route_and_status() {
        let metrics = Metrics::new();
        let route = "/memq/server/queues/{queue}/enqueue";
        let observe = |status, d| metrics.observe(&Method::POST, route, status, d, None);
        observe(200, Duration::from_micros(100));
        observe(200, Duration::from_micros(101));
        observe(200, Duration::from_secs(10));
        observe(200, Duration::from_secs(100));
        observe(200, Duration::from_secs(200));
        observe(404, Duration::from_micros(50));
        let text = metrics.render(Vec::new(), None).unwrap();
        let labels = format!("method=\"POST\",route=\"{route}\",status=\"200\"");
        for line in [
            "# TYPE memq_http_request_duration_seconds histogram".to_string(),
            format!("memq_http_request_duration_seconds_count{{{labels}}} 5"),
            format!("memq_http_request_duration_seconds_sum{{{labels}}} 310.000201"),
            format!("memq_http_request_duration_seconds_bucket{{le=\"0.0001\",{labels}}} 1"),
            format!("memq_http_request_duration_seconds_bucket{{le=\"0.0002\",{labels}}} 2"),
            format!("memq_http_request_duration_seconds_bucket{{le=\"3.2768\",{labels}}} 2"),
            format!("memq_http_request_duration_seconds_bucket{{le=\"13.1072\",{labels}}} 3"),
            // The longest request --request-timeout allows by default (60 s) has a bucket.
            format!("memq_http_request_duration_seconds_bucket{{le=\"104.8576\",{labels}}} 4"),
            format!("memq_http_request_duration_seconds_bucket{{le=\"+Inf\",{labels}}} 5"),
            format!(
                "memq_http_request_duration_seconds_count{{method=\"POST\",route=\"{route}\",status=\"404\"}} 1"
            ),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }

    #[test]
    fn a_long_polls_idle_wait_is_kept_out_of_its_latency_and_counted_by_outcome() {
        let metrics = Metrics::new();
        let route = "/memq/server/queues/{queue}/dequeue";
        let s = Duration::from_secs;
        metrics.observe(
            &Method::POST,
            route,
            204,
            s(4),
            Some(s(4) - Duration::from_millis(1)),
        );
        metrics.observe(&Method::POST, route, 200, s(2), Some(s(1)));
        metrics.observe(
            &Method::POST,
            route,
            200,
            Duration::from_micros(150),
            Some(Duration::ZERO),
        );
        let text = metrics.render(Vec::new(), None).unwrap();
        let busy = |status| format!("method=\"POST\",route=\"{route}\",status=\"{status}\"");
        let wait = |outcome| format!("route=\"{route}\",outcome=\"{outcome}\"");
        for line in [
            "# TYPE memq_long_poll_wait_seconds histogram".to_string(),
            format!(
                "memq_http_request_duration_seconds_sum{{{}}} 0.001",
                busy(204)
            ),
            format!(
                "memq_http_request_duration_seconds_bucket{{le=\"0.0016\",{}}} 1",
                busy(204)
            ),
            format!(
                "memq_http_request_duration_seconds_sum{{{}}} 1.00015",
                busy(200)
            ),
            format!(
                "memq_http_request_duration_seconds_count{{{}}} 2",
                busy(200)
            ),
            format!("memq_long_poll_wait_seconds_count{{{}}} 1", wait("empty")),
            format!("memq_long_poll_wait_seconds_sum{{{}}} 3.999", wait("empty")),
            format!(
                "memq_long_poll_wait_seconds_bucket{{le=\"2.0\",{}}} 0",
                wait("empty")
            ),
            format!(
                "memq_long_poll_wait_seconds_bucket{{le=\"5.0\",{}}} 1",
                wait("empty")
            ),
            format!(
                "memq_long_poll_wait_seconds_bucket{{le=\"0.001\",{}}} 1",
                wait("items")
            ),
            format!(
                "memq_long_poll_wait_seconds_bucket{{le=\"1.0\",{}}} 2",
                wait("items")
            ),
            format!(
                "memq_long_poll_wait_seconds_bucket{{le=\"60.0\",{}}} 2",
                wait("items")
            ),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
    }
}
