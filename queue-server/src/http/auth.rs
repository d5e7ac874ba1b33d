//! Bearer-token check (`--token`, `--token-file`), compared in constant time.
//!
//! Both tokens are hashed (SHA-256) before the comparison, so that neither the time taken nor
//! an early exit on a length mismatch tells anything about the token's length or prefix.

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::error::Error;

/// Paths that never need the token: probes, the metrics scrape, the API description (the
/// contract, no data) and the dashboard's script, style and icon (code without data, which a browser loads without an `Authorization` header).
fn always_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
        || super::dashboard::is_asset(path)
}

/// Reads that `--public-reads` opens: the dashboard, stats and queue objects (not item bodies).
fn public_read(method: &Method, path: &str) -> bool {
    if method != Method::GET {
        return false;
    }
    if matches!(
        path,
        "/" | "/memq/server/stats" | "/memq/server/stats/stream" | "/memq/server/stats/history"
    ) {
        return true;
    }
    path.strip_prefix("/memq/server/queues/")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// What the token check says about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No token set, an open path, or the right token: serve it.
    Pass,
    /// The dashboard page without the token: serve it, as a 401 that asks for the token.
    AskForToken,
    /// 401.
    Refuse,
}

/// Checks `Authorization: Bearer` when a token is set. A plain function rather than a
/// middleware of its own: a long poll holds its middleware futures for its whole wait.
pub fn check(state: &AppState, method: &Method, path: &str, headers: &HeaderMap) -> Verdict {
    let Some(token) = state.config.token.as_ref() else {
        return Verdict::Pass;
    };
    if always_open(path) || (state.config.public_reads && public_read(method, path)) {
        return Verdict::Pass;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if same_token(given, token.expose().as_bytes()) {
        Verdict::Pass
    } else if method == Method::GET && path == "/" {
        // A browser cannot send the token with a page load, so the dashboard page (code without
        // data) comes with the 401 and asks for the token; what it shows is fetched with it.
        Verdict::AskForToken
    } else {
        Verdict::Refuse
    }
}

/// The answer to a request the check refused, or the page served with [`Verdict::AskForToken`].
pub fn refused(verdict: Verdict, page: Option<Response>) -> Response {
    match (verdict, page) {
        (Verdict::AskForToken, Some(mut resp)) => {
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
        _ => Error::Unauthorized.into_response(),
    }
}

/// Constant-time equality of two tokens of any lengths.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    let (a, b) = (digest(&SHA256, given), digest(&SHA256, expected));
    bool::from(a.as_ref().ct_eq(b.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_whatever_their_length() {
        assert!(same_token(b"s3cret", b"s3cret"));
        assert!(!same_token(b"s3cre", b"s3cret"));
        assert!(!same_token(b"s3cretX", b"s3cret"));
        assert!(!same_token(b"", b"s3cret"));
        assert!(!same_token(b"S3cret", b"s3cret"));
    }

    #[test]
    fn public_reads_cover_stats_and_queue_objects_only() {
        assert!(public_read(&Method::GET, "/memq/server/stats"));
        assert!(public_read(&Method::GET, "/memq/server/queues/keygen"));
        assert!(!public_read(
            &Method::GET,
            "/memq/server/queues/keygen/messages"
        ));
        assert!(!public_read(
            &Method::GET,
            "/memq/server/queues/keygen/dead"
        ));
        assert!(!public_read(&Method::POST, "/memq/server/stats"));
        assert!(!public_read(&Method::PUT, "/memq/server/queues/keygen"));
    }

    #[test]
    fn public_reads_cover_the_dashboard_and_its_streams() {
        for path in [
            "/",
            "/memq/server/stats/stream",
            "/memq/server/stats/history",
        ] {
            assert!(public_read(&Method::GET, path), "{path}");
        }
        assert!(always_open("/dashboard/app.js"));
        assert!(!always_open("/dashboard/other"));
        assert!(!always_open("/"));
    }
}
