//! A real Prometheus (Debian's `prometheus`, as `scripts/check-metrics.sh` installs it; or the
//! binary `MEMQ_PROMETHEUS` names) scrapes a server under load over HTTPS, once a second, and
//! answers the PromQL that docs/api.md and the Grafana dashboard use as they say: the figures
//! agree with `/stats`, a dequeue's latency leaves out its long poll's idle wait, which has a
//! histogram of its own.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use memq::{DequeueOptions, Dequeued};
use queue_server::Config;
use queue_server::config::MemoryLimit;
use queue_server::testing::{TestCa, TestServer, eventually};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// How long the load runs at most: the checks pass within seconds of the first scrapes.
const LOAD_LIMIT: Duration = Duration::from_secs(90);

/// Each queue's figures as Prometheus answers them, by label value.
type Answer = BTreeMap<String, f64>;

/// A Prometheus process with its own data directory, stopped when dropped.
struct Prometheus {
    child: Child,
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`) over HTTPS with `ca` every second.
    async fn start(dir: &Path, target: &str, ca: &Path) -> Self {
        let bin = std::env::var("MEMQ_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 scrape_configs:\n\
                 - job_name: memq\n  scheme: https\n  tls_config: {{ca_file: {}}}\n  \
                 static_configs: [{{targets: ['{target}']}}]\n",
                ca.display()
            ),
        )
        .unwrap();
        // A free port for its web API: bound, released, then taken by Prometheus.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {bin:?} ({e}): install Debian's prometheus \
                     (scripts/check-metrics.sh does) or set MEMQ_PROMETHEUS"
                )
            });
        let prometheus = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        let ready = format!("{}/-/ready", prometheus.url);
        eventually(Duration::from_secs(30), "Prometheus ready", || async {
            match prometheus.http.get(&ready).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        prometheus
    }

    /// Evaluates `query` now: each series' value, by the values of its own labels (not
    /// `__name__`, nor the `instance` and `job` of the target), joined with `,` (`""` for a
    /// series with none).
    async fn query(&self, query: &str) -> Result<Answer, String> {
        let resp: Value = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if resp["status"] != "success" {
            return Err(format!("{query}: {resp}"));
        }
        let mut answer = Answer::new();
        for series in resp["data"]["result"].as_array().unwrap() {
            let labels: Vec<&str> = series["metric"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !["__name__", "instance", "job"].contains(&k.as_str()))
                .map(|(_, v)| v.as_str().unwrap())
                .collect();
            let value = series["value"][1].as_str().unwrap().parse().unwrap();
            answer.insert(labels.join(","), value);
        }
        Ok(answer)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PromQL of docs/api.md (its `promql` block) and of the Grafana dashboard (with the
/// dashboard's variables given values: every queue, a one-minute rate window).
fn documented_queries() -> Vec<String> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let docs = std::fs::read_to_string(format!("{root}/docs/api.md")).unwrap();
    let block = docs
        .split("```promql\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/api.md has a promql block");
    let mut queries: Vec<String> = block
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/manifests/grafana/memq-dashboard.json")).unwrap(),
    )
    .unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            queries.push(
                expr.replace("$queue", ".*")
                    .replace("$__rate_interval", "1m"),
            );
        }
    }
    queries
}

/// What each documented query must answer while the load runs; `Err` says what is missing.
fn check(query: &str, answer: &Answer, max_memory: u64) -> Result<(), String> {
    let get = |key: &str| answer.get(key).copied();
    let positive = |key: &str| match get(key) {
        Some(v) if v > 0.0 => Ok(()),
        other => Err(format!("{key}: {other:?}")),
    };
    let is = |want: bool, why: &str| if want { Ok(()) } else { Err(why.to_owned()) };
    match query {
        // Per queue: both queues are there.
        q if q.starts_with("memq_queue_depth")
            || q.starts_with("sum by (queue) (memq_queue_")
            || q.starts_with("memq_queue_oldest_age_seconds") =>
        {
            is(
                get("load").is_some() && get("idle").is_some(),
                "a queue is missing",
            )
        }
        q if q.contains("rate(memq_queue_enqueued_total") => positive("load"),
        q if q.contains("rate(memq_queue_acked_total") => positive("load"),
        // Nothing is nacked or expires under this load: the rate is there, and 0.
        q if q.contains("rate(memq_queue_requeued_total") => {
            is(get("load") == Some(0.0), "requeued rate not 0")
        }
        // Latency by route: a dequeue that long-polls for 3 s answers in well under a second.
        q if q.contains("memq_http_request_duration_seconds_bucket") => {
            let dequeue = get("/memq/server/queues/{queue}/dequeue");
            let enqueue = get("/memq/server/queues/{queue}/enqueue");
            is(
                dequeue.is_some_and(|s| s < 1.0) && enqueue.is_some_and(|s| s < 1.0),
                &format!("dequeue {dequeue:?} s, enqueue {enqueue:?} s"),
            )
        }
        // The idle waits: polls of an empty queue wait their 3 s (the bucket of 2 to 5 s).
        q if q.contains("memq_long_poll_wait_seconds_bucket") => {
            let empty = get("empty");
            is(
                empty.is_some_and(|s| (2.0..=5.0).contains(&s)),
                &format!("empty polls waited {empty:?} s"),
            )
        }
        q if q.starts_with("sum by (status) (rate(memq_http_request_duration_seconds_count") => {
            positive("200").and(positive("204")).and(positive("404"))
        }
        // No server errors: no series at all.
        q if q.contains(r#"status=~"5.."#) => is(answer.is_empty(), "5xx answers"),
        "memq_item_memory_bytes" => positive(""),
        "memq_item_memory_limit_bytes" => {
            is(get("") == Some(max_memory as f64), "the limit differs")
        }
        "memq_http_open_connections" => positive(""),
        // The certificate runs out in 2040: no alert.
        q if q.starts_with("memq_tls_certificate_expiry_timestamp_seconds - time() <") => {
            is(answer.is_empty(), "the expiry alert fires")
        }
        other => Err(format!(
            "no expectation for {other:?}: add one to this test"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_server_under_load_and_the_documented_queries_answer() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (tls_cert, tls_key) = ca.issue(2040).write(dir.path());
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let max_memory = 64 << 20;
    let server = TestServer::start_as_given(Config {
        max_memory: MemoryLimit::Bytes(max_memory),
        tls_cert: Some(tls_cert),
        tls_key: Some(tls_key),
        ..Config::default()
    })
    .await;
    let client = memq::Client::new_trusting(server.base_url(), Some(&ca_file)).unwrap();
    client.create_queue("load", None).await.unwrap();
    client.create_queue("idle", None).await.unwrap();
    let prometheus = Prometheus::start(dir.path(), &server.addr().to_string(), &ca_file).await;

    // The load: a producer, two consumers (lease 10, ack them in one request), three long polls
    // on a queue that stays empty, and lookups of a queue that does not exist.
    let stop = CancellationToken::new();
    let mut load = tokio::task::JoinSet::new();
    let producer = client.clone();
    load.spawn(stop.clone().run_until_cancelled_owned(async move {
        for round in 0.. {
            let lines: String = (0..50).map(|i| format!("item-{round}-{i}\n")).collect();
            producer.enqueue_lines("load", lines, None).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }));
    for _ in 0..2 {
        let consumer = client.clone();
        load.spawn(stop.clone().run_until_cancelled_owned(async move {
            let take = DequeueOptions {
                lease: Some(Duration::from_secs(30)),
                max: Some(10),
                ..DequeueOptions::default()
            };
            loop {
                match consumer.dequeue("load", &take).await.unwrap() {
                    Dequeued::Messages(items) => {
                        let leases: Vec<String> =
                            items.iter().map(|m| m.lease.clone().unwrap().id).collect();
                        let acked = consumer.ack_batch("load", &leases).await.unwrap();
                        assert_eq!(acked.acked as usize, leases.len());
                    }
                    Dequeued::Empty { .. } => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }));
    }
    for _ in 0..3 {
        let poller = client.clone();
        load.spawn(stop.clone().run_until_cancelled_owned(async move {
            let poll = DequeueOptions {
                lease: Some(Duration::from_secs(30)),
                wait: Some(Duration::from_secs(3)),
                ..DequeueOptions::default()
            };
            loop {
                let got = poller.dequeue("idle", &poll).await.unwrap();
                assert!(matches!(got, Dequeued::Empty { .. }), "{got:?}");
            }
        }));
    }
    let looker = client.clone();
    load.spawn(stop.clone().run_until_cancelled_owned(async move {
        loop {
            assert!(looker.queue("missing").await.is_err());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }));

    let queries = documented_queries();
    assert!(queries.len() >= 12, "{queries:?}");
    eventually(
        LOAD_LIMIT,
        "every documented query answers as expected",
        || {
            let (prometheus, queries) = (&prometheus, &queries);
            async move {
                let mut wrong = Vec::new();
                for query in queries {
                    let answer = prometheus.query(query).await?;
                    if let Err(why) = check(query, &answer, max_memory) {
                        wrong.push(format!("{query}\n      -> {why} in {answer:?}"));
                    }
                }
                if wrong.is_empty() {
                    Ok(())
                } else {
                    Err(wrong.join("\n    "))
                }
            }
        },
    )
    .await;
    stop.cancel();
    while let Some(task) = load.join_next().await {
        task.expect("a load task failed");
    }

    // The scrapes were clean, and once the load stopped the figures agree with /stats.
    let targets: Value = prometheus
        .http
        .get(format!("{}/api/v1/targets", prometheus.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let target = &targets["data"]["activeTargets"][0];
    assert_eq!(
        (&target["health"], &target["lastError"]),
        (&"up".into(), &"".into()),
        "{target}"
    );
    let stats = client.queue("load").await.unwrap();
    eventually(
        Duration::from_secs(30),
        "Prometheus's figures equal /stats",
        || async {
            let mut seen = Vec::new();
            for (metric, want) in [
                ("memq_queue_enqueued_total", stats.enqueued),
                ("memq_queue_acked_total", stats.acked),
                ("memq_queue_dequeued_total", stats.dequeued),
                ("memq_queue_depth", stats.depth),
            ] {
                let answer = prometheus
                    .query(&format!(r#"{metric}{{queue="load"}}"#))
                    .await?;
                seen.push((metric, answer.get("load").copied(), want));
            }
            if seen.iter().all(|(_, got, want)| *got == Some(*want as f64)) {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await;
    assert!(stats.enqueued > 0 && stats.acked > 0, "{stats:?}");
    drop(prometheus);
    server.shutdown().await;
}
