//! Snapshot files, written to a temporary name, synced, then renamed, so a snapshot on disk is
//! always whole.
//!
//! Format 2: a header ([`format::SNAPSHOT_MAGIC`], the dedup window, the number of queues), then
//! one frame per queue, `[len u32][crc32 u32][postcard (name, QueueImage)]`: damage is found
//! in the queue it hit. Format 1 (0.1.0): `MEMQSNAP`, version 1, then `[len u32][postcard (name,
//! QueueImage)]` per queue, then one CRC32 of everything before it.

use std::io::Write;
use std::path::Path;

use crate::broker::{Queue, QueueImage};

use super::format::{self, HeaderError, Options, SNAPSHOT_MAGIC};
use super::record::{self, FRAME_HEADER};
use super::{Unreadable, snapshot_path, sync_dir};

/// Queues by name, as a snapshot holds them.
pub type Queues = Vec<(String, Queue)>;

/// A snapshot read back.
pub struct Snapshot {
    /// Its queues.
    pub queues: Queues,
    /// The dedup window it was written with (format 2 on).
    pub dedup_window_ms: Option<u64>,
}

/// Appends one queue to a snapshot body.
pub fn encode_queue(name: &str, queue: &Queue, out: &mut Vec<u8>) {
    record::frame_value(&(name, queue.image()), out);
}

fn header(dedup_window_ms: u64, queues: usize) -> Vec<u8> {
    let options = Options {
        dedup_window_ms,
        entries: queues as u64,
    };
    format::encode(SNAPSHOT_MAGIC, &options)
}

/// A whole snapshot file of `queues` queues around `body` (from [`encode_queue`]).
pub fn encode(body: &[u8], queues: usize, dedup_window_ms: u64) -> Vec<u8> {
    let mut file = header(dedup_window_ms, queues);
    file.extend_from_slice(body);
    file
}

/// Writes `body` (`queues` queues from [`encode_queue`]) as the snapshot for segment `cut`.
pub fn write(
    dir: &Path,
    cut: u64,
    body: &[u8],
    queues: usize,
    dedup_window_ms: u64,
) -> anyhow::Result<()> {
    let path = snapshot_path(dir, cut);
    let tmp = path.with_extension("snap.tmp");
    let head = header(dedup_window_ms, queues);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&head)?;
        f.write_all(body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(dir)
    };
    write().map_err(|e| anyhow::anyhow!("cannot write snapshot {}: {e}", path.display()))
}

/// One queue entry's payload, decoded.
fn decode_entry(payload: &[u8]) -> Result<(String, Queue), String> {
    postcard::from_bytes::<(String, QueueImage<'_>)>(payload)
        .map(|(name, image)| (name, Queue::from_image(image)))
        .map_err(|e| e.to_string())
}

/// Reads a snapshot file back into queues.
pub fn read(path: &Path) -> Result<Snapshot, Unreadable> {
    let data =
        std::fs::read(path).map_err(|e| Unreadable::Damaged(format!("cannot read it: {e}")))?;
    if format::magic_and_version(SNAPSHOT_MAGIC, &data)? == 1 {
        return read_v1(&data);
    }
    let header = format::parse(SNAPSHOT_MAGIC, &data)?;
    let body = &data[header.len..];
    let frames = record::read_frames_with(body, decode_entry);
    if let Some((at, why)) = frames.damage {
        return Err(Unreadable::Damaged(format!(
            "queue {} of {}, at byte {}: {why}",
            frames.records.len() + 1,
            header.options.entries,
            header.len + at
        )));
    }
    let found = frames.records.len() as u64;
    if found != header.options.entries || frames.end != body.len() {
        return Err(Unreadable::Damaged(format!(
            "it holds {found} whole queues of {} and ends at byte {} of {}",
            header.options.entries,
            header.len + frames.end,
            data.len()
        )));
    }
    Ok(Snapshot {
        queues: frames.records,
        dedup_window_ms: Some(header.options.dedup_window_ms),
    })
}

fn read_v1(data: &[u8]) -> Result<Snapshot, Unreadable> {
    if data.len() < 16 {
        return Err(HeaderError::Truncated {
            have: data.len(),
            need: 16,
        }
        .into());
    }
    let (content, tail) = data.split_at(data.len() - 4);
    if crc32fast::hash(content) != u32::from_le_bytes(tail.try_into().expect("4 bytes")) {
        return Err(Unreadable::Damaged("checksum mismatch".into()));
    }
    let (queues, lost) = entries_v1(&content[12..]);
    match lost.into_iter().next() {
        Some(why) => Err(Unreadable::Damaged(why)),
        None => Ok(Snapshot {
            queues,
            dedup_window_ms: None,
        }),
    }
}

/// The queues of a format-1 snapshot body that decode, and a line for each part that does not.
fn entries_v1(body: &[u8]) -> (Queues, Vec<String>) {
    let mut queues = Vec::new();
    let mut lost = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let Some(len) = body.get(at..at + 4) else {
            lost.push(format!(
                "{} bytes at its end hold no whole queue",
                body.len() - at
            ));
            break;
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let Some(entry) = body.get(at + 4..at + 4 + len) else {
            lost.push(format!(
                "the queue at byte {} claims {len} bytes, more than are left: the rest is lost",
                12 + at
            ));
            break;
        };
        match decode_entry(entry) {
            Ok(queue) => queues.push(queue),
            Err(e) => lost.push(format!(
                "the queue at byte {} does not decode ({e})",
                12 + at
            )),
        }
        at += 4 + len;
    }
    (queues, lost)
}

/// What can still be read of a damaged snapshot: the queues that read whole, the dedup window
/// it names (when its header reads), and a line for each part lost.
pub fn salvage(path: &Path) -> anyhow::Result<(Snapshot, Vec<String>)> {
    let data = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read snapshot {}: {e}", path.display()))?;
    let version = format::magic_and_version(SNAPSHOT_MAGIC, &data).map_err(|e| {
        anyhow::anyhow!(
            "{}: {e}: nothing of it can be read; move it out of the data directory to start from the journal alone",
            path.display()
        )
    })?;
    if version == 1 {
        let (queues, mut lost) = entries_v1(&data[12..data.len().saturating_sub(4).max(12)]);
        if lost.is_empty() {
            lost.push(format!(
                "every queue decodes ({}), so the damage lies inside one of them (an item's text, a count or a time) and this format cannot tell which: check them",
                queues
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let snapshot = Snapshot {
            queues,
            dedup_window_ms: None,
        };
        return Ok((snapshot, lost));
    }
    let (start, window) = match format::parse(SNAPSHOT_MAGIC, &data) {
        Ok(h) => (h.len, Some(h.options.dedup_window_ms)),
        Err(HeaderError::Newer(v)) => {
            anyhow::bail!(
                "{}: written in data format {v} by a newer release: repair it with that release",
                path.display()
            )
        }
        // The frames are found by their checksums; the header's bytes are none.
        Err(_) => (0, None),
    };
    let mut queues = Vec::new();
    let mut lost = Vec::new();
    let mut at = start;
    let mut frames = record::valid_frames_with(&data, start, |p| decode_entry(p).is_ok());
    frames.push((data.len(), data.len()));
    for (from, to) in frames {
        if from > at {
            let part = &data[at..from];
            match damaged_entry(part) {
                Some((name, queue)) => {
                    lost.push(format!(
                        "bytes {at}..{from}: queue {name} fails its checksum but still reads: kept as it reads (an item's text, a count or a time in it may be wrong): check it"
                    ));
                    queues.push((name, queue));
                }
                None => lost.push(lost_part(part, at)),
            }
        }
        if to > from {
            queues.push(decode_entry(&data[from + FRAME_HEADER..to]).expect("accepted above"));
        }
        at = to;
    }
    if window.is_none() {
        lost.insert(0, "its header (the dedup window it names)".into());
    }
    let snapshot = Snapshot {
        queues,
        dedup_window_ms: window,
    };
    Ok((snapshot, lost))
}

/// A part that is exactly one frame whose payload decodes although its checksum fails.
fn damaged_entry(part: &[u8]) -> Option<(String, Queue)> {
    let len = u32::from_le_bytes(part.get(..4)?.try_into().expect("4 bytes")) as usize;
    if FRAME_HEADER + len != part.len() {
        return None;
    }
    decode_entry(&part[FRAME_HEADER..]).ok()
}

/// A skipped part of a snapshot: a queue whose name still reads, or only its size.
fn lost_part(part: &[u8], at: usize) -> String {
    let name = part
        .get(FRAME_HEADER..)
        .and_then(|p| postcard::take_from_bytes::<String>(p).ok());
    match name {
        Some((name, _)) => format!(
            "bytes {at}..{}: queue {name} (the name reads; its content is damaged)",
            at + part.len()
        ),
        None => format!(
            "bytes {at}..{}: {} bytes that do not read as a queue",
            at + part.len(),
            part.len()
        ),
    }
}
