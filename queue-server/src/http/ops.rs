//! Operations outside the queue API: liveness, readiness, Prometheus metrics.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::Error;

/// Liveness
///
/// `GET /healthz`: the process is up and answering.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness
///
/// `GET /readyz`: the store can serve requests.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "The store can serve requests", body = String, content_type = "text/plain"),
        (status = 503, description = "Shutting down, or the data directory cannot be written", body = String, content_type = "text/plain"),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.store.is_ready().await {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Prometheus metrics
///
/// `GET /metrics`: the Prometheus text format (0.0.4), as Prometheus' own client libraries
/// answer a scrape that does not ask for more (`curl`, `promtool check metrics`); OpenMetrics
/// text when the `Accept` header asks for it, as Prometheus does.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus metrics: the Prometheus text format 0.0.4, or OpenMetrics text when the Accept header asks for application/openmetrics-text",
        content(
            (String = "text/plain; version=0.0.4; charset=utf-8"),
            (String = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        ))))]
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Error> {
    let stats = state.store.stats().await?;
    let memory = state.store.memory();
    state.metrics.set_long_polls(state.store.waiting_polls());
    let text = state
        .metrics
        .render(stats, memory)
        .map_err(|e| Error::BackendUnavailable(format!("cannot encode metrics: {e}")))?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if wants_openmetrics(accept) {
        return Ok((
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response());
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prometheus_text(&text),
    )
        .into_response())
}

/// Whether an `Accept` header asks for OpenMetrics (at a quality above 0), as a Prometheus
/// scrape does; anything else (none, `*/*`, `text/plain`) gets the Prometheus text format.
fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let openmetrics = parts
            .next()
            .is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"));
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        openmetrics && !refused
    })
}

/// OpenMetrics text as the Prometheus text format 0.0.4: a counter family is named with its
/// `_total` there, and there is no `# UNIT` or `# EOF` line.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_request_for_openmetrics_gets_it() {
        // What Prometheus 2.42 sends.
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(prometheus));
        assert!(wants_openmetrics("Application/OpenMetrics-Text"));
        for classic in [
            "",
            "*/*",
            "text/plain",
            "text/plain;version=0.0.4",
            "application/openmetrics-text;q=0, text/plain",
            "application/json",
        ] {
            assert!(!wants_openmetrics(classic), "{classic:?}");
        }
    }

    #[test]
    fn counters_are_renamed_for_the_prometheus_text_format() {
        let open = "# HELP memq_queue_acked Items acked\n# TYPE memq_queue_acked counter\n\
                    memq_queue_acked_total{queue=\"q\"} 3\n# HELP memq_queue_depth Ready\n\
                    # TYPE memq_queue_depth gauge\nmemq_queue_depth{queue=\"q\"} 1\n# EOF\n";
        let text = prometheus_text(open);
        assert_eq!(
            text,
            "# HELP memq_queue_acked_total Items acked\n# TYPE memq_queue_acked_total counter\n\
             memq_queue_acked_total{queue=\"q\"} 3\n# HELP memq_queue_depth Ready\n\
             # TYPE memq_queue_depth gauge\nmemq_queue_depth{queue=\"q\"} 1\n"
        );
    }
}
