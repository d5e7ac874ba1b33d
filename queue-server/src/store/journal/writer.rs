//! The journal writer: requests append framed records to a shared buffer; one thread writes
//! whatever has gathered, then syncs once for all of it (group commit), and publishes how far
//! the log is safe. A failed write or sync is retried from the last synced offset until the disk
//! recovers; meanwhile the journal reports itself unhealthy.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::{FsyncMode, segment_path, sync_dir};

/// Longest a sync waits for the rest of a wave of writers (a sync itself takes milliseconds).
const GATHER: Duration = Duration::from_micros(500);

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
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    healthy: AtomicBool,
    error: Mutex<Option<String>>,
}

/// The append side of the journal; cheap to share.
pub struct Writer {
    shared: Arc<Shared>,
    safe: watch::Receiver<Lsn>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    /// Starts the writer thread on a new segment `segment` in `dir`.
    pub fn start(dir: &Path, segment: u64, mode: FsyncMode) -> std::io::Result<Self> {
        let file = create_segment(dir, segment)?;
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                chunks: VecDeque::new(),
                segment,
                last_lsn: 0,
                bytes_since_rotate: 0,
                closing: false,
            }),
            wake: Condvar::new(),
            healthy: AtomicBool::new(true),
            error: Mutex::new(None),
        });
        let (tx, safe) = watch::channel(0);
        let mut thread = WriterThread {
            shared: shared.clone(),
            dir: dir.to_path_buf(),
            mode,
            segment,
            file,
            synced_len: 0,
            unsynced: Vec::new(),
            unsynced_lsn: 0,
            last_sync: Instant::now(),
            last_batch: 0,
            safe: tx,
        };
        let handle = std::thread::Builder::new()
            .name("memq-journal".into())
            .spawn(move || thread.run())?;
        Ok(Self {
            shared,
            safe,
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
        drop(p);
        self.shared.wake.notify_one();
        lsn
    }

    /// Waits until the record at `lsn` is as safe as the fsync mode promises.
    pub async fn wait(&self, lsn: Lsn, timeout: Duration) -> Result<(), String> {
        let mut rx = self.safe.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|safe| *safe >= lsn)).await {
            Ok(Ok(_)) => Ok(()),
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

fn create_segment(dir: &Path, segment: u64) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(segment_path(dir, segment))?;
    sync_dir(dir)?;
    Ok(file)
}

struct WriterThread {
    shared: Arc<Shared>,
    dir: PathBuf,
    mode: FsyncMode,
    segment: u64,
    file: File,
    /// File length known to be on disk (or simply written, with `--fsync never`).
    synced_len: u64,
    /// Bytes written after `synced_len`, kept to write again if a sync fails.
    unsynced: Vec<u8>,
    unsynced_lsn: Lsn,
    last_sync: Instant,
    /// Records in the previous batch: how many writers a sync may expect to serve.
    last_batch: u64,
    safe: watch::Sender<Lsn>,
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
                    self.safe.send_replace(self.unsynced_lsn);
                    if self.last_sync.elapsed() >= every {
                        self.persist(|w| w.sync());
                    }
                }
            }
        }
        self.persist(|w| w.sync());
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
                    while p.last_lsn - self.unsynced_lsn < self.last_batch && !p.closing {
                        let left = until.saturating_duration_since(Instant::now());
                        if left.is_zero() || self.shared.wake.wait_for(&mut p, left).timed_out() {
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
                    if left.is_zero() || self.shared.wake.wait_for(&mut p, left).timed_out() {
                        drop(p);
                        self.persist(|w| w.sync());
                        p = self.shared.pending.lock();
                    }
                }
                _ => self.shared.wake.wait(&mut p),
            }
        }
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all(data)
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
        self.safe.send_replace(self.unsynced_lsn);
    }

    fn open_segment(&mut self, segment: u64) -> std::io::Result<()> {
        self.file = create_segment(&self.dir, segment)?;
        self.segment = segment;
        self.synced_len = 0;
        Ok(())
    }

    /// Runs `op` until it succeeds. After a failure, the file is cut back to what is known to be
    /// on disk and the unsynced bytes are written again, since a failed sync may have dropped them.
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
        self.file.seek(SeekFrom::Start(self.synced_len))?;
        let data = std::mem::take(&mut self.unsynced);
        let result = self.file.write_all(&data);
        self.unsynced = data;
        result
    }
}
