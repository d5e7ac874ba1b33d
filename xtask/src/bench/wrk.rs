//! Running wrk (`wrk -t1 -cN -dSECSs --timeout 10s [-s scripts/bench/X.lua] URL`, its output
//! into `raw/NAME.txt`) and reading what it printed: requests/s, error answers, the p99 of
//! `--latency`, and the `lease-ack:` line that `lease-ack.lua` prints.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::process::Command;

use super::process::{Proc, both_into};
use super::{CONNS, Config, table};

/// What wrk sends.
#[derive(Clone, Copy)]
pub struct Load<'a> {
    /// `scripts/bench/NAME`, or None: plain GETs.
    pub script: Option<&'a str>,
    /// `--latency`: the latency distribution (for [`p99_ms`]).
    pub latency: bool,
    /// `BENCH_QUEUE_PATH` for lease-ack.lua (a queue's path) and post-queues.lua (the
    /// queues' path up to their number).
    pub queue_path: Option<&'a str>,
    /// `BENCH_QUEUES` for post-queues.lua: how many queues.
    pub queues: Option<u32>,
    /// `BENCH_TOKEN` for post.lua: sent as `Authorization: Bearer`.
    pub token: Option<&'a str>,
}

impl<'a> Load<'a> {
    /// Plain GETs.
    pub const GET: Load<'static> = Load {
        script: None,
        latency: false,
        queue_path: None,
        queues: None,
        token: None,
    };

    /// The requests of `scripts/bench/NAME`.
    pub const fn lua(name: &'a str) -> Self {
        Load {
            script: Some(name),
            latency: false,
            queue_path: None,
            queues: None,
            token: None,
        }
    }

    pub const fn with_latency(self) -> Self {
        Load {
            latency: true,
            ..self
        }
    }

    pub const fn with_token(self, token: &'a str) -> Self {
        Load {
            token: Some(token),
            ..self
        }
    }

    pub const fn at_queue(self, path: &'a str) -> Self {
        Load {
            queue_path: Some(path),
            ..self
        }
    }

    pub const fn queues(self, n: u32) -> Self {
        Load {
            queues: Some(n),
            ..self
        }
    }
}

/// How [`spread`] sums its wrk runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sum {
    /// Requests/s.
    Requests,
    /// The acks lease-ack.lua counted, per second.
    Pairs,
}

/// `wrk -t1 -cCONNS -dDURATION --timeout TIMEOUT [-s ...] [--latency] URL`, output into `out`.
pub fn command(
    conns: u32,
    duration: &str,
    timeout: &str,
    load: Load,
    url: &str,
    out: &Path,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t1", &format!("-c{conns}"), &format!("-d{duration}")])
        .args(["--timeout", timeout]);
    if let Some(script) = load.script {
        cmd.arg("-s").arg(Path::new("scripts/bench").join(script));
    }
    if load.latency {
        cmd.arg("--latency");
    }
    if let Some(path) = load.queue_path {
        cmd.env("BENCH_QUEUE_PATH", path);
    }
    if let Some(n) = load.queues {
        cmd.env("BENCH_QUEUES", n.to_string());
    }
    if let Some(token) = load.token {
        cmd.env("BENCH_TOKEN", token);
    }
    cmd.arg(url);
    both_into(&mut cmd, out)?;
    Ok(cmd)
}

/// `raw/NAME.txt`.
pub fn raw(cfg: &Config, name: &str) -> PathBuf {
    cfg.raw.join(format!("{name}.txt"))
}

/// The text of a raw file (empty when there is none).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One wrk run of `cfg.secs` seconds: its requests/s; fails on a wrk failure or any non-2xx
/// answer. Raw output in `raw/NAME.txt`.
pub async fn run(
    cfg: &Config,
    name: &str,
    conns: u32,
    url: &str,
    load: Load<'_>,
) -> anyhow::Result<u64> {
    let out = raw(cfg, name);
    let mut cmd = command(conns, &format!("{}s", cfg.secs), "10s", load, url, &out)?;
    let status = Proc::spawn(&format!("wrk {name}"), &mut cmd)?
        .wait()
        .await?;
    let text = read(&out);
    if !status.success() {
        bail!("wrk {name} failed: {text}");
    }
    let errors = non_2xx(&text);
    if !errors.is_empty() {
        bail!("wrk {name} got error answers: {}", errors.join("\n"));
    }
    let rps = requests_per_sec(&text)
        .with_context(|| format!("wrk {name}: no Requests/sec in {text}"))?;
    Ok(table::whole(rps))
}

/// `cfg.rounds` rounds of baseline then server, `KEY` at both; the means of their requests/s
/// (baseline, server). Raw output in `raw/base-KEY-ROUND.txt` and `raw/KEY-ROUND.txt`.
pub async fn pair(
    cfg: &Config,
    key: &str,
    conns: u32,
    base_url: &str,
    server_url: &str,
    load: Load<'_>,
) -> anyhow::Result<(u64, u64)> {
    let (mut base, mut server) = (0, 0);
    for r in 1..=cfg.rounds {
        base += run(cfg, &format!("base-{key}-{r}"), conns, base_url, load).await?;
        server += run(cfg, &format!("{key}-{r}"), conns, server_url, load).await?;
    }
    Ok((base / cfg.rounds, server / cfg.rounds))
}

/// One wrk per URL, all at once, the [`CONNS`] connections shared out among them; the sum of
/// their rates. Raw output in `raw/KEY-I.txt` (I from 1).
pub async fn spread(
    cfg: &Config,
    key: &str,
    sum: Sum,
    load: Load<'_>,
    urls: &[&str],
) -> anyhow::Result<u64> {
    let n = urls.len() as u32;
    let mut runs = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let name = format!("{key}-{}", i + 1);
        let out = raw(cfg, &name);
        let conns = CONNS / n + u32::from((i as u32) < CONNS % n);
        let mut cmd = command(conns, &format!("{}s", cfg.secs), "10s", load, url, &out)?;
        runs.push((
            name.clone(),
            out,
            Proc::spawn(&format!("wrk {name}"), &mut cmd)?,
        ));
    }
    let mut texts = Vec::new();
    for (name, out, proc) in &mut runs {
        let status = proc.wait().await?;
        let text = read(out);
        if !status.success() {
            bail!("wrk {name} failed: {text}");
        }
        texts.push((out.display().to_string(), text));
    }
    // As grep prints hits in several files: FILE:LINE.
    let errors: Vec<String> = texts
        .iter()
        .flat_map(|(path, text)| {
            non_2xx(text)
                .into_iter()
                .map(move |l| format!("{path}:{l}"))
        })
        .collect();
    if !errors.is_empty() {
        bail!("wrk {key} got error answers: {}", errors.join("\n"));
    }
    let total = match sum {
        Sum::Requests => texts
            .iter()
            .map(|(path, text)| {
                requests_per_sec(text).with_context(|| format!("{path}: no Requests/sec"))
            })
            .sum::<anyhow::Result<f64>>()?,
        Sum::Pairs => {
            let mut counts = Vec::new();
            for (_, text) in &texts {
                counts.extend(lease_acks(text)?);
            }
            match pairs_per_sec(&counts) {
                Some(rate) => rate,
                None => bail!(
                    "wrk {key}: unexpected answers: {}",
                    texts
                        .iter()
                        .flat_map(|(_, t)| t.lines().filter(|l| l.starts_with("lease-ack:")))
                        .collect::<Vec<_>>()
                        .join("\n")
                ),
            }
        }
    };
    Ok(table::whole(total))
}

/// The lines that report non-2xx answers (`Non-2xx or 3xx responses: N`).
pub fn non_2xx(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains("Non-2xx")).collect()
}

/// `Requests/sec: N`.
pub fn requests_per_sec(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The p99 of a `--latency` run (its `99%` line), in ms.
pub fn p99_ms(text: &str) -> Option<f64> {
    let value = text.lines().find_map(|l| {
        let mut fields = l.split_whitespace();
        (fields.next() == Some("99%"))
            .then(|| fields.next())
            .flatten()
    })?;
    let split = value
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    // wrk's units (format_time): us, ms, s, m, h.
    let scale = match unit {
        "us" => 1e-3,
        "ms" | "" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        _ => return None,
    };
    Some(number * scale)
}

/// What lease-ack.lua's `done()` printed: `lease-ack: acks A errors E duration_us U`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LeaseAcks {
    pub acks: u64,
    pub errors: u64,
    pub duration_us: u64,
}

impl std::ops::Add for LeaseAcks {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        LeaseAcks {
            acks: self.acks + other.acks,
            errors: self.errors + other.errors,
            duration_us: self.duration_us + other.duration_us,
        }
    }
}

/// Every `lease-ack:` line of a wrk output; an error when one is not as the script prints it.
pub fn lease_acks(text: &str) -> anyhow::Result<Vec<LeaseAcks>> {
    text.lines()
        .filter(|l| l.starts_with("lease-ack:"))
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let field = |i: usize, name: &str| -> Option<u64> {
                (f.get(i - 1) == Some(&name))
                    .then(|| f.get(i)?.parse().ok())
                    .flatten()
            };
            let counts = || {
                Some(LeaseAcks {
                    acks: field(2, "acks")?,
                    errors: field(4, "errors")?,
                    duration_us: field(6, "duration_us")?,
                })
            };
            counts().with_context(|| format!("not a lease-ack line: {line}"))
        })
        .collect()
}

/// The sum of each run's acks per second; None when a run had unexpected answers, took no
/// time, or there was none.
pub fn pairs_per_sec(runs: &[LeaseAcks]) -> Option<f64> {
    if runs.is_empty() || runs.iter().any(|r| r.errors != 0 || r.duration_us == 0) {
        return None;
    }
    Some(
        runs.iter()
            .map(|r| r.acks as f64 / (r.duration_us as f64 / 1e6))
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `wrk -t1 -c32 -d3s --timeout 10s -s scripts/bench/post.lua URL`.
    const PLAIN: &str = "\
Running 3s test @ http://127.0.0.1:41527/memq/server/queues/e/enqueue
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   256.13us   87.40us   3.91ms   91.27%
    Req/Sec   124.73k     6.02k  131.70k    80.00%
  372295 requests in 3.00s, 84.84MB read
Requests/sec: 124096.51
Transfer/sec:     28.28MB
";

    /// With `--latency`, at 64 connections.
    const LATENCY: &str = "\
Running 3s test @ http://127.0.0.1:41527/memq/server/queues/p/enqueue
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   502.61us  471.92us  12.06ms   96.53%
    Req/Sec   132.99k     7.81k  141.51k    76.67%
  Latency Distribution
     50%  431.00us
     75%  548.00us
     90%  702.00us
     99%    4.21ms
  396660 requests in 3.00s, 90.39MB read
Requests/sec: 132219.53
Transfer/sec:     30.13MB
";

    /// lease-ack.lua against a server, with a few errors.
    const LEASE_ACK: &str = "\
Running 3s test @ http://127.0.0.1:41527
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   245.87us  110.02us   5.02ms   93.12%
    Req/Sec   130.12k     4.27k  136.99k    73.33%
  390540 requests in 3.00s, 101.63MB read
  Non-2xx or 3xx responses: 3
Requests/sec: 130174.28
Transfer/sec:     33.87MB
lease-ack: acks 195268 errors 3 duration_us 3000127
";

    #[test]
    fn requests_per_second() {
        assert_eq!(requests_per_sec(PLAIN), Some(124096.51));
        assert_eq!(table::whole(requests_per_sec(PLAIN).unwrap()), 124097);
        assert_eq!(requests_per_sec(LATENCY), Some(132219.53));
        assert_eq!(
            requests_per_sec("unable to connect to 127.0.0.1:1 Connection refused\n"),
            None
        );
    }

    #[test]
    fn error_answers() {
        assert!(non_2xx(PLAIN).is_empty());
        assert_eq!(non_2xx(LEASE_ACK), ["  Non-2xx or 3xx responses: 3"]);
    }

    #[test]
    fn p99_in_ms() {
        assert_eq!(p99_ms(LATENCY), Some(4.21));
        assert_eq!(p99_ms(PLAIN), None);
        let at = |v: &str| {
            p99_ms(&format!(
                "  Latency Distribution\n     50%  1ms\n     99%  {v}\n"
            ))
        };
        assert_eq!(at("612.00us"), Some(0.612));
        assert_eq!(table::fixed(at("612.00us").unwrap(), 2), "0.61");
        assert_eq!(at("1.20s"), Some(1200.0));
        assert_eq!(at("1.00m"), Some(60_000.0));
        assert_eq!(at("17.05ms"), Some(17.05));
        assert_eq!(at("fast"), None);
    }

    #[test]
    fn lease_ack_counts() {
        let runs = lease_acks(LEASE_ACK).unwrap();
        assert_eq!(
            runs,
            [LeaseAcks {
                acks: 195268,
                errors: 3,
                duration_us: 3000127
            }]
        );
        assert_eq!(pairs_per_sec(&runs), None);
        assert!(lease_acks(PLAIN).unwrap().is_empty());
        assert!(lease_acks("lease-ack: acks x errors 0 duration_us 1\n").is_err());
        let good = "lease-ack: acks 30000 errors 0 duration_us 3000000\n";
        let two = lease_acks(&format!("{good}{}", good.replace("30000 ", "15000 "))).unwrap();
        // Summed per run: 10,000/s + 5,000/s.
        assert_eq!(pairs_per_sec(&two), Some(15_000.0));
        let total = two.iter().fold(LeaseAcks::default(), |a, b| a + *b);
        assert_eq!(total.acks, 45000);
        assert_eq!(total.duration_us, 6_000_000);
        assert_eq!(pairs_per_sec(&[]), None);
    }
}
