//! `--data-dir` after damage: a torn tail (nothing valid after it) is cut with a warning and
//! the server starts; damage with valid records after it stops the start with one line that
//! names the file, the offset, how many valid records follow and the repair, leaving the data
//! directory byte for byte as it was; `queue-server repair` then skips exactly the damaged
//! records and says what they held.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memq::{DequeueOptions, Dequeued, EnqueueOptions};
use queue_server::Config;
use queue_server::testing::{ServerProcess, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_queue-server");

fn durable(dir: &Path) -> Config {
    Config {
        data_dir: Some(dir.to_path_buf()),
        ..Config::default()
    }
}

/// Takes every ready item for good, in order.
async fn drain_all(client: &memq::Client, queue: &str) -> Vec<String> {
    let opts = DequeueOptions {
        max: Some(1000),
        ..Default::default()
    };
    let mut out = Vec::new();
    while let Dequeued::Messages(batch) = client.dequeue(queue, &opts).await.unwrap() {
        out.extend(batch.into_iter().map(|m| m.body));
    }
    out
}

/// Frames of a journal segment: (start offset, end offset) of each record, up to the zeros a
/// segment may end with.
fn frames(path: &Path) -> Vec<(usize, usize)> {
    let data = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push((at, at + 8 + len));
        at += 8 + len;
    }
    out
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("journal-")
        })
        .collect();
    segs.sort();
    segs.pop().unwrap()
}

/// A data directory holding queue `q` with `item-000` .. `item-{n-1}`: a create record, then
/// one enqueue record per item.
async fn load_then_stop(dir: &Path, n: usize) {
    let server = TestServer::start(durable(dir)).await;
    let c = server.client();
    c.create_queue("q", None).await.unwrap();
    for i in 0..n {
        c.enqueue("q", format!("item-{i:03}"), &EnqueueOptions::default())
            .await
            .unwrap();
    }
    server.shutdown().await;
}

fn items(range: impl Iterator<Item = usize>) -> Vec<String> {
    range.map(|i| format!("item-{i:03}")).collect()
}

/// Every file of `dir` (not its subdirectories) with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn flip(path: &Path, at: usize) {
    let mut data = std::fs::read(path).unwrap();
    data[at] ^= 0x40;
    std::fs::write(path, data).unwrap();
}

/// Starts the real binary on `dir`, which must refuse: its log line, after checking that it
/// exited non-zero and left every file of `dir` as it was.
fn refused_start(dir: &Path) -> String {
    let before = contents(dir);
    let (status, stderr) = ServerProcess::run_to_exit(BIN, &["--data-dir", dir.to_str().unwrap()]);
    assert!(!status.success(), "the start was refused: {stderr}");
    assert_eq!(
        contents(dir),
        before,
        "the data directory is left as it was"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr}");
    assert!(
        lines[0].contains(&format!(
            "run `queue-server repair --data-dir {}`",
            dir.display()
        )),
        "it names the repair: {stderr}"
    );
    lines[0].to_string()
}

/// Runs `queue-server repair` on `dir`: its report.
fn repair(dir: &Path) -> String {
    let out = std::process::Command::new(BIN)
        .args(["repair", "--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "repair failed: {report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report
}

/// The one `damaged-*` directory a repair left, and the files in it.
fn originals(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let aside: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(aside.len(), 1, "one directory of originals: {aside:?}");
    assert!(
        aside[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("damaged-")
    );
    contents(&aside[0])
}

async fn items_served(dir: &Path, queue: &str) -> Vec<String> {
    let server = TestServer::start(durable(dir)).await;
    let items = drain_all(&server.client(), queue).await;
    server.shutdown().await;
    items
}

#[tokio::test]
async fn a_byte_flipped_in_an_item_body_stops_the_start_and_repair_loses_only_that_item() {
    let dir = tempfile::tempdir().unwrap();
    load_then_stop(dir.path(), 100).await;
    let seg = newest_segment(dir.path());
    let f = frames(&seg);
    // Record 51 is item-050: flip a byte of its text.
    let damaged = std::fs::read(&seg).unwrap();
    let at = damaged
        .windows(8)
        .position(|w| w == b"item-050")
        .expect("the item's text");
    assert!(f[51].0 < at && at < f[51].1);
    flip(&seg, at + 7);
    let line = refused_start(dir.path());
    assert!(
        line.contains(&format!(
            "{} is damaged at byte {} (checksum mismatch) and 49 valid records follow it (49 in this segment, 0 in later ones)",
            seg.display(),
            f[51].0
        )),
        "{line}"
    );

    let report = repair(dir.path());
    assert!(
        report.contains(&format!(
            "lost: bytes {}..{} (checksum mismatch): one record, which reads (unverified) as queue q: enqueue of 1 items",
            f[51].0, f[51].1
        )),
        "{report}"
    );
    let mut flipped = damaged.clone();
    flipped[at + 7] ^= 0x40;
    assert_eq!(
        originals(dir.path())[&seg.file_name().unwrap().to_string_lossy().into_owned()],
        flipped,
        "the damaged segment is kept as it was"
    );
    assert_eq!(
        items_served(dir.path(), "q").await,
        items((0..50).chain(51..100)),
        "only item-050 is lost"
    );
}

#[tokio::test]
async fn a_byte_flipped_in_a_frame_header_stops_the_start_and_repair_skips_that_record() {
    let dir = tempfile::tempdir().unwrap();
    load_then_stop(dir.path(), 100).await;
    let seg = newest_segment(dir.path());
    let f = frames(&seg);
    // The length of record 31 (item-030) grows by 64: it claims the start of the next one.
    flip(&seg, f[31].0);
    let line = refused_start(dir.path());
    assert!(
        line.contains(&format!("is damaged at byte {}", f[31].0)),
        "{line}"
    );
    assert!(line.contains("and 69 valid records follow it"), "{line}");

    let report = repair(dir.path());
    assert!(
        report.contains(&format!("lost: bytes {}..{} ", f[31].0, f[31].1)),
        "exactly the damaged record is skipped: {report}"
    );
    assert_eq!(
        items_served(dir.path(), "q").await,
        items((0..30).chain(31..100))
    );
}

#[tokio::test]
async fn a_byte_flipped_in_the_first_record_stops_the_start_and_repair_reports_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    load_then_stop(dir.path(), 20).await;
    let seg = newest_segment(dir.path());
    let f = frames(&seg);
    flip(&seg, f[0].1 - 1);
    let line = refused_start(dir.path());
    assert!(line.contains("is damaged at byte 0 "), "{line}");
    assert!(line.contains("and 20 valid records follow it"), "{line}");

    let report = repair(dir.path());
    assert!(
        report.contains("which reads (unverified) as queue q: created"),
        "{report}"
    );
    assert!(
        report.contains("queue q: its create record was lost: its 20 later records were skipped (the queue is gone; create it again)"),
        "{report}"
    );
}

#[tokio::test]
async fn damage_in_one_segment_with_valid_records_in_the_next_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    load_then_stop(dir.path(), 10).await;
    let seg = newest_segment(dir.path());
    let f = frames(&seg);
    // Split the segment in two after item-004; damage item-004, the last record of the first.
    let data = std::fs::read(&seg).unwrap();
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let n: u64 = name["journal-".len()..name.len() - ".log".len()]
        .parse()
        .unwrap();
    let next = dir.path().join(format!("journal-{:020}.log", n + 1));
    std::fs::write(&next, &data[f[6].0..]).unwrap();
    std::fs::write(&seg, &data[..f[6].0]).unwrap();
    flip(&seg, f[5].1 - 2);
    let line = refused_start(dir.path());
    assert!(
        line.contains("and 5 valid records follow it (0 in this segment, 5 in later ones)"),
        "{line}"
    );
    repair(dir.path());
    assert_eq!(
        items_served(dir.path(), "q").await,
        items((0..4).chain(5..10))
    );
}

#[tokio::test]
async fn a_damaged_snapshot_stops_the_start_and_repair_keeps_the_queues_that_read() {
    let dir = tempfile::tempdir().unwrap();
    load_then_stop(dir.path(), 10).await;
    // A restart writes every queue into a fresh snapshot.
    let server = TestServer::start(durable(dir.path())).await;
    server.client().create_queue("other", None).await.unwrap();
    server.shutdown().await;
    let snap = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "snap"))
        .unwrap();
    // A byte of queue q's last item text ("item-009", the end of its entry).
    let data = std::fs::read(&snap).unwrap();
    let at = data
        .windows(8)
        .position(|w| w == b"item-009")
        .expect("the item's text");
    flip(&snap, at + 7);
    let line = refused_start(dir.path());
    assert!(
        line.contains(&format!(
            "snapshot {} is damaged (checksum mismatch)",
            snap.display()
        )),
        "{line}"
    );
    let report = repair(dir.path());
    assert!(report.contains("damaged (checksum mismatch)"), "{report}");
    let mut served = items_served(dir.path(), "q").await;
    // The damaged text is kept as it reads: this snapshot format cannot tell which item it was.
    assert_eq!(served.pop().as_deref(), Some("item-00y"));
    assert_eq!(served, items(0..9));
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_everything_before_it_stays() {
    let dir = tempfile::tempdir().unwrap();
    load_then_stop(dir.path(), 100).await;
    let seg = newest_segment(dir.path());
    let f = frames(&seg);
    assert_eq!(f.len(), 101, "a create record and 100 enqueues");
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.set_len(f[100].1 as u64 - 3).unwrap();
    drop(file);

    assert_eq!(items_served(dir.path(), "q").await, items(0..99));
}

#[tokio::test]
async fn a_damaged_last_record_with_nothing_after_it_is_cut_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    load_then_stop(dir.path(), 100).await;
    let seg = newest_segment(dir.path());
    let f = frames(&seg);
    flip(&seg, f[100].1 - 2);
    let dir_arg = dir.path().to_str().unwrap();
    let mut server =
        ServerProcess::start_logged(BIN, &["--data-dir", dir_arg], &[("RUST_LOG", "warn")]).await;
    let client = memq::Client::new(server.base_url()).unwrap();
    assert_eq!(drain_all(&client, "q").await, items(0..99));
    let log = server.log();
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("torn tail"))
        .unwrap_or_else(|| panic!("a warning: {log}"));
    assert!(
        warning.contains(&format!(
            "{}: checksum mismatch at byte {}, and no valid record after it",
            seg.display(),
            f[100].0
        )),
        "{warning}"
    );
    server.kill();
}

#[tokio::test]
async fn the_zeros_a_crash_leaves_after_the_records_read_as_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let mut server = ServerProcess::start(BIN, &["--data-dir", &dir_arg]).await;
    let client = memq::Client::new(server.base_url()).unwrap();
    client.create_queue("q", None).await.unwrap();
    for i in 0..50 {
        client
            .enqueue("q", format!("item-{i:03}"), &EnqueueOptions::default())
            .await
            .unwrap();
    }
    let seg = newest_segment(dir.path());
    let f = frames(&seg);
    assert_eq!(f.len(), 51, "a create record and 50 enqueues");
    let records_end = f[50].1;
    let data = std::fs::read(&seg).unwrap();
    assert!(
        data.len() >= 4 << 20,
        "the segment grows ahead of its records: {} bytes",
        data.len()
    );
    assert!(data[records_end..].iter().all(|&b| b == 0));

    server.kill();
    let mut server = ServerProcess::start(BIN, &["--data-dir", &dir_arg]).await;
    let client = memq::Client::new(server.base_url()).unwrap();
    let items = drain_all(&client, "q").await;
    let expected: Vec<String> = (0..50).map(|i| format!("item-{i:03}")).collect();
    assert_eq!(items, expected, "every item, nothing read from the zeros");
    // Recovery cuts the zeros; a snapshot taken at start may have replaced the segment since.
    if let Ok(meta) = std::fs::metadata(&seg) {
        assert_eq!(meta.len(), records_end as u64, "recovery cut the zeros");
    }
    server.kill();
}

#[tokio::test]
async fn repair_refuses_a_data_dir_in_use_and_finds_nothing_in_a_sound_one() {
    let dir = tempfile::tempdir().unwrap();
    load_then_stop(dir.path(), 3).await;
    let report = repair(dir.path());
    assert!(
        report.contains("no damage found; nothing changed"),
        "{report}"
    );
    let server = TestServer::start(durable(dir.path())).await;
    assert!(server.wait_ready(std::time::Duration::from_secs(10)).await);
    let out = std::process::Command::new(BIN)
        .args(["repair", "--data-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another queue-server"),
        "{stderr}"
    );
    server.shutdown().await;
}
