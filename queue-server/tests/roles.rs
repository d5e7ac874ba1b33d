//! Scoped tokens (`--tokens-file`): every route against every role, from the route table and a
//! table written out here (a route missing from it fails the test); queue globs; the file
//! re-read under load; bad files refused at start-up and kept out on reload.

use std::time::Duration;

use queue_server::Config;
use queue_server::http::routes::{Access, table};
use queue_server::testing::{ServerProcess, TestServer, eventually, metric};
use reqwest::Method;

const BIN: &str = env!("CARGO_BIN_EXE_queue-server");

/// Who gets past the token check on each route, with the tokens of [`TOKENS`]: `open` for
/// everyone, else the roles' initials (reader, producer, consumer, admin). Written out by
/// hand, so that a change to a route's role shows here.
const EXPECTED: &[(&str, &str)] = &[
    ("GET /memq/server/stats", "rpca"),
    ("GET /memq/server/queues/{queue}", "rpca"),
    ("PUT /memq/server/queues/{queue}", "a"),
    ("DELETE /memq/server/queues/{queue}", "a"),
    ("POST /memq/server/queues/{queue}/drain", "a"),
    ("POST /memq/server/queues/{queue}/pause", "a"),
    ("POST /memq/server/queues/{queue}/resume", "a"),
    ("POST /memq/server/queues/{queue}/enqueue", "pa"),
    ("POST /memq/server/queues/{queue}/enqueue/batch", "pa"),
    ("POST /memq/server/queues/{queue}/dequeue", "ca"),
    ("POST /memq/server/queues/{queue}/ack", "ca"),
    ("POST /memq/server/queues/{queue}/leases/{lease}/ack", "ca"),
    ("POST /memq/server/queues/{queue}/leases/{lease}/nack", "ca"),
    (
        "POST /memq/server/queues/{queue}/leases/{lease}/extend",
        "ca",
    ),
    ("POST /memq/server/queues/{queue}/nack", "ca"),
    ("POST /memq/server/queues/{queue}/extend", "ca"),
    ("POST /memq/server/queues/{queue}/release", "ca"),
    ("GET /memq/server/queues/{queue}/dead", "rpca"),
    ("DELETE /memq/server/queues/{queue}/dead", "a"),
    ("POST /memq/server/queues/{queue}/dead/requeue", "a"),
    ("GET /memq/server/queues/{queue}/messages", "rpca"),
    ("GET /memq/server/queues/{queue}/leases", "rpca"),
    ("GET /memq/server/queues/{queue}/items/{item}", "rpca"),
    ("GET /memq/server/queues/{queue}/items", "rpca"),
    ("GET /", "rpca"),
    ("GET /dashboard/session", "rpca"),
    ("GET /dashboard/app.js", "open"),
    ("GET /dashboard/app.css", "open"),
    ("GET /dashboard/icon.svg", "open"),
    ("GET /memq/server/stats/stream", "rpca"),
    ("GET /memq/server/stats/history", "rpca"),
    ("GET /jobs", "a"),
    ("POST /jobs", "a"),
    ("DELETE /jobs/{name}", "a"),
    ("GET /healthz", "open"),
    ("GET /readyz", "open"),
    ("GET /metrics", "open"),
    ("GET /openapi.json", "open"),
    ("GET /docs", "open"),
    ("GET /docs/", "open"),
    ("GET /docs/{file}", "open"),
];

/// One token per role for `q*` (the admin for every queue), an admin for `other*` only, and a
/// reader given as its digest.
const TOKENS: &str = "\
# name role queues token
look    reader   q*      reader-s3cret
make    producer q*      producer-s3cret
work    consumer q*      consumer-s3cret
boss    admin    *       admin-s3cret
elsewhere admin  other*  elsewhere-s3cret
hashed  reader   *       sha256:5be15563b7e4ee3be72026539d59cb0d580d63b77909f4cf7411b99da0edbcc5
";

/// Each role's initial in [`EXPECTED`], its name, token, and the token's name in [`TOKENS`].
const ROLES: [(char, &str, &str, &str); 4] = [
    ('r', "reader", "reader-s3cret", "look"),
    ('p', "producer", "producer-s3cret", "make"),
    ('c', "consumer", "consumer-s3cret", "work"),
    ('a', "admin", "admin-s3cret", "boss"),
];

fn concrete(path: &str) -> String {
    let path = path
        .replace("{queue}", "q1")
        .replace("{lease}", "01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .replace("{name}", "consumers-1")
        .replace("{file}", "index.html")
        .replace("{item}", "01ARZ3NDEKTSV4RRFFQ69G5FAV");
    if path.ends_with("/items") {
        format!("{path}?key=k")
    } else {
        path
    }
}

/// A server with [`TOKENS`] as its `--tokens-file` (kept in the returned directory).
async fn with_tokens(config: Config) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, TOKENS).unwrap();
    let server = TestServer::start(Config {
        tokens_file: Some(file),
        ..config
    })
    .await;
    (server, dir)
}

async fn call(
    http: &reqwest::Client,
    url: &str,
    method: &Method,
    token: &str,
) -> reqwest::Response {
    let body = if method == Method::PUT { "" } else { "[]" };
    http.request(method.clone(), url)
        .bearer_auth(token)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn every_route_answers_each_role_as_the_table_says() {
    let (server, _dir) = with_tokens(Config::default()).await;
    let http = reqwest::Client::new();
    let routes = table();
    let declared: Vec<String> = routes
        .routes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    for route in &declared {
        assert!(
            EXPECTED.iter().any(|(r, _)| r == route),
            "{route} is not in this test's table: say which roles may call it"
        );
    }
    for (route, _) in EXPECTED {
        assert!(declared.contains(&route.to_string()), "{route} is no route");
    }
    let mut checked = 0;
    for r in routes.routes() {
        let name = format!("{} {}", r.method, r.path);
        let who = EXPECTED.iter().find(|(n, _)| *n == name).unwrap().1;
        assert_eq!(who == "open", r.rule.access == Access::Open, "{name}");
        let url = format!("{}{}", server.url(), concrete(&r.path));
        let method = Method::from_bytes(r.method.as_str().as_bytes()).unwrap();
        for (initial, role, token, token_name) in ROLES {
            let resp = call(&http, &url, &method, token).await;
            let status = resp.status().as_u16();
            if who == "open" || who.contains(initial) {
                assert!(
                    status != 401 && status != 403,
                    "{name} as {role}: {status}, expected past the token check"
                );
            } else {
                assert_eq!(status, 403, "{name} as {role}");
                let err: serde_json::Value = resp.json().await.unwrap();
                assert_eq!(err["code"], "forbidden", "{name} as {role}");
                let message = err["message"].as_str().unwrap();
                let needs = if who == "a" {
                    "admin"
                } else {
                    ["producer", "consumer"][usize::from(who.starts_with('c'))]
                };
                assert!(
                    message.contains(&format!(" {needs} token"))
                        && message.contains(&format!("\"{token_name}\"")),
                    "{name} as {role}: {message}"
                );
                assert!(!message.contains(token), "{message}");
            }
            checked += 1;
        }
        // An admin for other queues: refused wherever a `q1` or every queue is concerned.
        if who != "open" && (r.path.contains("{queue}") || r.path.starts_with("/jobs")) {
            let resp = call(&http, &url, &method, "elsewhere-s3cret").await;
            assert_eq!(resp.status(), 403, "{name} with an admin of other*");
            let message = resp.json::<serde_json::Value>().await.unwrap()["message"]
                .as_str()
                .unwrap()
                .to_string();
            let why = if r.path.contains("{queue}") {
                "does not cover queue \"q1\""
            } else {
                "every queue"
            };
            assert!(message.contains(why), "{name}: {message}");
        }
        // Unknown tokens stay 401, known ones never are.
        if who != "open" {
            let resp = call(&http, &url, &method, "no-such-token").await;
            assert_eq!(resp.status(), 401, "{name} with an unknown token");
        }
    }
    assert!(checked >= 4 * 30, "{checked}");
    server.shutdown().await;
}

#[tokio::test]
async fn the_session_says_what_the_token_may_do() {
    let (server, _dir) = with_tokens(Config {
        token: Some("plain-admin".into()),
        ..Config::default()
    })
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/dashboard/session", server.url());
    let session = async |token: &str| -> serde_json::Value {
        let resp = http.get(&url).bearer_auth(token).send().await.unwrap();
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{token}: {body}");
        body
    };
    let s = session("producer-s3cret").await;
    assert_eq!(
        (
            s["token"].as_str(),
            s["role"].as_str(),
            s["queues"].as_str()
        ),
        (Some("make"), Some("producer"), Some("q*"))
    );
    assert_eq!(
        s["may"],
        serde_json::json!({"read": true, "enqueue": true, "consume": false, "admin": false, "jobs": false})
    );
    let s = session("elsewhere-s3cret").await;
    assert_eq!(s["may"]["admin"], true);
    assert_eq!(
        s["may"]["jobs"], false,
        "an admin of other* cannot manage every queue's Jobs"
    );
    let s = session("plain-admin").await;
    assert_eq!(
        (s["token"].as_str(), s["queues"].as_str()),
        (Some("the admin token"), Some("*"))
    );
    assert_eq!(s["may"]["jobs"], true);
    // A token given in the file as its digest: the secret opens, the digest's text does not.
    assert_eq!(session("hashed-s3cret").await["token"], "hashed");
    let resp = http
        .get(&url)
        .bearer_auth("sha256:5be15563b7e4ee3be72026539d59cb0d580d63b77909f4cf7411b99da0edbcc5")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    server.shutdown().await;
}

/// Writes the file as Kubernetes updates a mounted Secret: a new file renamed over the old.
fn replace(path: &std::path::Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

#[tokio::test]
async fn the_file_is_reloaded_under_load_and_a_broken_one_keeps_the_last_good_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, "a producer load* a-s3cret\nops admin * ops-s3cret\n").unwrap();
    let server = ServerProcess::start_logged(
        BIN,
        &["--tokens-file", file.to_str().unwrap()],
        &[("RUST_LOG", "info")],
    )
    .await;
    let http = reqwest::Client::new();
    let q = format!("{}/memq/server/queues", server.url());
    let put = http
        .put(format!("{q}/load"))
        .bearer_auth("ops-s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);

    // Four producers enqueue with token `a` while the file changes under them.
    let stop = tokio_util::sync::CancellationToken::new();
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (http, url, stop) = (http.clone(), format!("{q}/load/enqueue"), stop.clone());
            tokio::spawn(async move {
                let mut sent = 0u32;
                while !stop.is_cancelled() && sent < 20_000 {
                    let resp = http
                        .post(&url)
                        .bearer_auth("a-s3cret")
                        .body("x")
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(
                        resp.status(),
                        200,
                        "an enqueue with a token kept in the file"
                    );
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    let enqueue_as = async |token: &str| {
        http.post(format!("{q}/load/enqueue"))
            .bearer_auth(token)
            .body("y")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(enqueue_as("b-s3cret").await, 401);
    replace(
        &file,
        "a producer load* a-s3cret\nops admin * ops-s3cret\nb producer * b-s3cret\n",
    );
    eventually(Duration::from_secs(15), "token b is taken", || async {
        match enqueue_as("b-s3cret").await {
            200 => Ok(()),
            s => Err(format!("{s}")),
        }
    })
    .await;

    // A broken file: the server keeps a, b and ops, and says why in its log.
    replace(&file, "a producer load* a-s3cret\nb writer * b-s3cret\n");
    eventually(
        Duration::from_secs(15),
        "the broken file is logged",
        || async {
            let log = server.log();
            match log.lines().find(|l| l.contains("does not parse")) {
                Some(line) if line.contains("line 2") && line.contains("unknown role") => Ok(()),
                _ => Err(log),
            }
        },
    )
    .await;
    assert_eq!(enqueue_as("b-s3cret").await, 200);
    let del = http
        .delete(format!("{q}/load/dead"))
        .bearer_auth("ops-s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200, "the admin kept from the last good file");
    let url = server.url();
    assert_eq!(metric(&url, "memq_tokens ").await, 3.0);
    assert_eq!(
        metric(&url, "memq_tokens_file_reloads_total{result=\"loaded\"}").await,
        1.0
    );
    assert_eq!(
        metric(&url, "memq_tokens_file_reloads_total{result=\"kept\"}").await,
        1.0
    );

    // The load ends (every enqueue with a answered 200 through both changes), then a good file
    // again, without a: a is refused from then on.
    stop.cancel();
    let mut sent = 0;
    for task in load {
        sent += task.await.unwrap();
    }
    assert!(sent > 0);
    replace(&file, "b producer * b-s3cret\n");
    eventually(Duration::from_secs(15), "token a is gone", || async {
        match enqueue_as("a-s3cret").await {
            401 => Ok(()),
            s => Err(format!("{s}")),
        }
    })
    .await;
    assert_eq!(enqueue_as("b-s3cret").await, 200);
    let log = server.log();
    for secret in ["a-s3cret", "b-s3cret", "ops-s3cret"] {
        assert!(!log.contains(secret), "a token is in the log:\n{log}");
    }
}

#[tokio::test]
async fn a_bad_tokens_file_stops_the_server_at_start_with_the_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "a reader q* zz-secret-one\na admin * zz-secret-two\n",
            "line 2: the name \"a\" is taken by line 1",
        ),
        ("a reader q*\n", "line 1: 3 fields where 4 are expected"),
        ("a boss * t\n", "line 1: unknown role"),
        ("a reader queue/* t\n", "matches no queue"),
        ("# only a comment\n", "holds no token"),
    ];
    for (text, want) in cases {
        let file = dir.path().join("tokens");
        std::fs::write(&file, text).unwrap();
        let (status, err) =
            ServerProcess::run_to_exit(BIN, &["--tokens-file", file.to_str().unwrap()]);
        assert!(!status.success(), "{text:?} was accepted");
        assert!(
            err.contains(want) && err.contains("--tokens-file"),
            "{text:?}: {err}"
        );
        assert!(!err.contains("zz-secret"), "{err}");
    }
}

#[tokio::test]
async fn a_scoped_token_sees_only_its_queues_in_the_views_of_every_queue() {
    let (server, dir) = with_tokens(Config::default()).await;
    let http = reqwest::Client::new();
    let base = format!("{}/memq/server", server.url());
    for q in ["q1", "q2", "other"] {
        let put = http
            .put(format!("{base}/queues/{q}"))
            .bearer_auth("admin-s3cret")
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201);
    }
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["name"].as_str().unwrap().to_string())
            .collect()
    };
    let get = async |path: &str, token: &str| {
        let resp = http
            .get(format!("{base}{path}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let (status, stats) = get("/stats", "reader-s3cret").await;
    assert_eq!(
        (status, names(&stats)),
        (200, vec!["q1".to_string(), "q2".into()])
    );
    let (_, all) = get("/stats", "admin-s3cret").await;
    assert_eq!(names(&all), ["other", "q1", "q2"]);

    // The stream's first event, once the sampler has seen all three queues.
    eventually(
        Duration::from_secs(15),
        "the stream shows q1 and q2 only",
        || async {
            let mut resp = http
                .get(format!("{base}/stats/stream"))
                .bearer_auth("reader-s3cret")
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let mut text = String::new();
            while !text.contains("\n\n") {
                match resp.chunk().await.map_err(|e| e.to_string())? {
                    Some(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
                    None => break,
                }
            }
            let data = text
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .ok_or(text.clone())?;
            let event: serde_json::Value =
                serde_json::from_str(data.trim()).map_err(|e| e.to_string())?;
            match names(&event) {
                n if n == ["q1", "q2"] => Ok(()),
                n => Err(format!("{n:?}")),
            }
        },
    )
    .await;

    let (_, history) = get("/stats/history?seconds=60", "reader-s3cret").await;
    let seen = names(&history);
    assert!(
        seen.contains(&"q1".to_string()) && !seen.contains(&"other".to_string()),
        "{history}"
    );
    let (status, refused) = get("/stats/history?queue=other", "reader-s3cret").await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("forbidden")),
        "{refused}"
    );
    let (status, _) = get("/stats/history?queue=other", "hashed-s3cret").await;
    assert_eq!(status, 200, "a reader of every queue");

    // A stream outlives no reload: once the file changes (here: `look` retired), the open
    // stream ends, and the same token's next request is checked against the new file.
    let mut stream = http
        .get(format!("{base}/stats/stream"))
        .bearer_auth("reader-s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(stream.chunk().await.unwrap().is_some(), "the first event");
    std::fs::write(
        dir.path().join("tokens"),
        TOKENS.replace("look    reader   q*      reader-s3cret\n", ""),
    )
    .unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while stream.chunk().await.unwrap().is_some() {}
    })
    .await;
    assert!(ended.is_ok(), "the stream went on after the reload");
    let (status, _) = get("/stats", "reader-s3cret").await;
    assert_eq!(status, 401, "the retired token");
    let (status, _) = get("/stats", "hashed-s3cret").await;
    assert_eq!(status, 200, "a token kept");
    server.shutdown().await;
}
