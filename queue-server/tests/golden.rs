//! Data written by every release is read back whole: each golden set under `tests/golden/`
//! (written by `examples/golden.rs`, one directory per stored format) loads to exactly the state
//! its clients saw when it was written (`expected.json`): every item, lease, counter and key;
//! and a server started on it serves every item.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memq::{DequeueOptions, Dequeued, EnqueueOptions};
use queue_server::Config;
use queue_server::broker::Queue;
use queue_server::store::journal;
use queue_server::testing::golden::{
    Counters, DeadState, DelayedState, Golden, ItemState, KeyState, LeaseState, QueueState,
};
use queue_server::testing::{RedisServer, TestServer};

fn golden(set: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(set)
}

/// A copy of a golden directory to work on: nothing a test does may touch the committed files.
fn copy_of(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().expect("a temporary directory");
    for entry in std::fs::read_dir(from).expect("the golden directory") {
        let entry = entry.expect("an entry");
        std::fs::copy(entry.path(), to.path().join(entry.file_name())).expect("copy");
    }
    to
}

fn item(id: impl ToString, body: &str, attempts: u32) -> ItemState {
    ItemState {
        id: id.to_string(),
        body: body.to_string(),
        attempts,
    }
}

/// A recovered queue in the terms of the golden state.
fn state_of(name: &str, q: &Queue) -> QueueState {
    let image = q.image();
    let [enqueued, dequeued, drained, acked, requeued, died, purged] = image.counters;
    let to = |i: &queue_server::broker::ItemImage<'_>| item(i.id, &i.body, i.attempts);
    let mut delayed: Vec<DelayedState> = image
        .delayed
        .iter()
        .map(|(at, _, i)| DelayedState {
            item: to(i),
            ready_at_ms: *at,
        })
        .collect();
    delayed.sort_by(|a, b| (a.ready_at_ms, &a.item.id).cmp(&(b.ready_at_ms, &b.item.id)));
    let mut leases: Vec<LeaseState> = image
        .leases
        .iter()
        .map(|(lease, deadline, i)| LeaseState {
            lease: lease.to_string(),
            item: to(i),
            expires_at_ms: *deadline,
            consumer: None,
        })
        .collect();
    leases.sort_by(|a, b| a.lease.cmp(&b.lease));
    let mut keys: Vec<KeyState> = image
        .keys
        .iter()
        .map(|(key, id, left)| KeyState {
            key: key.to_string(),
            item: id.to_string(),
            retained: left.is_some(),
        })
        .collect();
    keys.sort();
    let config = image.config;
    QueueState {
        name: name.to_string(),
        lease_ms: config.lease_ms,
        max_attempts: config.max_attempts,
        max_depth: config.max_depth,
        autoscale: config
            .autoscale
            .map(|a| (a.max_parallelism, a.items_per_pod)),
        paused: image.paused,
        counters: Counters {
            enqueued,
            dequeued,
            drained,
            acked,
            requeued,
            died,
            purged,
        },
        ready: image.ready.iter().map(to).collect(),
        delayed,
        leases,
        dead: image
            .dead
            .iter()
            .map(|(i, at)| DeadState {
                item: to(i),
                died_at_ms: *at,
            })
            .collect(),
        keys,
    }
}

/// Every file of `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("the golden directory")
        .map(|e| e.expect("an entry"))
        .map(|e| {
            let name = e.file_name().into_string().expect("a UTF-8 name");
            (name, std::fs::read(e.path()).expect("a file"))
        })
        .collect()
}

/// Reads the golden data directory `set` as a start does (which changes nothing in it): the
/// state it holds (leases as they were, before a start returns them) and the torn tail
/// reported.
fn recover(set: &str) -> (Golden, Golden, Vec<String>) {
    let dir = golden(set);
    let expected = Golden::load(&dir.join("expected.json"));
    let before = contents(&dir);
    let recovery = journal::load(&dir).expect("the golden set reads");
    assert!(contents(&dir) == before, "reading changed nothing");
    let got = Golden {
        written_by: expected.written_by.clone(),
        queues: recovery
            .queues
            .iter()
            .map(|(name, q)| state_of(name, q))
            .collect(),
    };
    (got, expected.without_consumers(), recovery.dropped)
}

/// Every item of `expected` is served by the server behind `c`: the items of every queue
/// (ready in their order, leased ones once back, delayed ones when due), its config, dead
/// letters and held keys. Leases come back at a start of a durable server, and on Redis (which
/// keeps them) when they run out.
async fn serves_everything(c: &memq::Client, expected: &Golden, leases_kept: bool) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after the epoch")
        .as_millis() as u64;
    for q in &expected.queues {
        let name = q.name.as_str();
        let stats = c.queue(name).await.expect("the queue is there");
        assert_eq!(
            (
                stats.lease_seconds * 1000,
                stats.max_attempts,
                stats.max_depth,
                stats.paused
            ),
            (q.lease_ms, q.max_attempts, q.max_depth, q.paused),
            "{name}: config"
        );
        assert_eq!(
            stats
                .autoscale
                .map(|a| (a.max_parallelism, a.items_per_pod)),
            q.autoscale,
            "{name}: autoscale"
        );
        let dead: Vec<ItemState> = c
            .dead_letters(name, Some(1000))
            .await
            .expect("dead letters")
            .into_iter()
            .map(|d| item(d.id, &d.body, d.attempts))
            .collect();
        let want: Vec<ItemState> = q.dead.iter().map(|d| d.item.clone()).collect();
        assert_eq!(dead, want, "{name}: dead letters");
        // A key whose item is still in the queue is taken: a second enqueue is a duplicate.
        for key in q.keys.iter().filter(|k| !k.retained) {
            let opts = EnqueueOptions {
                id: Some(key.key.clone()),
                ..Default::default()
            };
            let again = c.enqueue(name, "again", &opts).await.expect("enqueue");
            assert!(again.duplicate, "{name}: key {} is taken", key.key);
            assert_eq!(again.id, key.item, "{name}: key {}", key.key);
        }
        if q.paused {
            c.queue_action(name, "resume").await.expect("resume");
        }
        let (due, waiting): (Vec<_>, Vec<_>) = q.delayed.iter().partition(|d| d.ready_at_ms <= now);
        let (back, held): (Vec<_>, Vec<_>) = q
            .leases
            .iter()
            .partition(|l| !leases_kept || l.expires_at_ms <= now);
        let mut got = Vec::new();
        let all = DequeueOptions {
            max: Some(1000),
            ..Default::default()
        };
        while let Dequeued::Messages(batch) = c.dequeue(name, &all).await.expect("dequeue") {
            got.extend(batch.into_iter().map(|m| (m.id, m.body)));
        }
        let mut want: Vec<(String, String)> = q
            .ready
            .iter()
            .chain(back.iter().map(|l| &l.item))
            .chain(due.iter().map(|d| &d.item))
            .map(|i| (i.id.clone(), i.body.clone()))
            .collect();
        // The ready items come in their order, among the others.
        let order: Vec<&String> = got
            .iter()
            .map(|(id, _)| id)
            .filter(|id| q.ready.iter().any(|i| &&i.id == id))
            .collect();
        let ready: Vec<&String> = q.ready.iter().map(|i| &i.id).collect();
        assert_eq!(order, ready, "{name}: ready items in order");
        got.sort();
        want.sort();
        assert_eq!(got, want, "{name}: every item served once");
        let stats = c.queue(name).await.expect("the queue");
        assert_eq!(stats.delayed, waiting.len() as u64, "{name}: still delayed");
        assert_eq!(stats.inflight, held.len() as u64, "{name}: still leased");
    }
}

async fn a_server_on_a_copy_serves_everything(set: &str) {
    let dir = golden(set);
    let expected = Golden::load(&dir.join("expected.json"));
    let copy = copy_of(&dir);
    let server = TestServer::start_as_given(Config {
        data_dir: Some(copy.path().to_path_buf()),
        ..Config::default()
    })
    .await;
    serves_everything(&server.client(), &expected, false).await;
    server.shutdown().await;
}

/// A golden data directory reads back to its state, the torn one reporting its cut, and a
/// server started on a copy serves all of it.
async fn datadir_reads_back(set: &str) {
    let (got, expected, dropped) = recover(set);
    if set.ends_with("torn") {
        assert_eq!(dropped.len(), 1, "one cut reported: {dropped:?}");
    } else {
        assert_eq!(dropped, Vec::<String>::new());
    }
    assert_eq!(got, expected);
    if set.ends_with("snapshot") {
        assert_eq!(
            expected.queue("work").leases.len(),
            2,
            "the snapshot holds leases"
        );
    }
    a_server_on_a_copy_serves_everything(set).await;
}

#[tokio::test]
async fn datadir_v1_journal_reads_back_every_item_lease_counter_and_key() {
    datadir_reads_back("datadir-v1/journal").await;
}

#[tokio::test]
async fn datadir_v1_snapshot_and_journal_read_back_every_item_lease_counter_and_key() {
    datadir_reads_back("datadir-v1/snapshot").await;
}

#[tokio::test]
async fn datadir_v1_torn_last_record_is_cut_and_the_rest_read_back() {
    datadir_reads_back("datadir-v1/torn").await;
}

#[tokio::test]
async fn datadir_v2_journal_reads_back_every_item_lease_counter_and_key() {
    datadir_reads_back("datadir-v2/journal").await;
}

#[tokio::test]
async fn datadir_v2_snapshot_and_journal_read_back_every_item_lease_counter_and_key() {
    datadir_reads_back("datadir-v2/snapshot").await;
}

#[tokio::test]
async fn datadir_v2_torn_last_record_is_cut_and_the_rest_read_back() {
    datadir_reads_back("datadir-v2/torn").await;
}

/// The data format of each segment and snapshot in `dir`, and whether format 1's dedup
/// window file is there.
fn formats_in(dir: &Path) -> (Vec<(String, u32)>, bool) {
    let mut found = Vec::new();
    for (name, data) in contents(dir) {
        let magic = if name.ends_with(".log") {
            journal::format::SEGMENT_MAGIC
        } else if name.ends_with(".snap") {
            journal::format::SNAPSHOT_MAGIC
        } else {
            continue;
        };
        let version = match journal::format::parse(magic, &data) {
            Ok(h) => h.version,
            Err(_) if magic == journal::format::SNAPSHOT_MAGIC => {
                journal::format::magic_and_version(magic, &data).expect("a snapshot")
            }
            // A format-1 segment has no header.
            Err(_) => 1,
        };
        found.push((name, version));
    }
    (found, dir.join("dedup-window-ms").exists())
}

#[tokio::test]
async fn a_format_1_data_dir_is_rewritten_in_format_2_by_its_first_start() {
    let set = golden("datadir-v1/snapshot");
    let expected = Golden::load(&set.join("expected.json"));
    let copy = copy_of(&set);
    let (before, window_file) = formats_in(copy.path());
    assert!(before.iter().all(|(_, v)| *v == 1), "{before:?}");
    assert!(window_file);
    let config = Config {
        data_dir: Some(copy.path().to_path_buf()),
        ..Config::default()
    };
    let server = TestServer::start_as_given(config.clone()).await;
    server.shutdown().await;
    let (after, window_file) = formats_in(copy.path());
    assert!(
        !after.is_empty() && after.iter().all(|(_, v)| *v == 2),
        "{after:?}"
    );
    assert!(
        !window_file,
        "format 2 keeps the dedup window in its headers"
    );
    let server = TestServer::start_as_given(config).await;
    serves_everything(&server.client(), &expected, false).await;
    server.shutdown().await;
}

type Conn = redis::aio::MultiplexedConnection;

async fn read<T: redis::FromRedisValue>(conn: &mut Conn, cmd: &str, key: &str, args: &[&str]) -> T {
    redis::cmd(cmd)
        .arg(key)
        .arg(args)
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("{cmd} {key}: {e}"))
}

/// The state a Redis holds under the key prefix `memq`, read key by key (no replica involved).
async fn redis_state(conn: &mut Conn, written_by: &str) -> Golden {
    let mut names: Vec<String> = read(conn, "SMEMBERS", "memq:queues", &[]).await;
    names.sort();
    let mut queues = Vec::new();
    for name in names {
        let key = |k: &str| format!("memq:{{{name}}}:{k}");
        let mut hashes: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
        for k in [
            "meta", "items", "attempts", "leases", "holders", "died", "keys", "keyof",
        ] {
            hashes.insert(k, read(conn, "HGETALL", &key(k), &[]).await);
        }
        let [meta, bodies, attempts, leases, holders, died, keys, keyof] = [
            "meta", "items", "attempts", "leases", "holders", "died", "keys", "keyof",
        ]
        .map(|k| &hashes[k]);
        let num = |m: &BTreeMap<String, String>, f: &str| -> u64 {
            m.get(f).map_or(0, |v| v.parse().expect("a number"))
        };
        let it = |id: &str| {
            item(
                id,
                &bodies[id],
                num(attempts, id).try_into().expect("attempts"),
            )
        };
        let ready: Vec<String> = read(conn, "LRANGE", &key("ready"), &["0", "-1"]).await;
        let dead: Vec<String> = read(conn, "LRANGE", &key("dead"), &["0", "-1"]).await;
        let scores = ["0", "-1", "WITHSCORES"];
        let delayed: Vec<(String, u64)> = read(conn, "ZRANGE", &key("delayed"), &scores).await;
        let deadlines: BTreeMap<String, u64> =
            read(conn, "ZRANGE", &key("deadlines"), &scores).await;
        let released: BTreeMap<String, u64> = read(conn, "ZRANGE", &key("released"), &scores).await;
        let mut delayed: Vec<DelayedState> = delayed
            .iter()
            .map(|(id, at)| DelayedState {
                item: it(id),
                ready_at_ms: *at,
            })
            .collect();
        delayed.sort_by(|a, b| (a.ready_at_ms, &a.item.id).cmp(&(b.ready_at_ms, &b.item.id)));
        let mut keys: Vec<KeyState> = keys
            .iter()
            .map(|(k, id)| KeyState {
                key: k.clone(),
                item: id.clone(),
                retained: released.contains_key(k) && !keyof.contains_key(id),
            })
            .collect();
        keys.sort();
        let autoscale = meta.get("autoscale").map(|a| {
            let (max, per) = a.split_once(':').expect("max:per");
            (
                max.parse().expect("a number"),
                per.parse().expect("a number"),
            )
        });
        queues.push(QueueState {
            lease_ms: num(meta, "lease_ms"),
            max_attempts: num(meta, "max_attempts").try_into().expect("attempts"),
            max_depth: num(meta, "max_depth"),
            autoscale,
            paused: meta.get("paused").is_some_and(|p| p == "1"),
            counters: Counters {
                enqueued: num(meta, "enqueued"),
                dequeued: num(meta, "dequeued"),
                drained: num(meta, "drained"),
                acked: num(meta, "acked"),
                requeued: num(meta, "requeued"),
                died: num(meta, "died"),
                purged: num(meta, "purged"),
            },
            ready: ready.iter().map(|id| it(id)).collect(),
            delayed,
            leases: leases
                .iter()
                .map(|(lease, id)| LeaseState {
                    lease: lease.clone(),
                    item: it(id),
                    expires_at_ms: deadlines[lease],
                    consumer: holders.get(lease).cloned(),
                })
                .collect(),
            dead: dead
                .iter()
                .map(|id| DeadState {
                    item: it(id),
                    died_at_ms: num(died, id),
                })
                .collect(),
            keys,
            name,
        });
    }
    Golden {
        written_by: written_by.to_string(),
        queues,
    }
}

/// A redis-server started on a copy of the golden set `set`'s `dump.rdb`.
async fn redis_on(set: &str) -> (RedisServer, tempfile::TempDir, Golden) {
    let dir = golden(set);
    let expected = Golden::load(&dir.join("expected.json"));
    let copy = copy_of(&dir);
    let redis = RedisServer::start(&[
        "--dir",
        copy.path().to_str().expect("a UTF-8 path"),
        "--dbfilename",
        "dump.rdb",
    ])
    .await;
    (redis, copy, expected)
}

#[tokio::test]
async fn redis_v1_rdb_holds_every_item_lease_counter_and_key_and_a_replica_serves_it() {
    let (redis, _copy, expected) = redis_on("redis-v1").await;
    let mut conn = redis.connection().await;
    let got = redis_state(&mut conn, &expected.written_by).await;
    assert_eq!(got, expected);
    let layout: Option<String> = read(&mut conn, "GET", "memq:layout", &[]).await;
    assert_eq!(layout, None, "0.1.0 records no layout: it wrote layout 1");
    let server = TestServer::start_as_given(Config {
        redis: Some(redis.url()),
        redis_prefix: "memq".into(),
        ..Config::default()
    })
    .await;
    serves_everything(&server.client(), &expected, true).await;
    server.shutdown().await;
    // The replica raised the deployment's layout, and each queue's as it served it.
    let layout: Option<String> = read(&mut conn, "GET", "memq:layout", &[]).await;
    assert_eq!(layout.as_deref(), Some("2"));
    for q in &expected.queues {
        let key = format!("memq:{{{}}}:meta", q.name);
        let layout: Option<String> = read(&mut conn, "HGET", &key, &["layout"]).await;
        assert_eq!(layout.as_deref(), Some("2"), "{}", q.name);
    }
}
