//! Writes a golden set of stored data with the code as it is: the scenario of
//! `queue_server::testing::golden` run against a real server, and the state its clients saw.
//!
//! ```sh
//! cargo run -p queue-server --example golden -- datadir queue-server/tests/golden/datadir-vN
//! cargo run -p queue-server --example golden -- redis queue-server/tests/golden/redis-vN
//! ```
//! `datadir DIR` writes three data directories, each with its `expected.json`:
//! `DIR/journal` (everything in the journal, beside the empty snapshot a start writes),
//! `DIR/snapshot` (a snapshot taken while leases were held, and the last change in the journal
//! after it) and `DIR/torn` (the journal one whose last record was cut short, as a crash in
//! the middle of a write leaves it: its expected state is the one before that record).
//! `redis DIR` writes `DIR/dump.rdb` (redis-server's `SAVE` after the scenario) and
//! `DIR/expected.json`. Needs `redis-server` on the PATH.
//!
//! A change of a stored format adds a new set (a new directory) and keeps the old ones: see
//! docs/durability.md, "Formats and versions".

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use queue_server::Config;
use queue_server::store::journal;
use queue_server::testing::golden::{Golden, Scenario};
use queue_server::testing::{RedisServer, TestServer, eventually};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [what, out] = args.as_slice() else {
        bail!("usage: golden datadir|redis DIR");
    };
    let out = PathBuf::from(out);
    let written_by = written_by()?;
    match what.as_str() {
        "datadir" => {
            let (before_last, all) = journal_only(&out.join("journal"), &written_by).await?;
            torn(&out.join("journal"), &out.join("torn"), before_last)?;
            all.save(&out.join("journal/expected.json"));
            snapshot(&out.join("snapshot"), &written_by).await?;
        }
        "redis" => redis(&out, &written_by).await?,
        other => bail!("{other:?}: say datadir or redis"),
    }
    eprintln!("golden: wrote {}", out.display());
    Ok(())
}

/// `queue-server VERSION (COMMIT)` of the tree this runs in.
fn written_by() -> anyhow::Result<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .context("git rev-parse HEAD")?;
    let commit = String::from_utf8(out.stdout)?.trim().to_string();
    Ok(format!(
        "queue-server {} ({commit})",
        env!("CARGO_PKG_VERSION")
    ))
}

/// An empty directory at `dir` (what was there goes).
fn fresh(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    Ok(())
}

fn durable(dir: &Path) -> Config {
    Config {
        data_dir: Some(dir.to_path_buf()),
        ..Config::default()
    }
}

/// The scenario on a durable server; the state before its last change and after it.
async fn journal_only(dir: &Path, written_by: &str) -> anyhow::Result<(Golden, Golden)> {
    fresh(dir)?;
    let server = TestServer::start_as_given(durable(dir)).await;
    let c = server.client();
    let mut s = Scenario::run(&c).await;
    let before_last = s.capture(&c, written_by).await;
    s.last(&c).await;
    let all = s.capture(&c, written_by).await;
    server.shutdown().await;
    Ok((before_last, all))
}

/// Numbers of the files `{prefix}N{suffix}` in `dir`, ascending.
fn numbered(dir: &Path, prefix: &str, suffix: &str) -> Vec<u64> {
    let mut out: Vec<u64> = std::fs::read_dir(dir)
        .expect("read the data directory")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse()
                .ok()
        })
        .collect();
    out.sort_unstable();
    out
}

fn segment(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("journal-{n:020}.log"))
}

/// Where the records of segment file `path` end, and the length of the last one's frame.
fn records_end(path: &Path) -> anyhow::Result<(usize, Option<usize>)> {
    let data = std::fs::read(path)?;
    let (start, frames) =
        journal::read_segment(&data).map_err(|e| anyhow::anyhow!("{}: {e:?}", path.display()))?;
    if let Some((at, why)) = frames.damage {
        bail!("{}: damaged at {}: {why}", path.display(), start + at);
    }
    let last = frames.records.last().map(|r| {
        let mut buf = Vec::new();
        journal::frame(&r.as_ref(), &mut buf);
        buf.len()
    });
    Ok((start + frames.end, last))
}

/// A copy of the journal directory whose last record is cut short the way a crash in the
/// middle of a write leaves it: the first half of the frame on disk, zeros after it (the
/// segment grows by zeros ahead of its records).
fn torn(from: &Path, to: &Path, before_last: Golden) -> anyhow::Result<()> {
    fresh(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    let n = *numbered(to, "journal-", ".log")
        .last()
        .context("a segment")?;
    let path = segment(to, n);
    let (end, last) = records_end(&path)?;
    let last = last.context("a record to tear")?;
    let mut data = std::fs::read(&path)?;
    data.truncate(end);
    let start = end - last;
    data[start + last / 2..].fill(0);
    data.resize(end + 4096, 0);
    std::fs::write(&path, data)?;
    before_last.save(&to.join("expected.json"));
    Ok(())
}

/// A data directory whose newest snapshot holds the scenario, leases included, and whose
/// journal holds only the last change: the server compacts whenever its journal has grown at
/// all (`--compact-bytes 1`, looked at every second), so the last change is made right after
/// a snapshot and the server stopped; if a snapshot came in between, the run is made again.
async fn snapshot(dir: &Path, written_by: &str) -> anyhow::Result<()> {
    for _ in 0..5 {
        fresh(dir)?;
        let config = Config {
            compact_bytes: 1,
            ..durable(dir)
        };
        let server = TestServer::start_as_given(config).await;
        let c = server.client();
        // The snapshot every start writes (before the first answer), before the scenario.
        c.stats().await?;
        let first = *numbered(dir, "snapshot-", ".snap")
            .last()
            .context("a snapshot")?;
        let mut s = Scenario::run(&c).await;
        // Wait for a snapshot that holds every change of the scenario: its segment is empty.
        let n = eventually(
            Duration::from_secs(20),
            "a snapshot of the scenario",
            || async {
                let n = *numbered(dir, "snapshot-", ".snap")
                    .last()
                    .expect("a snapshot");
                match records_end(&segment(dir, n)) {
                    Ok((_, None)) if n > first => Ok(n),
                    other => Err(format!("snapshot {n}, its segment: {other:?}")),
                }
            },
        )
        .await;
        s.last(&c).await;
        let all = s.capture(&c, written_by).await;
        server.shutdown().await;
        let newest = *numbered(dir, "snapshot-", ".snap")
            .last()
            .context("a snapshot")?;
        if newest == n && records_end(&segment(dir, n))?.1.is_some() {
            all.save(&dir.join("expected.json"));
            return Ok(());
        }
        eprintln!("golden: a snapshot came after the last change; again");
    }
    bail!("every run took a snapshot after the last change")
}

/// The scenario on a replica of a Redis of its own, saved to `out/dump.rdb`.
async fn redis(out: &Path, written_by: &str) -> anyhow::Result<()> {
    fresh(out)?;
    let redis = RedisServer::start(&[]).await;
    let config = Config {
        redis: Some(redis.url()),
        redis_prefix: "memq".into(),
        ..Config::default()
    };
    let server = TestServer::start_as_given(config).await;
    let c = server.client();
    let mut s = Scenario::run(&c).await;
    s.last(&c).await;
    let all = s.capture(&c, written_by).await;
    server.shutdown().await;
    let mut conn = redis.connection().await;
    let () = redis::cmd("SAVE").query_async(&mut conn).await?;
    let (_, dir): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query_async(&mut conn)
        .await?;
    std::fs::copy(Path::new(&dir).join("dump.rdb"), out.join("dump.rdb"))?;
    all.save(&out.join("expected.json"));
    Ok(())
}
