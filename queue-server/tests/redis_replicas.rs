//! Several queue-server replicas on one Redis (`--redis`): they share queues, leases, counters
//! and long polls; a replica can die and Redis can restart without losing acknowledged work.
//!
//! Needs `MEMQ_TEST_REDIS=redis://127.0.0.1:PORT` (scripts/test-redis.sh starts a Redis and sets
//! it); without it every test here fails and says so. The Redis-restart and maxmemory tests
//! start a redis-server of their own ([`RedisServer`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use memq::{DequeueOptions, Dequeued, EnqueueOptions, QueueStats};
use parking_lot::Mutex;
use queue_server::Config;
use queue_server::testing::{
    RedisServer, ServerProcess, TestServer, eventually, metric, polls_waiting, test_redis,
    test_redis_cluster, unique_prefix,
};

const BIN: &str = env!("CARGO_BIN_EXE_queue-server");

/// The Redis of `MEMQ_TEST_REDIS`; a test without one fails, it never passes by skipping.
fn test_redis_url() -> String {
    test_redis().expect(
        "MEMQ_TEST_REDIS is not set: these tests need a Redis; run scripts/test-redis.sh, which \
         starts one and sets it (scripts/test.sh runs it)",
    )
}

/// Whether `url` is the Redis Cluster of `MEMQ_TEST_REDIS` (rather than a test's own Redis).
fn is_cluster(url: &str) -> bool {
    test_redis_cluster() && test_redis().as_deref() == Some(url)
}

/// `n` in-process replicas on one Redis, sharing one key prefix.
async fn replicas(url: &str, n: usize) -> Vec<TestServer> {
    let prefix = unique_prefix();
    let mut out = Vec::new();
    for _ in 0..n {
        let config = Config {
            redis: Some(url.to_string()),
            redis_prefix: prefix.clone(),
            redis_cluster: is_cluster(url),
            ..Config::default()
        };
        out.push(TestServer::start(config).await);
    }
    out
}

/// The figures that must agree between replicas (not the age, which moves with time).
fn figures(q: &QueueStats) -> [u64; 9] {
    [
        q.depth, q.enqueued, q.dequeued, q.drained, q.inflight, q.acked, q.requeued, q.dead,
        q.delayed,
    ]
}

fn leased(max: u32, lease: Duration, wait: Duration) -> DequeueOptions {
    DequeueOptions {
        lease: Some(lease),
        wait: (!wait.is_zero()).then_some(wait),
        max: Some(max),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_consumers_on_three_replicas_take_20000_items_exactly_once() {
    let url = test_redis_url();
    const ITEMS: usize = 20_000;
    let servers = replicas(&url, 3).await;
    let clients: Vec<memq::Client> = servers.iter().map(|s| s.client()).collect();
    clients[0].create_queue("work", None).await.unwrap();

    // Consumers first, so that they long-poll on empty replicas and must be woken by
    // enqueues made through the others.
    let acked = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let mut consumers = Vec::new();
    for c in 0..5 {
        let take = clients[c % 3].clone();
        // Every lease is acked through another replica than the one that handed it out.
        let ack = clients[(c + 1) % 3].clone();
        let acked = acked.clone();
        consumers.push(tokio::spawn(async move {
            let opts = leased(10, Duration::from_secs(60), Duration::from_secs(1));
            loop {
                match take.dequeue("work", &opts).await.unwrap() {
                    Dequeued::Messages(msgs) => {
                        for m in msgs {
                            ack.ack("work", &m.lease.unwrap().id).await.unwrap();
                            *acked.lock().entry(m.body).or_default() += 1;
                        }
                    }
                    Dequeued::Empty { .. } if acked.lock().len() == ITEMS => return,
                    Dequeued::Empty { .. } => {}
                }
            }
        }));
    }
    // Every consumer holds a long poll on an empty replica before the first enqueue.
    eventually(
        Duration::from_secs(10),
        "five long polls waiting",
        || async {
            let mut waiting = 0.0;
            for server in &servers {
                waiting += metric(&server.url(), "memq_long_polls_waiting").await;
            }
            if waiting == 5.0 {
                Ok(())
            } else {
                Err(format!("{waiting} waiting"))
            }
        },
    )
    .await;
    let mut producers = Vec::new();
    for p in 0..4 {
        let client = clients[p % 3].clone();
        producers.push(tokio::spawn(async move {
            for batch in 0..10 {
                let lines: String = (0..ITEMS / 40)
                    .map(|i| format!("item-{p}-{batch}-{i}\n"))
                    .collect();
                client.enqueue_lines("work", lines, None).await.unwrap();
            }
        }));
    }
    let all = async {
        for p in producers {
            p.await.unwrap();
        }
        for c in consumers {
            c.await.unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(240), all)
        .await
        .expect("the consumers finished in time");

    let acked = std::mem::take(&mut *acked.lock());
    assert_eq!(acked.len(), ITEMS, "every item acked");
    assert!(
        acked.values().all(|&n| n == 1),
        "an item was handed out and acked twice"
    );
    let stats: Vec<QueueStats> = futures_util::future::join_all(
        clients
            .iter()
            .map(|c| async { c.queue("work").await.unwrap() }),
    )
    .await;
    for s in &stats {
        assert_eq!(figures(s), figures(&stats[0]), "replicas disagree");
    }
    let q = &stats[0];
    assert_eq!(
        (
            q.enqueued, q.dequeued, q.acked, q.depth, q.inflight, q.requeued
        ),
        (ITEMS as u64, ITEMS as u64, ITEMS as u64, 0, 0, 0)
    );
    // The /stats lists agree too.
    for c in &clients {
        let rows = c.stats().await.unwrap().queues;
        assert_eq!(rows.len(), 1);
        assert_eq!(figures(&rows[0]), figures(q));
    }
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn a_lease_taken_on_one_replica_is_acked_nacked_and_extended_through_others() {
    let url = test_redis_url();
    let servers = replicas(&url, 3).await;
    let [a, b, c] = [0, 1, 2].map(|i| servers[i].client());
    a.create_queue("q", None).await.unwrap();
    b.enqueue_lines("q", "one\ntwo\n", None).await.unwrap();
    let opts = leased(1, Duration::from_secs(30), Duration::ZERO);
    let Dequeued::Messages(m) = c.dequeue("q", &opts).await.unwrap() else {
        panic!("expected an item")
    };
    let lease = m[0].lease.clone().unwrap();
    let extended = a
        .extend("q", &lease.id, Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(extended.body, "one");
    b.nack("q", &lease.id, None).await.unwrap();
    // The nacked item is at the front again, on every replica.
    let Dequeued::Messages(m) = a.dequeue("q", &opts).await.unwrap() else {
        panic!("expected an item")
    };
    assert_eq!(
        (m[0].body.as_str(), m[0].lease.as_ref().unwrap().attempt),
        ("one", 2)
    );
    c.ack("q", &m[0].lease.as_ref().unwrap().id).await.unwrap();
    // The old lease id is dead everywhere.
    for client in [&a, &b, &c] {
        let err = client.ack("q", &lease.id).await.unwrap_err();
        assert_eq!(err.status(), Some(404));
    }
    let q = b.queue("q").await.unwrap();
    assert_eq!((q.acked, q.requeued, q.depth, q.inflight), (1, 1, 1, 0));
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn a_long_poll_on_one_replica_wakes_for_work_arriving_through_another() {
    let url = test_redis_url();
    let servers = replicas(&url, 2).await;
    let (a, b) = (servers[0].client(), servers[1].client());
    a.create_queue("q", None).await.unwrap();
    let wait = DequeueOptions {
        wait: Some(Duration::from_secs(20)),
        ..Default::default()
    };

    // An enqueue through B wakes a poll held by A.
    let mut worst = Duration::ZERO;
    for round in 0..5 {
        let poller = a.clone();
        let wait = wait.clone();
        let poll = tokio::spawn(async move { poller.dequeue("q", &wait).await.unwrap() });
        polls_waiting(&servers[0].url(), 1).await;
        assert!(
            !poll.is_finished(),
            "round {round}: answered before any item"
        );
        let sent = Instant::now();
        b.enqueue("q", format!("item-{round}"), &EnqueueOptions::default())
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .unwrap()
            .unwrap();
        worst = worst.max(sent.elapsed());
        assert!(matches!(got, Dequeued::Messages(_)), "{got:?}");
    }
    assert!(
        worst < Duration::from_millis(200),
        "slowest cross-replica wake-up took {worst:?}"
    );

    // A lease taken through B that runs out wakes a poll held by A (B's sweeper announces it).
    b.enqueue("q", "slow", &EnqueueOptions::default())
        .await
        .unwrap();
    let short = leased(1, Duration::from_millis(300), Duration::ZERO);
    assert!(matches!(
        b.dequeue("q", &short).await.unwrap(),
        Dequeued::Messages(_)
    ));
    let started = Instant::now();
    let got = a.dequeue("q", &wait).await.unwrap();
    let Dequeued::Messages(m) = got else {
        panic!("{got:?}")
    };
    assert_eq!(m[0].body, "slow");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    for s in servers {
        s.shutdown().await;
    }
}

/// A replica as a child process, so that it can be killed.
async fn replica_process(url: &str, prefix: &str) -> ServerProcess {
    let mut args = vec!["--redis", url, "--redis-prefix", prefix];
    if is_cluster(url) {
        args.push("--redis-cluster");
    }
    let server = ServerProcess::start(BIN, &args).await;
    wait_ready(&server.url(), true, Duration::from_secs(15)).await;
    server
}

async fn wait_ready(url: &str, ready: bool, limit: Duration) {
    let what = format!("{url} {}", if ready { "ready" } else { "not ready" });
    eventually(limit, &what, || async {
        let ok = reqwest::get(format!("{url}/readyz"))
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok == ready {
            Ok(())
        } else {
            Err(format!("ready: {ok}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_replica_mid_run_loses_nothing() {
    let url = test_redis_url();
    const ITEMS: usize = 6_000;
    let prefix = unique_prefix();
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(replica_process(&url, &prefix).await);
    }
    let urls: Vec<String> = procs.iter().map(|p| p.base_url()).collect();
    let clients: Vec<memq::Client> = urls
        .iter()
        .map(|u| memq::Client::new(u.clone()).unwrap())
        .collect();
    clients[0].create_queue("work", None).await.unwrap();
    let lines: String = (0..ITEMS).map(|i| format!("item-{i}\n")).collect();
    clients[1].enqueue_lines("work", lines, None).await.unwrap();

    // Consumers move on to the next replica when theirs stops answering. Short leases, so that
    // items whose hand-out died with the replica come back soon.
    let acked = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let mut consumers = Vec::new();
    for c in 0..5 {
        let clients = clients.clone();
        let acked = acked.clone();
        consumers.push(tokio::spawn(async move {
            let opts = leased(5, Duration::from_secs(2), Duration::from_millis(500));
            let mut at = c % 3;
            loop {
                let got = match clients[at].dequeue("work", &opts).await {
                    Ok(got) => got,
                    Err(e) if e.status().is_none() => {
                        at = (at + 1) % 3;
                        continue;
                    }
                    Err(e) => panic!("dequeue: {e}"),
                };
                match got {
                    Dequeued::Messages(msgs) => {
                        for m in msgs {
                            let lease = m.lease.unwrap().id;
                            // An ack whose answer was lost may have been applied: a retry
                            // then finds the lease gone (404), which counts as acked.
                            let mut lost_answer = false;
                            let done = loop {
                                match clients[at].ack("work", &lease).await {
                                    Ok(()) => break true,
                                    Err(e) if e.status().is_none() => {
                                        lost_answer = true;
                                        at = (at + 1) % 3;
                                    }
                                    Err(e) if e.status() == Some(404) && lost_answer => break true,
                                    // Expired while we were cut off: it comes back to someone.
                                    Err(e) if e.status() == Some(410) => break false,
                                    Err(e) => panic!("ack: {e}"),
                                }
                            };
                            if done {
                                *acked.lock().entry(m.body).or_default() += 1;
                            }
                        }
                    }
                    d if d.is_finished() => return,
                    Dequeued::Empty { .. } => {}
                }
            }
        }));
    }
    // Kill replica 2 (SIGKILL: no goodbye) once part of the work is done.
    eventually(
        Duration::from_secs(60),
        "a third of the work before the kill",
        || async {
            let n = acked.lock().len();
            if n >= ITEMS / 3 {
                Ok(())
            } else {
                Err(format!("{n} acked"))
            }
        },
    )
    .await;
    procs[2].kill();
    for c in consumers {
        tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("the survivors finished the work")
            .unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock());
    assert_eq!(acked.len(), ITEMS, "every item was acked");
    for (body, n) in acked.iter() {
        assert_eq!(*n, 1, "{body} acked {n} times");
    }
    let a = clients[0].queue("work").await.unwrap();
    let b = clients[1].queue("work").await.unwrap();
    assert_eq!(figures(&a), figures(&b));
    assert_eq!(
        (a.enqueued, a.acked, a.depth, a.inflight, a.dead),
        (ITEMS as u64, ITEMS as u64, 0, 0, 0)
    );
}

#[tokio::test]
async fn replicas_are_unready_while_redis_is_down_and_recover_after_its_restart() {
    test_redis_url();
    let mut redis = RedisServer::start(&[]).await;
    let servers = replicas(&redis.url(), 2).await;
    let (a, b) = (servers[0].client(), servers[1].client());
    a.create_queue("q", None).await.unwrap();
    b.enqueue("q", "before", &EnqueueOptions::default())
        .await
        .unwrap();

    redis.kill();
    for s in &servers {
        wait_ready(&s.url(), false, Duration::from_secs(10)).await;
    }
    let err = a.queue("q").await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(503), Some("backend_unavailable"))
    );

    // No persistence: Redis comes back empty, and the replicas find it by themselves.
    redis.restart().await;
    for s in &servers {
        wait_ready(&s.url(), true, Duration::from_secs(20)).await;
    }
    let err = a.queue("q").await.unwrap_err();
    assert_eq!(err.status(), Some(404), "the queue went with Redis's data");
    a.create_queue("q", None).await.unwrap();

    // Wake-ups cross replicas again (B subscribed anew), leases cross too.
    let poller = b.clone();
    let poll = tokio::spawn(async move {
        let opts = leased(1, Duration::from_secs(30), Duration::from_secs(20));
        poller.dequeue("q", &opts).await.unwrap()
    });
    polls_waiting(&servers[1].url(), 1).await;
    let sent = Instant::now();
    a.enqueue("q", "after", &EnqueueOptions::default())
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .unwrap()
        .unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
    let Dequeued::Messages(m) = got else {
        panic!("{got:?}")
    };
    a.ack("q", &m[0].lease.as_ref().unwrap().id).await.unwrap();
    assert_eq!(
        figures(&a.queue("q").await.unwrap()),
        figures(&b.queue("q").await.unwrap())
    );
    for s in servers {
        s.shutdown().await;
    }
}

/// Redis with its append-only file fsynced on every write (`appendfsync always`), killed
/// (`SIGKILL`) while one replica takes enqueues and another hands out and acks, then started
/// again on its directory: every enqueue that was confirmed is there or was acked, and no
/// confirmed ack's item comes back. (A `SIGKILL` of Redis alone loses nothing under
/// `everysec` or `no` either: the kernel holds what Redis wrote; only a machine crash loses
/// their window. See docs/redis.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_under_load_with_appendfsync_always_loses_no_confirmed_work() {
    test_redis_url();
    let mut redis = RedisServer::start(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let servers = replicas(&redis.url(), 2).await;
    let (producer, consumer) = (servers[0].client(), servers[1].client());
    producer.create_queue("q", None).await.unwrap();

    let confirmed = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let unsure = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let produce = {
        let (confirmed, stop) = (confirmed.clone(), stop.clone());
        tokio::spawn(async move {
            // Bounded: at most this many attempts, and only until the test says stop.
            for i in 0..200_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let body = format!("item-{i}");
                if producer
                    .enqueue("q", &body, &EnqueueOptions::default())
                    .await
                    .is_ok()
                {
                    confirmed.lock().push(body);
                }
            }
        })
    };
    let consume = {
        let (acked, unsure, stop) = (acked.clone(), unsure.clone(), stop.clone());
        tokio::spawn(async move {
            let opts = leased(10, Duration::from_secs(2), Duration::ZERO);
            while !stop.load(Ordering::SeqCst) {
                let Ok(Dequeued::Messages(msgs)) = consumer.dequeue("q", &opts).await else {
                    tokio::task::yield_now().await;
                    continue;
                };
                for m in msgs {
                    let lease = m.lease.unwrap().id;
                    match consumer.ack("q", &lease).await {
                        Ok(()) => acked.lock().push(m.body),
                        // Redis may have applied (and synced) the ack and died before it
                        // answered: this item may be gone or back, either is right.
                        Err(_) => unsure.lock().push(m.body),
                    }
                }
            }
        })
    };
    eventually(Duration::from_secs(60), "work under way", || async {
        let (c, a) = (confirmed.lock().len(), acked.lock().len());
        if c >= 2_000 && a >= 500 {
            Ok(())
        } else {
            Err(format!("{c} enqueues and {a} acks confirmed"))
        }
    })
    .await;
    redis.kill();
    // Requests under way when Redis died fail; the clients keep trying until told to stop.
    for s in &servers {
        wait_ready(&s.url(), false, Duration::from_secs(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    produce.await.unwrap();
    consume.await.unwrap();

    redis.restart().await;
    for s in &servers {
        wait_ready(&s.url(), true, Duration::from_secs(20)).await;
    }
    // What is left, once the leases held at the kill have expired (2 s).
    let client = servers[1].client();
    let left = Mutex::new(Vec::new());
    let opts = leased(500, Duration::from_secs(30), Duration::from_secs(1));
    eventually(
        Duration::from_secs(30),
        "the queue drained after the restart",
        || async {
            match client
                .dequeue("q", &opts)
                .await
                .map_err(|e| e.to_string())?
            {
                Dequeued::Messages(msgs) => {
                    for m in msgs {
                        client
                            .ack("q", &m.lease.unwrap().id)
                            .await
                            .map_err(|e| e.to_string())?;
                        left.lock().push(m.body);
                    }
                    Err(format!("{} taken after the restart", left.lock().len()))
                }
                d if d.is_finished() => Ok(()),
                d => Err(format!("{d:?}")),
            }
        },
    )
    .await;

    let left = left.into_inner();
    let acked = std::mem::take(&mut *acked.lock());
    let acked_set: HashSet<&String> = acked.iter().collect();
    let left_set: HashSet<&String> = left.iter().collect();
    let back: Vec<&&String> = left_set.intersection(&acked_set).collect();
    assert!(
        back.is_empty(),
        "acked before the kill, back after it: {back:?}"
    );
    let confirmed = std::mem::take(&mut *confirmed.lock());
    let unsure = std::mem::take(&mut *unsure.lock());
    let unsure_set: HashSet<&String> = unsure.iter().collect();
    assert!(
        unsure.len() <= 10,
        "{} acks without an answer",
        unsure.len()
    );
    let lost: Vec<&String> = confirmed
        .iter()
        .filter(|b| !acked_set.contains(b) && !left_set.contains(b) && !unsure_set.contains(b))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} confirmed enqueues lost, e.g. {:?}",
        lost.len(),
        confirmed.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(
        left.len(),
        left_set.len(),
        "an item handed out twice after the restart"
    );
    for s in servers {
        s.shutdown().await;
    }
}

#[tokio::test]
async fn a_redis_at_its_maxmemory_answers_507_and_takes_work_again_once_drained() {
    test_redis_url();
    let redis =
        RedisServer::start(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]).await;
    let servers = replicas(&redis.url(), 1).await;
    let client = servers[0].client();
    client.create_queue("q", None).await.unwrap();
    let batch: String = (0..1000).map(|i| format!("{i:0>200}\n")).collect();
    let mut stored = 0;
    let full = loop {
        match client.enqueue_lines("q", batch.clone(), None).await {
            Ok(r) => stored += r.count,
            Err(e) => break e,
        }
        assert!(
            stored < 100_000,
            "4 MB of Redis took {stored} items of 200 bytes"
        );
    };
    assert_eq!(full.status(), Some(507), "{full}");
    assert_eq!(full.code(), Some("memory_full"), "{full}");
    // Refused whole: what the queue holds is what was answered 200.
    let q = client.queue("q").await.unwrap();
    assert_eq!((q.depth, q.enqueued), (stored, stored));
    assert!(
        servers[0].wait_ready(Duration::from_secs(1)).await,
        "full is not down"
    );

    client.queue_action("q", "drain").await.unwrap();
    client
        .enqueue("q", "after", &EnqueueOptions::default())
        .await
        .expect("room again once drained");
}

#[tokio::test]
async fn max_queues_holds_across_replicas() {
    let url = test_redis_url();
    let prefix = unique_prefix();
    let mut servers = Vec::new();
    for _ in 0..2 {
        servers.push(
            TestServer::start(Config {
                redis: Some(url.clone()),
                redis_prefix: prefix.clone(),
                redis_cluster: is_cluster(&url),
                max_queues: 3,
                ..Config::default()
            })
            .await,
        );
    }
    let (a, b) = (servers[0].client(), servers[1].client());
    a.create_queue("one", None).await.unwrap();
    b.create_queue("two", None).await.unwrap();
    a.create_queue("three", None).await.unwrap();
    for client in [&a, &b] {
        let err = client.create_queue("four", None).await.unwrap_err();
        assert_eq!(err.status(), Some(409), "{err}");
        assert_eq!(err.code(), Some("too_many_queues"), "{err}");
        // An existing queue can still be updated.
        assert!(!client.create_queue("two", None).await.unwrap().1);
    }
    b.delete_queue("one").await.unwrap();
    a.create_queue("four", None).await.unwrap();
}

/// The queue-server of the previous release (0.1.0), which `scripts/previous-release.sh` builds
/// from this repository's history; scripts/test-redis.sh builds it and sets
/// `MEMQ_TEST_PREVIOUS_SERVER`. A test without it fails, it never passes by skipping.
fn previous_release() -> String {
    std::env::var("MEMQ_TEST_PREVIOUS_SERVER")
        .ok()
        .filter(|p| !p.is_empty())
        .expect(
            "MEMQ_TEST_PREVIOUS_SERVER is not set: the rolling-upgrade test runs the previous \
             release's queue-server; scripts/test-redis.sh builds it (scripts/previous-release.sh) \
             and sets it",
        )
}

/// `GET`/`HGET` one value from the Redis (or Redis Cluster) at `url`.
async fn redis_read(url: &str, args: &[&str]) -> Option<String> {
    let mut cmd = redis::cmd(args[0]);
    cmd.arg(&args[1..]);
    if is_cluster(url) {
        let nodes: Vec<&str> = url.split(',').collect();
        let client = redis::cluster::ClusterClient::new(nodes).unwrap();
        let mut conn = client.get_async_connection().await.unwrap();
        cmd.query_async(&mut conn).await.unwrap()
    } else {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        cmd.query_async(&mut conn).await.unwrap()
    }
}

/// A replica behind the test's stand-in for a Service: whether it still gets requests, how
/// many of its requests are under way, how many it answered.
struct Backend {
    client: memq::Client,
    routed: AtomicBool,
    in_flight: std::sync::atomic::AtomicUsize,
    answered: std::sync::atomic::AtomicUsize,
}

/// The Service: each request goes to the next routed replica.
struct Service {
    backends: Mutex<Vec<Arc<Backend>>>,
    next: std::sync::atomic::AtomicUsize,
}

impl Service {
    fn pick(&self) -> Arc<Backend> {
        let backends = self.backends.lock();
        let routed: Vec<&Arc<Backend>> = backends
            .iter()
            .filter(|b| b.routed.load(Ordering::Acquire))
            .collect();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % routed.len();
        routed[i].in_flight.fetch_add(1, Ordering::AcqRel);
        routed[i].clone()
    }

    fn add(&self, base_url: String) -> Arc<Backend> {
        let backend = Arc::new(Backend {
            client: memq::Client::new(base_url).unwrap(),
            routed: AtomicBool::new(true),
            in_flight: Default::default(),
            answered: Default::default(),
        });
        self.backends.lock().push(backend.clone());
        backend
    }
}

/// Runs one request through the Service.
async fn through<T>(
    service: &Service,
    call: impl AsyncFnOnce(&memq::Client) -> Result<T, memq::Error>,
) -> Result<T, memq::Error> {
    let backend = service.pick();
    let result = call(&backend.client).await;
    backend.in_flight.fetch_sub(1, Ordering::AcqRel);
    if result.is_ok() {
        backend.answered.fetch_add(1, Ordering::Relaxed);
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_upgrade_from_the_previous_release_under_load_loses_and_duplicates_nothing() {
    const PRODUCERS: usize = 2;
    const PER_PRODUCER: usize = 1_500;
    const ITEMS: usize = PRODUCERS * PER_PRODUCER;
    let url = test_redis_url();
    let prefix = unique_prefix();
    let mut args = vec!["--redis", url.as_str(), "--redis-prefix", prefix.as_str()];
    if is_cluster(&url) {
        args.push("--redis-cluster");
    }
    // Before: replicas of the previous release only.
    let mut old = ServerProcess::start(previous_release(), &args).await;
    wait_ready(&old.url(), true, Duration::from_secs(15)).await;
    let service = Arc::new(Service {
        backends: Mutex::new(Vec::new()),
        next: Default::default(),
    });
    let old_backend = service.add(old.base_url());
    old_backend.client.create_queue("work", None).await.unwrap();
    assert_eq!(
        redis_read(&url, &["GET", &format!("{prefix}:layout")]).await,
        None,
        "the previous release records no layout"
    );

    // The load: producers with a key per item (a retry adds nothing twice), consumers that
    // lease, count each delivery and ack.
    let enqueued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let delivered = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let acked = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let (service, enqueued) = (service.clone(), enqueued.clone());
        producers.push(tokio::spawn(async move {
            for i in 0..PER_PRODUCER {
                let body = format!("item-{p}-{i}");
                let opts = EnqueueOptions {
                    id: Some(body.clone()),
                    ..Default::default()
                };
                through(&service, async |c| c.enqueue("work", body, &opts).await)
                    .await
                    .expect("an enqueue through the Service");
                enqueued.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let producing = Arc::new(AtomicBool::new(true));
    let mut consumers = Vec::new();
    for _ in 0..3 {
        let (service, delivered, acked, producing) = (
            service.clone(),
            delivered.clone(),
            acked.clone(),
            producing.clone(),
        );
        consumers.push(tokio::spawn(async move {
            let opts = leased(10, Duration::from_secs(30), Duration::from_millis(200));
            loop {
                let got = through(&service, async |c| c.dequeue("work", &opts).await)
                    .await
                    .expect("a lease through the Service");
                match got {
                    Dequeued::Messages(msgs) => {
                        for m in msgs {
                            *delivered.lock().entry(m.body.clone()).or_default() += 1;
                            let lease = m.lease.unwrap().id;
                            through(&service, async |c| c.ack("work", &lease).await)
                                .await
                                .expect("an ack through the Service");
                            *acked.lock().entry(m.body).or_default() += 1;
                        }
                    }
                    d if d.is_finished() && !producing.load(Ordering::Acquire) => return,
                    Dequeued::Empty { .. } => {}
                }
            }
        }));
    }
    let progress = |share: usize| {
        let enqueued = enqueued.clone();
        async move {
            eventually(
                Duration::from_secs(60),
                &format!("{share}/3 of the items enqueued"),
                || async {
                    let n = enqueued.load(Ordering::Relaxed);
                    if n >= ITEMS * share / 3 {
                        Ok(())
                    } else {
                        Err(format!("{n} enqueued"))
                    }
                },
            )
            .await;
        }
    };

    // A replica of this release joins, under load: both serve the queue.
    progress(1).await;
    let new = ServerProcess::start(BIN, &args).await;
    wait_ready(&new.url(), true, Duration::from_secs(15)).await;
    let new_backend = service.add(new.base_url());
    let old_before = old_backend.answered.load(Ordering::Relaxed);
    assert_eq!(
        redis_read(&url, &["GET", &format!("{prefix}:layout")]).await,
        Some(queue_server::store::REDIS_LAYOUT.to_string()),
        "the new replica raised the deployment's layout"
    );

    // The old one leaves as Kubernetes takes a pod away: out of the Service first, then,
    // once its requests under way are answered, SIGTERM.
    progress(2).await;
    old_backend.routed.store(false, Ordering::Release);
    assert!(
        old_backend.answered.load(Ordering::Relaxed) > old_before
            && new_backend.answered.load(Ordering::Relaxed) > 0,
        "both releases served the queue side by side"
    );
    eventually(
        Duration::from_secs(10),
        "the old replica's requests answered",
        || async {
            match old_backend.in_flight.load(Ordering::Acquire) {
                0 => Ok(()),
                n => Err(format!("{n} under way")),
            }
        },
    )
    .await;
    let status = old.terminate().expect("the old replica ran");
    assert!(
        status.success(),
        "the old replica stopped cleanly: {status}"
    );

    for p in producers {
        tokio::time::timeout(Duration::from_secs(120), p)
            .await
            .expect("the producers finished")
            .unwrap();
    }
    producing.store(false, Ordering::Release);
    for c in consumers {
        tokio::time::timeout(Duration::from_secs(120), c)
            .await
            .expect("the consumers finished")
            .unwrap();
    }
    let (delivered, acked) = (delivered.lock().clone(), acked.lock().clone());
    assert_eq!(acked.len(), ITEMS, "every item acked");
    for (body, n) in &acked {
        assert_eq!(*n, 1, "{body} acked {n} times");
        assert_eq!(
            delivered[body], 1,
            "{body} delivered {} times",
            delivered[body]
        );
    }
    let stats = service.pick().client.queue("work").await.unwrap();
    assert_eq!(
        (
            stats.enqueued,
            stats.acked,
            stats.requeued,
            stats.depth,
            stats.inflight
        ),
        (ITEMS as u64, ITEMS as u64, 0, 0, 0)
    );
    assert_eq!(
        redis_read(
            &url,
            &["HGET", &format!("{prefix}:{{work}}:meta"), "layout"]
        )
        .await,
        Some(queue_server::store::REDIS_LAYOUT.to_string()),
        "the queue was brought to the new layout while the old replica served it too"
    );
}
