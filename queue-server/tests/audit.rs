//! The audit trail: every administrative action is logged once, at info, with who asked, its
//! queue and how it ended, in the JSON log format too; the token never appears in the log.

use queue_server::testing::ServerProcess;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_queue-server");
const TOKEN: &str = "audit-s3cret-token";

#[tokio::test]
async fn administrative_actions_are_logged_once_each_with_who_and_outcome_never_the_token() {
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        tokens.path(),
        "ops admin * ops-s3cret-token\nworker consumer * worker-s3cret-token\n",
    )
    .unwrap();
    let mut server = ServerProcess::start_logged(
        BIN,
        &[
            "--log-format",
            "json",
            "--token",
            TOKEN,
            "--tokens-file",
            tokens.path().to_str().unwrap(),
        ],
        &[("RUST_LOG", "info")],
    )
    .await;
    let url = server.url();
    let http = reqwest::Client::new();
    let q = format!("{url}/memq/server/queues");
    let call_as = async |method: reqwest::Method, at: String, token: Option<&str>| {
        let mut req = http.request(method, at);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.unwrap().status().as_u16()
    };
    let call = async |method: reqwest::Method, at: String, token: bool| {
        call_as(method, at, token.then_some(TOKEN)).await
    };
    use reqwest::Method;
    assert_eq!(call(Method::PUT, format!("{q}/orders"), true).await, 201);
    assert_eq!(
        call(Method::POST, format!("{q}/orders/enqueue"), true).await,
        200
    );
    assert_eq!(
        call(Method::POST, format!("{q}/orders/drain"), true).await,
        200
    );
    assert_eq!(
        call(Method::DELETE, format!("{q}/orders"), false).await,
        401
    );
    assert_eq!(
        call(Method::POST, format!("{q}/nope/pause"), true).await,
        404
    );
    let worker = Some("worker-s3cret-token");
    assert_eq!(
        call_as(Method::POST, format!("{q}/orders/drain"), worker).await,
        403
    );
    let ops = Some("ops-s3cret-token");
    assert_eq!(
        call_as(Method::DELETE, format!("{q}/orders"), ops).await,
        200
    );
    assert_eq!(
        call_as(Method::DELETE, format!("{url}/jobs/consumers-1"), ops).await,
        503
    );
    server.terminate();

    let text = server.log();
    for token in [TOKEN, "ops-s3cret", "worker-s3cret"] {
        assert!(!text.contains(token), "a token is in the log:\n{text}");
    }
    let audit: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "memq::audit")
        .collect();
    let seen: Vec<(String, String, String, String, u64)> = audit
        .iter()
        .map(|v| {
            let f = v;
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            (
                s("action"),
                s("subject"),
                s("who"),
                s("outcome"),
                f["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("queue.create", "orders", "the admin token", "done", 201),
            ("queue.drain", "orders", "the admin token", "done", 200),
            ("queue.delete", "orders", "no valid token", "refused", 401),
            ("queue.pause", "nope", "the admin token", "failed", 404),
            ("queue.drain", "orders", "worker", "refused", 403),
            ("queue.delete", "orders", "ops", "done", 200),
            ("job.delete", "consumers-1", "ops", "failed", 503),
        ]
        .map(|(a, s, w, o, c)| (a.into(), s.into(), w.into(), o.into(), c)),
        "{text}"
    );
    assert!(audit.iter().all(|v| v["level"] == "INFO"), "{audit:?}");
}
