//! Operations: health, readiness and Prometheus metrics.

use memq::{DequeueOptions, EnqueueOptions};
use queue_server::Config;
use queue_server::testing::{TestServer, checked_version};

#[test]
fn version_names_the_release_the_commit_and_the_stored_formats_it_reads_and_writes() {
    let text = checked_version(env!("CARGO_BIN_EXE_queue-server"), "queue-server");
    let rest: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        rest,
        [
            "data directory (--data-dir): writes format 2, reads formats 1 to 2",
            "Redis key layout (--redis): writes layout 2, reads layouts 1 to 2",
        ]
    );
}

#[tokio::test]
async fn metrics_name_the_build() {
    let server = TestServer::start(Config::default()).await;
    let line = format!(
        "memq_build_info{{version=\"{}\",commit=\"{}\",data_format=\"2\",redis_layout=\"2\"}} 1",
        memq::version::RELEASE,
        memq::version::COMMIT
    );
    let http = reqwest::Client::new();
    for accept in ["text/plain", "application/openmetrics-text; version=1.0.0"] {
        let text = http
            .get(format!("{}/metrics", server.url()))
            .header("accept", accept)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.lines().any(|l| l == line),
            "{accept}: {line} in\n{text}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let server = TestServer::start(Config::default()).await;
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let resp = http
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_show_per_queue_figures_and_request_latency() {
    let server = TestServer::start(Config::default()).await;
    let client = server.client();
    client.create_queue("keygen", None).await.unwrap();
    for i in 0..3 {
        client
            .enqueue(
                "keygen",
                format!("work-item-{i}"),
                &EnqueueOptions::default(),
            )
            .await
            .unwrap();
    }
    client
        .dequeue("keygen", &DequeueOptions::default())
        .await
        .unwrap();
    // A plain request (curl's, promtool's) gets the Prometheus text format, as the official
    // client libraries answer it.
    let resp = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = resp.text().await.unwrap();
    for line in [
        "memq_queue_depth{queue=\"keygen\"} 2",
        "memq_queue_inflight{queue=\"keygen\"} 0",
        "memq_queue_enqueued_total{queue=\"keygen\"} 3",
        "memq_queue_dequeued_total{queue=\"keygen\"} 1",
        "memq_queue_acked_total{queue=\"keygen\"} 0",
        "memq_queue_requeued_total{queue=\"keygen\"} 0",
        "memq_queue_dead{queue=\"keygen\"} 0",
        "# TYPE memq_http_request_duration_seconds histogram",
    ] {
        assert!(
            text.lines().any(|l| l == line || l.starts_with(line)),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(
        text.contains("route=\"/memq/server/queues/{queue}/enqueue\""),
        "latency is labelled by route pattern:\n{text}"
    );
    assert!(
        !text.contains("# EOF") && !text.contains("# UNIT"),
        "{text}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_long_polls_idle_wait_is_measured_apart_from_the_dequeues_latency() {
    let server = TestServer::start(Config::default()).await;
    let url = server.url().to_string();
    let client = server.client();
    client.create_queue("idle", None).await.unwrap();
    let http = reqwest::Client::new();
    let dequeue = format!("{url}/memq/server/queues/idle/dequeue?lease=30s");
    // Nothing comes for 1.5 s: a 204 after the whole wait.
    let started = std::time::Instant::now();
    let resp = http
        .post(format!("{dequeue}&wait=1.5"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
    // An item comes while a poll waits: a 200 after part of its wait.
    let poll = tokio::spawn(http.post(format!("{dequeue}&wait=30")).send());
    queue_server::testing::polls_waiting(&url, 1).await;
    client
        .enqueue("idle", "work-item-0", &EnqueueOptions::default())
        .await
        .unwrap();
    assert_eq!(poll.await.unwrap().unwrap().status(), 200);
    let route = "route=\"/memq/server/queues/{queue}/dequeue\"";
    let series = |name: &str, labels: String| format!("{name}{{{labels}}} ");
    let value = |name: &'static str, labels: String| {
        let url = url.clone();
        async move { queue_server::testing::metric(&url, &series(name, labels)).await }
    };
    let wait = |outcome: &str| format!("{route},outcome=\"{outcome}\"");
    let busy = |status: u16| format!("method=\"POST\",{route},status=\"{status}\"");
    let waited = value("memq_long_poll_wait_seconds_sum", wait("empty")).await;
    let answering = value("memq_http_request_duration_seconds_sum", busy(204)).await;
    assert_eq!(
        value("memq_long_poll_wait_seconds_count", wait("empty")).await,
        1.0
    );
    // The 204's time is its wait plus a look or two; the wait is counted as a wait, not as
    // the request's latency.
    assert!(waited + answering >= 1.5, "{waited} + {answering}");
    assert!(
        answering < waited,
        "answering took {answering} s, waiting {waited} s"
    );
    assert_eq!(
        value("memq_long_poll_wait_seconds_count", wait("items")).await,
        1.0
    );
    assert_eq!(
        value("memq_http_request_duration_seconds_count", busy(200)).await,
        1.0
    );
    server.shutdown().await;
}

/// One metric family of an exposition: its type, whether it has help, its samples.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
    samples: Vec<(String, Vec<String>)>,
}

/// Parses OpenMetrics (or Prometheus 0.0.4) text into families, checking the line syntax.
fn families(text: &str) -> std::collections::BTreeMap<String, Family> {
    let mut out = std::collections::BTreeMap::<String, Family>::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(!help.trim().is_empty(), "{name} has an empty help");
            out.entry(name.into()).or_default().help = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name type");
            out.entry(name.into()).or_default().kind = kind.into();
        } else if line == "# EOF" || line.is_empty() {
        } else {
            assert!(!line.starts_with('#'), "unknown comment line {line:?}");
            let (series, value) = line.rsplit_once(' ').expect("sample and value");
            value.parse::<f64>().expect("a number");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("closed labels");
                    let names = labels
                        .split("\",")
                        .filter(|l| !l.is_empty())
                        .map(|l| l.split_once('=').expect("label=value").0.to_string())
                        .collect();
                    (name, names)
                }
                None => (series, Vec::new()),
            };
            let family = out
                .keys()
                .filter(|f| name == f.as_str() || name.starts_with(&format!("{f}_")))
                .max_by_key(|f| f.len())
                .unwrap_or_else(|| panic!("sample {name} has no TYPE line before it"))
                .clone();
            out.get_mut(&family)
                .unwrap()
                .samples
                .push((name.to_string(), labels));
        }
    }
    out
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The Prometheus naming rules (prometheus.io/docs/practices/naming) that a linter can check.
fn check_naming(text: &str, openmetrics: bool) {
    let families = families(text);
    assert!(families.len() >= 10, "{families:?}");
    for (name, family) in &families {
        assert!(
            name.starts_with("memq_"),
            "{name}: one prefix for the application"
        );
        assert!(valid_name(name), "{name}: lowercase snake_case");
        assert!(family.help, "{name} has no HELP");
        for unit in [
            "_ms",
            "_milliseconds",
            "_minutes",
            "_kb",
            "_mb",
            "_kilobytes",
            "_megabytes",
        ] {
            assert!(
                !name.contains(unit),
                "{name}: base units only (seconds, bytes)"
            );
        }
        for suffix in ["_count", "_sum", "_bucket"] {
            assert!(!name.ends_with(suffix), "{name}: reserved suffix");
        }
        for (sample, labels) in &family.samples {
            for label in labels {
                assert!(
                    valid_name(label) && !label.starts_with("__"),
                    "{sample}: label {label}"
                );
            }
            match family.kind.as_str() {
                "counter" if openmetrics => assert_eq!(sample, &format!("{name}_total")),
                "counter" => {
                    assert!(name.ends_with("_total"), "{name}: counters end in _total");
                    assert_eq!(sample, name);
                }
                "gauge" => {
                    assert!(!name.ends_with("_total"), "{name}: _total is for counters");
                    assert_eq!(sample, name);
                }
                "histogram" => {
                    assert!(
                        name.ends_with("_seconds") || name.ends_with("_bytes"),
                        "{name}: unit"
                    );
                    let part = sample.strip_prefix(name.as_str()).unwrap();
                    assert!(["_bucket", "_sum", "_count"].contains(&part), "{sample}");
                    assert_eq!(
                        part == "_bucket",
                        labels.iter().any(|l| l == "le"),
                        "{sample}"
                    );
                }
                other => panic!("{name}: unexpected type {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn metric_names_follow_the_prometheus_naming_rules_in_both_formats() {
    // Over HTTPS, so that the certificate's expiry gauge is checked too.
    let dir = tempfile::tempdir().unwrap();
    let ca = queue_server::testing::TestCa::new();
    let (tls_cert, tls_key) = ca.issue(2040).write(dir.path());
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let server = TestServer::start(Config {
        max_memory: queue_server::config::MemoryLimit::Bytes(1 << 20),
        tls_cert: Some(tls_cert),
        tls_key: Some(tls_key),
        ..Config::default()
    })
    .await;
    let client = memq::Client::new_trusting(server.base_url(), Some(&ca_file)).unwrap();
    client.create_queue("keygen", None).await.unwrap();
    client
        .enqueue("keygen", "work-item-0", &EnqueueOptions::default())
        .await
        .unwrap();
    client
        .dequeue("keygen", &DequeueOptions::default())
        .await
        .unwrap();
    let http = ca.http_client();
    let url = format!("{}/metrics", server.url());
    let open = http
        .get(&url)
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        open.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let open = open.text().await.unwrap();
    assert!(open.ends_with("# EOF\n"));
    check_naming(&open, true);
    let plain = http
        .get(&url)
        .header("accept", "text/plain;version=0.0.4")
        .send()
        .await
        .unwrap();
    assert_eq!(
        plain.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let plain = plain.text().await.unwrap();
    assert!(!plain.contains("# EOF"));
    check_naming(&plain, false);
    assert!(plain.contains("\nmemq_tls_certificate_expiry_timestamp_seconds 2208988800\n"));
    server.shutdown().await;
}

#[tokio::test]
async fn the_grafana_dashboard_queries_only_metrics_the_server_exposes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../manifests/grafana/memq-dashboard.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    // The memory store, whose --max-memory gauges the dashboard also plots (with --redis they
    // are absent and those panels show no data).
    let server = TestServer::start_as_given(Config {
        max_memory: queue_server::config::MemoryLimit::Bytes(1 << 20),
        ..Config::default()
    })
    .await;
    let client = server.client();
    client.create_queue("q", None).await.unwrap();
    // A long poll, so that its wait histogram has series.
    let poll = DequeueOptions {
        wait: Some(std::time::Duration::from_millis(10)),
        ..DequeueOptions::default()
    };
    client.dequeue("q", &poll).await.unwrap();
    let text = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let exposed: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("memq_") {
                    queried += 1;
                    assert!(
                        exposed.iter().any(|e| e == word),
                        "panel {:?} queries {word}, which /metrics does not expose",
                        panel["title"]
                    );
                }
            }
        }
    }
    assert!(queried >= 10);
    server.shutdown().await;
}
