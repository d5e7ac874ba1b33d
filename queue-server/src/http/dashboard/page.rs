//! The page and its assets, compiled into the binary so the dashboard works offline.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use utoipa::openapi::schema::Object;

use crate::http::AppState;
use crate::tokens::{Grant, Role};

/// One embedded file. The page's script, style and icon hold no data, so they are served
/// without the token (a browser cannot add an `Authorization` header to `<script src>`).
struct Asset {
    content_type: &'static str,
    body: &'static str,
}

impl Asset {
    fn serve(&self) -> Response {
        (headers(self.content_type), self.body).into_response()
    }
}

const INDEX: &str = include_str!("assets/index.html");

/// Only our own files, no inline script or style: whatever a queue item contains, the page
/// shows it as text and never runs it.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn headers(content_type: &'static str) -> [(header::HeaderName, HeaderValue); 4] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        // Small files; a server upgrade must show at once.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ]
}

fn auth_mode(state: &AppState) -> &'static str {
    match (state.tokens.enabled(), state.config.public_reads) {
        (false, _) => "open",
        (true, false) => "token",
        (true, true) => "public-reads",
    }
}

/// The dashboard
///
/// `GET /`: the page, told how the server guards its API (`open`, `token`, `public-reads`) so
/// it knows whether to ask for the token and whether it may offer changes, and whether it has a
/// Job launcher (`on`, `off`), so that it asks for `/jobs` only when there is one.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses(
        (status = 200, description = "The dashboard page", body = String, content_type = "text/html; charset=utf-8"),
        (status = 401, description = "The same page, which then asks for the token (with --token)", body = String,
            content_type = "text/html; charset=utf-8", headers(("www-authenticate" = String))),
    ))]
pub async fn index(State(state): State<AppState>) -> Response {
    let jobs = match state.jobs {
        crate::kube::Jobs::Ready(_) => "on",
        crate::kube::Jobs::Unavailable(_) => "off",
    };
    let html = INDEX
        .replace("{{auth}}", auth_mode(&state))
        .replace("{{jobs}}", jobs);
    (
        headers("text/html; charset=utf-8"),
        [(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        )],
        html,
    )
        .into_response()
}

/// The dashboard's session
///
/// `GET /dashboard/session`: changes nothing and needs a token whenever tokens are set (also
/// with `--public-reads`), so the page checks a token with it before keeping it, and learns
/// what the token may do (its role and queues) to offer only that.
#[utoipa::path(get, path = "/dashboard/session", tag = "dashboard",
    responses((status = 200, description = "How the server guards its API and what this token may do", body = Session)))]
pub async fn session(
    State(state): State<AppState>,
    grant: Option<Extension<Arc<Grant>>>,
) -> Json<serde_json::Value> {
    // No token needed: anyone may do anything.
    let (name, role, queues) = match &grant {
        Some(Extension(grant)) => (Some(&*grant.name), grant.role, grant.queues.as_str()),
        None => (None, Role::Admin, "*"),
    };
    Json(serde_json::json!({
        "kind": "session",
        "auth": auth_mode(&state),
        "token": name,
        "role": role.as_str(),
        "queues": queues,
        "may": {
            "read": true,
            "enqueue": role.grants(Role::Producer),
            "consume": role.grants(Role::Consumer),
            "admin": role.grants(Role::Admin),
            "jobs": role.grants(Role::Admin) && queues == "*",
        },
    }))
}

/// Answer of `GET /dashboard/session` (for the API description).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Session {
    #[schema(schema_with = session_kind)]
    kind: String,
    /// `open` (no token), `token`, or `public-reads`.
    #[schema(schema_with = session_auth)]
    auth: String,
    /// The token's name (`the admin token` for `--token`), `null` when no token is needed.
    token: Option<String>,
    /// The token's role (`admin` when no token is needed).
    #[schema(schema_with = session_role)]
    role: String,
    /// The queues it covers, as a glob (`*` for all).
    queues: String,
    /// What it may do, on the queues it covers.
    may: SessionMay,
}

fn session_kind() -> Object {
    memq::schema::constant("session")
}

fn session_auth() -> Object {
    memq::schema::one_of(&["open", "token", "public-reads"])
}

fn session_role() -> Object {
    memq::schema::one_of(&Role::ALL.map(Role::as_str))
}

/// What a token may do (`GET /dashboard/session`).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SessionMay {
    /// Stats, queue figures, leases, items, dead letters.
    read: bool,
    /// Enqueue.
    enqueue: bool,
    /// Dequeue, ack, nack, extend, release.
    consume: bool,
    /// Create, configure, delete, drain, pause, resume queues; requeue and purge dead letters.
    admin: bool,
    /// List, launch and delete consumer Jobs.
    jobs: bool,
}

/// The dashboard's script
///
/// `GET /dashboard/app.js`: the page's code, without data.
#[utoipa::path(get, path = "/dashboard/app.js", tag = "dashboard",
    responses((status = 200, description = "The page's script", body = String, content_type = "text/javascript; charset=utf-8")))]
pub async fn app_js() -> Response {
    Asset {
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("assets/app.js"),
    }
    .serve()
}

/// The dashboard's style
///
/// `GET /dashboard/app.css`: the page's style.
#[utoipa::path(get, path = "/dashboard/app.css", tag = "dashboard",
    responses((status = 200, description = "The page's style", body = String, content_type = "text/css; charset=utf-8")))]
pub async fn app_css() -> Response {
    Asset {
        content_type: "text/css; charset=utf-8",
        body: include_str!("assets/app.css"),
    }
    .serve()
}

/// The dashboard's icon
///
/// `GET /dashboard/icon.svg`: the page's icon.
#[utoipa::path(get, path = "/dashboard/icon.svg", tag = "dashboard",
    responses((status = 200, description = "The page's icon", body = String, content_type = "image/svg+xml")))]
pub async fn icon_svg() -> Response {
    Asset {
        content_type: "image/svg+xml",
        body: include_str!("assets/icon.svg"),
    }
    .serve()
}
