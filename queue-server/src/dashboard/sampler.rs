//! The sampler: once a second it reads every queue's stats, adds them to the [`History`] and
//! publishes the live snapshot that every open stats stream sends.
//!
//! This is the dashboard's only reader of the store, so the cost of the dashboard is one
//! `store.stats()` a second however many pages are open, and the JSON of a snapshot is written
//! once, not once per page. Each sample is published twice: whole (for a page that just
//! connected, or fell behind) and as the change since the sample before (the rows that changed
//! and the queues that went), so an open page of a server with many idle queues receives
//! almost nothing.

use std::collections::HashMap;
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
#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
struct LiveRow<'a> {
    #[serde(flatten)]
    stats: &'a QueueStats,
    rate_in: f64,
    rate_out: f64,
}

/// One event of the live stream: a `/stats` object with the sample's time and rates
/// (`kind` `stats`), or only what changed since the sample before (`statsDelta`: the rows
/// that changed, and `removed`, the queues that went).
#[derive(Serialize)]
struct LiveStats<'a> {
    kind: &'static str,
    time: String,
    /// The sample's number: a delta applies to the sample numbered one less.
    seq: u64,
    queues: Vec<LiveRow<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    removed: Option<Vec<&'a str>>,
}

/// One sample as the streams send it.
#[derive(Debug)]
pub struct Published {
    /// The sample's number, from 1.
    pub seq: u64,
    /// The whole snapshot.
    pub full: Arc<str>,
    /// What changed since sample `seq - 1`.
    pub delta: Arc<str>,
}

/// What a row is compared by to tell whether it changed: its figures and rates, not the age
/// of its oldest item, which grows every second on its own (a page adds the time that passed).
#[derive(PartialEq)]
struct RowKey {
    stats: QueueStats,
    rates: (f64, f64),
}

impl RowKey {
    fn of(stats: &QueueStats, rates: &Rates) -> Self {
        let mut stats = stats.clone();
        stats.oldest_age_seconds = 0.0;
        // A queue that still holds items keeps its row when its oldest one starts to count.
        if stats.depth > 0 {
            stats.oldest_age_seconds = 1.0;
        }
        RowKey {
            stats,
            rates: (rates.rate_in, rates.rate_out),
        }
    }
}

/// What the dashboard's routes read: the history and the latest snapshot. Cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    history: Arc<Mutex<History>>,
    live: watch::Receiver<Arc<Published>>,
    shutdown: CancellationToken,
}

impl Dashboard {
    /// A dashboard over `store`, with one sample taken now, and the sampler that keeps it fresh:
    /// the caller spawns [`Sampler::run`] and owns that task. Streams end when `shutdown` fires.
    pub async fn new(store: Store, shutdown: CancellationToken) -> (Self, Sampler) {
        let history = Arc::new(Mutex::new(History::new(SAMPLES_KEPT)));
        let (tx, live) = watch::channel(Arc::new(Published {
            seq: 0,
            full: Arc::from(""),
            delta: Arc::from(""),
        }));
        let sampler = Sampler {
            store,
            clock: Clock::new(),
            history: history.clone(),
            live: tx,
            shutdown: shutdown.clone(),
            last: Mutex::new((0, HashMap::new())),
        };
        sampler.sample().await;
        let dashboard = Self {
            history,
            live,
            shutdown,
        };
        (dashboard, sampler)
    }

    /// The latest sample, and a receiver that is told of every new one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Published>> {
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
    live: watch::Sender<Arc<Published>>,
    shutdown: CancellationToken,
    /// The last sample's number and its rows, to tell what the next one changed.
    last: Mutex<(u64, HashMap<String, RowKey>)>,
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
        let rows: Vec<LiveRow<'_>> = stats
            .iter()
            .zip(&rates)
            .map(|(stats, r)| LiveRow {
                stats,
                rate_in: r.rate_in,
                rate_out: r.rate_out,
            })
            .collect();
        let mut last = self.last.lock();
        let seq = last.0 + 1;
        let mut keys: HashMap<String, RowKey> = HashMap::with_capacity(stats.len());
        let mut changed = Vec::new();
        for (row, r) in rows.iter().zip(&rates) {
            let key = RowKey::of(row.stats, r);
            if last.1.get(&row.stats.name) != Some(&key) {
                changed.push(*row);
            }
            keys.insert(row.stats.name.clone(), key);
        }
        let encoded = {
            let removed: Vec<&str> = last
                .1
                .keys()
                .filter(|name| !keys.contains_key(*name))
                .map(String::as_str)
                .collect();
            let time = rfc3339_ms(now);
            let delta = LiveStats {
                kind: "statsDelta",
                time: time.clone(),
                seq,
                queues: changed,
                removed: Some(removed),
            };
            let full = LiveStats {
                kind: "stats",
                time,
                seq,
                queues: rows,
                removed: None,
            };
            serde_json::to_string(&full).and_then(|f| Ok((f, serde_json::to_string(&delta)?)))
        };
        match encoded {
            Ok((full, delta)) => {
                *last = (seq, keys);
                self.live.send_replace(Arc::new(Published {
                    seq,
                    full: full.into(),
                    delta: delta.into(),
                }));
            }
            Err(e) => tracing::error!(error = %e, "cannot encode the stats snapshot"),
        }
    }
}
