//! What the journal holds and how it is framed on disk.
//!
//! A segment file is a sequence of frames `[len: u32 LE][crc32: u32 LE][payload: len bytes]`;
//! the payload is a postcard-encoded [`Record`]. A frame that is cut short or whose checksum does
//! not match ends the readable part of the log.

use serde::{Deserialize, Serialize};

use crate::broker::{Op, QueueConfig};

/// Largest payload a frame may claim; anything bigger is damage, not data.
pub const MAX_FRAME: usize = 1 << 30;
/// Bytes before the payload.
pub const FRAME_HEADER: usize = 8;

/// A record as written, borrowing what it describes.
#[derive(Debug, Serialize)]
pub enum RecordRef<'a> {
    /// A queue was created.
    Create {
        /// Name.
        queue: &'a str,
        /// Settings.
        config: &'a QueueConfig,
        /// Id generator start.
        ids: (u64, u128),
    },
    /// A queue was deleted.
    Delete {
        /// Name.
        queue: &'a str,
    },
    /// An op was applied to a queue at `now`.
    Apply {
        /// Name.
        queue: &'a str,
        /// Time of the op (ms since epoch).
        now: u64,
        /// The op.
        op: &'a Op,
    },
}

/// A record as read back (same encoding as [`RecordRef`]).
#[derive(Debug, Deserialize)]
pub enum Record {
    /// See [`RecordRef::Create`].
    Create {
        /// Name.
        queue: String,
        /// Settings.
        config: QueueConfig,
        /// Id generator start.
        ids: (u64, u128),
    },
    /// See [`RecordRef::Delete`].
    Delete {
        /// Name.
        queue: String,
    },
    /// See [`RecordRef::Apply`].
    Apply {
        /// Name.
        queue: String,
        /// Time of the op.
        now: u64,
        /// The op.
        op: Op,
    },
}

/// Appends `record` to `buf` as one frame.
pub fn frame(record: &RecordRef<'_>, buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER]);
    // postcard appends to a buffer it takes by value; hand it back into the caller's slot.
    *buf =
        postcard::to_extend(record, std::mem::take(buf)).expect("encoding to memory cannot fail");
    let payload = &buf[start + FRAME_HEADER..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Why reading a segment stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The last frame is cut short (a torn write).
    Torn,
    /// A frame's checksum does not match.
    Checksum,
    /// A frame claims an impossible length.
    Length(usize),
    /// The payload does not decode as a record.
    Decode(String),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Torn => f.write_str("record cut short (torn write)"),
            Damage::Checksum => f.write_str("checksum mismatch"),
            Damage::Length(n) => write!(f, "impossible record length {n}"),
            Damage::Decode(e) => write!(f, "record does not decode: {e}"),
        }
    }
}

/// What a segment holds.
pub struct Frames {
    /// The readable records, in order.
    pub records: Vec<Record>,
    /// Where and why reading stopped early, if it did.
    pub damage: Option<(usize, Damage)>,
}

/// Reads the frames of a segment up to its end or its first damage.
pub fn read_frames(data: &[u8]) -> Frames {
    let (records, damage) = read(data);
    Frames { records, damage }
}

fn read(data: &[u8]) -> (Vec<Record>, Option<(usize, Damage)>) {
    let mut records = Vec::new();
    let mut at = 0;
    while at < data.len() {
        if data.len() - at < FRAME_HEADER {
            return (records, Some((at, Damage::Torn)));
        }
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        if len > MAX_FRAME {
            return (records, Some((at, Damage::Length(len))));
        }
        let body = at + FRAME_HEADER;
        if data.len() - body < len {
            return (records, Some((at, Damage::Torn)));
        }
        let payload = &data[body..body + len];
        if crc32fast::hash(payload) != crc {
            return (records, Some((at, Damage::Checksum)));
        }
        match postcard::from_bytes::<Record>(payload) {
            Ok(record) => records.push(record),
            Err(e) => return (records, Some((at, Damage::Decode(e.to_string())))),
        }
        at = body + len;
    }
    (records, None)
}
