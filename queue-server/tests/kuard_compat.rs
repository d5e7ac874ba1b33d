//! kuard's MemQ flow (seed 001) against the real server: same routes, shapes and statuses.

use std::collections::BTreeSet;

use queue_server::Config;
use queue_server::testing::TestServer;
use serde_json::Value;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .expect("a JSON object")
        .keys()
        .cloned()
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn seed_curl_flow_gives_kuards_shapes_and_statuses() {
    let server = TestServer::start(Config::default()).await;
    let http = reqwest::Client::new();
    let base = server.base_url();

    // curl -X PUT localhost:8080/memq/server/queues/keygen
    let resp = http
        .put(format!("{base}/queues/keygen"))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());

    // for i in work-item-{0..99}; do curl -X POST .../enqueue -d "$i"; done
    let mut ids = BTreeSet::new();
    for i in 0..100 {
        let resp = http
            .post(format!("{base}/queues/keygen/enqueue"))
            .header("content-type", "application/x-www-form-urlencoded") // what curl -d sends
            .body(format!("work-item-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let msg: Value = resp.json().await.unwrap();
        assert_eq!(
            keys(&msg),
            set(&["kind", "id", "body", "creationTimestamp"])
        );
        assert_eq!(msg["kind"], "message");
        assert_eq!(msg["body"], format!("work-item-{i}"));
        let ts = msg["creationTimestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(ts).is_ok(), "{ts}");
        assert!(
            ids.insert(msg["id"].as_str().unwrap().to_string()),
            "ids are unique"
        );
    }

    // curl .../stats
    let stats: Value = http
        .get(format!("{base}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys(&stats), set(&["kind", "queues"]));
    assert_eq!(stats["kind"], "stats");
    let row = &stats["queues"][0];
    for field in ["name", "depth", "enqueued", "dequeued", "drained"] {
        assert!(row.get(field).is_some(), "stats row lacks kuard's {field}");
    }
    assert_eq!(row["name"], "keygen");
    assert_eq!(
        (row["depth"].as_u64(), row["enqueued"].as_u64()),
        (Some(100), Some(100))
    );
    assert_eq!(
        (row["dequeued"].as_u64(), row["drained"].as_u64()),
        (Some(0), Some(0))
    );

    // kuard's worker: POST dequeue until 204, FIFO.
    for i in 0..100 {
        let resp = http
            .post(format!("{base}/queues/keygen/dequeue"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let msg: Value = resp.json().await.unwrap();
        assert_eq!(
            keys(&msg),
            set(&["kind", "id", "body", "creationTimestamp"])
        );
        assert_eq!(msg["body"], format!("work-item-{i}"));
    }
    let resp = http
        .post(format!("{base}/queues/keygen/dequeue"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.bytes().await.unwrap().is_empty());

    // Drain and delete answer 2xx, as kuard's do.
    let resp = http
        .post(format!("{base}/queues/keygen/drain"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .delete(format!("{base}/queues/keygen"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let stats: Value = http
        .get(format!("{base}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["queues"], serde_json::json!([]));
    server.shutdown().await;
}

#[tokio::test]
async fn put_is_201_then_200_and_stats_are_sorted_by_name() {
    let server = TestServer::start(Config::default()).await;
    let http = reqwest::Client::new();
    let base = server.base_url();
    for (name, expect) in [("b", 201), ("a", 201), ("b", 200), ("c", 201)] {
        let resp = http
            .put(format!("{base}/queues/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), expect, "{name}");
        let obj: Value = resp.json().await.unwrap();
        assert_eq!(obj["kind"], "queue");
        assert_eq!(obj["name"], name);
    }
    let stats = server.client().stats().await.unwrap();
    let names: Vec<_> = stats.queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let q = &stats.queues[0];
    assert_eq!((q.lease_seconds, q.max_attempts, q.max_depth), (30, 5, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn kuard_routes_on_a_missing_queue_are_client_errors() {
    let server = TestServer::start(Config::default()).await;
    let http = reqwest::Client::new();
    let base = server.base_url();
    for (method, path) in [
        (reqwest::Method::POST, "/queues/nope/enqueue"),
        (reqwest::Method::POST, "/queues/nope/dequeue"),
        (reqwest::Method::POST, "/queues/nope/drain"),
        (reqwest::Method::DELETE, "/queues/nope"),
    ] {
        let resp = http
            .request(method.clone(), format!("{base}{path}"))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["kind"], "error");
        assert_eq!(err["code"], "queue_not_found");
        assert_eq!(err["message"], "queue \"nope\" does not exist");
    }
    server.shutdown().await;
}
