//! Grouping items into request bodies. `?batch=lines` is the cheapest encoding for the server to
//! parse, so it is used whenever every item of a batch fits it (no key, not empty, no line
//! break); otherwise the batch goes as `?batch=json`.

use crate::source::Item;

/// Largest body we build, well below the server's default `--max-body-bytes` (64 MiB).
pub const MAX_BATCH_BYTES: usize = 8 << 20;

/// How a batch body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// One item per line.
    Lines,
    /// A JSON array of strings and `{"id","body"}` objects.
    Json,
}

/// A batch's items, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// The `?batch=lines` body; `Bytes` so that a retry resends it without a copy.
    Lines(bytes::Bytes),
    /// The items of a `?batch=json` body (the client serializes them).
    Json(Vec<memq::BatchItem>),
}

impl Payload {
    /// How the batch goes on the wire.
    pub fn encoding(&self) -> Encoding {
        match self {
            Payload::Lines(_) => Encoding::Lines,
            Payload::Json(_) => Encoding::Json,
        }
    }
}

/// One request's worth of items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The items.
    pub payload: Payload,
    /// How many.
    pub count: usize,
}

/// Collects items until a batch is full.
#[derive(Debug)]
pub struct Batcher {
    max_items: usize,
    items: Vec<Item>,
    bytes: usize,
}

impl Batcher {
    /// Batches of up to `max_items` items (and [`MAX_BATCH_BYTES`]).
    pub fn new(max_items: usize) -> Self {
        let max_items = max_items.max(1);
        Self {
            max_items,
            items: Vec::with_capacity(max_items),
            bytes: 0,
        }
    }

    /// Adds an item; returns a full batch when this item completed one.
    pub fn push(&mut self, item: Item) -> Option<Batch> {
        // JSON escaping can grow a body; the estimate only has to keep us clear of the limit.
        let size = item.body.len() + item.key.as_ref().map_or(0, String::len) + 16;
        let flushed = if !self.items.is_empty() && self.bytes + size > MAX_BATCH_BYTES {
            self.take()
        } else {
            None
        };
        self.bytes += size;
        self.items.push(item);
        if flushed.is_some() {
            return flushed;
        }
        if self.items.len() >= self.max_items {
            self.take()
        } else {
            None
        }
    }

    /// The last, partly filled batch.
    pub fn finish(&mut self) -> Option<Batch> {
        self.take()
    }

    fn take(&mut self) -> Option<Batch> {
        if self.items.is_empty() {
            return None;
        }
        self.bytes = 0;
        let items = std::mem::replace(&mut self.items, Vec::with_capacity(self.max_items));
        Some(encode(items))
    }
}

fn fits_lines(item: &Item) -> bool {
    item.key.is_none() && !item.body.is_empty() && !item.body.contains(['\n', '\r'])
}

/// Encodes items as lines when all of them allow it, else as JSON.
pub fn encode(items: Vec<Item>) -> Batch {
    let count = items.len();
    if items.iter().all(fits_lines) {
        let mut body = Vec::with_capacity(items.iter().map(|i| i.body.len() + 1).sum());
        for item in &items {
            body.extend_from_slice(item.body.as_bytes());
            body.push(b'\n');
        }
        return Batch {
            payload: Payload::Lines(body.into()),
            count,
        };
    }
    let json: Vec<memq::BatchItem> = items
        .into_iter()
        .map(|item| match item.key {
            Some(id) => memq::BatchItem::Keyed {
                id,
                body: item.body,
            },
            None => memq::BatchItem::Body(item.body),
        })
        .collect();
    Batch {
        payload: Payload::Json(json),
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(body: &str) -> Item {
        Item {
            key: None,
            body: body.into(),
        }
    }

    #[test]
    fn plain_items_go_as_lines() {
        let b = encode(vec![item("a"), item("b c")]);
        assert_eq!(
            b.payload,
            Payload::Lines(bytes::Bytes::from_static(b"a\nb c\n"))
        );
        assert_eq!(b.count, 2);
    }

    #[test]
    fn keys_line_breaks_and_empty_items_need_json() {
        let keyed = Item {
            key: Some("k".into()),
            body: "a".into(),
        };
        let b = encode(vec![item("x"), keyed]);
        let Payload::Json(items) = &b.payload else {
            panic!("{b:?}")
        };
        assert_eq!(
            serde_json::to_string(items).unwrap(),
            r#"["x",{"id":"k","body":"a"}]"#
        );
        for odd in ["a\nb", "a\r", ""] {
            assert_eq!(
                encode(vec![item(odd)]).payload.encoding(),
                Encoding::Json,
                "{odd:?}"
            );
        }
    }

    #[test]
    fn batches_fill_to_the_item_count() {
        let mut b = Batcher::new(3);
        let mut batches = Vec::new();
        for i in 0..7 {
            batches.extend(b.push(item(&i.to_string())));
        }
        batches.extend(b.finish());
        assert_eq!(
            batches.iter().map(|b| b.count).collect::<Vec<_>>(),
            [3, 3, 1]
        );
        assert_eq!(b.finish(), None);
    }

    #[test]
    fn batches_stay_under_the_byte_limit() {
        let mut b = Batcher::new(1000);
        let big = "x".repeat(1 << 20);
        let mut batches = Vec::new();
        for _ in 0..20 {
            batches.extend(b.push(item(&big)));
        }
        batches.extend(b.finish());
        assert_eq!(batches.iter().map(|b| b.count).sum::<usize>(), 20);
        for b in &batches {
            let Payload::Lines(body) = &b.payload else {
                panic!()
            };
            assert!(body.len() <= MAX_BATCH_BYTES, "{}", body.len());
        }
    }
}
