//! `GET /docs`: interactive API docs (Swagger UI) for `/openapi.json`, compiled into the binary
//! so they work offline. With `--token`, "Authorize" takes the token (kept by the page only,
//! never in the browser's storage, so it is gone with a reload) and "Try it out" sends it.

use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use utoipa_swagger_ui::Config;

use crate::error::Error;

/// The page's settings (its `swagger-initializer.js`): our own description, no validator badge
/// (it would load from another origin). Not `persistAuthorization`: Swagger UI would keep the
/// token in `localStorage`, for every page of the origin to read, after the browser closed.
static CONFIG: LazyLock<Arc<Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        Config::new(["/openapi.json"])
            .validator_url("none")
            .try_it_out_enabled(true)
            .display_request_duration(true),
    )
});

/// Swagger UI's own files only; style attributes are how it draws, so inline style is allowed,
/// inline script is not. Every request stays on this origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The API docs page
///
/// `GET /docs`: to the page.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 308, description = "To /docs/index.html", headers(("location" = String)))))]
pub async fn docs() -> Redirect {
    Redirect::permanent("/docs/index.html")
}

/// The API docs page
///
/// `GET /docs/`: to the page, as `/docs` is.
#[utoipa::path(get, path = "/docs/", tag = "operations",
    responses((status = 308, description = "To /docs/index.html", headers(("location" = String)))))]
pub async fn docs_slash() -> Redirect {
    docs().await
}

/// A file of the API docs page
///
/// `GET /docs/{file}`: the page and its script, style and images.
#[utoipa::path(get, path = "/docs/{file}", tag = "operations",
    params(("file" = String, Path, description = "index.html, or a file it loads")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/html"),
            (String = "text/css"),
            (String = "text/javascript"),
            (String = "image/png"),
        )),
        (status = 404, description = "No such file", body = memq::ApiError),
    ))]
pub async fn docs_file(Path(file): Path<String>) -> Response {
    match utoipa_swagger_ui::serve(&file, CONFIG.clone()) {
        Ok(Some(found)) => {
            let content_type = HeaderValue::from_str(&found.content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            (
                [
                    (header::CONTENT_TYPE, content_type),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                    (
                        header::X_CONTENT_TYPE_OPTIONS,
                        HeaderValue::from_static("nosniff"),
                    ),
                    (
                        header::REFERRER_POLICY,
                        HeaderValue::from_static("no-referrer"),
                    ),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static(CSP),
                    ),
                ],
                found.bytes.into_owned(),
            )
                .into_response()
        }
        Ok(None) => Error::RouteNotFound(format!("GET /docs/{file}")).into_response(),
        // Only the settings file is made at run time, from CONFIG: a bug, not bad input.
        Err(e) => {
            tracing::error!(error = %e, file, "the API docs' file could not be made");
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("the API docs' {file} could not be made: {e}"),
            )
                .into_response()
        }
    }
}
