//! A fake Kubernetes API server, for what a real one (tests/real_kube.rs) cannot show on demand:
//! injected errors (403, 409, 422, 500), an outage and its end, the exact requests made, and a
//! cluster scripted pod by pod for the autoscaler's rule. axum on 127.0.0.1:0 serving the real
//! paths and JSON of batch/v1 Jobs and core/v1 pods (k8s-openapi types, `Status` for errors),
//! keeping Jobs and pods in memory and recording every request it gets.
//!
//! Scripting: [`FakeKube::fail_next`] answers the next request with an error `Status`;
//! [`FakeKube::stop`] and [`FakeKube::restart`] take the API server down (port closed, so
//! clients see connection refused) and bring it back on the same port with the same state.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// URL path.
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    /// JSON body, when there was one.
    pub body: Option<Value>,
}

impl Recorded {
    /// The RBAC (API group, resource, verb) this request needs, as the API server's
    /// authorizer derives it from method and path.
    pub fn rbac(&self) -> (String, String, String) {
        let segs: Vec<&str> = self.path.trim_matches('/').split('/').collect();
        // /apis/{group}/{version}/namespaces/{ns}/{resource}[/{name}]
        // /api/{version}/namespaces/{ns}/{resource}[/{name}]
        let (group, rest) = match segs.first() {
            Some(&"apis") => (segs[1].to_string(), &segs[3..]),
            _ => (String::new(), &segs[2..]),
        };
        let rest = if rest.first() == Some(&"namespaces") {
            &rest[2..]
        } else {
            rest
        };
        let resource = rest.first().copied().unwrap_or_default().to_string();
        let named = rest.len() > 1;
        let watch = self
            .query
            .get("watch")
            .is_some_and(|v| v == "true" || v == "1");
        let verb = match (self.method.as_str(), named) {
            ("GET", _) if watch => "watch",
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            (m, _) => m,
        };
        (group, resource, verb.to_string())
    }
}

#[derive(Default)]
struct Inner {
    /// Jobs by (namespace, name).
    jobs: BTreeMap<(String, String), Job>,
    pods: Vec<Pod>,
    requests: Vec<Recorded>,
    /// Scripted failures: (method it applies to, or any; code; reason; message).
    failures: VecDeque<(Option<String>, u16, String, String)>,
    created: u32,
}

type Shared = Arc<Mutex<Inner>>;

/// The fake API server. Stops when dropped.
pub struct FakeKube {
    addr: SocketAddr,
    inner: Shared,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeKube {
    /// Serves on 127.0.0.1 on an ephemeral port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let mut fake = Self {
            addr: listener.local_addr().unwrap(),
            inner: Shared::default(),
            stop: None,
            task: None,
        };
        fake.serve(listener);
        fake
    }

    fn serve(&mut self, listener: TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let router = router(self.inner.clone());
        self.task = Some(tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("fake API server");
        }));
        self.stop = Some(stop);
    }

    /// Takes the API server down: the port is closed until [`FakeKube::restart`].
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Serves again on the same port, with the same Jobs and pods.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind");
        self.serve(listener);
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client config for this server with `namespace` as its default.
    pub fn config(&self, namespace: &str) -> kube::Config {
        let mut config = kube::Config::new(self.url().parse().unwrap());
        config.default_namespace = namespace.into();
        config
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().requests.clone()
    }

    /// Requests so far with this method.
    pub fn requests_with(&self, method: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method)
            .collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.inner.lock().requests.clear();
    }

    /// The RBAC verbs of every request so far.
    pub fn verbs(&self) -> BTreeSet<(String, String, String)> {
        self.requests().iter().map(Recorded::rbac).collect()
    }

    /// Answers the next request with `code` and a Status of `reason` and `message`.
    pub fn fail_next(&self, code: u16, reason: &str, message: &str) {
        self.inner
            .lock()
            .failures
            .push_back((None, code, reason.into(), message.into()));
    }

    /// Answers the next request with `method` (`POST`, ...) that way.
    pub fn fail_next_on(&self, method: &str, code: u16, reason: &str, message: &str) {
        self.inner.lock().failures.push_back((
            Some(method.into()),
            code,
            reason.into(),
            message.into(),
        ));
    }

    /// The Jobs stored now, by name.
    pub fn jobs(&self) -> Vec<Job> {
        self.inner.lock().jobs.values().cloned().collect()
    }

    /// Stores `job` as it is (a Job made by someone else, or with a status).
    pub fn put_job(&self, job: Job) {
        let ns = job.metadata.namespace.clone().unwrap_or_default();
        let name = job.metadata.name.clone().unwrap_or_default();
        self.inner.lock().jobs.insert((ns, name), job);
    }

    /// Sets a stored Job's status, as the Job controller would.
    pub fn set_job_status(&self, name: &str, status: JobStatus) {
        let mut inner = self.inner.lock();
        let job = inner
            .jobs
            .values_mut()
            .find(|j| j.metadata.name.as_deref() == Some(name))
            .expect("job exists");
        job.status = Some(status);
    }

    /// Adds `n` pods of Job `job` in `phase` (labels copied from the Job's pod template).
    pub fn add_pods(&self, job: &str, phase: &str, n: usize) {
        let mut inner = self.inner.lock();
        let j = inner
            .jobs
            .values()
            .find(|j| j.metadata.name.as_deref() == Some(job))
            .cloned()
            .expect("job exists");
        let mut labels = j
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert("batch.kubernetes.io/job-name".into(), job.into());
        for _ in 0..n {
            let i = inner.pods.len();
            inner.pods.push(Pod {
                metadata: ObjectMeta {
                    name: Some(format!("{job}-p{i}")),
                    namespace: j.metadata.namespace.clone(),
                    labels: Some(labels.clone()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "batch/v1".into(),
                        kind: "Job".into(),
                        name: job.into(),
                        uid: j.metadata.uid.clone().unwrap_or_default(),
                        controller: Some(true),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: None,
                status: Some(PodStatus {
                    phase: Some(phase.into()),
                    ..Default::default()
                }),
            });
        }
    }

    /// Moves every pod of Job `job` to `phase`.
    pub fn set_pod_phase(&self, job: &str, phase: &str) {
        for pod in self.inner.lock().pods.iter_mut() {
            let owner = pod
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.name == job);
            if owner {
                pod.status = Some(PodStatus {
                    phase: Some(phase.into()),
                    ..Default::default()
                });
            }
        }
    }

    /// The pods stored now.
    pub fn pods(&self) -> Vec<Pod> {
        self.inner.lock().pods.clone()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A Job status as the Job controller writes it.
pub fn status(active: i32, succeeded: i32, failed: i32, conditions: &[(&str, &str)]) -> JobStatus {
    let now = Time(Timestamp::now());
    JobStatus {
        active: Some(active),
        succeeded: Some(succeeded),
        failed: Some(failed),
        start_time: Some(now.clone()),
        completion_time: conditions
            .iter()
            .any(|(t, s)| *t == "Complete" && *s == "True")
            .then(|| now.clone()),
        conditions: (!conditions.is_empty()).then(|| {
            conditions
                .iter()
                .map(|(t, s)| JobCondition {
                    type_: (*t).into(),
                    status: (*s).into(),
                    reason: Some(format!("{t}Reason")),
                    message: Some(format!("{t} message")),
                    last_transition_time: Some(now.clone()),
                    last_probe_time: None,
                })
                .collect()
        }),
        ..Default::default()
    }
}

fn router(inner: Shared) -> Router {
    let jobs = "/apis/batch/v1/namespaces/{ns}/jobs";
    Router::new()
        .route(jobs, get(list_jobs).post(create_job))
        .route(&format!("{jobs}/{{name}}"), get(get_job).delete(delete_job))
        .route("/api/v1/namespaces/{ns}/pods", get(list_pods))
        .fallback(|req: Request| async move {
            status_response(
                404,
                "NotFound",
                &format!(
                    "the server could not find the requested resource ({})",
                    req.uri().path()
                ),
            )
        })
        .layer(middleware::from_fn_with_state(inner.clone(), record))
        .with_state(inner)
}

/// Records the request (with its JSON body) and answers a scripted failure if one is queued.
async fn record(State(inner): State<Shared>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let bytes: Bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let failure = {
        let mut inner = inner.lock();
        inner.requests.push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query,
            body: serde_json::from_slice(&bytes).ok(),
        });
        let method = parts.method.as_str();
        let at = inner
            .failures
            .iter()
            .position(|(m, ..)| m.as_deref().is_none_or(|m| m == method));
        at.and_then(|i| inner.failures.remove(i))
    };
    if let Some((_, code, reason, message)) = failure {
        return status_response(code, &reason, &message);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn status_response(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

/// `a=b,c,!d`: equality, existence and absence, all of them.
fn matches(selector: Option<&String>, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    selector.is_none_or(|s| {
        s.split(',').filter(|t| !t.is_empty()).all(|term| {
            if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                labels.get(k).is_some_and(|have| have == v)
            } else if let Some(k) = term.strip_prefix('!') {
                !labels.contains_key(k)
            } else {
                labels.contains_key(term)
            }
        })
    })
}

fn list_json<T: serde::Serialize + k8s_openapi::ListableResource>(items: Vec<T>) -> Response {
    let list = k8s_openapi::List {
        items,
        metadata: Default::default(),
    };
    axum::Json(list).into_response()
}

async fn list_jobs(
    State(inner): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let jobs: Vec<Job> = inner
        .lock()
        .jobs
        .iter()
        .filter(|((n, _), j)| {
            *n == ns && matches(q.get("labelSelector"), j.metadata.labels.as_ref())
        })
        .map(|(_, j)| j.clone())
        .collect();
    list_json(jobs)
}

async fn list_pods(
    State(inner): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let pods: Vec<Pod> = inner
        .lock()
        .pods
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|p| matches(q.get("labelSelector"), p.metadata.labels.as_ref()))
        .cloned()
        .collect();
    list_json(pods)
}

async fn create_job(State(inner): State<Shared>, Path(ns): Path<String>, body: Bytes) -> Response {
    let mut job: Job = match serde_json::from_slice(&body) {
        Ok(j) => j,
        Err(e) => return status_response(400, "BadRequest", &format!("bad Job: {e}")),
    };
    let mut inner = inner.lock();
    inner.created += 1;
    let n = inner.created;
    let name = match (&job.metadata.name, &job.metadata.generate_name) {
        (Some(name), _) => name.clone(),
        (None, Some(prefix)) => format!("{prefix}{:05}", n),
        (None, None) => {
            return status_response(
                422,
                "Invalid",
                "Job.batch \"\" is invalid: metadata.name: Required value",
            );
        }
    };
    if inner.jobs.contains_key(&(ns.clone(), name.clone())) {
        return status_response(
            409,
            "AlreadyExists",
            &format!("jobs.batch \"{name}\" already exists"),
        );
    }
    job.metadata.name = Some(name.clone());
    job.metadata.namespace = Some(ns.clone());
    job.metadata.uid = Some(format!("uid-{n}"));
    job.metadata.resource_version = Some(n.to_string());
    job.metadata.creation_timestamp = Some(Time(Timestamp::now()));
    job.status = Some(JobStatus::default());
    inner.jobs.insert((ns, name), job.clone());
    (StatusCode::CREATED, axum::Json(job)).into_response()
}

async fn get_job(
    State(inner): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match inner.lock().jobs.get(&(ns, name.clone())) {
        Some(job) => axum::Json(job.clone()).into_response(),
        None => status_response(404, "NotFound", &format!("jobs.batch \"{name}\" not found")),
    }
}

async fn delete_job(
    State(inner): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let options: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut inner = inner.lock();
    let key = (ns, name.clone());
    let Some(job) = inner.jobs.get(&key).cloned() else {
        return status_response(404, "NotFound", &format!("jobs.batch \"{name}\" not found"));
    };
    let uid = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str);
    if uid.is_some_and(|uid| job.metadata.uid.as_deref() != Some(uid)) {
        return status_response(
            409,
            "Conflict",
            "Precondition failed: UID in precondition does not match",
        );
    }
    inner.jobs.remove(&key);
    // Background propagation: the garbage collector deletes the pods afterwards.
    let now = Time(Timestamp::now());
    for pod in inner.pods.iter_mut() {
        if pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.name == name)
        {
            pod.metadata.deletion_timestamp = Some(now.clone());
        }
    }
    axum::Json(job).into_response()
}
