//! The queue API calls a run makes besides wrk's: creating, deleting, reading and filling
//! queues, one request at a time. As with curl, no connection outlives its call (it would be
//! counted among the connections a server holds): a single call closes its connection, a
//! [`Session`] (a fill, a phase of many requests) keeps one per server until it is dropped.

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// The queues' path on a server.
pub const Q: &str = "/memq/server/queues";

/// Items per fill request: 10,000 lines of 16 bytes (`work-item-000000`..`work-item-009999`).
const FILL_BATCH: u64 = 10_000;

pub struct Api {
    /// Keeps no idle connection.
    client: reqwest::Client,
    lines: Vec<u8>,
}

/// Requests over one kept-alive connection per server, closed when this is dropped.
pub struct Session(reqwest::Client);

impl Session {
    /// `POST url` with `body`.
    pub async fn post(&self, url: &str, body: Option<Vec<u8>>) -> anyhow::Result<String> {
        call(&self.0, reqwest::Method::POST, url, body).await
    }
}

/// An HTTP client that keeps idle connections (`keep`), or closes each after its answer.
fn client(keep: bool) -> anyhow::Result<reqwest::Client> {
    let builder = reqwest::Client::builder().no_proxy();
    let builder = if keep {
        // The server closes a connection idle for --header-read-timeout (30 s); drop it first.
        builder.pool_idle_timeout(Duration::from_secs(5))
    } else {
        builder.pool_max_idle_per_host(0)
    };
    builder.build().context("an HTTP client")
}

/// `METHOD url` with `body`; the answer's body, or an error for any status but 2xx.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Vec<u8>>,
) -> anyhow::Result<String> {
    let mut request = client.request(method.clone(), url);
    if let Some(body) = body {
        request = request.header("content-type", "text/plain").body(body);
    }
    let answer = request
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = answer.status();
    let text = answer
        .text()
        .await
        .with_context(|| format!("{method} {url}"))?;
    if !status.is_success() {
        bail!("{method} {url}: {status}: {}", text.trim());
    }
    Ok(text)
}

impl Api {
    pub fn new() -> anyhow::Result<Self> {
        let lines = (0..FILL_BATCH)
            .map(|i| format!("work-item-{i:06}\n"))
            .collect::<String>()
            .into_bytes();
        Ok(Api {
            client: client(false)?,
            lines,
        })
    }

    /// A [`Session`] for many requests in a row.
    pub fn session(&self) -> anyhow::Result<Session> {
        client(true).map(Session)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<String> {
        call(&self.client, method, url, body).await
    }

    pub async fn create(&self, url: &str, queue: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::PUT, &format!("{url}{Q}/{queue}"), None)
            .await
            .map(drop)
    }

    pub async fn delete(&self, url: &str, queue: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::DELETE, &format!("{url}{Q}/{queue}"), None)
            .await
            .map(drop)
    }

    /// The queue's figures (`GET .../queues/QUEUE`): depth, enqueued, dequeued, acked...
    pub async fn queue(&self, url: &str, queue: &str) -> anyhow::Result<Value> {
        let at = format!("{url}{Q}/{queue}");
        let text = self.call(reqwest::Method::GET, &at, None).await?;
        serde_json::from_str(&text).with_context(|| format!("GET {at}: {text}"))
    }

    /// The queue's figure `field` (`depth`, `acked`...).
    pub async fn figure(&self, url: &str, queue: &str, field: &str) -> anyhow::Result<u64> {
        let stats = self.queue(url, queue).await?;
        stats[field]
            .as_u64()
            .with_context(|| format!("no {field} in {url}{Q}/{queue}: {stats}"))
    }

    pub async fn depth(&self, url: &str, queue: &str) -> anyhow::Result<u64> {
        self.figure(url, queue, "depth").await
    }

    /// Enqueues `n` 16-byte items in batches of up to 10,000 lines and checks the depth.
    pub async fn fill(&self, url: &str, queue: &str, n: u64) -> anyhow::Result<()> {
        let at = format!("{url}{Q}/{queue}/enqueue?batch=lines");
        let session = self.session()?;
        // Every line is as long as the others.
        let line = self.lines.len() / FILL_BATCH as usize;
        let mut left = n;
        while left > 0 {
            let batch = left.min(FILL_BATCH);
            let body = self.lines[..batch as usize * line].to_vec();
            session.post(&at, Some(body)).await?;
            left -= batch;
        }
        drop(session);
        let depth = self.depth(url, queue).await?;
        if depth < n {
            bail!("filling {queue}: depth {depth} < {n}");
        }
        Ok(())
    }

    /// Waits until the server's /readyz answers 200 (a Redis replica: connected and
    /// subscribed to the wake channel): 100 tries, 100 ms apart.
    pub async fn ready(&self, url: &str) -> anyhow::Result<()> {
        let at = format!("{url}/readyz");
        let mut last = String::new();
        for _ in 0..100 {
            match self.client.get(&at).send().await {
                Ok(answer) if answer.status() == reqwest::StatusCode::OK => return Ok(()),
                Ok(answer) => {
                    last = format!(
                        "{}: {}",
                        answer.status(),
                        answer.text().await.unwrap_or_default()
                    )
                }
                Err(e) => last = format!("{e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{url} is not ready: {}", last.trim())
    }
}
