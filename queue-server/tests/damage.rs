//! `--data-dir` after damage: a torn tail (nothing valid after it) is cut with a warning and
//! the server starts; damage with valid records after it stops the start with one line that
//! names the file, the offset, how many valid records follow and the repair, leaving the data
//! directory byte for byte as it was; `queue-server repair` then skips exactly the damaged
//! records and says what they held. Files the server cannot read as they are (a newer format,
//! another program's, a header cut short) stop it the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memq::{DequeueOptions, Dequeued, EnqueueOptions};
use queue_server::Config;
use queue_server::store::journal;
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

/// Frames of a journal segment: (start offset, end offset) of each record after the header,
/// up to the zeros a segment may end with.
fn frames(path: &Path) -> Vec<(usize, usize)> {
    let data = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = header_len(path);
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

/// The length of a segment's header.
fn header_len(path: &Path) -> usize {
    let data = std::fs::read(path).unwrap();
    journal::format::parse(journal::format::SEGMENT_MAGIC, &data)
        .expect("a segment header")
        .len
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

/// The path of the segment after `seg`.
fn next_segment(seg: &Path) -> PathBuf {
    let name = seg.file_name().unwrap().to_string_lossy().into_owned();
    let n: u64 = name["journal-".len()..name.len() - ".log".len()]
        .parse()
        .unwrap();
    seg.with_file_name(format!("journal-{:020}.log", n + 1))
}

/// A data directory holding queue `q` with `item-000` .. `item-{n-1}`: a create record, then
/// one enqueue record per item. The ids the items were given.
async fn load_then_stop(dir: &Path, n: usize) -> Vec<String> {
    let server = TestServer::start(durable(dir)).await;
    let c = server.client();
    c.create_queue("q", None).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..n {
        let m = c
            .enqueue("q", format!("item-{i:03}"), &EnqueueOptions::default())
            .await
            .unwrap();
        ids.push(m.id);
    }
    server.shutdown().await;
    ids
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

/// Starts the real binary on `dir`, which must refuse: its one log line, after checking that it
/// exited non-zero and left every file of `dir` as it was.
fn refused(dir: &Path) -> String {
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
    lines[0].to_string()
}

/// [`refused`], for damage: the line names the repair.
fn refused_start(dir: &Path) -> String {
    let line = refused(dir);
    assert!(
        line.contains(&format!(
            "run `queue-server repair --data-dir {}`",
            dir.display()
        )),
        "it names the repair: {line}"
    );
    line
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
    ids_served(dir, queue)
        .await
        .into_iter()
        .map(|(_, body)| body)
        .collect()
}

/// Every item of `queue` of a server started on `dir`, taken in order: (id, text).
async fn ids_served(dir: &Path, queue: &str) -> Vec<(String, String)> {
    let server = TestServer::start(durable(dir)).await;
    let opts = DequeueOptions {
        max: Some(1000),
        ..Default::default()
    };
    let mut out = Vec::new();
    let client = server.client();
    while let Dequeued::Messages(batch) = client.dequeue(queue, &opts).await.unwrap() {
        out.extend(batch.into_iter().map(|m| (m.id, m.body)));
    }
    server.shutdown().await;
    out
}

#[tokio::test]
async fn a_byte_flipped_in_an_item_body_stops_the_start_and_repair_loses_only_that_item() {
    let dir = tempfile::tempdir().unwrap();
    let ids = load_then_stop(dir.path(), 100).await;
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
    assert!(
        report.contains(&format!(
            "queue q: the lost records had made 1 id (an item enqueued or a lease taken): {}",
            ids[50]
        )),
        "{report}"
    );
    let served = ids_served(dir.path(), "q").await;
    let want: Vec<(String, String)> = (0..50)
        .chain(51..100)
        .map(|i| (ids[i].clone(), format!("item-{i:03}")))
        .collect();
    assert_eq!(
        served, want,
        "only item-050 is lost; the others keep the ids their clients were given"
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
async fn a_byte_flipped_in_the_first_record_stops_the_start_and_repair_makes_the_queue_again() {
    let dir = tempfile::tempdir().unwrap();
    let ids = load_then_stop(dir.path(), 20).await;
    let seg = newest_segment(dir.path());
    let f = frames(&seg);
    flip(&seg, f[0].1 - 1);
    let line = refused_start(dir.path());
    assert!(
        line.contains(&format!("is damaged at byte {} ", f[0].0)),
        "{line}"
    );
    assert!(line.contains("and 20 valid records follow it"), "{line}");

    let report = repair(dir.path());
    assert!(
        report.contains("which reads (unverified) as queue q: created"),
        "{report}"
    );
    assert!(
        report
            .contains("queue q: its create record was lost: made again with the default settings"),
        "{report}"
    );
    let served = ids_served(dir.path(), "q").await;
    let want: Vec<(String, String)> = (0..20)
        .map(|i| (ids[i].clone(), format!("item-{i:03}")))
        .collect();
    assert_eq!(served, want, "every item, with its id");
}

#[tokio::test]
async fn damage_in_one_segment_with_valid_records_in_the_next_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    load_then_stop(dir.path(), 10).await;
    let seg = newest_segment(dir.path());
    let f = frames(&seg);
    // Split the segment in two after item-004; damage item-004, the last record of the first.
    let data = std::fs::read(&seg).unwrap();
    let next = next_segment(&seg);
    let header = &data[..header_len(&seg)];
    std::fs::write(&next, [header, &data[f[6].0..]].concat()).unwrap();
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
    // A restart writes every queue into a fresh snapshot; queue other is created after it.
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
            "{} is damaged (queue 1 of 1, at byte ",
            snap.display()
        )),
        "{line}"
    );
    assert!(line.contains(": checksum mismatch)"), "{line}");
    let report = repair(dir.path());
    assert!(
        report.contains("queue q fails its checksum but still reads: kept as it reads"),
        "{report}"
    );
    let mut served = items_served(dir.path(), "q").await;
    // The damaged text is kept as it reads, and the repair said so.
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

/// A segment header naming data format `version`, its checksum made to match.
fn header_of_version(header: &[u8], version: u32) -> Vec<u8> {
    let mut out = header[..header.len() - 4].to_vec();
    out[8..12].copy_from_slice(&version.to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[tokio::test]
async fn a_segment_of_a_newer_format_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    load_then_stop(dir.path(), 3).await;
    let seg = newest_segment(dir.path());
    let data = std::fs::read(&seg).unwrap();
    let len = header_len(&seg);
    let newer = [header_of_version(&data[..len], 3), data[len..].to_vec()].concat();
    std::fs::write(&seg, newer).unwrap();
    let line = refused(dir.path());
    assert!(
        line.contains(&format!(
            "{}: it is in data format 3, written by a newer release; this release reads formats 1 to 2",
            seg.display()
        )),
        "{line}"
    );
}

#[tokio::test]
async fn a_snapshot_of_a_newer_format_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    load_then_stop(dir.path(), 3).await;
    let snap = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "snap"))
        .unwrap();
    let data = std::fs::read(&snap).unwrap();
    let len = journal::format::parse(journal::format::SNAPSHOT_MAGIC, &data)
        .unwrap()
        .len;
    let newer = [header_of_version(&data[..len], 7), data[len..].to_vec()].concat();
    std::fs::write(&snap, newer).unwrap();
    let line = refused(dir.path());
    assert!(
        line.contains(
            "it is in data format 7, written by a newer release; this release reads formats 1 to 2"
        ),
        "{line}"
    );
    assert!(line.contains("docs/upgrading.md"), "{line}");
}

#[tokio::test]
async fn a_segment_header_cut_short_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    load_then_stop(dir.path(), 3).await;
    // The next segment holds the first 10 bytes of its header: a server stopped while making it.
    let seg = newest_segment(dir.path());
    let next = next_segment(&seg);
    std::fs::write(&next, &std::fs::read(&seg).unwrap()[..10]).unwrap();
    let line = refused_start(dir.path());
    assert!(
        line.contains(&format!(
            "{}: its header is cut short (10 of its 16 bytes are there)",
            next.display()
        )),
        "{line}"
    );
    // Repair removes a segment that holds nothing but part of a header.
    let report = repair(dir.path());
    assert!(
        report.contains("and no record follows it: removed"),
        "{report}"
    );
    assert_eq!(items_served(dir.path(), "q").await, items(0..3));
}

#[tokio::test]
async fn a_file_of_another_program_in_the_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    load_then_stop(dir.path(), 3).await;
    let other = next_segment(&newest_segment(dir.path()));
    std::fs::write(&other, b"PK\x03\x04 a zip archive, not a journal").unwrap();
    let line = refused(dir.path());
    assert!(
        line.contains(&format!(
            "{}: not a file of queue-server (it starts with 504b03042061207a): move it out of the data directory",
            other.display()
        )),
        "{line}"
    );
}
