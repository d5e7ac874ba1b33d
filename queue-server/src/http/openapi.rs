//! `GET /openapi.json`: the HTTP contract as OpenAPI 3.1, generated from the code: the
//! handlers' `#[utoipa::path]` attributes and the wire types' schemas (memq's `openapi`
//! feature). Errors every route shares (401, 408, 503, and 400/404 for a bad or missing queue)
//! are added here, once, by [`SharedErrors`].
//!
//! It is served without the token: it describes the API and holds no data.

use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use memq::{ApiError, Message, MessageList};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response as ApiResponse, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi as Document, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::error::Error;

/// `?batch=` of an enqueue.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum BatchMode {
    /// One item per line (`\n` or `\r\n`).
    Lines,
    /// A JSON array of strings or `{"id":KEY,"body":TEXT}`.
    Json,
}

/// What an enqueue answers: the message (one item) or the batch's result (`?batch=`).
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum EnqueueAnswer {
    /// One item.
    Message(Message),
    /// A batch.
    Batch(memq::EnqueueResult),
}

/// What a dequeue answers: one message, or with `?max=` a message list.
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum DequeueAnswer {
    /// One item.
    Message(Message),
    /// Up to `max` items.
    List(MessageList),
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations", security(),
    responses((status = 200, description = "This document", body = Object, content_type = "application/json")))]
/// `GET /openapi.json`.
pub async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json(),
    )
        .into_response()
}

/// The document as JSON, built once.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_pretty_json()
            .expect("the API description serializes")
    })
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "memq-rs queue server",
        description = "A work-queue broker speaking kuard's MemQ API (`/memq/server/...`) with \
                       leases, acks, dead letters, long polling and batches. Durations in query \
                       strings are seconds (`30`, `1.5`) or `500ms`, `30s`, `2m`, `1m30s`. \
                       Every error is `{\"kind\":\"error\",\"code\":...,\"message\":...}`. \
                       With `--token`, every route that lists the `bearer` security scheme \
                       needs `Authorization: Bearer TOKEN`."
    ),
    paths(
        super::queues::stats,
        super::queues::create_queue,
        super::queues::get_queue,
        super::queues::delete_queue,
        super::queues::drain,
        super::queues::pause,
        super::queues::resume,
        super::queues::enqueue,
        super::queues::dequeue,
        super::queues::ack_batch,
        super::queues::ack,
        super::queues::nack,
        super::queues::extend,
        super::queues::dead_letters,
        super::queues::purge_dead,
        super::queues::requeue_dead,
        super::queues::peek,
        super::dashboard::stream::stats_stream,
        super::dashboard::stream::stats_history,
        super::dashboard::page::index,
        super::dashboard::page::session,
        super::dashboard::page::app_js,
        super::dashboard::page::app_css,
        super::dashboard::page::icon_svg,
        super::jobs::list_jobs,
        super::jobs::create_job,
        super::jobs::delete_job,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
        openapi_json,
    ),
    components(schemas(ApiError, memq::BatchItem)),
    modifiers(&SharedErrors),
    tags(
        (name = "queues", description = "Create, read, delete, drain, pause queues (kuard's routes and more)"),
        (name = "items", description = "Enqueue, dequeue (leases, long polls, batches), peek"),
        (name = "leases", description = "Ack, nack, extend a leased item"),
        (name = "dead letters", description = "Items that ran out of attempts"),
        (name = "jobs", description = "Consumer Jobs through the Kubernetes API (--jobs)"),
        (name = "dashboard", description = "The browser page and its live data"),
        (name = "operations", description = "Probes, metrics, this document"),
    )
)]
pub struct ApiDoc;

/// Paths that never need the token (see `auth.rs`).
fn is_open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/openapi.json")
        || super::dashboard::is_asset(path)
}

fn error_response(description: &str) -> ResponseBuilder {
    ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                "ApiError",
            ))))
            .build(),
    )
}

fn header_string(description: &str) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(description))
        .build()
}

/// The errors every route of a kind can answer, the bearer scheme, and the error codes.
struct SharedErrors;

impl Modify for SharedErrors {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        if let Some(RefOr::T(Schema::Object(error))) = components.schemas.get_mut("ApiError") {
            let codes = ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::String))
                .enum_values(Some(Error::CODES.iter().copied()))
                .description(Some("Stable machine-readable code"))
                .build();
            error
                .properties
                .insert("code".into(), RefOr::T(Schema::Object(codes)));
        }
        let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
        for (path, item) in doc.paths.paths.iter_mut() {
            let operations = [
                (&mut item.get, "GET"),
                (&mut item.put, "PUT"),
                (&mut item.post, "POST"),
                (&mut item.delete, "DELETE"),
            ];
            for (op, method) in operations {
                let Some(op) = op.as_mut() else { continue };
                shared_errors(path, method, op, &bearer);
            }
        }
    }
}

fn shared_errors(path: &str, method: &str, op: &mut Operation, bearer: &SecurityRequirement) {
    let mut add = |status: &str, response: ApiResponse| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert(RefOr::T(response));
    };
    if path.contains("{queue}") {
        add(
            "400",
            error_response(
                "Bad queue name or parameter (`invalid_queue_name`, `invalid_parameter`, \
                 `invalid_body`: not UTF-8, `invalid_json`)",
            )
            .build(),
        );
        let missing = if path.contains("{lease}") {
            "No such queue (`queue_not_found`), or a lease that was acked, nacked, never \
             existed or is malformed (`lease_not_found`)"
        } else {
            "No such queue (`queue_not_found`)"
        };
        if method != "PUT" {
            add("404", error_response(missing).build());
        }
    }
    if path.starts_with("/memq/server/") {
        add(
            "503",
            error_response(
                "The store cannot serve (`backend_unavailable`: the data directory cannot be \
                 written, or Redis cannot be reached)",
            )
            .build(),
        );
    }
    add(
        "408",
        error_response("The request took longer than --request-timeout (`request_timeout`)")
            .header("connection", header_string("`close`"))
            .build(),
    );
    if is_open(path) {
        op.security = Some(Vec::new());
    } else {
        if path != "/" {
            add(
                "401",
                error_response("Missing or wrong bearer token (with --token) (`unauthorized`)")
                    .header("www-authenticate", header_string("`Bearer`"))
                    .build(),
            );
        }
        op.security = Some(vec![bearer.clone()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_path_is_described_and_nothing_else() {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        let mut described: Vec<String> =
            doc["paths"].as_object().unwrap().keys().cloned().collect();
        let mut served = super::super::routes().paths().to_vec();
        described.sort();
        served.sort();
        assert_eq!(
            served, described,
            "the router and /openapi.json list different paths: document a new route with \
             #[utoipa::path] and add it to ApiDoc's paths"
        );
    }

    #[test]
    fn the_document_is_openapi_3_with_the_error_codes() {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let codes = &doc["components"]["schemas"]["ApiError"]["properties"]["code"]["enum"];
        assert_eq!(codes.as_array().unwrap().len(), Error::CODES.len());
        let enqueue = &doc["paths"]["/memq/server/queues/{queue}/enqueue"]["post"];
        for status in [
            "200", "400", "401", "404", "408", "413", "429", "503", "507",
        ] {
            assert!(enqueue["responses"][status].is_object(), "enqueue {status}");
        }
        assert_eq!(
            doc["paths"]["/healthz"]["get"]["security"],
            serde_json::json!([])
        );
    }
}
