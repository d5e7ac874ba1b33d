//! `consumer`: drains a memq-rs queue safely, for Kubernetes Jobs.
//!
//! A tour:
//! - [`cli::Args`]: the flags (each with a `MEMQ_*` env var).
//! - The work per item, behind one seam (a slot takes an item and says how it ended):
//!   [`work`] a built-in workload (`keygen`, `sleep=DUR`, `noop`) or `--exec CMD` (a process
//!   per item, body on stdin, exit 0 acks), run by [`slot`]; or [`worker`], `--worker CMD`, a
//!   long-lived process per slot speaking JSON lines. Dropping the work cancels it.
//! - Below the seam, the same for all three: [`fetch`] leases items for the slots (up to
//!   `--prefetch` more than they work on, in one request) into a buffer and decides from empty
//!   answers whether the queue is finished; [`settle`] holds the leases, extends them all in
//!   one request every third of the lease, and sends acks and nacks in batches.
//! - [`run`]: starts the fetcher, the slots and the settler, and winds them down.
//!
//! When a consumer is done matters to a Job, which counts exit 0 as "work finished":
//! - by default it exits 0 only when the queue is finished: nothing ready, nothing in flight,
//!   nothing delayed, and at least one item ever enqueued (a consumer started before its
//!   producer waits for the work). While others hold leases it keeps polling, so the items of
//!   a consumer that died come back (lease expiry) and get done;
//! - on SIGTERM/SIGINT (`main.rs` turns them into the `shutdown` token) it takes no new items,
//!   releases the buffered ones it never started (back to the front, attempt not counted),
//!   gives back what is in progress (after `--grace`), and the binary exits 143 so the Job
//!   replaces the pod rather than counting it done;
//! - if the server fails for longer than `--give-up-after`, it exits 1 (the Job's
//!   `backoffLimit` applies).
//!
//! This crate never exits the process or installs signal handlers: `main.rs` does.

pub mod cli;
pub use memq::retry;
pub mod fetch;
pub mod settle;
pub mod slot;
pub mod work;
pub mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::cli::{Args, Until};
use crate::fetch::Buffer;
use crate::retry::RetryError;
use crate::settle::{Counters, Held, Settler, Settling};
use crate::work::{Work, resolve_program};

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

/// What the fetcher, the slots and the settler of one consumer share.
#[derive(Debug)]
pub struct Shared {
    /// The server.
    pub client: memq::Client,
    /// The queue.
    pub queue: String,
    /// Lease length; None for kuard's plain dequeue.
    pub lease: Option<Duration>,
    /// Long-poll time; None for kuard.
    pub wait: Option<Duration>,
    /// When to stop by itself.
    pub until: Until,
    /// Stop after this many items.
    pub max_items: Option<u64>,
    /// Give up on a failing server after this long.
    pub give_up_after: Duration,
    /// First delay of a failed item's retry.
    pub retry_delay: Duration,
    /// Give up an item's work after this long.
    pub item_timeout: Option<Duration>,
    /// Most items held at once: what the slots work on, plus `--prefetch`.
    pub capacity: usize,
    /// Fetch once at least this much room is free (half the prefetch buffer, or one item).
    pub low_water: usize,
    /// Cancelled by SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Cancelled when no new items should be taken (signal, fatal error).
    pub stop: CancellationToken,
    /// Cancelled when items in progress must be given back now (grace over, fatal error).
    pub abandon: CancellationToken,
    /// Totals.
    pub counters: Arc<Counters>,
    /// The leases held now.
    pub held: Held,
    /// Items leased, not started.
    pub buffer: Buffer,
    /// Acks and nacks, in batches.
    pub settler: Settler,
    /// Whether "waiting for a producer" was logged already.
    pub told_waiting: AtomicBool,
}

/// The work per item.
enum Kind {
    /// Built-in or `--exec`, one item at a time per slot.
    Each(Work),
    /// `--worker`: a process per slot.
    Worker(worker::Command),
}

fn kind(args: &Args) -> Result<Kind, Error> {
    let command = |command: &[String], flag: &str| {
        let (program, rest) = command
            .split_first()
            .ok_or_else(|| Error::Usage(format!("{flag} needs a command")))?;
        let program =
            resolve_program(program).map_err(|e| Error::Usage(e.replace("--exec", flag)))?;
        Ok::<_, Error>((program, rest.to_vec()))
    };
    Ok(match (&args.exec, &args.worker) {
        (Some(exec), _) => {
            let (program, args) = command(exec, "--exec")?;
            Kind::Each(Work::Exec { program, args })
        }
        (None, Some(cmd)) => {
            let (program, rest) = command(cmd, "--worker")?;
            Kind::Worker(worker::Command {
                program,
                args: rest,
                items: args.worker_items as usize,
            })
        }
        (None, None) => Kind::Each(Work::Builtin(args.work.clone())),
    })
}

/// Drains the queue as the flags say, until finished, a limit, `shutdown`, or a fatal error.
pub async fn run(args: Args, shutdown: CancellationToken) -> Result<Summary, Error> {
    if args.kuard && args.prefetch > 0 {
        return Err(Error::Usage(
            "--prefetch with --kuard: a kuard dequeue removes items for good, so buffered items could not be given back"
                .into(),
        ));
    }
    let kind = Arc::new(kind(&args)?);
    let start = Instant::now();
    let client = client(&args)?;
    let lease = (!args.kuard).then_some(args.lease);
    let counters = Arc::new(Counters::default());
    let settling = Settling {
        client: client.clone(),
        queue: args.queue.clone(),
        // Past the lease an ack can only fail, so retrying longer than that is pointless.
        ack_budget: args.lease.min(args.give_up_after),
    };
    let (settler, settler_task) = Settler::start(settling.clone(), counters.clone());
    let per_slot = match &*kind {
        Kind::Each(_) => 1,
        Kind::Worker(command) => command.items,
    };
    let prefetch = args.prefetch as usize;
    let stop = shutdown.child_token();
    let shared = Arc::new(Shared {
        client,
        queue: args.queue.clone(),
        lease,
        wait: (!args.kuard).then_some(args.wait),
        until: if args.kuard { Until::Empty } else { args.until },
        max_items: args.max_items,
        give_up_after: args.give_up_after,
        retry_delay: args.retry_delay,
        item_timeout: args.item_timeout,
        capacity: args.concurrency as usize * per_slot + prefetch,
        low_water: (prefetch / 2).max(1),
        shutdown: shutdown.clone(),
        stop: stop.clone(),
        abandon: CancellationToken::new(),
        counters: counters.clone(),
        held: Held::default(),
        buffer: Buffer::default(),
        settler,
        told_waiting: AtomicBool::new(false),
    });
    info!(
        queue = %args.queue,
        server = %args.server,
        concurrency = args.concurrency,
        prefetch,
        lease_s = lease.map(|l| l.as_secs_f64()),
        until = ?shared.until,
        work = %describe(&kind),
        kuard = args.kuard,
        "consumer starting"
    );

    // After a signal: `--grace` for work in progress, then give everything back.
    let grace_timer = tokio::spawn({
        let (shutdown, abandon, grace) = (shutdown.clone(), shared.abandon.clone(), args.grace);
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
    let keep_alive = lease.map(|length| {
        let (settling, shared) = (settling.clone(), shared.clone());
        tokio::spawn(async move { settling.keep_alive(&shared.held, length).await })
    });
    let mut slots = JoinSet::new();
    for slot in 0..args.concurrency as usize {
        let (shared, kind) = (shared.clone(), kind.clone());
        slots.spawn(async move {
            match &*kind {
                Kind::Each(work) => shared.run_slot(work).await,
                Kind::Worker(command) => shared.run_worker(command, slot).await,
            }
        });
    }

    let fetched = shared.run_fetcher().await;
    if let Err(err) = &fetched {
        // The server is gone or refuses us: the slots would only fail the same way.
        error!(error = %err, "stopping all work");
        stop.cancel();
        shared.abandon.cancel();
    }
    if stop.is_cancelled() {
        // Items leased but never started go back at once, to the front and with their attempt
        // not counted, so that a scaled-down Job does not sit on work.
        let unstarted: Vec<String> = shared
            .buffer
            .drain_leased()
            .iter()
            .map(|m| {
                shared.held.remove(fetch::key(m));
                fetch::key(m).to_string()
            })
            .collect();
        let released = settling.release(&unstarted).await;
        counters.returned.fetch_add(released, Ordering::Relaxed);
    }
    while let Some(joined) = slots.join_next().await {
        if let Err(join) = joined {
            std::panic::resume_unwind(join.into_panic());
        }
    }
    grace_timer.abort();
    if let Some(task) = keep_alive {
        task.abort();
        let _ = task.await;
    }
    // The settler ends once every sender is gone (the last in `shared`, whose other holders
    // have ended), after the last acks and nacks are answered: before the summary.
    drop(shared);
    let _ = settler_task.await;

    let c = &counters;
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
    match fetched {
        Err(err) => Err(err.into()),
        Ok(()) => Ok(summary),
    }
}

fn describe(kind: &Kind) -> String {
    match kind {
        Kind::Each(Work::Builtin(w)) => format!("{w:?}"),
        Kind::Each(Work::Exec { program, .. }) => format!("--exec {}", program.display()),
        Kind::Worker(c) => format!("--worker {} ({} items each)", c.program.display(), c.items),
    }
}
