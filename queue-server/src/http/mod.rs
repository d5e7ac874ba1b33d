//! The HTTP face of the server: axum routes of API.md, auth, request metrics, JSON errors.
//!
//! Handlers parse and check input, call the store, and shape answers; they hold no queue logic.

mod auth;
pub mod batch;
pub(crate) mod dashboard;
pub(crate) mod extract;
mod jobs;
pub mod openapi;
mod ops;
mod queues;
mod wire;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use tower::ServiceExt;

use crate::config::Config;
use crate::dashboard::Dashboard;
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
        .route("/memq/server/stats", get(queues::stats))
        .route(
            q,
            get(queues::get_queue)
                .put(queues::create_queue)
                .delete(queues::delete_queue),
        )
        .route(&format!("{q}/drain"), post(queues::drain))
        .route(&format!("{q}/pause"), post(queues::pause))
        .route(&format!("{q}/resume"), post(queues::resume))
        .route(&format!("{q}/enqueue"), post(queues::enqueue))
        .route(&format!("{q}/dequeue"), post(queues::dequeue))
        .route(&format!("{q}/ack"), post(queues::ack_batch))
        .route(&format!("{q}/leases/{{lease}}/ack"), post(queues::ack))
        .route(&format!("{q}/leases/{{lease}}/nack"), post(queues::nack))
        .route(
            &format!("{q}/leases/{{lease}}/extend"),
            post(queues::extend),
        )
        .route(
            &format!("{q}/dead"),
            get(queues::dead_letters).delete(queues::purge_dead),
        )
        .route(&format!("{q}/dead/requeue"), post(queues::requeue_dead))
        .route(&format!("{q}/messages"), get(queues::peek));
    dashboard::routes(routes)
        .route("/jobs", get(jobs::list_jobs).post(jobs::create_job))
        .route("/jobs/{name}", delete(jobs::delete_job))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::openapi_json))
}

/// The whole server: [`routes`] with JSON answers for unknown routes and methods, and what
/// every request passes on its way (see [`App::handle`]).
pub fn app(state: AppState) -> App {
    let routes = routes();
    let mut table = matchit::Router::new();
    for (i, path) in routes.paths.iter().enumerate() {
        table
            .insert(path.as_str(), i)
            .expect("route patterns are unique and valid (axum took them)");
    }
    let direct = routes.paths.iter().map(|p| Direct::of(p)).collect();
    let router = routes
        .router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    App(Arc::new(AppInner {
        state,
        router,
        table,
        patterns: routes.paths,
        direct,
    }))
}

/// The routes every work item passes (POST only), called without axum's router: its
/// dispatch (a clone of the route's boxed service, boxed futures per layer, the path
/// parameters into request extensions) costs as much as the handler. The handlers and their
/// extractors' checks are the same; anything else about these paths goes to the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direct {
    Enqueue,
    Dequeue,
    Ack,
}

impl Direct {
    /// The direct route of a route pattern, if it is one.
    fn of(pattern: &str) -> Option<Direct> {
        match pattern.strip_prefix("/memq/server/queues/{queue}") {
            Some("/enqueue") => Some(Direct::Enqueue),
            Some("/dequeue") => Some(Direct::Dequeue),
            Some("/leases/{lease}/ack") => Some(Direct::Ack),
            _ => None,
        }
    }
}

/// A request for a [`Direct`] route, with its path parameters.
struct DirectCall {
    route: Direct,
    queue: String,
    lease: String,
}

impl DirectCall {
    async fn serve(self, state: AppState, req: Request) -> Response {
        use axum::extract::State;
        // The request is taken apart before any wait (a long poll's future should hold no
        // headers), as axum's extractors do.
        let params = extract::Params::of(req.uri());
        let body = req.into_body();
        let answer = match self.route {
            Direct::Enqueue => match extract::QueueName::checked(self.queue) {
                Ok(name) => queues::enqueue(State(state), name, params, body).await,
                Err(e) => Err(e),
            },
            Direct::Dequeue => match extract::QueueName::checked(self.queue) {
                Ok(name) => {
                    drop(body);
                    queues::dequeue(State(state), name, params).await
                }
                Err(e) => Err(e),
            },
            Direct::Ack => match extract::LeasePath::checked(self.queue, self.lease) {
                Ok(path) => {
                    drop((body, params));
                    queues::ack(State(state), path).await
                }
                Err(e) => Err(e),
            },
        };
        answer.into_response()
    }
}

/// A path parameter, percent-decoded as axum's `Path` does; `None` when that fails (the
/// router then answers as it would).
fn path_param(raw: Option<&str>) -> Option<String> {
    let raw = raw.unwrap_or_default();
    if !raw.as_bytes().contains(&b'%') {
        return Some(raw.to_owned());
    }
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

/// The router and what runs around it. Cheap to clone.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

struct AppInner {
    state: AppState,
    router: Router,
    /// Path -> index in `patterns` and `direct`: the metrics' `route` label, and whether the
    /// route is served directly.
    table: matchit::Router<usize>,
    patterns: Vec<String>,
    direct: Vec<Option<Direct>>,
}

impl App {
    /// Answers one request: the token check, the time limit, the route, and the latency
    /// histogram (which also counts the 401s and 408s).
    ///
    /// This runs around the router rather than as an axum middleware layer: a layer wraps
    /// every route and costs a few allocations and clones per request, and this future is
    /// a plain one. It lives as long as a long poll does, so it holds little: the token check
    /// is a plain function, and the route label a `&str` into the route table.
    pub async fn handle<B>(self, req: axum::http::Request<B>) -> Response
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let app = &*self.0;
        let started = Instant::now();
        let method = req.method().clone();
        let (route, direct) = match app.table.at(req.uri().path()) {
            Ok(found) => {
                let index = *found.value;
                let direct = app.direct[index]
                    .filter(|_| method == axum::http::Method::POST)
                    .and_then(|route| {
                        Some(DirectCall {
                            route,
                            queue: path_param(found.params.get("queue"))?,
                            lease: match route {
                                Direct::Ack => path_param(found.params.get("lease"))?,
                                _ => String::new(),
                            },
                        })
                    });
                (app.patterns[index].as_str(), direct)
            }
            Err(_) => ("unmatched", None),
        };
        let verdict = auth::check(&app.state, &method, req.uri().path(), req.headers());
        let req = req.map(Body::new);
        let resp = match verdict {
            auth::Verdict::Refuse => auth::refused(verdict, None),
            auth::Verdict::Pass => app.within_time_limit(req, direct).await,
            auth::Verdict::AskForToken => auth::refused(verdict, Some(app.route(req, None).await)),
        };
        app.state
            .metrics
            .observe(&method, route, resp.status().as_u16(), started.elapsed());
        resp
    }
}

impl AppInner {
    async fn route(&self, req: Request, direct: Option<DirectCall>) -> Response {
        if let Some(call) = direct {
            return call.serve(self.state.clone(), req).await;
        }
        match self.router.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }

    /// Answers 408 when a request takes longer than `--request-timeout` (reading its body
    /// included), or a long poll longer than that plus its `wait`.
    async fn within_time_limit(&self, req: Request, direct: Option<DirectCall>) -> Response {
        let mut limit = self.state.config.request_timeout;
        if req.uri().path().ends_with("/dequeue") {
            // The handler refuses a `wait` over its maximum; the timeout only needs a bound.
            let wait = req
                .uri()
                .query()
                .into_iter()
                .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
                .filter(|(k, _)| k == "wait")
                .last()
                .and_then(|(_, v)| memq::duration::parse_duration(&v).ok())
                .unwrap_or_default();
            limit += wait.min(memq::limits::MAX_WAIT);
        }
        // The inner future is polled first: a request answered at once never arms the timer.
        match tokio::time::timeout(limit, self.route(req, direct)).await {
            Ok(resp) => resp,
            Err(_) => Error::RequestTimeout { after: limit }.into_response(),
        }
    }
}

async fn not_found(req: Request) -> Error {
    Error::RouteNotFound(format!("{} {}", req.method(), req.uri().path()))
}

async fn method_not_allowed() -> Error {
    Error::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_dequeue_and_ack_are_served_directly_and_nothing_else() {
        let routes = routes();
        let direct: Vec<(&str, Direct)> = routes
            .paths()
            .iter()
            .filter_map(|p| Some((p.as_str(), Direct::of(p)?)))
            .collect();
        assert_eq!(
            direct,
            [
                ("/memq/server/queues/{queue}/enqueue", Direct::Enqueue),
                ("/memq/server/queues/{queue}/dequeue", Direct::Dequeue),
                (
                    "/memq/server/queues/{queue}/leases/{lease}/ack",
                    Direct::Ack
                ),
            ]
        );
    }

    #[test]
    fn path_parameters_are_percent_decoded_like_axum_does() {
        assert_eq!(path_param(Some("keygen")).as_deref(), Some("keygen"));
        assert_eq!(path_param(Some("key%2Dgen")).as_deref(), Some("key-gen"));
        assert_eq!(path_param(Some("%FF")), None);
    }
}
