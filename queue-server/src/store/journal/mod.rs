//! The durable half of `--data-dir`: a journal of every queue change, and snapshots that let
//! old journal segments go.
//!
//! Files in the data directory:
//! - `LOCK`: held (flock) by the one server using the directory.
//! - `journal-NNNNNNNNNNNNNNNNNNNN.log`: segments of framed [`record::Record`]s, in order.
//! - `snapshot-NNNNNNNNNNNNNNNNNNNN.snap`: every queue as it was when segment NNN began; with it,
//!   segments before NNN are no longer needed.
//!
//! On start, [`open`] loads the newest snapshot and replays the segments from its number on
//! ([`load`], which changes nothing). A torn tail (a record cut short or damaged, with no valid
//! record after it) is cut with a log line; damage followed by valid records stops the start
//! with the data directory as it was, and [`repair`] is the explicit way on.

mod record;
mod repair;
mod snapshot;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use record::{
    Frames, Record, RecordRef, check_invariants, frame, read_frames, valid_frames_from,
};
pub use repair::repair;
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
    /// A torn tail cut (and what was left over after it), one line each.
    pub dropped: Vec<String>,
    /// The segment number the writer should start.
    pub next_segment: u64,
    /// Records skipped because they name a queue that does not exist (its create record was
    /// skipped by a repair), by queue.
    pub orphans: std::collections::BTreeMap<String, u64>,
    /// What opening the directory does to its files once it has been read whole.
    fixes: Vec<Fix>,
}

/// A change recovery makes to the data directory, only after reading all of it succeeded.
#[derive(Debug)]
enum Fix {
    /// Cut a segment to `len` bytes: a torn tail (synced), or the zeros ahead of the records.
    Truncate { path: PathBuf, len: u64, sync: bool },
    /// Remove a file: a segment a compaction left behind, or one with no record after a tear.
    Remove(PathBuf),
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

/// Creates `dir` if needed and takes its lock (held while the returned file is open).
fn lock(dir: &Path) -> anyhow::Result<File> {
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
        Ok(()) => Ok(lock),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "data directory {} is in use by another queue-server (it holds {}); stop that server or pick another --data-dir",
            dir.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", lock_path.display())
        }
    }
}

/// Opens (creating if needed) and locks `dir`, recovers its queues (with dedup keys kept
/// `key_retention_ms` after their item left, as the live server keeps them) and starts the
/// journal writer. Damage that is not a torn tail stops it before any file is changed.
pub fn open(
    dir: &Path,
    mode: FsyncMode,
    key_retention_ms: u64,
) -> anyhow::Result<(DataDir, Recovery)> {
    let lock = lock(dir)?;
    let recovery = load(dir, key_retention_ms)?;
    for fix in &recovery.fixes {
        fix.apply()?;
    }
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

impl Fix {
    fn apply(&self) -> anyhow::Result<()> {
        match self {
            Fix::Truncate { path, len, sync } => {
                let cut = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| {
                        f.set_len(*len)?;
                        if *sync { f.sync_all() } else { Ok(()) }
                    });
                match cut {
                    Ok(()) => {}
                    // The zeros read as the end of the segment all the same.
                    Err(e) if !sync => {
                        tracing::warn!(path = %path.display(), error = %e, "cannot cut the zeroed end of a journal segment; it reads as the end all the same");
                    }
                    Err(e) => anyhow::bail!("cannot cut {}: {e}", path.display()),
                }
            }
            Fix::Remove(path) => std::fs::remove_file(path)
                .map_err(io_context(format!("cannot remove {}", path.display())))?,
        }
        Ok(())
    }
}

/// Reads what `dir` holds, changing nothing: the newest snapshot, then every segment from its
/// number on. A record cut short or damaged with no valid record after it, in its segment or a
/// later one, is a torn tail: left out, and cut when the directory is opened. Damage followed
/// by valid records is an error that names the repair.
pub fn load(dir: &Path, key_retention_ms: u64) -> anyhow::Result<Recovery> {
    let mut rec = Recovery::default();
    let snapshots = numbered(dir, "snapshot-", ".snap")?;
    let mut queues: std::collections::BTreeMap<String, Queue> = Default::default();
    let mut first_segment = 0;
    if let Some(&n) = snapshots.last() {
        let path = snapshot_path(dir, n);
        queues = snapshot::read(&path)
            .map_err(|why| {
                anyhow::anyhow!(
                    "snapshot {} is damaged ({why}); the data directory is left as it was: run `queue-server repair --data-dir {}` to start from what can still be read (it keeps a copy of what it changes)",
                    path.display(),
                    dir.display()
                )
            })?
            .into_iter()
            .collect();
        for q in queues.values_mut() {
            q.set_key_retention(key_retention_ms);
        }
        rec.snapshot = Some(n);
        first_segment = n;
    }
    let segments = numbered(dir, "journal-", ".log")?;
    rec.next_segment = segments.last().copied().unwrap_or(0).max(first_segment) + 1;
    let mut torn = false;
    for (i, &seg) in segments.iter().enumerate() {
        let path = segment_path(dir, seg);
        if seg < first_segment {
            // Left over from a compaction that stopped before removing it.
            rec.fixes.push(Fix::Remove(path));
            continue;
        }
        if torn {
            // After a torn tail: no valid record here (checked below), nothing to keep.
            rec.fixes.push(Fix::Remove(path));
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
            if let Some(queue) = apply(&mut queues, record, key_retention_ms) {
                *rec.orphans.entry(queue).or_default() += 1;
            }
        }
        let Some((offset, why)) = damage else {
            if end < data.len() {
                // The zeros a writer that did not stop cleanly had written ahead of its records.
                rec.fixes.push(Fix::Truncate {
                    path,
                    len: end as u64,
                    sync: false,
                });
            }
            continue;
        };
        let here = record::valid_frames_from(&data, offset + 1).len();
        let mut later = 0;
        for &next in &segments[i + 1..] {
            let path = segment_path(dir, next);
            let data = std::fs::read(&path)
                .map_err(io_context(format!("cannot read {}", path.display())))?;
            later += record::valid_frames_from(&data, 0).len();
        }
        if here + later > 0 {
            anyhow::bail!(
                "journal segment {} is damaged at byte {offset} ({why}) and {} valid records follow it ({here} in this segment, {later} in later ones); the data directory is left as it was: run `queue-server repair --data-dir {}` to start without the damaged records (it keeps a copy of what it changes)",
                path.display(),
                here + later,
                dir.display()
            );
        }
        rec.dropped.push(format!(
            "{}: {why} at byte {offset}, and no valid record after it: a write cut short by a crash; cut the last {} bytes",
            path.display(),
            data.len() - offset
        ));
        rec.fixes.push(Fix::Truncate {
            path,
            len: offset as u64,
            sync: true,
        });
        torn = true;
    }
    rec.queues = queues.into_iter().collect();
    Ok(rec)
}

/// Replays one record. Records only ever name queues that existed when they were written, so
/// a record for an unknown queue means its create record was lost: it is skipped, and its
/// queue's name returned.
fn apply(
    queues: &mut std::collections::BTreeMap<String, Queue>,
    record: Record,
    key_retention_ms: u64,
) -> Option<String> {
    match record {
        Record::Create { queue, config, ids } => {
            let mut q = Queue::with_ids(config, IdGen::from_state(ids));
            q.set_key_retention(key_retention_ms);
            queues.insert(queue, q);
        }
        Record::Delete { queue } => {
            queues.remove(&queue);
        }
        Record::Apply { queue, now, op } => match queues.get_mut(&queue) {
            Some(q) => {
                q.apply(op, now);
            }
            None => return Some(queue),
        },
    }
    None
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
