//! Starting real servers for tests: [`TestServer`] serves on an ephemeral loopback port in
//! this process and stops when asked (or when dropped); [`ServerProcess`] runs the binary;
//! [`RedisServer`] and [`RedisCluster`] start Redis; [`TestCa`] makes certificates for HTTPS;
//! [`oci::OciImage`] reads a container image from its OCI archive; [`golden`] writes and
//! describes the golden sets of stored data.

pub mod golden;
pub mod oci;
mod redis;
mod tls;

use std::net::SocketAddr;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::Config;

pub use self::redis::{RedisCluster, RedisServer};
pub use self::tls::{ServerCert, TestCa, write_pair};

/// A queue server on `127.0.0.1:0`, running until [`TestServer::shutdown`] or drop.
pub struct TestServer {
    addr: SocketAddr,
    /// `https` when the config has a TLS certificate.
    scheme: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Binds 127.0.0.1:0 and serves `config` there (its `listen` is ignored).
    ///
    /// With `MEMQ_TEST_REDIS=redis://...` set, a config that names no store (neither
    /// `data_dir` nor `redis`) gets the Redis store with a key prefix of its own, so the whole
    /// black-box suite runs against Redis, tests in parallel on one Redis without colliding;
    /// with `MEMQ_TEST_REDIS_CLUSTER=1` too, the URLs are the nodes of a Redis Cluster.
    pub async fn start(mut config: Config) -> Self {
        if config.data_dir.is_none()
            && config.redis.is_none()
            && let Some(url) = test_redis()
        {
            config.redis = Some(url);
            config.redis_prefix = unique_prefix();
            config.redis_cluster = test_redis_cluster();
        }
        Self::start_as_given(config).await
    }

    /// Like [`TestServer::start`], but the store is the one `config` names, whatever
    /// `MEMQ_TEST_REDIS` says: for tests of what only the memory store does (`--max-memory`).
    pub async fn start_as_given(config: Config) -> Self {
        let on_redis = config.redis.is_some();
        let scheme = if config.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind an ephemeral loopback port");
        let addr = listener.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(crate::serve(listener, config, async move {
            let _ = stopped.await;
        }));
        let server = Self {
            addr,
            scheme,
            stop: Some(stop),
            task: Some(task),
        };
        if on_redis {
            // Ready once it reaches Redis and hears the wake channel, a few ms after start.
            server.wait_ready(std::time::Duration::from_secs(10)).await;
        }
        server
    }

    /// Waits until `/readyz` answers 200, at most `limit`; false if it never did.
    pub async fn wait_ready(&self, limit: std::time::Duration) -> bool {
        let url = format!("{}/readyz", self.url());
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// The server's socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (`https://` with a TLS certificate).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// `http://127.0.0.1:PORT/memq/server`, what clients take as `--server`.
    pub fn base_url(&self) -> String {
        format!("{}{}", self.url(), memq::BASE_PATH)
    }

    /// A `memq` client for this server.
    pub fn client(&self) -> memq::Client {
        memq::Client::new(self.base_url()).expect("build client")
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server ran cleanly");
        }
    }
}

/// Polls `check` until it gives `Ok`, at most `limit`, and returns what it gave; panics with
/// `what` and the last `Err` it gave otherwise. Polls at once, then with a pause that grows from
/// 10 ms to 250 ms, so a quick state costs little and a slow one does not flood what it asks.
pub async fn eventually<T, F, Fut>(limit: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = std::time::Duration::from_millis(10);
    loop {
        let last = match check().await {
            Ok(value) => return value,
            Err(why) => why,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("not within {limit:?}: {what}; last: {last}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_millis(250));
    }
}

/// The value of one series in the `/metrics` of the server at `url` (`http://127.0.0.1:PORT`),
/// e.g. `memq_autoscaler_passes_total{result="ok"}`; 0 when the series is absent.
pub async fn metric(url: &str, series: &str) -> f64 {
    metric_from(&reqwest::Client::new(), url, series).await
}

/// [`metric`] asked through `http` (e.g. a client bound to a source address of its own).
pub async fn metric_from(http: &reqwest::Client, url: &str, series: &str) -> f64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("the metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits (at most 10 s) until the server at `url` holds `n` long polls waiting
/// (`memq_long_polls_waiting`): the state "the poll has started waiting", which a test must
/// reach before it checks what wakes the poll.
pub async fn polls_waiting(url: &str, n: u64) {
    eventually(
        std::time::Duration::from_secs(10),
        "long polls waiting",
        || async {
            let now = metric(url, "memq_long_polls_waiting").await;
            if now == n as f64 {
                Ok(())
            } else {
                Err(format!("{now} waiting, not {n}"))
            }
        },
    )
    .await;
}

/// Kills a child process at once (`SIGKILL`) and reaps it, if there is one.
fn kill(child: &mut Option<std::process::Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The Redis that `MEMQ_TEST_REDIS` names, if any.
pub fn test_redis() -> Option<String> {
    std::env::var("MEMQ_TEST_REDIS")
        .ok()
        .filter(|url| !url.is_empty())
}

/// Whether `MEMQ_TEST_REDIS` names the nodes of a Redis Cluster (`MEMQ_TEST_REDIS_CLUSTER=1`).
pub fn test_redis_cluster() -> bool {
    test_redis().is_some() && std::env::var("MEMQ_TEST_REDIS_CLUSTER").is_ok_and(|v| v == "1")
}

/// A key prefix no other test server uses: `memq-test-<ulid>`.
pub fn unique_prefix() -> String {
    format!("memq-test-{}", ulid::Ulid::new())
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The real `queue-server` binary as a child process on a fixed loopback port, for tests that
/// kill it (`SIGKILL`) and start it again on the same port and data directory.
pub struct ServerProcess {
    bin: std::path::PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    port: u16,
    child: Option<std::process::Child>,
    /// Where its stderr (its log) goes, with [`ServerProcess::start_logged`].
    log: Option<tempfile::NamedTempFile>,
}

impl ServerProcess {
    /// Starts `bin` with `args` plus `--listen 127.0.0.1:PORT` and waits until it answers.
    pub async fn start(bin: impl Into<std::path::PathBuf>, args: &[&str]) -> Self {
        Self::start_with_env(bin, args, &[("RUST_LOG", "error")]).await
    }

    /// Like [`ServerProcess::start`], with these environment variables set as well.
    pub async fn start_with_env(
        bin: impl Into<std::path::PathBuf>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::launch(bin.into(), args, env, None).await
    }

    async fn launch(
        bin: std::path::PathBuf,
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<tempfile::NamedTempFile>,
    ) -> Self {
        let mut server = Self {
            bin,
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            port: free_port(),
            child: None,
            log,
        };
        server.spawn().await;
        server
    }

    /// Like [`ServerProcess::start_with_env`], its log (stderr) kept in a file for
    /// [`ServerProcess::log`].
    pub async fn start_logged(
        bin: impl Into<std::path::PathBuf>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let log = tempfile::NamedTempFile::new().expect("a log file");
        Self::launch(bin.into(), args, env, Some(log)).await
    }

    /// What it logged so far (with [`ServerProcess::start_logged`]; empty otherwise).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f.path()).ok())
            .unwrap_or_default()
    }

    /// Runs `bin` with `args` on a free loopback port for a start that must fail: its exit
    /// status and what it wrote to stderr. Fails the test if it is still running after 30 s.
    pub fn run_to_exit(
        bin: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
    ) -> (std::process::ExitStatus, String) {
        let mut child = std::process::Command::new(bin)
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start queue-server");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while child.try_wait().expect("wait").is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("queue-server kept running; it was expected to refuse to start");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let out = child.wait_with_output().expect("its output");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn spawn(&mut self) {
        let mut cmd = std::process::Command::new(&self.bin);
        cmd.args(&self.args)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null());
        if let Some(log) = &self.log {
            // Appended: a restart keeps what was logged before.
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(log.path())
                .expect("the log file");
            cmd.stdout(std::process::Stdio::null()).stderr(file);
        }
        let child = cmd.spawn().expect("start queue-server");
        self.child = Some(child);
        let url = format!("{}/healthz", self.url());
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("queue-server exited at start: {status}");
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "queue-server did not start in 30 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT/memq/server`.
    pub fn base_url(&self) -> String {
        format!("{}{}", self.url(), memq::BASE_PATH)
    }

    /// Kills the process with SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the process again with the same port and arguments.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Stops the process with SIGTERM and returns its exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().ok()
    }
}

/// A loopback port free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("find a free loopback port")
        .port()
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `bin --version` and checks its first line: `NAME RELEASE (commit COMMIT)`, where the
/// commit is the one this test was built with, and this checkout's HEAD when git can tell it.
/// Returns the whole output.
pub fn checked_version(bin: &str, name: &str) -> String {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .output()
        .expect("run --version");
    assert!(out.status.success(), "{name} --version failed");
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert_eq!(
        text.lines().next(),
        Some(format!("{name} {}", memq::version::VERSION).as_str()),
        "{text}"
    );
    let head = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(head) = head {
        assert_eq!(memq::version::COMMIT, head, "the commit of this checkout");
    }
    text
}
