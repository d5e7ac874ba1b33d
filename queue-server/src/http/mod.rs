//! The HTTP face of the server: axum routes of API.md, auth, request metrics, JSON errors.
//!
//! Handlers parse and check input, call the store, and shape answers; they hold no queue logic.

mod auth;
pub mod batch;
pub(crate) mod extract;
mod jobs;
mod memq;
use memq as memq_routes;
pub mod openapi;
mod ops;
mod wire;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};

use crate::config::Config;
use crate::dashboard::{self, Dashboard};
use crate::error::Error;
use crate::kube::Jobs;
use crate::metrics::Metrics;
use crate::store::Store;

/// What every handler can reach: [`Shared`] behind one reference count. axum clones the state
/// for every request and every layer it passes, so a clone must cost no more than that.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
pub struct Shared {
    /// The queues.
    pub store: Store,
    /// The server's settings.
    pub config: Arc<Config>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// The dashboard's history and live stats.
    pub dashboard: Dashboard,
    /// Consumer Jobs through the Kubernetes API, or why not.
    pub jobs: Jobs,
}

impl AppState {
    /// The state of one server.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The routes as they are added: the router, and the list of its paths beside it, so that a
/// test can hold the list against the API description (`/openapi.json`). Every route is added
/// through [`Routes::route`]; a route added any other way would escape that check.
pub struct Routes {
    router: Router<AppState>,
    paths: Vec<String>,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            paths: Vec::new(),
        }
    }

    /// Serves `path` with `methods`, and lists it.
    pub fn route(mut self, path: &str, methods: MethodRouter<AppState>) -> Self {
        self.paths.push(path.to_string());
        self.router = self.router.route(path, methods);
        self
    }

    /// Every path served, in the order added.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }
}

/// Every route of the server: queue API under `/memq/server`, operations, Jobs and the
/// dashboard at the root.
pub fn routes() -> Routes {
    let q = "/memq/server/queues/{queue}";
    let routes = Routes::new()
        .route("/memq/server/stats", get(memq::stats))
        .route(
            q,
            get(memq::get_queue)
                .put(memq::create_queue)
                .delete(memq::delete_queue),
        )
        .route(&format!("{q}/drain"), post(memq::drain))
        .route(&format!("{q}/pause"), post(memq::pause))
        .route(&format!("{q}/resume"), post(memq::resume))
        .route(&format!("{q}/enqueue"), post(memq::enqueue))
        .route(&format!("{q}/dequeue"), post(memq::dequeue))
        .route(&format!("{q}/ack"), post(memq::ack_batch))
        .route(&format!("{q}/leases/{{lease}}/ack"), post(memq::ack))
        .route(&format!("{q}/leases/{{lease}}/nack"), post(memq::nack))
        .route(&format!("{q}/leases/{{lease}}/extend"), post(memq::extend))
        .route(
            &format!("{q}/dead"),
            get(memq::dead_letters).delete(memq::purge_dead),
        )
        .route(&format!("{q}/dead/requeue"), post(memq::requeue_dead))
        .route(&format!("{q}/messages"), get(memq::peek));
    dashboard::routes(routes)
        .route("/jobs", get(jobs::list_jobs).post(jobs::create_job))
        .route("/jobs/{name}", delete(jobs::delete_job))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
}

/// The whole router: [`routes`] with JSON answers for unknown routes and methods, the token
/// check, the time limit and request metrics.
pub fn app(state: AppState) -> Router {
    routes()
        .router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), front_door))
        .with_state(state)
}

async fn not_found(req: Request) -> Error {
    Error::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

/// What every request passes on its way in: the token check, the time limit and the latency
/// histogram (which also counts the 401s and 408s). One layer rather than three: each axum
/// middleware layer costs some allocations and clones per request.
async fn front_door(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    // The route pattern lives in an Arc<str>; holding it costs no copy.
    let route = req.extensions().get::<MatchedPath>().cloned();
    // The token check is a plain function, not a future around the inner one: this future
    // lives as long as a long poll does, so it should hold little.
    let verdict = auth::check(&state, &req);
    let resp = match verdict {
        auth::Verdict::Refuse => auth::refused(verdict, None),
        auth::Verdict::Pass => within_time_limit(&state, req, next).await,
        auth::Verdict::AskForToken => auth::refused(verdict, Some(next.run(req).await)),
    };
    state.metrics.observe(
        &method,
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        resp.status().as_u16(),
        started.elapsed(),
    );
    resp
}

/// Answers 408 when a request takes longer than `--request-timeout` (reading its body
/// included), or a long poll longer than that plus its `wait`.
async fn within_time_limit(state: &AppState, req: Request, next: Next) -> Response {
    let mut limit = state.config.request_timeout;
    if req.uri().path().ends_with("/dequeue") {
        // The handler refuses a `wait` over its maximum; the timeout only needs a bound.
        let wait = req
            .uri()
            .query()
            .into_iter()
            .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
            .filter(|(k, _)| k == "wait")
            .last()
            .and_then(|(_, v)| ::memq::duration::parse_duration(&v).ok())
            .unwrap_or_default();
        limit += wait.min(memq_routes::MAX_WAIT);
    }
    // The inner future is polled first: a request answered at once never arms the timer.
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => Error::RequestTimeout { after: limit }.into_response(),
    }
}
