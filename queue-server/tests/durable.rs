//! `--data-dir`: restarts and crashes lose no acknowledged change (damage: tests/damage.rs).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use memq::{DequeueOptions, Dequeued, EnqueueOptions, QueueConfigPatch};
use parking_lot::Mutex;
use queue_server::Config;
use queue_server::store::journal;
use queue_server::testing::{ServerProcess, TestServer, eventually};

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

#[tokio::test]
async fn restart_keeps_items_order_delays_dead_letters_config_and_counters() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(durable(dir.path())).await;
    let c = server.client();
    let cfg = QueueConfigPatch {
        lease_seconds: Some(9),
        max_attempts: Some(1),
        max_depth: Some(1000),
        ..Default::default()
    };
    c.create_queue("q", Some(&cfg)).await.unwrap();
    c.create_queue("gone", None).await.unwrap();
    c.enqueue_lines("q", "poison\na\nb\nc\n", None)
        .await
        .unwrap();
    c.enqueue(
        "q",
        "late",
        &EnqueueOptions {
            delay: Some(Duration::from_secs(600)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let keyed = EnqueueOptions {
        id: Some("k".into()),
        ..Default::default()
    };
    let first = c.enqueue("q", "keyed", &keyed).await.unwrap();
    let lease = DequeueOptions {
        lease: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let Dequeued::Messages(m) = c.dequeue("q", &lease).await.unwrap() else {
        panic!()
    };
    c.nack("q", &m[0].lease.as_ref().unwrap().id, None)
        .await
        .unwrap(); // poison dies (maxAttempts 1)
    let Dequeued::Messages(held) = c.dequeue("q", &lease).await.unwrap() else {
        panic!()
    };
    assert_eq!(held[0].body, "a");
    c.delete_queue("gone").await.unwrap();
    c.queue_action("q", "pause").await.unwrap();
    let before = c.queue("q").await.unwrap();
    server.shutdown().await;

    let server = TestServer::start(durable(dir.path())).await;
    let c = server.client();
    let stats = c.stats().await.unwrap();
    assert_eq!(stats.queues.len(), 1, "the deleted queue stays deleted");
    let after = c.queue("q").await.unwrap();
    // The lease was void after the restart: "a" is ready again, at the front, counted as requeued
    // (a restart does not use up an attempt, although maxAttempts is 1).
    assert_eq!(
        (after.depth, after.inflight, after.delayed, after.dead),
        (before.depth + 1, 0, 1, 1)
    );
    assert_eq!(after.requeued, before.requeued + 1);
    assert_eq!(
        (
            after.enqueued,
            after.dequeued,
            after.lease_seconds,
            after.max_depth
        ),
        (before.enqueued, before.dequeued, 9, 1000)
    );
    assert!(after.paused);
    assert!(c.enqueue("q", "dup", &keyed).await.unwrap().duplicate);
    assert_eq!(c.enqueue("q", "dup", &keyed).await.unwrap().id, first.id);
    assert_eq!(c.dead_letters("q", None).await.unwrap()[0].body, "poison");
    let stale = c
        .ack("q", &held[0].lease.as_ref().unwrap().id)
        .await
        .unwrap_err();
    assert_eq!(stale.status(), Some(404));
    c.queue_action("q", "resume").await.unwrap();
    assert_eq!(drain_all(&c, "q").await, ["a", "b", "c", "keyed"]);
    server.shutdown().await;
}

/// The batch lease routes are journaled like the single ones: after a restart the items are
/// where the nacks and releases put them, with the attempts they counted.
#[tokio::test]
async fn batch_nacks_extends_and_releases_replay_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(durable(dir.path())).await;
    let c = server.client();
    c.create_queue("q", None).await.unwrap();
    c.enqueue_lines("q", "a\nb\nc\nd\ne\n", None).await.unwrap();
    let lease = DequeueOptions {
        lease: Some(Duration::from_secs(60)),
        max: Some(4),
        ..Default::default()
    };
    let Dequeued::Messages(held) = c.dequeue("q", &lease).await.unwrap() else {
        panic!()
    };
    let ids: Vec<String> = held.iter().map(|m| m.lease.clone().unwrap().id).collect();
    assert_eq!(c.release("q", &ids[2..]).await.unwrap().released, 2);
    assert_eq!(c.nack_batch("q", &ids[1..2], None).await.unwrap().nacked, 1);
    assert_eq!(
        c.extend_batch("q", &ids[..1], None).await.unwrap().extended,
        1
    );
    let before = c.queue("q").await.unwrap();
    server.shutdown().await;

    let server = TestServer::start(durable(dir.path())).await;
    let c = server.client();
    let after = c.queue("q").await.unwrap();
    // The one lease still held was void after the restart: "a" is back at the front.
    assert_eq!((after.depth, after.inflight), (5, 0));
    assert_eq!(after.requeued, before.requeued + 1);
    let lease = DequeueOptions {
        max: Some(10),
        ..lease
    };
    let Dequeued::Messages(again) = c.dequeue("q", &lease).await.unwrap() else {
        panic!()
    };
    let seen: Vec<(&str, u32)> = again
        .iter()
        .map(|m| (m.body.as_str(), m.lease.as_ref().unwrap().attempt))
        .collect();
    // b's nack counted an attempt; c and d were released, so theirs did not.
    assert_eq!(seen, [("a", 2), ("b", 2), ("c", 1), ("d", 1), ("e", 1)]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_second_server_refuses_a_data_dir_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let first = TestServer::start(durable(dir.path())).await;
    // Ready: it holds the data directory.
    assert!(first.wait_ready(Duration::from_secs(10)).await);
    let out = tokio::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another queue-server"),
        "{stderr}"
    );
}

#[tokio::test]
async fn compaction_replaces_old_segments_and_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        compact_bytes: 64 * 1024,
        ..durable(dir.path())
    };
    let server = TestServer::start(config.clone()).await;
    let c = server.client();
    c.create_queue("q", None).await.unwrap();
    for round in 0..40 {
        let body: String = (0..100)
            .map(|i| format!("r{round:02}-{i:03}-{}\n", "x".repeat(40)))
            .collect();
        c.enqueue_lines("q", body, None).await.unwrap();
    }
    let opts = DequeueOptions {
        max: Some(1000),
        ..Default::default()
    };
    let Dequeued::Messages(first) = c.dequeue("q", &opts).await.unwrap() else {
        panic!()
    };
    assert_eq!(first.len(), 1000);
    // The compactor checks once a second.
    eventually(Duration::from_secs(15), "a compaction", || async {
        let snaps: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n.starts_with("snapshot-"))
            .collect();
        let segments = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("journal-")
            })
            .count();
        if snaps.len() == 1 && snaps[0] != "snapshot-00000000000000000002.snap" && segments <= 2 {
            Ok(())
        } else {
            Err(format!("{snaps:?}, {segments} segments"))
        }
    })
    .await;
    server.shutdown().await;
    let server = TestServer::start(config).await;
    let rest = drain_all(&server.client(), "q").await;
    assert_eq!(rest.len(), 3000);
    assert!(rest[0].starts_with("r10-000-"), "{}", rest[0]);
    assert!(rest[2999].starts_with("r39-099-"));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn producers_lose_no_acknowledged_item_across_twenty_kill_9s() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let mut server = ServerProcess::start(BIN, &["--data-dir", &dir_arg]).await;
    let base = server.base_url();
    let client = memq::Client::new(&base).unwrap();
    client.create_queue("q", None).await.unwrap();

    let acked: Arc<Mutex<HashMap<usize, Vec<usize>>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..4 {
        let acked = acked.clone();
        let stop = stop.clone();
        let base = base.clone();
        producers.push(tokio::spawn(async move {
            let c = memq::Client::new(base).unwrap();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // No retry: an item whose answer was lost is "unknown", allowed once or not at all.
                if c.enqueue("q", format!("{p}-{n:06}"), &EnqueueOptions::default())
                    .await
                    .is_ok()
                {
                    acked.lock().entry(p).or_default().push(n);
                } else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                n += 1;
            }
            n
        }));
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for _ in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(50 + seed % 250)).await;
        server.restart().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = HashMap::new();
    for (p, h) in producers.into_iter().enumerate() {
        sent.insert(p, h.await.unwrap());
    }
    server.restart().await;
    let items = drain_all(&client, "q").await;
    let mut seen: HashMap<usize, Vec<usize>> = HashMap::new();
    for body in &items {
        let (p, n) = body.split_once('-').unwrap();
        seen.entry(p.parse().unwrap())
            .or_default()
            .push(n.parse().unwrap());
    }
    let acked = acked.lock();
    for p in 0..4 {
        let got = seen.remove(&p).unwrap_or_default();
        let mut sorted = got.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, got, "producer {p}: in order and each at most once");
        let got: HashSet<_> = got.into_iter().collect();
        let missing: Vec<_> = acked[&p].iter().filter(|n| !got.contains(n)).collect();
        assert!(
            missing.is_empty(),
            "producer {p}: acknowledged items lost: {missing:?}"
        );
        assert!(
            acked[&p].len() > 10,
            "producer {p} made progress ({} of {})",
            acked[&p].len(),
            sent[&p]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acked_items_never_come_back_across_kill_9s() {
    const N: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let mut server = ServerProcess::start(BIN, &["--data-dir", &dir_arg]).await;
    let base = server.base_url();
    let client = memq::Client::new(&base).unwrap();
    let cfg = QueueConfigPatch {
        max_attempts: Some(0),
        ..Default::default()
    };
    client.create_queue("q", Some(&cfg)).await.unwrap();
    let body: String = (0..N).map(|i| format!("{i:05}\n")).collect();
    client.enqueue_lines("q", body, None).await.unwrap();

    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    // Acks whose answer was lost to a kill: they may or may not have taken effect.
    let unknown: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut consumers = Vec::new();
    for _ in 0..4 {
        let (acked, unknown, stop, base) =
            (acked.clone(), unknown.clone(), stop.clone(), base.clone());
        consumers.push(tokio::spawn(async move {
            let c = memq::Client::new(base).unwrap();
            let opts = DequeueOptions {
                lease: Some(Duration::from_secs(30)),
                max: Some(5),
                ..Default::default()
            };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(Dequeued::Messages(msgs)) = c.dequeue("q", &opts).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                for m in msgs {
                    match c.ack("q", &m.lease.unwrap().id).await {
                        Ok(()) => assert!(
                            acked.lock().insert(m.body.clone()),
                            "{} acked twice",
                            m.body
                        ),
                        Err(e) if e.status().is_none() => {
                            unknown.lock().insert(m.body);
                        }
                        Err(_) => {} // 404/410: the lease died with a restart; the item is queued again
                    }
                }
            }
        }));
    }
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(100 + 37 * i)).await;
        server.restart().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in consumers {
        c.await.unwrap();
    }
    server.restart().await;
    let rest = drain_all(&client, "q").await;
    let acked = acked.lock();
    for body in &rest {
        assert!(!acked.contains(body), "{body} was acked but came back");
    }
    let unknown = unknown.lock();
    let all: HashSet<&String> = rest
        .iter()
        .chain(acked.iter())
        .chain(unknown.iter())
        .collect();
    assert_eq!(
        all.len(),
        N,
        "every item is acked, still queued, or had its ack answer cut by a kill"
    );
    assert!(
        unknown.len() <= 10 * 4 * 5,
        "at most the acks in flight at each kill: {}",
        unknown.len()
    );
    assert!(
        acked.len() > 100,
        "consumers made progress: {}",
        acked.len()
    );
}

/// A small tmpfs, unmounted on drop. Needs root (CAP_SYS_ADMIN).
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_503_stores_nothing_it_denies_and_recovers() {
    // A test that cannot have what it needs fails; it never passes by skipping.
    let disk = SmallDisk::mount("2m")
        .expect("cannot mount a 2 MiB tmpfs: this test needs root (CAP_SYS_ADMIN); run it as root");
    let data = disk.0.path().join("data");
    let filler = disk.0.path().join("filler");
    std::fs::write(&filler, vec![0u8; 1200 * 1024]).unwrap();
    let server = TestServer::start(durable(&data)).await;
    let c = server.client();
    c.create_queue("q", None).await.unwrap();
    let http = reqwest::Client::new();
    let ready = || async {
        http.get(format!("{}/readyz", server.url()))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 200);

    let mut stored = Vec::new();
    let mut refused = None;
    for i in 0..100 {
        let body = format!("{i:03}-{}", "x".repeat(64 * 1024));
        match c.enqueue("q", body, &EnqueueOptions::default()).await {
            Ok(_) => stored.push(i),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("the disk filled up");
    assert_eq!(
        (err.status(), err.code()),
        (Some(503), Some("backend_unavailable")),
        "{err}"
    );
    assert!(!stored.is_empty());
    assert_eq!(ready().await, 503);
    // Further changes are refused at once, without touching the queue.
    let again = c
        .enqueue("q", "small", &EnqueueOptions::default())
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(503));
    assert!(again.to_string().contains("free space"), "{again}");

    std::fs::remove_file(&filler).unwrap();
    eventually(
        Duration::from_secs(10),
        "ready again once space came back",
        || async {
            match ready().await {
                200 => Ok(()),
                status => Err(format!("/readyz {status}")),
            }
        },
    )
    .await;
    c.enqueue("q", "after", &EnqueueOptions::default())
        .await
        .unwrap();
    server.shutdown().await;

    let server = TestServer::start(durable(&data)).await;
    let items = drain_all(&server.client(), "q").await;
    for i in &stored {
        assert!(
            items.iter().any(|b| b.starts_with(&format!("{i:03}-"))),
            "item {i} got 200 but is gone"
        );
    }
    assert_eq!(items.last().unwrap(), "after");
    // The refused item may or may not be there (its write completed once space came back),
    // but nothing beyond it: at most one more than what was acknowledged, plus "after".
    assert!(items.len() <= stored.len() + 2, "{} items", items.len());
    server.shutdown().await;
}

/// `memq_item_memory_bytes` of a running server.
async fn item_memory(url: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("memq_item_memory_bytes "))
        .expect("memq_item_memory_bytes")
        .parse()
        .unwrap()
}

#[tokio::test]
async fn recovered_items_count_for_max_memory_as_before_the_crash() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let args = ["--data-dir", dir_arg.as_str(), "--max-memory", "4KiB"];
    let mut server = ServerProcess::start(BIN, &args).await;
    let c = memq::Client::new(server.base_url()).unwrap();
    c.create_queue("q", None).await.unwrap();
    c.enqueue_lines("q", "one\ntwo\nthree\n", None)
        .await
        .unwrap();
    let leased = DequeueOptions {
        lease: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    c.dequeue("q", &leased).await.unwrap();
    let before = item_memory(&server.url()).await;
    assert_eq!(before, 3 * 64 + 3 + 3 + 5);
    // A crash, then recovery from the journal (and a snapshot of it): the same count.
    server.restart().await;
    assert_eq!(item_memory(&server.url()).await, before);
    // Filling up to the limit still refuses past it after recovery.
    let err = c
        .enqueue_lines("q", "x".repeat(4096), None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(507));
}

/// The journal decides duplicates again on replay, so it must replay with the dedup window it
/// was written with, whatever the flag says at the restart: a window changed across a crash
/// loses no confirmed item and changes no id.
#[tokio::test]
async fn a_dedup_window_changed_across_a_crash_replays_with_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut server = ServerProcess::start(BIN, &["--data-dir", data, "--dedup-window", "0"]).await;
    let client = memq::Client::new(server.base_url()).unwrap();
    client.create_queue("q", None).await.unwrap();
    let keyed = EnqueueOptions {
        id: Some("k".into()),
        ..Default::default()
    };
    client.enqueue("q", "a", &keyed).await.unwrap();
    let lease = DequeueOptions {
        lease: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let Dequeued::Messages(got) = client.dequeue("q", &lease).await.unwrap() else {
        panic!("an item")
    };
    client
        .ack("q", &got[0].lease.as_ref().unwrap().id)
        .await
        .unwrap();
    // Window 0: the key was freed when `a` left, so `b` is a new item.
    let b = client.enqueue("q", "b", &keyed).await.unwrap();
    assert!(!b.duplicate);
    let c = client
        .enqueue("q", "c", &EnqueueOptions::default())
        .await
        .unwrap();
    server.kill();

    let server = ServerProcess::start(BIN, &["--data-dir", data, "--dedup-window", "10m"]).await;
    let client = memq::Client::new(server.base_url()).unwrap();
    let peek: Vec<(String, String)> = client
        .peek("q", Some(10))
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.id, m.body))
        .collect();
    assert_eq!(peek, [(b.id, "b".to_string()), (c.id, "c".to_string())]);
    // From now on the new window holds: `b`'s key stays taken after it leaves.
    drain_all(&client, "q").await;
    assert!(
        client
            .enqueue("q", "again", &keyed)
            .await
            .unwrap()
            .duplicate
    );
    // The segment written from now on names the new window.
    let mut segments: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    let newest = std::fs::read(segments.last().unwrap()).unwrap();
    let header = journal::format::parse(journal::format::SEGMENT_MAGIC, &newest).unwrap();
    assert_eq!(header.options.dedup_window_ms, 600_000);
}
