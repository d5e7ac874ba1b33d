//! Prometheus metrics: per-queue gauges and counters taken from the store's stats at scrape time
//! (the hot path pays nothing for them), and a request-latency histogram per route.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use std::sync::Arc;

use parking_lot::Mutex;

/// Labels of the request histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: String,
    /// Route pattern (`/memq/server/queues/{queue}/enqueue`), never the raw path.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Histogram>,
    connections: Gauge,
    /// The stats of the scrape being encoded (a scrape fetches them first, asynchronously).
    queues: Arc<Mutex<Scrape>>,
    /// One scrape encodes at a time, so each sees its own stats.
    scrape: Mutex<()>,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s, doubling.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    /// An empty set of metrics.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "memq_http_request_duration_seconds",
            "Time to answer an HTTP request (long polls include their wait)",
            requests.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "memq_http_open_connections",
            "Client connections open now (at most --max-connections)",
            connections.clone(),
        );
        let queues = Arc::new(Mutex::new(Scrape::default()));
        registry.register_collector(Box::new(QueueCollector {
            queues: queues.clone(),
        }));
        Self {
            registry,
            requests,
            connections,
            queues,
            scrape: Mutex::new(()),
        }
    }

    /// Records one answered request.
    pub fn observe(&self, labels: RequestLabels, elapsed: Duration) {
        self.requests
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts an open connection until the returned guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections.inc();
        OpenConnection(self.connections.clone())
    }

    /// The exposition text, with per-queue figures from `stats` and the items' memory
    /// (`(held, limit)` bytes, `u64::MAX` for no limit).
    pub fn render(
        &self,
        stats: Vec<memq::QueueStats>,
        memory: (u64, u64),
    ) -> Result<String, std::fmt::Error> {
        let _one_at_a_time = self.scrape.lock();
        *self.queues.lock() = Scrape { stats, memory };
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        *self.queues.lock() = Scrape::default();
        Ok(out)
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

/// What one scrape reads from the store.
#[derive(Debug, Default)]
struct Scrape {
    stats: Vec<memq::QueueStats>,
    memory: (u64, u64),
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
        let (held, limit) = scrape.memory;
        let memory = [
            (
                "memq_item_memory_bytes",
                "What the items of all queues count for --max-memory (bodies plus bookkeeping)",
                Some(held),
            ),
            (
                "memq_item_memory_limit_bytes",
                "--max-memory in bytes (absent when there is no limit)",
                (limit != u64::MAX).then_some(limit),
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
        let gauges: [(&str, &str, Get); 4] = [
            ("memq_queue_depth", "Ready items", |s| s.depth),
            ("memq_queue_inflight", "Leased items not yet acked", |s| {
                s.inflight
            }),
            ("memq_queue_delayed", "Items waiting for their delay", |s| {
                s.delayed
            }),
            ("memq_queue_dead", "Items in the dead letters", |s| s.dead),
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
