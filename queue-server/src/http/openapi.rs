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
use utoipa::openapi::{ContentBuilder, HeaderBuilder, OpenApi as Document, RefOr, Required};
use utoipa::{OpenApi, ToSchema};

use super::routes::{Access, Route, Rule, operations, operations_mut};
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

/// An enqueue's body as `application/octet-stream`: the bytes of the item (UTF-8 text), kept as
/// sent. Generated clients send such a body as it is, where a JSON body would gain quotes.
#[derive(ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct ItemBytes(Vec<u8>);

/// What an enqueue answers: the message (one item) or the batch's result (`?batch=`).
#[derive(serde::Serialize, ToSchema)]
#[serde(untagged)]
#[schema(discriminator(property_name = "kind", mapping(
    ("message" = "#/components/schemas/Message"),
    ("enqueueResult" = "#/components/schemas/EnqueueResult"),
)))]
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
#[schema(discriminator(property_name = "kind", mapping(
    ("message" = "#/components/schemas/Message"),
    ("messageList" = "#/components/schemas/MessageList"),
)))]
#[allow(dead_code)]
pub enum DequeueAnswer {
    /// One item.
    Message(Message),
    /// Up to `max` items.
    List(MessageList),
}

/// Answer of `POST /queues/{q}/dead/requeue` (a [`memq::CountResult`]).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RequeueResult {
    #[schema(schema_with = memq::schema::kind::requeue_result)]
    kind: String,
    /// Dead letters moved back to the ready items.
    count: u64,
}

/// Answer of `DELETE /queues/{q}/dead` (a [`memq::CountResult`]).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PurgeResult {
    #[schema(schema_with = memq::schema::kind::purge_result)]
    kind: String,
    /// Dead letters removed.
    count: u64,
}

/// This API description
///
/// `GET /openapi.json`: this document, OpenAPI 3.1, generated from the server's code.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document", body = Object, content_type = "application/json")))]
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
                       Every route that lists the `bearer` security scheme needs \
                       `Authorization: Bearer TOKEN`, of a role that allows it, when the server \
                       has tokens (`--token`, `--tokens-file`); without tokens it answers \
                       without one (the empty alternative `{}`).",
        contact(name = "memq-rs", url = "https://github.com/memq-rs/memq-rs"),
    ),
    servers((url = "/", description = "The server that serves this document")),
    components(schemas(ApiError)),
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
/// can answer, the bearer scheme and who needs it, and the error codes; leaves out the routes
/// that are not part of the API ([`Rule::documented`]).
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
    let rule = |method: &Method, path: &str| {
        routes
            .iter()
            .find(|r| r.method == method && r.path == path)
            .expect("every described operation comes from the route table")
            .rule
    };
    doc.paths
        .paths
        .retain(|path, item| operations(item).any(|(method, _)| rule(&method, path).documented));
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, op) in operations_mut(item) {
            shared_errors(path, &method, rule(&method, path), op);
            no_null_body(op);
        }
    }
}

/// A request body that may be left out is left out, not sent as JSON `null` (which the server
/// refuses): utoipa writes an optional body as "the schema or null", and a generated client
/// would send the null.
fn no_null_body(op: &mut Operation) {
    let Some(RefOr::T(body)) = op.request_body.as_mut() else {
        return;
    };
    if body.required == Some(Required::True) {
        return;
    }
    for content in body.content.values_mut() {
        let RefOr::T(content) = content else {
            continue;
        };
        if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema {
            let not_null: Vec<_> = one_of
                .items
                .iter()
                .filter(|s| !is_null(s))
                .cloned()
                .collect();
            if let [only] = &not_null[..] {
                content.schema = Some(only.clone());
            }
        }
    }
}

fn is_null(schema: &RefOr<Schema>) -> bool {
    matches!(schema, RefOr::T(Schema::Object(o)) if o.schema_type == SchemaType::new(Type::Null))
}

fn shared_errors(path: &str, method: &Method, rule: Rule, op: &mut Operation) {
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
        // The token, or none: a server without tokens answers every route without one, so a
        // generated client works with and without.
        op.security = Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::default(),
        ]);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn doc() -> Value {
        serde_json::from_str(json()).unwrap()
    }

    /// Every operation of the document, with its method and path.
    fn each_operation(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                out.push((method.clone(), path.clone(), op));
            }
        }
        out
    }

    /// Every value of `key` in `value`, at any depth.
    fn all<'a>(value: &'a Value, key: &str, out: &mut Vec<&'a Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == key {
                        out.push(v);
                    }
                    all(v, key, out);
                }
            }
            Value::Array(list) => list.iter().for_each(|v| all(v, key, out)),
            _ => {}
        }
    }

    #[test]
    fn every_documented_route_is_described_with_its_security() {
        let doc = doc();
        let table = super::super::routes::table();
        let operations = each_operation(&doc);
        for (method, path, op) in &operations {
            let route = table
                .routes()
                .iter()
                .find(|r| r.path == *path && r.method.as_str().eq_ignore_ascii_case(method))
                .unwrap_or_else(|| panic!("{method} {path} is described, not served"));
            let security = &op["security"];
            if route.rule.access == Access::Open {
                assert_eq!(*security, json!([]), "{method} {path}");
            } else {
                // The token, or none for a server without tokens.
                assert_eq!(*security, json!([{"bearer": []}, {}]), "{method} {path}");
                assert!(op["responses"]["401"].is_object(), "{method} {path}");
            }
            if route.rule.access != Access::Open && route.rule.role != Role::Reader {
                assert!(op["responses"]["403"].is_object(), "{method} {path}");
            }
        }
        let documented = table.routes().iter().filter(|r| r.rule.documented);
        assert_eq!(operations.len(), documented.count());
        // The docs page's own files are how to read the description, not a part of it.
        for path in ["/docs", "/docs/", "/docs/{file}"] {
            assert!(doc["paths"].get(path).is_none(), "{path}");
        }
    }

    #[test]
    fn the_document_is_openapi_3_with_the_error_codes() {
        let doc = doc();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(doc["servers"][0]["url"], "/");
        let codes = &doc["components"]["schemas"]["ApiError"]["properties"]["code"]["enum"];
        assert_eq!(codes.as_array().unwrap().len(), Error::CODES.len());
        let enqueue = &doc["paths"]["/memq/server/queues/{queue}/enqueue"]["post"];
        for status in [
            "200", "400", "401", "404", "408", "413", "429", "503", "507",
        ] {
            assert!(enqueue["responses"][status].is_object(), "enqueue {status}");
        }
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
    }

    /// What client generators read: a short summary, and the details in the description.
    #[test]
    fn every_operation_has_a_human_summary_and_a_description() {
        let doc = doc();
        for (method, path, op) in each_operation(&doc) {
            let summary = op["summary"].as_str().unwrap_or_default();
            assert!(
                !summary.is_empty() && summary.len() <= 40,
                "{method} {path}: {summary:?}"
            );
            assert!(
                !summary.contains(['`', '/', '\n']),
                "{method} {path}: the summary restates the route: {summary:?}"
            );
            let description = op["description"].as_str().unwrap_or_default();
            assert!(!description.is_empty(), "{method} {path}");
            let id = op["operationId"].as_str().unwrap();
            let mut names: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let count = names.len();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), count, "{id}: a parameter name is used twice");
        }
    }

    /// Generators narrow an answer by its `kind`: a `const` in every answer object, and a
    /// discriminator on every union of them.
    #[test]
    fn every_kind_is_a_const_and_every_answer_union_is_discriminated() {
        let doc = doc();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        // The `kind` of an object, or of a part of its `allOf` (a flattened object).
        let kind_of = |schema: &Value| -> Option<Value> {
            let parts = match schema.get("allOf") {
                Some(parts) => parts.as_array().unwrap().clone(),
                None => vec![schema.clone()],
            };
            parts.into_iter().find_map(|part| {
                let kind = part["properties"].get("kind")?.clone();
                let required = part["required"].as_array().unwrap();
                assert!(required.contains(&json!("kind")), "{part}");
                Some(kind)
            })
        };
        let mut kinds = 0;
        for (name, schema) in schemas {
            if let Some(kind) = kind_of(schema) {
                assert!(kind["const"].is_string(), "{name}.kind: {kind}");
                kinds += 1;
            }
            let Some(union) = schema.get("oneOf") else {
                continue;
            };
            let answers = union.as_array().unwrap();
            if answers.iter().all(|s| s.get("$ref").is_some()) {
                assert_eq!(schema["discriminator"]["propertyName"], "kind", "{name}");
                let mapping = schema["discriminator"]["mapping"].as_object().unwrap();
                assert_eq!(mapping.len(), answers.len(), "{name}");
                for (kind, target) in mapping {
                    let target = target.as_str().unwrap();
                    let target = target.strip_prefix("#/components/schemas/").unwrap();
                    assert_eq!(kind_of(&schemas[target]).unwrap()["const"], *kind);
                }
            }
        }
        assert!(kinds >= 16, "{kinds} answer objects");
    }

    #[test]
    fn integers_have_standard_formats_and_unsigned_ones_a_minimum() {
        let doc = doc();
        let mut formats = Vec::new();
        all(&doc, "format", &mut formats);
        for format in formats {
            let format = format.as_str().unwrap();
            assert!(
                ["int32", "int64", "double", "date-time", "binary"].contains(&format),
                "format {format}"
            );
        }
        // Every integer schema, at any depth: fields, parameters, headers.
        fn integers<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
            match value {
                Value::Object(map) => {
                    let types = &map.get("type");
                    if [json!("integer"), json!(["integer", "null"])]
                        .iter()
                        .any(|t| *types == Some(t))
                    {
                        out.push(value);
                    }
                    map.values().for_each(|v| integers(v, out));
                }
                Value::Array(list) => list.iter().for_each(|v| integers(v, out)),
                _ => {}
            }
        }
        let mut found = Vec::new();
        integers(&doc, &mut found);
        for schema in &found {
            assert!(schema["format"].is_string(), "{schema}");
            assert!(schema["minimum"].as_i64() >= Some(0), "{schema}");
        }
        let integers = found.len();
        assert!(integers >= 50, "{integers} integers");
    }

    #[test]
    fn every_component_is_used() {
        let doc = doc();
        let mut refs = Vec::new();
        all(&doc, "$ref", &mut refs);
        for name in doc["components"]["schemas"].as_object().unwrap().keys() {
            let target = format!("#/components/schemas/{name}");
            assert!(refs.iter().any(|r| **r == *target), "{name} is never used");
        }
    }

    /// A request body that may be left out is not documented as `null`, which the server
    /// refuses; a generated client then leaves it out.
    #[test]
    fn an_optional_body_is_left_out_not_null() {
        let doc = doc();
        let put = &doc["paths"]["/memq/server/queues/{queue}"]["put"]["requestBody"];
        assert_ne!(put["required"], true);
        assert_eq!(
            put["content"]["application/json"]["schema"],
            json!({"$ref": "#/components/schemas/QueueConfigPatch"})
        );
    }

    /// The body of a plain enqueue reaches the server as sent from any generated client: as
    /// bytes (octet-stream) or text, never as JSON; a JSON batch has a route with its real type.
    #[test]
    fn enqueue_bodies_are_bytes_or_text_and_json_batches_are_typed() {
        let doc = doc();
        let paths = &doc["paths"];
        let body = &paths["/memq/server/queues/{queue}/enqueue"]["post"]["requestBody"];
        let types: Vec<&String> = body["content"].as_object().unwrap().keys().collect();
        assert_eq!(types, ["application/octet-stream", "text/plain"]);
        let bytes = &body["content"]["application/octet-stream"]["schema"];
        assert_eq!(
            (&bytes["type"], &bytes["format"]),
            (&json!("string"), &json!("binary"))
        );
        let batch = &paths["/memq/server/queues/{queue}/enqueue/batch"]["post"]["requestBody"];
        let items = &batch["content"]["application/json"]["schema"];
        assert_eq!(items["type"], "array");
        assert_eq!(items["items"]["$ref"], "#/components/schemas/BatchItem");
    }
}
