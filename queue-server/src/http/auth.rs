//! Bearer-token check (`--token`, `--token-file`), compared in constant time.
//!
//! Both tokens are hashed (SHA-256) before the comparison, so that neither the time taken nor
//! an early exit on a length mismatch tells anything about the token's length or prefix.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

use super::AppState;
use super::routes::Access;
use crate::error::Error;

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

/// Checks `Authorization: Bearer` when a token is set, by the route's [`Access`]. A plain
/// function rather than a middleware of its own: a long poll holds its middleware futures for
/// its whole wait.
pub fn check(state: &AppState, access: Access, headers: &HeaderMap) -> Verdict {
    let Some(token) = state.config.token.as_ref() else {
        return Verdict::Pass;
    };
    match access {
        Access::Open => return Verdict::Pass,
        Access::Page | Access::PublicRead if state.config.public_reads => return Verdict::Pass,
        _ => {}
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    if same_token(given, token.expose().as_bytes()) {
        Verdict::Pass
    } else if access == Access::Page {
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
}
