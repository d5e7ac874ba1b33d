//! The sections of throughput and time, one or more rows each, against the baseline (or, for
//! `durable`, the in-memory server) of the same run.

use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::process::Command;

use super::http::Q;
use super::process::{Proc, both_into};
use super::table::{Op, fixed, meets, num, ratio, whole};
use super::wrk::{self, Load};
use super::{Bench, CONNS, log};

/// Items per batch request (batch.lua).
const BATCH: u64 = 10_000;

/// Single enqueue at an empty queue, against the baseline with the same request.
pub async fn enqueue(b: &mut Bench) -> anyhow::Result<()> {
    log("single enqueue (empty queue)");
    let mem = b.mem.url.clone();
    b.api.create(&mem, "e").await?;
    let (base, v) = wrk::pair(
        &b.cfg,
        "enqueue-empty",
        CONNS,
        &format!("{}/x", b.base.url),
        &format!("{mem}{Q}/e/enqueue"),
        Load::lua("post.lua"),
    )
    .await?;
    b.base_post = Some(base);
    b.versus(
        [
            "enqueue_empty",
            "single enqueue, from an empty queue",
            "req/s",
        ],
        v,
        base,
        Some((">= 0.80 x baseline", 0.80)),
    );
    b.api.delete(&mem, "e").await
}

/// Single enqueue with a scoped token (`--tokens-file` of 16 tokens, the producer's covering
/// the queue by a glob) against the in-memory server without tokens, the same requests (that
/// server ignores the header), rounds alternated.
pub async fn auth(b: &mut Bench) -> anyhow::Result<()> {
    log("single enqueue with a scoped token, beside no token");
    let file = b.work.path().join("tokens");
    let mut text = String::new();
    for scope in ["alpha*", "beta*", "gamma*", "bench*"] {
        for role in ["reader", "consumer", "admin", "producer"] {
            let name = format!("{role}-{}", scope.trim_end_matches('*'));
            text.push_str(&format!("{name} {role} {scope} {name}-0123456789abcdef\n"));
        }
    }
    std::fs::write(&file, text)?;
    let scoped = b
        .server("scoped", &["--tokens-file", &file.to_string_lossy()])
        .await?;
    let token = "producer-bench-0123456789abcdef";
    let admin = "admin-bench-0123456789abcdef";
    let http = reqwest::Client::new();
    for url in [&b.mem.url, &scoped.url] {
        let status = http
            .put(format!("{url}{Q}/bench-auth"))
            .bearer_auth(admin)
            .send()
            .await?
            .status();
        if !status.is_success() {
            bail!("PUT {url}{Q}/bench-auth: {status}");
        }
    }
    let (none, with) = wrk::pair(
        &b.cfg,
        "enqueue-scoped-token",
        CONNS,
        &format!("{}{Q}/bench-auth/enqueue", b.mem.url),
        &format!("{}{Q}/bench-auth/enqueue", scoped.url),
        Load::lua("post.lua").with_token(token),
    )
    .await?;
    b.versus(
        [
            "enqueue_scoped_token",
            "single enqueue with a scoped token (baseline: no token)",
            "req/s",
        ],
        with,
        none,
        Some((">= 0.95 x no token", 0.95)),
    );
    b.api.delete(&b.mem.url, "bench-auth").await
}

/// Single enqueue over HTTPS (`--tls-cert`), against the same over plain HTTP in the same run
/// (rounds alternate): what TLS costs a request on a kept-alive connection. wrk does not check
/// certificates; the certificate comes from a CA made here.
pub async fn tls(b: &mut Bench) -> anyhow::Result<()> {
    log("single enqueue over TLS, beside plain HTTP");
    let ca = queue_server::testing::TestCa::new();
    let dir = b.work.path().join("tls");
    std::fs::create_dir_all(&dir)?;
    let (cert, key) = ca.issue(2100).write(&dir);
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let server = b
        .server("tls", &["--tls-cert", &cert, "--tls-key", &key])
        .await?;
    let https = server.url.replacen("http://", "https://", 1);
    ca.http_client()
        .put(format!("{https}{Q}/t"))
        .send()
        .await?
        .error_for_status()?;
    let mem = b.mem.url.clone();
    b.api.create(&mem, "t").await?;
    let (plain, over_tls) = wrk::pair(
        &b.cfg,
        "enqueue-tls",
        CONNS,
        &format!("{mem}{Q}/t/enqueue"),
        &format!("{https}{Q}/t/enqueue"),
        Load::lua("post.lua"),
    )
    .await?;
    b.versus(
        [
            "enqueue_tls",
            "single enqueue over TLS; baseline: plain HTTP",
            "req/s",
        ],
        over_tls,
        plain,
        None,
    );
    b.api.delete(&mem, "t").await
}

/// kuard dequeue from 2,000,000 queued.
pub async fn dequeue(b: &mut Bench) -> anyhow::Result<()> {
    log("kuard dequeue (2,000,000 queued)");
    let mem = b.mem.url.clone();
    b.api.create(&mem, "d2m").await?;
    b.api.fill(&mem, "d2m", 2_000_000).await?;
    let (base, v) = wrk::pair(
        &b.cfg,
        "dequeue-2m",
        CONNS,
        &format!("{}/x", b.base.url),
        &format!("{mem}{Q}/d2m/dequeue"),
        Load::lua("post-empty.lua"),
    )
    .await?;
    if b.api.depth(&mem, "d2m").await? == 0 {
        bail!("dequeue-2m ran the queue dry; its rate would count 204s");
    }
    b.versus(
        [
            "dequeue_2m",
            "kuard dequeue, from 2,000,000 queued",
            "req/s",
        ],
        v,
        base,
        Some((">= 0.80 x baseline", 0.80)),
    );
    b.api.delete(&mem, "d2m").await
}

/// Lease+ack pairs: the baseline runs the same script (every request a lease: no ids come back).
pub async fn lease_ack(b: &mut Bench) -> anyhow::Result<()> {
    log("lease+ack pairs");
    let mem = b.mem.url.clone();
    b.api.create(&mem, "lease").await?;
    b.api.fill(&mem, "lease", 500_000).await?;
    let path = format!("{Q}/lease");
    let load = Load::lua("lease-ack.lua").at_queue(&path);
    let (base, _) = wrk::pair(&b.cfg, "lease-ack", CONNS, &b.base.url, &mem, load).await?;
    // Pairs are the acks that succeeded, over the time of all rounds.
    let mut total = wrk::LeaseAcks::default();
    for r in 1..=b.cfg.rounds {
        let text = wrk::read(&wrk::raw(&b.cfg, &format!("lease-ack-{r}")));
        let runs = wrk::lease_acks(&text)?;
        if runs.is_empty() {
            bail!("lease-ack: no lease-ack line in round {r}");
        }
        total = runs.into_iter().fold(total, |a, b| a + b);
    }
    if total.errors != 0 {
        bail!("lease-ack: {} unexpected answers", total.errors);
    }
    let v = whole(total.acks as f64 / (total.duration_us as f64 / 1e6));
    b.versus(
        ["lease_ack", "lease+ack pairs (2 requests each)", "pairs/s"],
        v,
        base,
        Some((">= 0.40 x baseline", 0.40)),
    );
    b.api.delete(&mem, "lease").await
}

pub async fn stats(b: &mut Bench) -> anyhow::Result<()> {
    log("stats GET (4 queues)");
    let mem = b.mem.url.clone();
    let queues = ["s1", "s2", "s3", "s4"];
    for q in queues {
        b.api.create(&mem, q).await?;
        b.api.fill(&mem, q, 10_000).await?;
    }
    let (base, v) = wrk::pair(
        &b.cfg,
        "stats",
        CONNS,
        &format!("{}/x", b.base.url),
        &format!("{mem}/memq/server/stats"),
        Load::GET,
    )
    .await?;
    b.versus(
        ["stats_get", "GET /stats (4 queues)", "req/s"],
        v,
        base,
        None,
    );
    for q in queues {
        b.api.delete(&mem, q).await?;
    }
    Ok(())
}

pub async fn batch(b: &mut Bench) -> anyhow::Result<()> {
    log("batch enqueue, 10,000 lines per request");
    let mem = b.mem.url.clone();
    let base_url = format!("{}/x", b.base.url);
    let at = format!("{mem}{Q}/b/enqueue?batch=lines");
    b.api.create(&mem, "b").await?;
    // A fresh queue each round: some 25 million items a round would otherwise pile up.
    let (mut bsum, mut vsum) = (0, 0);
    for r in 1..=b.cfg.rounds {
        let load = Load::lua("batch.lua");
        bsum += wrk::run(&b.cfg, &format!("base-batch-{r}"), CONNS, &base_url, load).await?;
        vsum += wrk::run(&b.cfg, &format!("batch-{r}"), CONNS, &at, load).await?;
        b.api.delete(&mem, "b").await?;
        b.api.create(&mem, "b").await?;
    }
    let (base, v) = (bsum / b.cfg.rounds, vsum / b.cfg.rounds);
    let items = v * BATCH;
    b.row([
        "batch_enqueue",
        "batch enqueue (10,000-line bodies)",
        &items.to_string(),
        "items/s",
        &(base * BATCH).to_string(),
        &ratio(v as f64, base as f64),
        ">= 2,000,000 items/s",
        meets(items as f64, Op::AtLeast, 2_000_000.0),
    ]);
    b.api.delete(&mem, "b").await
}

pub async fn latency(b: &mut Bench) -> anyhow::Result<()> {
    log("enqueue p99 at 64 clients");
    let mem = b.mem.url.clone();
    b.api.create(&mem, "p").await?;
    let (base, v) = wrk::pair(
        &b.cfg,
        "enqueue-64",
        64,
        &format!("{}/x", b.base.url),
        &format!("{mem}{Q}/p/enqueue"),
        Load::lua("post.lua").with_latency(),
    )
    .await?;
    // The worse round's p99 of each side.
    let worst = |prefix: &str| -> anyhow::Result<String> {
        let mut worst: Option<String> = None;
        for r in 1..=b.cfg.rounds {
            let name = format!("{prefix}enqueue-64-{r}");
            let Some(p99) = wrk::p99_ms(&wrk::read(&wrk::raw(&b.cfg, &name))) else {
                bail!("wrk {name}: no 99% latency");
            };
            let p99 = fixed(p99, 2);
            if worst.as_deref().is_none_or(|w| num(&p99) > num(w)) {
                worst = Some(p99);
            }
        }
        Ok(worst.unwrap_or_default())
    };
    let base_p99 = worst("base-")?;
    let p99 = worst("")?;
    b.row([
        "enqueue_p99_64",
        "enqueue p99 latency, 64 clients",
        &p99,
        "ms",
        &base_p99,
        &ratio(num(&p99), num(&base_p99)),
        "< 5 ms",
        meets(num(&p99), Op::AtMost, 5.0),
    ]);
    b.versus(
        ["enqueue_64", "single enqueue, 64 clients", "req/s"],
        v,
        base,
        None,
    );
    b.api.delete(&mem, "p").await
}

/// The baseline's rate for single POSTs (from the enqueue section, or one run now).
async fn base_post(b: &mut Bench) -> anyhow::Result<u64> {
    if let Some(rate) = b.base_post {
        return Ok(rate);
    }
    let url = format!("{}/x", b.base.url);
    let rate = wrk::run(&b.cfg, "base-post", CONNS, &url, Load::lua("post.lua")).await?;
    b.base_post = Some(rate);
    Ok(rate)
}

/// Seconds with 2 decimals, and `items` over those seconds (as shown) per second.
fn items_per_sec(items: u64, took: Duration) -> anyhow::Result<(String, u64)> {
    let secs = fixed(took.as_secs_f64(), 2);
    if num(&secs) <= 0.0 {
        bail!("{items} items in {secs} s: too fast to measure");
    }
    let rate = whole(items as f64 / num(&secs));
    Ok((secs, rate))
}

pub async fn producer(b: &mut Bench) -> anyhow::Result<()> {
    log("producer: 1,000,000 items");
    let base = base_post(b).await?;
    let mem = b.mem.url.clone();
    let out = wrk::raw(&b.cfg, "producer");
    let mut cmd = Command::new(b.cfg.bin.join("producer"));
    cmd.args(["--server", &format!("{mem}/memq/server")])
        .args(["--queue", "prod", "--create", "--no-progress"])
        .arg("work-item-{000000..999999}");
    both_into(&mut cmd, &out)?;
    let t0 = Instant::now();
    let status = Proc::spawn("producer", &mut cmd)?.wait().await?;
    let took = t0.elapsed();
    if !status.success() {
        bail!("producer failed: {}", wrk::read(&out));
    }
    let depth = b.api.depth(&mem, "prod").await?;
    if depth != 1_000_000 {
        bail!("producer: depth {depth}, not 1000000");
    }
    let (secs, v) = items_per_sec(1_000_000, took)?;
    b.row([
        "producer_1m",
        &format!("producer, 1,000,000 items end to end ({secs} s)"),
        &v.to_string(),
        "items/s",
        &base.to_string(),
        &ratio(v as f64, base as f64),
        "< 2 s",
        meets(num(&secs), Op::AtMost, 2.0),
    ]);
    b.api.delete(&mem, "prod").await
}

pub async fn consumers(b: &mut Bench) -> anyhow::Result<()> {
    log("5 consumers drain 100,000 items");
    let base = base_post(b).await?;
    let mem = b.mem.url.clone();
    b.api.create(&mem, "drain").await?;
    b.api.fill(&mem, "drain", 100_000).await?;
    let t0 = Instant::now();
    let mut consumers = Vec::new();
    for i in 1..=5 {
        let mut cmd = Command::new(b.cfg.bin.join("consumer"));
        cmd.args(["--server", &format!("{mem}/memq/server")])
            .args(["--queue", "drain", "--work", "noop"]);
        both_into(&mut cmd, &wrk::raw(&b.cfg, &format!("consumer-{i}")))?;
        consumers.push(Proc::spawn(&format!("consumer {i}"), &mut cmd)?);
    }
    for consumer in &mut consumers {
        if !consumer.wait().await?.success() {
            let outputs: String = (1..=5)
                .map(|i| wrk::read(&wrk::raw(&b.cfg, &format!("consumer-{i}"))))
                .collect();
            bail!("a consumer failed: {outputs}");
        }
    }
    let took = t0.elapsed();
    let acked = b.api.figure(&mem, "drain", "acked").await?;
    if acked != 100_000 {
        bail!("consumers acked {acked}, not 100000");
    }
    let (secs, v) = items_per_sec(100_000, took)?;
    b.row([
        "consumers_100k",
        &format!("5 consumers drain 100,000 no-op items ({secs} s)"),
        &v.to_string(),
        "items/s",
        &base.to_string(),
        &ratio(v as f64, base as f64),
        "< 10 s",
        meets(num(&secs), Op::AtMost, 10.0),
    ]);
    b.api.delete(&mem, "drain").await
}

/// Durable: journal with fsync always (group commit), against the in-memory server just before.
pub async fn durable(b: &mut Bench) -> anyhow::Result<()> {
    log("durable (--data-dir, --fsync always)");
    let parent = b.cfg.out.join("data");
    std::fs::create_dir_all(&parent)?;
    let data = tempfile::Builder::new()
        .prefix("run.")
        .tempdir_in(&parent)?;
    let data_dir = data.path().to_string_lossy().into_owned();
    let server = b
        .server("durable", &["--data-dir", &data_dir, "--fsync", "always"])
        .await?;
    let (dur, mem) = (server.url.clone(), b.mem.url.clone());
    for q in ["dp", "db"] {
        b.api.create(&dur, q).await?;
        b.api.create(&mem, q).await?;
    }
    let (m, v) = wrk::pair(
        &b.cfg,
        "durable-enqueue-64",
        64,
        &format!("{mem}{Q}/dp/enqueue"),
        &format!("{dur}{Q}/dp/enqueue"),
        Load::lua("post.lua"),
    )
    .await?;
    b.versus(
        [
            "durable_enqueue",
            "durable single enqueue, 64 clients",
            "req/s",
        ],
        v,
        m,
        Some((">= 0.50 x in-memory", 0.50)),
    );
    let (mut msum, mut vsum) = (0, 0);
    for r in 1..=b.cfg.rounds {
        let load = Load::lua("batch.lua");
        let at = |url: &str| format!("{url}{Q}/db/enqueue?batch=lines");
        msum += wrk::run(&b.cfg, &format!("memory-batch-{r}"), CONNS, &at(&mem), load).await?;
        vsum += wrk::run(
            &b.cfg,
            &format!("durable-batch-{r}"),
            CONNS,
            &at(&dur),
            load,
        )
        .await?;
        for url in [&mem, &dur] {
            b.api.delete(url, "db").await?;
            b.api.create(url, "db").await?;
        }
    }
    let (m, v) = (msum / b.cfg.rounds, vsum / b.cfg.rounds);
    b.row([
        "durable_batch",
        "durable batch enqueue (10,000-line bodies)",
        &(v * BATCH).to_string(),
        "items/s",
        &(m * BATCH).to_string(),
        &ratio(v as f64, m as f64),
        ">= 500,000 items/s",
        meets((v * BATCH) as f64, Op::AtLeast, 500_000.0),
    ]);
    drop(server);
    b.api.delete(&mem, "dp").await?;
    b.api.delete(&mem, "db").await?;
    drop(data);
    Ok(())
}
