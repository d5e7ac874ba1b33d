//! Operations: health, readiness and Prometheus metrics.

use memq::{DequeueOptions, EnqueueOptions};
use queue_server::Config;
use queue_server::testing::TestServer;

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
    let resp = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics-text")
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
    assert!(text.trim_end().ends_with("# EOF"));
    server.shutdown().await;
}
