//! The HTTP face of the server: axum routes of API.md, auth, request metrics, JSON errors.
//!
//! Handlers parse and check input, call the store, and shape answers; they hold no queue logic.

mod auth;
pub mod batch;
pub(crate) mod dashboard;
mod docs;
pub(crate) mod extract;
mod jobs;
pub mod openapi;
mod ops;
mod queues;
pub mod routes;
mod wire;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use routes::{Access, Direct, Rule};

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
    /// The tokens accepted, with what each may do.
    pub tokens: Arc<crate::tokens::Tokens>,
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

/// The whole server: the routes of [`routes::table`] with JSON answers for unknown routes and
/// methods, and what every request passes on its way (see [`App::handle`]).
pub fn app(state: AppState) -> App {
    let (router, _, routes) = routes::table().into_parts();
    let mut paths: Vec<PathRules> = Vec::new();
    let mut table = matchit::Router::new();
    for route in routes {
        let index = match paths.iter().position(|p| p.pattern == route.path) {
            Some(index) => index,
            None => {
                table
                    .insert(route.path.as_str(), paths.len())
                    .expect("route patterns are unique and valid (axum took them)");
                paths.push(PathRules {
                    pattern: route.path,
                    methods: Vec::new(),
                });
                paths.len() - 1
            }
        };
        paths[index].methods.push((route.method, route.rule));
    }
    let router = router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state.clone());
    App(Arc::new(AppInner {
        state,
        router,
        table,
        paths,
    }))
}

/// The routes of one path pattern: its methods and their rules.
struct PathRules {
    pattern: String,
    methods: Vec<(Method, Rule)>,
}

impl PathRules {
    /// The rule of `method` (`HEAD` as `GET`, as the router serves it). A method the path does
    /// not serve (the router answers 405) needs the token unless every route of the path is open.
    fn rule(&self, method: &Method) -> Rule {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        match self.methods.iter().find(|(m, _)| m == method) {
            Some((_, rule)) => *rule,
            None if self.methods.iter().all(|(_, r)| r.access == Access::Open) => Rule::OPEN,
            None => Rule::TOKEN,
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
        let consumer = match self.route {
            Direct::Dequeue => Some(extract::Consumer::of(req.headers())),
            _ => None,
        };
        let body = req.into_body();
        let answer = match self.route {
            Direct::Enqueue => match extract::QueueName::checked(self.queue) {
                Ok(name) => queues::enqueue(State(state), name, params, body).await,
                Err(e) => Err(e),
            },
            Direct::Dequeue => match (
                extract::QueueName::checked(self.queue),
                consumer.expect("read for dequeues"),
            ) {
                (Ok(name), Ok(consumer)) => {
                    drop(body);
                    queues::dequeue(State(state), name, consumer, params).await
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
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

/// A path parameter, percent-decoded as axum's `Path` does; `None` when the route has none
/// or decoding fails (the router then answers as it would).
fn path_param(raw: Option<&str>) -> Option<String> {
    let raw = raw?;
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
    /// Path -> index in `paths`: the route's rules, and the metrics' `route` label.
    table: matchit::Router<usize>,
    paths: Vec<PathRules>,
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
        let mut queue = None;
        let mut subject = None;
        let (label, rule, direct) = match app.table.at(req.uri().path()) {
            Ok(found) => {
                let path = &app.paths[*found.value];
                let rule = path.rule(&method);
                // A queue name that does not decode is no name a glob covers (and a 400 after).
                queue = found
                    .params
                    .get("queue")
                    .map(|raw| path_param(Some(raw)).unwrap_or_default());
                if rule.audit.is_some() {
                    subject = queue
                        .clone()
                        .or_else(|| path_param(found.params.get("name")));
                }
                let direct = rule.direct.and_then(|route| {
                    Some(DirectCall {
                        route,
                        queue: queue.clone()?,
                        lease: match route {
                            Direct::Ack => path_param(found.params.get("lease"))?,
                            _ => String::new(),
                        },
                    })
                });
                (path.pattern.as_str(), rule, direct)
            }
            Err(_) => ("unmatched", Rule::TOKEN, None),
        };
        let verdict = auth::check(&app.state, rule, queue.as_deref(), req.headers());
        let mut req = req.map(Body::new);
        let answer = async {
            match &verdict {
                auth::Verdict::Open => app.within_time_limit(req, rule, direct).await,
                auth::Verdict::Granted(grant) => {
                    if direct.is_none() {
                        // For the handlers that say what the token may do (`/dashboard/session`).
                        req.extensions_mut().insert(grant.clone());
                    }
                    app.within_time_limit(req, rule, direct).await
                }
                auth::Verdict::AskForToken => {
                    auth::refused(&verdict, None, Some(app.route(req, None).await))
                }
                auth::Verdict::Refuse | auth::Verdict::Forbidden(..) => {
                    auth::refused(&verdict, queue.as_deref(), None)
                }
            }
        };
        // A long poll's idle wait is the client's choice, not the server's latency: it is
        // kept out of the request's time and recorded on its own.
        let (resp, waited) = if rule.long_poll {
            crate::store::timing_waits(answer).await
        } else {
            (answer.await, None)
        };
        let status = resp.status().as_u16();
        if let Some(action) = rule.audit {
            audit(action, subject.as_deref(), &verdict, status);
        }
        app.state
            .metrics
            .observe(&method, label, status, started.elapsed(), waited);
        resp
    }
}

/// One line of the audit trail (target `memq::audit`, at info, in the JSON log format too): the
/// action, its queue or Job, who asked (a token's name, never the token) and how it ended.
fn audit(action: &str, subject: Option<&str>, verdict: &auth::Verdict, status: u16) {
    let who = match verdict {
        auth::Verdict::Open => "anyone (no token set)",
        auth::Verdict::Granted(grant) | auth::Verdict::Forbidden(grant, _) => &grant.name,
        auth::Verdict::AskForToken | auth::Verdict::Refuse => "no valid token",
    };
    let outcome = match status {
        200..=299 => "done",
        401 | 403 => "refused",
        _ => "failed",
    };
    tracing::info!(
        target: "memq::audit",
        action,
        subject = subject.unwrap_or("-"),
        who,
        outcome,
        status,
        "audit"
    );
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
    async fn within_time_limit(
        &self,
        req: Request,
        rule: Rule,
        direct: Option<DirectCall>,
    ) -> Response {
        let mut limit = self.state.config.request_timeout;
        if rule.long_poll {
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

    fn rules(methods: &[(Method, Rule)]) -> PathRules {
        PathRules {
            pattern: "/p".into(),
            methods: methods.to_vec(),
        }
    }

    #[test]
    fn head_is_get_and_an_unserved_method_needs_the_token_unless_the_path_is_open() {
        let open = rules(&[(Method::GET, Rule::OPEN)]);
        assert_eq!(open.rule(&Method::HEAD), Rule::OPEN);
        assert_eq!(open.rule(&Method::POST), Rule::OPEN);
        let page = rules(&[(Method::GET, Rule::PUBLIC), (Method::PUT, Rule::TOKEN)]);
        assert_eq!(page.rule(&Method::HEAD), Rule::PUBLIC);
        assert_eq!(page.rule(&Method::PUT), Rule::TOKEN);
        assert_eq!(page.rule(&Method::PATCH), Rule::TOKEN);
    }

    #[test]
    fn path_parameters_are_percent_decoded_like_axum_does() {
        assert_eq!(path_param(Some("keygen")).as_deref(), Some("keygen"));
        assert_eq!(path_param(Some("key%2Dgen")).as_deref(), Some("key-gen"));
        assert_eq!(path_param(Some("%FF")), None);
    }
}
