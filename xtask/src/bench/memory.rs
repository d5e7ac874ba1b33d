//! The sections of memory: `deep` (RSS per queued item, and the rates at 3,000,000 queued),
//! `longpoll` (RSS holding 10,000 idle long polls) and `churn` (RSS through 5,000,000 lease +
//! ack cycles on an empty queue), each on a fresh server process.

use std::time::Duration;

use anyhow::{Context, bail};

use super::http::Q;
use super::process::{Proc, Server, established, rss_kb, start_baseline};
use super::table::{Op, fixed, meets, meets_ratio, num, ratio};
use super::wrk::{self, Load};
use super::{Bench, CONNS, log};

/// Deep queue: a fresh server, so that its RSS growth is the items' alone.
pub async fn deep(b: &mut Bench) -> anyhow::Result<()> {
    log("3,000,000 queued items: memory, enqueue, dequeue");
    let deep = b.server("deep", &[]).await?;
    let url = deep.url.clone();
    b.api.create(&url, "deep").await?;
    let rss0 = rss_kb(deep.proc.pid())?;
    b.api.fill(&url, "deep", 3_000_000).await?;
    let rss1 = rss_kb(deep.proc.pid())?;
    let per = fixed((rss1 as f64 - rss0 as f64) * 1024.0 / 3_000_000.0, 1);
    let beyond = fixed(num(&per) - 16.0, 1);
    b.row([
        "rss_per_item",
        "RSS per queued 16-byte item (3,000,000)",
        &per,
        "B/item",
        "16",
        &ratio(num(&per), 16.0),
        "-",
        "-",
    ]);
    b.row([
        "rss_beyond_body",
        "  of which beyond the body",
        &beyond,
        "B/item",
        "-",
        "-",
        "<= 64 B/item",
        meets(num(&beyond), Op::AtMost, 64.0),
    ]);
    let base_url = format!("{}/x", b.base.url);
    for (op, what, script) in [
        ("enqueue", "single enqueue, at 3,000,000 queued", "post.lua"),
        (
            "dequeue",
            "kuard dequeue, from 3,000,000 queued",
            "post-empty.lua",
        ),
    ] {
        let (base, v) = wrk::pair(
            &b.cfg,
            &format!("{op}-3m"),
            CONNS,
            &base_url,
            &format!("{url}{Q}/deep/{op}"),
            Load::lua(script),
        )
        .await?;
        let key = format!("{op}_3m");
        let target = Some((">= 0.80 x baseline", 0.80));
        b.versus([&key, what, "req/s"], v, base, target);
    }
    drop(deep);
    Ok(())
}

/// What [`hold_polls`] saw.
struct Held {
    /// Connections the server side held at the end.
    conns: usize,
    /// Seconds until all were connected (20.0: they never were), 1 decimal.
    secs: String,
    rss_kb: u64,
}

/// Idle long polls the long poll tests hold.
const POLLS: usize = 10_000;

/// 10,000 connections to `url` through one wrk, one request each; the server's connections and
/// RSS while it holds them.
async fn hold_polls(b: &Bench, name: &str, server: &Server, url: &str) -> anyhow::Result<Held> {
    // wrk ends before the polls' 30 s run out, so each connection sends exactly one request.
    let out = wrk::raw(&b.cfg, name);
    let load = Load::lua("post-empty.lua");
    let mut cmd = wrk::command(POLLS as u32, "28s", "60s", load, url, &out)?;
    let wrk = Proc::spawn(&format!("wrk {name}"), &mut cmd)?;
    // A burst of 10,000 connects overflows the listen backlog; the dropped ones retry after 1,
    // 3, 7 s... so a slow accept loop shows here as a long wait.
    let mut tries = 0;
    for i in 1..=40 {
        tries = i;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let held = established(server.port)?;
        if b.cfg.debug {
            log(format!("held {held} (port {})", server.port));
        }
        if held >= POLLS {
            break;
        }
    }
    let secs = fixed(f64::from(tries) / 2.0, 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let conns = established(server.port)?;
    let rss_kb = rss_kb(server.proc.pid())?;
    drop(wrk);
    Ok(Held {
        conns,
        secs,
        rss_kb,
    })
}

/// 10,000 idle long polls, each side on a fresh process; RSS read while they are held.
pub async fn longpoll(b: &mut Bench) -> anyhow::Result<()> {
    log("10,000 idle long polls");
    let idle = start_baseline(&b.cfg, b.work.path(), "base-idle").await?;
    let url = format!("{}/x?wait=30", idle.url);
    let base = hold_polls(b, "base-longpoll", &idle, &url).await?;
    drop(idle);
    let idle = b.server("idle", &[]).await?;
    b.api.create(&idle.url, "idle").await?;
    let url = format!("{}{Q}/idle/dequeue?wait=30", idle.url);
    let held = hold_polls(b, "longpoll", &idle, &url).await?;
    drop(idle);
    let mb = fixed(held.rss_kb as f64 / 1024.0, 1);
    let base_mb = fixed(base.rss_kb as f64 / 1024.0, 1);
    let r = ratio(num(&mb), num(&base_mb));
    // Against the bare server too: each waiting poll's own state (its request's future) shows
    // as soon as it grows by a kilobyte or two, long before the absolute limit does.
    let verdict = if held.conns >= POLLS && meets_ratio(&r, Op::AtMost, 1.05) == "ok" {
        meets(num(&mb), Op::AtMost, 200.0)
    } else {
        "MISSED"
    };
    b.row([
        "longpoll_10k",
        &format!(
            "RSS holding {} idle long polls (base: {})",
            held.conns, base.conns
        ),
        &mb,
        "MB",
        &base_mb,
        &r,
        "10,000, <= 1.05 x, < 200 MB",
        verdict,
    ]);
    b.row([
        "longpoll_connect",
        "  time until all were connected",
        &held.secs,
        "s",
        &base.secs,
        &ratio(num(&held.secs), num(&base.secs)),
        "-",
        "-",
    ]);
    Ok(())
}

/// Lease + ack cycles of the `churn` section, after its warm-up.
const CHURN_CYCLES: u64 = 5_000_000;
/// Cycles before the first RSS is read: the server's buffers, threads and tables reach the size
/// the load keeps them at.
const CHURN_WARMUP: u64 = 100_000;
/// Items each driver enqueues, leases and acks per round (one request each).
const CHURN_BATCH: u64 = 100;
/// Drivers at once.
const CHURN_DRIVERS: usize = 4;

/// `n` lease + ack cycles on queue `churn` at `url`: each driver enqueues [`CHURN_BATCH`] items,
/// leases what is ready (30 s leases, the queue's default) and acks it in one request, until
/// `n` items are acked; then the queue is empty again.
async fn churn_cycles(b: &Bench, url: &str, n: u64) -> anyhow::Result<()> {
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let lines: Vec<u8> = (0..CHURN_BATCH)
        .map(|i| format!("churn-item-{i:05}\n"))
        .collect::<String>()
        .into_bytes();
    let mut drivers = tokio::task::JoinSet::new();
    for _ in 0..CHURN_DRIVERS {
        let session = b.api.session()?;
        let (acked, lines) = (acked.clone(), lines.clone());
        let queue = format!("{url}{Q}/churn");
        drivers.spawn(async move {
            use std::sync::atomic::Ordering;
            while acked.load(Ordering::Relaxed) < n {
                session
                    .post(&format!("{queue}/enqueue?batch=lines"), Some(lines.clone()))
                    .await?;
                let leases = session
                    .post(
                        &format!("{queue}/dequeue?lease=true&max={CHURN_BATCH}"),
                        None,
                    )
                    .await?;
                let ids = lease_ids(&leases)?;
                if ids.is_empty() {
                    continue;
                }
                let body = serde_json::to_vec(&ids)?;
                session.post(&format!("{queue}/ack"), Some(body)).await?;
                acked.fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = drivers.join_next().await {
        done??;
    }
    // What the last rounds enqueued and nobody leased.
    let session = b.api.session()?;
    let queue = format!("{url}{Q}/churn");
    loop {
        let leases = session
            .post(&format!("{queue}/dequeue?lease=true&max=1000"), None)
            .await?;
        let ids = lease_ids(&leases)?;
        if ids.is_empty() {
            return Ok(());
        }
        session
            .post(&format!("{queue}/ack"), Some(serde_json::to_vec(&ids)?))
            .await?;
    }
}

/// The lease ids of a dequeue's answer (empty for a 204).
fn lease_ids(answer: &str) -> anyhow::Result<Vec<String>> {
    if answer.is_empty() {
        return Ok(Vec::new());
    }
    let list: serde_json::Value = serde_json::from_str(answer)?;
    list["messages"]
        .as_array()
        .context("a messageList")?
        .iter()
        .map(|m| {
            m["lease"]["id"]
                .as_str()
                .map(str::to_string)
                .context("a lease id")
        })
        .collect()
}

/// Memory under lease + ack churn on an empty queue: RSS before and after
/// [`CHURN_CYCLES`] cycles with 30 s leases (no lease runs out during the run: every one ends
/// by its ack), on a fresh server, against its RSS after the warm-up.
pub async fn churn(b: &mut Bench) -> anyhow::Result<()> {
    log("5,000,000 lease+ack cycles, 30 s leases, on an empty queue: memory");
    let server = b.server("churn", &[]).await?;
    let url = server.url.clone();
    b.api.create(&url, "churn").await?;
    churn_cycles(b, &url, CHURN_WARMUP).await?;
    let before = rss_kb(server.proc.pid())?;
    let started = std::time::Instant::now();
    churn_cycles(b, &url, CHURN_CYCLES).await?;
    let secs = started.elapsed().as_secs_f64();
    let after = rss_kb(server.proc.pid())?;
    let (depth, inflight) = (
        b.api.figure(&url, "churn", "depth").await?,
        b.api.figure(&url, "churn", "inflight").await?,
    );
    if (depth, inflight) != (0, 0) {
        bail!("churn: the queue ends with {depth} ready and {inflight} leased, not empty");
    }
    drop(server);
    let (mb, start_mb) = (
        fixed(after as f64 / 1024.0, 1),
        fixed(before as f64 / 1024.0, 1),
    );
    b.row([
        "churn_rss",
        "RSS after 5,000,000 lease+ack cycles, 30 s leases, empty queue (baseline: after warm-up)",
        &mb,
        "MB",
        &start_mb,
        &ratio(num(&mb), num(&start_mb)),
        "<= 1.10 x start",
        meets(num(&mb) / num(&start_mb), Op::AtMost, 1.10),
    ]);
    b.row([
        "churn_rate",
        "  lease+ack cycles per second meanwhile (batches of 100)",
        &fixed(CHURN_CYCLES as f64 / secs, 0),
        "cycles/s",
        "-",
        "-",
        "-",
        "-",
    ]);
    Ok(())
}
