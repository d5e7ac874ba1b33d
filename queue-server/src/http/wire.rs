//! Answer bodies of the busiest routes (enqueue, dequeue, extend, peek), serialized straight
//! from the store's data. They are byte for byte the JSON of `memq`'s [`memq::Message`],
//! [`memq::MessageList`] and [`memq::EnqueueResult`] (a test below holds them to it), without
//! first copying every id, timestamp and body into a `String` of its own: ids and times are
//! formatted right into the answer.

use std::time::{Duration, UNIX_EPOCH};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Serialize, Serializer};

use crate::broker::{Id, LeaseInfo};

/// A message's JSON without its body: kind, id, timestamps, a lease, field names.
const MESSAGE_BYTES: usize = 224;

/// `value` as an `application/json` answer, as axum's `Json` makes it, but written into a
/// buffer of `capacity` bytes: `Json` starts at 128, which a leased message outgrows (a copy).
pub fn json<T: Serialize>(value: &T, capacity: usize) -> Response {
    let mut buf = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// An id in its 26-character text form.
pub struct IdText(pub Id);

impl Serialize for IdText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Not collect_str: going through fmt::Display costs more than the encoding itself.
        let mut buf = [0u8; 26];
        s.serialize_str(self.0.encode(&mut buf))
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC with milliseconds (as `store::rfc3339_ms`).
pub struct Timestamp(pub u64);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(
            UNIX_EPOCH + Duration::from_millis(self.0),
        ))
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// [`memq::Message`].
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageOut<'a> {
    kind: &'static str,
    id: IdText,
    body: &'a str,
    creation_timestamp: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseOut>,
    #[serde(skip_serializing_if = "is_false")]
    duplicate: bool,
}

/// [`memq::Lease`].
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LeaseOut {
    id: IdText,
    expires_at: Timestamp,
    attempt: u32,
}

impl<'a> MessageOut<'a> {
    /// The message of item `id` with text `body`, leased or not.
    pub fn new(id: Id, body: &'a str, lease: Option<LeaseInfo>) -> Self {
        MessageOut {
            kind: "message",
            id: IdText(id),
            body,
            creation_timestamp: Timestamp(id.timestamp_ms()),
            lease: lease.map(|l| LeaseOut {
                id: IdText(l.id),
                expires_at: Timestamp(l.deadline),
                attempt: l.attempt,
            }),
            duplicate: false,
        }
    }

    /// The answer: this message as JSON.
    pub fn into_response(self) -> Response {
        json(&self, MESSAGE_BYTES + self.body.len())
    }

    /// The answer to an enqueue whose key was taken: `"duplicate":true`.
    pub fn duplicate(mut self, duplicate: bool) -> Self {
        self.duplicate = duplicate;
        self
    }
}

/// [`memq::MessageList`].
#[derive(Serialize)]
pub struct MessageListOut<'a> {
    kind: &'static str,
    messages: Vec<MessageOut<'a>>,
}

impl<'a> MessageListOut<'a> {
    /// A list of messages.
    pub fn new(messages: Vec<MessageOut<'a>>) -> Self {
        MessageListOut {
            kind: "messageList",
            messages,
        }
    }

    /// The answer: this list as JSON.
    pub fn into_response(self) -> Response {
        let bytes = self.messages.iter().map(|m| MESSAGE_BYTES + m.body.len());
        json(&self, 32 + bytes.sum::<usize>())
    }
}

/// [`memq::EnqueueResult`]: one id per input item, counts of added and skipped ones.
#[derive(Serialize)]
pub struct EnqueueResultOut<'a> {
    kind: &'static str,
    count: u64,
    duplicates: u64,
    ids: Ids<'a>,
}

struct Ids<'a>(&'a [(Id, bool)]);

impl Serialize for Ids<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(id, _)| IdText(*id)))
    }
}

impl<'a> EnqueueResultOut<'a> {
    /// The answer to a batch enqueue, from the store's `(id, duplicate)` per item.
    pub fn new(results: &'a [(Id, bool)]) -> Self {
        let duplicates = results.iter().filter(|(_, dup)| *dup).count() as u64;
        EnqueueResultOut {
            kind: "enqueueResult",
            count: results.len() as u64 - duplicates,
            duplicates,
            ids: Ids(results),
        }
    }

    /// The answer: this result as JSON (29 bytes per id).
    pub fn into_response(self) -> Response {
        json(&self, 64 + 29 * self.ids.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::IdGen;
    use crate::store::rfc3339_ms;

    fn json<T: Serialize>(value: &T) -> String {
        serde_json::to_string(value).unwrap()
    }

    fn owned(id: Id, body: &str, lease: Option<LeaseInfo>, duplicate: bool) -> memq::Message {
        memq::Message {
            kind: "message".into(),
            id: id.to_string(),
            body: body.into(),
            creation_timestamp: rfc3339_ms(id.timestamp_ms()),
            lease: lease.map(|l| memq::Lease {
                id: l.id.to_string(),
                expires_at: rfc3339_ms(l.deadline),
                attempt: l.attempt,
            }),
            duplicate,
        }
    }

    #[test]
    fn answers_are_the_json_of_the_wire_types() {
        let mut ids = IdGen::new();
        let (a, b) = (ids.next(1_800_000_000_123), ids.next(1_800_000_000_999));
        let lease = LeaseInfo {
            id: ids.next(1_800_000_001_000),
            deadline: 1_800_000_031_000,
            attempt: 3,
        };
        let body = "work \"item\" \u{e9}\n\t\\ 1";
        assert_eq!(
            json(&MessageOut::new(a, body, None)),
            json(&owned(a, body, None, false))
        );
        assert_eq!(
            json(&MessageOut::new(a, body, None).duplicate(true)),
            json(&owned(a, body, None, true))
        );
        assert_eq!(
            json(&MessageOut::new(b, body, Some(lease))),
            json(&owned(b, body, Some(lease), false))
        );
        assert_eq!(
            json(&MessageListOut::new(vec![
                MessageOut::new(a, "x", None),
                MessageOut::new(b, "y", Some(lease)),
            ])),
            json(&memq::MessageList {
                kind: "messageList".into(),
                messages: vec![
                    owned(a, "x", None, false),
                    owned(b, "y", Some(lease), false)
                ],
            })
        );
        let results = [(a, false), (b, true), (lease.id, false)];
        assert_eq!(
            json(&EnqueueResultOut::new(&results)),
            json(&memq::EnqueueResult {
                kind: "enqueueResult".into(),
                count: 2,
                duplicates: 1,
                ids: results.iter().map(|(id, _)| id.to_string()).collect(),
            })
        );
    }
}
