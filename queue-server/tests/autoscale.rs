//! The autoscaler against a fake Kubernetes API server: its decisions over a scripted cluster
//! (depth rises, pods pending, pods run, a Job fails, the API server goes down, the queue is
//! finished), and the loop that serve() owns.

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
use queue_server::testing::TestServer;
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

#[tokio::test]
async fn serve_runs_the_autoscaler_every_interval_through_an_api_outage_and_stops_it() {
    let mut fake = FakeKube::start().await;
    let server = TestServer::start(Config {
        jobs: true,
        autoscale: true,
        autoscale_interval: Duration::from_millis(50),
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
    client
        .enqueue_lines("keygen", "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n14\n15\n16\n17\n18\n19\n20\n21\n22\n23\n24\n25\n", None)
        .await
        .unwrap();
    // Several intervals with the API server down: the server goes on serving.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(client.queue("keygen").await.unwrap().depth, 25);
    assert!(fake.requests().is_empty());

    fake.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while posted(&fake).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no Job launched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(posted(&fake), [3]);
    // Not started yet, then pending: still one Job, interval after interval.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let name = job_names(&fake)[0].clone();
    // As the Job controller does it: pods first, then the Job's status.
    fake.add_pods(&name, "Pending", 3);
    fake.set_job_status(&name, status(3, 0, 0, &[]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(posted(&fake), [3]);
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
