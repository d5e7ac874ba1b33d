//! Reading a data directory back, in any format this release reads, without changing a byte:
//! what it holds, and what opening it must do to its files (cut a torn tail, remove what is
//! left over), done by [`super::open`] only once everything was read.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::broker::{Id, IdGen, KEY_RETENTION_MS, Queue, QueueConfig};

use super::format::{self, HeaderError, SEGMENT_MAGIC};
use super::record::{self, Encoding, Record};
use super::{io_context, numbered, segment_path, snapshot, snapshot_path};

/// The file in which a format-1 data directory keeps the dedup window its journal was written
/// with (format 2 keeps it in every header).
pub(super) const V1_DEDUP_WINDOW_FILE: &str = "dedup-window-ms";

/// Why a file of the data directory cannot be read as it is.
#[derive(Debug)]
pub enum Unreadable {
    /// Its header.
    Header(HeaderError),
    /// What follows the header.
    Damaged(String),
}

impl From<HeaderError> for Unreadable {
    fn from(e: HeaderError) -> Self {
        Unreadable::Header(e)
    }
}

/// Ids made by records a repair skipped, found where replay met the next record of their queue
/// that names its id generator's position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdGap {
    /// The queue.
    pub queue: String,
    /// How many ids (items enqueued or leases taken).
    pub count: u128,
    /// No id of theirs is below this one (the first has its counter; its time may be later).
    pub first: Id,
    /// The last of them, exactly.
    pub last: Id,
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Queues, by name, in their replayed state.
    pub queues: Vec<(String, Queue)>,
    /// The snapshot loaded, if any.
    pub snapshot: Option<u64>,
    /// The data formats of the files read.
    pub formats: BTreeSet<u32>,
    /// Records replayed.
    pub records: u64,
    /// A torn tail cut (and what was left over after it), one line each.
    pub dropped: Vec<String>,
    /// The segment number the writer should start.
    pub next_segment: u64,
    /// Records skipped because they name a queue that does not exist (its create record was
    /// lost to damage, and nothing after it told its ids), by queue.
    pub orphans: BTreeMap<String, u64>,
    /// Queues whose create record was lost, made again with the default settings from the
    /// first later record that told their ids.
    pub recreated: Vec<String>,
    /// Ids made by records that were lost.
    pub id_gaps: Vec<IdGap>,
    /// What opening the directory does to its files once it has been read whole.
    pub(super) fixes: Vec<Fix>,
}

/// A change recovery makes to the data directory, only after reading all of it succeeded.
#[derive(Debug)]
pub(super) enum Fix {
    /// Cut a segment to `len` bytes: a torn tail (synced), or the zeros ahead of the records.
    Truncate { path: PathBuf, len: u64, sync: bool },
    /// Remove a file: a segment a compaction left behind, or one with no record after a tear.
    Remove(PathBuf),
}

/// How to read a segment file: where its records start, their encoding, the dedup window they
/// were written with (`None`: format 1's, in [`V1_DEDUP_WINDOW_FILE`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Layout {
    pub start: usize,
    pub encoding: Encoding,
    pub window: Option<u64>,
    pub format: u32,
}

impl Layout {
    /// The valid records in `data` from `from` on (see [`record::valid_frames_with`]).
    pub fn valid_frames(&self, data: &[u8], from: usize) -> Vec<(usize, usize)> {
        record::valid_frames_with(data, from, |p| self.encoding.decode(p).is_ok())
    }
}

/// The dedup window a format-1 data directory's journal was written with.
pub(super) fn v1_window(dir: &Path) -> anyhow::Result<u64> {
    let path = dir.join(V1_DEDUP_WINDOW_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|e| {
            anyhow::anyhow!(
                "{} does not hold a number of milliseconds ({e}); restore it, or remove it if the \
                 journal was written with the default window of 10 minutes",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KEY_RETENTION_MS),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// How segment file `data` is laid out; `None` for a file with nothing written in it yet (empty
/// or zeros: a server stopped while creating it).
pub(super) fn layout_of(data: &[u8]) -> Result<Option<Layout>, Unreadable> {
    if data.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    match format::parse(SEGMENT_MAGIC, data) {
        Ok(h) => Ok(Some(Layout {
            start: h.len,
            encoding: Encoding::V2,
            window: Some(h.options.dedup_window_ms),
            format: h.version,
        })),
        // Format 1 has no header: its first bytes are a record.
        Err(HeaderError::NotOurs { start }) => {
            let v1 = Layout {
                start: 0,
                encoding: Encoding::V1,
                window: None,
                format: 1,
            };
            if v1.valid_frames(data, 0).first().is_some_and(|f| f.0 == 0) {
                Ok(Some(v1))
            } else {
                Err(HeaderError::NotOurs { start }.into())
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// The records of a segment file's bytes, in whatever format it was written: where they start
/// (after its header), and what reading them found.
pub fn read_segment(data: &[u8]) -> Result<(usize, record::Frames), Unreadable> {
    Ok(match layout_of(data)? {
        Some(l) => (
            l.start,
            record::read_frames_with(&data[l.start..], |p| l.encoding.decode(p)),
        ),
        None => (0, record::read_frames(&[])),
    })
}

/// The one line a start says when a file of `dir` cannot be read as it is.
pub(super) fn refusal(dir: &Path, path: &Path, why: &Unreadable) -> anyhow::Error {
    let (dir, file) = (dir.display(), path.display());
    let unchanged = "the data directory is left as it was";
    let repair = format!(
        "run `queue-server repair --data-dir {dir}` to start without the damaged part (it keeps a copy of what it changes)"
    );
    match why {
        Unreadable::Header(e @ HeaderError::Newer(_)) => anyhow::anyhow!(
            "{file}: {e}: start that release on {dir}, or see docs/upgrading.md; {unchanged}"
        ),
        Unreadable::Header(e @ HeaderError::NotOurs { .. }) => {
            anyhow::anyhow!("{file}: {e}: move it out of the data directory {dir}; {unchanged}")
        }
        Unreadable::Header(e @ HeaderError::Truncated { .. }) => anyhow::anyhow!(
            "{file}: {e}; a server that stopped while creating it wrote no record in it: {repair}; {unchanged}"
        ),
        Unreadable::Header(e) => anyhow::anyhow!("{file}: {e}; {unchanged}: {repair}"),
        Unreadable::Damaged(e) => anyhow::anyhow!("{file} is damaged ({e}); {unchanged}: {repair}"),
    }
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(io_context(format!("cannot read {}", path.display())))
}

/// Reads what `dir` holds, changing nothing: the newest snapshot, then every segment from its
/// number on. A record cut short or damaged with no valid record after it, in its segment or a
/// later one, is a torn tail: left out, and cut when the directory is opened. Damage followed
/// by valid records, a file of a newer format or of another program stop it with one line.
/// The queues' dedup keys are kept for the window each file was written with; set the one
/// that applies from now on after.
pub fn load(dir: &Path) -> anyhow::Result<Recovery> {
    let mut rec = Recovery::default();
    let mut replay = Replay::default();
    let mut first_segment = 0;
    if let Some(&n) = numbered(dir, "snapshot-", ".snap")?.last() {
        let path = snapshot_path(dir, n);
        let snap = snapshot::read(&path).map_err(|why| refusal(dir, &path, &why))?;
        rec.formats.insert(if snap.dedup_window_ms.is_some() {
            format::DATA_FORMAT
        } else {
            1
        });
        replay.queues = snap.queues.into_iter().collect();
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
        let data = read(&path)?;
        let Some(layout) = layout_of(&data).map_err(|why| refusal(dir, &path, &why))? else {
            continue;
        };
        rec.formats.insert(layout.format);
        let frames = record::read_frames_with(&data[layout.start..], |p| layout.encoding.decode(p));
        replay.window(match layout.window {
            Some(ms) => ms,
            None => v1_window(dir)?,
        });
        for record in frames.records {
            rec.records += 1;
            replay.apply(record);
        }
        let end = layout.start + frames.end;
        let Some((offset, why)) = frames.damage.map(|(at, why)| (layout.start + at, why)) else {
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
        let here = layout.valid_frames(&data, offset + 1).len();
        let mut later = 0;
        for &next in &segments[i + 1..] {
            let next = segment_path(dir, next);
            let data = read(&next)?;
            if let Some(l) = layout_of(&data).map_err(|why| refusal(dir, &next, &why))? {
                later += l.valid_frames(&data, l.start).len();
            }
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
    rec.queues = replay.queues.into_iter().collect();
    rec.orphans = replay.orphans;
    rec.recreated = replay.recreated;
    rec.id_gaps = replay.id_gaps;
    Ok(rec)
}

/// The queues as the records replayed so far left them.
#[derive(Default)]
struct Replay {
    queues: BTreeMap<String, Queue>,
    /// The dedup window of the segment being replayed.
    window: u64,
    orphans: BTreeMap<String, u64>,
    recreated: Vec<String>,
    id_gaps: Vec<IdGap>,
}

impl Replay {
    /// The records that follow were written with dedup window `ms`.
    fn window(&mut self, ms: u64) {
        self.window = ms;
        for q in self.queues.values_mut() {
            q.set_key_retention(ms);
        }
    }

    /// Replays one record. Records only ever name queues that existed when they were written,
    /// so a record for an unknown queue means its create record was lost: the queue is made
    /// again, with the default settings, by the first record that tells its ids; records before
    /// that are skipped.
    fn apply(&mut self, record: Record) {
        match record {
            Record::Create { queue, config, ids } => {
                let mut q = Queue::with_ids(config, IdGen::from_state(ids));
                q.set_key_retention(self.window);
                self.queues.insert(queue, q);
            }
            Record::Delete { queue } => {
                self.queues.remove(&queue);
            }
            Record::Apply {
                queue,
                now,
                ids,
                op,
            } => {
                if !self.queues.contains_key(&queue) {
                    let Some(ids) = ids else {
                        *self.orphans.entry(queue).or_default() += 1;
                        return;
                    };
                    let mut q = Queue::with_ids(QueueConfig::default(), IdGen::from_state(ids));
                    q.set_key_retention(self.window);
                    self.recreated.push(queue.clone());
                    self.queues.insert(queue.clone(), q);
                }
                let q = self.queues.get_mut(&queue).expect("there now");
                if let Some(ids) = ids {
                    let had = q.id_state();
                    if had != ids {
                        self.id_gaps.push(IdGap {
                            count: ids.1.wrapping_sub(had.1) & IdGen::COUNTER_MASK,
                            first: IdGen::from_state(had).next(had.0),
                            last: IdGen::from_state(ids).last(),
                            queue: queue.clone(),
                        });
                        q.set_id_state(ids);
                    }
                }
                q.apply(op, now);
            }
        }
    }
}
