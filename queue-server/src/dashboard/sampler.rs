//! The sampler: once a second it reads every queue's stats, adds them to the [`History`] and
//! publishes the live snapshot that every open stats stream sends.
//!
//! This is the dashboard's only reader of the store, so the cost of the dashboard is one
//! `store.stats()` a second however many pages are open, and the JSON of a snapshot is written
//! once, not once per page.

use std::sync::Arc;
use std::time::Duration;

use memq::QueueStats;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::history::{History, Rates, Window};
use crate::store::{Clock, Store, rfc3339_ms};

/// Time between two samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Samples kept per queue: 15 minutes at one a second.
pub const SAMPLES_KEPT: usize = 900;

/// A stats row of the live stream: the `/stats` row plus its rates.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LiveRow<'a> {
    #[serde(flatten)]
    stats: &'a QueueStats,
    rate_in: f64,
    rate_out: f64,
}

/// One event of the live stream: a `/stats` object with the sample's time and rates.
#[derive(Serialize)]
struct LiveStats<'a> {
    kind: &'static str,
    time: String,
    queues: Vec<LiveRow<'a>>,
}

/// What the dashboard's routes read: the history and the latest snapshot. Cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    history: Arc<Mutex<History>>,
    live: watch::Receiver<Arc<str>>,
    shutdown: CancellationToken,
}

impl Dashboard {
    /// A dashboard over `store`, with one sample taken now, and the sampler that keeps it fresh:
    /// the caller spawns [`Sampler::run`] and owns that task. Streams end when `shutdown` fires.
    pub async fn new(store: Store, shutdown: CancellationToken) -> (Self, Sampler) {
        let history = Arc::new(Mutex::new(History::new(SAMPLES_KEPT)));
        let (tx, live) = watch::channel(Arc::<str>::from(""));
        let sampler = Sampler {
            store,
            clock: Clock::new(),
            history: history.clone(),
            live: tx,
            shutdown: shutdown.clone(),
        };
        sampler.sample().await;
        let dashboard = Self {
            history,
            live,
            shutdown,
        };
        (dashboard, sampler)
    }

    /// The latest snapshot's JSON, and a receiver that is told of every new one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<str>> {
        self.live.clone()
    }

    /// Fires when the server shuts down; streams end then.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// The last `seconds` of history of one queue or of all.
    pub fn window(&self, queue: Option<&str>, seconds: usize) -> Window {
        let per_second = SAMPLE_EVERY.as_secs().max(1) as usize;
        self.history.lock().window(queue, seconds / per_second)
    }
}

/// The task that samples the store; see [`Dashboard::new`].
pub struct Sampler {
    store: Store,
    clock: Clock,
    history: Arc<Mutex<History>>,
    live: watch::Sender<Arc<str>>,
    shutdown: CancellationToken,
}

impl Sampler {
    /// Samples every [`SAMPLE_EVERY`] until shutdown.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        // A late tick (busy machine) moves the schedule on rather than sampling twice at once.
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is immediate, and `Dashboard::new` has just taken that sample.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => self.sample().await,
                _ = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn sample(&self) {
        let stats = match self.store.stats().await {
            Ok(stats) => stats,
            Err(e) => {
                tracing::warn!(error = %e, "cannot sample queue stats for the dashboard");
                return;
            }
        };
        let now = self.clock.now_ms();
        let rates: Vec<Rates> = self.history.lock().record(now, &stats);
        let snapshot = LiveStats {
            kind: "stats",
            time: rfc3339_ms(now),
            queues: stats
                .iter()
                .zip(rates)
                .map(|(stats, r)| LiveRow {
                    stats,
                    rate_in: r.rate_in,
                    rate_out: r.rate_out,
                })
                .collect(),
        };
        match serde_json::to_string(&snapshot) {
            Ok(json) => {
                self.live.send_replace(json.into());
            }
            Err(e) => tracing::error!(error = %e, "cannot encode the stats snapshot"),
        }
    }
}
