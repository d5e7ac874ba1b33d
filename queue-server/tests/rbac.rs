//! `RBAC_VERBS` is exactly what the launcher and the autoscaler call: every request they make
//! in one run through all their operations, against the fake API server, is turned into its
//! RBAC (group, resource, verb) as the API server's authorizer would, and compared with it.
//! (That the Role grants exactly `RBAC_VERBS` is checked by `cargo xtask manifests`, on every
//! rendered kustomization, and by tests/real_kube.rs on a real API server.)

mod fake_kube;

use std::collections::BTreeSet;
use std::time::Duration;

use fake_kube::{FakeKube, status};
use memq::{Autoscale, CreateJobRequest, QueueConfigPatch};
use queue_server::Config;
use queue_server::kube::RBAC_VERBS;
use queue_server::testing::{TestServer, eventually};

type Grants = BTreeSet<(String, String, String)>;

#[tokio::test]
async fn rbac_verbs_are_exactly_the_calls_the_launcher_and_autoscaler_make() {
    let fake = FakeKube::start().await;
    let server = TestServer::start(Config {
        jobs: true,
        autoscale: true,
        autoscale_interval: Duration::from_millis(20),
        kube_config: Some(fake.config("work")),
        ..Config::default()
    })
    .await;
    let client = server.client();

    // Every operation: start-up check, POST, GET, DELETE of /jobs, an autoscaler launch.
    client.create_queue("manual", None).await.unwrap();
    let job = client
        .create_job(&CreateJobRequest {
            queue: "manual".into(),
            parallelism: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    client.jobs().await.unwrap();
    client.delete_job(&job.name).await.unwrap();
    let auto = QueueConfigPatch {
        autoscale: Some(Some(Autoscale {
            max_parallelism: 2,
            items_per_pod: 1,
        })),
        ..Default::default()
    };
    client.create_queue("auto", Some(&auto)).await.unwrap();
    client
        .enqueue("auto", "x", &Default::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "an autoscaler launch", || async {
        if fake.jobs().is_empty() {
            Err("nothing launched".to_string())
        } else {
            Ok(())
        }
    })
    .await;
    let name = fake.jobs()[0].metadata.name.clone().unwrap();
    fake.add_pods(&name, "Running", 1);
    fake.set_job_status(&name, status(1, 0, 0, &[]));
    let declared: Grants = RBAC_VERBS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    // Every declared call is made (a call beyond them fails below, whenever it came).
    eventually(
        Duration::from_secs(10),
        "every declared call made",
        || async {
            let used = fake.verbs();
            if declared.is_subset(&used) {
                Ok(())
            } else {
                Err(format!("{used:?}"))
            }
        },
    )
    .await;
    server.shutdown().await;

    let used = fake.verbs();
    assert_eq!(
        used, declared,
        "RBAC_VERBS in src/kube/mod.rs vs the calls made"
    );
}
