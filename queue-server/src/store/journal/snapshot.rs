//! Snapshot files: `MEMQSNAP` + version, then `[len u32][postcard (name, QueueImage)]` per queue,
//! then a CRC32 of everything before it. Written to a temporary name, synced, then renamed, so a
//! snapshot on disk is always whole.

use std::io::Write;
use std::path::Path;

use crate::broker::{Queue, QueueImage};

use super::{snapshot_path, sync_dir};

const MAGIC: &[u8; 8] = b"MEMQSNAP";
const VERSION: u32 = 1;

/// Appends one queue to a snapshot body.
pub fn encode_queue(name: &str, queue: &Queue, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    *out = postcard::to_extend(&(name, queue.image()), std::mem::take(out))
        .expect("encoding to memory cannot fail");
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

fn head() -> Vec<u8> {
    let mut head = Vec::with_capacity(12);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head
}

/// A whole snapshot file around `body` (queues from [`encode_queue`]).
pub fn encode(body: &[u8]) -> Vec<u8> {
    let mut file = head();
    file.extend_from_slice(body);
    let crc = crc32fast::hash(&file);
    file.extend_from_slice(&crc.to_le_bytes());
    file
}

/// Writes `body` (queues from [`encode_queue`]) as the snapshot for segment `cut`.
pub fn write(dir: &Path, cut: u64, body: &[u8]) -> anyhow::Result<()> {
    let path = snapshot_path(dir, cut);
    let tmp = path.with_extension("snap.tmp");
    let head = head();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    crc.update(body);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&head)?;
        f.write_all(body)?;
        f.write_all(&crc.clone().finalize().to_le_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(dir)
    };
    write().map_err(|e| anyhow::anyhow!("cannot write snapshot {}: {e}", path.display()))
}

/// Reads a snapshot file back into queues; the error says why it cannot be read.
pub fn read(path: &Path) -> Result<Queues, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    if data.len() < 16 || &data[..8] != MAGIC {
        return Err("not a snapshot file".into());
    }
    let (content, tail) = data.split_at(data.len() - 4);
    if crc32fast::hash(content) != u32::from_le_bytes(tail.try_into().expect("4 bytes")) {
        return Err("checksum mismatch".into());
    }
    let version = u32::from_le_bytes(content[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let (queues, lost) = entries(&content[12..]);
    match lost.first() {
        Some(why) => Err(why.clone()),
        None => Ok(queues),
    }
}

/// Queues by name, as a snapshot holds them.
pub type Queues = Vec<(String, Queue)>;

/// The queues of a snapshot body that decode, and a line for each part that does not.
fn entries(body: &[u8]) -> (Queues, Vec<String>) {
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
        match postcard::from_bytes::<(String, QueueImage<'_>)>(entry) {
            Ok((name, image)) => queues.push((name, Queue::from_image(image))),
            Err(e) => lost.push(format!(
                "the queue at byte {} does not decode ({e})",
                12 + at
            )),
        }
        at += 4 + len;
    }
    (queues, lost)
}

/// What can still be read of a damaged snapshot: the queues that decode, and what was lost.
/// The file's single checksum cannot say which queue the damage is in when every one decodes.
pub fn salvage(path: &Path) -> anyhow::Result<(Queues, Vec<String>)> {
    let data = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read snapshot {}: {e}", path.display()))?;
    if data.len() < 16 || &data[..8] != MAGIC {
        anyhow::bail!(
            "{} is not a snapshot file (it does not start with {}): nothing of it can be read",
            path.display(),
            String::from_utf8_lossy(MAGIC)
        );
    }
    let (queues, mut lost) = entries(&data[12..data.len() - 4]);
    if lost.is_empty() {
        lost.push(format!(
            "every queue decodes ({}), so the damage lies inside one of them (an item's text, a count or a time): check them",
            queues
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok((queues, lost))
}
