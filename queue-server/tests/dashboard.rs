//! The dashboard: the page at `/`, the live stats stream, the history behind the charts, and
//! how `--token` and `--public-reads` guard them.

use std::time::{Duration, Instant};

use memq::EnqueueOptions;
use queue_server::Config;
use queue_server::testing::{TestServer, eventually};
use serde_json::Value;

const TOKEN: &str = "dash-token";
/// Upper bound for anything the sampler does once a second, on a busy 2-core machine.
const PATIENCE: Duration = Duration::from_secs(10);

/// Reads server-sent events from a streaming response, one `data:` payload at a time.
struct Events {
    resp: reqwest::Response,
    buf: String,
}

impl Events {
    async fn open(http: &reqwest::Client, url: &str, token: Option<&str>) -> Self {
        let mut req = http.get(url);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200, "stream status");
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// The next event's JSON, or `None` when the stream ended. Panics after `PATIENCE`.
    async fn next(&mut self) -> Option<Value> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let data: Vec<&str> = block
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                        .collect();
                    if data.is_empty() {
                        continue; // keep-alive comment or retry hint alone
                    }
                    return Some(serde_json::from_str(&data.join("\n")).expect("event is JSON"));
                }
                let chunk = self.resp.chunk().await.expect("read the stream")?;
                self.buf
                    .push_str(std::str::from_utf8(&chunk).expect("UTF-8 events"));
            }
        })
        .await
        .expect("an event (or the end of the stream) in time")
    }
}

fn row<'a>(event: &'a Value, queue: &str) -> Option<&'a Value> {
    event["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == queue)
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_from_the_binary() {
    let server = TestServer::start(Config::default()).await;
    let http = reqwest::Client::new();
    let page = http.get(server.url()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains(r#"<meta name="memq-auth" content="open">"#));
    // No launcher: the page is told so and asks nothing of /jobs.
    assert!(html.contains(r#"<meta name="memq-jobs" content="off">"#));
    assert!(!html.contains("{{"), "every placeholder is filled");
    for (path, kind) in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
        ("/dashboard/icon.svg", "image/svg+xml"),
    ] {
        assert!(html.contains(path), "the page links {path}");
        let resp = http
            .get(format!("{}{path}", server.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        assert!(!resp.text().await.unwrap().is_empty(), "{path}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn stats_stream_sends_snapshots_with_rates_as_queues_change() {
    let server = TestServer::start(Config::default()).await;
    let client = server.client();
    client.create_queue("keygen", None).await.unwrap();
    for i in 0..3 {
        client
            .enqueue("keygen", format!("item-{i}"), &EnqueueOptions::default())
            .await
            .unwrap();
    }
    let http = reqwest::Client::new();
    let url = format!("{}/stats/stream", server.base_url());
    let mut events = Events::open(&http, &url, None).await;
    let first = events.next().await.expect("a first event");
    assert_eq!(first["kind"], "stats");
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    // A stats object as /stats answers it, rows with rates added.
    let stats: memq::Stats = serde_json::from_value(first.clone()).unwrap();
    assert!(stats.queues.len() <= 1);

    // Within a few snapshots the three items show, with their rate in.
    let mut seen = None;
    for _ in 0..5 {
        let event = events.next().await.expect("more events");
        if let Some(r) = row(&event, "keygen").filter(|r| r["depth"] == 3) {
            seen = Some(r.clone());
            break;
        }
    }
    let keygen = seen.expect("keygen with depth 3 in the stream");
    assert_eq!(keygen["enqueued"], 3);
    assert!(keygen["rateIn"].as_f64().unwrap() > 0.0, "{keygen}");
    assert_eq!(keygen["rateOut"], 0.0);

    // A change shows up in a later snapshot, without a new request.
    client
        .enqueue("keygen", "one more", &EnqueueOptions::default())
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let event = events.next().await.expect("more events");
        if row(&event, "keygen").is_some_and(|r| r["depth"] == 4) {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "depth 4 never streamed");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn stats_stream_ends_when_the_server_shuts_down() {
    let server = TestServer::start(Config::default()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/stats/stream", server.base_url());
    let mut events = Events::open(&http, &url, None).await;
    events.next().await.expect("a first event");
    // Graceful shutdown waits for requests in flight: an endless stream must end by itself.
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown is not held up by an open stream");
    let mut ended = false;
    for _ in 0..3 {
        if events.next().await.is_none() {
            ended = true;
            break;
        }
    }
    assert!(ended, "the stream ends with the server");
}

async fn history(http: &reqwest::Client, server: &TestServer, query: &str) -> reqwest::Response {
    http.get(format!("{}/stats/history{query}", server.base_url()))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn history_has_a_sample_a_second_per_queue() {
    let server = TestServer::start(Config::default()).await;
    let client = server.client();
    let http = reqwest::Client::new();
    client.create_queue("a", None).await.unwrap();
    client.create_queue("b", None).await.unwrap();
    client
        .enqueue("a", "x", &EnqueueOptions::default())
        .await
        .unwrap();

    // Wait for three samples of "a" (the sampler takes one a second).
    let body: Value = eventually(PATIENCE, "three samples of a", || async {
        let body: Value = history(&http, &server, "?queue=a")
            .await
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let samples = body["queues"][0]["depth"]
            .as_array()
            .map_or(0, |d| d.iter().filter(|v| !v.is_null()).count());
        if samples >= 3 {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    assert_eq!(body["kind"], "statsHistory");
    assert_eq!(body["intervalSeconds"], 1);
    let times = body["times"].as_array().unwrap();
    let queues = body["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 1, "only the queue asked for");
    let a = &queues[0];
    assert_eq!(a["name"], "a");
    for field in ["depth", "inflight", "delayed", "dead", "rateIn", "rateOut"] {
        assert_eq!(
            a[field].as_array().unwrap().len(),
            times.len(),
            "{field} has one entry per sample time"
        );
    }
    assert_eq!(a["depth"].as_array().unwrap().last().unwrap(), 1);
    let stamps: Vec<&str> = times.iter().map(|t| t.as_str().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");

    // All queues, and a shorter window.
    let all: Value = history(&http, &server, "").await.json().await.unwrap();
    let names: Vec<&str> = all["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let short: Value = history(&http, &server, "?seconds=2")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(short["times"].as_array().unwrap().len(), 2);

    // A queue without samples is left out; bad input is the usual 400.
    let none: Value = history(&http, &server, "?queue=nope")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["queues"].as_array().unwrap().len(), 0);
    for bad in ["?seconds=0", "?seconds=901", "?seconds=x", "?queue=-bad"] {
        let resp = history(&http, &server, bad).await;
        assert_eq!(resp.status(), 400, "{bad}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["kind"], "error", "{bad}");
    }

    // A deleted queue is forgotten at the next sample.
    client.delete_queue("b").await.unwrap();
    eventually(PATIENCE, "b leaves the history", || async {
        let body: Value = history(&http, &server, "?queue=b")
            .await
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if body["queues"].as_array().is_some_and(|q| q.is_empty()) {
            Ok(())
        } else {
            Err(body.to_string())
        }
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn with_a_token_the_page_asks_for_it_and_the_data_needs_it() {
    let server = TestServer::start(Config {
        token: Some(TOKEN.into()),
        ..Config::default()
    })
    .await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url());

    // Without the token, `/` is 401, and its body is the page that asks for the token.
    let page = http.get(url("/")).send().await.unwrap();
    assert_eq!(page.status(), 401);
    assert_eq!(page.headers()["www-authenticate"], "Bearer");
    assert!(
        page.text()
            .await
            .unwrap()
            .contains(r#"<meta name="memq-auth" content="token">"#)
    );
    let page = http.get(url("/")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(page.status(), 200);

    // Code is open; figures are not.
    let asset = http.get(url("/dashboard/app.js")).send().await.unwrap();
    assert_eq!(asset.status(), 200);
    for path in [
        "/memq/server/stats/stream",
        "/memq/server/stats/history",
        "/dashboard/session",
    ] {
        let resp = http.get(url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path} without the token");
        let resp = http
            .get(url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{path} with a wrong token");
    }
    let session = http
        .get(url("/dashboard/session"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(session.status(), 200);
    let mut events = Events::open(&http, &url("/memq/server/stats/stream"), Some(TOKEN)).await;
    assert_eq!(events.next().await.unwrap()["kind"], "stats");
    server.shutdown().await;
}

#[tokio::test]
async fn public_reads_open_the_page_stream_and_history_but_not_the_token_check() {
    let server = TestServer::start(Config {
        token: Some(TOKEN.into()),
        public_reads: true,
        ..Config::default()
    })
    .await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url());
    let page = http.get(url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains(r#"<meta name="memq-auth" content="public-reads">"#)
    );
    let history = http
        .get(url("/memq/server/stats/history"))
        .send()
        .await
        .unwrap();
    assert_eq!(history.status(), 200);
    let mut events = Events::open(&http, &url("/memq/server/stats/stream"), None).await;
    assert_eq!(events.next().await.unwrap()["kind"], "stats");
    // The page checks a token with this before it offers changes.
    let session = http.get(url("/dashboard/session")).send().await.unwrap();
    assert_eq!(session.status(), 401);
    server.shutdown().await;
}

/// `?changes=true`: the whole snapshot first, then only the rows that changed and the queues
/// that went; idle queues are not sent again (a page of a server with many idle queues gets
/// almost nothing).
#[tokio::test]
async fn the_stream_with_changes_sends_only_what_changed() {
    let server = TestServer::start(Config::default()).await;
    let client = server.client();
    for name in ["busy", "idle-1", "idle-2", "doomed"] {
        client.create_queue(name, None).await.unwrap();
    }
    client
        .enqueue("idle-1", "waits", &EnqueueOptions::default())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/stats/stream?changes=true", server.base_url());
    let mut events = Events::open(&http, &url, None).await;
    // The first event is whole, then deltas: applied in turn, they show all four queues.
    let first = events.next().await.expect("an event");
    assert_eq!(first["kind"], "stats", "{first}");
    let mut seq = first["seq"].as_u64().unwrap();
    let mut known: Vec<String> = first["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    for _ in 0..10 {
        if known.len() == 4 {
            break;
        }
        let event = events.next().await.expect("an event");
        assert_eq!(event["kind"], "statsDelta", "{event}");
        assert_eq!(event["seq"].as_u64().unwrap(), seq + 1);
        seq += 1;
        for row in event["queues"].as_array().unwrap() {
            let name = row["name"].as_str().unwrap().to_string();
            if !known.contains(&name) {
                known.push(name);
            }
        }
    }
    assert_eq!(known.len(), 4, "{known:?}");
    // Let the rates of the enqueue above settle (they average over 10 s): from then on the
    // idle queues stay out of the deltas.
    let names = |event: &Value| -> Vec<String> {
        event["queues"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    // Bounded: one event a second, the rates settle within 10 s.
    let mut empty = false;
    for _ in 0..30 {
        let event = events.next().await.expect("an event");
        assert_eq!(event["kind"], "statsDelta", "{event}");
        let next = event["seq"].as_u64().unwrap();
        assert_eq!(next, seq + 1, "deltas follow one another");
        seq = next;
        if event["queues"].as_array().unwrap().is_empty() {
            empty = true;
            break;
        }
    }
    assert!(empty, "no empty delta within 30 samples");

    client
        .enqueue("busy", "x", &EnqueueOptions::default())
        .await
        .unwrap();
    client.delete_queue("doomed").await.unwrap();
    let (mut changed, mut removed) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let event = events.next().await.expect("an event");
        assert_eq!(event["kind"], "statsDelta", "{event}");
        changed.extend(names(&event));
        removed.extend(
            event["removed"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string()),
        );
        if changed.contains(&"busy".to_string()) && removed.contains(&"doomed".to_string()) {
            break;
        }
    }
    assert!(changed.iter().all(|n| n == "busy"), "{changed:?}");
    assert_eq!(removed, ["doomed"]);

    let bad = http
        .get(format!("{}/stats/stream?changes=maybe", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    server.shutdown().await;
}
