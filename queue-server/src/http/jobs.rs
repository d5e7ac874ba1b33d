//! `GET /jobs`, `POST /jobs`, `DELETE /jobs/{name}`: consumer Jobs through the Kubernetes API
//! (API.md "Kubernetes Jobs"). Parsing, checks and answers; the calls live in `kube/`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use memq::{ApiError, CreateJobRequest, JobList, JobObject, JobSummary};

use super::AppState;
use super::extract::{JobName, json_object, read_body};
use crate::error::{Error, Result};
use crate::kube::launcher::summary;
use crate::kube::template::JobRequest;

fn job_object(job: JobSummary) -> Json<JobObject> {
    Json(JobObject {
        kind: "job".into(),
        job,
    })
}

/// List consumer Jobs
///
/// `GET /jobs`: the consumer Jobs this server launched, oldest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    responses(
        (status = 200, description = "The consumer Jobs this server launched, oldest first", body = JobList),
        (status = 403, description = "The Kubernetes API server denied this server's ServiceAccount the call (`forbidden`, naming the verb)", body = ApiError),
        (status = 502, description = "The Kubernetes API failed the call otherwise (`kubernetes_error`, with its message)", body = ApiError),
        (status = 503, description = "No Kubernetes API: --jobs off, no cluster, or unreachable (`kubernetes_unavailable`)", body = ApiError),
    ))]
pub async fn list_jobs(State(state): State<AppState>) -> Result<Json<JobList>> {
    let launcher = state.jobs.launcher()?;
    let jobs = launcher.list().await?;
    Ok(Json(JobList {
        kind: "jobList".into(),
        namespace: launcher.namespace().to_string(),
        jobs: jobs.iter().map(summary).collect(),
    }))
}

/// Launch a consumer Job
///
/// `POST /jobs`: launches a consumer Job for an existing queue from the Job template; 201
/// with its summary.
#[utoipa::path(post, path = "/jobs", tag = "jobs",
    request_body(content = CreateJobRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Launched", body = JobObject),
        (status = 400, description = "Bad request (`invalid_json`, `invalid_parameter`: unknown queue, bad image, ...)", body = ApiError),
        (status = 413, description = "Body over 64 KiB (`body_too_large`)", body = ApiError),
        (status = 403, description = "The Kubernetes API server denied this server's ServiceAccount the call (`forbidden`, naming the verb)", body = ApiError),
        (status = 422, description = "The Kubernetes API server rejected the Job as invalid (`invalid_job`, with its message)", body = ApiError),
        (status = 502, description = "The Kubernetes API failed the call otherwise (`kubernetes_error`, with its message)", body = ApiError),
        (status = 503, description = "No Kubernetes API (`kubernetes_unavailable`), or the store cannot be reached (`backend_unavailable`)", body = ApiError),
    ))]
pub async fn create_job(
    State(state): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<JobObject>)> {
    let launcher = state.jobs.launcher()?;
    let bytes = read_body(body, 64 * 1024).await?;
    let wire: CreateJobRequest = json_object(&bytes)?;
    let req = JobRequest::from_wire(wire)?;
    // Only a missing queue is the caller's mistake; a store that fails (Redis down) is a 503.
    match state.store.queue(&req.queue).await {
        Ok(_) => {}
        Err(Error::QueueNotFound(_)) => {
            return Err(Error::param(
                "queue",
                format!(
                    "queue {:?} does not exist; create it with PUT /memq/server/queues/{} first",
                    req.queue, req.queue
                ),
            ));
        }
        Err(e) => return Err(e),
    }
    let job = launcher.create(&req).await?;
    let job = summary(&job);
    tracing::info!(queue = %req.queue, job = %job.name, parallelism = req.parallelism, "consumer Job launched");
    Ok((StatusCode::CREATED, job_object(job)))
}

/// Delete a consumer Job
///
/// `DELETE /jobs/{name}`: deletes one of this server's consumer Jobs and its pods.
#[utoipa::path(delete, path = "/jobs/{name}", tag = "jobs",
    params(("name" = String, Path, description = "The Job's name", pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    responses(
        (status = 200, description = "Deleted with its pods; the Job as it was", body = JobObject),
        (status = 400, description = "Not a Job name (`invalid_parameter`)", body = ApiError),
        (status = 404, description = "No such Job of this server (`job_not_found`)", body = ApiError),
        (status = 403, description = "The Kubernetes API server denied this server's ServiceAccount the call (`forbidden`, naming the verb)", body = ApiError),
        (status = 502, description = "The Kubernetes API failed the call otherwise (`kubernetes_error`, with its message)", body = ApiError),
        (status = 503, description = "No Kubernetes API (`kubernetes_unavailable`)", body = ApiError),
    ))]
pub async fn delete_job(
    State(state): State<AppState>,
    JobName(name): JobName,
) -> Result<Json<JobObject>> {
    let launcher = state.jobs.launcher()?;
    let job = launcher.delete(&name).await?;
    tracing::info!(job = %name, "consumer Job deleted");
    Ok(job_object(summary(&job)))
}
