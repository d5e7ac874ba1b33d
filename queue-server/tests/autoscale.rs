//! The autoscaler against a fake Kubernetes API server: its decisions over a scripted cluster
//! (depth rises, pods pending, pods run, a Job fails, the API server goes down, the queue is
//! finished), and the loop that serve() owns (backoff, one log line per cause).

mod fake_kube;

use std::time::Duration;

use clap::Parser;
use fake_kube::{FakeKube, status};
use memq::{Autoscale, QueueConfigPatch};
use queue_server::Config;
use queue_server::broker::NewItem;
use queue_server::error::Error;
use queue_server::kube::autoscale::Decision;
use queue_server::kube::{Autoscaler, Launcher, template};
use queue_server::store::{Store, StoreOptions};
use queue_server::testing::{TestServer, eventually, metric};
use tokio_util::sync::CancellationToken;

const NS: &str = "work";

fn autoscale(max_parallelism: u32, items_per_pod: u64) -> QueueConfigPatch {
    QueueConfigPatch {
        autoscale: Some(Some(Autoscale {
            max_parallelism,
            items_per_pod,
        })),
        ..Default::default()
    }
}

async fn fill(store: &Store, queue: &str, n: usize) {
    let items = (0..n)
        .map(|i| NewItem {
            body: format!("item-{i}").into(),
            key: None,
        })
        .collect();
    store.enqueue(queue, items, 0).await.unwrap();
}

fn decision(queue: &str, desired: u32, capacity: u32, launch: u32) -> Decision {
    Decision {
        queue: queue.into(),
        desired,
        capacity,
        launch,
    }
}

/// Parallelism of every Job posted so far, in order.
fn posted(fake: &FakeKube) -> Vec<i64> {
    fake.requests_with("POST")
        .iter()
        .map(|r| {
            r.body.as_ref().unwrap()["spec"]["parallelism"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

fn job_names(fake: &FakeKube) -> Vec<String> {
    fake.jobs()
        .iter()
        .map(|j| j.metadata.name.clone().unwrap())
        .collect()
}

#[tokio::test]
async fn autoscaler_follows_a_scripted_cluster() {
    let mut fake = FakeKube::start().await;
    let store = Store::open(StoreOptions::default(), CancellationToken::new()).unwrap();
    let launcher = Launcher::new(
        fake.config(NS),
        NS.into(),
        template::default_template("memq-rs:0.1.0").unwrap(),
        "http://queue:8080/memq/server",
    )
    .unwrap();
    let autoscaler = Autoscaler::new(launcher, store.clone(), Default::default());

    // Work without opt-in, and an opted-in queue with nothing ready: no API call at all.
    store.create_queue("manual", None).await.unwrap();
    fill(&store, "manual", 500).await;
    store
        .create_queue("keygen", Some(&autoscale(10, 100)))
        .await
        .unwrap();
    assert_eq!(autoscaler.reconcile().await.unwrap(), []);
    assert!(fake.requests().is_empty());

    // Depth rises to 250: one Job of ceil(250/100) = 3, after looking at Jobs and pods.
    fill(&store, "keygen", 250).await;
    assert_eq!(
        autoscaler.reconcile().await.unwrap(),
        [decision("keygen", 3, 0, 3)]
    );
    assert_eq!(posted(&fake), [3]);
    let selectors: Vec<_> = fake
        .requests_with("GET")
        .iter()
        .map(|r| (r.path.clone(), r.query.get("labelSelector").cloned()))
        .collect();
    // Jobs before pods (see Autoscaler::reconcile), both by the queue label.
    assert_eq!(
        selectors,
        [
            (
                format!("/apis/batch/v1/namespaces/{NS}/jobs"),
                Some("memq.queue".into())
            ),
            (
                format!("/api/v1/namespaces/{NS}/pods"),
                Some("memq.queue".into())
            ),
        ]
    );
    let body = fake.requests_with("POST")[0].body.clone().unwrap();
    assert_eq!(body["metadata"]["labels"]["memq.queue"], "keygen");
    assert_eq!(
        body["spec"]["template"]["spec"]["containers"][0]["args"],
        serde_json::json!(["--server=http://queue:8080/memq/server", "--queue=keygen"])
    );
    let a = job_names(&fake)[0].clone();

    // The Job controller has not started it yet: its 3 pods are on their way, no duplicate.
    assert_eq!(
        autoscaler.reconcile().await.unwrap(),
        [decision("keygen", 3, 3, 0)]
    );
    assert_eq!(posted(&fake), [3]);

    // Started, pods pending; depth rises to 900: 6 more.
    fake.add_pods(&a, "Pending", 3);
    fake.set_job_status(&a, status(3, 0, 0, &[]));
    fill(&store, "keygen", 650).await;
    assert_eq!(
        autoscaler.reconcile().await.unwrap(),
        [decision("keygen", 9, 3, 6)]
    );
    assert_eq!(posted(&fake), [3, 6]);
    let b = job_names(&fake)[1].clone();

    // Pods pending, then running: nothing more.
    fake.add_pods(&b, "Pending", 6);
    fake.set_job_status(&b, status(6, 0, 0, &[]));
    assert_eq!(
        autoscaler.reconcile().await.unwrap(),
        [decision("keygen", 9, 9, 0)]
    );
    fake.set_pod_phase(&a, "Running");
    fake.set_pod_phase(&b, "Running");
    assert_eq!(
        autoscaler.reconcile().await.unwrap(),
        [decision("keygen", 9, 9, 0)]
    );
    assert_eq!(posted(&fake), [3, 6]);

    // The API server goes down: an error, no panic; back up: on as before.
    fake.stop().await;
    let err = autoscaler.reconcile().await.unwrap_err();
    assert!(matches!(err, Error::KubernetesUnavailable(_)), "{err}");
    fake.restart().await;
    assert_eq!(
        autoscaler.reconcile().await.unwrap(),
        [decision("keygen", 9, 9, 0)]
    );

    // Job b fails (its pods failed, backoff limit reached): not capacity any more.
    fake.set_pod_phase(&b, "Failed");
    fake.set_job_status(&b, status(0, 0, 6, &[("Failed", "True")]));
    assert_eq!(
        autoscaler.reconcile().await.unwrap(),
        [decision("keygen", 9, 3, 6)]
    );
    assert_eq!(posted(&fake), [3, 6, 6]);
    let c = job_names(&fake)[2].clone();

    // A refused create is an error of the pass; the next pass decides again.
    fake.set_job_status(&c, status(0, 0, 0, &[("Failed", "True")]));
    fake.fail_next_on("POST", 403, "Forbidden", "jobs.batch is forbidden");
    let err = autoscaler.reconcile().await.unwrap_err();
    assert!(matches!(err, Error::KubernetesForbidden(_)), "{err}");
    assert_eq!(
        autoscaler.reconcile().await.unwrap(),
        [decision("keygen", 9, 3, 6)]
    );
    assert_eq!(posted(&fake).len(), 5);

    // Queue paused, then finished (drained): no API call.
    fake.clear_requests();
    store.set_paused("keygen", true).await.unwrap();
    assert_eq!(autoscaler.reconcile().await.unwrap(), []);
    store.set_paused("keygen", false).await.unwrap();
    store.drain("keygen").await.unwrap();
    assert_eq!(autoscaler.reconcile().await.unwrap(), []);
    assert!(fake.requests().is_empty());
}

/// Log lines of this test process, captured from the global tracing subscriber.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn install() -> Self {
        let logs = Logs::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter("queue_server=info")
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        logs
    }

    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock())
            .matches(needle)
            .count()
    }
}

#[tokio::test]
async fn serve_runs_the_autoscaler_through_an_api_outage_with_backoff_and_one_log_line() {
    let logs = Logs::install();
    let mut fake = FakeKube::start().await;
    let server = TestServer::start(Config {
        jobs: true,
        autoscale: true,
        autoscale_interval: Duration::from_millis(20),
        kube_config: Some(fake.config(NS)),
        ..Config::default()
    })
    .await;
    let client = server.client();
    client
        .create_queue("keygen", Some(&autoscale(4, 10)))
        .await
        .unwrap();
    fake.stop().await;
    fake.clear_requests();
    let items: String = (1..=25).map(|i| format!("{i}\n")).collect();
    // From here passes fail while the API server is down: after the first, waits of 40, 80 and
    // 160 ms (not the 20 ms interval), so four failures take at least 280 ms from the enqueue.
    let enqueued = tokio::time::Instant::now();
    client.enqueue_lines("keygen", items, None).await.unwrap();
    let failed = r#"memq_autoscaler_passes_total{result="error"}"#;
    eventually(Duration::from_secs(10), "four failed passes", || async {
        let n = metric(&server.url(), failed).await;
        if n >= 4.0 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
    assert!(
        enqueued.elapsed() >= Duration::from_millis(280),
        "{:?}",
        enqueued.elapsed()
    );
    assert_eq!(client.queue("keygen").await.unwrap().depth, 25);
    assert!(fake.requests().is_empty());
    // One warning for the outage, however many passes failed.
    assert_eq!(logs.count("autoscaler pass failed"), 1);

    fake.restart().await;
    eventually(
        Duration::from_secs(10),
        "a Job once the API server is back",
        || async {
            let p = posted(&fake);
            if p.is_empty() {
                Err("none".to_string())
            } else {
                Ok(())
            }
        },
    )
    .await;
    assert_eq!(posted(&fake), [3]);
    eventually(Duration::from_secs(10), "the recovery logged", || async {
        match logs.count("autoscaler passes work again") {
            1 => Ok(()),
            n => Err(format!("{n} lines")),
        }
    })
    .await;
    // Not started yet, then pending: still one Job, pass after pass.
    let ok = r#"memq_autoscaler_passes_total{result="ok"}"#;
    let passes = metric(&server.url(), ok).await;
    let name = job_names(&fake)[0].clone();
    // As the Job controller does it: pods first, then the Job's status.
    fake.add_pods(&name, "Pending", 3);
    fake.set_job_status(&name, status(3, 0, 0, &[]));
    eventually(Duration::from_secs(10), "five more passes", || async {
        let n = metric(&server.url(), ok).await;
        if n >= passes + 5.0 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
    assert_eq!(posted(&fake), [3]);
    assert_eq!(
        metric(&server.url(), "memq_autoscaler_launched_jobs_total").await,
        1.0
    );
    // serve() cancels and awaits the loop.
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown with the autoscaler running");
}

#[test]
fn flags_and_their_defaults() {
    let config = Config::try_parse_from(["queue-server", "--jobs", "--autoscale"]).unwrap();
    assert!(config.jobs && config.autoscale);
    assert_eq!(config.autoscale_interval, Duration::from_secs(10));
    assert_eq!(config.server_url, "http://queue:8080/memq/server");
    assert_eq!(config.consumer_image, "memq-rs:0.1.0");
    assert_eq!(config.job_template, None);
    let config = Config::try_parse_from([
        "queue-server",
        "--jobs",
        "--job-template=/etc/memq/job-template.yaml",
        "--namespace=work",
        "--server-url=http://q:8080/memq/server",
        "--consumer-image=memq-rs:9",
        "--autoscale",
        "--autoscale-interval=1m30s",
    ])
    .unwrap();
    assert_eq!(
        config.job_template.as_deref(),
        Some(std::path::Path::new("/etc/memq/job-template.yaml"))
    );
    assert_eq!(config.namespace.as_deref(), Some("work"));
    assert_eq!(config.autoscale_interval, Duration::from_secs(90));
    let err = Config::try_parse_from(["queue-server", "--autoscale"]).unwrap_err();
    assert!(err.to_string().contains("--jobs"), "{err}");
    assert!(Config::try_parse_from(["queue-server", "--autoscale-interval=0s"]).is_err());
}
