//! `--token`: 401 without or with a wrong token on every route but the open ones (probes,
//! metrics, the API description, the dashboard's assets), route by route from the route table.

use queue_server::Config;
use queue_server::http::routes::{Access, table};
use queue_server::testing::TestServer;
use reqwest::Method;

const TOKEN: &str = "s3cret-token";

/// Every route of the server, from its route table, with made-up parameters filled in: a route
/// added later is checked here without a line more.
fn routes() -> Vec<(Method, String, Access)> {
    table()
        .routes()
        .iter()
        .map(|r| {
            let path = r
                .path
                .replace("{queue}", "q")
                .replace("{lease}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
                .replace("{name}", "consumers-1")
                .replace("{file}", "index.html")
                .replace("{item}", "01ARZ3NDEKTSV4RRFFQ69G5FAV");
            // The one route whose query parameter is required.
            let path = if path.ends_with("/items") {
                format!("{path}?key=k")
            } else {
                path
            };
            let method = Method::from_bytes(r.method.as_str().as_bytes()).unwrap();
            (method, path, r.rule.access)
        })
        .collect()
}

#[tokio::test]
async fn every_route_but_the_open_ones_needs_the_token() {
    let server = TestServer::start(Config {
        token: Some(TOKEN.into()),
        ..Config::default()
    })
    .await;
    let http = reqwest::Client::new();
    let mut guarded = 0;
    for (method, path, access) in routes() {
        let url = format!("{}{path}", server.url());
        let none = http
            .request(method.clone(), &url)
            .body("[]")
            .send()
            .await
            .unwrap();
        if access == Access::Open {
            assert_eq!(none.status(), 200, "{method} {path} is open");
            continue;
        }
        guarded += 1;
        assert_eq!(none.status(), 401, "{method} {path} without a token");
        assert_eq!(none.headers()["www-authenticate"], "Bearer");
        if access == Access::Page {
            // The page itself, which then asks for the token.
            assert!(none.text().await.unwrap().contains("<html"), "{path}");
        } else {
            let err: serde_json::Value = none.json().await.unwrap();
            assert_eq!(err["code"], "unauthorized", "{method} {path}");
        }
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
    assert!(guarded >= 20, "only {guarded} routes need the token");
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
    for (method, path, _) in routes() {
        let url = format!("{}{path}", server.url());
        // `[]` for the batch ack; a queue's config must be an object (or nothing).
        let body = if method == Method::PUT { "" } else { "[]" };
        let resp = http
            .request(method.clone(), &url)
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .unwrap();
        // Past auth: the route itself answers (2xx, 404 for the made-up lease ids and the queue
        // once deleted, 503 from /jobs on a server without a Job launcher).
        let status = resp.status();
        let no_launcher = path.starts_with("/jobs") && status == 503;
        assert!(
            status.is_success() || status == 404 || no_launcher,
            "{method} {path}: {status}"
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
async fn public_reads_open_the_page_stats_and_queue_objects_only() {
    let config = Config {
        token: Some(TOKEN.into()),
        public_reads: true,
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let http = reqwest::Client::new();
    for (method, path, access) in routes() {
        let resp = http
            .request(method.clone(), format!("{}{path}", server.url()))
            .body("[]")
            .send()
            .await
            .unwrap();
        let open = matches!(access, Access::Open | Access::Page | Access::PublicRead);
        assert_eq!(
            resp.status() != 401,
            open,
            "{method} {path}: {}",
            resp.status()
        );
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

/// Runs the real binary with a token and `RUST_LOG=debug`, makes requests (failed auth
/// included), stops it, and returns everything it logged.
async fn logs_of_a_run(args: &[&str], env: &[(&str, &str)], token: &str) -> String {
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_queue-server"))
        .args(args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "debug")
        .env_remove("MEMQ_TOKEN")
        .env_remove("MEMQ_TOKEN_FILE")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while http.get(format!("{url}/healthz")).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let q = format!("{url}/memq/server/queues/q");
    for bearer in [None, Some("wrong-guess-1234"), Some(token)] {
        let with = |req: reqwest::RequestBuilder| match bearer {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        with(http.put(&q)).send().await.unwrap();
        with(http.post(format!("{q}/enqueue")).body("item"))
            .send()
            .await
            .unwrap();
        with(http.post(format!("{q}/dequeue?lease=5s")))
            .send()
            .await
            .unwrap();
        with(http.get(format!("{url}/memq/server/stats")))
            .send()
            .await
            .unwrap();
        with(http.get(format!("{url}/nowhere")))
            .send()
            .await
            .unwrap();
    }
    http.get(format!("{url}/metrics")).send().await.unwrap();
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the server stops on SIGTERM")
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let mut logs = String::from_utf8_lossy(&out.stderr).into_owned();
    logs.push_str(&String::from_utf8_lossy(&out.stdout));
    assert!(logs.contains("queue server listening"), "{logs}");
    logs
}

#[tokio::test]
async fn no_log_line_contains_the_token_or_a_guessed_one() {
    let token = "tok-8d1f0c9e2b7a4f65";
    let logs = logs_of_a_run(&[], &[("MEMQ_TOKEN", token)], token).await;
    assert!(!logs.contains(token), "the token is in the logs:\n{logs}");
    assert!(!logs.contains("wrong-guess-1234"), "{logs}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let token = "tok-from-file-5e0a77c3";
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let path = file.to_str().unwrap();
    let logs = logs_of_a_run(&["--token-file", path, "--log-format", "json"], &[], token).await;
    assert!(!logs.contains(token), "the token is in the logs:\n{logs}");
    assert!(!logs.contains("wrong-guess-1234"), "{logs}");
}

#[tokio::test]
async fn a_token_file_guards_the_api_like_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "  from-a-secret \n").unwrap();
    let server = TestServer::start(Config {
        token_file: Some(file),
        ..Config::default()
    })
    .await;
    let anon = server.client();
    assert_eq!(anon.stats().await.unwrap_err().status(), Some(401));
    let authed = memq::Client::new(server.base_url())
        .unwrap()
        .with_token(Some("from-a-secret".into()));
    authed.create_queue("q", None).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn an_empty_token_file_stops_the_server_instead_of_opening_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "\n").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_queue-server"))
        .args(["--listen", "127.0.0.1:0", "--token-file"])
        .arg(&file)
        .env_remove("MEMQ_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is empty"), "{stderr}");
}
