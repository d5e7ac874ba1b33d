//! `queue-server repair --data-dir DIR`: the explicit way on after damage that a start refuses
//! (damage with valid records after it, a damaged or cut-short header). Every file it changes
//! is first copied, as it was, to `DIR/damaged-<time>/`; a damaged segment is written again
//! without exactly the damaged bytes (from the damage to the next valid record), a damaged
//! snapshot without the queues that no longer read. It reports what each skipped part held, as
//! far as it still reads, and, from the records after it, the ids the lost ones had made.

use std::path::{Path, PathBuf};

use super::format::{self, HeaderError, Options, SEGMENT_MAGIC};
use super::record::{self, Encoding, FRAME_HEADER};
use super::recover::{Layout, Unreadable, layout_of, refusal, v1_window};
use super::{io_context, load, lock, numbered, segment_path, snapshot, snapshot_path, sync_dir};
use crate::broker::KEY_RETENTION_MS;

/// Repairs the data directory `dir` (which no server may be using) and returns what it did,
/// one line each: what was lost, where the originals went, what the directory holds now.
/// `progress` hears of each file as it is read.
pub fn repair(dir: &Path, mut progress: impl FnMut(&str)) -> anyhow::Result<Vec<String>> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a directory", dir.display());
    }
    let _lock = lock(dir)?;
    let mut repair = Repair {
        dir: dir.to_path_buf(),
        aside: dir.join(format!("damaged-{}", aside_stamp())),
        report: Vec::new(),
    };
    let mut first_segment = 0;
    if let Some(&n) = numbered(dir, "snapshot-", ".snap")?.last() {
        let path = snapshot_path(dir, n);
        progress(&format!("reading {}", path.display()));
        repair.snapshot(&path)?;
        first_segment = n;
    }
    for seg in numbered(dir, "journal-", ".log")? {
        if seg >= first_segment {
            let path = segment_path(dir, seg);
            progress(&format!("reading {}", path.display()));
            repair.segment(&path)?;
        }
    }
    let mut report = repair.report;
    if report.is_empty() {
        report.push(format!(
            "{}: no damage found; nothing changed",
            dir.display()
        ));
        return Ok(report);
    }
    report.push(format!(
        "the files as they were are in {}",
        repair.aside.display()
    ));
    progress("reading the repaired directory back");
    let recovered = load(dir)?;
    for gap in &recovered.id_gaps {
        report.push(match gap.count {
            1 => format!(
                "queue {}: the lost records had made 1 id (an item enqueued or a lease taken): {}",
                gap.queue, gap.last
            ),
            n => format!(
                "queue {}: the lost records had made {n} ids (items enqueued or leases taken), all between {} and {}",
                gap.queue, gap.first, gap.last
            ),
        });
    }
    for queue in &recovered.recreated {
        report.push(format!(
            "queue {queue}: its create record was lost: made again with the default settings (leaseSeconds 30, maxAttempts 5, maxDepth 0) from its next record; set its own with PUT /queues/{queue}"
        ));
    }
    for (queue, n) in &recovered.orphans {
        report.push(format!(
            "queue {queue}: its create record was lost: its {n} later records were skipped (the queue is gone; create it again)"
        ));
    }
    let items: u64 = recovered
        .queues
        .iter()
        .map(|(_, q)| q.depth() + q.delayed() + q.inflight() + q.dead())
        .sum();
    report.push(format!(
        "{} now holds {} queues and {items} items; start the server on it",
        dir.display(),
        recovered.queues.len()
    ));
    Ok(report)
}

/// `YYYYMMDDTHHMMSSZ` of now, for the directory of the originals.
fn aside_stamp() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    now.chars().filter(|c| c.is_ascii_alphanumeric()).collect()
}

struct Repair {
    dir: PathBuf,
    aside: PathBuf,
    report: Vec<String>,
}

impl Repair {
    /// Copies `path` into the directory of originals, then replaces it by `content` (removes it
    /// with `None`).
    fn replace(&self, path: &Path, content: Option<&[u8]>) -> anyhow::Result<()> {
        let name = path.file_name().expect("a file name");
        std::fs::create_dir_all(&self.aside).map_err(io_context(format!(
            "cannot create {}",
            self.aside.display()
        )))?;
        let copy = self.aside.join(name);
        std::fs::copy(path, &copy).map_err(io_context(format!(
            "cannot copy {} to {}",
            path.display(),
            copy.display()
        )))?;
        std::fs::File::open(&copy).and_then(|f| f.sync_all())?;
        sync_dir(&self.aside)?;
        let tmp = path.with_extension("repair.tmp");
        let write = || -> std::io::Result<()> {
            match content {
                Some(content) => {
                    let mut f = std::fs::File::create(&tmp)?;
                    std::io::Write::write_all(&mut f, content)?;
                    f.sync_all()?;
                    std::fs::rename(&tmp, path)?;
                }
                None => std::fs::remove_file(path)?,
            }
            sync_dir(&self.dir)
        };
        write().map_err(io_context(format!("cannot write {}", path.display())))
    }

    /// The dedup window of the files written without one of their own.
    fn window(&self) -> anyhow::Result<u64> {
        v1_window(&self.dir)
    }

    fn snapshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let why = match snapshot::read(path) {
            Ok(_) => return Ok(()),
            Err(why @ Unreadable::Header(HeaderError::Newer(_) | HeaderError::NotOurs { .. })) => {
                return Err(refusal(&self.dir, path, &why));
            }
            Err(Unreadable::Header(e)) => e.to_string(),
            Err(Unreadable::Damaged(e)) => e,
        };
        let (snap, lost) = snapshot::salvage(path)?;
        self.report.push(format!(
            "{}: damaged ({why}); kept the {} queues that still read",
            path.display(),
            snap.queues.len()
        ));
        for line in lost {
            self.report.push(format!("  lost: {line}"));
        }
        let mut body = Vec::new();
        for (name, queue) in &snap.queues {
            snapshot::encode_queue(name, queue, &mut body);
        }
        let window = match snap.dedup_window_ms {
            Some(ms) => ms,
            None => self.window()?,
        };
        let file = snapshot::encode(&body, snap.queues.len(), window);
        self.replace(path, Some(&file))
    }

    fn segment(&mut self, path: &Path) -> anyhow::Result<()> {
        let data =
            std::fs::read(path).map_err(io_context(format!("cannot read {}", path.display())))?;
        let (layout, mut kept) = match layout_of(&data) {
            Ok(None) => return Ok(()),
            Ok(Some(layout)) => (layout, data[..layout.start].to_vec()),
            Err(why @ Unreadable::Header(HeaderError::Newer(_) | HeaderError::NotOurs { .. })) => {
                return Err(refusal(&self.dir, path, &why));
            }
            Err(why) => return self.headless_segment(path, &data, &why),
        };
        let lost = sift(&data, &layout, &mut kept);
        if lost.is_empty() {
            return Ok(());
        }
        self.report.push(format!(
            "{}: skipped {} damaged parts, kept every valid record",
            path.display(),
            lost.len()
        ));
        self.lost(lost, layout.encoding);
        self.replace(path, Some(&kept))
    }

    fn lost(&mut self, lost: Vec<String>, encoding: Encoding) {
        for line in lost {
            self.report.push(format!("  lost: {line}"));
        }
        if encoding == Encoding::V1 {
            self.report.push(
                "  the records after a skipped one replay with the ids the skipped records would have taken: items and leases made after it may carry other ids than their clients were given (data format 1 does not record them)".into(),
            );
        }
    }

    /// A segment whose header is damaged or cut short: written again with a new header when
    /// records follow it, removed when none does.
    fn headless_segment(
        &mut self,
        path: &Path,
        data: &[u8],
        why: &Unreadable,
    ) -> anyhow::Result<()> {
        let why = match why {
            Unreadable::Header(e) => e.to_string(),
            Unreadable::Damaged(e) => e.clone(),
        };
        let records = Layout {
            start: 0,
            encoding: Encoding::V2,
            window: None,
            format: format::DATA_FORMAT,
        };
        let Some(&(first, _)) = records.valid_frames(data, 0).first() else {
            self.report.push(format!(
                "{}: {why}, and no record follows it: removed",
                path.display()
            ));
            return self.replace(path, None);
        };
        let window = KEY_RETENTION_MS;
        let mut kept = format::encode(
            SEGMENT_MAGIC,
            &Options {
                dedup_window_ms: window,
                entries: 0,
            },
        );
        let layout = Layout {
            start: first,
            ..records
        };
        let lost = sift(data, &layout, &mut kept);
        self.report.push(format!(
            "{}: {why}; its records (from byte {first}) kept under a new header, with the default dedup window of {} min (the one it named is lost)",
            path.display(),
            window / 60_000
        ));
        self.lost(lost, layout.encoding);
        self.replace(path, Some(&kept))
    }
}

/// Appends the valid records of segment `data` (from `layout.start`) to `kept`, skipping each
/// damaged part from its start to the next valid record, and says what each skipped part was.
fn sift(data: &[u8], layout: &Layout, kept: &mut Vec<u8>) -> Vec<String> {
    let mut lost = Vec::new();
    let mut at = layout.start;
    loop {
        let frames = record::read_frames_with(&data[at..], |p| layout.encoding.decode(p));
        kept.extend_from_slice(&data[at..at + frames.end]);
        let Some((offset, why)) = frames.damage else {
            break;
        };
        let from = at + offset;
        match layout.valid_frames(data, from + 1).first() {
            Some(&(next, _)) => {
                lost.push(format!(
                    "bytes {from}..{next} ({why}): {}",
                    describe(&data[from..next], layout.encoding)
                ));
                at = next;
            }
            None => {
                lost.push(format!(
                    "bytes {from}..{} ({why}): a torn tail, {}",
                    data.len(),
                    describe(&data[from..], layout.encoding)
                ));
                break;
            }
        }
    }
    lost
}

/// What a skipped part held, as far as it still reads: one whole frame whose payload decodes
/// (its checksum failed, so what it says is not certain), or only its size.
fn describe(part: &[u8], encoding: Encoding) -> String {
    if let Some(len) = part.get(..4) {
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if FRAME_HEADER + len == part.len()
            && let Ok(r) = encoding.decode(&part[FRAME_HEADER..])
        {
            return format!("one record, which reads (unverified) as {}", r.summary());
        }
    }
    format!("{} bytes that do not read as a record", part.len())
}
