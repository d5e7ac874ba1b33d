//! A quick throughput comparison through the HTTP API (not part of the normal run): the memory
//! store against the Redis store with 1 and 3 replicas, in one run, on this machine.
//!
//!   MEMQ_TEST_REDIS=redis://127.0.0.1:PORT cargo test --release -p queue-server \
//!       --test redis_bench -- --ignored --nocapture
//!
//! Each server is the real binary in its own process; the clients run in this process. The
//! figures in docs/redis.md come from `scripts/bench.sh redis` (wrk as the load) instead.

use std::time::{Duration, Instant};

use memq::{DequeueOptions, Dequeued, EnqueueOptions};
use queue_server::testing::{ServerProcess, eventually, test_redis, unique_prefix};

const BIN: &str = env!("CARGO_BIN_EXE_queue-server");
const ITEMS: usize = 20_000;
const TASKS: usize = 32;

async fn ready(server: &ServerProcess) {
    let url = format!("{}/readyz", server.url());
    eventually(Duration::from_secs(15), "the server ready", || async {
        match reqwest::get(&url).await {
            Ok(r) if r.status().is_success() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

/// Items per second for single-item enqueues, then for lease + ack pairs, spread over `clients`.
async fn run(clients: &[memq::Client]) -> (f64, f64) {
    clients[0].create_queue("bench", None).await.unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let c = clients[t % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            for i in (t..ITEMS).step_by(TASKS) {
                c.enqueue("bench", format!("item-{i}"), &EnqueueOptions::default())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let enqueue = ITEMS as f64 / started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let c = clients[t % clients.len()].clone();
        // Acked through the next replica, as a load balancer would spread them.
        let ack = clients[(t + 1) % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let opts = DequeueOptions {
                lease: Some(Duration::from_secs(60)),
                ..Default::default()
            };
            let mut n = 0usize;
            while let Dequeued::Messages(m) = c.dequeue("bench", &opts).await.unwrap() {
                ack.ack("bench", &m[0].lease.as_ref().unwrap().id)
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, ITEMS);
    let lease_ack = ITEMS as f64 / started.elapsed().as_secs_f64();
    (enqueue, lease_ack)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run with --release -- --ignored --nocapture"]
async fn http_throughput_memory_vs_redis_1_and_3_replicas() {
    let Some(url) = test_redis() else {
        eprintln!("skipped: MEMQ_TEST_REDIS is not set");
        return;
    };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("{ITEMS} items, {TASKS} concurrent clients, {cores} cores");
    let mut rows = Vec::new();
    for (label, replicas) in [("memory", 0usize), ("redis x1", 1), ("redis x3", 3)] {
        let mut servers = Vec::new();
        if replicas == 0 {
            servers.push(ServerProcess::start(BIN, &[]).await);
        } else {
            let prefix = unique_prefix();
            for _ in 0..replicas {
                let args = ["--redis", url.as_str(), "--redis-prefix", prefix.as_str()];
                servers.push(ServerProcess::start(BIN, &args).await);
            }
        }
        for s in &servers {
            ready(s).await;
        }
        let clients: Vec<memq::Client> = servers
            .iter()
            .map(|s| memq::Client::new(s.base_url()).unwrap())
            .collect();
        let (enqueue, lease_ack) = run(&clients).await;
        rows.push((label, enqueue, lease_ack));
    }
    let (base_e, base_l) = (rows[0].1, rows[0].2);
    println!("| store | enqueue items/s | lease+ack items/s | vs memory (enqueue, lease+ack) |");
    println!("|---|---|---|---|");
    for (label, e, l) in rows {
        println!(
            "| {label} | {e:.0} | {l:.0} | {:.2}, {:.2} |",
            e / base_e,
            l / base_l
        );
    }
}
