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
    /// The server is shutting down.
    #[error("server is shutting down; retry against another replica or after restart")]
    ShuttingDown,
    /// No Kubernetes API to launch Jobs with: `--jobs` off, no cluster config, or the API
    /// server cannot be reached.
    #[error("Kubernetes Jobs unavailable: {0}")]
    KubernetesUnavailable(String),
    /// The Kubernetes API server refused or failed a call (403, 500, ...); its words.
    #[error("{0}")]
    Kubernetes(String),
    /// No consumer Job of this server has that name.
    #[error("no consumer Job {0:?} launched by this server")]
    JobNotFound(String),
}

impl Error {
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
            | Error::JobNotFound(_) => StatusCode::NOT_FOUND,
            Error::InvalidQueueName(_)
            | Error::InvalidParameter { .. }
            | Error::InvalidBody(_)
            | Error::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Error::LeaseExpired(_) => StatusCode::GONE,
            Error::ItemTooLarge { .. } | Error::BodyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::QueueFull(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::BackendUnavailable(_)
            | Error::ShuttingDown
            | Error::KubernetesUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
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
            Error::Unauthorized => "unauthorized",
            Error::RouteNotFound(_) => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::BackendUnavailable(_) => "backend_unavailable",
            Error::ShuttingDown => "shutting_down",
            Error::KubernetesUnavailable(_) => "kubernetes_unavailable",
            Error::Kubernetes(_) => "kubernetes_error",
            Error::JobNotFound(_) => "job_not_found",
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = self.code(), error = %self, "request failed");
        }
        let body = memq::ApiError {
            kind: "error".into(),
            code: self.code().into(),
            message: self.to_string(),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        match self {
            Error::QueueFull(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
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
