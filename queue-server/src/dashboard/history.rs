//! The recent past of every queue, one sample a second, for the dashboard's charts and rates.
//!
//! Plain data with time passed in: no locks, no tasks, no I/O (the sampler owns those). Bounded:
//! at most `capacity` samples per queue, and a queue that is gone from the stats is forgotten.
//! A sample stores current counts and the items added and taken since the sample before, as
//! `u32` (saturating: a chart of a queue past four billion items stays flat rather than wrapping),
//! so a full ring costs 24 bytes x `capacity` per queue (about 21 KiB for 15 minutes).

use std::collections::{HashMap, VecDeque};

use foldhash::fast::RandomState;
use memq::QueueStats;
use serde::Serialize;

/// Rates are averaged over this many sample intervals (10 s at one sample a second).
pub const RATE_WINDOW: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    depth: u32,
    inflight: u32,
    delayed: u32,
    dead: u32,
    /// Items enqueued since the previous sample.
    added: u32,
    /// Items handed out for good since the previous sample (see [`taken_total`]).
    taken: u32,
}

#[derive(Debug)]
struct Series {
    /// Aligned with the last `samples.len()` entries of [`History::times`].
    samples: VecDeque<Sample>,
    last_enqueued: u64,
    last_taken: u64,
    /// The sample round that last saw this queue.
    seen: u64,
}

/// Items that left the ready items for good: every hand-out (kuard dequeue or lease) less the
/// leases that came back (expiry or nack). A leased item counts when it is handed out, not when
/// it is acked, so "out" moves as soon as consumers take work.
pub fn taken_total(s: &QueueStats) -> u64 {
    s.dequeued.saturating_sub(s.requeued)
}

fn small(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Rates of one queue at the newest sample, in items per second.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    /// Items enqueued per second.
    pub rate_in: f64,
    /// Items taken per second.
    pub rate_out: f64,
}

/// One queue's series over the requested span; `None` where the queue did not exist yet.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueSeries {
    /// Queue name.
    pub name: String,
    /// Ready items.
    pub depth: Vec<Option<u32>>,
    /// Leased items.
    pub inflight: Vec<Option<u32>>,
    /// Delayed items.
    pub delayed: Vec<Option<u32>>,
    /// Dead letters.
    pub dead: Vec<Option<u32>>,
    /// Items enqueued per second over the [`RATE_WINDOW`] before each sample.
    pub rate_in: Vec<Option<f64>>,
    /// Items taken per second over the [`RATE_WINDOW`] before each sample.
    pub rate_out: Vec<Option<f64>>,
}

/// A window of history: sample times (ms since the epoch) and the queues' series on them.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// When each sample was taken.
    pub times: Vec<u64>,
    /// One entry per queue, sorted by name; every vector is as long as `times`.
    pub queues: Vec<QueueSeries>,
}

/// Ring buffers of samples, one per queue, on one shared timeline.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    times: VecDeque<u64>,
    queues: HashMap<Box<str>, Series, RandomState>,
    round: u64,
}

/// Rounds to a thousandth, so the JSON says `0.3`, not `0.30000000000000004`.
fn tidy(rate: f64) -> f64 {
    (rate * 1000.0).round() / 1000.0
}

/// Rates of `series` at its sample `i`, over up to [`RATE_WINDOW`] intervals before it.
fn rates_at(times: &VecDeque<u64>, series: &Series, i: usize) -> Rates {
    // Sample i of the series is entry `offset + i` of the timeline.
    let offset = times.len() - series.samples.len();
    let t = offset + i;
    let k = RATE_WINDOW.min(i + 1).min(t);
    if k == 0 {
        return Rates::default();
    }
    let span_ms = times[t].saturating_sub(times[t - k]);
    if span_ms == 0 {
        return Rates::default();
    }
    let (added, taken) = series
        .samples
        .range(i + 1 - k..=i)
        .fold((0u64, 0u64), |(a, b), s| {
            (a + u64::from(s.added), b + u64::from(s.taken))
        });
    let secs = span_ms as f64 / 1000.0;
    Rates {
        rate_in: tidy(added as f64 / secs),
        rate_out: tidy(taken as f64 / secs),
    }
}

impl History {
    /// Keeps at most `capacity` samples per queue.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            times: VecDeque::with_capacity(capacity),
            queues: HashMap::default(),
            round: 0,
        }
    }

    /// Most samples kept per queue.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds one sample of every queue taken at `at_ms`, forgets queues that are gone, and
    /// answers each queue's current rates, in the order of `stats`.
    pub fn record(&mut self, at_ms: u64, stats: &[QueueStats]) -> Vec<Rates> {
        // Anything counted by a queue first seen now happened since the previous sample (it
        // did not exist then), except at the very first sample, whose past is unknown.
        let first_round = self.times.is_empty();
        if self.times.len() == self.capacity {
            self.times.pop_front();
        }
        self.times.push_back(at_ms);
        self.round += 1;
        let round = self.round;
        let mut rates = Vec::with_capacity(stats.len());
        for s in stats {
            let taken = taken_total(s);
            let series = self
                .queues
                .entry(s.name.as_str().into())
                .or_insert_with(|| Series {
                    samples: VecDeque::new(),
                    last_enqueued: if first_round { s.enqueued } else { 0 },
                    last_taken: if first_round { taken } else { 0 },
                    seen: round,
                });
            if series.samples.len() == self.capacity {
                series.samples.pop_front();
            }
            series.samples.push_back(Sample {
                depth: small(s.depth),
                inflight: small(s.inflight),
                delayed: small(s.delayed),
                dead: small(s.dead),
                // A queue deleted and made again between two samples starts its counters anew.
                added: small(s.enqueued.saturating_sub(series.last_enqueued)),
                taken: small(taken.saturating_sub(series.last_taken)),
            });
            series.last_enqueued = s.enqueued;
            series.last_taken = taken;
            series.seen = round;
            rates.push(rates_at(&self.times, series, series.samples.len() - 1));
        }
        self.queues.retain(|_, series| series.seen == round);
        rates
    }

    /// The last `last` samples of one queue (`Some(name)`) or of all queues (`None`). A queue
    /// without samples is left out.
    pub fn window(&self, queue: Option<&str>, last: usize) -> Window {
        let len = last.min(self.times.len());
        let start = self.times.len() - len;
        let times: Vec<u64> = self.times.range(start..).copied().collect();
        let mut names: Vec<&str> = match queue {
            Some(name) => self
                .queues
                .get_key_value(name)
                .map(|(k, _)| &**k)
                .into_iter()
                .collect(),
            None => self.queues.keys().map(|k| &**k).collect(),
        };
        names.sort_unstable();
        let queues = names
            .into_iter()
            .map(|name| self.series_of(name, &self.queues[name], start))
            .collect();
        Window { times, queues }
    }

    fn series_of(&self, name: &str, series: &Series, start: usize) -> QueueSeries {
        let offset = self.times.len() - series.samples.len();
        let len = self.times.len() - start;
        let mut out = QueueSeries {
            name: name.to_string(),
            depth: Vec::with_capacity(len),
            inflight: Vec::with_capacity(len),
            delayed: Vec::with_capacity(len),
            dead: Vec::with_capacity(len),
            rate_in: Vec::with_capacity(len),
            rate_out: Vec::with_capacity(len),
        };
        for t in start..self.times.len() {
            let Some(i) = t.checked_sub(offset) else {
                out.depth.push(None);
                out.inflight.push(None);
                out.delayed.push(None);
                out.dead.push(None);
                out.rate_in.push(None);
                out.rate_out.push(None);
                continue;
            };
            let s = series.samples[i];
            let rates = rates_at(&self.times, series, i);
            out.depth.push(Some(s.depth));
            out.inflight.push(Some(s.inflight));
            out.delayed.push(Some(s.delayed));
            out.dead.push(Some(s.dead));
            out.rate_in.push(Some(rates.rate_in));
            out.rate_out.push(Some(rates.rate_out));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, depth: u64, enqueued: u64, dequeued: u64) -> QueueStats {
        QueueStats {
            name: name.into(),
            depth,
            enqueued,
            dequeued,
            drained: 0,
            inflight: 0,
            acked: 0,
            requeued: 0,
            dead: 0,
            delayed: 0,
            paused: false,
            oldest_age_seconds: 0.0,
            lease_seconds: 30,
            max_attempts: 5,
            max_depth: 0,
            autoscale: None,
            consumers: 0,
            retained_keys: 0,
            retained_key_bytes: None,
        }
    }

    #[test]
    fn rates_average_the_last_ten_seconds() {
        let mut h = History::new(900);
        // 5 items in and 2 out every second for 20 s.
        for sec in 0..20u64 {
            let r = h.record(sec * 1000, &[row("q", 3 * sec, 5 * sec, 2 * sec)]);
            if sec >= 1 {
                assert_eq!(r[0].rate_in, 5.0, "second {sec}");
                assert_eq!(r[0].rate_out, 2.0, "second {sec}");
            } else {
                assert_eq!(r[0], Rates::default());
            }
        }
        // Then nothing more: the rate falls as the burst leaves the 10 s window.
        let r = h.record(20_000, &[row("q", 57, 95, 38)]);
        assert_eq!(r[0].rate_in, 4.5);
        let mut last = r[0];
        for sec in 21..31u64 {
            last = h.record(sec * 1000, &[row("q", 57, 95, 38)])[0];
        }
        assert_eq!(last, Rates::default());
    }

    #[test]
    fn requeued_leases_do_not_count_as_taken() {
        let mut h = History::new(900);
        let mut s = row("q", 10, 10, 0);
        h.record(0, std::slice::from_ref(&s));
        s.dequeued = 4;
        s.requeued = 3;
        let r = h.record(1000, &[s]);
        assert_eq!(r[0].rate_out, 1.0);
    }

    #[test]
    fn a_queue_first_seen_later_counts_from_zero_and_pads_its_past() {
        let mut h = History::new(900);
        h.record(0, &[row("a", 0, 100, 0)]);
        let r = h.record(1000, &[row("a", 0, 100, 0), row("b", 7, 7, 0)]);
        // "a" existed before the first sample, so its 100 items are not a burst of this second.
        assert_eq!(r[0].rate_in, 0.0);
        assert_eq!(r[1].rate_in, 7.0);
        let w = h.window(None, 900);
        assert_eq!(w.times, vec![0, 1000]);
        assert_eq!(w.queues[0].name, "a");
        assert_eq!(w.queues[1].depth, vec![None, Some(7)]);
        assert_eq!(w.queues[1].rate_in, vec![None, Some(7.0)]);
    }

    #[test]
    fn rings_are_bounded_and_gone_queues_forgotten() {
        let mut h = History::new(5);
        for sec in 0..12u64 {
            h.record(sec * 1000, &[row("a", sec, sec, 0), row("b", 0, 0, 0)]);
        }
        let w = h.window(Some("a"), 900);
        assert_eq!(w.times, vec![7000, 8000, 9000, 10000, 11000]);
        assert_eq!(w.queues.len(), 1);
        assert_eq!(
            w.queues[0].depth,
            vec![Some(7), Some(8), Some(9), Some(10), Some(11)]
        );
        assert!(h.queues.values().all(|s| s.samples.len() <= 5));
        h.record(12_000, &[row("b", 0, 0, 0)]);
        assert!(h.window(Some("a"), 900).queues.is_empty());
        assert_eq!(h.window(None, 2).queues.len(), 1);
        assert_eq!(h.window(None, 2).times, vec![11000, 12000]);
    }

    #[test]
    fn a_queue_made_anew_does_not_show_a_negative_burst() {
        let mut h = History::new(900);
        h.record(0, &[row("q", 0, 500, 500)]);
        let r = h.record(1000, &[row("q", 2, 2, 0)]);
        assert_eq!(r[0].rate_in, 0.0);
        assert_eq!(r[0].rate_out, 0.0);
        let r = h.record(2000, &[row("q", 4, 4, 0)]);
        assert_eq!(r[0].rate_in, 1.0);
    }

    #[test]
    fn huge_counts_saturate_instead_of_wrapping() {
        let mut h = History::new(900);
        h.record(0, &[row("q", u64::MAX, 0, 0)]);
        assert_eq!(h.window(Some("q"), 1).queues[0].depth, vec![Some(u32::MAX)]);
    }
}
