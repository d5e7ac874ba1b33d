//! `producer --launch-job`: after loading, the server launches a consumer Job (here through a
//! fake Kubernetes API server), or the producer says clearly why it could not.

#[path = "../../queue-server/tests/fake_kube/mod.rs"]
mod fake_kube;

use fake_kube::FakeKube;
use queue_server::Config;
use queue_server::testing::TestServer;

const PRODUCER: &str = env!("CARGO_BIN_EXE_producer");

async fn producer(server: &TestServer, extra: &[&str]) -> std::process::Output {
    let run = tokio::process::Command::new(PRODUCER)
        .args([
            "--server",
            &server.base_url(),
            "--queue",
            "keygen",
            "--create",
            "--no-progress",
        ])
        .args(extra)
        .output();
    tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("producer finished in time")
        .expect("run producer")
}

#[tokio::test]
async fn launch_job_asks_the_server_for_a_consumer_job_after_loading() {
    let fake = FakeKube::start().await;
    let config = Config {
        jobs: true,
        kube_config: Some(fake.config("memq")),
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let out = producer(
        &server,
        &["--launch-job", "--parallelism", "3", "work-item-{0..9}"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("launched Job consumer-keygen-"), "{stdout}");
    let posts = fake.requests_with("POST");
    assert_eq!(posts.len(), 1, "exactly one Job is created");
    let job = posts[0].body.as_ref().expect("a Job body");
    assert_eq!(job["spec"]["parallelism"], 3);
    assert_eq!(job["metadata"]["labels"]["memq.queue"], "keygen");
    assert_eq!(
        server.client().queue("keygen").await.unwrap().depth,
        10,
        "loaded first"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn launch_job_without_a_cluster_fails_with_the_reason_and_exit_1() {
    let server = TestServer::start(Config::default()).await;
    let out = producer(&server, &["--launch-job", "a", "b"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("kubernetes_unavailable"), "{stderr}");
    // The items were still loaded: launching comes after.
    assert_eq!(server.client().queue("keygen").await.unwrap().depth, 2);
    server.shutdown().await;
}

#[tokio::test]
async fn parallelism_needs_launch_job_and_a_sane_number() {
    let server = TestServer::start(Config::default()).await;
    for bad in [
        &["--parallelism", "3", "x"][..],
        &["--launch-job", "--parallelism", "0", "x"],
        &["--launch-job", "--parallelism", "1001", "x"],
    ] {
        let out = producer(&server, bad).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    server.shutdown().await;
}
