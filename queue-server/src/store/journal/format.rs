//! The versions of the data directory's format, and the header every file of format 2 or later
//! starts with.
//!
//! Format 1 (queue-server 0.1.0): journal segments are bare frames from their first byte; a
//! snapshot is `MEMQSNAP`, version 1, its queues and one checksum over the whole file; the
//! dedup window of the journal lives in a file of its own, `dedup-window-ms`.
//!
//! Format 2: every segment and snapshot starts with a header, `[magic: 8 bytes][version: u32
//! LE][options length: u32 LE][options: postcard][crc32 of the header so far: u32 LE]`. The
//! options are what reading the rest needs: the dedup window the records were written with
//! (replay decides duplicates again) and, in a snapshot, how many queues follow. A segment's
//! records carry the position of their queue's id generator (see [`super::record`]); a
//! snapshot's queues are frames with a checksum each. Every later version keeps this header's
//! shape, so that a release can tell a newer file from a damaged one and name its version.
//!
//! This module never panics on any input: `fuzz/fuzz_targets/segment_header.rs` and the
//! property test below hold it to that.

use serde::{Deserialize, Serialize};

/// The data directory format this release writes.
pub const DATA_FORMAT: u32 = 2;
/// The oldest format this release reads.
pub const OLDEST_DATA_FORMAT: u32 = 1;

/// The first bytes of a journal segment (format 2 on).
pub const SEGMENT_MAGIC: &[u8; 8] = b"MEMQJRNL";
/// The first bytes of a snapshot (every format).
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"MEMQSNAP";

/// Bytes of a header before its options: magic, version, options length.
const FIXED: usize = 16;
/// Most bytes of options a header may claim; anything longer is damage.
const MAX_OPTIONS: usize = 4096;

/// What reading the rest of a file needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// How long a dedup key stays taken after its item left, in ms, when the file was written.
    pub dedup_window_ms: u64,
    /// In a snapshot, how many queues follow; 0 in a segment.
    pub entries: u64,
}

/// A header read from the start of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version.
    pub version: u32,
    /// Its options.
    pub options: Options,
    /// Its length in bytes: where the rest of the file starts.
    pub len: usize,
}

/// Why a file's start is not a header this release reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The file does not start with the magic: another program's file (or a format-1
    /// segment, which has no header).
    NotOurs {
        /// Its first bytes, in hex.
        start: String,
    },
    /// The file ends inside its header.
    Truncated {
        /// Bytes there are.
        have: usize,
        /// Bytes the header needs.
        need: usize,
    },
    /// The header's checksum does not match, or its options do not decode.
    Damaged(String),
    /// Written by a newer release, in a format this one does not read.
    Newer(u32),
    /// A version no release wrote.
    Unknown(u32),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::NotOurs { start } => {
                write!(f, "not a file of queue-server (it starts with {start})")
            }
            HeaderError::Truncated { have, need } => write!(
                f,
                "its header is cut short ({have} of its {need} bytes are there)"
            ),
            HeaderError::Damaged(why) => write!(f, "its header is damaged ({why})"),
            HeaderError::Newer(v) => write!(
                f,
                "it is in data format {v}, written by a newer release; this release reads formats {OLDEST_DATA_FORMAT} to {DATA_FORMAT}"
            ),
            HeaderError::Unknown(v) => write!(
                f,
                "its header names data format {v}, which no release wrote"
            ),
        }
    }
}

/// The header of the current format for a file starting with `magic`.
pub fn encode(magic: &[u8; 8], options: &Options) -> Vec<u8> {
    let options = postcard::to_allocvec(options).expect("encoding to memory cannot fail");
    let mut out = Vec::with_capacity(FIXED + options.len() + 4);
    out.extend_from_slice(magic);
    out.extend_from_slice(&DATA_FORMAT.to_le_bytes());
    out.extend_from_slice(&(options.len() as u32).to_le_bytes());
    out.extend_from_slice(&options);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn u32_at(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(data[at..at + 4].try_into().expect("4 bytes"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The magic and version at the start of `data`, when it has both: for a format-1 snapshot,
/// whose header is only these.
pub fn magic_and_version(magic: &[u8; 8], data: &[u8]) -> Result<u32, HeaderError> {
    let have = data.len().min(8);
    if data[..have] != magic[..have] {
        return Err(HeaderError::NotOurs {
            start: hex(&data[..data.len().min(8)]),
        });
    }
    if data.len() < 12 {
        return Err(HeaderError::Truncated {
            have: data.len(),
            need: FIXED,
        });
    }
    Ok(u32_at(data, 8))
}

/// Reads the header of format 2 or later at the start of `data`.
pub fn parse(magic: &[u8; 8], data: &[u8]) -> Result<Header, HeaderError> {
    let version = magic_and_version(magic, data)?;
    if data.len() < FIXED {
        return Err(HeaderError::Truncated {
            have: data.len(),
            need: FIXED,
        });
    }
    let options_len = u32_at(data, 12) as usize;
    if options_len > MAX_OPTIONS {
        return Err(HeaderError::Damaged(format!(
            "it claims {options_len} bytes of options"
        )));
    }
    let len = FIXED + options_len + 4;
    if data.len() < len {
        return Err(HeaderError::Truncated {
            have: data.len(),
            need: len,
        });
    }
    if crc32fast::hash(&data[..len - 4]) != u32_at(data, len - 4) {
        return Err(HeaderError::Damaged("checksum mismatch".into()));
    }
    match version {
        v if v > DATA_FORMAT => return Err(HeaderError::Newer(v)),
        2 => {}
        v => return Err(HeaderError::Unknown(v)),
    }
    let options = postcard::from_bytes(&data[FIXED..len - 4])
        .map_err(|e| HeaderError::Damaged(format!("its options do not decode: {e}")))?;
    Ok(Header {
        version,
        options,
        len,
    })
}

/// What reading any bytes as a header must satisfy; panics otherwise. Shared by the property
/// test below and the fuzz target (`fuzz/fuzz_targets/segment_header.rs`).
#[doc(hidden)]
pub fn check_invariants(data: &[u8]) {
    for magic in [SEGMENT_MAGIC, SNAPSHOT_MAGIC] {
        match parse(magic, data) {
            Ok(header) => {
                assert!(header.len <= data.len(), "the header ends past the data");
                assert_eq!(header.version, DATA_FORMAT);
                assert_eq!(
                    encode(magic, &header.options),
                    data[..header.len],
                    "a header reads back as it is written"
                );
                // What follows the header does not change it.
                assert_eq!(parse(magic, &data[..header.len]), Ok(header));
            }
            Err(HeaderError::Truncated { have, need }) => {
                assert_eq!(have, data.len());
                assert!(need > have, "cut short, yet all there");
            }
            Err(HeaderError::NotOurs { .. }) => {
                assert!(!magic.starts_with(&data[..data.len().min(8)]));
            }
            Err(HeaderError::Newer(v)) => assert!(v > DATA_FORMAT),
            Err(HeaderError::Unknown(v)) => assert!(v < DATA_FORMAT),
            Err(HeaderError::Damaged(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(rng: &mut fastrand::Rng) -> Options {
        Options {
            dedup_window_ms: rng.u64(..),
            entries: rng.u64(..1 << 20),
        }
    }

    #[test]
    fn headers_read_back_as_written_and_every_damage_is_named() {
        for seed in 1..=3000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let magic = if rng.bool() {
                SEGMENT_MAGIC
            } else {
                SNAPSHOT_MAGIC
            };
            let opts = options(&mut rng);
            let header = encode(magic, &opts);
            let mut file = header.clone();
            file.extend((0..rng.usize(..64)).map(|_| rng.u8(..)));
            let read = parse(magic, &file).expect("a header as written");
            assert_eq!(
                (read.options, read.len),
                (opts, header.len()),
                "seed {seed}"
            );

            // Cut anywhere inside: cut short, or (under 8 bytes of magic) not yet ours.
            let cut = rng.usize(..header.len());
            match parse(magic, &file[..cut]) {
                Err(HeaderError::Truncated { have, .. }) => assert_eq!(have, cut),
                other => panic!("seed {seed}: cut at {cut}: {other:?}"),
            }
            // One byte changed: never read as a header of this format with other options.
            let mut hurt = file.clone();
            let at = rng.usize(..header.len());
            hurt[at] ^= 1 << rng.usize(..8);
            match parse(magic, &hurt) {
                Err(HeaderError::NotOurs { .. }) => assert!(at < 8, "seed {seed}"),
                Err(HeaderError::Damaged(_) | HeaderError::Truncated { .. }) => {}
                other => panic!("seed {seed}: byte {at} changed: {other:?}"),
            }
            // A newer version, written whole: named as newer.
            let newer = DATA_FORMAT + 1 + rng.u32(..1000);
            let mut later = file[..header.len() - 4].to_vec();
            later[8..12].copy_from_slice(&newer.to_le_bytes());
            let crc = crc32fast::hash(&later);
            later.extend_from_slice(&crc.to_le_bytes());
            assert_eq!(parse(magic, &later), Err(HeaderError::Newer(newer)));
            // The other kind's magic is another program's file.
            let other = if magic == SEGMENT_MAGIC {
                SNAPSHOT_MAGIC
            } else {
                SEGMENT_MAGIC
            };
            assert!(matches!(
                parse(other, &file),
                Err(HeaderError::NotOurs { .. })
            ));
            for bytes in [&file[..], &file[..cut], &hurt[..], &later[..]] {
                check_invariants(bytes);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        for seed in 1..=3000u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut data: Vec<u8> = (0..rng.usize(..48)).map(|_| rng.u8(..)).collect();
            // Often our magic, so that the rest of the header is reached.
            if rng.bool() {
                let magic = if rng.bool() {
                    SEGMENT_MAGIC
                } else {
                    SNAPSHOT_MAGIC
                };
                let n = data.len().min(8);
                data[..n].copy_from_slice(&magic[..n]);
            }
            check_invariants(&data);
        }
    }
}
