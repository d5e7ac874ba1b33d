//! The Role in manifests/base/role.yaml grants exactly what the launcher and the autoscaler
//! call: every request they make in one run through all their operations, against the fake
//! API server, is turned into its RBAC (group, resource, verb) as the API server's authorizer
//! would, and compared with the Role and with `RBAC_VERBS`.

mod fake_kube;

use std::collections::BTreeSet;
use std::time::Duration;

use fake_kube::{FakeKube, status};
use k8s_openapi::api::rbac::v1::Role;
use memq::{Autoscale, CreateJobRequest, QueueConfigPatch};
use queue_server::Config;
use queue_server::kube::RBAC_VERBS;
use queue_server::testing::{TestServer, eventually};

type Grants = BTreeSet<(String, String, String)>;

fn role_grants() -> Grants {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/base/role.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let role: Role = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(role.metadata.name.as_deref(), Some("queue-server-jobs"));
    let mut grants = Grants::new();
    for rule in role.rules.unwrap() {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.unwrap() {
            for resource in rule.resources.as_ref().unwrap() {
                for verb in &rule.verbs {
                    assert_ne!(verb, "*", "no wildcards");
                    grants.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    grants
}

#[tokio::test]
async fn role_grants_exactly_the_verbs_the_launcher_uses() {
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
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.shutdown().await;

    let used = fake.verbs();
    let declared: Grants = RBAC_VERBS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        used, declared,
        "RBAC_VERBS in src/kube/mod.rs vs the calls made"
    );
    assert_eq!(
        role_grants(),
        used,
        "manifests/base/role.yaml vs the calls made"
    );
}
