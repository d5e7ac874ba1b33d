//! `GET /openapi.json`: served without the token, and it describes exactly what the server
//! serves: every documented operation is routed, and every other method on a documented path
//! is 405 (so a method added to the router without documentation fails here; a new path fails
//! the unit test that holds the router's path list against the document).

use queue_server::Config;
use queue_server::testing::TestServer;
use reqwest::Method;
use serde_json::Value;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// A concrete URL path for a templated one.
fn concrete(path: &str) -> String {
    path.replace("{queue}", "q")
        .replace("{lease}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .replace("{name}", "consumer-q-x7k2p")
        .replace("{item}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
}

#[tokio::test]
async fn the_document_is_open_and_matches_the_routes_method_by_method() {
    let server = TestServer::start(Config {
        token: Some("s3cret".into()),
        ..Config::default()
    })
    .await;
    // Redirects are answers of their own here.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let resp = http
        .get(format!("{}/openapi.json", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "served without the token");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 25, "{} paths", paths.len());
    for (path, item) in paths {
        let url = format!("{}{}", server.url(), concrete(path));
        for method in METHODS {
            // Streams answer with headers at once; the body is not read.
            let resp = http
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    &url,
                )
                .bearer_auth("s3cret")
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let code = if resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
            {
                resp.json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v.get("code").and_then(Value::as_str).map(str::to_owned))
            } else {
                None
            };
            if item.get(method).is_some() {
                assert!(
                    status != 405 && code.as_deref() != Some("not_found"),
                    "{method} {path} is documented but not routed ({status})"
                );
                let documented = &item[method]["responses"];
                assert!(
                    documented.get(status.to_string()).is_some(),
                    "{method} {path} answered {status}, which is not documented"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {path} is routed but not documented in /openapi.json"
                );
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn every_queue_parameter_carries_the_queue_name_rule_and_the_limits() {
    let server = TestServer::start(Config::default()).await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut queue_params = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for param in op["parameters"].as_array().into_iter().flatten() {
                if param["name"] == "queue" {
                    queue_params += 1;
                    assert_eq!(
                        param["schema"]["pattern"],
                        memq::name::QUEUE_NAME_PATTERN,
                        "{method} {path}"
                    );
                }
                if param["name"] == "max" && path.ends_with("/dequeue") {
                    assert_eq!(param["schema"]["maximum"], memq::limits::MAX_DEQUEUE);
                }
            }
        }
    }
    assert!(queue_params >= 17, "{queue_params} queue parameters");
}

/// `/docs` and `/docs/` both reach the page; its files are served, not described.
#[tokio::test]
async fn the_docs_page_is_reached_with_or_without_a_slash() {
    let server = TestServer::start(Config {
        token: Some("s3cret".into()),
        ..Config::default()
    })
    .await;
    let http = reqwest::Client::new();
    for path in ["/docs", "/docs/"] {
        let resp = http
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.url().path(), "/docs/index.html", "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(resp.text().await.unwrap().contains("swagger-ui"));
    }
    let doc: Value = http
        .get(format!("{}/openapi.json", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert!(
        paths.keys().all(|p| !p.starts_with("/docs")),
        "{:?}",
        paths.keys()
    );
    server.shutdown().await;
}
