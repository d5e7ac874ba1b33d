//! Reading the script's replies: every reply opens with the same header (status, Redis's now,
//! the queue's next deadline, items readied, more to sweep), then the op's own values.

use redis::Value;

use crate::broker::Id;
use crate::error::{Error, Result};

/// A reply of `queue.lua`.
#[derive(Debug)]
pub(super) struct Reply {
    /// `ok`, `no_queue`, `full`, `empty`, `paused`.
    pub status: String,
    /// Redis's clock when the script ran, ms since the epoch.
    pub now: u64,
    /// Earliest lease deadline or delay of the queue (0: none), Redis clock.
    pub next: u64,
    /// Items that became ready; -1: every waiter must look again.
    pub readied: i64,
    /// The sweep stopped at its limit: sweep again soon.
    pub more: bool,
    /// The op's own values.
    pub rest: Vec<Value>,
}

pub(super) fn malformed(what: &str) -> Error {
    Error::BackendUnavailable(format!("unexpected reply from the Redis script: {what}"))
}

impl Reply {
    pub(super) fn parse(value: Value) -> Result<Self> {
        let Value::Array(mut parts) = value else {
            return Err(malformed("not an array"));
        };
        if parts.len() < 5 {
            return Err(malformed("short header"));
        }
        let rest = parts.split_off(5);
        let mut header = parts.into_iter();
        let mut next = || header.next().expect("five header values");
        Ok(Reply {
            status: text(next())?,
            now: uint(&next())?,
            next: uint(&next())?,
            readied: int(&next())?,
            more: int(&next())? != 0,
            rest,
        })
    }

    /// The `i`th value after the header.
    pub(super) fn at(&self, i: usize) -> Result<&Value> {
        self.rest.get(i).ok_or_else(|| malformed("missing value"))
    }
}

pub(super) fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed("not a number")),
        Value::Nil => Ok(0),
        _ => Err(malformed("not a number")),
    }
}

pub(super) fn uint(v: &Value) -> Result<u64> {
    Ok(int(v)?.max(0) as u64)
}

pub(super) fn text(v: Value) -> Result<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).map_err(|_| malformed("not UTF-8")),
        Value::SimpleString(s) => Ok(s),
        Value::Okay => Ok("OK".into()),
        Value::Nil => Ok(String::new()),
        Value::Int(i) => Ok(i.to_string()),
        _ => Err(malformed("not a string")),
    }
}

pub(super) fn id(v: Value) -> Result<Id> {
    let t = text(v)?;
    Id::parse(&t).ok_or_else(|| malformed("not an id"))
}

/// An array value, taken apart.
pub(super) fn array(v: Value) -> Result<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        // An empty Lua table comes back as an empty array, but be lenient about nil.
        Value::Nil => Ok(Vec::new()),
        _ => Err(malformed("not an array")),
    }
}

/// Groups a flat array into tuples of `n` values.
pub(super) fn groups(v: Value, n: usize) -> Result<Vec<Vec<Value>>> {
    let flat = array(v)?;
    if flat.len() % n != 0 {
        return Err(malformed("ragged array"));
    }
    let mut out = Vec::with_capacity(flat.len() / n);
    let mut it = flat.into_iter();
    loop {
        let group: Vec<Value> = it.by_ref().take(n).collect();
        if group.is_empty() {
            return Ok(out);
        }
        out.push(group);
    }
}
