//! The sections of memory: `deep` (RSS per queued item, and the rates at 3,000,000 queued) and
//! `longpoll` (RSS holding 10,000 idle long polls), each on a fresh server process.

use std::time::Duration;

use super::http::Q;
use super::process::{Proc, Server, established, rss_kb, start_baseline};
use super::table::{Op, fixed, meets, num, ratio};
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
    let verdict = if held.conns >= POLLS {
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
        &ratio(num(&mb), num(&base_mb)),
        "10,000 held, < 200 MB",
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
