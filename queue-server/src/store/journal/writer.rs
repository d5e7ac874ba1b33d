//! The journal writer: requests append framed records to a shared buffer; one thread writes
//! whatever has gathered, then syncs once for all of it (group commit), and publishes how far
//! the log is safe, waking exactly the requests whose records that covers. A failed write or
//! sync is retried from the last synced offset until the disk recovers; meanwhile the journal
//! reports itself unhealthy.
//!
//! A segment grows by [`PREALLOCATE`] zeroed bytes at a time, written ahead of the records: the
//! file's length then changes once per step instead of with every sync, so a sync writes only
//! the records and not the file's metadata too (on ext4, a third of the disk requests of a
//! sync). Reading takes a zeroed tail as the clean end of a segment. Growing is best effort:
//! when the disk has no room for a step, the zeros are taken back and records are appended as
//! they come, until a later step fits.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use super::{FsyncMode, segment_path, sync_dir};

/// Longest a sync waits for a wave of writers to grow to the size of the last batch. Short:
/// the requests that arrive while a sync runs are taken by the next one anyway, and waiting only
/// saves syncs (each of which costs CPU for its disk requests). Of 0 to 500 µs, 80 to 110 µs
/// gave the most durable enqueues per second at 64 clients (docs/benchmarks.md).
const GATHER: Duration = Duration::from_micros(100);

/// Zeroed bytes a segment grows by, ahead of its records.
const PREALLOCATE: u64 = 4 << 20;

/// Position of a record in the journal (1 for the first record of this run).
pub type Lsn = u64;

struct Chunk {
    segment: u64,
    data: Vec<u8>,
    last_lsn: Lsn,
}

struct Pending {
    chunks: VecDeque<Chunk>,
    segment: u64,
    last_lsn: Lsn,
    bytes_since_rotate: u64,
    closing: bool,
    /// The writer thread sleeps until `last_lsn` reaches this (`Lsn::MAX`: it is not waiting
    /// for appends), so that a wave of appends wakes it once, not once per record.
    wake_at: Lsn,
}

/// Requests waiting for their record to be safe, in record order.
struct Waiters {
    list: VecDeque<(Lsn, oneshot::Sender<()>)>,
    /// Length at which entries whose request gave up are swept out.
    sweep_at: usize,
    /// The writer thread has ended: nothing more becomes safe.
    stopped: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// How far the log is as safe as the fsync mode promises.
    safe: AtomicU64,
    waiters: Mutex<Waiters>,
    healthy: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Shared {
    /// Publishes that every record up to `lsn` is safe and wakes the requests waiting for them.
    fn publish(&self, lsn: Lsn) {
        self.safe.store(lsn, Ordering::Release);
        let mut w = self.waiters.lock();
        let n = w.list.partition_point(|(at, _)| *at <= lsn);
        let woken: Vec<_> = w.list.drain(..n).collect();
        drop(w);
        for (_, tx) in woken {
            let _ = tx.send(());
        }
    }

    /// Ends every wait still pending: the writer thread is gone.
    fn stop(&self) {
        let mut w = self.waiters.lock();
        w.stopped = true;
        let left = std::mem::take(&mut w.list);
        drop(w);
        drop(left);
    }
}

/// The append side of the journal; cheap to share.
pub struct Writer {
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Fewest waiting entries before those of requests that gave up are swept out.
const SWEEP_MIN: usize = 1024;

impl Writer {
    /// Starts the writer thread on a new segment `segment` in `dir`; every segment it creates
    /// starts with `header`.
    pub fn start(
        dir: &Path,
        segment: u64,
        mode: FsyncMode,
        header: Vec<u8>,
    ) -> std::io::Result<Self> {
        let file = create_segment(dir, segment, &header)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                chunks: VecDeque::new(),
                segment,
                last_lsn: 0,
                bytes_since_rotate: 0,
                closing: false,
                wake_at: Lsn::MAX,
            }),
            wake: Condvar::new(),
            safe: AtomicU64::new(0),
            waiters: Mutex::new(Waiters {
                list: VecDeque::new(),
                sweep_at: SWEEP_MIN,
                stopped: false,
            }),
            healthy: AtomicBool::new(true),
            error: Mutex::new(None),
        });
        let mut thread = WriterThread {
            shared: shared.clone(),
            dir: dir.to_path_buf(),
            mode,
            segment,
            file,
            synced_len: header.len() as u64,
            allocated: header.len() as u64,
            header,
            next_preallocate: Instant::now(),
            unsynced: Vec::new(),
            unsynced_lsn: 0,
            last_sync: Instant::now(),
            last_batch: 0,
        };
        let handle = std::thread::Builder::new()
            .name("memq-journal".into())
            .spawn(move || {
                let _stop = StopOnExit(thread.shared.clone());
                thread.run();
            })?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(handle)),
        })
    }

    /// Appends one framed record (built by `fill`) and returns its position.
    pub fn append(&self, fill: impl FnOnce(&mut Vec<u8>)) -> Lsn {
        let mut p = self.shared.pending.lock();
        let segment = p.segment;
        p.last_lsn += 1;
        let lsn = p.last_lsn;
        if p.chunks.back().is_none_or(|c| c.segment != segment) {
            p.chunks.push_back(Chunk {
                segment,
                data: Vec::with_capacity(4096),
                last_lsn: lsn,
            });
        }
        let chunk = p.chunks.back_mut().expect("a chunk");
        let before = chunk.data.len();
        fill(&mut chunk.data);
        chunk.last_lsn = lsn;
        let added = (chunk.data.len() - before) as u64;
        p.bytes_since_rotate += added;
        let wake = lsn >= p.wake_at;
        if wake {
            p.wake_at = Lsn::MAX;
        }
        drop(p);
        if wake {
            self.shared.wake.notify_one();
        }
        lsn
    }

    /// Waits until the record at `lsn` is as safe as the fsync mode promises.
    pub async fn wait(&self, lsn: Lsn, timeout: Duration) -> Result<(), String> {
        let shared = &self.shared;
        if shared.safe.load(Ordering::Acquire) >= lsn {
            return Ok(());
        }
        let rx = {
            let mut w = shared.waiters.lock();
            // Checked again under the lock: `publish` stores before it locks, so either it
            // sees this entry or this sees its store.
            if shared.safe.load(Ordering::Acquire) >= lsn {
                return Ok(());
            }
            if w.stopped {
                return Err("the journal writer stopped".into());
            }
            if w.list.len() >= w.sweep_at {
                w.list.retain(|(_, tx)| !tx.is_closed());
                w.sweep_at = (w.list.len() * 2).max(SWEEP_MIN);
            }
            let (tx, rx) = oneshot::channel();
            // Requests register in about record order; keep the list sorted.
            let at = w
                .list
                .iter()
                .rposition(|(l, _)| *l <= lsn)
                .map_or(0, |i| i + 1);
            w.list.insert(at, (lsn, tx));
            rx
        };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("the journal writer stopped".into()),
            Err(_) => Err(match self.error() {
                Some(e) => format!(
                    "journal write not confirmed ({e}); the change may still be stored once the disk recovers"
                ),
                None => {
                    "journal write not confirmed in time; the change may still be stored".into()
                }
            }),
        }
    }

    /// False while writes or syncs fail.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// The last write or sync error, while unhealthy.
    pub fn error(&self) -> Option<String> {
        self.shared.error.lock().clone()
    }

    /// Bytes appended since the last rotation.
    pub fn bytes_since_rotate(&self) -> u64 {
        self.shared.pending.lock().bytes_since_rotate
    }

    /// Starts a new segment: records appended from now on go there. Returns its number.
    pub fn rotate(&self) -> u64 {
        let mut p = self.shared.pending.lock();
        p.segment += 1;
        p.bytes_since_rotate = 0;
        let (segment, last_lsn) = (p.segment, p.last_lsn);
        p.chunks.push_back(Chunk {
            segment,
            data: Vec::new(),
            last_lsn,
        });
        p.wake_at = Lsn::MAX;
        drop(p);
        self.shared.wake.notify_one();
        segment
    }

    /// Writes and syncs everything appended, then stops the thread.
    pub fn close(&self) {
        self.shared.pending.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(handle) = self.thread.lock().take() {
            let _ = handle.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.close();
    }
}

/// A new segment file holding `header`, synced: the header is on disk before any record, so a
/// segment's records are never read without it.
fn create_segment(dir: &Path, segment: u64, header: &[u8]) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(segment_path(dir, segment))?;
    file.write_all_at(header, 0)?;
    file.sync_data()?;
    sync_dir(dir)?;
    Ok(file)
}

struct WriterThread {
    shared: Arc<Shared>,
    dir: PathBuf,
    mode: FsyncMode,
    segment: u64,
    file: File,
    /// What every segment starts with.
    header: Vec<u8>,
    /// File length known to be on disk (or simply written, with `--fsync never`).
    synced_len: u64,
    /// Length of the file: records, and the zeros ahead of them.
    allocated: u64,
    /// After a step did not fit on the disk, when to try the next.
    next_preallocate: Instant,
    /// Bytes written after `synced_len`, kept to write again if a sync fails.
    unsynced: Vec<u8>,
    unsynced_lsn: Lsn,
    last_sync: Instant,
    /// Records in the previous batch: how many writers a sync may expect to serve.
    last_batch: u64,
}

/// Ends the waits still pending when the writer thread returns or panics.
struct StopOnExit(Arc<Shared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl WriterThread {
    fn run(&mut self) {
        while let Some(batch) = self.next_batch() {
            for chunk in batch {
                if chunk.segment != self.segment {
                    self.persist(|w| w.sync());
                    self.persist(|w| w.open_segment(chunk.segment));
                }
                if !chunk.data.is_empty() {
                    self.persist(|w| w.write(&chunk.data));
                    self.unsynced.extend_from_slice(&chunk.data);
                }
                self.unsynced_lsn = chunk.last_lsn;
            }
            match self.mode {
                FsyncMode::Always => self.persist(|w| w.sync()),
                FsyncMode::Never => self.mark_synced(),
                FsyncMode::Interval(every) => {
                    // Written to the OS: safe from a process crash; synced within `every`.
                    self.shared.publish(self.unsynced_lsn);
                    if self.last_sync.elapsed() >= every {
                        self.persist(|w| w.sync());
                    }
                }
            }
        }
        self.persist(|w| w.sync());
        self.trim();
    }

    /// Takes every gathered chunk; `None` once closing and nothing is left.
    fn next_batch(&mut self) -> Option<Vec<Chunk>> {
        let mut p = self.shared.pending.lock();
        loop {
            if !p.chunks.is_empty() {
                if self.mode == FsyncMode::Always && self.last_batch > 1 {
                    // Writers come in waves: the last sync woke them all, and they append one by
                    // one. Give the wave a moment to arrive so one sync serves all of it,
                    // instead of syncing the first record alone.
                    let until = Instant::now() + GATHER;
                    let want = self.unsynced_lsn + self.last_batch;
                    while p.last_lsn < want && !p.closing {
                        let left = until.saturating_duration_since(Instant::now());
                        p.wake_at = want;
                        let timed_out =
                            left.is_zero() || self.shared.wake.wait_for(&mut p, left).timed_out();
                        p.wake_at = Lsn::MAX;
                        if timed_out {
                            break;
                        }
                    }
                }
                self.last_batch = p.last_lsn - self.unsynced_lsn;
                return Some(p.chunks.drain(..).collect());
            }
            if p.closing {
                return None;
            }
            match self.mode {
                FsyncMode::Interval(every) if !self.unsynced.is_empty() => {
                    let left = every.saturating_sub(self.last_sync.elapsed());
                    p.wake_at = 0;
                    let timed_out =
                        left.is_zero() || self.shared.wake.wait_for(&mut p, left).timed_out();
                    p.wake_at = Lsn::MAX;
                    if timed_out {
                        drop(p);
                        self.persist(|w| w.sync());
                        p = self.shared.pending.lock();
                    }
                }
                _ => {
                    p.wake_at = 0;
                    self.shared.wake.wait(&mut p);
                    p.wake_at = Lsn::MAX;
                }
            }
        }
    }

    /// Writes `data` after the bytes already written.
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        let at = self.synced_len + self.unsynced.len() as u64;
        let end = at + data.len() as u64;
        self.preallocate(end);
        self.file.write_all_at(data, at)?;
        self.allocated = self.allocated.max(end);
        Ok(())
    }

    /// Writes zeros up to past `end`, a [`PREALLOCATE`] step at a time; they reach the disk
    /// with the next sync, as does the file's new length. When they do not fit, they are cut
    /// off again (the records need the room more) and the next step is tried a second later.
    fn preallocate(&mut self, end: u64) {
        static ZEROS: [u8; 256 << 10] = [0; 256 << 10];
        if end <= self.allocated || Instant::now() < self.next_preallocate {
            return;
        }
        let target = (end / PREALLOCATE + 1) * PREALLOCATE;
        let mut at = self.allocated;
        while at < target {
            let n = (target - at).min(ZEROS.len() as u64) as usize;
            if let Err(e) = self.file.write_all_at(&ZEROS[..n], at) {
                tracing::debug!(segment = self.segment, error = %e, "no room to grow the journal ahead of its records");
                let _ = self.file.set_len(self.allocated);
                self.next_preallocate = Instant::now() + Duration::from_secs(1);
                return;
            }
            at += n as u64;
        }
        self.allocated = target;
    }

    /// Cuts the zeros after the last record, when the segment is done with. Not synced: if the
    /// cut is lost, the zeros read as the end of the segment all the same.
    fn trim(&mut self) {
        let end = self.synced_len + self.unsynced.len() as u64;
        if self.allocated > end {
            if let Err(e) = self.file.set_len(end) {
                tracing::warn!(segment = self.segment, error = %e, "cannot cut the zeroed end of a journal segment; it reads as the end all the same");
            }
            self.allocated = end;
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        if self.mode != FsyncMode::Never {
            self.file.sync_data()?;
        }
        self.mark_synced();
        Ok(())
    }

    fn mark_synced(&mut self) {
        self.synced_len += self.unsynced.len() as u64;
        self.unsynced.clear();
        self.last_sync = Instant::now();
        self.shared.publish(self.unsynced_lsn);
    }

    fn open_segment(&mut self, segment: u64) -> std::io::Result<()> {
        let file = create_segment(&self.dir, segment, &self.header)?;
        self.trim();
        self.file = file;
        self.segment = segment;
        self.synced_len = self.header.len() as u64;
        self.allocated = self.synced_len;
        Ok(())
    }

    /// Runs `op` until it succeeds. After a failure, the file is cut back to what is known to be
    /// on disk and the unsynced bytes (and zeros ahead of them) are written again, since a failed
    /// write or sync may have dropped them.
    fn persist(&mut self, mut op: impl FnMut(&mut Self) -> std::io::Result<()>) {
        let mut failures = 0u32;
        loop {
            let result = if failures == 0 {
                op(self)
            } else {
                self.rewrite().and_then(|()| op(self))
            };
            match result {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(segment = self.segment, "journal writes work again");
                        *self.shared.error.lock() = None;
                        self.shared.healthy.store(true, Ordering::Release);
                    }
                    return;
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::error!(segment = self.segment, error = %e, "journal write failed; refusing changes until the disk recovers (free space or fix the data directory)");
                        *self.shared.error.lock() = Some(e.to_string());
                        self.shared.healthy.store(false, Ordering::Release);
                    }
                    failures = failures.saturating_add(1);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }

    fn rewrite(&mut self) -> std::io::Result<()> {
        self.file.set_len(self.synced_len)?;
        self.allocated = self.synced_len;
        let data = std::mem::take(&mut self.unsynced);
        let result = self.write(&data);
        self.unsynced = data;
        result
    }
}
