//! What the journal holds and how it is framed on disk.
//!
//! After its header (see [`super::format`]; format-1 segments have none), a segment file is a
//! sequence of frames `[len: u32 LE][crc32: u32 LE][payload: len bytes]`; the payload is a
//! postcard-encoded [`Record`] (format 1: a [`v1::Record`]). A frame that is cut short or whose
//! checksum does not match ends the readable part of the log. The writer grows a segment with
//! zeros ahead of its records, so a segment may end in zeros: a frame header of zeros followed
//! by nothing but zeros is the clean end of the segment (no record encodes to an empty
//! payload). Snapshots of format 2 frame their queues the same way.

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
        /// The queue's id generator position before the op, for ops that make ids (items,
        /// leases): replay continues from it, so a record skipped by a repair shifts no later
        /// id, and the ids it made are known.
        ids: Option<(u64, u128)>,
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
        /// The id generator's position before the op, when it makes ids.
        ids: Option<(u64, u128)>,
        /// The op.
        op: Op,
    },
}

impl Record {
    /// The record as written, borrowing from this one.
    pub fn as_ref(&self) -> RecordRef<'_> {
        match self {
            Record::Create { queue, config, ids } => RecordRef::Create {
                queue,
                config,
                ids: *ids,
            },
            Record::Delete { queue } => RecordRef::Delete { queue },
            Record::Apply {
                queue,
                now,
                ids,
                op,
            } => RecordRef::Apply {
                queue,
                now: *now,
                ids: *ids,
                op,
            },
        }
    }

    /// What the record did, in a few words (what a repair reports as lost).
    pub fn summary(&self) -> String {
        match self {
            Record::Create { queue, .. } => format!("queue {queue}: created"),
            Record::Delete { queue } => format!("queue {queue}: deleted"),
            Record::Apply { queue, op, .. } => format!("queue {queue}: {}", op.summary()),
        }
    }
}

/// The records of data format 1 (queue-server 0.1.0): today's, but for the id generator's
/// position, which their `Apply` did not carry. The types inside (`Op`, `QueueConfig`) are
/// today's: they still encode as they did then (the golden sets of format 1 hold them to it);
/// a change to their encoding moves their old shape here.
pub mod v1 {
    use serde::Deserialize;

    use crate::broker::{Op, QueueConfig};

    /// A format-1 record.
    #[derive(Debug, Deserialize)]
    pub enum Record {
        /// A queue was created.
        Create {
            /// Name.
            queue: String,
            /// Settings.
            config: QueueConfig,
            /// Id generator start.
            ids: (u64, u128),
        },
        /// A queue was deleted.
        Delete {
            /// Name.
            queue: String,
        },
        /// An op was applied.
        Apply {
            /// Name.
            queue: String,
            /// Time of the op.
            now: u64,
            /// The op.
            op: Op,
        },
    }

    impl From<Record> for super::Record {
        fn from(r: Record) -> Self {
            match r {
                Record::Create { queue, config, ids } => Self::Create { queue, config, ids },
                Record::Delete { queue } => Self::Delete { queue },
                Record::Apply { queue, now, op } => Self::Apply {
                    queue,
                    now,
                    ids: None,
                    op,
                },
            }
        }
    }
}

/// How a segment's records are encoded: by the data format it was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Data format 1: [`v1::Record`].
    V1,
    /// Data format 2: [`Record`].
    V2,
}

impl Encoding {
    /// Decodes one record's payload.
    pub fn decode(self, payload: &[u8]) -> Result<Record, String> {
        match self {
            Encoding::V1 => postcard::from_bytes::<v1::Record>(payload).map(Record::from),
            Encoding::V2 => postcard::from_bytes::<Record>(payload),
        }
        .map_err(|e| e.to_string())
    }
}

/// Appends `value` to `buf` as one frame.
pub fn frame_value<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[0; FRAME_HEADER]);
    // postcard appends to a buffer it takes by value; hand it back into the caller's slot.
    *buf = postcard::to_extend(value, std::mem::take(buf)).expect("encoding to memory cannot fail");
    let payload = &buf[start + FRAME_HEADER..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends `record` to `buf` as one frame.
pub fn frame(record: &RecordRef<'_>, buf: &mut Vec<u8>) {
    frame_value(record, buf);
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
    /// The payload does not decode.
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

/// What a run of frames holds.
pub struct Frames<T = Record> {
    /// The readable payloads, decoded, in order.
    pub records: Vec<T>,
    /// Where and why reading stopped early, if it did.
    pub damage: Option<(usize, Damage)>,
    /// Where the records end: the damage, the start of the zeroed tail, or the end.
    pub end: usize,
}

/// Reads the frames of records of the current format up to the end or the first damage.
pub fn read_frames(data: &[u8]) -> Frames {
    read_frames_with(data, |payload| Encoding::V2.decode(payload))
}

/// Reads frames whose payloads `decode` accepts, up to the end of `data` or its first damage.
pub fn read_frames_with<T>(data: &[u8], decode: impl Fn(&[u8]) -> Result<T, String>) -> Frames<T> {
    let mut records = Vec::new();
    let mut at = 0;
    let damage = loop {
        if at >= data.len() {
            break None;
        }
        let rest = &data[at..];
        if rest.len() < FRAME_HEADER || rest[..4] == [0; 4] {
            if rest.iter().all(|&b| b == 0) {
                // The zeros the writer put ahead of its records: nothing was written here yet.
                break None;
            }
            if rest.len() < FRAME_HEADER {
                break Some(Damage::Torn);
            }
        }
        let len = u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes"));
        if len > MAX_FRAME {
            break Some(Damage::Length(len));
        }
        let body = at + FRAME_HEADER;
        if data.len() - body < len {
            break Some(Damage::Torn);
        }
        let payload = &data[body..body + len];
        if crc32fast::hash(payload) != crc {
            break Some(Damage::Checksum);
        }
        match decode(payload) {
            Ok(record) => records.push(record),
            Err(e) => break Some(Damage::Decode(e)),
        }
        at = body + len;
    };
    Frames {
        records,
        damage: damage.map(|why| (at, why)),
        end: at,
    }
}

/// The end of the whole, valid frame that starts at `at`, if one does: a length that fits, a
/// matching checksum, a payload that `accept`s.
fn frame_at(data: &[u8], at: usize, accept: &impl Fn(&[u8]) -> bool) -> Option<usize> {
    let header = data.get(at..at.checked_add(FRAME_HEADER)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len == 0 || len > MAX_FRAME {
        return None;
    }
    let end = at + FRAME_HEADER + len;
    let payload = data.get(at + FRAME_HEADER..end)?;
    if crc32fast::hash(payload) != crc || !accept(payload) {
        return None;
    }
    Some(end)
}

/// The valid frames of current-format records in `data` from `from` on: see
/// [`valid_frames_with`].
pub fn valid_frames_from(data: &[u8], from: usize) -> Vec<(usize, usize)> {
    valid_frames_with(data, from, |p| Encoding::V2.decode(p).is_ok())
}

/// The valid frames in `data` from `from` on, `(start, end)` each, as found after damage: every
/// byte offset is tried until a valid frame starts there (its payload `accept`ed), frames are
/// read one after another from it, and the search goes on past any further damage. A false
/// find needs a 32-bit checksum to match by chance and the bytes to decode as well.
pub fn valid_frames_with(
    data: &[u8],
    from: usize,
    accept: impl Fn(&[u8]) -> bool,
) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut at = from;
    while at < data.len() {
        match frame_at(data, at, &accept) {
            Some(end) => {
                found.push((at, end));
                at = end;
            }
            None => at += 1,
        }
    }
    found
}

/// What reading any bytes must satisfy; panics otherwise. Shared by the property test below
/// and the fuzz target (`fuzz/fuzz_targets/journal_frames.rs`).
#[doc(hidden)]
pub fn check_invariants(data: &[u8]) {
    let frames = read_frames(data);
    assert!(frames.end <= data.len(), "records end past the data");
    let readable = match &frames.damage {
        Some((at, _)) => {
            assert_eq!(*at, frames.end, "records end elsewhere than the damage");
            *at
        }
        None => {
            assert!(
                data[frames.end..].iter().all(|&b| b == 0),
                "undamaged data ends before its last non-zero byte"
            );
            data.len()
        }
    };
    // The readable part alone reads to the same records, without damage.
    let prefix = read_frames(&data[..readable]);
    assert!(
        prefix.damage.is_none(),
        "the part before the damage is damaged"
    );
    assert_eq!(prefix.records.len(), frames.records.len());
    // What was read, written again, reads back to as many records.
    let mut again = Vec::new();
    for record in &frames.records {
        frame(&record.as_ref(), &mut again);
    }
    let back = read_frames(&again);
    assert!(back.damage.is_none(), "re-framed records are damaged");
    assert_eq!(back.records.len(), frames.records.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{Id, NewItem};

    fn lease(rng: &mut fastrand::Rng) -> Id {
        let text: String = (0..26)
            .map(|_| b"0123456789ABCDEFGHJKMNPQRSTVWXYZ"[rng.usize(..32)] as char)
            .collect();
        // The first character of a ULID is at most 7.
        Id::parse(&format!("{}{}", rng.usize(..8), &text[1..])).expect("a valid ULID")
    }

    /// One encoded frame of a random record.
    fn random_frame(rng: &mut fastrand::Rng) -> Vec<u8> {
        let body = "é-item-".repeat(rng.usize(..4));
        let op = match rng.usize(..9) {
            0 => Op::Enqueue {
                items: (0..rng.usize(..4))
                    .map(|i| NewItem {
                        body: format!("{body}{i}").into(),
                        key: (i % 2 == 0).then(|| format!("k{i}").into()),
                    })
                    .collect(),
                delay_ms: rng.u64(..) % 1000,
            },
            1 => Op::Dequeue {
                max: rng.usize(..1000) as u32,
                lease_ms: (rng.usize(..2) == 0).then_some(30_000),
            },
            2 => Op::Ack {
                leases: (0..rng.usize(..3)).map(|_| lease(rng)).collect(),
            },
            3 => Op::Nack {
                lease: lease(rng),
                delay_ms: 5,
            },
            4 => Op::Drain,
            5 => Op::NackMany {
                leases: (0..rng.usize(..3)).map(|_| lease(rng)).collect(),
                delay_ms: rng.u64(..) % 1000,
            },
            6 => Op::ExtendMany {
                leases: (0..rng.usize(..3)).map(|_| lease(rng)).collect(),
                lease_ms: 30_000,
            },
            7 => Op::Release {
                leases: (0..rng.usize(..3)).map(|_| lease(rng)).collect(),
            },
            _ => Op::SetPaused(rng.usize(..2) == 0),
        };
        let mut buf = Vec::new();
        match rng.usize(..4) {
            0 => frame(&RecordRef::Delete { queue: "q" }, &mut buf),
            1 => frame(
                &RecordRef::Create {
                    queue: "q.1",
                    config: &QueueConfig::default(),
                    ids: (rng.u64(..), u128::from(rng.u64(..))),
                },
                &mut buf,
            ),
            _ => frame(
                &RecordRef::Apply {
                    queue: "keygen",
                    now: rng.u64(..),
                    ids: rng.bool().then(|| (rng.u64(..), u128::from(rng.u64(..)))),
                    op: &op,
                },
                &mut buf,
            ),
        }
        buf
    }

    #[test]
    fn damaged_journals_read_to_their_last_whole_record_a_few_thousand_cases() {
        for seed in 1..=3000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let frames: Vec<Vec<u8>> = (0..1 + rng.usize(..6))
                .map(|_| random_frame(&mut rng))
                .collect();
            let data: Vec<u8> = frames.concat();
            let read = read_frames(&data);
            assert!(read.damage.is_none(), "seed {seed}: intact journal");
            assert_eq!(read.records.len(), frames.len(), "seed {seed}");
            for (record, bytes) in read.records.iter().zip(&frames) {
                let mut again = Vec::new();
                frame(&record.as_ref(), &mut again);
                assert_eq!(&again, bytes, "seed {seed}: a record reads back as written");
            }
            // Cut anywhere: every whole frame before the cut is read, then a torn tail.
            let cut = rng.usize(..data.len() + 1);
            let whole = frames
                .iter()
                .scan(0, |end, f| {
                    *end += f.len();
                    Some(*end)
                })
                .filter(|&end| end <= cut)
                .count();
            let torn = read_frames(&data[..cut]);
            assert_eq!(torn.records.len(), whole, "seed {seed}: cut at {cut}");
            let at_boundary = cut == frames[..whole].iter().map(Vec::len).sum::<usize>();
            assert_eq!(
                torn.damage.is_some(),
                !at_boundary,
                "seed {seed}: cut at {cut}"
            );
            // The same cut followed by the zeros the writer grows a segment with: the zeros
            // end the segment cleanly; a torn frame before them is still damage.
            let boundary = frames[..whole].iter().map(Vec::len).sum::<usize>();
            let mut padded = data[..cut].to_vec();
            padded.resize(cut + 1 + rng.usize(..64), 0);
            let tail = read_frames(&padded);
            // Unless the zeros happen to be what the cut frame held past the cut: then it is
            // whole again.
            let restored = frames.get(whole).is_some_and(|f| {
                let end = boundary + f.len();
                end <= padded.len() && data[cut..end].iter().all(|&b| b == 0)
            });
            let (n, end) = if restored {
                (whole + 1, boundary + frames[whole].len())
            } else {
                (whole, boundary)
            };
            assert_eq!(tail.records.len(), n, "seed {seed}: zeros after {cut}");
            assert_eq!(tail.end, end, "seed {seed}: zeros after {cut}");
            let nothing_torn = restored || data[boundary..cut].iter().all(|&b| b == 0);
            assert_eq!(
                tail.damage.is_none(),
                nothing_torn,
                "seed {seed}: zeros after {cut}"
            );
            // Flip one byte: the frames before it are read, none after it.
            let mut flipped = data.clone();
            let at = rng.usize(..data.len());
            flipped[at] ^= 1 << rng.usize(..8);
            let before = frames
                .iter()
                .scan(0, |end, f| {
                    *end += f.len();
                    Some(*end)
                })
                .filter(|&end| end <= at)
                .count();
            let hurt = read_frames(&flipped);
            assert!(hurt.records.len() >= before, "seed {seed}: flip at {at}");
            assert!(
                hurt.records.len() <= before + 1,
                "seed {seed}: flip at {at}"
            );
            // After the damage, the search finds exactly the frames after the damaged one.
            if let Some((x, _)) = hurt.damage {
                let bounds: Vec<(usize, usize)> = frames
                    .iter()
                    .scan(0, |end, f| {
                        let start = *end;
                        *end += f.len();
                        Some((start, *end))
                    })
                    .collect();
                let after: Vec<(usize, usize)> =
                    bounds.iter().copied().filter(|&(s, _)| s > x).collect();
                assert_eq!(
                    valid_frames_from(&flipped, x + 1),
                    after,
                    "seed {seed}: flip at {at}"
                );
            }
            for bytes in [&data[..], &data[..cut], &flipped[..], &padded[..]] {
                check_invariants(bytes);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        for seed in 1..=2000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let len = rng.usize(..64);
            let mut data: Vec<u8> = (0..len).map(|_| rng.u64(..) as u8).collect();
            // Often a plausible header: a small length with the right checksum.
            if len >= 8 && rng.usize(..2) == 0 {
                let payload = len - 8;
                data[..4].copy_from_slice(&(payload as u32).to_le_bytes());
                let crc = crc32fast::hash(&data[8..]);
                data[4..8].copy_from_slice(&crc.to_le_bytes());
            }
            check_invariants(&data);
        }
    }
}
