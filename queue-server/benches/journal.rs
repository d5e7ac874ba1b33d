//! Why the durable store writes its own segment log: durable appends by 64 concurrent writers
//! (each waits until its record is on disk), with the journal's group commit, against an embedded
//! storage crate (redb) used two ways: one transaction per write, and one transaction per batch of
//! waiting writers (group commit built on top). All in the same run, on the same disk.
//!
//! `cargo bench -p queue-server --bench journal`

use std::sync::Arc;
use std::time::{Duration, Instant};

use queue_server::store::journal::{FsyncMode, Writer};
use redb::{Database, Durability, TableDefinition};

const WRITERS: usize = 64;
const PER_WRITER: usize = 300;
const RECORD: &[u8] = b"enqueue keygen work-item-0000000000000000";
const TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");

fn rate(n: usize, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64()
}

fn journal(rt: &tokio::runtime::Runtime) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let writer = Arc::new(Writer::start(dir.path(), 1, FsyncMode::Always, Vec::new()).unwrap());
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..WRITERS {
            let w = writer.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..PER_WRITER {
                    let lsn = w.append(|buf| buf.extend_from_slice(RECORD));
                    w.wait(lsn, Duration::from_secs(30)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let took = started.elapsed();
    writer.close();
    rate(WRITERS * PER_WRITER, took)
}

fn redb_per_write() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Database::create(dir.path().join("db.redb")).unwrap());
    // Fewer writes: each one is a whole durable commit.
    let per_writer = PER_WRITER / 10;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..WRITERS {
            let (db, next) = (db.clone(), next.clone());
            s.spawn(move || {
                for _ in 0..per_writer {
                    let mut tx = db.begin_write().unwrap();
                    tx.set_durability(Durability::Immediate).unwrap();
                    {
                        let mut t = tx.open_table(TABLE).unwrap();
                        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        t.insert(k, RECORD).unwrap();
                    }
                    tx.commit().unwrap();
                }
            });
        }
    });
    rate(WRITERS * per_writer, started.elapsed())
}

fn redb_grouped() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::create(dir.path().join("db.redb")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<std::sync::mpsc::SyncSender<()>>();
    let committer = std::thread::spawn(move || {
        let mut key = 0u64;
        while let Ok(first) = rx.recv() {
            let mut waiting = vec![first];
            waiting.extend(rx.try_iter());
            let mut wtx = db.begin_write().unwrap();
            wtx.set_durability(Durability::Immediate).unwrap();
            {
                let mut t = wtx.open_table(TABLE).unwrap();
                for _ in &waiting {
                    t.insert(key, RECORD).unwrap();
                    key += 1;
                }
            }
            wtx.commit().unwrap();
            for w in waiting {
                let _ = w.send(());
            }
        }
    });
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..WRITERS {
            let tx = tx.clone();
            s.spawn(move || {
                for _ in 0..PER_WRITER {
                    let (done, wait) = std::sync::mpsc::sync_channel(1);
                    tx.send(done).unwrap();
                    wait.recv().unwrap();
                }
            });
        }
    });
    let took = started.elapsed();
    drop(tx);
    committer.join().unwrap();
    rate(WRITERS * PER_WRITER, took)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ours = journal(&rt);
    let per_write = redb_per_write();
    let grouped = redb_grouped();
    println!("durable appends, {WRITERS} concurrent writers, each waiting for its record on disk:");
    println!("  journal (segment log, group commit): {ours:>10.0} records/s  1.00x");
    println!(
        "  redb, one transaction per write:     {per_write:>10.0} records/s  {:.2}x",
        per_write / ours
    );
    println!(
        "  redb, one transaction per batch:     {grouped:>10.0} records/s  {:.2}x",
        grouped / ours
    );
}
