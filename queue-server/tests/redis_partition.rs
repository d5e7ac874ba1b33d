//! A network partition between one replica and Redis: replica A runs in a network namespace of
//! the test's own, joined to the host by a veth pair; replica B runs here, on loopback. Cutting
//! A's route to Redis (a blackhole route inside A's namespace: what A sends to Redis fails at
//! once, as behind a router that lost its route, while the test still reaches A from a second
//! address) must leave A answering `503` with `Retry-After`, unready, its long polls ended, and A must recover by itself once the route is back; B serves throughout, and no item
//! whose enqueue was confirmed is lost.
//!
//! The partition test needs root (network namespaces) and `ip` (iproute2); without them it fails
//! and says so. A second test stalls Redis (`DEBUG SLEEP`).

use std::collections::HashSet;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memq::{DequeueOptions, Dequeued, EnqueueOptions};
use parking_lot::Mutex;
use queue_server::Config;
use queue_server::testing::{RedisServer, TestServer, eventually, metric_from, unique_prefix};
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_queue-server");

/// Runs `ip ARGS...`, panicking with its output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` ({e}): install iproute2"));
    assert!(
        out.status.success(),
        "ip {}: {}; this test needs root (network namespaces)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A network namespace joined to the host by a veth pair on 10.199.N.0/24: the host side holds
/// .1 (Redis listens there) and .3 (the test's client), the namespace side .2. Removed on drop.
struct Namespace {
    name: String,
    net: String,
}

impl Namespace {
    fn create() -> Self {
        let taken = String::from_utf8(
            Command::new("ip")
                .args(["-o", "addr"])
                .output()
                .expect("ip -o addr")
                .stdout,
        )
        .unwrap();
        let n = (0..)
            .map(|_| fastrand::u8(..))
            .find(|n| !taken.contains(&format!("10.199.{n}.")))
            .unwrap();
        let tag = format!("{:04x}", fastrand::u16(..));
        let ns = Namespace {
            name: format!("memq-part-{tag}"),
            net: format!("10.199.{n}"),
        };
        let (host, inner) = (format!("mqp{tag}h"), format!("mqp{tag}n"));
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link", "add", &host, "type", "veth", "peer", "name", &inner, "netns", &ns.name,
        ]);
        ip(&["addr", "add", &format!("{}.1/24", ns.net), "dev", &host]);
        ip(&["addr", "add", &format!("{}.3/24", ns.net), "dev", &host]);
        ip(&["link", "set", &host, "up"]);
        ns.exec(&["addr", "add", &format!("{}.2/24", ns.net), "dev", &inner]);
        ns.exec(&["link", "set", &inner, "up"]);
        ns.exec(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip ARGS...` inside the namespace.
    fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    fn host(&self) -> String {
        format!("{}.1", self.net)
    }

    fn client(&self) -> IpAddr {
        format!("{}.3", self.net).parse().unwrap()
    }

    fn inside(&self) -> String {
        format!("{}.2", self.net)
    }

    /// From now on what A sends to Redis fails (the kernel has no route for it).
    fn cut(&self) {
        self.exec(&["route", "add", "blackhole", &format!("{}/32", self.host())]);
    }

    fn heal(&self) {
        self.exec(&["route", "del", "blackhole", &format!("{}/32", self.host())]);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // The veth pair goes with the namespace.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// queue-server as a child process inside the namespace; killed on drop.
struct Replica {
    child: tokio::process::Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Replica {
    async fn start(ns: &Namespace, redis: &str, prefix: &str) -> Self {
        let mut child = tokio::process::Command::new("ip")
            .args(["netns", "exec", &ns.name, BIN])
            .args(["--listen", &format!("{}:0", ns.inside())])
            .args(["--redis", redis, "--redis-prefix", prefix])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start queue-server in the namespace");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
                .await
                .expect("queue-server says where it listens within 30 s")
                .unwrap()
                .unwrap_or_else(|| panic!("queue-server exited: {}", log.lock()));
            log.lock().push_str(&line);
            log.lock().push('\n');
            if let Some(at) = line.find("addr=") {
                let addr: String = line[at + 5..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                break addr;
            }
        };
        let keep = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = keep.lock();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Replica {
            child,
            url: format!("http://{addr}"),
            log,
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn ready(http: &reqwest::Client, url: &str) -> Result<(), String> {
    match http.get(format!("{url}/readyz")).send().await {
        Ok(r) if r.status() == 200 => Ok(()),
        Ok(r) => Err(format!("readyz {}", r.status())),
        Err(e) => Err(e.to_string()),
    }
}

async fn unready(http: &reqwest::Client, url: &str) -> Result<(), String> {
    match ready(http, url).await {
        Ok(()) => Err("still ready".into()),
        Err(_) => Ok(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_cut_off_from_redis_answers_503_is_unready_and_recovers_by_itself() {
    let ns = Namespace::create();
    let redis =
        RedisServer::start(&["--bind", "127.0.0.1", &ns.host(), "--protected-mode", "no"]).await;
    let prefix = unique_prefix();
    let a = Replica::start(
        &ns,
        &format!("redis://{}:{}/0", ns.host(), redis.port()),
        &prefix,
    )
    .await;
    let b = TestServer::start_as_given(Config {
        redis: Some(redis.url()),
        redis_prefix: prefix.clone(),
        ..Config::default()
    })
    .await;
    // The test reaches A from .3, so that cutting the route to .1 (Redis) leaves this path up.
    let http = reqwest::Client::builder()
        .local_address(ns.client())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let to_a = memq::Client::with_http(http.clone(), format!("{}{}", a.url, memq::BASE_PATH));
    let to_b = b.client();
    eventually(Duration::from_secs(20), "A is ready", || {
        ready(&http, &a.url)
    })
    .await;
    to_a.create_queue("q", None).await.unwrap();

    // Confirmed enqueues, through either replica, from start to end.
    let confirmed = Arc::new(Mutex::new(HashSet::<String>::new()));
    let enqueue = |client: memq::Client, body: String| {
        let confirmed = confirmed.clone();
        async move {
            let r = client.enqueue("q", &body, &EnqueueOptions::default()).await;
            if r.is_ok() {
                confirmed.lock().insert(body);
            }
            r
        }
    };
    for i in 0..20 {
        enqueue(to_a.clone(), format!("a-before-{i}"))
            .await
            .unwrap();
        enqueue(to_b.clone(), format!("b-before-{i}"))
            .await
            .unwrap();
    }

    // A long poll held by A when the link goes.
    to_b.create_queue("idle", None).await.unwrap();
    let poll = {
        let to_a = to_a.clone();
        tokio::spawn(async move {
            let wait = DequeueOptions {
                wait: Some(Duration::from_secs(30)),
                ..Default::default()
            };
            let started = Instant::now();
            let answer = to_a.dequeue("idle", &wait).await;
            (answer, started.elapsed())
        })
    };
    eventually(Duration::from_secs(10), "A holds the long poll", || async {
        match metric_from(&http, &a.url, "memq_long_polls_waiting").await {
            1.0 => Ok(()),
            n => Err(format!("{n} waiting")),
        }
    })
    .await;

    ns.cut();
    let cut_at = Instant::now();
    // The poll started before the cut; what counts is how soon after the cut it ends.

    // A: unready, then every request a 503 backend_unavailable with Retry-After.
    eventually(Duration::from_secs(30), "A is unready", || {
        unready(&http, &a.url)
    })
    .await;
    let answer = http
        .post(format!("{}{}/queues/q/enqueue", a.url, memq::BASE_PATH))
        .body("during")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 503, "{}", a.log.lock());
    assert_eq!(answer.headers()["retry-after"], "1");
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["code"], "backend_unavailable", "{body}");

    // The long poll ended, cleanly: an answer, not a hang or a dropped connection.
    let (answer, took) = tokio::time::timeout(Duration::from_secs(30), poll)
        .await
        .expect("the long poll ends while A is cut off")
        .unwrap();
    match answer {
        Err(e) => assert_eq!(e.status(), Some(503), "{e}"),
        Ok(Dequeued::Empty { .. }) => {}
        Ok(other) => panic!("{other:?}"),
    }
    let after_cut = cut_at.elapsed();
    assert!(
        after_cut < Duration::from_secs(10),
        "the poll ended {after_cut:?} after the cut (it waited {took:?} in all)"
    );

    // B served all along.
    for i in 0..20 {
        enqueue(to_b.clone(), format!("b-during-{i}"))
            .await
            .unwrap();
    }
    let stats = to_b.queue("q").await.unwrap();
    assert_eq!(stats.depth, 60, "{stats:?}");

    ns.heal();
    eventually(Duration::from_secs(60), "A is ready again", || {
        ready(&http, &a.url)
    })
    .await;
    let healed_after = cut_at.elapsed();
    for i in 0..20 {
        enqueue(to_a.clone(), format!("a-after-{i}")).await.unwrap();
    }
    // Wake-ups cross from B to A again.
    let poll = {
        let to_a = to_a.clone();
        tokio::spawn(async move {
            let wait = DequeueOptions {
                wait: Some(Duration::from_secs(20)),
                ..Default::default()
            };
            to_a.dequeue("idle", &wait).await.unwrap()
        })
    };
    eventually(
        Duration::from_secs(10),
        "A holds a new long poll",
        || async {
            match metric_from(&http, &a.url, "memq_long_polls_waiting").await {
                1.0 => Ok(()),
                n => Err(format!("{n} waiting")),
            }
        },
    )
    .await;
    to_b.enqueue("idle", "wake", &EnqueueOptions::default())
        .await
        .unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("an enqueue through B wakes A's poll")
        .unwrap();
    assert!(matches!(woken, Dequeued::Messages(_)), "{woken:?}");

    // Nothing confirmed was lost: drain everything through A.
    let mut seen = HashSet::new();
    loop {
        let batch = DequeueOptions {
            max: Some(100),
            ..Default::default()
        };
        match to_a.dequeue("q", &batch).await.unwrap() {
            Dequeued::Messages(m) => seen.extend(m.into_iter().map(|m| m.body)),
            Dequeued::Empty { .. } => break,
        }
    }
    let confirmed = confirmed.lock().clone();
    let lost: Vec<&String> = confirmed.difference(&seen).collect();
    assert!(lost.is_empty(), "lost {lost:?}");
    assert_eq!(seen.len(), 80);
    eprintln!("A was ready again {healed_after:?} after the cut (healed after its checks)");
    b.shutdown().await;
}

/// Redis busy for 8 s (`DEBUG SLEEP`): a replica whose heartbeat goes unanswered for 2 s says
/// Redis is away (503 at once, unready), and serves again by itself when Redis answers; the
/// request that was under way when Redis stalled is answered, late, not lost.
#[tokio::test]
async fn a_stalled_redis_makes_replicas_unready_until_it_answers_again() {
    let redis = RedisServer::start(&["--enable-debug-command", "yes"]).await;
    let server = TestServer::start_as_given(Config {
        redis: Some(redis.url()),
        redis_prefix: unique_prefix(),
        ..Config::default()
    })
    .await;
    let client = server.client();
    let http = reqwest::Client::new();
    let url = server.url();
    client.create_queue("q", None).await.unwrap();
    let mut conn = redis.connection().await;
    let stall = tokio::spawn(async move {
        redis::cmd("DEBUG")
            .arg("SLEEP")
            .arg(8)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    });
    // Sent while Redis sleeps: waits for it (within the 10 s command timeout) and succeeds.
    let early = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .enqueue("q", "sent-during-the-stall", &EnqueueOptions::default())
                .await
        })
    };
    eventually(Duration::from_secs(10), "the replica is unready", || {
        unready(&http, &url)
    })
    .await;
    let started = Instant::now();
    let refused = client
        .enqueue("q", "refused", &EnqueueOptions::default())
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(503));
    assert!(started.elapsed() < Duration::from_secs(1), "at once");
    stall.await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the replica is ready again",
        || ready(&http, &url),
    )
    .await;
    early
        .await
        .unwrap()
        .expect("the request sent during the stall is answered");
    client
        .enqueue("q", "after", &EnqueueOptions::default())
        .await
        .unwrap();
    let q = client.queue("q").await.unwrap();
    assert_eq!(q.depth, 2, "{q:?}");
    server.shutdown().await;
}
