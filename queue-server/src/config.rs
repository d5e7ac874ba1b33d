//! The server's configuration: one struct, built from flags and `MEMQ_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
pub use memq::logging::LogFormat;

use crate::store::journal::FsyncMode;

/// queue-server: a work-queue broker with kuard's MemQ API, leases, acks, dead letters and long polling.
#[derive(Debug, Clone, Parser)]
#[command(version = memq::version::VERSION, long_version = crate::version::long(), about, long_about = None)]
pub struct Config {
    /// Something to do instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on.
    #[arg(long, env = "MEMQ_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Bearer token every request must carry (except /healthz, /readyz, /metrics,
    /// /openapi.json).
    #[arg(
        long,
        env = "MEMQ_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<Token>,

    /// Read the bearer token from this file (e.g. a mounted Secret); surrounding whitespace is
    /// trimmed. Instead of --token.
    #[arg(long, env = "MEMQ_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Scoped tokens, one per line: `NAME ROLE QUEUES TOKEN` (roles reader, producer,
    /// consumer, admin; QUEUES a glob such as `keygen*`; TOKEN the secret or `sha256:HEX` of
    /// it). Re-read when it changes; a broken file keeps the last good tokens. With --token too,
    /// that one is an admin token beside them.
    #[arg(long, env = "MEMQ_TOKENS_FILE", value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,

    /// With --token: let stats, queue objects and the dashboard be read without the token.
    #[arg(long, env = "MEMQ_PUBLIC_READS")]
    pub public_reads: bool,

    /// Largest single item, in bytes.
    #[arg(long, env = "MEMQ_MAX_ITEM_BYTES", default_value_t = 1 << 20)]
    pub max_item_bytes: usize,

    /// Largest request body (a whole batch), in bytes.
    #[arg(long, env = "MEMQ_MAX_BODY_BYTES", default_value_t = 64 << 20)]
    pub max_body_bytes: usize,

    /// Most open client connections; further ones wait in the listen backlog until one closes.
    #[arg(long, env = "MEMQ_MAX_CONNECTIONS", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Longest time to answer a request, reading its body included (e.g. 60s); a long poll
    /// gets its `wait` on top. 408 beyond it.
    #[arg(long, env = "MEMQ_REQUEST_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    pub request_timeout: Duration,

    /// Longest time a client may take to send a request's headers, and to stay idle between
    /// requests on a kept-alive connection; the connection is closed after it (slowloris).
    #[arg(long, env = "MEMQ_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_timeout)]
    pub header_read_timeout: Duration,

    /// Largest request head (request line and headers), in bytes; 431 beyond it.
    #[arg(long, env = "MEMQ_MAX_HEADER_BYTES", default_value_t = 32 << 10, value_parser = parse_header_bytes)]
    pub max_header_bytes: usize,

    /// Most queues the server holds (0: no limit); creating one more is 409 too_many_queues.
    #[arg(long, env = "MEMQ_MAX_QUEUES", default_value_t = 10_000)]
    pub max_queues: usize,

    /// Most memory for the items held in all queues (e.g. 512MiB, 2GiB; 0: no limit; `auto`:
    /// half the container's memory limit, or of the machine's memory). Each item counts its
    /// body plus 64 bytes of bookkeeping; an enqueue beyond it is 507 memory_full.
    #[arg(long, env = "MEMQ_MAX_MEMORY", default_value = "auto")]
    pub max_memory: MemoryLimit,

    /// How long a producer's dedup key (`?id=`) stays taken after its item left the queue, so a
    /// rerun of the producer adds nothing twice (e.g. 10m, 1h; 0: only while the item is in the
    /// queue). Each key held counts its length plus about 200 bytes for --max-memory.
    #[arg(long, env = "MEMQ_DEDUP_WINDOW", default_value = "10m", value_parser = parse_window)]
    pub dedup_window: Duration,

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
    /// Redis: redis://[:password@]host:6379/0, or rediss:// for TLS. With --redis-cluster:
    /// one or more comma-separated seed nodes of a Redis Cluster.
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

    /// With --redis: it names nodes of a Redis Cluster; each queue lives in one slot.
    #[arg(long, env = "MEMQ_REDIS_CLUSTER", requires = "redis")]
    pub redis_cluster: bool,

    /// Serve HTTPS (HTTP/1.1 over TLS) with this PEM certificate chain, leaf first (with
    /// --tls-key). Re-read every second: a renewed certificate is served to new connections.
    #[arg(long, env = "MEMQ_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "MEMQ_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The Kubernetes API to use instead of inferring one (tests, embedders); no flag.
    #[arg(skip)]
    pub kube_config: Option<::kube::Config>,
}

/// Image of the built-in consumer Job template.
pub const DEFAULT_CONSUMER_IMAGE: &str = "memq-rs:0.1.0";

/// The queue server's URL inside the cluster: the Service `queue` of manifests/base.
pub const DEFAULT_SERVER_URL: &str = "http://queue:8080/memq/server";

fn parse_window(text: &str) -> Result<Duration, String> {
    let d = memq::duration::parse_duration(text)?;
    if d > Duration::from_secs(7 * 24 * 3600) {
        return Err("the dedup window is at most 7 days".into());
    }
    Ok(d)
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = memq::duration::parse_duration(text)?;
    if d < Duration::from_millis(10) {
        return Err("the autoscale interval must be at least 10ms".into());
    }
    Ok(d)
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = memq::duration::parse_duration(text)?;
    if d < Duration::from_millis(10) {
        return Err("a timeout must be at least 10ms".into());
    }
    Ok(d)
}

fn parse_header_bytes(text: &str) -> Result<usize, String> {
    let n: usize = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of bytes"))?;
    if n < MIN_HEADER_BYTES {
        return Err(format!(
            "the header limit must be at least {MIN_HEADER_BYTES} bytes"
        ));
    }
    Ok(n)
}

/// Smallest `--max-header-bytes`: hyper reads at least this much at once.
pub const MIN_HEADER_BYTES: usize = 8192;

fn parse_lease(text: &str) -> Result<Duration, String> {
    let d = memq::duration::parse_duration(text)?;
    if d.as_secs() < 1 || d.subsec_nanos() != 0 {
        return Err("the default lease must be a whole number of seconds, at least 1".into());
    }
    Ok(d)
}

/// What `queue-server` does instead of serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Repair a data directory whose damage stops the start: copies the files it changes to
    /// DIR/damaged-<time>/, skips exactly the damaged records and says what they held.
    Repair {
        /// The data directory (no server may be running on it).
        #[arg(long, env = "MEMQ_DATA_DIR")]
        data_dir: PathBuf,
    },
}

impl Default for Config {
    /// The flags' own defaults: what `queue-server` with no flag runs with, whatever the
    /// environment holds (the `MEMQ_*` variables are ignored here), so the two never differ.
    fn default() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let command = Self::command().mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(["queue-server"])
            .expect("every flag has a default or is optional");
        Self::from_arg_matches(&matches).expect("the flags' defaults make a config")
    }
}

/// A bearer token. It is compared, never shown: its `Debug` prints no part of it and it has no
/// `Display`, so logging the [`Config`] cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token's text, for the one place that compares it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl From<&str> for Token {
    fn from(text: &str) -> Self {
        Token(text.to_string())
    }
}

impl From<String> for Token {
    fn from(text: String) -> Self {
        Token(text)
    }
}

impl std::str::FromStr for Token {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("the token must not be empty".into());
        }
        Ok(Token(text.to_string()))
    }
}

/// Reads `--token-file`: its content with surrounding whitespace (a Secret's trailing newline)
/// trimmed; an empty file is an error, never "no auth".
pub fn read_token_file(path: &std::path::Path) -> anyhow::Result<Token> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read --token-file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        anyhow::bail!("--token-file {} is empty", path.display());
    }
    Ok(Token(token.to_string()))
}

impl Config {
    /// Replaces `token_file` by the token it holds; called once by [`crate::serve`].
    pub fn load_token_file(&mut self) -> anyhow::Result<()> {
        if let Some(path) = self.token_file.take() {
            if self.token.is_some() {
                anyhow::bail!("give --token or --token-file, not both");
            }
            self.token = Some(read_token_file(&path)?);
        }
        Ok(())
    }
}

/// `--max-memory`: a byte count, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    /// No limit.
    Unlimited,
    /// At most this many bytes.
    Bytes(u64),
    /// Half the container's (cgroup) memory limit, else half the machine's memory.
    Auto,
}

impl MemoryLimit {
    /// The limit in bytes (`u64::MAX`: none), `Auto` resolved against this machine.
    pub fn resolve(self) -> u64 {
        match self {
            MemoryLimit::Unlimited => u64::MAX,
            MemoryLimit::Bytes(n) => n,
            MemoryLimit::Auto => available_memory().map_or(u64::MAX, |m| m / 2),
        }
    }
}

impl std::str::FromStr for MemoryLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "auto" {
            return Ok(MemoryLimit::Auto);
        }
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits.parse().map_err(|_| {
            format!("{text:?}: use bytes (e.g. 536870912), 512MiB, 2GiB, 0 or auto")
        })?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "K" | "KB" => 1_000,
            "KiB" => 1 << 10,
            "M" | "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "G" | "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            "T" | "TB" => 1_000_000_000_000,
            "TiB" => 1 << 40,
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?}; use KiB, MiB, GiB"
                ));
            }
        };
        match n.checked_mul(scale) {
            Some(0) => Ok(MemoryLimit::Unlimited),
            Some(bytes) => Ok(MemoryLimit::Bytes(bytes)),
            None => Err(format!("{text:?} is too large")),
        }
    }
}

/// The memory this process may use: the cgroup's limit (v2, then v1) when one is set, else the
/// machine's total memory.
fn available_memory() -> Option<u64> {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|t| t.trim().parse::<u64>().ok())
        // cgroup v1 says "no limit" with a huge number rather than "max".
        .filter(|&n| n < (1 << 60));
    cgroup.or_else(|| {
        let meminfo = read("/proc/meminfo")?;
        let kib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(kib * 1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_the_flags_defaults() {
        let config = Config::default();
        assert_eq!(config.listen, SocketAddr::from(([0, 0, 0, 0], 8080)));
        assert_eq!(config.max_memory, MemoryLimit::Auto);
        assert_eq!(config.max_connections, 16384);
        assert_eq!(config.default_lease, Duration::from_secs(30));
        assert_eq!(config.autoscale_interval, Duration::from_secs(10));
        assert_eq!(config.redis_prefix, "memq");
        assert_eq!(config.consumer_image, DEFAULT_CONSUMER_IMAGE);
        assert!(config.token.is_none() && !config.jobs && config.kube_config.is_none());
    }

    #[test]
    fn memory_limits_parse_units_and_auto() {
        let p = |t: &str| t.parse::<MemoryLimit>();
        assert_eq!(p("0"), Ok(MemoryLimit::Unlimited));
        assert_eq!(p("1000"), Ok(MemoryLimit::Bytes(1000)));
        assert_eq!(p("512MiB"), Ok(MemoryLimit::Bytes(512 << 20)));
        assert_eq!(p("2GiB"), Ok(MemoryLimit::Bytes(2 << 30)));
        assert_eq!(p("3G"), Ok(MemoryLimit::Bytes(3_000_000_000)));
        assert_eq!(p("auto"), Ok(MemoryLimit::Auto));
        for bad in ["", "MiB", "-1", "1.5GiB", "12parsecs", "99999999999999TiB"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        let auto = MemoryLimit::Auto.resolve();
        assert!(auto > 0, "auto resolves to a limit on this machine");
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let config = Config {
            token: Some("s3cret-token".into()),
            ..Config::default()
        };
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("Token(<redacted>)"));
    }

    #[test]
    fn a_token_file_is_trimmed_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret\n").unwrap();
        let mut config = Config {
            token_file: Some(path.clone()),
            ..Config::default()
        };
        config.load_token_file().unwrap();
        assert_eq!(config.token.as_ref().map(Token::expose), Some("s3cret"));
        assert_eq!(config.token_file, None);
        std::fs::write(&path, "\n \n").unwrap();
        let err = read_token_file(&path).unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        assert!(read_token_file(&dir.path().join("missing")).is_err());
        let mut both = Config {
            token: Some("a".into()),
            token_file: Some(path),
            ..Config::default()
        };
        assert!(both.load_token_file().is_err());
    }

    #[test]
    fn tls_cert_and_key_come_together() {
        for one in [["--tls-cert", "c"], ["--tls-key", "k"]] {
            let parsed = Config::try_parse_from(["queue-server", one[0], one[1]]);
            assert!(parsed.is_err(), "{one:?} alone");
        }
        let both =
            Config::try_parse_from(["queue-server", "--tls-cert", "c", "--tls-key", "k"]).unwrap();
        assert!(both.tls_cert.is_some() && both.tls_key.is_some());
    }

    #[test]
    fn token_and_token_file_are_mutually_exclusive_flags() {
        let parsed = Config::try_parse_from(["queue-server", "--token", "a", "--token-file", "f"]);
        assert!(parsed.is_err());
        let parsed = Config::try_parse_from(["queue-server", "--token-file", "f"]).unwrap();
        assert_eq!(
            parsed.token_file.as_deref(),
            Some(std::path::Path::new("f"))
        );
    }
}
