//! The bearer-token check of each request, by its route's [`Rule`]: is the token known (401
//! if not), does its role grant the route and does it cover the route's queue (403 if not).
//! The tokens themselves, and their constant-time comparison, are in [`crate::tokens`].

use std::sync::Arc;

use axum::Extension;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::routes::{Access, Rule};
use crate::error::Error;
use crate::tokens::{Grant, Role};

/// What the token check says about a request.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// No tokens configured, an open route, or `--public-reads` opens it: serve it.
    Open,
    /// A known token whose role and queues allow the route: serve it.
    Granted(Arc<Grant>),
    /// The dashboard page without a valid token: serve it, as a 401 that asks for the token.
    AskForToken,
    /// No token, or an unknown one: 401.
    Refuse,
    /// A known token that may not do this: 403, saying what it would need.
    Forbidden(Arc<Grant>, Need),
}

/// What a refused token lacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A role that grants the route.
    Role(Role),
    /// The route's queue is outside the token's glob.
    Queue,
    /// The route acts on no single queue (`/jobs`) and needs a token for every queue (`*`).
    AllQueues,
}

/// Checks `Authorization: Bearer` by the route's rule; `queue` is the route's `{queue}`. A
/// plain function rather than a middleware of its own: a long poll holds its middleware
/// futures for its whole wait.
pub fn check(state: &AppState, rule: Rule, queue: Option<&str>, headers: &HeaderMap) -> Verdict {
    if !state.tokens.enabled() {
        return Verdict::Open;
    }
    match rule.access {
        Access::Open => return Verdict::Open,
        Access::Page | Access::PublicRead if state.config.public_reads => return Verdict::Open,
        _ => {}
    }
    // No token is no token, whatever digest a tokens file holds.
    let grant = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .filter(|token| !token.is_empty())
        .and_then(|token| state.tokens.find(token));
    let Some(grant) = grant else {
        return match rule.access {
            Access::Page => Verdict::AskForToken,
            _ => Verdict::Refuse,
        };
    };
    let need = if !grant.role.grants(rule.role) {
        Some(Need::Role(rule.role))
    } else {
        match queue {
            Some(queue) if !grant.queues.covers(queue) => Some(Need::Queue),
            None if rule.role == Role::Admin && !grant.queues.is_all() => Some(Need::AllQueues),
            _ => None,
        }
    };
    match need {
        Some(need) => Verdict::Forbidden(grant, need),
        None => Verdict::Granted(grant),
    }
}

/// The answer to a request the check refused, or the page served with [`Verdict::AskForToken`].
pub fn refused(verdict: &Verdict, queue: Option<&str>, page: Option<Response>) -> Response {
    match (verdict, page) {
        (Verdict::AskForToken, Some(mut resp)) => {
            *resp.status_mut() = StatusCode::UNAUTHORIZED;
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
        (Verdict::Forbidden(grant, need), _) => {
            Error::Forbidden(forbidden_message(grant, *need, queue)).into_response()
        }
        _ => Error::Unauthorized.into_response(),
    }
}

/// Says what the token is and what it would need; names the token, never shows it.
fn forbidden_message(grant: &Grant, need: Need, queue: Option<&str>) -> String {
    let what = format!(
        "token {:?} is a {} token for queues {:?}",
        grant.name,
        grant.role.as_str(),
        grant.queues.as_str()
    );
    match need {
        Need::Role(role) => format!(
            "this needs a{} {} token: {what}",
            if role == Role::Admin { "n" } else { "" },
            role.as_str()
        ),
        Need::Queue => format!(
            "{what}, which does not cover queue {:?}",
            queue.unwrap_or_default()
        ),
        Need::AllQueues => format!("this needs an admin token for every queue (`*`): {what}"),
    }
}

/// The queues a request may see on the routes that show many (`/stats`, the stream, the
/// history): those of its token's glob, or every queue with no token to go by (an open server,
/// `--public-reads`) or a token for `*`. A handler takes it as an extractor.
pub type Seen = Option<Extension<Arc<Grant>>>;

/// The glob `seen` narrows to; `None` when it shows every queue.
pub fn narrowed(seen: &Seen) -> Option<&Arc<Grant>> {
    seen.as_ref()
        .map(|Extension(grant)| grant)
        .filter(|grant| !grant.queues.is_all())
}
