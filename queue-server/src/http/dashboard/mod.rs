//! The browser dashboard's routes: the page at `/` with its script and style (embedded in the
//! binary, no third-party files), the token check, the live stats stream (server-sent events)
//! and the recent history behind the page's charts, all read from [`crate::dashboard`].
//!
//! The page steers queues through the queue API like any other client, with the same token.

pub(crate) mod page;
pub(crate) mod stream;

use axum::routing::get;

pub use page::is_asset;

use super::Routes;

/// Adds the dashboard's routes: the page, its assets, the token check, the stats stream and the
/// history.
pub fn routes(mut routes: Routes) -> Routes {
    routes = routes
        .route("/", get(page::index))
        .route("/dashboard/session", get(page::session))
        .route("/memq/server/stats/stream", get(stream::stats_stream))
        .route("/memq/server/stats/history", get(stream::stats_history));
    for asset in page::ASSETS {
        routes = routes.route(asset.path, get(move || page::serve_asset(asset)));
    }
    routes
}
