//! An enqueue's body as items: `?batch=lines` (one per line) or `?batch=json` (an array of
//! strings or `{"id":KEY,"body":TEXT}`), checked against the item size and key rules.
//!
//! Pure functions of the text, with no store and no HTTP, so that they are property-tested
//! here and fuzzed on their own (`fuzz/fuzz_targets/batch_body.rs`).

use memq::BatchItem;

use crate::broker::NewItem;
use crate::error::{Error, Result};

/// Longest producer key.
pub const MAX_KEY_BYTES: usize = 1024;

/// How a batch body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchKind {
    /// One item per line; empty lines are items only with `keep_empty`.
    Lines {
        /// `?keepEmpty=true`.
        keep_empty: bool,
    },
    /// A JSON array.
    Json,
}

impl BatchKind {
    /// Reads `?batch=` (and `?keepEmpty=` for lines).
    pub fn parse(batch: &str, keep_empty: bool) -> Result<Self> {
        match batch {
            "lines" => Ok(BatchKind::Lines { keep_empty }),
            "json" => Ok(BatchKind::Json),
            other => Err(Error::param(
                "batch",
                format!("{other:?} is not lines or json"),
            )),
        }
    }
}

/// Splits a `batch=lines` body: `\n` or `\r\n`, a final newline adds nothing, empty lines only
/// with `keep_empty`.
pub fn split_lines(text: &str, keep_empty: bool) -> impl Iterator<Item = &str> {
    let lines = (!text.is_empty()).then(|| text.strip_suffix('\n').unwrap_or(text).split('\n'));
    lines
        .into_iter()
        .flatten()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(move |l| keep_empty || !l.is_empty())
}

/// Refuses an item over `max` bytes, naming its place in the batch.
pub fn check_item(index: usize, body: &str, max: usize) -> Result<()> {
    if body.len() > max {
        return Err(Error::ItemTooLarge {
            index,
            size: body.len(),
            max,
        });
    }
    Ok(())
}

/// Refuses an empty key or one over [`MAX_KEY_BYTES`].
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(Error::param(
            "id",
            format!("a key must be 1 to {MAX_KEY_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The items of a batch body, all checked, or the first error.
pub fn parse_batch(kind: BatchKind, text: &str, max_item_bytes: usize) -> Result<Vec<NewItem>> {
    match kind {
        BatchKind::Lines { keep_empty } => split_lines(text, keep_empty)
            .enumerate()
            .map(|(i, line)| {
                check_item(i, line, max_item_bytes)?;
                Ok(NewItem {
                    body: line.into(),
                    key: None,
                })
            })
            .collect(),
        BatchKind::Json => serde_json::from_str::<Vec<BatchItem>>(text)
            .map_err(|e| {
                Error::InvalidJson(format!(
                    "{e}; a JSON batch is an array of strings or {{\"id\":KEY,\"body\":TEXT}} objects"
                ))
            })?
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let (body, key) = match item {
                    BatchItem::Body(body) => (body, None),
                    BatchItem::Keyed { id, body } => {
                        check_key(&id)?;
                        (body, Some(id.into_boxed_str()))
                    }
                };
                check_item(i, &body, max_item_bytes)?;
                Ok(NewItem {
                    body: body.into_boxed_str(),
                    key,
                })
            })
            .collect(),
    }
}

/// What every parse must satisfy, whatever the input; panics otherwise. Shared by the property
/// test below and the fuzz target.
#[doc(hidden)]
pub fn check_invariants(kind: BatchKind, text: &str, max_item_bytes: usize) {
    let parsed = parse_batch(kind, text, max_item_bytes);
    match (kind, parsed) {
        (BatchKind::Lines { keep_empty }, Ok(items)) => {
            // A plain model of the rule: cut at each '\n', drop one '\r' before it (or at the
            // very end), no item after a final '\n', empty lines only with keep_empty.
            let mut model = Vec::new();
            let mut line = String::new();
            for c in text.chars() {
                if c == '\n' {
                    if line.ends_with('\r') {
                        line.pop();
                    }
                    model.push(std::mem::take(&mut line));
                } else {
                    line.push(c);
                }
            }
            if !text.is_empty() && !text.ends_with('\n') {
                if line.ends_with('\r') {
                    line.pop();
                }
                model.push(line);
            }
            model.retain(|l| keep_empty || !l.is_empty());
            let got: Vec<&str> = items.iter().map(|i| &*i.body).collect();
            assert_eq!(got, model, "lines of {text:?}");
            for item in &items {
                assert!(item.body.len() <= max_item_bytes, "an item over the limit");
                assert!(item.key.is_none());
            }
        }
        (BatchKind::Lines { .. }, Err(e)) => {
            assert!(
                matches!(e, Error::ItemTooLarge { .. }),
                "lines fail only on size: {e}"
            );
        }
        (BatchKind::Json, Ok(items)) => {
            // The items written back as JSON parse to the same items.
            let wire: Vec<BatchItem> = items
                .iter()
                .map(|i| match &i.key {
                    Some(k) => BatchItem::Keyed {
                        id: k.to_string(),
                        body: i.body.to_string(),
                    },
                    None => BatchItem::Body(i.body.to_string()),
                })
                .collect();
            let again = serde_json::to_string(&wire).expect("serializes");
            let back = parse_batch(BatchKind::Json, &again, max_item_bytes).expect("round trip");
            assert_eq!(back.len(), items.len());
            for (a, b) in back.iter().zip(&items) {
                assert_eq!((&a.body, &a.key), (&b.body, &b.key));
            }
        }
        (BatchKind::Json, Err(e)) => {
            assert!(
                matches!(
                    e,
                    Error::InvalidJson(_)
                        | Error::ItemTooLarge { .. }
                        | Error::InvalidParameter { .. }
                ),
                "unexpected error {e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_like_the_contract_says() {
        let v = |t, k| split_lines(t, k).collect::<Vec<_>>();
        assert_eq!(v("a\nb\n", false), ["a", "b"]);
        assert_eq!(v("a\r\nb", false), ["a", "b"]);
        assert_eq!(v("a\n\nb\n", false), ["a", "b"]);
        assert_eq!(v("a\n\nb\n", true), ["a", "", "b"]);
        assert!(v("", false).is_empty());
        assert!(v("\n", false).is_empty());
        assert_eq!(v("\n", true), [""]);
    }

    /// Text built from the pieces batch bodies are made of, biased to the interesting ones.
    fn text(rng: &mut fastrand::Rng) -> String {
        const PIECES: &[&str] = &[
            "\n",
            "\r\n",
            "\r",
            "a",
            "item-1",
            "é",
            "💥",
            "\"",
            "[",
            "]",
            ",",
            "{",
            "}",
            ":",
            "\"id\"",
            "\"body\"",
            "null",
            "1",
            " ",
            "\\",
            "\\u0000",
            "\\ud800",
            "[\"x\"]",
            "{\"id\":\"k\",\"body\":\"b\"}",
            "\u{0}",
            "\t",
        ];
        let n = rng.usize(..24);
        (0..n).map(|_| PIECES[rng.usize(..PIECES.len())]).collect()
    }

    #[test]
    fn any_body_parses_or_fails_cleanly_a_few_thousand_cases() {
        for seed in 1..=4000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let text = text(&mut rng);
            let max = [0, 1, 3, 16, 1 << 20][rng.usize(..5)];
            for kind in [
                BatchKind::Lines { keep_empty: false },
                BatchKind::Lines { keep_empty: true },
                BatchKind::Json,
            ] {
                let result = std::panic::catch_unwind(|| check_invariants(kind, &text, max));
                assert!(result.is_ok(), "seed {seed}: {kind:?} {text:?} max {max}");
            }
        }
    }

    #[test]
    fn json_batches_of_every_shape() {
        check_invariants(BatchKind::Json, r#"["a",{"id":"k","body":"b"}]"#, 10);
        let items = parse_batch(BatchKind::Json, r#"["a",{"id":"k","body":"b"}]"#, 10).unwrap();
        assert_eq!(items[1].key.as_deref(), Some("k"));
        for bad in [
            "",
            "{}",
            "[1]",
            r#"[{"id":"","body":"b"}]"#,
            r#"[{"body":"b"}]"#,
        ] {
            assert!(parse_batch(BatchKind::Json, bad, 10).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_batch(BatchKind::Json, r#"["ok","too long"]"#, 3),
            Err(Error::ItemTooLarge { index: 1, .. })
        ));
    }
}
