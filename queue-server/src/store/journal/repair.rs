//! `queue-server repair --data-dir DIR`: the explicit way on after damage that a start refuses
//! (damage with valid records after it). Every file it changes is first copied, as it was, to
//! `DIR/damaged-<time>/`; a damaged segment is written again without exactly the damaged bytes
//! (from the damage to the next valid record), a damaged snapshot without the queues that no
//! longer decode. It reports what each skipped part held, as far as it still reads.

use std::path::{Path, PathBuf};

use super::{
    io_context, load, lock, numbered, record, segment_path, snapshot, snapshot_path, sync_dir,
};
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
    progress("reading the repaired directory back");
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
    let recovered = load(dir, KEY_RETENTION_MS)?;
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
    aside: PathBuf,
    report: Vec<String>,
}

impl Repair {
    /// Copies `path` into the directory of originals, then replaces it by `content`.
    fn replace(&self, path: &Path, content: &[u8]) -> anyhow::Result<()> {
        let dir = path.parent().expect("a file in the data directory");
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
            let mut f = std::fs::File::create(&tmp)?;
            std::io::Write::write_all(&mut f, content)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            sync_dir(dir)
        };
        write().map_err(io_context(format!("cannot write {}", path.display())))
    }

    fn snapshot(&mut self, path: &Path) -> anyhow::Result<()> {
        let why = match snapshot::read(path) {
            Ok(_) => return Ok(()),
            Err(why) => why,
        };
        let (queues, lost) = snapshot::salvage(path)?;
        self.report.push(format!(
            "{}: damaged ({why}); kept the {} queues that still read",
            path.display(),
            queues.len()
        ));
        for line in lost {
            self.report.push(format!("  lost: {line}"));
        }
        let mut body = Vec::new();
        for (name, queue) in &queues {
            snapshot::encode_queue(name, queue, &mut body);
        }
        self.replace(path, &snapshot::encode(&body))
    }

    fn segment(&mut self, path: &Path) -> anyhow::Result<()> {
        let data =
            std::fs::read(path).map_err(io_context(format!("cannot read {}", path.display())))?;
        let mut kept = Vec::with_capacity(data.len());
        let mut lost = Vec::new();
        let mut at = 0;
        loop {
            let frames = record::read_frames(&data[at..]);
            kept.extend_from_slice(&data[at..at + frames.end]);
            let Some((offset, why)) = frames.damage else {
                break;
            };
            let from = at + offset;
            match record::valid_frames_from(&data, from + 1).first() {
                Some(&(next, _)) => {
                    lost.push(format!(
                        "bytes {from}..{next} ({why}): {}",
                        describe(&data[from..next])
                    ));
                    at = next;
                }
                None => {
                    lost.push(format!(
                        "bytes {from}..{} ({why}): a torn tail, {}",
                        data.len(),
                        describe(&data[from..])
                    ));
                    break;
                }
            }
        }
        if lost.is_empty() {
            return Ok(());
        }
        self.report.push(format!(
            "{}: skipped {} damaged parts, kept every valid record",
            path.display(),
            lost.len()
        ));
        for line in lost {
            self.report.push(format!("  lost: {line}"));
        }
        self.report.push(
            "  the records after a skipped one replay with the ids the skipped records would have taken: items and leases made after it may carry other ids than their clients were given (this journal format does not record them)".into(),
        );
        self.replace(path, &kept)
    }
}

/// What a skipped part held, as far as it still reads: one whole frame whose payload decodes
/// (its checksum failed, so what it says is not certain), or only its size.
fn describe(part: &[u8]) -> String {
    if let Some(len) = part.get(..4) {
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if record::FRAME_HEADER + len == part.len()
            && let Ok(r) = postcard::from_bytes::<record::Record>(&part[record::FRAME_HEADER..])
        {
            return format!("one record, which reads (unverified) as {}", r.summary());
        }
    }
    format!("{} bytes that do not read as a record", part.len())
}
