//! The durable half of `--data-dir`: a journal of every queue change, and snapshots that let
//! old journal segments go.
//!
//! Files in the data directory:
//! - `LOCK`: held (flock) by the one server using the directory.
//! - `journal-NNNNNNNNNNNNNNNNNNNN.log`: segments of framed [`record::Record`]s, in order.
//! - `snapshot-NNNNNNNNNNNNNNNNNNNN.snap`: every queue as it was when segment NNN began; with it,
//!   segments before NNN are no longer needed.
//!
//! On start, [`open`] loads the newest snapshot and replays the segments from its number on,
//! cutting a torn or damaged tail (and anything after it) with a log line instead of failing.

mod record;
mod snapshot;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use record::{Frames, Record, RecordRef, check_invariants, frame, read_frames};
pub use writer::{Lsn, Writer};

use crate::broker::{IdGen, Queue};

/// When a change counts as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncMode {
    /// After it is synced to disk; concurrent requests share one sync (group commit).
    Always,
    /// After it is written to the OS; synced at least this often.
    Interval(Duration),
    /// After it is written to the OS; never synced explicitly.
    Never,
}

impl std::str::FromStr for FsyncMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncMode::Always),
            "never" => Ok(FsyncMode::Never),
            _ => {
                let every = s
                    .strip_prefix("interval=")
                    .ok_or_else(|| format!("{s:?}: use always, interval=10ms or never"))?;
                let d = memq::duration::parse_duration(every)?;
                if d.is_zero() {
                    return Err("the sync interval must be more than 0".into());
                }
                Ok(FsyncMode::Interval(d))
            }
        }
    }
}

pub(super) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("journal-{segment:020}.log"))
}

pub(super) fn snapshot_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("snapshot-{segment:020}.snap"))
}

/// The file that says which dedup window (`--dedup-window`) the journal was written with:
/// replay decides duplicates again, so it must use that window, not the one of the flags.
const DEDUP_WINDOW_FILE: &str = "dedup-window-ms";

/// The dedup window the data directory's journal was written with (`None`: a directory from
/// before the window could be set, written with [`crate::broker::KEY_RETENTION_MS`]).
pub fn written_key_retention(dir: &Path) -> anyhow::Result<Option<u64>> {
    let path = dir.join(DEDUP_WINDOW_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map(Some).map_err(|e| {
            anyhow::anyhow!(
                "{} does not hold a number of milliseconds ({e}); restore it, or remove it if the \
                 journal was written with the default window of 10 minutes",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Records the dedup window the journal is written with from now on (after a snapshot that
/// holds everything before): written to a temporary file, synced, renamed over the old one.
pub fn record_key_retention(dir: &Path, ms: u64) -> anyhow::Result<()> {
    let path = dir.join(DEDUP_WINDOW_FILE);
    let tmp = dir.join(format!("{DEDUP_WINDOW_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, format!("{ms}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(dir)
    };
    write().map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Syncs a directory, so that files created or renamed in it stay after a crash.
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Numbers of the files named `{prefix}NNN{suffix}` in `dir`, ascending.
fn numbered(dir: &Path, prefix: &str, suffix: &str) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            && let Ok(n) = n.parse::<u64>()
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Queues, by name, in their replayed state.
    pub queues: Vec<(String, Queue)>,
    /// The snapshot loaded, if any.
    pub snapshot: Option<u64>,
    /// Records replayed.
    pub records: u64,
    /// Damage found and cut, one line each.
    pub dropped: Vec<String>,
    /// The segment number the writer should start.
    pub next_segment: u64,
}

/// An open data directory: its lock, and the journal writer.
pub struct DataDir {
    dir: PathBuf,
    _lock: File,
    /// The journal writer.
    pub writer: Writer,
}

fn io_context(what: String) -> impl FnOnce(std::io::Error) -> anyhow::Error {
    move |e| anyhow::anyhow!("{what}: {e}")
}

/// Opens (creating if needed) and locks `dir`, recovers its queues (with dedup keys kept
/// `key_retention_ms` after their item left, as the live server keeps them) and starts the
/// journal writer.
pub fn open(
    dir: &Path,
    mode: FsyncMode,
    key_retention_ms: u64,
) -> anyhow::Result<(DataDir, Recovery)> {
    std::fs::create_dir_all(dir).map_err(io_context(format!(
        "cannot create data directory {}",
        dir.display()
    )))?;
    let lock_path = dir.join("LOCK");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_context(format!("cannot open {}", lock_path.display())))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "data directory {} is in use by another queue-server (it holds {}); stop that server or pick another --data-dir",
            dir.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", lock_path.display())
        }
    }
    let recovery = recover(dir, key_retention_ms)?;
    let writer = Writer::start(dir, recovery.next_segment, mode).map_err(io_context(format!(
        "cannot start the journal in {}",
        dir.display()
    )))?;
    Ok((
        DataDir {
            dir: dir.to_path_buf(),
            _lock: lock,
            writer,
        },
        recovery,
    ))
}

fn recover(dir: &Path, key_retention_ms: u64) -> anyhow::Result<Recovery> {
    let mut rec = Recovery::default();
    let snapshots = numbered(dir, "snapshot-", ".snap")?;
    let mut queues: std::collections::BTreeMap<String, Queue> = Default::default();
    let mut first_segment = 0;
    if let Some(&n) = snapshots.last() {
        let path = snapshot_path(dir, n);
        queues = snapshot::read(&path)?.into_iter().collect();
        for q in queues.values_mut() {
            q.set_key_retention(key_retention_ms);
        }
        rec.snapshot = Some(n);
        first_segment = n;
    }
    let segments = numbered(dir, "journal-", ".log")?;
    let mut last = first_segment;
    let mut damaged = false;
    for &seg in &segments {
        let path = segment_path(dir, seg);
        if seg < first_segment {
            // Left over from a compaction that stopped before removing it.
            let _ = std::fs::remove_file(&path);
            continue;
        }
        last = last.max(seg);
        if damaged {
            rec.dropped.push(format!(
                "{}: whole segment dropped, it follows a damaged one",
                path.display()
            ));
            std::fs::remove_file(&path)
                .map_err(io_context(format!("cannot remove {}", path.display())))?;
            continue;
        }
        let data =
            std::fs::read(&path).map_err(io_context(format!("cannot read {}", path.display())))?;
        let record::Frames {
            records,
            damage,
            end,
        } = record::read_frames(&data);
        for record in records {
            rec.records += 1;
            apply(&mut queues, record, key_retention_ms);
        }
        if damage.is_none() && end < data.len() {
            // The zeros a writer that did not stop cleanly had written ahead of its records.
            let cut = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(end as u64));
            if let Err(e) = cut {
                tracing::warn!(path = %path.display(), error = %e, "cannot cut the zeroed end of a journal segment; it reads as the end all the same");
            }
        }
        if let Some((offset, why)) = damage {
            rec.dropped.push(format!(
                "{}: {why} at byte {offset}; dropped {} bytes from there",
                path.display(),
                data.len() - offset
            ));
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_context(format!("cannot open {}", path.display())))?;
            file.set_len(offset as u64)?;
            file.sync_all()?;
            damaged = true;
        }
    }
    rec.next_segment = last + 1;
    rec.queues = queues.into_iter().collect();
    Ok(rec)
}

/// Replays one record. Records only ever name queues that existed when they were written, so
/// a record for an unknown queue means the log was damaged before it: it is skipped.
fn apply(
    queues: &mut std::collections::BTreeMap<String, Queue>,
    record: Record,
    key_retention_ms: u64,
) {
    match record {
        Record::Create { queue, config, ids } => {
            let mut q = Queue::with_ids(config, IdGen::from_state(ids));
            q.set_key_retention(key_retention_ms);
            queues.insert(queue, q);
        }
        Record::Delete { queue } => {
            queues.remove(&queue);
        }
        Record::Apply { queue, now, op } => {
            if let Some(q) = queues.get_mut(&queue) {
                q.apply(op, now);
            }
        }
    }
}

impl DataDir {
    /// Writes a snapshot of `queues` (encoded while segment `cut` began) and removes what it
    /// makes redundant: older snapshots and segments before `cut`.
    pub fn write_snapshot(&self, cut: u64, encoded: Vec<u8>) -> anyhow::Result<()> {
        snapshot::write(&self.dir, cut, &encoded)?;
        for n in numbered(&self.dir, "snapshot-", ".snap")? {
            if n < cut {
                let _ = std::fs::remove_file(snapshot_path(&self.dir, n));
            }
        }
        for n in numbered(&self.dir, "journal-", ".log")? {
            if n < cut {
                let _ = std::fs::remove_file(segment_path(&self.dir, n));
            }
        }
        Ok(())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

pub use snapshot::encode_queue;
