//! `producer`: loads work items into a memq-rs queue.
//!
//! A tour, in the order a run goes:
//! - [`cli::Args`]: the flags (each with a `MEMQ_*` env var).
//! - [`source::Sources`]: arguments with brace ranges ([`expand`]), `--file`, `--json-lines`;
//!   opened and checked before anything is sent, then read as a stream on a blocking thread.
//! - [`batch::Batcher`]: items into request bodies, `?batch=lines` when possible (cheapest for
//!   the server), `?batch=json` for keyed items.
//! - [`run`]: `--concurrency` senders take batches from a bounded channel (so a huge file is
//!   never all in memory), each retried with backoff ([`retry`]) until `--give-up-after`.
//! - `--wait`: follow the queue until it is finished (depth, inflight and delayed all 0).
//!
//! With `--idempotent` every item carries a stable key ([`source::item_key`]); the server skips
//! keys it has seen, so rerunning a crashed load (or a retried batch whose answer was lost)
//! adds nothing twice. Without it a retried batch can, rarely, be added twice.
//!
//! This crate never exits the process or installs signal handlers: `main.rs` does.

pub mod batch;
pub mod cli;
pub mod expand;
pub mod progress;
pub use memq::retry;
pub mod source;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::batch::{Batch, Batcher, Payload};
use crate::cli::Args;
use crate::progress::Bar;
use crate::retry::{RetryError, retry};
use crate::source::{InputError, Sources};

/// Why a run failed; [`Error::exit_code`] says what the process should exit with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Items that cannot be read: missing file, bad range, bad line.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A usage mistake the flags alone cannot catch.
    #[error("{0}")]
    Usage(String),
    /// The server failed for too long, or refused a request.
    #[error(transparent)]
    Server(#[from] RetryError),
}

impl Error {
    /// 2 for bad input or usage (fix the command), 1 for trouble with the server (retry later).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Input(_) | Error::Usage(_) => 2,
            Error::Server(_) => 1,
        }
    }
}

/// What a load did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Items the server added.
    pub added: u64,
    /// Items the server skipped because their key was already there.
    pub duplicates: u64,
    /// Time spent loading (not following).
    pub elapsed: Duration,
}

impl Summary {
    /// Items sent (added or skipped as duplicates).
    pub fn sent(&self) -> u64 {
        self.added + self.duplicates
    }

    /// Items per second over the load.
    pub fn rate(&self) -> f64 {
        self.sent() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The plain summary line.
    pub fn line(&self) -> String {
        format!(
            "sent {} items ({} added, {} duplicates) in {:.2}s: {:.0} items/s",
            self.sent(),
            self.added,
            self.duplicates,
            self.elapsed.as_secs_f64(),
            self.rate()
        )
    }
}

/// Builds the client the flags describe.
pub fn client(args: &Args) -> Result<memq::Client, Error> {
    // A request timeout so that a server that accepts but never answers counts as a failure to
    // retry rather than a hang; a big batch takes milliseconds, so a minute is generous.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .tcp_nodelay(true);
    let client = args
        .access
        .client(http, args.server.clone())
        .map_err(Error::Usage)?;
    Ok(client)
}

/// Whether bars are drawn.
fn bars_visible(args: &Args) -> bool {
    !args.no_progress && (args.progress || std::io::stderr().is_terminal())
}

/// Does everything the flags ask: create, load, follow. Prints the summary line to stdout.
pub async fn run(args: Args) -> Result<Summary, Error> {
    let sources = Sources::open(&args.items, !args.no_expand, &args.file, &args.json_lines)?;
    if sources.is_empty() && !args.create && !args.wait {
        return Err(Error::Usage(
            "nothing to do: give ITEMs, --file or --json-lines (or --create / --wait)".into(),
        ));
    }
    let client = client(&args)?;
    let queue = args.queue.as_str();
    if args.create {
        let (stats, created) = retry("create queue", args.give_up_after, || {
            client.create_queue(queue, None)
        })
        .await?;
        info!(queue, created, depth = stats.depth, "queue ready");
    }
    let summary = if sources.is_empty() {
        Summary {
            added: 0,
            duplicates: 0,
            elapsed: Duration::ZERO,
        }
    } else {
        let summary = load(&client, &args, sources).await?;
        println!("{}", summary.line());
        info!(
            queue,
            items = summary.sent(),
            added = summary.added,
            duplicates = summary.duplicates,
            seconds = (summary.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            items_per_s = summary.rate().round(),
            "loaded"
        );
        summary
    };
    if args.launch_job {
        launch_job(&client, &args).await?;
    }
    if args.wait {
        follow(&client, &args).await?;
    }
    Ok(summary)
}

/// Asks the server for a consumer Job on the queue. Tried once: a lost answer retried could
/// launch two Jobs, and "no cluster" does not get better by waiting.
async fn launch_job(client: &memq::Client, args: &Args) -> Result<(), Error> {
    let request = memq::CreateJobRequest {
        queue: args.queue.clone(),
        parallelism: args.parallelism,
        image: None,
        args: None,
        backoff_limit: None,
        ttl_seconds_after_finished: None,
    };
    let job = client.create_job(&request).await.map_err(|source| {
        Error::Server(RetryError::Refused {
            what: "launch consumer Job".into(),
            source,
        })
    })?;
    println!(
        "launched Job {} (parallelism {})",
        job.name, job.parallelism
    );
    info!(queue = %args.queue, job = %job.name, parallelism = job.parallelism, "consumer Job launched");
    Ok(())
}

/// Streams the sources into the queue; returns when every batch was accepted.
pub async fn load(client: &memq::Client, args: &Args, sources: Sources) -> Result<Summary, Error> {
    let start = Instant::now();
    let bar = Bar::loading(sources.estimate(), bars_visible(args));
    let concurrency = args.concurrency as usize;
    // Bounded: the reader blocks once a few batches wait, so memory stays at
    // O(concurrency * batch) whatever the input size.
    let (tx, rx) = mpsc::channel::<Batch>(concurrency * 2);
    let (batch_size, idempotent) = (args.batch as usize, args.idempotent);
    let reader = tokio::task::spawn_blocking(move || {
        let mut batcher = Batcher::new(batch_size);
        let mut open = true;
        sources.for_each(idempotent, |item| {
            if let Some(batch) = batcher.push(item) {
                // Fails only when the senders are gone (one failed): stop reading.
                open = tx.blocking_send(batch).is_ok();
            }
            open
        })?;
        if let (true, Some(batch)) = (open, batcher.finish()) {
            let _ = tx.blocking_send(batch);
        }
        Ok::<(), InputError>(())
    });

    let rx = Arc::new(Mutex::new(rx));
    let mut senders = JoinSet::new();
    for _ in 0..concurrency {
        let (rx, client, bar) = (rx.clone(), client.clone(), bar.clone());
        let (queue, delay, give_up) = (args.queue.clone(), args.delay, args.give_up_after);
        senders.spawn(async move {
            let (mut added, mut duplicates) = (0u64, 0u64);
            loop {
                let next = rx.lock().await.recv().await;
                let Some(batch) = next else { break };
                let result = retry("enqueue batch", give_up, || {
                    let (client, queue, payload) = (&client, &queue, &batch.payload);
                    async move {
                        match payload {
                            Payload::Lines(body) => {
                                client.enqueue_lines(queue, body.clone(), delay).await
                            }
                            Payload::Json(items) => client.enqueue_batch(queue, items, delay).await,
                        }
                    }
                })
                .await?;
                added += result.count;
                duplicates += result.duplicates;
                bar.inc(batch.count as u64);
            }
            Ok::<_, RetryError>((added, duplicates))
        });
    }
    drop(rx);

    let (mut added, mut duplicates) = (0, 0);
    let mut failure = None;
    while let Some(joined) = senders.join_next().await {
        match joined {
            Ok(Ok((a, d))) => {
                added += a;
                duplicates += d;
            }
            Ok(Err(err)) => {
                // One sender gave up: the others would only hit the same wall.
                senders.abort_all();
                failure.get_or_insert(err);
            }
            Err(join) if join.is_cancelled() => {}
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
    // With every sender gone the channel is closed, so the reader stops at its next batch.
    let read = match reader.await {
        Ok(read) => read,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    };
    bar.finish();
    // A bad line makes the run an input error even if the server also failed later.
    read?;
    if let Some(err) = failure {
        return Err(err.into());
    }
    Ok(Summary {
        added,
        duplicates,
        elapsed: start.elapsed(),
    })
}

/// Follows the queue until nothing is ready, in flight or delayed.
pub async fn follow(client: &memq::Client, args: &Args) -> Result<memq::QueueStats, Error> {
    let queue = args.queue.as_str();
    let start = Instant::now();
    let visible = bars_visible(args);
    let mut bar: Option<Bar> = None;
    let mut last_log: Option<Instant> = None;
    loop {
        let q = retry("read queue", args.give_up_after, || client.queue(queue)).await?;
        let left = q.depth + q.inflight + q.delayed;
        let bar = bar.get_or_insert_with(|| Bar::following(left, visible));
        bar.set_left(
            left,
            format!(
                "ready {} · in flight {} · dead {}",
                q.depth, q.inflight, q.dead
            ),
        );
        if left == 0 {
            bar.finish();
            let secs = start.elapsed().as_secs_f64();
            println!(
                "queue {queue} finished after {secs:.2}s: {} acked, {} dead",
                q.acked, q.dead
            );
            info!(
                queue,
                acked = q.acked,
                dead = q.dead,
                seconds = (secs * 1000.0).round() / 1000.0,
                "queue finished"
            );
            if q.dead > 0 {
                warn!(
                    queue,
                    dead = q.dead,
                    "some items ran out of attempts and are in the dead letters"
                );
            }
            return Ok(q);
        }
        if !visible && last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            info!(
                queue,
                ready = q.depth,
                inflight = q.inflight,
                delayed = q.delayed,
                dead = q.dead,
                "waiting for the queue to finish"
            );
            last_log = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
