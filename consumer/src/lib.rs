//! `consumer`: drains a memq-rs queue safely, for Kubernetes Jobs.
//!
//! A tour:
//! - [`cli::Args`]: the flags (each with a `MEMQ_*` env var).
//! - [`work`]: what is done per item: `--exec CMD` (body on stdin, exit 0 acks) or a built-in
//!   workload (`keygen`, `sleep=DUR`, `noop`). Dropping the work cancels it.
//! - [`worker::Slots`]: `--concurrency` slots, each: long-poll for one leased item, work on it
//!   with a heartbeat extending the lease every third of it, ack (or nack with backoff so the
//!   server's `maxAttempts` dead-letters poison items).
//! - [`run`]: starts the slots and winds them down.
//!
//! When a consumer is done matters to a Job, which counts exit 0 as "work finished":
//! - by default it exits 0 only when the queue is finished: nothing ready, nothing in flight,
//!   nothing delayed, and at least one item ever enqueued (a consumer started before its
//!   producer waits for the work). While other consumers hold leases it keeps polling, so the
//!   items of a consumer that died come back (lease expiry) and get done;
//! - on SIGTERM/SIGINT (`main.rs` turns them into the `shutdown` token) it takes no new items,
//!   gives back what it holds (after `--grace`), and the binary exits 143 so the Job replaces
//!   the pod rather than counting it done;
//! - if the server fails for longer than `--give-up-after`, it exits 1 (the Job's
//!   `backoffLimit` applies).
//!
//! This crate never exits the process or installs signal handlers: `main.rs` does.

pub mod cli;
pub use memq::retry;
pub mod work;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::cli::{Args, Until};
use crate::retry::RetryError;
use crate::work::{Work, resolve_program};
use crate::worker::{Counters, Slots};

/// Why a run failed; [`Error::exit_code`] says what the process should exit with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A usage mistake the flags alone cannot catch (e.g. `--exec` of a missing program).
    #[error("{0}")]
    Usage(String),
    /// The server failed for too long, or refused a request.
    #[error(transparent)]
    Server(#[from] RetryError),
}

impl Error {
    /// 2 for usage (fix the command), 1 for trouble with the server.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Server(_) => 1,
        }
    }
}

/// Exit code of a consumer that was interrupted (128 + SIGTERM).
pub const EXIT_INTERRUPTED: u8 = 143;

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Items done and acked.
    pub done: u64,
    /// Item deliveries whose work failed.
    pub failed: u64,
    /// Items given back unfinished at shutdown.
    pub returned: u64,
    /// Items done whose ack did not arrive in time (they will be redone).
    pub lost: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Whether the run was cut short by a signal.
    pub interrupted: bool,
}

impl Summary {
    /// Items worked on (done or failed) per second.
    pub fn rate(&self) -> f64 {
        (self.done + self.failed) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The exit code this run means.
    pub fn exit_code(&self) -> u8 {
        if self.interrupted {
            EXIT_INTERRUPTED
        } else {
            0
        }
    }
}

fn client(args: &Args) -> Result<memq::Client, Error> {
    // A ceiling for acks and extends against a server that accepts but never answers; the
    // client gives long polls their own, longer, timeout.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true);
    let client = args
        .access
        .client(http, args.server.clone())
        .map_err(Error::Usage)?;
    Ok(client.with_consumer(args.name.clone().or_else(cli::host_name)))
}

/// Drains the queue as the flags say, until finished, a limit, `shutdown`, or a fatal error.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<Summary, Error> {
    let work = match &args.exec {
        Some(command) => {
            let (program, rest) = command
                .split_first()
                .ok_or_else(|| Error::Usage("--exec needs a command".into()))?;
            Work::Exec {
                program: resolve_program(program).map_err(Error::Usage)?,
                args: rest.to_vec(),
            }
        }
        None => Work::Builtin(args.work.clone()),
    };
    let start = Instant::now();
    let slots = Arc::new(Slots {
        client: client(&args)?,
        queue: args.queue.clone(),
        work,
        lease: (!args.kuard).then_some(args.lease),
        wait: (!args.kuard).then_some(args.wait),
        until: if args.kuard { Until::Empty } else { args.until },
        max_items: args.max_items,
        give_up_after: args.give_up_after,
        retry_delay: args.retry_delay,
        shutdown: shutdown.clone(),
        stop: shutdown.child_token(),
        abandon: CancellationToken::new(),
        counters: Counters::default(),
        taken: Default::default(),
        told_waiting: Default::default(),
    });
    info!(
        queue = %args.queue,
        server = %args.server,
        concurrency = args.concurrency,
        lease_s = slots.lease.map(|l| l.as_secs_f64()),
        until = ?slots.until,
        work = ?slots.work,
        kuard = args.kuard,
        "consumer starting"
    );

    // After a signal: `--grace` for work in progress, then give everything back.
    let grace_timer = tokio::spawn({
        let (shutdown, abandon, grace) = (shutdown.clone(), slots.abandon.clone(), args.grace);
        async move {
            shutdown.cancelled().await;
            info!(
                grace_s = grace.as_secs_f64(),
                "signal received: taking no new items"
            );
            tokio::time::sleep(grace).await;
            abandon.cancel();
        }
    });

    let mut tasks = JoinSet::new();
    for _ in 0..args.concurrency {
        let slots = slots.clone();
        tasks.spawn(async move { slots.run_slot().await });
    }
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                // The server is gone or refuses us: the other slots would only fail the same way.
                error!(error = %err, "stopping all work");
                slots.stop.cancel();
                slots.abandon.cancel();
                failure.get_or_insert(err);
            }
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
    grace_timer.abort();

    let c = &slots.counters;
    let summary = Summary {
        done: c.done.load(Ordering::Relaxed),
        failed: c.failed.load(Ordering::Relaxed),
        returned: c.returned.load(Ordering::Relaxed),
        lost: c.lost.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
        interrupted: shutdown.is_cancelled(),
    };
    info!(
        queue = %args.queue,
        done = summary.done,
        failed = summary.failed,
        returned = summary.returned,
        lost = summary.lost,
        seconds = (summary.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        items_per_s = summary.rate().round(),
        interrupted = summary.interrupted,
        "consumer summary"
    );
    match failure {
        Some(err) => Err(err.into()),
        None => Ok(summary),
    }
}
