//! `GET /jobs`, `POST /jobs`, `DELETE /jobs/{name}`: consumer Jobs through the Kubernetes API
//! (API.md "Kubernetes Jobs"). Parsing, checks and answers; the calls live in `kube/`.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use memq::{CreateJobRequest, JobList, JobObject, JobSummary};

use super::AppState;
use super::extract::{JobName, read_body};
use crate::error::{Error, Result};
use crate::kube::launcher::summary;
use crate::kube::template::JobRequest;

fn job_object(job: JobSummary) -> Json<JobObject> {
    Json(JobObject {
        kind: "job".into(),
        job,
    })
}

/// `GET /jobs`: the consumer Jobs this server launched, oldest first.
pub async fn list_jobs(State(state): State<AppState>) -> Result<Json<JobList>> {
    let launcher = state.jobs.launcher()?;
    let jobs = launcher.list().await?;
    Ok(Json(JobList {
        kind: "jobList".into(),
        namespace: launcher.namespace().to_string(),
        jobs: jobs.iter().map(summary).collect(),
    }))
}

/// `POST /jobs`: launches a consumer Job for an existing queue; 201 with its summary.
pub async fn create_job(
    State(state): State<AppState>,
    body: Body,
) -> Result<(StatusCode, Json<JobObject>)> {
    let launcher = state.jobs.launcher()?;
    let bytes = read_body(body, 64 * 1024).await?;
    let wire: CreateJobRequest =
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidJson(e.to_string()))?;
    let req = JobRequest::from_wire(wire)?;
    if state.store.queue(&req.queue).await.is_err() {
        return Err(Error::param(
            "queue",
            format!(
                "queue {:?} does not exist; create it with PUT /memq/server/queues/{} first",
                req.queue, req.queue
            ),
        ));
    }
    let job = launcher.create(&req).await?;
    let job = summary(&job);
    tracing::info!(queue = %req.queue, job = %job.name, parallelism = req.parallelism, "consumer Job launched");
    Ok((StatusCode::CREATED, job_object(job)))
}

/// `DELETE /jobs/{name}`: deletes one of this server's consumer Jobs and its pods.
pub async fn delete_job(
    State(state): State<AppState>,
    JobName(name): JobName,
) -> Result<Json<JobObject>> {
    let launcher = state.jobs.launcher()?;
    let job = launcher.delete(&name).await?;
    tracing::info!(job = %name, "consumer Job deleted");
    Ok(job_object(summary(&job)))
}
