//! Section `drain`: five consumer processes drain a queue of 16-byte items (`BENCH_DRAIN_ITEMS`,
//! default 1,000,000), every item leased and acked, on the memory store: `consumer --work noop
//! --prefetch 100`, `--worker` with a trivial Python worker (20 items each at once), `--exec` of
//! the same trivial Python per item (on 2,000 items, its rate extrapolated). Beside them, in the
//! same run, the work queues users would pick instead, each drained by five `drainpeer`
//! processes (scripts/drain) its own best way, 100 at a time: beanstalkd (reserve + delete), NATS
//! JetStream (WorkQueue stream, shared pull consumer, explicit acks), a Redis list (LMOVE + LREM,
//! the Kubernetes docs' work queue). Then one item at a time: lease + ack requests against
//! beanstalkd's reserve + delete, by the server CPU each pair costs.
//!
//! Each row gives items/s and the server's CPU per 100,000 items (utime + stime from
//! /proc/PID/stat over the drain alone, not the fill). Every drain must account for every item
//! once: memq's `acked` counter equals the items with nothing ready or in flight (an item acked
//! twice would need a lease that the first ack ended), a peer's drainers report acking them all
//! and the peer holds none.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use queue_server::testing::RedisServer;
use tokio::process::Command;

use super::http::Q;
use super::process::{Proc, both_into, output_file};
use super::table::{Op, cpu_ticks, fixed, meets_ratio, ratio, whole};
use super::wrk::{self, Load};
use super::{Bench, log};

/// Consumer processes, and drainers of each peer.
const PROCS: usize = 5;

/// Items leased per request (`--prefetch`, the peers' batch).
const BATCH: u32 = 100;

/// Items each Python worker holds at once (`--worker-items`): answers stream back while the
/// next lines are on their way, instead of one pipe round trip per item.
const WORKER_ITEMS: u32 = 20;

/// Items of the `--exec` drain, whose rate is extrapolated.
const EXEC_ITEMS: u64 = 2_000;

/// Items the peer drains one at a time for the CPU per pair.
const SINGLE_ITEMS: u64 = 200_000;

/// Clock ticks a second in /proc/PID/stat (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// The trivial `--worker`: answers every item ok.
const WORKER: &str = "import json, sys
for line in sys.stdin:
    sys.stdout.write(json.dumps({'id': json.loads(line)['id'], 'ok': True}) + '\\n')
    sys.stdout.flush()
";

/// The same trivial work as an `--exec` program: reads the item, succeeds.
const EXEC: &str = "import sys
sys.stdin.read()
";

/// One drain: how many items, how long, and the server CPU it took.
struct Drained {
    items: u64,
    took: Duration,
    cpu_secs: f64,
}

impl Drained {
    fn per_sec(&self) -> u64 {
        whole(self.items as f64 / self.took.as_secs_f64())
    }

    /// Server CPU milliseconds per 100,000 items.
    fn cpu_ms_per_100k(&self) -> f64 {
        self.cpu_secs * 1000.0 * 100_000.0 / self.items as f64
    }
}

/// CPU seconds process `pid` has used.
fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    let ticks = cpu_ticks(&stat).with_context(|| format!("no CPU times in {path}: {stat}"))?;
    Ok(ticks as f64 / TICKS_PER_SEC)
}

pub async fn section(b: &mut Bench) -> anyhow::Result<()> {
    let items = super::positive("BENCH_DRAIN_ITEMS", 1_000_000)?;
    let tools = tools()?;
    let scripts = b.work.path().join("drain");
    std::fs::create_dir_all(&scripts)?;
    let (worker, exec) = (scripts.join("worker.py"), scripts.join("exec.py"));
    std::fs::write(&worker, WORKER)?;
    std::fs::write(&exec, EXEC)?;
    let (worker, exec) = (worker.display().to_string(), exec.display().to_string());

    let prefetch = BATCH.to_string();
    log(format!(
        "drain: {PROCS} x consumer --work noop --prefetch {BATCH}, {items} items"
    ));
    let noop = memq(
        b,
        "noop",
        items,
        &["--work", "noop", "--prefetch", &prefetch],
    )
    .await?;
    log(format!(
        "drain: {PROCS} x consumer --worker (Python), {items} items"
    ));
    let worker_items = WORKER_ITEMS.to_string();
    let worker_args = [
        "--prefetch",
        &prefetch,
        "--worker-items",
        &worker_items,
        "--worker",
        "python3",
        &worker,
    ];
    let worker = memq(b, "worker", items, &worker_args).await?;
    let exec_items = EXEC_ITEMS.min(items);
    log(format!(
        "drain: {PROCS} x consumer --exec (Python), {exec_items} items"
    ));
    let exec = memq(b, "exec", exec_items, &["--exec", "python3", &exec]).await?;

    let mut peers = Vec::new();
    for peer in [Peer::Beanstalkd, Peer::Nats, Peer::Redis] {
        log(format!(
            "drain: {PROCS} x {} drainers, {BATCH} at a time, {items} items",
            peer.name()
        ));
        let running = peer.start(b, &tools).await?;
        peers.push((peer, running.drain(b, &tools, items, BATCH).await?));
    }

    let best_peer = peers.iter().map(|(_, d)| d.per_sec()).max().unwrap_or(0);
    let (v, secs) = (noop.per_sec(), fixed(noop.took.as_secs_f64(), 2));
    let ahead = v >= 250_000 && peers.iter().all(|(_, d)| v > d.per_sec());
    b.row([
        "drain_noop",
        &format!(
            "{PROCS} x consumer --work noop --prefetch {BATCH} ({secs} s); baseline: best peer"
        ),
        &v.to_string(),
        "items/s",
        &best_peer.to_string(),
        &ratio(v as f64, best_peer as f64),
        ">= 250,000, > peers",
        if ahead { "ok" } else { "MISSED" },
    ]);
    for (peer, d) in &peers {
        let secs = fixed(d.took.as_secs_f64(), 2);
        b.row([
            &format!("drain_{}", peer.name()),
            &format!(
                "{PROCS} x {}, {BATCH} at a time ({secs} s); baseline: noop",
                peer.what()
            ),
            &d.per_sec().to_string(),
            "items/s",
            &v.to_string(),
            &ratio(d.per_sec() as f64, v as f64),
            "-",
            "-",
        ]);
    }
    let (w, e) = (worker.per_sec(), exec.per_sec());
    let secs = fixed(worker.took.as_secs_f64(), 2);
    let r = ratio(w as f64, e as f64);
    let both = meets_ratio(&r, Op::AtLeast, 100.0) == "ok" && w >= 50_000;
    b.row([
        "drain_worker",
        &format!(
            "{PROCS} x consumer --worker python3 --worker-items {WORKER_ITEMS} ({secs} s); baseline: --exec"
        ),
        &w.to_string(),
        "items/s",
        &e.to_string(),
        &r,
        ">= 100 x, >= 50,000",
        if both { "ok" } else { "MISSED" },
    ]);
    let secs = fixed(exec.took.as_secs_f64(), 2);
    b.row([
        "drain_exec",
        &format!("{PROCS} x consumer --exec python3, {exec_items} items ({secs} s)"),
        &e.to_string(),
        "items/s",
        "-",
        "-",
        "-",
        "-",
    ]);
    // Server CPU per 100,000 items, against memq's noop drain.
    let base_cpu = noop.cpu_ms_per_100k();
    let mut cpu_rows = vec![
        ("noop", "consumer --work noop --prefetch 100", &noop),
        ("worker", "consumer --worker python3 (trivial)", &worker),
        ("exec", "consumer --exec python3", &exec),
    ];
    for (peer, d) in &peers {
        cpu_rows.push((peer.name(), peer.what(), d));
    }
    for (key, what, d) in cpu_rows {
        let cpu = d.cpu_ms_per_100k();
        b.row([
            &format!("drain_cpu_{key}"),
            &format!("server CPU per 100,000 items: {what}"),
            &fixed(cpu, 1),
            "ms",
            &fixed(base_cpu, 1),
            &ratio(cpu, base_cpu),
            "-",
            "-",
        ]);
    }
    single_item_cpu(b, &tools, items).await
}

/// Server CPU per item leased and acked one at a time, with a request each (lease-ack.lua, one
/// connection per consumer), against beanstalkd's reserve + delete of one item at a time.
async fn single_item_cpu(b: &mut Bench, tools: &Path, items: u64) -> anyhow::Result<()> {
    let single = SINGLE_ITEMS.min(items);
    log(format!(
        "drain: {PROCS} x beanstalkd reserve + delete one at a time, {single} items"
    ));
    let beanstalkd = Peer::Beanstalkd.start(b, tools).await?;
    let peer = beanstalkd.drain(b, tools, single, 1).await?;
    drop(beanstalkd);

    log(format!("drain: lease + ack requests, {PROCS} connections"));
    let mem = b.mem.url.clone();
    b.api.create(&mem, "drain-single").await?;
    // More than a run can take: lease-ack.lua must never find the queue empty.
    b.api.fill(&mem, "drain-single", 1_000_000).await?;
    let path = format!("{Q}/drain-single");
    let load = Load::lua("lease-ack.lua").at_queue(&path);
    let before = cpu_secs(b.mem.proc.pid())?;
    wrk::run(&b.cfg, "drain-single", PROCS as u32, &mem, load).await?;
    let cpu = cpu_secs(b.mem.proc.pid())? - before;
    let runs = wrk::lease_acks(&wrk::read(&wrk::raw(&b.cfg, "drain-single")))?;
    let pairs: u64 = runs.iter().map(|r| r.acks).sum();
    if pairs == 0 || runs.iter().any(|r| r.errors != 0) {
        bail!("drain-single: {runs:?}: no acks, or unexpected answers");
    }
    b.api.delete(&mem, "drain-single").await?;
    let (ours, theirs) = (
        cpu * 1e6 / pairs as f64,
        peer.cpu_secs * 1e6 / peer.items as f64,
    );
    let r = ratio(ours, theirs);
    b.row([
        "drain_cpu_pair",
        "server CPU per lease + ack (1 item, 2 requests); baseline: beanstalkd reserve + delete",
        &fixed(ours, 2),
        "µs",
        &fixed(theirs, 2),
        &r,
        "<= 1.00 x beanstalkd",
        meets_ratio(&r, Op::AtMost, 1.0),
    ]);
    Ok(())
}

/// `$DRAIN_TOOLS` (scripts/bench.sh builds drainpeer and nats-server there).
fn tools() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("DRAIN_TOOLS")
        .map(PathBuf::from)
        .context("DRAIN_TOOLS is not set: run the drain section through scripts/bench.sh, which builds its peers")?;
    for tool in ["drainpeer", "nats-server"] {
        if !dir.join(tool).is_file() {
            bail!(
                "{} is missing: scripts/bench.sh drain builds it",
                dir.join(tool).display()
            );
        }
    }
    Ok(dir)
}

/// Five consumers with `args` drain `items` items from a queue of their own, `--until empty`;
/// fails unless every item was acked once and none is left.
async fn memq(b: &mut Bench, name: &str, items: u64, args: &[&str]) -> anyhow::Result<Drained> {
    let mem = b.mem.url.clone();
    let queue = format!("drain-{name}");
    b.api.create(&mem, &queue).await?;
    b.api.fill(&mem, &queue, items).await?;
    let pid = b.mem.proc.pid();
    let before = cpu_secs(pid)?;
    let t0 = Instant::now();
    let mut consumers = Vec::new();
    for i in 1..=PROCS {
        let mut cmd = Command::new(b.cfg.bin.join("consumer"));
        cmd.args(["--server", &format!("{mem}/memq/server")])
            .args(["--queue", &queue, "--until", "empty"])
            .env("RUST_LOG", "warn")
            .args(args);
        both_into(&mut cmd, &wrk::raw(&b.cfg, &format!("{queue}-{i}")))?;
        consumers.push(Proc::spawn(&format!("consumer {queue} {i}"), &mut cmd)?);
    }
    for (i, consumer) in consumers.iter_mut().enumerate() {
        if !consumer.wait().await?.success() {
            let out = wrk::read(&wrk::raw(&b.cfg, &format!("{queue}-{}", i + 1)));
            bail!("consumer {queue} {} failed: {out}", i + 1);
        }
    }
    let took = t0.elapsed();
    let cpu_secs = cpu_secs(pid)? - before;
    let stats = b.api.queue(&mem, &queue).await?;
    let figure = |f: &str| stats[f].as_u64().unwrap_or(u64::MAX);
    if figure("acked") != items || figure("depth") != 0 || figure("inflight") != 0 {
        bail!("{queue}: {items} items, but the queue says {stats}");
    }
    b.api.delete(&mem, &queue).await?;
    Ok(Drained {
        items,
        took,
        cpu_secs,
    })
}

#[derive(Clone, Copy)]
enum Peer {
    Beanstalkd,
    Nats,
    Redis,
}

/// A peer server, stopped when dropped.
struct Running {
    peer: Peer,
    addr: String,
    pid: u32,
    _proc: Option<Proc>,
    _redis: Option<RedisServer>,
    _dir: tempfile::TempDir,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Beanstalkd => "beanstalkd",
            Peer::Nats => "nats",
            Peer::Redis => "redis",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Peer::Beanstalkd => "beanstalkd reserve + delete",
            Peer::Nats => "NATS JetStream pull + ack",
            Peer::Redis => "Redis LMOVE + LREM",
        }
    }

    /// Starts the peer on a free loopback port and waits until it takes connections.
    async fn start(self, b: &Bench, tools: &Path) -> anyhow::Result<Running> {
        let dir = tempfile::Builder::new()
            .prefix(self.name())
            .tempdir_in(b.work.path())?;
        if let Peer::Redis = self {
            // RedisServer::start panics when redis-server cannot start (its message says why).
            let redis = tokio::spawn(RedisServer::start(&[])).await.map_err(|_| {
                anyhow::anyhow!("Redis did not start (why: above); is redis-server installed?")
            })?;
            let mut conn = redis.connection().await;
            let info: String = redis::cmd("INFO")
                .arg("server")
                .query_async(&mut conn)
                .await
                .context("INFO server")?;
            let pid = info
                .lines()
                .find_map(|l| l.strip_prefix("process_id:"))
                .and_then(|p| p.trim().parse().ok())
                .context("no process_id in INFO server")?;
            return Ok(Running {
                peer: self,
                addr: format!("127.0.0.1:{}", redis.port()),
                pid,
                _proc: None,
                _redis: Some(redis),
                _dir: dir,
            });
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = match self {
            Peer::Beanstalkd => {
                let mut cmd = Command::new("beanstalkd");
                cmd.args(["-l", "127.0.0.1", "-p", &port.to_string()]);
                cmd
            }
            _ => {
                let mut cmd = Command::new(tools.join("nats-server"));
                cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "--jetstream"])
                    .arg("--store_dir")
                    .arg(dir.path());
                cmd
            }
        };
        both_into(&mut cmd, &dir.path().join("server.log"))?;
        let mut proc = Proc::spawn(self.name(), &mut cmd)?;
        let addr = format!("127.0.0.1:{port}");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return Ok(Running {
                    peer: self,
                    addr,
                    pid: proc.pid(),
                    _proc: Some(proc),
                    _redis: None,
                    _dir: dir,
                });
            }
            if proc.exited() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = wrk::read(&dir.path().join("server.log"));
        bail!("{} did not start on {addr}: {log}", self.name())
    }
}

impl Running {
    /// `drainpeer fill`, then five `drainpeer drain ... BATCH` at once; fails unless their acks
    /// add up to `items` and the peer holds none.
    async fn drain(
        &self,
        b: &Bench,
        tools: &Path,
        items: u64,
        batch: u32,
    ) -> anyhow::Result<Drained> {
        let name = self.peer.name();
        let raw = |what: &str| wrk::raw(&b.cfg, &format!("drain-{name}-{what}"));
        let drainpeer = tools.join("drainpeer");
        let run = |what: &str, args: &[String]| -> anyhow::Result<(Proc, PathBuf)> {
            let out = raw(what);
            let mut cmd = Command::new(&drainpeer);
            cmd.args(args).stdout(output_file(&out)?);
            Ok((
                Proc::spawn(&format!("drainpeer {what} {name}"), &mut cmd)?,
                out,
            ))
        };
        let args = |verb: &str, n: Option<u64>| -> Vec<String> {
            let mut args = vec![verb.to_string(), name.to_string(), self.addr.clone()];
            args.extend(n.map(|n| n.to_string()));
            args
        };
        let (mut fill, _) = run("fill", &args("fill", Some(items)))?;
        if !fill.wait().await?.success() {
            bail!("drainpeer fill {name} failed (its error is above)");
        }
        let before = cpu_secs(self.pid)?;
        let t0 = Instant::now();
        let mut drainers = Vec::new();
        for i in 1..=PROCS {
            drainers.push(run(
                &format!("drain-{i}"),
                &args("drain", Some(batch.into())),
            )?);
        }
        let mut acked = 0;
        for (drainer, out) in &mut drainers {
            if !drainer.wait().await?.success() {
                bail!("drainpeer drain {name} failed (its error is above)");
            }
            let text = wrk::read(out);
            acked += text
                .trim()
                .strip_prefix("acked ")
                .and_then(|n| n.parse::<u64>().ok())
                .with_context(|| format!("drainpeer drain {name} said {text:?}"))?;
        }
        let took = t0.elapsed();
        let cpu_secs = cpu_secs(self.pid)? - before;
        if acked != items {
            bail!("{name}: {items} items, {acked} acked");
        }
        // Acks sent without waiting for an answer may still be on their way in: a moment more.
        let mut left = String::new();
        for _ in 0..50 {
            let (mut proc, out) = run("left", &args("left", None))?;
            if !proc.wait().await?.success() {
                bail!("drainpeer left {name} failed (its error is above)");
            }
            left = wrk::read(&out).trim().to_string();
            if left == "left 0" {
                return Ok(Drained {
                    items,
                    took,
                    cpu_secs,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("{name}: every item acked, but {left}")
    }
}
