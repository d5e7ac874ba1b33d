//! Bad input gets a JSON error with the right status, changes nothing, and the server goes on.

use queue_server::Config;
use queue_server::testing::TestServer;
use reqwest::Method;
use serde_json::Value;

struct Case {
    method: Method,
    path: String,
    body: Vec<u8>,
    status: u16,
    code: &'static str,
}

fn case(
    method: Method,
    path: &str,
    body: impl Into<Vec<u8>>,
    status: u16,
    code: &'static str,
) -> Case {
    Case {
        method,
        path: path.to_string(),
        body: body.into(),
        status,
        code,
    }
}

#[tokio::test]
async fn bad_input_table() {
    let server = TestServer::start(Config::default()).await;
    let client = server.client();
    client.create_queue("q", None).await.unwrap();
    client
        .enqueue("q", "keep me", &Default::default())
        .await
        .unwrap();
    let long_name = "x".repeat(129);
    let q = "/memq/server/queues";
    let mut cases = vec![
        case(
            Method::PUT,
            &format!("{q}/{long_name}"),
            "",
            400,
            "invalid_queue_name",
        ),
        case(
            Method::PUT,
            &format!("{q}/..%2Fx"),
            "",
            400,
            "invalid_queue_name",
        ),
        case(
            Method::PUT,
            &format!("{q}/a%20b"),
            "",
            400,
            "invalid_queue_name",
        ),
        case(
            Method::PUT,
            &format!("{q}/k%C3%B6ln"),
            "",
            400,
            "invalid_queue_name",
        ),
        case(
            Method::PUT,
            &format!("{q}/.hidden"),
            "",
            400,
            "invalid_queue_name",
        ),
        case(
            Method::PUT,
            &format!("{q}/%FF"),
            "",
            400,
            "invalid_queue_name",
        ),
        case(
            Method::PUT,
            &format!("{q}/q"),
            "{not json",
            400,
            "invalid_json",
        ),
        case(
            Method::PUT,
            &format!("{q}/q"),
            r#"{"leaseSeconds":-1}"#,
            400,
            "invalid_json",
        ),
        case(
            Method::PUT,
            &format!("{q}/q"),
            r#"{"leaseSeconds":0}"#,
            400,
            "invalid_json",
        ),
        case(
            Method::PUT,
            &format!("{q}/q"),
            r#"{"lease":5}"#,
            400,
            "invalid_json",
        ),
        // Found by schemathesis: serde's derived structs also read a JSON array by position.
        case(
            Method::PUT,
            &format!("{q}/q"),
            "[null, null]",
            400,
            "invalid_json",
        ),
        case(Method::PUT, &format!("{q}/q"), "[30]", 400, "invalid_json"),
        // Counts past the API's integers (int64), which most clients cannot hold.
        case(
            Method::PUT,
            &format!("{q}/q"),
            r#"{"maxDepth":9223372036854775808}"#,
            400,
            "invalid_json",
        ),
        case(
            Method::PUT,
            &format!("{q}/q"),
            r#"{"autoscale":{"maxParallelism":1,"itemsPerPod":9223372036854775808}}"#,
            400,
            "invalid_json",
        ),
        // The typed JSON batch route holds the same rules as `?batch=json`.
        case(
            Method::POST,
            &format!("{q}/q/enqueue/batch"),
            "[\"a\", 1]",
            400,
            "invalid_json",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue/batch?id=k"),
            "[\"a\"]",
            400,
            "invalid_parameter",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue/batch?delay=901"),
            "[\"a\"]",
            400,
            "invalid_parameter",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue?batch=json"),
            r#"[["key","body"]]"#,
            400,
            "invalid_json",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue"),
            vec![0xff, 0xfe, b'x'],
            400,
            "invalid_body",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue?batch=lines"),
            vec![b'a', b'\n', 0xc3],
            400,
            "invalid_body",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue?batch=json"),
            "[\"a\", 1]",
            400,
            "invalid_json",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue?batch=json"),
            "{\"a\":1}",
            400,
            "invalid_json",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue?batch=json"),
            "[\"a\"",
            400,
            "invalid_json",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue?batch=json"),
            "[{\"id\":\"\",\"body\":\"x\"}]",
            400,
            "invalid_parameter",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue?batch=xml"),
            "a",
            400,
            "invalid_parameter",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue?delay=901"),
            "a",
            400,
            "invalid_parameter",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue?delay=-1"),
            "a",
            400,
            "invalid_parameter",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue?delay=soon"),
            "a",
            400,
            "invalid_parameter",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue?keepEmpty=maybe&batch=lines"),
            "a",
            400,
            "invalid_parameter",
        ),
        case(
            Method::POST,
            &format!("{q}/q/enqueue"),
            vec![b'x'; 10 << 20],
            413,
            "item_too_large",
        ),
        case(
            Method::POST,
            &format!("{q}/nope/enqueue"),
            "a",
            404,
            "queue_not_found",
        ),
        case(
            Method::GET,
            &format!("{q}/nope"),
            "",
            404,
            "queue_not_found",
        ),
        case(Method::GET, "/memq/server/nowhere", "", 404, "not_found"),
        case(
            Method::PATCH,
            &format!("{q}/q"),
            "",
            405,
            "method_not_allowed",
        ),
        case(
            Method::POST,
            &format!("{q}/q/ack"),
            "not json",
            400,
            "invalid_json",
        ),
        case(
            Method::POST,
            &format!("{q}/q/ack"),
            "[1,2]",
            400,
            "invalid_json",
        ),
        case(
            Method::GET,
            &format!("{q}/q/dead?limit=0"),
            "",
            400,
            "invalid_parameter",
        ),
        case(
            Method::GET,
            &format!("{q}/q/messages?limit=abc"),
            "",
            400,
            "invalid_parameter",
        ),
        case(
            Method::POST,
            &format!("{q}/q/leases/xyz/extend?lease=0"),
            "",
            400,
            "invalid_parameter",
        ),
        case(
            Method::POST,
            &format!("{q}/q/leases/xyz/extend?seconds=0"),
            "",
            400,
            "invalid_parameter",
        ),
        case(
            Method::POST,
            &format!("{q}/q/leases/xyz/extend?seconds=10&lease=20"),
            "",
            400,
            "invalid_parameter",
        ),
        case(
            Method::POST,
            &format!("{q}/q/leases/xyz/nack?delay=1e9"),
            "",
            400,
            "invalid_parameter",
        ),
    ];
    for route in ["nack", "extend", "release"] {
        for (body, code) in [
            ("not json", "invalid_json"),
            ("[1,2]", "invalid_json"),
            ("{}", "invalid_json"),
        ] {
            cases.push(case(
                Method::POST,
                &format!("{q}/q/{route}"),
                body,
                400,
                code,
            ));
        }
        cases.push(case(
            Method::POST,
            &format!("{q}/nope/{route}"),
            "[]",
            404,
            "queue_not_found",
        ));
    }
    for query in ["delay=901", "delay=-1", "delay=abc"] {
        cases.push(case(
            Method::POST,
            &format!("{q}/q/nack?{query}"),
            "[]",
            400,
            "invalid_parameter",
        ));
    }
    for query in ["lease=0", "lease=43201", "lease=abc"] {
        cases.push(case(
            Method::POST,
            &format!("{q}/q/extend?{query}"),
            "[]",
            400,
            "invalid_parameter",
        ));
    }
    for (param, values) in [
        (
            "lease",
            &[
                "-1",
                "0",
                "0s",
                "abc",
                "99999999999999999999",
                "1e400",
                "100000h",
            ][..],
        ),
        ("wait", &["-1", "61", "abc", "1e400", "2m"][..]),
        (
            "max",
            &["0", "1001", "-1", "abc", "1.5", "99999999999999999999"][..],
        ),
    ] {
        for v in values {
            cases.push(case(
                Method::POST,
                &format!("{q}/q/dequeue?{param}={v}"),
                "",
                400,
                "invalid_parameter",
            ));
        }
    }
    let http = reqwest::Client::new();
    for c in cases {
        let resp = http
            .request(c.method.clone(), format!("{}{}", server.url(), c.path))
            .body(c.body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", c.method, c.path));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert_eq!(status, c.status, "{} {}: {text}", c.method, c.path);
        let err: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} {}: not JSON ({e}): {text}", c.method, c.path));
        assert_eq!(err["kind"], "error", "{text}");
        assert_eq!(err["code"], c.code, "{} {}: {text}", c.method, c.path);
        assert!(!err["message"].as_str().unwrap().is_empty());
    }
    // Nothing changed, and the server still answers.
    let stats = client.stats().await.unwrap();
    assert_eq!(stats.queues.len(), 1);
    let q = &stats.queues[0];
    assert_eq!((q.depth, q.enqueued, q.lease_seconds), (1, 1, 30));
    server.shutdown().await;
}

#[tokio::test]
async fn body_over_the_limit_is_413_and_the_server_goes_on() {
    let config = Config {
        max_body_bytes: 1 << 20,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let client = server.client();
    client.create_queue("q", None).await.unwrap();
    let body: String = (0..200_000).map(|i| format!("line-{i}\n")).collect();
    let err = client.enqueue_lines("q", body, None).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(413), Some("body_too_large"))
    );
    assert_eq!(client.queue("q").await.unwrap().depth, 0);
    server.shutdown().await;
}
