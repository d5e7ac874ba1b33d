//! The durable half of `--data-dir`: a journal of every queue change, and snapshots that let
//! old journal segments go.
//!
//! Files in the data directory:
//! - `LOCK`: held (flock) by the one server using the directory.
//! - `journal-NNNNNNNNNNNNNNNNNNNN.log`: segments of framed [`record::Record`]s, in order.
//! - `snapshot-NNNNNNNNNNNNNNNNNNNN.snap`: every queue as it was when segment NNN began; with it,
//!   segments before NNN are no longer needed.
//!
//! Each file says its format ([`format`]); this release reads formats
//! [`OLDEST_DATA_FORMAT`]..=[`DATA_FORMAT`] and writes the last. On start, [`open`] loads the
//! newest snapshot and replays the segments from its number on ([`load`], which changes
//! nothing), then writes a fresh snapshot in the current format. A torn tail (a record cut short
//! or damaged, with no valid record after it) is cut with a log line; damage followed by valid
//! records, a newer format or another program's file stop the start with the data directory as
//! it was, and [`repair`] is the explicit way on after damage.

pub mod format;
mod record;
mod recover;
mod repair;
mod snapshot;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use format::{DATA_FORMAT, OLDEST_DATA_FORMAT};
pub use record::{
    Encoding, Frames, Record, RecordRef, check_invariants, frame, read_frames, valid_frames_from,
};
pub use recover::{IdGap, Recovery, Unreadable, load, read_segment};
pub use repair::repair;
pub use snapshot::encode_queue;
pub use writer::{Lsn, Writer};

use recover::{Fix, V1_DEDUP_WINDOW_FILE};

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

/// Syncs a directory, so that files created or renamed in it stay after a crash.
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Numbers of the files named `{prefix}NNN{suffix}` in `dir` (NNN: the 20 digits the server
/// writes), ascending.
fn numbered(dir: &Path, prefix: &str, suffix: &str) -> std::io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(suffix))
            && n.len() == 20
            && let Ok(n) = n.parse::<u64>()
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// An open data directory: its lock, and the journal writer.
pub struct DataDir {
    dir: PathBuf,
    _lock: File,
    /// The dedup window the files written from now on carry.
    dedup_window_ms: u64,
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

/// Opens (creating if needed) and locks `dir`, recovers its queues ([`load`]) and starts the
/// journal writer, whose segments say that their records keep dedup keys `dedup_window_ms`
/// after their item left. Whatever stops the recovery stops it before any file is changed.
pub fn open(
    dir: &Path,
    mode: FsyncMode,
    dedup_window_ms: u64,
) -> anyhow::Result<(DataDir, Recovery)> {
    let lock = lock(dir)?;
    let recovery = load(dir)?;
    for fix in &recovery.fixes {
        fix.apply()?;
    }
    let header = format::encode(
        format::SEGMENT_MAGIC,
        &format::Options {
            dedup_window_ms,
            entries: 0,
        },
    );
    let writer = Writer::start(dir, recovery.next_segment, mode, header).map_err(io_context(
        format!("cannot start the journal in {}", dir.display()),
    ))?;
    Ok((
        DataDir {
            dir: dir.to_path_buf(),
            _lock: lock,
            dedup_window_ms,
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

impl DataDir {
    /// Writes a snapshot of `queues` queues (encoded while segment `cut` began) and removes
    /// what it makes redundant: older snapshots and segments before `cut`, and a format-1
    /// directory's dedup window file (every file from `cut` on names its window).
    pub fn write_snapshot(&self, cut: u64, encoded: Vec<u8>, queues: usize) -> anyhow::Result<()> {
        snapshot::write(&self.dir, cut, &encoded, queues, self.dedup_window_ms)?;
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
        let _ = std::fs::remove_file(self.dir.join(V1_DEDUP_WINDOW_FILE));
        Ok(())
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}
