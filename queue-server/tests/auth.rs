//! `--token`: 401 without or with a wrong token on every route but health and metrics.

use queue_server::Config;
use queue_server::testing::TestServer;
use reqwest::Method;

const TOKEN: &str = "s3cret-token";

fn routes() -> Vec<(Method, &'static str)> {
    vec![
        (Method::PUT, "/memq/server/queues/q"),
        (Method::GET, "/memq/server/queues/q"),
        (Method::POST, "/memq/server/queues/q/enqueue"),
        (Method::POST, "/memq/server/queues/q/dequeue"),
        (Method::POST, "/memq/server/queues/q/drain"),
        (Method::POST, "/memq/server/queues/q/pause"),
        (Method::POST, "/memq/server/queues/q/resume"),
        (Method::POST, "/memq/server/queues/q/ack"),
        (
            Method::POST,
            "/memq/server/queues/q/leases/01ARZ3NDEKTSV4RRFFQ69G5FAV/ack",
        ),
        (
            Method::POST,
            "/memq/server/queues/q/leases/01ARZ3NDEKTSV4RRFFQ69G5FAV/nack",
        ),
        (
            Method::POST,
            "/memq/server/queues/q/leases/01ARZ3NDEKTSV4RRFFQ69G5FAV/extend",
        ),
        (Method::GET, "/memq/server/queues/q/dead"),
        (Method::POST, "/memq/server/queues/q/dead/requeue"),
        (Method::DELETE, "/memq/server/queues/q/dead"),
        (Method::GET, "/memq/server/queues/q/messages"),
        (Method::GET, "/memq/server/stats"),
        (Method::DELETE, "/memq/server/queues/q"),
    ]
}

#[tokio::test]
async fn every_queue_route_needs_the_token() {
    let server = TestServer::start(Config {
        token: Some(TOKEN.into()),
        ..Config::default()
    })
    .await;
    let http = reqwest::Client::new();
    for (method, path) in routes() {
        let url = format!("{}{path}", server.url());
        let none = http
            .request(method.clone(), &url)
            .body("[]")
            .send()
            .await
            .unwrap();
        assert_eq!(none.status(), 401, "{method} {path} without a token");
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        let err: serde_json::Value = none.json().await.unwrap();
        assert_eq!(err["code"], "unauthorized");
        let wrong = http
            .request(method.clone(), &url)
            .bearer_auth("s3cret-tokeX")
            .body("[]")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{method} {path} with a wrong token");
        let prefix = http
            .request(method.clone(), &url)
            .bearer_auth("s3cret")
            .body("[]")
            .send()
            .await
            .unwrap();
        assert_eq!(
            prefix.status(),
            401,
            "{method} {path} with a prefix of the token"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_right_token_opens_every_route() {
    let server = TestServer::start(Config {
        token: Some(TOKEN.into()),
        ..Config::default()
    })
    .await;
    let http = reqwest::Client::new();
    for (method, path) in routes() {
        let url = format!("{}{path}", server.url());
        let resp = http
            .request(method.clone(), &url)
            .bearer_auth(TOKEN)
            .body("[]")
            .send()
            .await
            .unwrap();
        // Past auth: the route itself answers (2xx, or 404 for the made-up lease ids).
        assert_ne!(resp.status(), 401, "{method} {path}");
        assert!(
            resp.status().is_success() || resp.status() == 404,
            "{method} {path}: {}",
            resp.status()
        );
    }
    let client = memq::Client::new(server.base_url())
        .unwrap()
        .with_token(Some(TOKEN.into()));
    client.create_queue("work", None).await.unwrap();
    assert_eq!(client.stats().await.unwrap().queues.len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn health_and_metrics_stay_open_and_public_reads_open_stats_only() {
    let config = Config {
        token: Some(TOKEN.into()),
        public_reads: true,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let resp = http
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    let authed = memq::Client::new(server.base_url())
        .unwrap()
        .with_token(Some(TOKEN.into()));
    authed.create_queue("q", None).await.unwrap();
    let anon = server.client();
    assert_eq!(anon.stats().await.unwrap().queues.len(), 1);
    assert_eq!(anon.queue("q").await.unwrap().name, "q");
    assert_eq!(anon.peek("q", None).await.unwrap_err().status(), Some(401));
    assert_eq!(
        anon.enqueue("q", "x", &Default::default())
            .await
            .unwrap_err()
            .status(),
        Some(401)
    );
    server.shutdown().await;
}
