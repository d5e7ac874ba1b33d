//! The route table: every route of the server, declared once.
//!
//! A route's method and path come from its handler's `#[utoipa::path]` attribute (which also
//! describes it in `/openapi.json`); the table adds who may call it ([`Access`]), whether it
//! takes the direct fast path ([`Direct`]) and whether it may long-poll. The router, the token
//! check, the direct dispatch, the metrics' `route` label, the request time limit and the
//! API description are all derived from it.

use axum::Router;
use axum::http::Method;
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as Document;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use super::{AppState, dashboard, docs, jobs, openapi, ops, queues};
use crate::tokens::Role;

/// Who may call a route when the server has tokens (`--token`, `--token-file`, `--tokens-file`);
/// with [`Access::PublicRead`], [`Access::Page`] and [`Access::Token`], the token's role must
/// grant the route's [`Rule::role`], and cover its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Never needs the token: probes, the metrics scrape, the API description and the
    /// dashboard's script, style and icon (code without data, which a browser loads without an
    /// `Authorization` header).
    Open,
    /// The dashboard page (code without data). A browser cannot send the token with a page
    /// load, so without the token the page comes as a 401 and asks for it; `--public-reads`
    /// opens it.
    Page,
    /// Figures without item bodies (stats, a queue object, the dashboard's stream and history):
    /// `--public-reads` opens them, else the token.
    PublicRead,
    /// The token, always.
    Token,
}

/// The routes every work item passes, called without axum's router (see `App::handle`): the
/// handlers and their extractors' checks are the same, the dispatch costs less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direct {
    /// `POST .../enqueue`.
    Enqueue,
    /// `POST .../dequeue`.
    Dequeue,
    /// `POST .../leases/{lease}/ack`.
    Ack,
}

/// How one route is served, beside its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Who may call it.
    pub access: Access,
    /// The least role a token needs for it (unless [`Access::Open`]).
    pub role: Role,
    /// Served without axum's router.
    pub direct: Option<Direct>,
    /// Its `?wait=` (a long poll) extends its time limit beyond `--request-timeout`.
    pub long_poll: bool,
    /// An administrative action, logged once per request with who asked and how it ended
    /// (the audit trail): its name.
    pub audit: Option<&'static str>,
    /// Described in `/openapi.json`: a part of the API, not the files of the docs page.
    pub documented: bool,
}

impl Rule {
    /// [`Access::Open`].
    pub const OPEN: Rule = Rule::new(Access::Open);
    /// [`Access::Page`].
    pub const PAGE: Rule = Rule::new(Access::Page);
    /// [`Access::PublicRead`].
    pub const PUBLIC: Rule = Rule::new(Access::PublicRead);
    /// [`Access::Token`], for any role.
    pub const TOKEN: Rule = Rule::new(Access::Token);

    const fn new(access: Access) -> Self {
        Rule {
            access,
            role: Role::Reader,
            direct: None,
            long_poll: false,
            audit: None,
            documented: true,
        }
    }

    const fn role(self, role: Role) -> Self {
        Rule { role, ..self }
    }

    const fn direct(self, direct: Direct) -> Self {
        Rule {
            direct: Some(direct),
            ..self
        }
    }

    const fn long_poll(self) -> Self {
        Rule {
            long_poll: true,
            ..self
        }
    }

    const fn audit(self, action: &'static str) -> Self {
        Rule {
            audit: Some(action),
            ..self
        }
    }

    const fn undocumented(self) -> Self {
        Rule {
            documented: false,
            ..self
        }
    }
}

/// One route: a method on a path pattern, and its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The method.
    pub method: Method,
    /// The path pattern, as the router and the API description write it (`/x/{queue}`).
    pub path: String,
    /// How it is served.
    pub rule: Rule,
}

/// The routes with their handlers and description, as [`table`] adds them.
pub struct Table {
    router: OpenApiRouter<AppState>,
    routes: Vec<Route>,
}

impl Table {
    /// Adds the route of a handler (from [`routes!`]), served by `rule`.
    fn add(mut self, rule: Rule, handler: UtoipaMethodRouter<AppState>) -> Self {
        for (path, item) in &handler.1.paths {
            for (method, _) in operations(item) {
                self.routes.push(Route {
                    method,
                    path: path.clone(),
                    rule,
                });
            }
        }
        self.router = self.router.routes(handler);
        self
    }

    /// Every route, in the order added.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The router, the API description (with the errors and security each route's rule
    /// implies, see [`openapi::complete`]) and the routes.
    pub fn into_parts(self) -> (Router<AppState>, Document, Vec<Route>) {
        let (router, mut doc) = self.router.split_for_parts();
        openapi::complete(&mut doc, &self.routes);
        (router, doc, self.routes)
    }
}

/// The operations of a path item, with their methods.
pub fn operations(item: &PathItem) -> impl Iterator<Item = (Method, &Operation)> {
    [
        (Method::GET, &item.get),
        (Method::PUT, &item.put),
        (Method::POST, &item.post),
        (Method::DELETE, &item.delete),
        (Method::PATCH, &item.patch),
        (Method::HEAD, &item.head),
        (Method::OPTIONS, &item.options),
        (Method::TRACE, &item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| Some((method, op.as_ref()?)))
}

/// The operations of a path item, with their methods, to change.
pub fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = (Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::PATCH, &mut item.patch),
        (Method::HEAD, &mut item.head),
        (Method::OPTIONS, &mut item.options),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| Some((method, op.as_mut()?)))
}

/// Every route of the server: the queue API under `/memq/server`, the dashboard, Jobs and
/// operations. A new route is one line here (and its handler's `#[utoipa::path]`).
pub fn table() -> Table {
    use dashboard::{page, stream};
    const OPEN: Rule = Rule::OPEN;
    const PAGE: Rule = Rule::PAGE;
    const PUBLIC: Rule = Rule::PUBLIC;
    const READ: Rule = Rule::TOKEN;
    const ADMIN: Rule = Rule::TOKEN.role(Role::Admin);
    const PRODUCE: Rule = Rule::TOKEN.role(Role::Producer);
    const CONSUME: Rule = Rule::TOKEN.role(Role::Consumer);
    Table {
        router: OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()),
        routes: Vec::new(),
    }
    .add(PUBLIC, routes!(queues::stats))
    .add(PUBLIC, routes!(queues::get_queue))
    .add(ADMIN.audit("queue.create"), routes!(queues::create_queue))
    .add(ADMIN.audit("queue.delete"), routes!(queues::delete_queue))
    .add(ADMIN.audit("queue.drain"), routes!(queues::drain))
    .add(ADMIN.audit("queue.pause"), routes!(queues::pause))
    .add(ADMIN.audit("queue.resume"), routes!(queues::resume))
    .add(PRODUCE.direct(Direct::Enqueue), routes!(queues::enqueue))
    .add(PRODUCE, routes!(queues::enqueue_batch))
    .add(
        CONSUME.direct(Direct::Dequeue).long_poll(),
        routes!(queues::dequeue),
    )
    .add(CONSUME, routes!(queues::ack_batch))
    .add(CONSUME.direct(Direct::Ack), routes!(queues::ack))
    .add(CONSUME, routes!(queues::nack))
    .add(CONSUME, routes!(queues::extend))
    .add(CONSUME, routes!(queues::nack_batch))
    .add(CONSUME, routes!(queues::extend_batch))
    .add(CONSUME, routes!(queues::release))
    .add(READ, routes!(queues::dead_letters))
    .add(ADMIN.audit("dead.purge"), routes!(queues::purge_dead))
    .add(ADMIN.audit("dead.requeue"), routes!(queues::requeue_dead))
    .add(READ, routes!(queues::peek))
    .add(PUBLIC, routes!(queues::leases))
    .add(READ, routes!(queues::find_item))
    .add(READ, routes!(queues::find_item_by_key))
    .add(PAGE, routes!(page::index))
    .add(READ, routes!(page::session))
    .add(OPEN, routes!(page::app_js))
    .add(OPEN, routes!(page::app_css))
    .add(OPEN, routes!(page::icon_svg))
    .add(PUBLIC, routes!(stream::stats_stream))
    .add(PUBLIC, routes!(stream::stats_history))
    .add(ADMIN, routes!(jobs::list_jobs))
    .add(ADMIN.audit("job.create"), routes!(jobs::create_job))
    .add(ADMIN.audit("job.delete"), routes!(jobs::delete_job))
    .add(OPEN, routes!(ops::healthz))
    .add(OPEN, routes!(ops::readyz))
    .add(OPEN, routes!(ops::metrics))
    .add(OPEN, routes!(openapi::openapi_json))
    // The docs page is how to read the description, not a part of it.
    .add(OPEN.undocumented(), routes!(docs::docs))
    .add(OPEN.undocumented(), routes!(docs::docs_slash))
    .add(OPEN.undocumented(), routes!(docs::docs_file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pick: impl Fn(&Rule) -> bool) -> Vec<String> {
        table()
            .routes()
            .iter()
            .filter(|r| pick(&r.rule))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }

    #[test]
    fn enqueue_dequeue_and_ack_are_served_directly_and_nothing_else() {
        let direct: Vec<(String, Direct)> = table()
            .routes()
            .iter()
            .filter_map(|r| Some((format!("{} {}", r.method, r.path), r.rule.direct?)))
            .collect();
        assert_eq!(
            direct,
            [
                (
                    "POST /memq/server/queues/{queue}/enqueue".to_string(),
                    Direct::Enqueue
                ),
                (
                    "POST /memq/server/queues/{queue}/dequeue".to_string(),
                    Direct::Dequeue
                ),
                (
                    "POST /memq/server/queues/{queue}/leases/{lease}/ack".to_string(),
                    Direct::Ack
                ),
            ]
        );
        assert_eq!(
            with(|r| r.long_poll),
            ["POST /memq/server/queues/{queue}/dequeue"]
        );
    }

    /// What a request without the token may reach: a change here changes who can read what.
    #[test]
    fn only_probes_metrics_the_description_and_page_assets_are_open() {
        assert_eq!(
            with(|r| r.access == Access::Open),
            [
                "GET /dashboard/app.js",
                "GET /dashboard/app.css",
                "GET /dashboard/icon.svg",
                "GET /healthz",
                "GET /readyz",
                "GET /metrics",
                "GET /openapi.json",
                "GET /docs",
                "GET /docs/",
                "GET /docs/{file}",
            ]
        );
        assert_eq!(with(|r| r.access == Access::Page), ["GET /"]);
        assert_eq!(
            with(|r| r.access == Access::PublicRead),
            [
                "GET /memq/server/stats",
                "GET /memq/server/queues/{queue}",
                "GET /memq/server/queues/{queue}/leases",
                "GET /memq/server/stats/stream",
                "GET /memq/server/stats/history",
            ]
        );
    }

    /// The audit trail covers every change to a queue's life or config, the dead letters as a
    /// whole, and Jobs; never the work routes (enqueue, dequeue, acks) nor reads.
    #[test]
    fn administrative_actions_and_only_those_are_audited() {
        let audited: Vec<String> = table()
            .routes()
            .iter()
            .filter_map(|r| Some(format!("{} {} {}", r.rule.audit?, r.method, r.path)))
            .collect();
        assert_eq!(
            audited,
            [
                "queue.create PUT /memq/server/queues/{queue}",
                "queue.delete DELETE /memq/server/queues/{queue}",
                "queue.drain POST /memq/server/queues/{queue}/drain",
                "queue.pause POST /memq/server/queues/{queue}/pause",
                "queue.resume POST /memq/server/queues/{queue}/resume",
                "dead.purge DELETE /memq/server/queues/{queue}/dead",
                "dead.requeue POST /memq/server/queues/{queue}/dead/requeue",
                "job.create POST /jobs",
                "job.delete DELETE /jobs/{name}",
            ]
        );
    }

    #[test]
    fn each_method_and_path_is_declared_once() {
        let mut seen = std::collections::HashSet::new();
        for r in table().routes() {
            assert!(seen.insert((r.method.clone(), r.path.clone())), "{r:?}");
        }
    }
}
