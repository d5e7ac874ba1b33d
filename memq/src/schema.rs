//! OpenAPI schemas that utoipa's derive cannot write: a string that always holds one value (the
//! `kind` of every answer, as JSON Schema's `const`) and a string that holds one of a few (an
//! `enum`). A client generated from the description narrows an answer union by its `kind` and
//! types these fields as literals, not as any string.

use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};

/// A string that is always `value`.
pub fn constant(value: &str) -> Object {
    // utoipa's schema object has no field for `const` (OpenAPI 3.1, JSON Schema 2020-12); its
    // extensions are written flat into the schema, so the keyword goes there.
    let mut keywords = Extensions::default();
    keywords.insert("const".into(), value.into());
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!("Always `{value}`")))
        .extensions(Some(keywords))
        .build()
}

/// A string that is one of `values`.
pub fn one_of(values: &[&str]) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// The `kind` of each answer of the wire types, for `#[schema(schema_with = ...)]`.
pub mod kind {
    use super::{Object, constant};

    macro_rules! kinds {
        ($($name:ident = $value:literal),* $(,)?) => {$(
            #[doc = concat!("`\"", $value, "\"`.")]
            pub fn $name() -> Object {
                constant($value)
            }
        )*};
    }

    kinds! {
        message = "message",
        message_list = "messageList",
        queue = "queue",
        stats = "stats",
        enqueue_result = "enqueueResult",
        ack_result = "ackResult",
        nack_result = "nackResult",
        extend_result = "extendResult",
        release_result = "releaseResult",
        dead_letter_list = "deadLetterList",
        item = "item",
        lease_list = "leaseList",
        requeue_result = "requeueResult",
        purge_result = "purgeResult",
        job = "job",
        job_list = "jobList",
        error = "error",
    }
}

/// `ItemInfo::state`.
pub fn item_state() -> Object {
    one_of(&["ready", "delayed", "leased", "dead"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_is_written_as_json_schema_const() {
        let json = serde_json::to_value(kind::message_list()).unwrap();
        assert_eq!(json["type"], "string");
        assert_eq!(json["const"], "messageList");
        assert!(json.get("x-const").is_none());
    }
}
