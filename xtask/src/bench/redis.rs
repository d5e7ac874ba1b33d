//! Section `redis`: the Redis store (`--redis`), one replica, then three on the same Redis and
//! key prefix with the load spread over them, against the memory store of the same run; then
//! Redis's time per operation against the least an enqueue can cost (`INFO commandstats`), the
//! Redis calls per operation, counted by Redis itself (`MONITOR`), and a Redis Cluster's spread
//! of many queues over its primaries and the ceiling of one queue.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use queue_server::testing::{RedisCluster, RedisServer};
use serde_json::Value;

use super::http::Q;
use super::table::{Op, fixed, meets, meets_ratio, num, ratio};
use super::wrk::{self, Load, Sum};
use super::{Bench, CONNS, log};

/// Operations of each kind in the round-trip count.
const OPS: u64 = 1000;

/// The commands that call a script (lower case): EVALSHA, and FCALL since the queue script
/// became a Redis Functions library.
const SCRIPT_CALLS: [&str; 2] = ["evalsha", "fcall"];

/// The ECHO that opens each phase of the round-trip count (and closes the last one).
const MARK: &str = "memq-bench:";

/// Calls of the floor function ([`FLOOR`]) one at a time.
const FLOOR_CALLS: u64 = 20_000;

/// The least a single enqueue can cost Redis as one function call: read the queue's config,
/// write the body, append the id, count it. What every real enqueue does too (and more: dedup
/// keys, maxDepth, delays, wake-ups, the reply), so its time is the floor under `redis_us_enq_1`.
const FLOOR: &str = "#!lua name=memq_bench_floor
redis.register_function('memq_bench_floor', function(keys, args)
    redis.call('TIME')
    redis.call('HMGET', keys[1], 'lease_ms', 'max_attempts', 'max_depth', 'paused')
    redis.call('HSET', keys[2], args[1], args[2])
    redis.call('RPUSH', keys[3], args[1])
    redis.call('HINCRBY', keys[1], 'enqueued', 1)
    return 1
end)
";

/// Queues of the Redis Cluster spread run.
const SPREAD_QUEUES: u32 = 30;

pub async fn section(b: &mut Bench) -> anyhow::Result<()> {
    // Each round runs memory, 1 replica, 3 replicas in turn, so load from elsewhere weighs on
    // all three alike.
    log("Redis store: 1 and 3 replicas on one redis-server, against the memory store");
    // RedisServer::start panics when redis-server cannot start (its message says why).
    let redis = tokio::spawn(RedisServer::start(&[])).await.map_err(|_| {
        anyhow::anyhow!("Redis did not start (why: above); is redis-server installed?")
    })?;
    let redis_url = redis.url();
    let mut replicas = Vec::new();
    for i in 1..=3 {
        let args = ["--redis", &redis_url, "--redis-prefix", "memq-bench"];
        replicas.push(b.server(&format!("redis-{i}"), &args).await?);
    }
    for replica in &replicas {
        b.api.ready(&replica.url).await?;
    }
    let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
    let (mem, r1) = (b.mem.url.clone(), urls[0].clone());
    for url in [&mem, &r1] {
        b.api.create(url, "re").await?;
        b.api.create(url, "rl").await?;
    }
    b.api.fill(&mem, "rl", 500_000).await?;
    b.api.fill(&r1, "rl", 300_000).await?;

    let enq: Vec<String> = urls.iter().map(|u| format!("{u}{Q}/re/enqueue")).collect();
    let enq: Vec<&str> = enq.iter().map(String::as_str).collect();
    let mem_enq = format!("{mem}{Q}/re/enqueue");
    let [m, v1, v3] = three(
        b,
        "enqueue",
        Sum::Requests,
        Load::lua("post.lua"),
        &[&mem_enq],
        &enq,
    )
    .await?;
    rows(b, "redis_enq", "single enqueue", "req/s", [m, v1, v3], 0.70);

    let path = format!("{Q}/rl");
    let la: Vec<&str> = urls.iter().map(String::as_str).collect();
    let load = Load::lua("lease-ack.lua").at_queue(&path);
    let [m, v1, v3] = three(b, "lease-ack", Sum::Pairs, load, &[&mem], &la).await?;
    for url in [&mem, &r1] {
        if b.api.depth(url, "rl").await? == 0 {
            bail!("Redis lease+ack ran {url}'s queue dry; its rate would count 204s");
        }
    }
    rows(
        b,
        "redis_la",
        "lease+ack pairs",
        "pairs/s",
        [m, v1, v3],
        0.55,
    );

    // Batch enqueue through one replica: 10,000-line bodies, a fresh queue after the run.
    log("batch enqueue through Redis");
    b.api.create(&r1, "rb").await?;
    let at = format!("{r1}{Q}/rb/enqueue?batch=lines");
    let rate = wrk::run(&b.cfg, "redis-batch", CONNS, &at, Load::lua("batch.lua")).await?;
    b.api.delete(&r1, "rb").await?;
    let items = rate * 10_000;
    b.row([
        "redis_batch_x1",
        "batch enqueue (10,000 lines), Redis, 1 replica",
        &items.to_string(),
        "items/s",
        "-",
        "-",
        ">= 1,000,000 items/s",
        meets(items as f64, Op::AtLeast, 1_000_000.0),
    ]);

    // Redis's own time per script call under that load (usec_per_call of evalsha or fcall),
    // for the record.
    let client = redis::Client::open(redis_url.as_str())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .context("INFO commandstats")?;
    std::fs::write(wrk::raw(&b.cfg, "redis-commandstats"), stats)?;
    for url in [&mem, &r1] {
        b.api.delete(url, "re").await?;
        b.api.delete(url, "rl").await?;
    }

    // Round trips, counted by Redis rather than assumed: MONITOR logs every command a client
    // sends (and, marked "lua", each one a script runs) while one replica takes N enqueues, N
    // leases and N acks, one request at a time over one connection. The other replicas are
    // stopped first, so that only this replica's background calls (the stats sampler, once a
    // second; the sweep of every queue, every 2 s) share the window; they are counted too.
    replicas.truncate(1);
    redis_time(b, &mut conn, &r1).await?;
    b.api.create(&r1, "rt").await?;
    let monitor = client
        .get_async_monitor()
        .await
        .context("redis MONITOR did not start")?;
    let watch = tokio::spawn(async move {
        let mut lines = Vec::new();
        let mut messages = monitor.into_on_message::<String>();
        while let Some(line) = messages.next().await {
            let end = line.contains(&format!("\"{MARK}end\""));
            lines.push(line);
            if end {
                break;
            }
        }
        lines
    });
    let mut echo = async |phase: &str| -> anyhow::Result<()> {
        redis::cmd("ECHO")
            .arg(format!("{MARK}{phase}"))
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .with_context(|| format!("ECHO {MARK}{phase}"))
    };
    // Each phase over one connection of its own, as one curl with many URLs did.
    echo("enqueue").await?;
    let mut session = b.api.session()?;
    let body = b"work-item-000000";
    for _ in 0..OPS {
        let at = format!("{r1}{Q}/rt/enqueue");
        session.post(&at, Some(body.to_vec())).await?;
    }
    echo("dequeue").await?;
    // Replaced: the connection before is closed.
    session = b.api.session()?;
    let mut ids = Vec::new();
    for _ in 0..OPS {
        let at = format!("{r1}{Q}/rt/dequeue?lease=30");
        let answer: Value =
            serde_json::from_str(&session.post(&at, None).await?).unwrap_or_default();
        if let Some(id) = answer["lease"]["id"].as_str() {
            ids.push(id.to_string());
        }
    }
    if ids.len() as u64 != OPS {
        bail!("round trips: {} leases, not {OPS}", ids.len());
    }
    echo("ack").await?;
    session = b.api.session()?;
    for id in &ids {
        let at = format!("{r1}{Q}/rt/leases/{id}/ack");
        session.post(&at, None).await?;
    }
    echo("end").await?;
    drop(session);
    let lines = match tokio::time::timeout(Duration::from_secs(5), watch).await {
        Ok(Ok(lines))
            if lines
                .last()
                .is_some_and(|l| l.contains(&format!("\"{MARK}end\""))) =>
        {
            lines
        }
        _ => bail!("redis MONITOR missed the end of the window"),
    };
    let stats = b.api.queue(&r1, "rt").await?;
    let figure = |name: &str| stats[name].as_u64().unwrap_or(0);
    let (e, d, a) = (figure("enqueued"), figure("dequeued"), figure("acked"));
    if (e, d, a) != (OPS, OPS, OPS) {
        bail!("round trips: enqueued {e}, dequeued {d}, acked {a}; not {OPS} each");
    }
    let counts = round_trips(&lines);
    let listing: String = counts
        .iter()
        .map(|c| format!("{} {} {}\n", c.phase, c.count, c.command))
        .collect();
    std::fs::write(wrk::raw(&b.cfg, "redis-roundtrips"), &listing)?;
    log(format!(
        "Redis commands per phase of {OPS} operations: {}",
        listing.replace('\n', ";")
    ));
    for (phase, key, op) in [
        ("enqueue", "redis_rt_enqueue", "enqueue"),
        ("dequeue", "redis_rt_lease", "lease"),
        ("ack", "redis_rt_ack", "ack"),
    ] {
        let (call, own, all) = phase_calls(&counts, phase);
        b.row([
            key,
            &format!("Redis calls/{op}: {own} {call} + {} other", all - own),
            &fixed(all as f64 / OPS as f64, 3),
            "calls/op",
            "-",
            "-",
            &format!("1 {call} per op"),
            if own == OPS { "ok" } else { "MISSED" },
        ]);
    }
    drop(replicas);
    drop(redis);
    cluster(b).await
}

/// The rows of one figure: the memory store's, then 1 and 3 replicas' with their ratio to it;
/// 1 replica must reach `least` x the memory store, 3 replicas at least what 1 does.
fn rows(b: &mut Bench, key: &str, what: &str, unit: &str, [m, v1, v3]: [u64; 3], least: f64) {
    let memory = m.to_string();
    let (key_m, what_m) = (format!("{key}_memory"), format!("{what}, memory store"));
    b.row([&key_m, &what_m, &memory, unit, "-", "-", "-", "-"]);
    let r1 = ratio(v1 as f64, m as f64);
    b.row([
        &format!("{key}_x1"),
        &format!("{what}, Redis store, 1 replica"),
        &v1.to_string(),
        unit,
        &memory,
        &r1,
        &format!(">= {least:.2} x memory"),
        meets_ratio(&r1, Op::AtLeast, least),
    ]);
    b.row([
        &format!("{key}_x3"),
        &format!("{what}, Redis store, 3 replicas"),
        &v3.to_string(),
        unit,
        &memory,
        &ratio(v3 as f64, m as f64),
        ">= 1 replica",
        meets(v3 as f64, Op::AtLeast, v1 as f64),
    ]);
}

/// The sum of `usec` over every command in an `INFO commandstats` answer: all the time Redis
/// spent running commands (a script call's time holds the commands it ran).
pub fn total_usec(commandstats: &str) -> u64 {
    commandstats
        .lines()
        .filter(|l| l.starts_with("cmdstat_"))
        .filter_map(|l| l.split(',').find_map(|f| f.strip_prefix("usec=")))
        .filter_map(|u| u.trim().parse::<u64>().ok())
        .sum()
}

async fn usec_since_reset(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<u64> {
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .context("INFO commandstats")?;
    Ok(total_usec(&stats))
}

async fn reset(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<()> {
    redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async::<()>(conn)
        .await
        .context("CONFIG RESETSTAT")
}

/// Redis's own time per operation (every command's `usec` in `INFO commandstats`, summed, over
/// the operations served; the replica's background calls count too): one request at a time,
/// where no two requests can share a call, and [`CONNS`] connections at once on one replica,
/// where requests for the queue share calls.
async fn redis_time(
    b: &mut Bench,
    conn: &mut redis::aio::MultiplexedConnection,
    r1: &str,
) -> anyhow::Result<()> {
    log("Redis time per operation (INFO commandstats)");
    b.api.create(r1, "us").await?;
    let session = b.api.session()?;
    reset(conn).await?;
    for _ in 0..OPS {
        let at = format!("{r1}{Q}/us/enqueue");
        session
            .post(&at, Some(b"work-item-000000".to_vec()))
            .await?;
    }
    let one_enqueue = usec_since_reset(conn).await? as f64 / OPS as f64;
    let floor = floor(conn).await?;
    reset(conn).await?;
    for _ in 0..OPS {
        let at = format!("{r1}{Q}/us/dequeue?lease=30");
        let answer: Value =
            serde_json::from_str(&session.post(&at, None).await?).unwrap_or_default();
        let id = answer["lease"]["id"]
            .as_str()
            .context("a lease from the queue just filled")?;
        session
            .post(&format!("{r1}{Q}/us/leases/{id}/ack"), None)
            .await?;
    }
    let one_pair = usec_since_reset(conn).await? as f64 / OPS as f64;
    drop(session);

    let enqueued = b.api.figure(r1, "us", "enqueued").await?;
    reset(conn).await?;
    let url = format!("{r1}{Q}/us/enqueue");
    wrk::spread(
        &b.cfg,
        "redis-us-enqueue",
        Sum::Requests,
        Load::lua("post.lua"),
        &[&url],
    )
    .await?;
    let usec = usec_since_reset(conn).await?;
    let n = b.api.figure(r1, "us", "enqueued").await? - enqueued;
    let many_enqueue = usec as f64 / n.max(1) as f64;
    // Enough items that the lease+ack run cannot run the queue dry (its rate would count 204s).
    b.api.fill(r1, "us", 300_000).await?;
    let acked = b.api.figure(r1, "us", "acked").await?;
    let path = format!("{Q}/us");
    reset(conn).await?;
    let load = Load::lua("lease-ack.lua").at_queue(&path);
    wrk::spread(&b.cfg, "redis-us-lease-ack", Sum::Pairs, load, &[r1]).await?;
    let usec = usec_since_reset(conn).await?;
    let n = b.api.figure(r1, "us", "acked").await? - acked;
    let many_pair = usec as f64 / n.max(1) as f64;
    b.api.delete(r1, "us").await?;

    b.row([
        "redis_us_floor",
        "Redis us for the least an enqueue does (FCALL: TIME HMGET HSET RPUSH HINCRBY)",
        &fixed(floor, 2),
        "us/op",
        "-",
        "-",
        "-",
        "-",
    ]);
    let one = fixed(one_enqueue, 2);
    b.row([
        "redis_us_enq_1",
        "Redis us/enqueue, one request at a time (baseline: the floor above)",
        &one,
        "us/op",
        &fixed(floor, 2),
        &ratio(one_enqueue, floor),
        "<= 4 us",
        meets(num(&one), Op::AtMost, 4.0),
    ]);
    for (key, what, value, limit) in [
        (
            "redis_us_la_1",
            "Redis us/lease+ack, one request at a time",
            one_pair,
            8.0,
        ),
        (
            "redis_us_enq_32",
            "Redis us/enqueue, 32 connections",
            many_enqueue,
            1.5,
        ),
        (
            "redis_us_la_32",
            "Redis us/lease+ack, 32 connections",
            many_pair,
            3.0,
        ),
    ] {
        let value = fixed(value, 2);
        b.row([
            key,
            what,
            &value,
            "us/op",
            "-",
            "-",
            &format!("<= {limit} us"),
            meets(num(&value), Op::AtMost, limit),
        ]);
    }
    Ok(())
}

/// Redis's time per call of [`FLOOR`], [`FLOOR_CALLS`] calls one at a time on keys of their
/// own (deleted after).
async fn floor(conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<f64> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(FLOOR)
        .query_async::<String>(conn)
        .await
        .context("FUNCTION LOAD of the floor function")?;
    let keys = ["memq-floor:meta", "memq-floor:items", "memq-floor:ready"];
    redis::cmd("HSET")
        .arg(keys[0])
        .arg(
            &[
                "lease_ms",
                "30000",
                "max_attempts",
                "0",
                "max_depth",
                "0",
                "paused",
                "0",
            ][..],
        )
        .query_async::<()>(conn)
        .await?;
    reset(conn).await?;
    for i in 0..FLOOR_CALLS {
        redis::cmd("FCALL")
            .arg("memq_bench_floor")
            .arg(keys.len())
            .arg(&keys[..])
            .arg(format!("item-{i:08}"))
            .arg("work-item-000000")
            .query_async::<i64>(conn)
            .await
            .context("FCALL memq_bench_floor")?;
    }
    let usec = usec_since_reset(conn).await?;
    redis::cmd("DEL").arg(&keys).query_async::<()>(conn).await?;
    redis::cmd("FUNCTION")
        .arg("DELETE")
        .arg("memq_bench_floor")
        .query_async::<()>(conn)
        .await?;
    Ok(usec as f64 / FLOOR_CALLS as f64)
}

/// Redis Cluster: three primaries and one replica; single enqueues spread over
/// [`SPREAD_QUEUES`] queues (each in the slot of its name), then all on one queue. Prints how
/// evenly the primaries share the work (their `INFO commandstats` time) and one queue's
/// ceiling, which one primary bounds.
async fn cluster(b: &mut Bench) -> anyhow::Result<()> {
    log("Redis Cluster: 3 primaries, 30 queues, then one hot queue");
    let cluster = tokio::spawn(RedisCluster::start(3)).await.map_err(|_| {
        anyhow::anyhow!("the Redis Cluster did not start (why: above); is redis-server installed?")
    })?;
    let urls = cluster.urls();
    let args = [
        "--redis",
        &urls,
        "--redis-cluster",
        "--redis-prefix",
        "memq-bench",
    ];
    let server = b.server("redis-cluster", &args).await?;
    b.api.ready(&server.url).await?;
    for i in 0..SPREAD_QUEUES {
        b.api.create(&server.url, &format!("spread-{i:02}")).await?;
    }
    let mut nodes = Vec::new();
    for node in cluster.nodes() {
        nodes.push(node.connection().await);
    }
    for conn in &mut nodes {
        reset(conn).await?;
    }
    let prefix = format!("{Q}/spread-");
    let load = Load::lua("post-queues.lua")
        .at_queue(&prefix)
        .queues(SPREAD_QUEUES);
    let rate = wrk::run(&b.cfg, "redis-cluster-spread", CONNS, &server.url, load).await?;
    let mut usec = Vec::new();
    for conn in &mut nodes {
        usec.push(usec_since_reset(conn).await?);
    }
    let (least, most) = (
        usec.iter().copied().min().unwrap_or(0),
        usec.iter().copied().max().unwrap_or(0),
    );
    let each: Vec<String> = usec
        .iter()
        .map(|u| format!("{:.1}", *u as f64 / 1e6))
        .collect();
    let spread = ratio(most as f64, least as f64);
    b.row([
        "redis_cluster_spread",
        &format!(
            "Redis time, busiest / least busy primary, {SPREAD_QUEUES} queues at {rate} req/s (s: {})",
            each.join(" / ")
        ),
        &spread,
        "x",
        "-",
        "-",
        "<= 2.0 x",
        meets(num(&spread), Op::AtMost, 2.0),
    ]);

    b.api.create(&server.url, "hot").await?;
    let at = format!("{}{Q}/hot/enqueue", server.url);
    let hot = wrk::run(
        &b.cfg,
        "redis-cluster-hot",
        CONNS,
        &at,
        Load::lua("post.lua"),
    )
    .await?;
    b.row([
        "redis_cluster_hot",
        "single enqueue, one queue (one slot: one primary's share), 1 replica",
        &hot.to_string(),
        "items/s",
        "-",
        "-",
        "-",
        "-",
    ]);
    Ok(())
}

/// For the memory store (`memory`), the first of `replicas`, and all of them: `cfg.rounds`
/// rounds of the three in turn, each a [`wrk::spread`]; the means. Raw output in
/// `raw/redis-{memory,x1,x3}-WHAT-ROUND-I.txt`.
async fn three(
    b: &Bench,
    what: &str,
    sum: Sum,
    load: Load<'_>,
    memory: &[&str],
    replicas: &[&str],
) -> anyhow::Result<[u64; 3]> {
    let mut sums = [0; 3];
    for r in 1..=b.cfg.rounds {
        let sides: [(&str, &[&str]); 3] =
            [("memory", memory), ("x1", &replicas[..1]), ("x3", replicas)];
        for (total, (side, urls)) in sums.iter_mut().zip(sides) {
            *total +=
                wrk::spread(&b.cfg, &format!("redis-{side}-{what}-{r}"), sum, load, urls).await?;
        }
    }
    Ok(sums.map(|s| s / b.cfg.rounds))
}

/// One line of the round-trip count: in `phase`, `count` times `command`.
#[derive(Debug, PartialEq, Eq)]
pub struct Calls {
    pub phase: String,
    pub count: u64,
    /// `evalsha:OP@QUEUE` or `fcall:OP@QUEUE` for a script call, the command's name (lower
    /// case) for others,
    /// `(in-script)` for the commands the scripts ran.
    pub command: String,
}

/// Counts MONITOR's lines per phase (each opened by `ECHO memq-bench:PHASE`, the last closed
/// by `ECHO memq-bench:end`); sorted by phase, then by count, largest first.
pub fn round_trips(lines: &[String]) -> Vec<Calls> {
    let unquote = |s: &str| s.replace('"', "");
    let mut phase: Option<String> = None;
    let mut counts: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in lines {
        // TIME [DB ADDR] "COMMAND" "ARG"...; ADDR is "lua" for what a script runs.
        let f: Vec<&str> = line.split_whitespace().collect();
        let field = |i: usize| f.get(i - 1).copied().unwrap_or("");
        if field(3) == "lua]" {
            if let Some(ph) = &phase {
                *counts
                    .entry((ph.clone(), "(in-script)".into()))
                    .or_default() += 1;
            }
            continue;
        }
        if field(4).eq_ignore_ascii_case("\"echo\"") && field(5).starts_with(&format!("\"{MARK}")) {
            let ph = unquote(field(5)).replace(MARK, "");
            phase = (ph != "end").then_some(ph);
            continue;
        }
        let Some(ph) = &phase else { continue };
        let mut command = unquote(&field(4).to_lowercase());
        if SCRIPT_CALLS.contains(&command.as_str()) {
            // EVALSHA sha numkeys key... op ..., FCALL function numkeys key... op ...: the queue
            // is the hash tag of its keys.
            let keys: usize = unquote(field(6)).parse().unwrap_or(0);
            let op = unquote(field(7 + keys));
            let first_key = field(7);
            let queue = first_key
                .find('{')
                .and_then(|open| {
                    let close = first_key[open..].find('}')?;
                    Some(&first_key[open + 1..open + close])
                })
                .unwrap_or("?");
            command = format!("{command}:{op}@{queue}");
        }
        *counts.entry((ph.clone(), command)).or_default() += 1;
    }
    let mut calls: Vec<Calls> = counts
        .into_iter()
        .map(|((phase, command), count)| Calls {
            phase,
            count,
            command,
        })
        .collect();
    calls.sort_by(|a, b| {
        a.phase
            .cmp(&b.phase)
            .then(b.count.cmp(&a.count))
            .then(a.command.cmp(&b.command))
    });
    calls
}

/// In `phase`: the name of the script call its own op went through (`EVALSHA`, or `FCALL` for
/// a Redis Functions library), how many of them on queue `rt`, and all calls clients sent.
pub fn phase_calls(calls: &[Calls], phase: &str) -> (String, u64, u64) {
    let in_phase = || calls.iter().filter(|c| c.phase == phase);
    let own = |call: &str| -> u64 {
        let command = format!("{call}:{phase}@rt");
        in_phase()
            .filter(|c| c.command == command)
            .map(|c| c.count)
            .sum()
    };
    // EVALSHA unless only FCALL was seen.
    let (call, count) = SCRIPT_CALLS
        .iter()
        .map(|call| (*call, own(call)))
        .find(|(_, count)| *count > 0)
        .unwrap_or((SCRIPT_CALLS[0], 0));
    let all = in_phase()
        .filter(|c| c.command != "(in-script)")
        .map(|c| c.count)
        .sum();
    (call.to_uppercase(), count, all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_phase() {
        let lines: Vec<String> = [
            "1764078692.102541 [0 127.0.0.1:52100] \"SMEMBERS\" \"memq-bench:queues\"",
            "1764078692.200000 [0 127.0.0.1:52102] \"ECHO\" \"memq-bench:enqueue\"",
            "1764078692.201000 [0 127.0.0.1:52104] \"EVALSHA\" \"a1b2c3\" \"2\" \"memq-bench:{rt}:ready\" \"memq-bench:{rt}:meta\" \"enqueue\" \"work-item-000000\"",
            "1764078692.201010 [0 lua] \"HINCRBY\" \"memq-bench:{rt}:meta\" \"enqueued\" \"1\"",
            "1764078692.201020 [0 lua] \"RPUSH\" \"memq-bench:{rt}:ready\" \"x\"",
            "1764078692.202000 [0 127.0.0.1:52104] \"EVALSHA\" \"a1b2c3\" \"2\" \"memq-bench:{rt}:ready\" \"memq-bench:{rt}:meta\" \"enqueue\" \"work-item-000000\"",
            "1764078692.300000 [0 127.0.0.1:52102] \"ECHO\" \"memq-bench:dequeue\"",
            "1764078692.301000 [0 127.0.0.1:52104] \"evalsha\" \"a1b2c3\" \"1\" \"memq-bench:{rt}:ready\" \"dequeue\" \"30000\"",
            "1764078692.301500 [0 127.0.0.1:52100] \"SMEMBERS\" \"memq-bench:queues\"",
            "1764078692.301600 [0 127.0.0.1:52100] \"EVALSHA\" \"a1b2c3\" \"0\" \"sweep\"",
            "1764078692.400000 [0 127.0.0.1:52102] \"ECHO\" \"memq-bench:ack\"",
            "1764078692.401000 [0 127.0.0.1:52104] \"EVALSHA\" \"a1b2c3\" \"1\" \"memq-bench:{rt}:leases\" \"ack\" \"01ABC\"",
            "1764078692.402000 [0 127.0.0.1:52102] \"ECHO\" \"memq-bench:end\"",
            "1764078692.403000 [0 127.0.0.1:52104] \"EVALSHA\" \"a1b2c3\" \"1\" \"memq-bench:{rt}:leases\" \"ack\" \"01ABD\"",
        ]
        .map(String::from)
        .to_vec();
        let calls = round_trips(&lines);
        let listing: Vec<String> = calls
            .iter()
            .map(|c| format!("{} {} {}", c.phase, c.count, c.command))
            .collect();
        assert_eq!(
            listing,
            [
                "ack 1 evalsha:ack@rt",
                "dequeue 1 evalsha:dequeue@rt",
                "dequeue 1 evalsha:sweep@?",
                "dequeue 1 smembers",
                "enqueue 2 (in-script)",
                "enqueue 2 evalsha:enqueue@rt",
            ]
        );
        let evalsha = |n, all| ("EVALSHA".to_string(), n, all);
        assert_eq!(phase_calls(&calls, "enqueue"), evalsha(2, 2));
        assert_eq!(phase_calls(&calls, "dequeue"), evalsha(1, 3));
        assert_eq!(phase_calls(&calls, "ack"), evalsha(1, 1));
        assert_eq!(phase_calls(&calls, "none"), evalsha(0, 0));
        assert!(round_trips(&["OK".to_string()]).is_empty());
    }

    #[test]
    fn function_calls_count_as_script_calls() {
        let lines: Vec<String> = [
            "1764330000.100000 [0 127.0.0.1:40100] \"ECHO\" \"memq-bench:enqueue\"",
            "1764330000.101000 [0 127.0.0.1:40102] \"FCALL\" \"memq_3f2a\" \"3\" \"memq-bench:{rt}:ready\" \"memq-bench:{rt}:meta\" \"memq-bench:{rt}:leases\" \"enqueue\" \"memq-bench:wake\" \"r1\" \"rt\"",
            "1764330000.101010 [0 lua] \"HINCRBY\" \"memq-bench:{rt}:meta\" \"enqueued\" \"1\"",
            "1764330000.102000 [0 127.0.0.1:40100] \"PING\"",
            "1764330000.103000 [0 127.0.0.1:40100] \"ECHO\" \"memq-bench:end\"",
        ]
        .map(String::from)
        .to_vec();
        let calls = round_trips(&lines);
        assert_eq!(
            calls
                .iter()
                .map(|c| format!("{} {} {}", c.phase, c.count, c.command))
                .collect::<Vec<_>>(),
            [
                "enqueue 1 (in-script)",
                "enqueue 1 fcall:enqueue@rt",
                "enqueue 1 ping"
            ]
        );
        assert_eq!(phase_calls(&calls, "enqueue"), ("FCALL".to_string(), 1, 2));
    }

    #[test]
    fn total_usec_sums_every_command() {
        let info = "# Commandstats\r\ncmdstat_fcall:calls=10,usec=150,usec_per_call=15.00,rejected_calls=0,failed_calls=0\r\ncmdstat_hset:calls=10,usec=12,usec_per_call=1.20,rejected_calls=0,failed_calls=0\r\n";
        assert_eq!(total_usec(info), 162);
        assert_eq!(total_usec(""), 0);
    }
}
