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

/// Writes `body` (queues from [`encode_queue`]) as the snapshot for segment `cut`.
pub fn write(dir: &Path, cut: u64, body: &[u8]) -> anyhow::Result<()> {
    let path = snapshot_path(dir, cut);
    let tmp = path.with_extension("snap.tmp");
    let mut head = Vec::with_capacity(12);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
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

/// Reads a snapshot file back into queues.
pub fn read(path: &Path) -> anyhow::Result<Vec<(String, Queue)>> {
    let data = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read snapshot {}: {e}", path.display()))?;
    let bad = |why: &str| {
        anyhow::anyhow!(
            "snapshot {} is damaged ({why}); move it away to start from the journal alone, or restore the data directory from a backup",
            path.display()
        )
    };
    if data.len() < 16 || &data[..8] != MAGIC {
        return Err(bad("not a snapshot file"));
    }
    let (content, tail) = data.split_at(data.len() - 4);
    if crc32fast::hash(content) != u32::from_le_bytes(tail.try_into().expect("4 bytes")) {
        return Err(bad("checksum mismatch"));
    }
    if u32::from_le_bytes(content[8..12].try_into().expect("4 bytes")) != VERSION {
        return Err(bad("unknown version"));
    }
    let mut queues = Vec::new();
    let mut at = 12;
    while at < content.len() {
        let len = u32::from_le_bytes(
            content
                .get(at..at + 4)
                .ok_or_else(|| bad("truncated"))?
                .try_into()
                .expect("4"),
        ) as usize;
        let body = content
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| bad("truncated"))?;
        let (name, image): (String, QueueImage<'_>) =
            postcard::from_bytes(body).map_err(|e| bad(&e.to_string()))?;
        queues.push((name, Queue::from_image(image)));
        at += 4 + len;
    }
    Ok(queues)
}
