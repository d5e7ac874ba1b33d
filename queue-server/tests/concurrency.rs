//! Many producers and consumers at once: every item acked exactly once, counters add up.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use memq::{DequeueOptions, Dequeued, EnqueueOptions};
use parking_lot::Mutex;
use queue_server::Config;
use queue_server::testing::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_producers_and_eight_consumers_ack_every_item_exactly_once() {
    const PRODUCERS: usize = 8;
    const PER_PRODUCER: usize = 10_000;
    let server = TestServer::start(Config::default()).await;
    let client = server.client();
    client.create_queue("q", None).await.unwrap();

    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let c = client.clone();
        producers.push(tokio::spawn(async move {
            for i in 0..PER_PRODUCER {
                c.enqueue("q", format!("{p}-{i}"), &EnqueueOptions::default())
                    .await
                    .unwrap();
            }
        }));
    }
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut consumers = Vec::new();
    for _ in 0..8 {
        let c = client.clone();
        let seen = seen.clone();
        consumers.push(tokio::spawn(async move {
            let opts = DequeueOptions {
                lease: Some(Duration::from_secs(60)),
                wait: Some(Duration::from_millis(500)),
                max: Some(5),
                ..Default::default()
            };
            loop {
                match c.dequeue("q", &opts).await.unwrap() {
                    Dequeued::Messages(msgs) => {
                        for m in msgs {
                            c.ack("q", &m.lease.unwrap().id).await.unwrap();
                            assert!(seen.lock().insert(m.body), "an item was acked twice");
                        }
                    }
                    Dequeued::Empty { .. } if seen.lock().len() == PRODUCERS * PER_PRODUCER => {
                        return;
                    }
                    Dequeued::Empty { .. } => {}
                }
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
        .expect("finished in time");
    {
        let seen = seen.lock();
        assert_eq!(seen.len(), PRODUCERS * PER_PRODUCER);
        for p in 0..PRODUCERS {
            for i in 0..PER_PRODUCER {
                assert!(seen.contains(&format!("{p}-{i}")));
            }
        }
    }
    let q = client.queue("q").await.unwrap();
    assert_eq!(q.acked, (PRODUCERS * PER_PRODUCER) as u64);
    assert_eq!(
        q.enqueued,
        q.acked + q.depth + q.inflight + q.dead + q.drained
    );
    assert_eq!((q.depth, q.inflight, q.dequeued), (0, 0, q.acked));
    server.shutdown().await;
}
