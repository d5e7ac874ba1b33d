//! Consumer Jobs through the Kubernetes API: the launcher behind `GET/POST/DELETE /jobs` and the
//! autoscaler that launches Jobs by queue depth.
//!
//! - [`template`]: from the Job template and a request to the Job to post (pure).
//! - [`launcher`]: the API calls (create, list, get, delete Jobs; list pods) and their errors.
//! - [`autoscale`]: the decision (pure, [`autoscale::decide`]) and the loop that acts on it.
//!
//! This module never speaks HTTP to our own clients and never changes queues: it reads stats
//! from the store and talks to the API server. Every API call it can make is listed in
//! [`RBAC_VERBS`], which manifests/base/role.yaml must grant exactly (tests/rbac.rs checks).

pub mod autoscale;
pub mod launcher;
pub mod template;

use std::sync::Arc;
use std::time::Duration;

pub use autoscale::Autoscaler;
pub use launcher::Launcher;

use crate::config::Config;

/// `app.kubernetes.io/name` of every launched Job and its pods.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Its value.
pub const NAME: &str = "memq-consumer";
/// `app.kubernetes.io/managed-by`: what `GET /jobs` selects on.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "memq-queue-server";
/// The queue a consumer Job (or pod) works on; the autoscaler counts pods by it.
pub const LABEL_QUEUE: &str = "memq.queue";

/// Every (API group, resource, verb) the launcher and the autoscaler use, and so exactly what
/// the Role `queue-server-jobs` must allow.
pub const RBAC_VERBS: &[(&str, &str, &str)] = &[
    ("batch", "jobs", "create"), // POST /jobs, autoscaler
    ("batch", "jobs", "list"),   // GET /jobs, autoscaler, start-up check
    ("batch", "jobs", "get"),    // DELETE /jobs/{name}: is it one of ours?
    ("batch", "jobs", "delete"), // DELETE /jobs/{name}
    ("", "pods", "list"),        // autoscaler: running + pending consumer pods
];

/// Whether `/jobs` can work, and if not, why (the 503's message).
#[derive(Clone)]
pub enum Jobs {
    /// Off (`--jobs` not given) or no cluster configuration found.
    Unavailable(String),
    /// Talking to an API server.
    Ready(Arc<Launcher>),
}

impl Jobs {
    /// Sets up the launcher from `config`: `--jobs` off, or the template plus a client for the
    /// given `kube_config`, in-cluster config or kubeconfig. Logs one line that says which.
    /// Err only for a template that cannot be used: a configuration mistake to fix, not a
    /// cluster to wait for.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        if !config.jobs {
            tracing::info!(
                "consumer Jobs off: /jobs answers 503; start with --jobs to launch consumer Jobs from this server"
            );
            return Ok(Self::Unavailable(
                "this server was started without --jobs".into(),
            ));
        }
        let template = match &config.job_template {
            Some(path) => template::load(path),
            None => template::default_template(&config.consumer_image),
        }
        .map_err(anyhow::Error::msg)?;
        let kube_config = match &config.kube_config {
            Some(c) => c.clone(),
            None => match ::kube::Config::infer().await {
                Ok(c) => c,
                Err(e) => {
                    let why = format!(
                        "no Kubernetes cluster configured: not in a pod with a ServiceAccount token and no kubeconfig ({e})"
                    );
                    tracing::warn!(reason = %why, "consumer Jobs unavailable: /jobs answers 503");
                    return Ok(Self::Unavailable(why));
                }
            },
        };
        let api_url = kube_config.cluster_url.to_string();
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| kube_config.default_namespace.clone());
        let launcher =
            match Launcher::new(kube_config, namespace.clone(), template, &config.server_url) {
                Ok(l) => l,
                Err(e) => {
                    let why = format!("cannot build a Kubernetes client for {api_url}: {e}");
                    tracing::warn!(reason = %why, "consumer Jobs unavailable: /jobs answers 503");
                    return Ok(Self::Unavailable(why));
                }
            };
        // One cheap call, so that the log says now whether the API server answers and lets
        // us list Jobs, rather than at the first request. It does not decide anything: the
        // API server may come up later, and each request tries again.
        match tokio::time::timeout(Duration::from_secs(5), launcher.list()).await {
            Ok(Ok(jobs)) => tracing::info!(
                api = %api_url, namespace = %namespace, jobs = jobs.len(),
                template = %config.job_template.as_ref().map_or("built-in".into(), |p| p.display().to_string()),
                "consumer Jobs on: Kubernetes API answers"
            ),
            Ok(Err(e @ crate::error::Error::KubernetesUnavailable(_))) => tracing::warn!(
                api = %api_url, namespace = %namespace, error = %e,
                "consumer Jobs on, but the Kubernetes API server cannot be reached now; /jobs answers 503 until it can"
            ),
            Ok(Err(e)) => tracing::warn!(
                api = %api_url, namespace = %namespace, error = %e,
                "consumer Jobs on, but the Kubernetes API server refused to list Jobs; check the Role queue-server-jobs"
            ),
            Err(_) => tracing::warn!(
                api = %api_url, namespace = %namespace,
                "consumer Jobs on, but the Kubernetes API did not answer within 5s; /jobs fails until it does"
            ),
        }
        Ok(Self::Ready(Arc::new(launcher)))
    }

    /// The launcher, or the 503 that says why there is none.
    pub fn launcher(&self) -> crate::error::Result<&Launcher> {
        match self {
            Jobs::Ready(l) => Ok(l),
            Jobs::Unavailable(why) => Err(crate::error::Error::KubernetesUnavailable(why.clone())),
        }
    }
}
