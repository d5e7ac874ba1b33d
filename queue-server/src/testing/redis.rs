//! A `redis-server` of a test's own (or of a script's, through `cargo xtask redis`): on a free
//! loopback port, without persistence, in a directory of its own that goes away with it. One
//! server, or the primaries of a Redis Cluster. Every Redis the tests, `scripts/test-redis.sh`
//! and `scripts/bench.sh` use is started here.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::eventually;

/// How long a redis-server gets to answer `PING` after its start, and a cluster to agree.
const START_LIMIT: Duration = Duration::from_secs(20);

/// One redis-server, killed when dropped.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts redis-server (from `PATH`) on a free loopback port with no RDB snapshots and no
    /// AOF, plus `args` (e.g. `["--maxmemory", "4mb"]`), and waits until it answers `PING`.
    pub async fn start(args: &[&str]) -> Self {
        let mut last = String::new();
        // A port found free can be taken before redis-server binds it; another one then.
        for _ in 0..5 {
            let mut server = RedisServer {
                port: free_port(),
                dir: tempfile::tempdir().expect("a temporary directory for redis-server"),
                args: args.iter().map(|a| a.to_string()).collect(),
                child: None,
            };
            match server.spawn().await {
                Ok(()) => return server,
                Err(why) => last = why,
            }
        }
        panic!("redis-server did not start: {last}")
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills it at once (`SIGKILL`), as a crash would; what it held is gone (no persistence).
    pub fn kill(&mut self) {
        super::kill(&mut self.child);
    }

    /// Starts it again on the same port and directory, empty, after [`RedisServer::kill`].
    pub async fn restart(&mut self) {
        self.kill();
        if let Err(why) = self.spawn().await {
            panic!(
                "redis-server did not start again on port {}: {why}",
                self.port
            );
        }
    }

    /// A connection for commands of the test's own (`INFO`, `DEBUG SLEEP`, ...), which waits
    /// for an answer as long as it takes.
    pub async fn connection(&self) -> MultiplexedConnection {
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
        redis::Client::open(self.url())
            .expect("a valid URL")
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .unwrap_or_else(|e| panic!("connect to redis-server on port {}: {e}", self.port))
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): install it (Debian: apt-get install \
                     redis-server; scripts/test.sh and scripts/test-redis.sh do)"
                )
            });
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("it exited ({status}); its log:\n{log}"));
            }
            if self.ping().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "no answer to PING on port {} in {START_LIMIT:?}",
                    self.port
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok_and(|pong| pong == "PONG")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The primaries of a Redis Cluster (no replicas), the slots split evenly between them.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `primaries` cluster-enabled redis-servers, gives each an even share of the 16384
    /// slots, joins them, and waits until every node says `cluster_state:ok` and knows the others.
    pub async fn start(primaries: usize) -> Self {
        assert!(primaries > 0, "a cluster needs a primary");
        let mut nodes = Vec::with_capacity(primaries);
        for _ in 0..primaries {
            nodes.push(
                RedisServer::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
                .await,
            );
        }
        let mut first = None;
        for (i, node) in nodes.iter().enumerate() {
            let (from, to) = (16384 * i / primaries, 16384 * (i + 1) / primaries - 1);
            let mut conn = node.connection().await;
            redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(from)
                .arg(to)
                .query_async::<()>(&mut conn)
                .await
                .unwrap_or_else(|e| panic!("CLUSTER ADDSLOTSRANGE {from} {to}: {e}"));
            match &mut first {
                None => first = Some(conn),
                Some(first) => redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(node.port())
                    .query_async::<()>(first)
                    .await
                    .unwrap_or_else(|e| panic!("CLUSTER MEET 127.0.0.1 {}: {e}", node.port())),
            }
        }
        for node in &nodes {
            let conn = node.connection().await;
            let want = format!("cluster_known_nodes:{primaries}");
            eventually(START_LIMIT, "the Redis Cluster agrees", || {
                let mut conn = conn.clone();
                let want = want.clone();
                async move {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                    let ok = info.contains("cluster_state:ok")
                        && info.contains(&want)
                        && info.contains("cluster_slots_ok:16384");
                    if ok { Ok(()) } else { Err(info) }
                }
            })
            .await;
        }
        RedisCluster { nodes }
    }

    /// The nodes' URLs, comma-separated, as `--redis` takes them with `--redis-cluster`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }
}

/// A loopback port nothing listens on now, below 55536 (a cluster node also listens on its
/// port + 10000).
fn free_port() -> u16 {
    loop {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        if port < 55536 {
            return port;
        }
    }
}
