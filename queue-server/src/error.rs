//! The server's one error type, and its mapping to the contract's JSON errors.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Everything a request can fail with. Each variant has one status and one stable code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The queue does not exist.
    #[error("queue {0:?} does not exist")]
    QueueNotFound(String),
    /// The queue name breaks the naming rule.
    #[error("{0}")]
    InvalidQueueName(String),
    /// A query parameter is malformed or out of range.
    #[error("parameter {name}: {message}")]
    InvalidParameter {
        /// Parameter name.
        name: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The body is not what the route takes (not UTF-8, ...).
    #[error("{0}")]
    InvalidBody(String),
    /// The body is not the JSON the route takes.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
    /// The lease id is unknown, already used or malformed.
    #[error("lease {0:?} not found on this queue (acked, nacked, never existed or malformed)")]
    LeaseNotFound(String),
    /// The lease ran out; the item went back to the queue.
    #[error("lease {0:?} expired; the item was handed back to the queue")]
    LeaseExpired(String),
    /// One item is larger than `--max-item-bytes`.
    #[error("item {index} is {size} bytes; the limit is {max} bytes (--max-item-bytes)")]
    ItemTooLarge {
        /// Position in the batch (0 for a single item).
        index: usize,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The request body is larger than `--max-body-bytes`.
    #[error("request body is larger than {max} bytes (--max-body-bytes); split the batch")]
    BodyTooLarge {
        /// The limit.
        max: usize,
    },
    /// The batch would pass the queue's `maxDepth`.
    #[error("{0}; retry later or raise maxDepth")]
    QueueFull(#[from] crate::broker::QueueFull),
    /// Enqueuing would pass `--max-memory`.
    #[error(
        "the server's items and their dedup keys hold {held} bytes{holders}; {adding} more would \
         pass its limit of {max} bytes (--max-memory); consume or drain items, lower \
         --dedup-window if retained keys hold the memory, or retry later"
    )]
    MemoryFull {
        /// Bytes held now.
        held: u64,
        /// Bytes the request would add.
        adding: u64,
        /// The limit.
        max: u64,
        /// What holds them (", of which ..."), or empty.
        holders: String,
    },
    /// The Redis store is at its `maxmemory` and refuses writes.
    #[error("{0}; consume or drain items, raise Redis' maxmemory, or retry later")]
    BackendFull(String),
    /// Creating a queue would pass `--max-queues`.
    #[error("the server holds its maximum of {max} queues (--max-queues); delete one first")]
    TooManyQueues {
        /// The limit.
        max: usize,
    },
    /// The request took longer than `--request-timeout`.
    #[error("the request took longer than {}s (--request-timeout)", .after.as_secs_f64())]
    RequestTimeout {
        /// The time it had.
        after: std::time::Duration,
    },
    /// Missing or wrong bearer token.
    #[error("missing or wrong bearer token; send Authorization: Bearer <token>")]
    Unauthorized,
    /// No such route.
    #[error("no route for {0}; see /openapi.json or docs/api.md")]
    RouteNotFound(String),
    /// Route exists, method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The storage backend cannot serve requests right now.
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// No Kubernetes API to launch Jobs with: `--jobs` off, no cluster config, or the API
    /// server cannot be reached.
    #[error("Kubernetes Jobs unavailable: {0}")]
    KubernetesUnavailable(String),
    /// The request's token is known, but its role or queues do not allow this: what it is and
    /// what it would need.
    #[error("{0}")]
    Forbidden(String),
    /// The Kubernetes API server denied a call to this server's credentials (its 403): the
    /// verb, resource and its words.
    #[error("{0}")]
    KubernetesForbidden(String),
    /// The Kubernetes API server rejected the Job as invalid (its 422): its words.
    #[error("{0}")]
    KubernetesInvalid(String),
    /// The Kubernetes API server failed a call otherwise (409, 500, ...); its words.
    #[error("{0}")]
    Kubernetes(String),
    /// No consumer Job of this server has that name.
    #[error("no consumer Job {0:?} launched by this server")]
    JobNotFound(String),
    /// No such item in the queue now (`GET /queues/{q}/items/...`).
    #[error("{0}")]
    ItemNotFound(String),
}

impl Error {
    /// Every code [`Error::code`] can give (the `code` enum of `/openapi.json`).
    pub const CODES: &[&str] = &[
        "queue_not_found",
        "invalid_queue_name",
        "invalid_parameter",
        "invalid_body",
        "invalid_json",
        "lease_not_found",
        "lease_expired",
        "item_too_large",
        "body_too_large",
        "queue_full",
        "memory_full",
        "too_many_queues",
        "request_timeout",
        "unauthorized",
        "not_found",
        "method_not_allowed",
        "backend_unavailable",
        "kubernetes_unavailable",
        "forbidden",
        "invalid_job",
        "kubernetes_error",
        "job_not_found",
        "item_not_found",
    ];

    /// Shorthand for [`Error::InvalidParameter`].
    pub fn param(name: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidParameter {
            name,
            message: message.into(),
        }
    }

    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::QueueNotFound(_)
            | Error::LeaseNotFound(_)
            | Error::RouteNotFound(_)
            | Error::JobNotFound(_)
            | Error::ItemNotFound(_) => StatusCode::NOT_FOUND,
            Error::InvalidQueueName(_)
            | Error::InvalidParameter { .. }
            | Error::InvalidBody(_)
            | Error::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Error::LeaseExpired(_) => StatusCode::GONE,
            Error::ItemTooLarge { .. } | Error::BodyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::QueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::MemoryFull { .. } | Error::BackendFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::TooManyQueues { .. } => StatusCode::CONFLICT,
            Error::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::BackendUnavailable(_) | Error::KubernetesUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Forbidden(_) | Error::KubernetesForbidden(_) => StatusCode::FORBIDDEN,
            Error::KubernetesInvalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Kubernetes(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// Stable error code of the contract.
    pub fn code(&self) -> &'static str {
        match self {
            Error::QueueNotFound(_) => "queue_not_found",
            Error::InvalidQueueName(_) => "invalid_queue_name",
            Error::InvalidParameter { .. } => "invalid_parameter",
            Error::InvalidBody(_) => "invalid_body",
            Error::InvalidJson(_) => "invalid_json",
            Error::LeaseNotFound(_) => "lease_not_found",
            Error::LeaseExpired(_) => "lease_expired",
            Error::ItemTooLarge { .. } => "item_too_large",
            Error::BodyTooLarge { .. } => "body_too_large",
            Error::QueueFull(_) => "queue_full",
            Error::MemoryFull { .. } | Error::BackendFull(_) => "memory_full",
            Error::TooManyQueues { .. } => "too_many_queues",
            Error::RequestTimeout { .. } => "request_timeout",
            Error::Unauthorized => "unauthorized",
            Error::RouteNotFound(_) => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::BackendUnavailable(_) => "backend_unavailable",
            Error::KubernetesUnavailable(_) => "kubernetes_unavailable",
            Error::Forbidden(_) | Error::KubernetesForbidden(_) => "forbidden",
            Error::KubernetesInvalid(_) => "invalid_job",
            Error::Kubernetes(_) => "kubernetes_error",
            Error::JobNotFound(_) => "job_not_found",
            Error::ItemNotFound(_) => "item_not_found",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if matches!(self, Error::MemoryFull { .. } | Error::BackendFull(_)) {
            // The server protecting itself, not failing: one line, but no alarm.
            tracing::warn!(code = self.code(), error = %self, "enqueue refused");
        } else if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        }
        let body = memq::ApiError {
            kind: "error".into(),
            code: self.code().into(),
            message: self.to_string(),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        match self {
            // Each says "not now": a client (or a load balancer) may try again in a second, here
            // or, for an unreachable store, on another replica.
            Error::QueueFull(_)
            | Error::MemoryFull { .. }
            | Error::BackendFull(_)
            | Error::BackendUnavailable(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Error::RequestTimeout { .. } => {
                // The request may be cut mid-body: the connection cannot carry another one.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Error::Unauthorized => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

/// Result with the server's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_listed_once() {
        let every = [
            Error::QueueNotFound("q".into()),
            Error::InvalidQueueName("q".into()),
            Error::param("p", "m"),
            Error::InvalidBody("b".into()),
            Error::InvalidJson("j".into()),
            Error::LeaseNotFound("l".into()),
            Error::LeaseExpired("l".into()),
            Error::ItemTooLarge {
                index: 0,
                size: 2,
                max: 1,
            },
            Error::BodyTooLarge { max: 1 },
            Error::QueueFull(crate::broker::QueueFull {
                max_depth: 1,
                held: 1,
                adding: 1,
            }),
            Error::MemoryFull {
                held: 1,
                adding: 1,
                max: 1,
                holders: String::new(),
            },
            Error::TooManyQueues { max: 1 },
            Error::RequestTimeout {
                after: std::time::Duration::from_secs(1),
            },
            Error::Unauthorized,
            Error::RouteNotFound("r".into()),
            Error::MethodNotAllowed,
            Error::BackendUnavailable("b".into()),
            Error::KubernetesUnavailable("k".into()),
            Error::Forbidden("f".into()),
            Error::KubernetesForbidden("k".into()),
            Error::KubernetesInvalid("k".into()),
            Error::Kubernetes("k".into()),
            Error::JobNotFound("j".into()),
            Error::ItemNotFound("i".into()),
        ];
        let mut codes: Vec<&str> = every.iter().map(Error::code).collect();
        // A token's 403 and the API server's 403 share `forbidden`.
        codes.dedup();
        assert_eq!(codes, Error::CODES);
    }
}
