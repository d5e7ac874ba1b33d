//! `cargo xtask bench [SECTION...]`: the HTTP benchmark suite, run by `scripts/bench.sh` once it
//! has built the release binaries (`queue-server`, `producer`, `consumer`, the `baseline`
//! example) into `$CARGO_TARGET_DIR/release` (default `target/release`).
//!
//! queue-server against a bare axum server answering 204 (`queue-server/examples/baseline.rs`,
//! the limit of the HTTP stack on this machine), driven by the same load generator (`wrk -t1`)
//! at the same concurrency, back to back in the same run; every figure with its ratio to that
//! baseline, the Redis store's (section `redis`, on a redis-server of its own) with their ratio
//! to the memory store. Each figure alternates baseline and server runs (`BENCH_ROUNDS` rounds
//! of `BENCH_SECONDS` each, default 2 x 3 s) and reports the means.
//!
//! The table goes to stdout and to `$CARGO_TARGET_DIR/bench/latest.txt` (`partial.txt` when
//! only some sections ran), wrk's raw output to `.../bench/raw/NAME.txt`, progress lines
//! (`  .. what`) to stderr. Every process it starts is held by a [`process::Proc`], killed when
//! dropped: on success, on error, and on `SIGINT` / `SIGTERM` (the run is dropped, exit 130).
//! `BENCH_DEBUG=1` logs the connection count while the long polls connect.
//!
//! Modules: [`table`] the row format and the arithmetic of the figures, [`wrk`] running wrk and
//! reading its output, [`http`] the queue API calls, [`process`] the servers and their
//! processes, [`sections`], [`drain`], [`memory`] and [`redis`] the figures.

mod dashboard;
mod drain;
mod http;
mod memory;
mod process;
mod redis;
mod sections;
mod table;
mod wrk;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::signal::unix::{SignalKind, signal};

use self::http::Api;
use self::process::{Server, start_baseline, start_server};

/// The sections, in the order they run.
pub const SECTIONS: [&str; 17] = [
    "enqueue",
    "auth",
    "tls",
    "dequeue",
    "lease_ack",
    "stats",
    "batch",
    "latency",
    "producer",
    "consumers",
    "drain",
    "deep",
    "longpoll",
    "churn",
    "durable",
    "dashboard",
    "redis",
];

/// wrk's connections for every figure that names no other count.
pub const CONNS: u32 = 32;

/// 10,000 idle long polls need 10,000 sockets on each side.
const MIN_OPEN_FILES: u64 = 10_100;

/// Runs the sections named in `only` (all of them when empty); the process's exit code: 0, 1
/// when a figure could not be taken, 2 for an unknown section, 130 on SIGINT / SIGTERM.
pub fn main(only: &[&str]) -> i32 {
    for name in only {
        if !SECTIONS.contains(name) {
            eprintln!("bench: no section {name} ({})", SECTIONS.join(" "));
            return 2;
        }
    }
    let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bench: tokio runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(async {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        // On a signal the run is dropped here, and with it every process it started.
        tokio::select! {
            biased;
            _ = int.recv() => Ok(130),
            _ = term.recv() => Ok(130),
            result = run(&only) => result.map(|()| 0),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench: {e:#}");
            1
        }
    }
}

/// A progress line on stderr.
pub fn log(what: impl std::fmt::Display) {
    eprintln!("  .. {what}");
}

/// Where things are, and how long to run; from the environment.
pub struct Config {
    /// BENCH_SECONDS: each wrk run's duration.
    pub secs: u64,
    /// BENCH_ROUNDS: alternating rounds per figure.
    pub rounds: u64,
    /// `$TARGET/bench`: the table.
    pub out: PathBuf,
    /// `$TARGET/bench/raw`: wrk's output and the other raw records.
    pub raw: PathBuf,
    /// `$TARGET/release`: the binaries.
    pub bin: PathBuf,
    /// BENCH_DEBUG set and not empty.
    pub debug: bool,
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .filter(|t| !t.is_empty())
            .map_or_else(|| PathBuf::from("target"), PathBuf::from);
        let out = target.join("bench");
        Ok(Config {
            secs: positive("BENCH_SECONDS", 3)?,
            rounds: positive("BENCH_ROUNDS", 2)?,
            raw: out.join("raw"),
            out,
            bin: target.join("release"),
            debug: std::env::var_os("BENCH_DEBUG").is_some_and(|v| !v.is_empty()),
        })
    }
}

/// The whole number in environment variable `name` (`default` when unset or empty), 1 or more.
fn positive(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("{name}={v}: a whole number, 1 or more")),
        _ => Ok(default),
    }
}

/// What the sections share: the configuration, the baseline and the in-memory server that run
/// throughout, and the rows so far.
pub struct Bench {
    pub cfg: Config,
    pub api: Api,
    /// The bare 204 server.
    pub base: Server,
    /// The in-memory queue server.
    pub mem: Server,
    /// Server logs and the like; removed at the end, after the servers (fields drop in order).
    pub work: tempfile::TempDir,
    /// The baseline's rate for single POSTs, for the rows whose load is not wrk (producer,
    /// consumers): from the enqueue section, or measured once when first needed.
    pub base_post: Option<u64>,
    rows: Vec<String>,
}

impl Bench {
    /// One row of the table: key, what, value, unit, baseline, ratio, target, verdict.
    pub fn row(&mut self, cells: [&str; 8]) {
        self.rows.push(table::row(cells));
    }

    /// A rate against its baseline's: the ratio, and with `target` (its text, and the least
    /// ratio that meets it) the verdict; without, `-` for both.
    pub fn versus(
        &mut self,
        [key, what, unit]: [&str; 3],
        value: u64,
        baseline: u64,
        target: Option<(&str, f64)>,
    ) {
        let r = table::ratio(value as f64, baseline as f64);
        let (target, verdict) = match target {
            Some((text, least)) => (text, table::meets_ratio(&r, table::Op::AtLeast, least)),
            None => ("-", "-"),
        };
        let (value, baseline) = (value.to_string(), baseline.to_string());
        self.row([key, what, &value, unit, &baseline, &r, target, verdict]);
    }

    /// Starts a queue-server on a free loopback port (see [`process::start_server`]).
    pub async fn server(&self, name: &str, args: &[&str]) -> anyhow::Result<Server> {
        start_server(&self.cfg, self.work.path(), name, args).await
    }
}

async fn run(only: &[String]) -> anyhow::Result<()> {
    // Paths as the script sees them: relative to the repository root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the repository root")?;
    std::env::set_current_dir(root).with_context(|| format!("cd {}", root.display()))?;
    let cfg = Config::from_env()?;
    // scripts/bench.sh reads it before it builds; read here only when run without it.
    let load = match std::env::var("BENCH_LOADAVG") {
        Ok(load) if !load.is_empty() => load,
        _ => loadavg()?,
    };
    let files = open_files_limit()?;
    if files < MIN_OPEN_FILES {
        bail!("need at least {MIN_OPEN_FILES} open files (ulimit -n), have {files}");
    }
    for bin in ["queue-server", "producer", "consumer", "examples/baseline"] {
        let path = cfg.bin.join(bin);
        if !path.is_file() {
            bail!(
                "{} is missing: scripts/bench.sh builds it (cargo build --release)",
                path.display()
            );
        }
    }
    std::fs::create_dir_all(&cfg.raw).with_context(|| format!("mkdir {}", cfg.raw.display()))?;
    let work = tempfile::Builder::new()
        .prefix("memq-bench.")
        .tempdir()
        .context("a work directory")?;

    log("starting the baseline and a queue server");
    let base = start_baseline(&cfg, work.path(), "base").await?;
    let mem = start_server(&cfg, work.path(), "mem", &[]).await?;
    let mut bench = Bench {
        cfg,
        api: Api::new()?,
        base,
        mem,
        work,
        base_post: None,
        rows: Vec::new(),
    };
    for name in SECTIONS {
        if only.is_empty() || only.iter().any(|o| o == name) {
            section(&mut bench, name).await?;
        }
    }

    // A partial run does not replace the full table.
    let result = if only.is_empty() {
        "latest.txt"
    } else {
        "partial.txt"
    };
    let table = render(&bench.cfg, &load, &bench.rows)?;
    print!("{table}");
    let path = bench.cfg.out.join(result);
    std::fs::write(&path, &table).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

async fn section(bench: &mut Bench, name: &str) -> anyhow::Result<()> {
    match name {
        "enqueue" => sections::enqueue(bench).await,
        "auth" => sections::auth(bench).await,
        "tls" => sections::tls(bench).await,
        "dequeue" => sections::dequeue(bench).await,
        "lease_ack" => sections::lease_ack(bench).await,
        "stats" => sections::stats(bench).await,
        "batch" => sections::batch(bench).await,
        "latency" => sections::latency(bench).await,
        "producer" => sections::producer(bench).await,
        "consumers" => sections::consumers(bench).await,
        "drain" => drain::section(bench).await,
        "deep" => memory::deep(bench).await,
        "longpoll" => memory::longpoll(bench).await,
        "churn" => memory::churn(bench).await,
        "durable" => sections::durable(bench).await,
        "dashboard" => dashboard::section(bench).await,
        "redis" => redis::section(bench).await,
        _ => bail!("no section {name}"),
    }
}

/// The header (date, commit, machine, load average, how wrk ran), the column names and the rows.
fn render(cfg: &Config, load: &str, rows: &[String]) -> anyhow::Result<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").context("/proc/meminfo")?;
    let commit = command_output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or("?".into());
    let cores = command_output("nproc", &[]).unwrap_or_else(|| {
        std::thread::available_parallelism().map_or("?".into(), |n| n.to_string())
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let mut out = String::new();
    writeln!(
        out,
        "# memq-rs scripts/bench.sh {} (commit {commit})",
        table::utc_timestamp(now.as_secs())
    )?;
    writeln!(
        out,
        "# machine: {cores} cores, {}, {}; load average before the run: {load}",
        table::cpu_model(&cpuinfo),
        table::mem_total(&meminfo)
    )?;
    writeln!(
        out,
        "# wrk -t1 -c{CONNS}, {} rounds of {}s per side, on loopback unless noted; baseline = \
         bare axum 204 server, same request, same run",
        cfg.rounds, cfg.secs
    )?;
    writeln!(
        out,
        "{}",
        table::row([
            "key", "what", "value", "unit", "baseline", "ratio", "target", "verdict"
        ])
    )?;
    for row in rows {
        writeln!(out, "{row}")?;
    }
    Ok(out)
}

/// The first three fields of /proc/loadavg.
fn loadavg() -> anyhow::Result<String> {
    let text = std::fs::read_to_string("/proc/loadavg").context("/proc/loadavg")?;
    Ok(text
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" "))
}

/// This process's soft limit of open files (what `ulimit -n` says).
fn open_files_limit() -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").context("/proc/self/limits")?;
    table::open_files(&limits).context("no \"Max open files\" in /proc/self/limits")
}

/// A command's standard output, trimmed; None when it cannot run or fails.
fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
