//! The server's configuration: one struct, built from flags and `MEMQ_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::store::journal::FsyncMode;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors in clusters.
    Json,
}

/// queue-server: a work-queue broker with kuard's MemQ API, leases, acks, dead letters and long polling.
#[derive(Debug, Clone, Parser)]
#[command(version, about, long_about = None)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "MEMQ_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Bearer token every request must carry (except /healthz, /readyz, /metrics).
    #[arg(long, env = "MEMQ_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// With --token: let stats, queue objects and the dashboard be read without the token.
    #[arg(long, env = "MEMQ_PUBLIC_READS")]
    pub public_reads: bool,

    /// Largest single item, in bytes.
    #[arg(long, env = "MEMQ_MAX_ITEM_BYTES", default_value_t = 1 << 20)]
    pub max_item_bytes: usize,

    /// Largest request body (a whole batch), in bytes.
    #[arg(long, env = "MEMQ_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    pub max_body_bytes: usize,

    /// Lease length of new queues that do not set leaseSeconds (e.g. 30s, 2m).
    #[arg(long, env = "MEMQ_DEFAULT_LEASE", default_value = "30s", value_parser = parse_lease)]
    pub default_lease: Duration,

    /// Log format.
    #[arg(long, env = "MEMQ_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Keep queues durable in this directory (journal + snapshots); without it, queues live in
    /// memory only and a restart loses them.
    #[arg(long, env = "MEMQ_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// With --data-dir: when a change counts as stored: `always` (synced to disk before the
    /// answer; concurrent requests share one sync), `interval=10ms` (written before the answer,
    /// synced that often) or `never` (left to the OS).
    #[arg(long, env = "MEMQ_FSYNC", default_value = "always")]
    pub fsync: FsyncMode,

    /// With --data-dir: journal bytes after which a snapshot replaces the older journal.
    #[arg(long, env = "MEMQ_COMPACT_BYTES", default_value_t = 64 << 20)]
    pub compact_bytes: u64,
    /// Launch, list and delete consumer Jobs through the Kubernetes API (GET/POST/DELETE /jobs);
    /// in-cluster config in a pod, kubeconfig otherwise.
    #[arg(long, env = "MEMQ_JOBS")]
    pub jobs: bool,

    /// Template of the consumer Jobs: YAML of one batch/v1 Job (default: a built-in one
    /// running --consumer-image).
    #[arg(long, env = "MEMQ_JOB_TEMPLATE", value_name = "FILE")]
    pub job_template: Option<PathBuf>,

    /// Image of the built-in consumer Job template (when no --job-template is given).
    #[arg(long, env = "MEMQ_CONSUMER_IMAGE", default_value = DEFAULT_CONSUMER_IMAGE)]
    pub consumer_image: String,

    /// Namespace of the consumer Jobs (default: the kube config's; in a pod, its own).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,

    /// This server's URL as launched consumers reach it (given to them as --server).
    #[arg(long, env = "MEMQ_SERVER_URL", default_value = DEFAULT_SERVER_URL)]
    pub server_url: String,

    /// Launch consumer Jobs by queue depth for queues that opt in with
    /// {"autoscale":{"maxParallelism":N,"itemsPerPod":M}} (needs --jobs).
    #[arg(long, env = "MEMQ_AUTOSCALE", requires = "jobs")]
    pub autoscale: bool,

    /// How often the autoscaler looks at the queues (e.g. 10s, 1m).
    #[arg(long, env = "MEMQ_AUTOSCALE_INTERVAL", default_value = "10s", value_parser = parse_interval)]
    pub autoscale_interval: Duration,

    /// Keep the queues in Redis (or Valkey), shared by every replica that names the same
    /// Redis: redis://[:password@]host:6379/0, or rediss:// for TLS.
    #[arg(
        long,
        env = "MEMQ_REDIS",
        hide_env_values = true,
        conflicts_with = "data_dir"
    )]
    pub redis: Option<String>,

    /// With --redis: prefix of every key and channel (several deployments can share one Redis).
    #[arg(long, env = "MEMQ_REDIS_PREFIX", default_value = "memq")]
    pub redis_prefix: String,

    /// The Kubernetes API to use instead of inferring one (tests, embedders); no flag.
    #[arg(skip)]
    pub kube_config: Option<::kube::Config>,
}

/// Image of the built-in consumer Job template.
pub const DEFAULT_CONSUMER_IMAGE: &str = "memq-rs:0.1.0";

/// The queue server's URL inside the cluster: the Service `queue` of manifests/base.
pub const DEFAULT_SERVER_URL: &str = "http://queue:8080/memq/server";

fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = memq::duration::parse_duration(text)?;
    if d < Duration::from_millis(10) {
        return Err("the autoscale interval must be at least 10ms".into());
    }
    Ok(d)
}

fn parse_lease(text: &str) -> Result<Duration, String> {
    let d = memq::duration::parse_duration(text)?;
    if d.as_secs() < 1 || d.subsec_nanos() != 0 {
        return Err("the default lease must be a whole number of seconds, at least 1".into());
    }
    Ok(d)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            public_reads: false,
            max_item_bytes: 1 << 20,
            max_body_bytes: 64 << 20,
            default_lease: Duration::from_secs(30),
            log_format: LogFormat::Text,
            data_dir: None,
            fsync: FsyncMode::Always,
            compact_bytes: 64 << 20,
            jobs: false,
            job_template: None,
            consumer_image: DEFAULT_CONSUMER_IMAGE.into(),
            namespace: None,
            server_url: DEFAULT_SERVER_URL.into(),
            autoscale: false,
            autoscale_interval: Duration::from_secs(10),
            kube_config: None,
            redis: None,
            redis_prefix: "memq".into(),
        }
    }
}
