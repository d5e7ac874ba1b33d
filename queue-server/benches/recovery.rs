//! Durable-mode start-up: time to recover 1,000,000 queued items from the journal, and from the
//! snapshot written after that, against building the same queue in memory in the same run.
//!
//! `cargo bench -p queue-server --bench recovery`

use std::time::Instant;

use queue_server::broker::{NewItem, Queue, QueueConfig};
use queue_server::store::{MemoryStore, StoreOptions};
use tokio_util::sync::CancellationToken;

const N: usize = 1_000_000;
const BATCH: usize = 10_000;

fn items(start: usize) -> Vec<NewItem> {
    (start..start + BATCH)
        .map(|i| NewItem {
            body: format!("work-item-{i:06}").into_boxed_str(),
            key: None,
        })
        .collect()
}

fn open(dir: &std::path::Path) -> MemoryStore {
    let options = StoreOptions {
        data_dir: Some(dir.to_path_buf()),
        ..StoreOptions::default()
    };
    MemoryStore::open(options, CancellationToken::new()).expect("open the data directory")
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    rt.block_on(async {
        store.create_queue("q", None).await.unwrap();
        for start in (0..N).step_by(BATCH) {
            store.enqueue("q", items(start), 0).await.unwrap();
        }
    });
    store.close();
    drop(store);

    let started = Instant::now();
    let mut baseline = Queue::new(QueueConfig::default());
    for start in (0..N).step_by(BATCH) {
        baseline
            .enqueue_batch(items(start), 0, 1_800_000_000_000)
            .unwrap();
    }
    let build = started.elapsed().as_secs_f64();
    drop(baseline);

    let started = Instant::now();
    let store = open(dir.path());
    let from_journal = started.elapsed().as_secs_f64();
    assert_eq!(store.queue("q").unwrap().depth, N as u64);
    store.close();
    drop(store);

    let started = Instant::now();
    let store = open(dir.path());
    let from_snapshot = started.elapsed().as_secs_f64();
    assert_eq!(store.queue("q").unwrap().depth, N as u64);
    store.close();

    println!(
        "recovery: {N} items: from the journal {from_journal:.2} s, from the snapshot {from_snapshot:.2} s \
         (each includes writing a fresh snapshot); building them in memory {build:.2} s; \
         ratios {:.1}x and {:.1}x (target: under 2 s)",
        from_journal / build,
        from_snapshot / build
    );
}
