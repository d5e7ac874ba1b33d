//! Enqueues that arrive together for one queue on one replica share a call to Redis
//! (`store/redis/coalesce.rs`), yet each keeps its own answer and one connection's requests
//! keep their order. Starts a redis-server of its own.

use std::time::Duration;

use memq::{DequeueOptions, Dequeued, EnqueueOptions};
use queue_server::Config;
use queue_server::testing::{RedisServer, TestServer, unique_prefix};

/// `calls` of one command in `INFO commandstats`.
async fn calls(redis: &RedisServer, command: &str) -> u64 {
    let mut conn = redis.connection().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| {
            l.strip_prefix(&format!("cmdstat_{command}:calls="))?
                .split(',')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_share_calls_and_each_connection_keeps_its_order() {
    const CLIENTS: usize = 32;
    const EACH: usize = 100;
    let redis = RedisServer::start(&[]).await;
    let server = TestServer::start_as_given(Config {
        redis: Some(redis.url()),
        redis_prefix: unique_prefix(),
        ..Config::default()
    })
    .await;
    server.client().create_queue("q", None).await.unwrap();
    let before = calls(&redis, "fcall").await;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        // A client (and so a connection) of its own, sending one request at a time.
        let client = memq::Client::new(server.base_url()).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EACH {
                let body = format!("{c}:{i}");
                let message = client
                    .enqueue("q", &body, &EnqueueOptions::default())
                    .await
                    .unwrap();
                assert_eq!(message.body, body, "the answer is this request's");
                ids.push((message.id, body));
            }
            ids
        }));
    }
    // Each request's answer names its own item: the id it got holds its body.
    let mut body_of = std::collections::HashMap::new();
    for task in tasks {
        for (id, body) in task.await.unwrap() {
            assert!(body_of.insert(id, body).is_none(), "an id given twice");
        }
    }
    let used = calls(&redis, "fcall").await - before;
    let requests = (CLIENTS * EACH) as u64;
    eprintln!("{requests} enqueues in {used} calls");
    // Background calls (the sampler, the sweeper) are a handful; without coalescing there
    // would be one call per request.
    assert!(
        used * 10 < requests * 9,
        "{requests} enqueues took {used} calls"
    );

    // Leases and acks, 32 clients at once: they share calls too.
    let before = calls(&redis, "fcall").await;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let client = memq::Client::new(server.base_url()).unwrap();
        tasks.push(tokio::spawn(async move {
            let lease = DequeueOptions {
                lease: Some(Duration::from_secs(60)),
                ..Default::default()
            };
            let mut acked = Vec::new();
            for _ in 0..EACH / 2 {
                let Dequeued::Messages(m) = client.dequeue("q", &lease).await.unwrap() else {
                    panic!("items are queued")
                };
                client
                    .ack("q", &m[0].lease.as_ref().unwrap().id)
                    .await
                    .unwrap();
                acked.push((m[0].id.clone(), m[0].body.clone()));
            }
            acked
        }));
    }
    let mut acked = std::collections::HashSet::new();
    for task in tasks {
        for (id, body) in task.await.unwrap() {
            assert_eq!(
                body_of.get(&id),
                Some(&body),
                "lease of {id} with another's body"
            );
            assert!(acked.insert(body), "an item was handed out twice");
        }
    }
    let used = calls(&redis, "fcall").await - before;
    let pairs = (CLIENTS * EACH / 2) as u64;
    eprintln!("{pairs} leases and acks in {used} calls");
    assert!(
        used < pairs * 2 * 3 / 4,
        "{pairs} leases and acks took {used} calls"
    );
    let q = client_stats(&server).await;
    assert_eq!((q.acked, q.inflight), (pairs, 0));

    // Every other item once, and each client's items in the order it sent them.
    let client = server.client();
    let mut next = vec![0usize; CLIENTS];
    let mut last = vec![0usize; CLIENTS];
    loop {
        let batch = DequeueOptions {
            max: Some(1000),
            wait: Some(Duration::ZERO),
            ..Default::default()
        };
        let Dequeued::Messages(messages) = client.dequeue("q", &batch).await.unwrap() else {
            break;
        };
        for m in messages {
            assert_eq!(
                body_of.get(&m.id),
                Some(&m.body),
                "item {} has another's body",
                m.id
            );
            let (c, i) = m.body.split_once(':').unwrap();
            let (c, i): (usize, usize) = (c.parse().unwrap(), i.parse().unwrap());
            assert!(i >= last[c], "client {c}'s items out of order");
            assert!(!acked.contains(&m.body), "{} was acked", m.body);
            last[c] = i;
            next[c] += 1;
        }
    }
    let left: usize = next.iter().sum();
    assert_eq!(left + acked.len(), CLIENTS * EACH);
    server.shutdown().await;
}

async fn client_stats(server: &TestServer) -> memq::QueueStats {
    server.client().queue("q").await.unwrap()
}

/// The sweeps every replica makes of every queue (every 2 s) write nothing while nothing is
/// due: an idle queue costs Redis reads only, not replicated or AOF writes.
#[tokio::test]
async fn sweeps_of_an_idle_queue_write_nothing() {
    let redis = RedisServer::start(&[]).await;
    let server = TestServer::start_as_given(Config {
        redis: Some(redis.url()),
        redis_prefix: unique_prefix(),
        ..Config::default()
    })
    .await;
    let client = server.client();
    client.create_queue("idle", None).await.unwrap();
    client
        .enqueue("idle", "waits", &EnqueueOptions::default())
        .await
        .unwrap();
    let writes = calls(&redis, "hset").await + calls(&redis, "hincrby").await;
    // Two of the replica's full sweeps of the queue, as Redis receives them.
    let monitor = redis::Client::open(redis.url())
        .unwrap()
        .get_async_monitor()
        .await
        .unwrap();
    let mut lines = monitor.into_on_message::<String>();
    let mut sweeps = 0;
    tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(line) = futures_util::StreamExt::next(&mut lines).await {
            if line.contains("\"sweep\"") && line.contains("\"idle\"") {
                sweeps += 1;
                if sweeps == 2 {
                    break;
                }
            }
        }
    })
    .await
    .expect("two sweeps of the queue within 15 s");
    let after = calls(&redis, "hset").await + calls(&redis, "hincrby").await;
    assert_eq!(after, writes, "writes while the queue was idle");
    server.shutdown().await;
}
