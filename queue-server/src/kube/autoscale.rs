//! Consumer Jobs by queue depth (`--autoscale`, per queue `{"autoscale":{...}}`).
//!
//! Every interval: for each opted-in queue with ready items that is not paused, the wanted
//! pods are `min(maxParallelism, ceil(depth / itemsPerPod))`; its capacity is its consumer
//! pods that are pending or running, plus the full parallelism of Jobs the Job controller has
//! not started yet (their pods do not exist yet, and counting them as zero would launch the
//! same Job again next interval). Failed and succeeded pods, terminating pods and finished
//! (complete, failed or suspended) Jobs are not capacity. When capacity falls short, one Job
//! for the difference is launched — but never so much that the parallelism of the queue's
//! unfinished Jobs passes maxParallelism: a Job whose pods crash keeps replacing them itself,
//! and a new Job per interval would pile up. Jobs are never deleted here: consumers leave on
//! their own when the queue is finished.
//!
//! [`decide`] is the whole rule, pure; [`Autoscaler`] gathers its inputs and acts on it.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use tokio_util::sync::CancellationToken;

use super::LABEL_QUEUE;
use super::launcher::{Launcher, has_condition};
use super::template::{JobRequest, check_queue_label};
use crate::error::Result;
use crate::metrics::AutoscalerMetrics;
use crate::store::Store;

/// An opted-in queue as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueView {
    /// Queue name.
    pub name: String,
    /// Ready items.
    pub depth: u64,
    /// Paused queues get no consumers.
    pub paused: bool,
    /// Its settings.
    pub autoscale: memq::Autoscale,
}

/// A consumer Job as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobView {
    /// Job name.
    pub name: String,
    /// Its queue (label `memq.queue`).
    pub queue: String,
    /// `spec.parallelism`.
    pub parallelism: u32,
    /// Complete, failed or suspended: runs no more pods.
    pub finished: bool,
    /// The Job controller has acted on it (start time, pod counts or conditions are set).
    pub started: bool,
}

/// Where a consumer pod is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodState {
    /// Waiting to be scheduled or pulling its image: capacity on its way.
    Pending,
    /// Running (or unknown: the node stopped reporting, it may still work).
    Running,
    /// Succeeded or failed: not capacity.
    Done,
    /// Being deleted: not capacity.
    Terminating,
}

/// A consumer pod as the rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Its queue (label `memq.queue`).
    pub queue: String,
    /// The Job that owns it, if any.
    pub job: Option<String>,
    /// Its state.
    pub state: PodState,
}

/// What the rule decided for one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Queue name.
    pub queue: String,
    /// Pods wanted: `min(maxParallelism, ceil(depth / itemsPerPod))`.
    pub desired: u32,
    /// Pods pending or running, or on their way.
    pub capacity: u32,
    /// Parallelism of the Job to launch; 0 for none.
    pub launch: u32,
}

/// The rule (see the module doc), for every queue in `queues`.
pub fn decide(queues: &[QueueView], jobs: &[JobView], pods: &[PodView]) -> Vec<Decision> {
    queues
        .iter()
        .map(|q| {
            let desired = if q.paused || q.depth == 0 {
                0
            } else {
                let per_pod = q.autoscale.items_per_pod.max(1);
                q.depth
                    .div_ceil(per_pod)
                    .min(u64::from(q.autoscale.max_parallelism)) as u32
            };
            let finished_jobs: Vec<&str> = jobs
                .iter()
                .filter(|j| j.queue == q.name && j.finished)
                .map(|j| j.name.as_str())
                .collect();
            let unfinished: Vec<&JobView> = jobs
                .iter()
                .filter(|j| j.queue == q.name && !j.finished)
                .collect();
            // Live pods of the queue, except those of finished Jobs (a failed Job's pods may
            // still be winding down), plus the pods not-yet-started Jobs are about to create.
            let live_pods = pods
                .iter()
                .filter(|p| p.queue == q.name)
                .filter(|p| matches!(p.state, PodState::Pending | PodState::Running))
                .filter(|p| p.job.as_deref().is_none_or(|j| !finished_jobs.contains(&j)))
                .count() as u32;
            let on_the_way: u32 = unfinished
                .iter()
                .filter(|j| !j.started)
                .map(|j| j.parallelism)
                .sum();
            let capacity = live_pods + on_the_way;
            let committed: u32 = unfinished.iter().map(|j| j.parallelism).sum();
            let room = q.autoscale.max_parallelism.saturating_sub(committed);
            let launch = desired.saturating_sub(capacity).min(room);
            Decision {
                queue: q.name.clone(),
                desired,
                capacity,
                launch,
            }
        })
        .collect()
}

/// What the rule needs of a Job.
pub fn job_view(job: &Job) -> Option<JobView> {
    let queue = job.metadata.labels.as_ref()?.get(LABEL_QUEUE)?.clone();
    let status = job.status.clone().unwrap_or_default();
    let spec = job.spec.as_ref();
    let suspended = spec.and_then(|s| s.suspend).unwrap_or(false);
    let finished = suspended
        || ["Complete", "Failed", "SuccessCriteriaMet", "FailureTarget"]
            .iter()
            .any(|c| has_condition(job, c));
    let started = status.start_time.is_some()
        || status.active.unwrap_or(0) > 0
        || status.succeeded.unwrap_or(0) > 0
        || status.failed.unwrap_or(0) > 0
        || status.conditions.as_ref().is_some_and(|c| !c.is_empty());
    Some(JobView {
        name: job.metadata.name.clone().unwrap_or_default(),
        queue,
        parallelism: spec.and_then(|s| s.parallelism).unwrap_or(1).max(0) as u32,
        finished,
        started,
    })
}

/// What the rule needs of a pod.
pub fn pod_view(pod: &Pod) -> Option<PodView> {
    let meta = &pod.metadata;
    let queue = meta.labels.as_ref()?.get(LABEL_QUEUE)?.clone();
    let job = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "Job")
        .map(|o| o.name.clone())
        .or_else(|| {
            let labels = meta.labels.as_ref()?;
            labels
                .get("batch.kubernetes.io/job-name")
                .or_else(|| labels.get("job-name"))
                .cloned()
        });
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let state = if meta.deletion_timestamp.is_some() {
        PodState::Terminating
    } else {
        match phase {
            Some("Succeeded" | "Failed") => PodState::Done,
            Some("Running" | "Unknown") => PodState::Running,
            _ => PodState::Pending,
        }
    };
    Some(PodView { queue, job, state })
}

/// Runs the rule against the store's queues and the cluster's Jobs and pods.
#[derive(Clone)]
pub struct Autoscaler {
    launcher: Launcher,
    store: Store,
    metrics: AutoscalerMetrics,
}

/// The longest wait between two passes while the API server keeps failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// How long to wait before the next pass after `failures` failed passes in a row: the interval,
/// doubled per failure, at most [`MAX_BACKOFF`] (or the interval, if that is longer).
pub fn next_wait(interval: Duration, failures: u32) -> Duration {
    let doubled = interval.saturating_mul(1u32 << failures.min(16));
    doubled.min(MAX_BACKOFF.max(interval))
}

impl Autoscaler {
    /// An autoscaler launching through `launcher` for the queues of `store`, counting its
    /// passes and launches in `metrics`.
    pub fn new(launcher: Launcher, store: Store, metrics: AutoscalerMetrics) -> Self {
        Self {
            launcher,
            store,
            metrics,
        }
    }

    /// The opted-in queues that have ready items and are not paused; the store's error when
    /// it cannot say (a failed pass like any other: backoff, one log line).
    async fn wanting_queues(&self) -> Result<Vec<QueueView>> {
        let stats = self.store.stats().await?;
        Ok(stats
            .into_iter()
            .filter_map(|s| {
                let autoscale = s.autoscale?;
                if s.depth == 0 || s.paused {
                    return None;
                }
                if let Err(why) = check_queue_label(&s.name) {
                    tracing::debug!(queue = %s.name, reason = %why, "autoscaler skips queue");
                    return None;
                }
                Some(QueueView {
                    name: s.name,
                    depth: s.depth,
                    paused: s.paused,
                    autoscale,
                })
            })
            .collect())
    }

    /// One pass: decide from fresh Jobs and pods and launch what is missing. Asks the API
    /// server nothing when no opted-in queue has ready items. Stops at the first failed call;
    /// the next pass decides again from scratch.
    pub async fn reconcile(&self) -> Result<Vec<Decision>> {
        let queues = self.wanting_queues().await?;
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        // Jobs first, pods after, never at once: the Job controller creates a Job's pods before
        // it marks the Job started, so a pod list read after the Job list has the pods of every
        // Job that list shows as started. The other order could see a started Job without its
        // pods, count nothing for it, and launch a duplicate.
        let jobs: Vec<JobView> = self
            .launcher
            .queue_jobs()
            .await?
            .iter()
            .filter_map(job_view)
            .collect();
        let pods: Vec<PodView> = self
            .launcher
            .queue_pods()
            .await?
            .iter()
            .filter_map(pod_view)
            .collect();
        let decisions = decide(&queues, &jobs, &pods);
        for d in decisions.iter().filter(|d| d.launch > 0) {
            let job = self
                .launcher
                .create(&JobRequest::new(d.queue.clone(), d.launch))
                .await?;
            self.metrics.launched();
            let depth = queues
                .iter()
                .find(|q| q.name == d.queue)
                .map_or(0, |q| q.depth);
            tracing::info!(
                queue = %d.queue, depth, desired = d.desired, capacity = d.capacity,
                parallelism = d.launch, job = job.metadata.name.as_deref().unwrap_or(""),
                "autoscaler launched a consumer Job"
            );
        }
        Ok(decisions)
    }

    /// Reconciles every `interval` until `cancel`. A failed pass is retried with backoff
    /// ([`next_wait`]); each cause is logged once when it starts (a warning) and once when it
    /// ends, not once per pass.
    pub async fn run(self, interval: Duration, cancel: CancellationToken) {
        tracing::info!(interval = ?interval, "autoscaler on");
        let mut failing: Option<&'static str> = None;
        let mut failures = 0u32;
        // The first pass at once, as at start-up a deep queue should not wait an interval.
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
            let result = tokio::select! {
                _ = cancel.cancelled() => break,
                r = self.reconcile() => r,
            };
            self.metrics.pass(result.is_ok());
            match result {
                Ok(_) => {
                    if let Some(cause) = failing.take() {
                        tracing::info!(after_failures = failures, was = %cause, "autoscaler passes work again");
                    }
                    failures = 0;
                }
                Err(e) => {
                    // The cause is the kind of error (forbidden, invalid_job, unreachable, the
                    // store, ...), not its text: a Job's generated name differs pass by pass.
                    let cause = e.code();
                    failures = failures.saturating_add(1);
                    if failing != Some(cause) {
                        tracing::warn!(
                            code = e.code(), error = %e,
                            "autoscaler pass failed; retrying with backoff (doubling from the interval up to {MAX_BACKOFF:?}), logged again only when the cause changes"
                        );
                        failing = Some(cause);
                    } else {
                        tracing::debug!(error = %e, failures, "autoscaler pass failed again");
                    }
                }
            }
            wait = if failures == 0 {
                interval
            } else {
                next_wait(interval, failures)
            };
        }
        tracing::info!("autoscaler stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(depth: u64, max: u32, per_pod: u64) -> QueueView {
        QueueView {
            name: "q".into(),
            depth,
            paused: false,
            autoscale: memq::Autoscale {
                max_parallelism: max,
                items_per_pod: per_pod,
            },
        }
    }

    fn job(name: &str, parallelism: u32, started: bool, finished: bool) -> JobView {
        JobView {
            name: name.into(),
            queue: "q".into(),
            parallelism,
            finished,
            started,
        }
    }

    fn pods(job: &str, state: PodState, n: usize) -> Vec<PodView> {
        vec![
            PodView {
                queue: "q".into(),
                job: Some(job.into()),
                state,
            };
            n
        ]
    }

    fn one(q: QueueView, jobs: &[JobView], pods: &[PodView]) -> (u32, u32, u32) {
        let d = decide(&[q], jobs, pods).remove(0);
        (d.desired, d.capacity, d.launch)
    }

    #[test]
    fn wants_ceil_depth_over_items_per_pod_capped_by_max() {
        assert_eq!(one(queue(1, 10, 100), &[], &[]), (1, 0, 1));
        assert_eq!(one(queue(100, 10, 100), &[], &[]), (1, 0, 1));
        assert_eq!(one(queue(101, 10, 100), &[], &[]), (2, 0, 2));
        assert_eq!(one(queue(5_000, 10, 100), &[], &[]), (10, 0, 10));
    }

    #[test]
    fn empty_or_paused_queues_get_nothing() {
        assert_eq!(one(queue(0, 10, 1), &[], &[]), (0, 0, 0));
        let paused = QueueView {
            paused: true,
            ..queue(500, 10, 1)
        };
        assert_eq!(one(paused, &[], &[]), (0, 0, 0));
    }

    #[test]
    fn pending_pods_count_as_capacity() {
        let jobs = [job("a", 3, true, false)];
        let p = pods("a", PodState::Pending, 3);
        assert_eq!(one(queue(300, 10, 100), &jobs, &p), (3, 3, 0));
        assert_eq!(one(queue(500, 10, 100), &jobs, &p), (5, 3, 2));
    }

    #[test]
    fn a_job_not_started_yet_counts_its_whole_parallelism() {
        let jobs = [job("a", 4, false, false)];
        assert_eq!(one(queue(400, 10, 100), &jobs, &[]), (4, 4, 0));
    }

    #[test]
    fn failed_and_succeeded_pods_are_not_capacity() {
        let jobs = [job("a", 2, true, false)];
        let p = pods("a", PodState::Done, 2);
        assert_eq!(one(queue(200, 10, 100), &jobs, &p), (2, 0, 2));
    }

    #[test]
    fn terminating_pods_are_not_capacity() {
        let jobs = [job("a", 2, true, false)];
        let p = pods("a", PodState::Terminating, 2);
        assert_eq!(one(queue(200, 10, 100), &jobs, &p), (2, 0, 2));
    }

    #[test]
    fn a_failed_job_is_not_capacity_even_while_its_pods_wind_down() {
        let jobs = [job("a", 5, true, true)];
        let p = pods("a", PodState::Running, 2);
        assert_eq!(one(queue(500, 10, 100), &jobs, &p), (5, 0, 5));
    }

    #[test]
    fn unfinished_jobs_never_add_up_past_max_parallelism() {
        // Pods crash and the Job controller replaces them itself: no second Job.
        let jobs = [job("a", 10, true, false)];
        let mut p = pods("a", PodState::Running, 3);
        p.extend(pods("a", PodState::Done, 7));
        assert_eq!(one(queue(5_000, 10, 100), &jobs, &p), (10, 3, 0));
        // Room left by a smaller Job is used.
        let jobs = [job("a", 4, true, false)];
        assert_eq!(one(queue(5_000, 10, 100), &jobs, &p), (10, 3, 6));
    }

    #[test]
    fn other_queues_pods_do_not_count_and_jobless_consumer_pods_do() {
        let mut p = pods("a", PodState::Running, 2);
        for pod in &mut p {
            pod.queue = "other".into();
        }
        assert_eq!(one(queue(300, 10, 100), &[], &p), (3, 0, 3));
        let orphans = vec![
            PodView {
                queue: "q".into(),
                job: None,
                state: PodState::Running,
            };
            2
        ];
        assert_eq!(one(queue(300, 10, 100), &[], &orphans), (3, 2, 1));
    }

    #[test]
    fn failures_double_the_wait_up_to_the_cap() {
        let s = Duration::from_secs;
        assert_eq!(next_wait(s(10), 1), s(20));
        assert_eq!(next_wait(s(10), 2), s(40));
        assert_eq!(next_wait(s(10), 5), s(300));
        assert_eq!(next_wait(s(10), 40), s(300));
        // An interval longer than the cap is never shortened.
        assert_eq!(next_wait(s(600), 3), s(600));
    }

    #[test]
    fn scripted_rise_and_fall() {
        // depth 250: launch 3
        assert_eq!(one(queue(250, 10, 100), &[], &[]), (3, 0, 3));
        // created, not started yet, depth 900: 3 on the way, launch 6
        let mut jobs = vec![job("a", 3, false, false)];
        assert_eq!(one(queue(900, 10, 100), &jobs, &[]), (9, 3, 6));
        // both started, pods pending: nothing more
        jobs = vec![job("a", 3, true, false), job("b", 6, true, false)];
        let mut p = pods("a", PodState::Pending, 3);
        p.extend(pods("b", PodState::Pending, 6));
        assert_eq!(one(queue(900, 10, 100), &jobs, &p), (9, 9, 0));
        // running, depth falls: nothing
        for pod in &mut p {
            pod.state = PodState::Running;
        }
        assert_eq!(one(queue(400, 10, 100), &jobs, &p), (4, 9, 0));
        // queue finished, jobs complete: nothing
        jobs = vec![job("a", 3, true, true), job("b", 6, true, true)];
        for pod in &mut p {
            pod.state = PodState::Done;
        }
        assert_eq!(one(queue(0, 10, 100), &jobs, &p), (0, 0, 0));
        // new work after that: a new Job
        assert_eq!(one(queue(120, 10, 100), &jobs, &p), (2, 0, 2));
    }
}
