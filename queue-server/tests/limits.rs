//! Limits that protect the server: connections, slowloris, header size, request time, queues
//! and memory. Every test is bounded in time and talks to loopback only.

use std::time::{Duration, Instant};

use memq::{BatchItem, DequeueOptions, Dequeued, EnqueueOptions};
use queue_server::Config;
use queue_server::broker::item_cost;
use queue_server::config::MemoryLimit;
use queue_server::testing::{TestServer, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a connection that sends the start of a request head and then stalls.
async fn half_open(server: &TestServer) -> TcpStream {
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: memq\r\nX-Slow: ")
        .await
        .unwrap();
    tcp
}

/// Waits until the server closes `tcp` (EOF or reset), at most `within`.
async fn closed_by_server(mut tcp: TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let read = async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.is_ok()
}

/// One request on a fresh connection (no pooled connection may help it).
async fn fresh_get(url: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn half_open_connections_below_the_limit_do_not_delay_a_normal_client() {
    let server = TestServer::start(Config {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(30),
        ..Config::default()
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..48 {
        stalled.push(half_open(&server).await);
    }
    let started = Instant::now();
    for _ in 0..10 {
        let resp = fresh_get(&format!("{}/healthz", server.url())).await;
        assert_eq!(resp.status(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a normal client waited {:?}",
        started.elapsed()
    );
    drop(stalled);
    server.shutdown().await;
}

#[tokio::test]
async fn slowloris_past_the_connection_limit_is_cut_and_a_normal_client_gets_through() {
    let server = TestServer::start(Config {
        max_connections: 16,
        header_read_timeout: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    // Three times the limit: the first 16 hold every slot, the rest wait in the backlog.
    let mut stalled = Vec::new();
    for _ in 0..48 {
        stalled.push(half_open(&server).await);
    }
    let started = Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        fresh_get(&format!("{}/healthz", server.url())),
    )
    .await
    .expect("a normal client is answered once the stalled connections time out");
    assert_eq!(resp.status(), 200);
    let waited = started.elapsed();
    // Each round of 16 stalled connections holds the slots for the header timeout (1 s).
    assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    // Every stalled connection was closed by the server, none is still held.
    for tcp in stalled {
        assert!(
            closed_by_server(tcp, Duration::from_secs(10)).await,
            "a stalled connection stayed open"
        );
    }
    let metrics = fresh_get(&format!("{}/metrics", server.url()))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("memq_http_open_connections 1"),
        "only the scrape's own connection is open:\n{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let server = TestServer::start(Config {
        header_read_timeout: Duration::from_millis(500),
        ..Config::default()
    })
    .await;
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: memq\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = Instant::now();
    assert!(closed_by_server(tcp, Duration::from_secs(5)).await);
    assert!(started.elapsed() >= Duration::from_millis(400));
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_431_and_the_server_goes_on() {
    let server = TestServer::start(Config {
        max_header_bytes: 16 << 10,
        ..Config::default()
    })
    .await;
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("{}/healthz", server.url()))
        .header("x-big", "a".repeat(20 << 10))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    let resp = http
        .get(format!("{}/healthz", server.url()))
        .header("x-fits", "a".repeat(8 << 10))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_that_never_arrives_is_408_after_the_request_timeout() {
    let server = TestServer::start(Config {
        request_timeout: Duration::from_millis(500),
        ..Config::default()
    })
    .await;
    server.client().create_queue("q", None).await.unwrap();
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(
        b"POST /memq/server/queues/q/enqueue HTTP/1.1\r\nHost: memq\r\n\
          Content-Length: 100\r\n\r\nonly ten b",
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"request_timeout\""), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Nothing was enqueued.
    assert_eq!(server.client().queue("q").await.unwrap().enqueued, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_long_poll_may_outlast_the_request_timeout_by_its_wait() {
    let server = TestServer::start(Config {
        request_timeout: Duration::from_millis(200),
        ..Config::default()
    })
    .await;
    let client = server.client();
    client.create_queue("q", None).await.unwrap();
    let started = Instant::now();
    let got = client
        .dequeue(
            "q",
            &DequeueOptions {
                wait: Some(Duration::from_secs(1)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(matches!(got, Dequeued::Empty { .. }), "{got:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    server.shutdown().await;
}

#[tokio::test]
async fn one_queue_past_max_queues_is_409_too_many_queues() {
    let server = TestServer::start(Config {
        max_queues: 3,
        ..Config::default()
    })
    .await;
    let client = server.client();
    for q in ["a", "b", "c"] {
        client.create_queue(q, None).await.unwrap();
    }
    let err = client.create_queue("d", None).await.unwrap_err();
    assert_eq!(err.status(), Some(409));
    assert_eq!(err.code(), Some("too_many_queues"));
    // Existing queues still answer PUT (idempotent), and a deleted one makes room.
    client.create_queue("a", None).await.unwrap();
    client.delete_queue("b").await.unwrap();
    client.create_queue("d", None).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn enqueues_past_max_memory_are_507_whole_and_room_comes_back_as_items_leave() {
    let body = "x".repeat(100);
    let cost = item_cost(&body);
    // The memory store's own limit; with --redis, Redis' maxmemory is the limit (redis_replicas).
    let server = TestServer::start_as_given(Config {
        max_memory: MemoryLimit::Bytes(10 * cost),
        ..Config::default()
    })
    .await;
    let client = server.client();
    client.create_queue("a", None).await.unwrap();
    client.create_queue("b", None).await.unwrap();
    let one = EnqueueOptions::default();
    for i in 0..6 {
        client.enqueue("a", &body, &one).await.unwrap();
        if i < 4 {
            client.enqueue("b", &body, &one).await.unwrap();
        }
    }
    // Ten items held: the limit counts every queue together.
    let err = client.enqueue("a", &body, &one).await.unwrap_err();
    assert_eq!(err.status(), Some(507));
    assert_eq!(err.code(), Some("memory_full"));
    let raw = reqwest::Client::new()
        .post(format!("{}/queues/b/enqueue", server.base_url()))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 507);
    assert_eq!(raw.headers()["retry-after"], "1");
    // One leaves for good (a kuard dequeue) and makes room for one; a leased item still counts.
    client
        .dequeue("a", &DequeueOptions::default())
        .await
        .unwrap();
    let Dequeued::Messages(leased) = client
        .dequeue(
            "b",
            &DequeueOptions {
                lease: Some(Duration::from_secs(30)),
                ..Default::default()
            },
        )
        .await
        .unwrap()
    else {
        panic!("an item")
    };
    client.enqueue("a", &body, &one).await.unwrap();
    assert_eq!(
        client.enqueue("a", &body, &one).await.unwrap_err().status(),
        Some(507)
    );
    // Acked, it leaves: a batch of two is still refused whole, a batch of one fits.
    let lease = leased[0].lease.as_ref().unwrap().id.clone();
    client.ack("b", &lease).await.unwrap();
    let two: Vec<BatchItem> = (0..2).map(|_| BatchItem::Body(body.clone())).collect();
    let err = client.enqueue_batch("a", &two, None).await.unwrap_err();
    assert_eq!(err.status(), Some(507));
    assert_eq!(client.queue("a").await.unwrap().depth, 6);
    client.enqueue_batch("a", &two[..1], None).await.unwrap();
    let metrics = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("memq_item_memory_bytes {}", 10 * cost)),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("memq_item_memory_limit_bytes {}", 10 * cost)),
        "{metrics}"
    );
    // Deleting a queue frees its items; a drain too.
    client.delete_queue("b").await.unwrap();
    client.queue_action("a", "drain").await.unwrap();
    let ten: Vec<BatchItem> = (0..10).map(|_| BatchItem::Body(body.clone())).collect();
    client.enqueue_batch("a", &ten, None).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_stalled_connections_at_once_and_finishes_requests_in_flight() {
    let server = TestServer::start(Config {
        header_read_timeout: Duration::from_secs(30),
        ..Config::default()
    })
    .await;
    server.client().create_queue("q", None).await.unwrap();
    let stalled = half_open(&server).await;
    // A request whose body is still coming when the shutdown starts.
    let mut uploading = TcpStream::connect(server.addr()).await.unwrap();
    uploading
        .write_all(
            b"POST /memq/server/queues/q/enqueue HTTP/1.1\r\nHost: memq\r\n\
              Content-Length: 10\r\n\r\nfirst",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    uploading.write_all(b"-half").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), uploading.read_to_end(&mut answer))
        .await
        .expect("answered and closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("first-half"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("the stalled connection does not hold the shutdown")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(closed_by_server(stalled, Duration::from_secs(1)).await);
}

/// The issue operators hit: keys of drained items are kept for the dedup window and hold
/// memory while the queue shows nothing. They count for --max-memory, show in the queue's
/// figures and /metrics, the 507 says they hold the memory, and they are freed on time.
#[tokio::test]
async fn retained_dedup_keys_count_for_max_memory_are_shown_and_freed_after_the_window() {
    let key_cost = queue_server::broker::key_cost("k-000");
    let server = TestServer::start_as_given(Config {
        max_memory: MemoryLimit::Bytes(40 * (item_cost("x") + key_cost)),
        dedup_window: Duration::from_millis(1500),
        ..Config::default()
    })
    .await;
    let client = server.client();
    client.create_queue("keyed", None).await.unwrap();
    let mut enqueued = 0;
    let err = loop {
        let opts = EnqueueOptions {
            id: Some(format!("k-{enqueued:03}")),
            ..Default::default()
        };
        match client.enqueue("keyed", "x", &opts).await {
            Ok(_) => enqueued += 1,
            Err(e) => break e,
        }
        assert!(enqueued < 1000, "no 507 within 1,000 keyed items");
    };
    assert_eq!(err.status(), Some(507));
    client.queue_action("keyed", "drain").await.unwrap();
    let q = client.queue("keyed").await.unwrap();
    assert_eq!((q.depth, q.retained_keys), (0, enqueued));
    assert_eq!(q.retained_key_bytes, Some(enqueued * key_cost));
    let metrics = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!(
            "memq_queue_retained_keys{{queue=\"keyed\"}} {enqueued}"
        )),
        "{metrics}"
    );
    // The queue is empty, yet a large enqueue is refused: the message says why and where.
    let big = "y".repeat((enqueued as usize / 2) * key_cost as usize);
    let err = client
        .enqueue("keyed", &big, &EnqueueOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(507));
    let message = err.to_string();
    assert!(
        message.contains(&format!("{} are dedup keys kept", enqueued * key_cost))
            && message.contains("queue \"keyed\" holds the most")
            && message.contains("--dedup-window"),
        "{message}"
    );
    // Within the window a rerun is still a duplicate; after it, the keys are free (and the
    // memory with them) without any request to the queue.
    let again = EnqueueOptions {
        id: Some("k-000".into()),
        ..Default::default()
    };
    assert!(
        client
            .enqueue("keyed", "x", &again)
            .await
            .unwrap()
            .duplicate
    );
    eventually(Duration::from_secs(10), "the keys are freed", || async {
        let q = client.queue("keyed").await.map_err(|e| e.to_string())?;
        if q.retained_keys == 0 && q.retained_key_bytes == Some(0) {
            Ok(())
        } else {
            Err(format!("{q:?}"))
        }
    })
    .await;
    assert!(
        !client
            .enqueue("keyed", "x", &again)
            .await
            .unwrap()
            .duplicate
    );
    server.shutdown().await;
}
