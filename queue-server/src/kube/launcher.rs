//! The Kubernetes API calls: create, list, get and delete consumer Jobs; list consumer pods.
//! Also the mapping of their failures to the server's errors and of a Job to its summary.

use std::sync::Arc;
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, ListParams, PostParams, Preconditions, PropagationPolicy};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::template::{self, JobRequest};
use super::{LABEL_MANAGED_BY, LABEL_QUEUE, MANAGED_BY};
use crate::error::{Error, Result};

/// Launches, lists and deletes consumer Jobs in one namespace. Cheap to clone.
#[derive(Clone)]
pub struct Launcher {
    jobs: Api<Job>,
    pods: Api<Pod>,
    namespace: Arc<str>,
    template: Arc<Job>,
    server_url: Arc<str>,
    api_url: Arc<str>,
}

impl Launcher {
    /// A launcher talking to the API server of `config`, creating Jobs from `template` in
    /// `namespace`, whose consumers reach this server at `server_url`.
    pub fn new(
        mut config: ::kube::Config,
        namespace: String,
        template: Job,
        server_url: &str,
    ) -> Result<Self, ::kube::Error> {
        // kube retries 429/503/504 up to 15 times with backoff of up to 1000 s: a request to
        // /jobs would hang, and a create retried after a lost answer could launch a Job twice.
        // The caller retries instead (the autoscaler next interval, a person by hand).
        config.default_retry = false;
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(30));
        let api_url = config.cluster_url.to_string();
        let client = ::kube::Client::try_from(config)?;
        Ok(Self {
            jobs: Api::namespaced(client.clone(), &namespace),
            pods: Api::namespaced(client, &namespace),
            namespace: namespace.into(),
            template: Arc::new(template),
            server_url: server_url.into(),
            api_url: api_url.into(),
        })
    }

    /// The namespace Jobs are created in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Job that [`Launcher::create`] would post for `req`.
    pub fn job_for(&self, req: &JobRequest) -> Job {
        template::build_job(&self.template, req, &self.server_url)
    }

    /// Creates a consumer Job for `req`; answers the Job as the API server stored it.
    pub async fn create(&self, req: &JobRequest) -> Result<Job> {
        let job = self.job_for(req);
        self.jobs
            .create(&PostParams::default(), &job)
            .await
            .map_err(|e| self.error("create", "jobs", e))
    }

    /// The consumer Jobs this server launched, oldest first.
    pub async fn list(&self) -> Result<Vec<Job>> {
        let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
        let mut jobs = self.list_jobs(&selector).await?;
        jobs.sort_by(|a, b| {
            let key = |j: &Job| {
                (
                    j.metadata.creation_timestamp.clone(),
                    j.metadata.name.clone(),
                )
            };
            key(a).cmp(&key(b))
        });
        Ok(jobs)
    }

    /// Every Job labelled with a queue: ours and any other consumer Job (the autoscaler counts
    /// them all as capacity).
    pub async fn queue_jobs(&self) -> Result<Vec<Job>> {
        self.list_jobs(LABEL_QUEUE).await
    }

    async fn list_jobs(&self, selector: &str) -> Result<Vec<Job>> {
        let params = ListParams::default().labels(selector);
        let list = self
            .jobs
            .list(&params)
            .await
            .map_err(|e| self.error("list", "jobs", e))?;
        Ok(list.items)
    }

    /// Every pod labelled with a queue.
    pub async fn queue_pods(&self) -> Result<Vec<Pod>> {
        let params = ListParams::default().labels(LABEL_QUEUE);
        let list = self
            .pods
            .list(&params)
            .await
            .map_err(|e| self.error("list", "pods", e))?;
        Ok(list.items)
    }

    /// Deletes the consumer Job `name` and, in the background, its pods. Only Jobs this server
    /// launched: any other name is 404, as it is missing from `GET /jobs`.
    pub async fn delete(&self, name: &str) -> Result<Job> {
        let job = match self.jobs.get(name).await {
            Ok(job) => job,
            Err(::kube::Error::Api(s)) if s.code == 404 => {
                return Err(Error::JobNotFound(name.to_string()));
            }
            Err(e) => return Err(self.error("get", "jobs", e)),
        };
        let ours = job
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_MANAGED_BY))
            .is_some_and(|v| v == MANAGED_BY);
        if !ours {
            return Err(Error::JobNotFound(name.to_string()));
        }
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            // Delete the Job we just looked at, not one made under the same name since.
            preconditions: Some(Preconditions {
                uid: job.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.jobs.delete(name, &params).await {
            Ok(_) => Ok(job),
            Err(::kube::Error::Api(s)) if s.code == 404 => {
                Err(Error::JobNotFound(name.to_string()))
            }
            Err(e) => Err(self.error("delete", "jobs", e)),
        }
    }

    /// Our error for a failed API call `verb` on `resource`: 503 when the API server cannot be
    /// reached or does not take our credentials, 403 naming the verb it denied, 422 with its
    /// words when it rejects the Job, 502 with its words for anything else.
    fn error(&self, verb: &str, resource: &str, e: ::kube::Error) -> Error {
        // The group as RBAC_VERBS, the list of every call made here, has it ("" is core).
        let group = super::RBAC_VERBS
            .iter()
            .find(|(_, r, _)| *r == resource)
            .map_or("core", |(g, _, _)| if g.is_empty() { "core" } else { g });
        match e {
            ::kube::Error::Api(status) => {
                let said = status.message.trim();
                match status.code {
                    401 => Error::KubernetesUnavailable(format!(
                        "the Kubernetes API server at {} does not accept this server's credentials (401 {}): {said}; \
                         check its ServiceAccount token or kubeconfig",
                        self.api_url, status.reason
                    )),
                    403 => Error::KubernetesForbidden(format!(
                        "the Kubernetes API server denied \"{verb}\" on \"{resource}\" (API group {group}) \
                         in namespace {}: {said}; the server's ServiceAccount needs the Role \
                         queue-server-jobs of manifests/base/role.yaml, bound in that namespace",
                        self.namespace
                    )),
                    422 => Error::KubernetesInvalid(format!(
                        "the Kubernetes API server rejected the Job as invalid: {said}; fix the Job \
                         template (--job-template) or the request's overrides"
                    )),
                    code => Error::Kubernetes(format!(
                        "Kubernetes API server answered {code} {} to \"{verb} {resource}\" in namespace {}: {said}",
                        status.reason, self.namespace
                    )),
                }
            }
            e @ (::kube::Error::HyperError(_)
            | ::kube::Error::Service(_)
            | ::kube::Error::Auth(_)
            | ::kube::Error::RustlsTls(_)) => Error::KubernetesUnavailable(format!(
                "cannot reach the Kubernetes API server at {} to {verb} {resource}: {}",
                self.api_url,
                chain(&e)
            )),
            e => Error::Kubernetes(format!(
                "Kubernetes API call \"{verb} {resource}\" failed: {}",
                chain(&e)
            )),
        }
    }
}

/// An error with its sources: "ServiceError: client error (Connect): tcp connect error: ...".
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

fn time(t: &Option<Time>) -> Option<String> {
    t.as_ref()
        .and_then(|t| serde_json::to_value(t).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// What `GET /jobs` shows of a Job.
pub fn summary(job: &Job) -> memq::JobSummary {
    let meta = &job.metadata;
    let status = job.status.clone().unwrap_or_default();
    let conditions: Vec<memq::JobCondition> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| memq::JobCondition {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_transition_time: time(&c.last_transition_time),
        })
        .collect();
    let active = status.active.unwrap_or(0);
    let state = if has_condition(job, "Failed") {
        "Failed"
    } else if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else if active > 0 {
        "Running"
    } else {
        "Pending"
    };
    let spec = job.spec.as_ref();
    memq::JobSummary {
        name: meta.name.clone().unwrap_or_default(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        queue: meta
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_QUEUE))
            .cloned()
            .unwrap_or_default(),
        state: state.into(),
        parallelism: spec.and_then(|s| s.parallelism).unwrap_or(1),
        active,
        succeeded: status.succeeded.unwrap_or(0),
        failed: status.failed.unwrap_or(0),
        image: spec
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone()),
        creation_timestamp: time(&meta.creation_timestamp),
        start_time: time(&status.start_time),
        completion_time: time(&status.completion_time),
        conditions,
    }
}

/// Whether the Job has condition `type_` with status `True`.
pub fn has_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_a_tls_client_with_the_one_crypto_provider() {
        // rustls panics here if no provider, or more than one (ring and aws-lc-rs), is built in.
        let config = ::kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let template = template::default_template("memq-rs:0.1.0").unwrap();
        let launcher = Launcher::new(config, "ns".into(), template, "http://q").unwrap();
        let err = launcher.list().await.unwrap_err();
        assert!(matches!(err, Error::KubernetesUnavailable(_)), "{err}");
    }
}
