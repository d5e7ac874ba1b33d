//! `GET /openapi.json`: the HTTP contract as OpenAPI 3.1, generated from the code: the route
//! table (`routes.rs`), the handlers' `#[utoipa::path]` attributes and the wire types' schemas
//! (memq's `openapi` feature). Errors every route shares (401, 408, 503, and 400/404 for a bad
//! or missing queue) and each route's security are added here, once, by [`complete`].
//!
//! It is served without the token: it describes the API and holds no data.

use std::sync::OnceLock;

use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use memq::{ApiError, Message, MessageList};
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response as ApiResponse, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi as Document, RefOr};
use utoipa::{OpenApi, ToSchema};

use super::routes::{Access, Route, Rule, operations_mut};
use crate::error::Error;
use crate::tokens::Role;

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

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
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
        let (_, doc, _) = super::routes::table().into_parts();
        doc.to_pretty_json()
            .expect("the API description serializes")
    })
}

/// The API description's parts that are not routes: its title, shared schemas and tags. The
/// routes come from the route table.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "memq-rs queue server",
        description = "A work-queue broker speaking kuard's MemQ API (`/memq/server/...`) with \
                       leases, acks, dead letters, long polling and batches. Durations in query \
                       strings are seconds (`30`, `1.5`) or `500ms`, `30s`, `2m`, `1m30s`. \
                       Every error is `{\"kind\":\"error\",\"code\":...,\"message\":...}`. \
                       With `--token` or `--tokens-file`, every route that lists the `bearer` \
                       security scheme needs `Authorization: Bearer TOKEN`, of a role that \
                       allows it."
    ),
    components(schemas(ApiError, memq::BatchItem)),
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

/// Adds to the routes' description what their rules imply: the errors every route of a kind
/// can answer, the bearer scheme and who needs it, and the error codes.
pub fn complete(doc: &mut Document, routes: &[Route]) {
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
        for (method, op) in operations_mut(item) {
            let route = routes
                .iter()
                .find(|r| r.method == method && r.path == *path)
                .expect("every described operation comes from the route table");
            shared_errors(path, &method, route.rule, op, &bearer);
        }
    }
}

fn shared_errors(
    path: &str,
    method: &Method,
    rule: Rule,
    op: &mut Operation,
    bearer: &SecurityRequirement,
) {
    let access = rule.access;
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
        if method != Method::PUT {
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
            .header("retry-after", header_string("`1`"))
            .build(),
        );
    }
    add(
        "408",
        error_response("The request took longer than --request-timeout (`request_timeout`)")
            .header("connection", header_string("`close`"))
            .build(),
    );
    if access == Access::Open {
        op.security = Some(Vec::new());
    } else {
        if access != Access::Page {
            add(
                "401",
                error_response("Missing or unknown bearer token (`unauthorized`)")
                    .header("www-authenticate", header_string("`Bearer`"))
                    .build(),
            );
        }
        // A valid token can fall short only by its role or its queues.
        if rule.role != Role::Reader || path.contains("{queue}") {
            add(
                "403",
                error_response(
                    "The token's role or queues (`--tokens-file`) do not allow this \
                     (`forbidden`, naming the role it needs)",
                )
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
    fn every_route_is_described_with_its_security() {
        let doc: serde_json::Value = serde_json::from_str(json()).unwrap();
        let table = super::super::routes::table();
        let mut described = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            described += item.as_object().unwrap().len();
            for (method, op) in item.as_object().unwrap() {
                let route = table
                    .routes()
                    .iter()
                    .find(|r| r.path == *path && r.method.as_str().eq_ignore_ascii_case(method))
                    .unwrap_or_else(|| panic!("{method} {path} is described, not served"));
                let open = op["security"] == serde_json::json!([]);
                assert_eq!(open, route.rule.access == Access::Open, "{method} {path}");
                let asks = op["responses"]["401"].is_object();
                assert_eq!(asks, route.rule.access != Access::Open, "{method} {path}");
                if route.rule.access != Access::Open && route.rule.role != Role::Reader {
                    assert!(op["responses"]["403"].is_object(), "{method} {path}");
                }
            }
        }
        assert_eq!(described, table.routes().len());
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
