//! Shared by the consumer's black-box tests: a real queue server in this process on
//! 127.0.0.1:0, the real `consumer` binary as child processes, and waits with deadlines.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use queue_server::testing::TestServer;
use tokio::process::{Child, Command};

/// A queue server for one test.
pub async fn server() -> TestServer {
    TestServer::start(queue_server::Config::default()).await
}

/// A scratch directory, removed when dropped (kept when the test panics, for its logs).
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "memq-consumer-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A consumer process with its output in files (a pipe nobody reads could block it).
pub struct Consumer {
    pub child: Child,
    pub name: String,
    pub stderr: PathBuf,
}

impl Consumer {
    /// Starts `consumer --server BASE --queue QUEUE ARGS...`, with `OUT` in its environment.
    pub fn start(
        scratch: &Scratch,
        name: &str,
        base: &str,
        queue: &str,
        args: &[impl AsRef<std::ffi::OsStr>],
        out: &Path,
    ) -> Self {
        let stdout = std::fs::File::create(scratch.path(&format!("{name}.out"))).unwrap();
        let stderr_path = scratch.path(&format!("{name}.err"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_consumer"))
            .args(["--server", base, "--queue", queue])
            .args(args)
            .env("OUT", out)
            .env("RUST_LOG", "info")
            .env_remove("MEMQ_TOKEN")
            .env_remove("MEMQ_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("start consumer");
        Self {
            child,
            name: name.to_string(),
            stderr: stderr_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("still running")
    }

    /// Waits for the exit, failing the test (with the log) after `limit`.
    pub async fn exit(&mut self, limit: Duration) -> ExitStatus {
        match tokio::time::timeout(limit, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "{} still running after {limit:?}; log:\n{}",
                self.name,
                self.log()
            ),
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Sends SIGTERM (the way the kubelet stops a pod).
    pub fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Polls `check` until it returns Some, failing with `what` after `limit`: the one helper of
/// `queue_server::testing`, for checks that have nothing to say while they wait.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    queue_server::testing::eventually(limit, what, || {
        let look = check();
        async move { look.await.ok_or_else(|| "not yet".to_string()) }
    })
    .await
}

/// How often each line appears in the record file the test's `--exec` appends to.
pub fn record_counts(path: &Path) -> BTreeMap<String, u32> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *counts.entry(line.to_string()).or_insert(0) += 1;
    }
    counts
}

/// `--exec` that appends the item's body to `$OUT` (one write, so concurrent appends from
/// several processes do not interleave).
pub const RECORD: [&str; 4] = [
    "--exec",
    "sh",
    "-c",
    r#"read -r body; echo "$body" >> "$OUT""#,
];

/// Creates `queue` (with `config`) and loads `items` through the batch route.
pub async fn load(
    client: &memq::Client,
    queue: &str,
    config: Option<memq::QueueConfigPatch>,
    items: &[String],
) {
    client.create_queue(queue, config.as_ref()).await.unwrap();
    for chunk in items.chunks(1000) {
        let mut body = chunk.join("\n");
        body.push('\n');
        let r = client.enqueue_lines(queue, body, None).await.unwrap();
        assert_eq!(r.count, chunk.len() as u64);
    }
}

/// `item-00000`, `item-00001`, ...
pub fn items(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("item-{i:05}")).collect()
}

/// A loopback port with nothing listening.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
