//! Request parsing with the contract's JSON errors (axum's own rejections are plain text).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use crate::error::Error;

/// The `{queue}` path segment, checked against the naming rule.
pub struct QueueName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for QueueName {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        // Routes with a QueueName have `{queue}` as their only segment.
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::InvalidQueueName(format!("bad path: {e}")))?;
        QueueName::checked(name)
    }
}

impl QueueName {
    /// A name from a path, checked against the naming rule.
    pub fn checked(name: String) -> Result<Self, Error> {
        memq::name::validate_queue_name(&name).map_err(Error::InvalidQueueName)?;
        Ok(QueueName(name))
    }
}

/// The `X-Memq-Consumer` header of a dequeue: who takes the items (printable ASCII, at most
/// [`memq::name::MAX_CONSUMER_NAME`] bytes), shown with the leases; absent, they are anonymous.
pub struct Consumer(pub Option<std::sync::Arc<str>>);

impl<S: Send + Sync> FromRequestParts<S> for Consumer {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        Consumer::of(&parts.headers)
    }
}

impl Consumer {
    /// The header of a request, checked.
    pub fn of(headers: &axum::http::HeaderMap) -> Result<Self, Error> {
        let Some(value) = headers.get(memq::types::headers::CONSUMER) else {
            return Ok(Consumer(None));
        };
        let name = memq::name::consumer_name(value.as_bytes())
            .map_err(|why| Error::param("X-Memq-Consumer", why))?;
        Ok(Consumer(Some(name.into())))
    }
}

/// The `{queue}` and `{item}` path segments.
pub struct ItemPath {
    /// Queue name (checked).
    pub queue: String,
    /// Item id (well-formed: anything else is a 400).
    pub item: String,
}

impl<S: Send + Sync> FromRequestParts<S> for ItemPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Path((queue, item)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::InvalidQueueName(format!("bad path: {e}")))?;
        let QueueName(queue) = QueueName::checked(queue)?;
        if crate::broker::Id::parse(&item).is_none() {
            return Err(Error::param(
                "item",
                format!(
                    "{item:?} is not an item id (a 26-character ULID, as the enqueue answered)"
                ),
            ));
        }
        Ok(ItemPath { queue, item })
    }
}

/// The `{queue}` and `{lease}` path segments.
pub struct LeasePath {
    /// Queue name (checked).
    pub queue: String,
    /// Lease id as given (checked by the store: malformed is "not found").
    pub lease: String,
}

impl<S: Send + Sync> FromRequestParts<S> for LeasePath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        // `.../queues/{queue}/leases/{lease}/...`: the segments in that order.
        let Path((queue, lease)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::InvalidQueueName(format!("bad path: {e}")))?;
        LeasePath::checked(queue, lease)
    }
}

impl LeasePath {
    /// Segments from a path, the queue name checked against the naming rule.
    pub fn checked(queue: String, lease: String) -> Result<Self, Error> {
        memq::name::validate_queue_name(&queue).map_err(Error::InvalidQueueName)?;
        Ok(LeasePath { queue, lease })
    }
}

/// The `{name}` of a Job: a DNS label (what a Job name can be), else 400.
pub struct JobName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for JobName {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::param("name", format!("bad path: {e}")))?;
        let name = params.get("name").cloned().unwrap_or_default();
        let dns_label = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !dns_label {
            return Err(Error::param(
                "name",
                format!(
                    "{name:?} is not a Job name (lowercase letters, digits and '-', at most 63)"
                ),
            ));
        }
        Ok(JobName(name))
    }
}

/// Query-string parameters, read by name with range checks.
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        Ok(Params::of(&parts.uri))
    }
}

impl Params {
    /// The query parameters of `uri`.
    pub fn of(uri: &axum::http::Uri) -> Self {
        let pairs = uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        Params(pairs)
    }

    /// The raw value of `name` (the last one when repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A duration in `(0, max]`, or `[0, max]` when `allow_zero`.
    pub fn duration(
        &self,
        name: &'static str,
        max: Duration,
        allow_zero: bool,
    ) -> Result<Option<Duration>, Error> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let d = memq::duration::parse_duration(text).map_err(|e| Error::param(name, e))?;
        if d.is_zero() && !allow_zero {
            return Err(Error::param(name, "must be greater than 0"));
        }
        if d > max {
            return Err(Error::param(
                name,
                format!(
                    "{text:?} is more than the maximum of {}",
                    memq::duration::format_duration(max)
                ),
            ));
        }
        Ok(Some(d))
    }

    /// A whole number in `[min, max]`.
    pub fn int(&self, name: &'static str, min: u64, max: u64) -> Result<Option<u64>, Error> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let n: u64 = text
            .parse()
            .map_err(|_| Error::param(name, format!("{text:?} is not a whole number")))?;
        if n < min || n > max {
            return Err(Error::param(name, format!("{n} is outside {min}..={max}")));
        }
        Ok(Some(n))
    }

    /// `true`/`false` (also `1`/`0`); absent is `false`.
    pub fn flag(&self, name: &'static str) -> Result<bool, Error> {
        match self.get(name) {
            None => Ok(false),
            Some("true" | "1" | "") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(other) => Err(Error::param(
                name,
                format!("{other:?} is not true or false"),
            )),
        }
    }
}

/// Reads a whole body, refusing more than `max` bytes without buffering past the limit.
pub async fn read_body(mut body: Body, max: usize) -> Result<Bytes, Error> {
    // Most bodies arrive in one frame, which is kept as it is; only a second one makes a copy.
    // (http_body_util's Limited + collect would queue every frame in a list first.)
    let mut first = Bytes::new();
    let mut more: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Error::InvalidBody(format!("could not read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let held = more.as_ref().map_or(first.len(), BytesMut::len);
        if held + data.len() > max {
            return Err(Error::BodyTooLarge { max });
        }
        match &mut more {
            Some(buf) => buf.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut buf = BytesMut::with_capacity(first.len() + data.len());
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&data);
                more = Some(buf);
            }
        }
    }
    Ok(more.map_or(first, BytesMut::freeze))
}

/// Reads a JSON object body into `T`. Only an object: serde's derived structs would also take
/// a JSON array, filling the fields by position (`[null, null]` as a queue config).
pub fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Error::InvalidJson(e.to_string()))?;
    if !value.is_object() {
        return Err(Error::InvalidJson(
            "the body must be a JSON object ({...})".into(),
        ));
    }
    serde_json::from_value(value).map_err(|e| Error::InvalidJson(e.to_string()))
}

/// Checks that a body is UTF-8 text.
pub fn utf8(bytes: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(bytes).map_err(|e| {
        Error::InvalidBody(format!(
            "body is not UTF-8 text (invalid byte at offset {})",
            e.valid_up_to()
        ))
    })
}
