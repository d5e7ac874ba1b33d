//! `cargo xtask`: development tasks the scripts call.
//!
//! ```text
//! cargo xtask redis              # a scratch redis-server; prints its URL, stops at end of stdin
//! cargo xtask redis --cluster 3  # a Redis Cluster of 3 primaries; prints the nodes' URLs
//! cargo xtask manifests OUT      # renders manifests/, checks RBAC and hardening (manifests.rs)
//! cargo xtask bench [SECTION...] # the HTTP benchmarks (bench.rs); run by scripts/bench.sh
//! cargo xtask image-report ARCHIVE SBOM  # an image's digests and sizes, its SBOM (image.rs)
//! ```
//!
//! `redis` prints one line, the URL (with `--cluster`, the nodes' URLs, comma-separated, as
//! `--redis` takes them), then runs until its standard input ends (the script that started it
//! closes it, or exits) and stops what it started. A script reads the line from a coprocess.
//!
//! `bench` runs the benchmark sections named (all when none) against the release binaries that
//! `scripts/bench.sh` builds, and prints the table; unknown section: exit 2.

mod bench;
mod image;
mod manifests;

use std::io::{BufRead, Write};

use anyhow::{Context, bail};
use queue_server::testing::{RedisCluster, RedisServer};

const USAGE: &str = "usage: cargo xtask redis [--cluster PRIMARIES] | cargo xtask manifests OUT \
                     | cargo xtask bench [SECTION...] | cargo xtask image-report ARCHIVE SBOM";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["redis"] => redis(None),
        ["redis", "--cluster", n] => {
            let n = n
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("--cluster {n}: a number of primaries, 1 or more"))?;
            redis(Some(n))
        }
        ["manifests", out] => {
            if manifests::run(std::path::Path::new(out))? {
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        ["bench", sections @ ..] => std::process::exit(bench::main(sections)),
        ["image-report", archive, sbom] => image::run(archive.as_ref(), sbom.as_ref()),
        _ => bail!("{USAGE}"),
    }
}

/// Starts Redis, prints where, and holds it until stdin ends.
fn redis(cluster: Option<usize>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    enum Started {
        One(RedisServer),
        Cluster(RedisCluster),
    }
    let started = runtime.block_on(async {
        match cluster {
            None => Started::One(RedisServer::start(&[]).await),
            Some(n) => Started::Cluster(RedisCluster::start(n).await),
        }
    });
    let url = match &started {
        Started::One(server) => server.url(),
        Started::Cluster(cluster) => cluster.urls(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{url}")?;
    out.flush()?;
    // Held until the starter closes our stdin (or exits); then dropped, which stops Redis.
    for line in std::io::stdin().lock().lines() {
        line?;
    }
    drop(started);
    Ok(())
}
