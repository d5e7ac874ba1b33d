//! Section `dashboard`: what an open dashboard costs a server with 10,000 queues (1,000 of them
//! holding an item, the rest empty, nothing moving): the bytes of the stats stream per second,
//! whole snapshots (the baseline: what a page received before `?changes=true`) against changes
//! only, and the bytes of the history a page loads, of every queue against one queue.

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{StreamExt, stream};
use serde_json::Value;

use super::http::Q;
use super::table::{Op, meets, ratio};
use super::{Bench, log};

/// Queues of the run (the server's default `--max-queues`).
const QUEUES: usize = 10_000;
/// Every this many queues holds one item (its row's age grows every second).
const WITH_ITEM_EVERY: usize = 10;
/// How long each stream is read.
const READ_FOR: Duration = Duration::from_secs(5);
/// The idle stream's target, bytes a second per open page.
const IDLE_TARGET: f64 = 50_000.0;
/// The history a page loads at start (one queue's), at most.
const HISTORY_TARGET: f64 = 100_000.0;

pub async fn section(b: &mut Bench) -> anyhow::Result<()> {
    log(format!(
        "dashboard: {QUEUES} queues, the stats stream and the history a page loads"
    ));
    let server = b.server("dashboard", &[]).await?;
    let url = server.url.clone();
    b.api.ready(&url).await?;
    let names: Vec<String> = (0..QUEUES).map(|i| format!("q{i}")).collect();
    let api = &b.api;
    let results: Vec<anyhow::Result<()>> = stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let url = url.clone();
            async move {
                api.create(&url, name).await?;
                if i % WITH_ITEM_EVERY == 0 {
                    let at = format!("{url}{Q}/{name}/enqueue");
                    api.session()?.post(&at, Some(b"item".to_vec())).await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    let http = reqwest::Client::new();
    let stream_url = format!("{url}/memq/server/stats/stream");
    // Idle from here: wait until a delta is empty (the enqueues' rates have averaged out).
    log("waiting for the rates of the set-up to settle");
    let mut settle = Sse::open(&http, &format!("{stream_url}?changes=true")).await?;
    let first = settle.next_event().await?;
    if first.len() < QUEUES * 100 {
        bail!(
            "the first snapshot is {} bytes for {QUEUES} queues",
            first.len()
        );
    }
    let mut settled = false;
    for _ in 0..30 {
        let event: Value = serde_json::from_str(&settle.next_event().await?)?;
        if event["queues"].as_array().is_some_and(Vec::is_empty) {
            settled = true;
            break;
        }
    }
    if !settled {
        bail!("the stream never went idle within 30 samples");
    }
    drop(settle);

    let mut whole = Sse::open(&http, &stream_url).await?;
    let snapshot = whole.next_event().await?.len();
    let whole_rate = whole.bytes_for(READ_FOR).await? as f64 / READ_FOR.as_secs_f64();
    drop(whole);
    let mut changes = Sse::open(&http, &format!("{stream_url}?changes=true")).await?;
    changes.next_event().await?;
    let changes_rate = changes.bytes_for(READ_FOR).await? as f64 / READ_FOR.as_secs_f64();
    drop(changes);
    let history = |query: String| {
        let http = http.clone();
        let at = format!("{url}/memq/server/stats/history{query}");
        async move {
            let body = http
                .get(&at)
                .send()
                .await?
                .error_for_status()?
                .bytes()
                .await?;
            anyhow::Ok(body.len() as f64)
        }
    };
    let all = history(String::new()).await?;
    let one = history("?queue=q42".to_string()).await?;

    let kb = |x: f64| format!("{:.1}", x / 1000.0);
    b.row([
        "dash_snapshot",
        &format!("stats snapshot, {QUEUES} queues (first event of a stream)"),
        &kb(snapshot as f64),
        "kB",
        "-",
        "-",
        "-",
        "-",
    ]);
    b.row([
        "dash_stream_all",
        "stats stream, every row every second (baseline), idle",
        &kb(whole_rate),
        "kB/s",
        "-",
        "-",
        "-",
        "-",
    ]);
    b.row([
        "dash_stream_chg",
        "stats stream ?changes=true, idle (vs every row)",
        &kb(changes_rate),
        "kB/s",
        &kb(whole_rate),
        &ratio(changes_rate, whole_rate),
        "<= 50 kB/s",
        meets(changes_rate, Op::AtMost, IDLE_TARGET),
    ]);
    b.row([
        "dash_history_all",
        &format!("history of every queue (15 min), {QUEUES} queues"),
        &kb(all),
        "kB",
        "-",
        "-",
        "-",
        "-",
    ]);
    b.row([
        "dash_history_one",
        "history of the one queue a page shows (vs every queue)",
        &kb(one),
        "kB",
        &kb(all),
        &ratio(one, all),
        "<= 100 kB",
        meets(one, Op::AtMost, HISTORY_TARGET),
    ]);
    Ok(())
}

/// A server-sent event stream, read as bytes.
struct Sse {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Sse {
    async fn open(http: &reqwest::Client, url: &str) -> anyhow::Result<Self> {
        let resp = http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url}"))?;
        Ok(Sse {
            resp,
            buf: Vec::new(),
        })
    }

    /// The next event's data (within 10 s).
    async fn next_event(&mut self) -> anyhow::Result<String> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                    let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                    let text = String::from_utf8(block)?;
                    let data: Vec<&str> = text
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(|d| d.strip_prefix(' ').unwrap_or(d))
                        .collect();
                    if !data.is_empty() {
                        return Ok(data.join("\n"));
                    }
                    continue;
                }
                match self.resp.chunk().await? {
                    Some(chunk) => self.buf.extend_from_slice(&chunk),
                    None => bail!("the stream ended"),
                }
            }
        })
        .await
        .context("no stats event within 10 s")?
    }

    /// Bytes received in the next `window`.
    async fn bytes_for(&mut self, window: Duration) -> anyhow::Result<usize> {
        let mut total = 0;
        let end = tokio::time::Instant::now() + window;
        while let Ok(chunk) = tokio::time::timeout_at(end, self.resp.chunk()).await {
            match chunk? {
                Some(chunk) => total += chunk.len(),
                None => bail!("the stream ended"),
            }
        }
        Ok(total)
    }
}
