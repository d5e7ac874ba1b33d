//! Where items come from: arguments (with brace ranges), plain files (one item per line) and
//! JSON Lines files, read as a stream so a file of millions of lines never sits in memory.
//!
//! Everything that can be checked before the first request is checked in [`Sources::open`]
//! (ranges parse, files exist), so bad input fails fast with exit code 2 and nothing half-sent.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::expand::{Pattern, RangeError};

/// One item to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Dedup key: from `--idempotent` or an `"id"` in JSON Lines.
    pub key: Option<String>,
    /// The item's text.
    pub body: String,
}

/// Input that cannot be read as items.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// A brace range that does not parse.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// A file that cannot be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file as given.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// A line that is not an item.
    #[error("{path} line {line}: {why}")]
    Line {
        /// The file as given.
        path: String,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        why: String,
    },
    /// stdin named by more than one `--file -` / `--json-lines -`.
    #[error("stdin (\"-\") can be read only once")]
    StdinTwice,
}

/// The stable dedup key of an item: a hash of where it came from (source and line number) and
/// its text. Rerunning the same command yields the same keys, so the server skips items it
/// already has; identical lines at different places stay distinct items.
pub fn item_key(source: &str, line: u64, body: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    // Length-prefixed fields, so ("a\n1", ..) and ("a", 1..) cannot collide.
    for field in [
        source.as_bytes(),
        line.to_string().as_bytes(),
        body.as_bytes(),
    ] {
        ctx.update(&(field.len() as u64).to_le_bytes());
        ctx.update(field);
    }
    let digest = ctx.finish();
    // 128 bits are plenty against accidental collisions and keep keys short on the wire.
    let mut key = String::with_capacity(33);
    key.push('p');
    for byte in &digest.as_ref()[..16] {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

/// A buffered input: a file or stdin.
type Reader = Box<dyn BufRead + Send>;

enum Kind {
    Args(Vec<Pattern>),
    Lines { name: String, reader: Reader },
    JsonLines { name: String, reader: Reader },
}

/// All inputs of one run, opened and checked, in the order they are sent: arguments, then each
/// `--file`, then each `--json-lines`.
pub struct Sources {
    kinds: Vec<Kind>,
    estimate: Option<u64>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("inputs", &self.kinds.len())
            .field("estimate", &self.estimate)
            .finish()
    }
}

fn open_reader(
    path: &Path,
    stdin_used: &mut bool,
) -> Result<(String, Reader, Option<u64>), InputError> {
    let name = path.display().to_string();
    if name == "-" {
        if std::mem::replace(stdin_used, true) {
            return Err(InputError::StdinTwice);
        }
        return Ok((
            "stdin".into(),
            Box::new(BufReader::with_capacity(1 << 16, io::stdin())),
            None,
        ));
    }
    let io_err = |source| InputError::Io {
        path: name.clone(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let meta = file.metadata().map_err(io_err)?;
    if meta.is_dir() {
        return Err(io_err(io::Error::other("is a directory")));
    }
    // Counting lines first costs one fast extra read and gives the progress bar a real ETA.
    let estimate = if meta.is_file() {
        Some(count_lines(File::open(path).map_err(io_err)?).map_err(io_err)?)
    } else {
        None
    };
    Ok((
        name,
        Box::new(BufReader::with_capacity(1 << 16, file)),
        estimate,
    ))
}

fn count_lines(mut file: File) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 16];
    let mut lines = 0u64;
    let mut last = b'\n';
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
    }
    Ok(lines + u64::from(last != b'\n'))
}

impl Sources {
    /// Parses the arguments' ranges and opens the files.
    pub fn open(
        items: &[String],
        expand: bool,
        files: &[PathBuf],
        json_lines: &[PathBuf],
    ) -> Result<Self, InputError> {
        let mut kinds = Vec::new();
        let mut estimate = Some(0u64);
        let add = |estimate: &mut Option<u64>, n: Option<u64>| {
            *estimate = estimate.zip(n).map(|(a, b)| a.saturating_add(b));
        };
        if !items.is_empty() {
            let patterns = items
                .iter()
                .map(|arg| {
                    if expand {
                        Pattern::parse(arg)
                    } else {
                        Ok(Pattern::literal(arg))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            add(
                &mut estimate,
                Some(patterns.iter().fold(0u64, |n, p| n.saturating_add(p.len()))),
            );
            kinds.push(Kind::Args(patterns));
        }
        let mut stdin_used = false;
        for path in files {
            let (name, reader, n) = open_reader(path, &mut stdin_used)?;
            add(&mut estimate, n);
            kinds.push(Kind::Lines { name, reader });
        }
        for path in json_lines {
            let (name, reader, n) = open_reader(path, &mut stdin_used)?;
            add(&mut estimate, n);
            kinds.push(Kind::JsonLines { name, reader });
        }
        Ok(Self { kinds, estimate })
    }

    /// True when there is nothing to read.
    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// How many items to expect, when known without reading stdin (empty lines included).
    pub fn estimate(&self) -> Option<u64> {
        self.estimate
    }

    /// Reads every item in order and hands it to `emit`, which returns false to stop early
    /// (the senders are gone). `idempotent` gives keyless items their [`item_key`].
    pub fn for_each(
        self,
        idempotent: bool,
        mut emit: impl FnMut(Item) -> bool,
    ) -> Result<(), InputError> {
        for kind in self.kinds {
            let go_on = match kind {
                Kind::Args(patterns) => {
                    let mut ordinal = 0u64;
                    let mut go_on = true;
                    'args: for pattern in &patterns {
                        for body in pattern.iter() {
                            ordinal += 1;
                            let key = idempotent.then(|| item_key("args", ordinal, &body));
                            if !emit(Item { key, body }) {
                                go_on = false;
                                break 'args;
                            }
                        }
                    }
                    go_on
                }
                Kind::Lines { name, reader } => read_lines(&name, reader, |line, text| {
                    if text.is_empty() {
                        // As the server's batch=lines does: an empty line is not an item.
                        return Ok(true);
                    }
                    let key = idempotent.then(|| item_key(&name, line, text));
                    Ok(emit(Item {
                        key,
                        body: text.to_string(),
                    }))
                })?,
                Kind::JsonLines { name, reader } => read_lines(&name, reader, |line, text| {
                    if text.trim().is_empty() {
                        return Ok(true);
                    }
                    let mut item = parse_json_line(text)?;
                    if item.key.is_none() && idempotent {
                        item.key = Some(item_key(&name, line, &item.body));
                    }
                    Ok(emit(item))
                })?,
            };
            if !go_on {
                break;
            }
        }
        Ok(())
    }
}

/// Calls `f(line_number, text)` for each line (without its `\n` / `\r\n`) until it returns false.
fn read_lines(
    name: &str,
    mut reader: Reader,
    mut f: impl FnMut(u64, &str) -> Result<bool, String>,
) -> Result<bool, InputError> {
    let mut buf = Vec::with_capacity(256);
    let mut line = 0u64;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| InputError::Io {
                path: name.to_string(),
                source,
            })?;
        if n == 0 {
            return Ok(true);
        }
        line += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        }
        let text = std::str::from_utf8(&buf).map_err(|e| InputError::Line {
            path: name.to_string(),
            line,
            why: format!("not UTF-8 text ({e})"),
        })?;
        let go_on = f(line, text).map_err(|why| InputError::Line {
            path: name.to_string(),
            line,
            why,
        })?;
        if !go_on {
            return Ok(false);
        }
    }
}

/// One JSON Lines entry: a string is the body; `{"body":TEXT}` or `{"id":KEY,"body":TEXT}` is a
/// body with an optional key; any other JSON value is sent as its own (compact) JSON text, so
/// a file of JSON documents enqueues one document per item.
pub fn parse_json_line(text: &str) -> Result<Item, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    match value {
        serde_json::Value::String(body) => Ok(Item { key: None, body }),
        serde_json::Value::Object(map)
            if map.get("body").is_some_and(|b| b.is_string())
                && map.keys().all(|k| k == "id" || k == "body") =>
        {
            let key = match map.get("id") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(id)) if !id.is_empty() => Some(id.clone()),
                Some(_) => return Err("\"id\" must be a non-empty string".into()),
            };
            let body = map["body"].as_str().unwrap_or_default().to_string();
            Ok(Item { key, body })
        }
        other => Ok(Item {
            key: None,
            body: other.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(sources: Sources, idempotent: bool) -> Vec<Item> {
        let mut out = Vec::new();
        sources
            .for_each(idempotent, |item| {
                out.push(item);
                true
            })
            .unwrap();
        out
    }

    fn temp_file(name: &str, content: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("memq-producer-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn keys_are_stable_and_depend_on_source_line_and_text() {
        let k = item_key("items.txt", 7, "work-item-7");
        assert_eq!(k, item_key("items.txt", 7, "work-item-7"));
        assert_eq!(k.len(), 33);
        assert!(k.starts_with('p') && k[1..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(k, item_key("items.txt", 8, "work-item-7"));
        assert_ne!(k, item_key("other.txt", 7, "work-item-7"));
        assert_ne!(k, item_key("items.txt", 7, "work-item-8"));
        // Field boundaries matter.
        assert_ne!(item_key("a1", 1, "x"), item_key("a", 11, "x"));
        // Pinned (computed independently) so that a change of the recipe, which would defeat
        // dedup between producer versions, cannot slip in.
        assert_eq!(
            item_key("args", 1, "a"),
            "p57b16c6922a05aafe48214fb157e8ab4"
        );
    }

    #[test]
    fn arguments_expand_in_order_with_positional_keys() {
        let args = vec!["a".to_string(), "b{1..2}".to_string()];
        let s = Sources::open(&args, true, &[], &[]).unwrap();
        assert_eq!(s.estimate(), Some(3));
        let items = collect(s, true);
        let bodies: Vec<_> = items.iter().map(|i| i.body.as_str()).collect();
        assert_eq!(bodies, ["a", "b1", "b2"]);
        assert_eq!(
            items[2].key.as_deref(),
            Some(item_key("args", 3, "b2").as_str())
        );
        let literal = collect(
            Sources::open(&["b{1..2}".into()], false, &[], &[]).unwrap(),
            false,
        );
        assert_eq!(
            literal,
            [Item {
                key: None,
                body: "b{1..2}".into()
            }]
        );
    }

    #[test]
    fn files_give_one_item_per_non_empty_line() {
        let path = temp_file("lines", "one\r\ntwo\n\nthree");
        let s = Sources::open(&[], true, std::slice::from_ref(&path), &[]).unwrap();
        assert_eq!(s.estimate(), Some(4));
        let items = collect(s, true);
        let bodies: Vec<_> = items.iter().map(|i| i.body.as_str()).collect();
        assert_eq!(bodies, ["one", "two", "three"]);
        let name = path.display().to_string();
        assert_eq!(
            items[2].key.as_deref(),
            Some(item_key(&name, 4, "three").as_str())
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn missing_files_and_bad_ranges_fail_before_reading() {
        let err =
            Sources::open(&[], true, &[PathBuf::from("/no/such/items.txt")], &[]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /no/such/items.txt"),
            "{err}"
        );
        let err = Sources::open(&["x-{1..y}".into()], true, &[], &[]).unwrap_err();
        assert!(matches!(err, InputError::Range(_)));
        let err = Sources::open(&[], true, &["-".into()], &["-".into()]).unwrap_err();
        assert!(matches!(err, InputError::StdinTwice));
    }

    #[test]
    fn json_lines_take_strings_envelopes_and_documents() {
        assert_eq!(
            parse_json_line(r#""a b""#).unwrap(),
            Item {
                key: None,
                body: "a b".into()
            }
        );
        assert_eq!(
            parse_json_line(r#"{"id":"k1","body":"x\ny"}"#).unwrap(),
            Item {
                key: Some("k1".into()),
                body: "x\ny".into()
            }
        );
        assert_eq!(
            parse_json_line(r#"{"body":"x"}"#).unwrap(),
            Item {
                key: None,
                body: "x".into()
            }
        );
        assert_eq!(
            parse_json_line(r#"{"user": 7, "body": "x"}"#).unwrap(),
            Item {
                key: None,
                body: r#"{"body":"x","user":7}"#.into()
            }
        );
        assert_eq!(parse_json_line("42").unwrap().body, "42");
        assert!(
            parse_json_line("{nope")
                .unwrap_err()
                .starts_with("not JSON")
        );
        assert!(parse_json_line(r#"{"id":5,"body":"x"}"#).is_err());
    }

    #[test]
    fn a_bad_json_line_names_file_and_line() {
        let path = temp_file("jsonl", "\"ok\"\n\n{broken\n");
        let s = Sources::open(&[], false, &[], std::slice::from_ref(&path)).unwrap();
        let err = s.for_each(false, |_| true).unwrap_err();
        assert_eq!(
            err.to_string().split(':').next().unwrap(),
            format!("{} line 3", path.display())
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn stopping_early_stops_reading() {
        let s = Sources::open(&["{1..1000000}".into()], true, &[], &[]).unwrap();
        let mut seen = 0;
        s.for_each(false, |_| {
            seen += 1;
            seen < 5
        })
        .unwrap();
        assert_eq!(seen, 5);
    }
}
