//! Items: batches (all or nothing), delays, dedup keys, drain, delete with items in flight, peek.

use std::time::Duration;

use memq::{BatchItem, DequeueOptions, Dequeued, EnqueueOptions, QueueConfigPatch};
use queue_server::Config;
use queue_server::testing::TestServer;
use serde_json::Value;

async fn server_with_queue(config: Config) -> (TestServer, memq::Client) {
    let server = TestServer::start(config).await;
    let client = server.client();
    client.create_queue("q", None).await.unwrap();
    (server, client)
}

#[tokio::test]
async fn batch_of_100_000_lines_lands_in_order() {
    let (server, client) = server_with_queue(Config::default()).await;
    let body: String = (0..100_000).map(|i| format!("item-{i}\r\n")).collect();
    let result = client.enqueue_lines("q", body, None).await.unwrap();
    assert_eq!(
        (result.count, result.duplicates, result.ids.len()),
        (100_000, 0, 100_000)
    );
    let mut sorted = result.ids.clone();
    sorted.sort();
    assert_eq!(sorted, result.ids, "ids are time-ordered");
    assert_eq!(client.queue("q").await.unwrap().depth, 100_000);
    let opts = DequeueOptions {
        max: Some(1000),
        ..Default::default()
    };
    let mut next = 0;
    while let Dequeued::Messages(batch) = client.dequeue("q", &opts).await.unwrap() {
        for m in batch {
            assert_eq!(m.body, format!("item-{next}"));
            next += 1;
        }
    }
    assert_eq!(next, 100_000);
    server.shutdown().await;
}

#[tokio::test]
async fn batch_with_one_line_too_long_is_refused_whole() {
    let config = Config {
        max_item_bytes: 100,
        ..Config::default()
    };
    let (server, client) = server_with_queue(config).await;
    let mut body: String = (0..1000).map(|i| format!("ok-{i}\n")).collect();
    body.push_str(&"x".repeat(101));
    body.push('\n');
    let err = client.enqueue_lines("q", body, None).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(413), Some("item_too_large"))
    );
    assert!(err.to_string().contains("item 1000"), "{err}");
    let items = vec![
        BatchItem::Body("fine".into()),
        BatchItem::Body("y".repeat(101)),
    ];
    let err = client.enqueue_batch("q", &items, None).await.unwrap_err();
    assert_eq!(err.status(), Some(413));
    let q = client.queue("q").await.unwrap();
    assert_eq!((q.depth, q.enqueued), (0, 0), "queue unchanged");
    server.shutdown().await;
}

#[tokio::test]
async fn batch_passing_max_depth_is_429_with_retry_after_and_adds_nothing() {
    let (server, client) = server_with_queue(Config::default()).await;
    let cfg = QueueConfigPatch {
        max_depth: Some(5),
        ..Default::default()
    };
    let (q, created) = client.create_queue("q", Some(&cfg)).await.unwrap();
    assert!(!created);
    assert_eq!(q.max_depth, 5);
    client.enqueue_lines("q", "a\nb\nc\n", None).await.unwrap();
    let err = client
        .enqueue_lines("q", "d\ne\nf\n", None)
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(429), Some("queue_full")));
    let memq::Error::Api { retry_after, .. } = err else {
        panic!()
    };
    assert_eq!(retry_after, Some(Duration::from_secs(1)));
    assert_eq!(client.queue("q").await.unwrap().depth, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn empty_lines_are_items_only_with_keep_empty() {
    let (server, client) = server_with_queue(Config::default()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/queues/q/enqueue", server.base_url());
    let r: Value = http
        .post(format!("{url}?batch=lines"))
        .body("a\n\nb\n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["count"], 2);
    let r: Value = http
        .post(format!("{url}?batch=lines&keepEmpty=true"))
        .body("a\n\nb\n")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["count"], 3);
    let peek = client.peek("q", Some(10)).await.unwrap();
    let bodies: Vec<_> = peek.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["a", "b", "a", "", "b"]);
    server.shutdown().await;
}

#[tokio::test]
async fn delayed_items_count_as_delayed_until_due() {
    let (server, client) = server_with_queue(Config::default()).await;
    let opts = EnqueueOptions {
        delay: Some(Duration::from_millis(400)),
        ..Default::default()
    };
    client.enqueue("q", "later", &opts).await.unwrap();
    client
        .enqueue_lines("q", "b1\nb2\n", Some(Duration::from_millis(400)))
        .await
        .unwrap();
    let q = client.queue("q").await.unwrap();
    assert_eq!((q.depth, q.delayed), (0, 3));
    assert_eq!(
        client
            .dequeue("q", &DequeueOptions::default())
            .await
            .unwrap(),
        Dequeued::Empty {
            depth: 0,
            inflight: 0,
            delayed: 3,
            paused: false
        }
    );
    let opts = DequeueOptions {
        wait: Some(Duration::from_secs(5)),
        max: Some(10),
        ..Default::default()
    };
    let Dequeued::Messages(m) = client.dequeue("q", &opts).await.unwrap() else {
        panic!()
    };
    assert!(!m.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn dedup_keys_answer_the_original_id() {
    let (server, client) = server_with_queue(Config::default()).await;
    let keyed = |k: &str| EnqueueOptions {
        id: Some(k.into()),
        ..Default::default()
    };
    let first = client.enqueue("q", "one", &keyed("k1")).await.unwrap();
    assert!(!first.duplicate);
    let again = client
        .enqueue("q", "one again", &keyed("k1"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    let items = vec![
        BatchItem::Keyed {
            id: "k1".into(),
            body: "x".into(),
        },
        BatchItem::Keyed {
            id: "k2".into(),
            body: "two".into(),
        },
        BatchItem::Keyed {
            id: "k2".into(),
            body: "two again".into(),
        },
        BatchItem::Body("plain".into()),
    ];
    let r = client.enqueue_batch("q", &items, None).await.unwrap();
    assert_eq!((r.count, r.duplicates, r.ids.len()), (2, 2, 4));
    assert_eq!(r.ids[0], first.id);
    assert_eq!(r.ids[1], r.ids[2]);
    // Acked items keep their key for a while: a rerun adds nothing.
    let opts = DequeueOptions {
        lease: Some(Duration::from_secs(10)),
        max: Some(10),
        ..Default::default()
    };
    let Dequeued::Messages(m) = client.dequeue("q", &opts).await.unwrap() else {
        panic!()
    };
    for msg in &m {
        client
            .ack("q", &msg.lease.as_ref().unwrap().id)
            .await
            .unwrap();
    }
    let r = client.enqueue_batch("q", &items[..3], None).await.unwrap();
    assert_eq!((r.count, r.duplicates), (0, 3));
    // ?id= with a batch is refused.
    let http = reqwest::Client::new();
    let resp = http
        .post(format!(
            "{}/queues/q/enqueue?batch=lines&id=x",
            server.base_url()
        ))
        .body("a\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    server.shutdown().await;
}

#[tokio::test]
async fn drain_drops_ready_and_delayed_but_not_inflight() {
    let (server, client) = server_with_queue(Config::default()).await;
    client.enqueue_lines("q", "a\nb\nc\n", None).await.unwrap();
    client
        .enqueue_lines("q", "d\n", Some(Duration::from_secs(60)))
        .await
        .unwrap();
    let lease = DequeueOptions {
        lease: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let Dequeued::Messages(m) = client.dequeue("q", &lease).await.unwrap() else {
        panic!()
    };
    let q = client.queue_action("q", "drain").await.unwrap();
    assert_eq!((q.depth, q.delayed, q.inflight, q.drained), (0, 0, 1, 3));
    client
        .ack("q", &m[0].lease.as_ref().unwrap().id)
        .await
        .unwrap();
    let q = client.queue("q").await.unwrap();
    assert_eq!(
        q.enqueued,
        q.acked + q.depth + q.inflight + q.dead + q.drained
    );
    server.shutdown().await;
}

#[tokio::test]
async fn deleting_a_queue_with_items_in_flight_invalidates_their_leases() {
    let (server, client) = server_with_queue(Config::default()).await;
    client.enqueue_lines("q", "a\nb\n", None).await.unwrap();
    let lease = DequeueOptions {
        lease: Some(Duration::from_secs(30)),
        max: Some(2),
        ..Default::default()
    };
    let Dequeued::Messages(m) = client.dequeue("q", &lease).await.unwrap() else {
        panic!()
    };
    let gone = client.queue("q").await.unwrap();
    assert_eq!(gone.inflight, 2);
    client.delete_queue("q").await.unwrap();
    for msg in &m {
        let err = client
            .ack("q", &msg.lease.as_ref().unwrap().id)
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(404));
    }
    // A new queue of the same name knows nothing of the old leases.
    client.create_queue("q", None).await.unwrap();
    let err = client
        .ack("q", &m[0].lease.as_ref().unwrap().id)
        .await
        .unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(404), Some("lease_not_found"))
    );
    assert!(client.stats().await.is_ok());
    server.shutdown().await;
}

/// `POST .../enqueue/batch` (the JSON batch with its body typed, for generated clients) adds
/// what `enqueue?batch=json` adds, keys and delay included, whatever the Content-Type; a plain
/// enqueue keeps its body as sent under every Content-Type the description names, and others.
#[tokio::test]
async fn a_typed_json_batch_is_the_json_batch_and_a_plain_body_stays_verbatim() {
    let (server, client) = server_with_queue(Config::default()).await;
    let http = reqwest::Client::new();
    let q = format!("{}/memq/server/queues/q", server.url());
    let batch = r#"["a",{"id":"k","body":"b \"quoted\""}]"#;
    let mut ids = Vec::new();
    for (path, content_type) in [
        ("enqueue?batch=json", "text/plain"),
        ("enqueue/batch", "application/json"),
        ("enqueue/batch?delay=0", "text/plain"),
    ] {
        let resp = http
            .post(format!("{q}/{path}"))
            .header("content-type", content_type)
            .body(batch)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(answer["kind"], "enqueueResult", "{path}");
        ids.push(answer["ids"][1].clone());
        // The key was taken by the first batch: the later ones add only "a".
        let (count, duplicates) = if ids.len() == 1 { (2, 0) } else { (1, 1) };
        assert_eq!(
            (&answer["count"], &answer["duplicates"]),
            (&count.into(), &duplicates.into())
        );
    }
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    let plain = "{\"not\": \"a batch\"} a=1&b=2 é\r\n";
    for content_type in [
        "application/octet-stream",
        "text/plain",
        "application/json",
        "application/x-www-form-urlencoded",
    ] {
        let resp = http
            .post(format!("{q}/enqueue"))
            .header("content-type", content_type)
            .body(plain)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{content_type}");
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(
            (&answer["kind"], &answer["body"]),
            (&"message".into(), &plain.into())
        );
    }
    let bodies: Vec<String> = client
        .peek("q", Some(100))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies[..4], ["a", "b \"quoted\"", "a", "a"]);
    assert!(
        bodies[4..].iter().all(|b| b == plain) && bodies.len() == 8,
        "{bodies:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn peek_does_not_take_items() {
    let (server, client) = server_with_queue(Config::default()).await;
    client.enqueue_lines("q", "a\nb\nc\n", None).await.unwrap();
    let peek = client.peek("q", Some(2)).await.unwrap();
    assert_eq!(
        peek.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(peek.iter().all(|m| m.lease.is_none()));
    assert_eq!(client.queue("q").await.unwrap().depth, 3);
    server.shutdown().await;
}

#[tokio::test]
async fn an_item_is_found_by_id_or_key_and_bad_lookups_say_why() {
    let (server, client) = server_with_queue(Config::default()).await;
    let keyed = EnqueueOptions {
        id: Some("order-7".into()),
        ..Default::default()
    };
    let first = client.enqueue("q", "a", &keyed).await.unwrap();
    let second = client
        .enqueue("q", "b", &EnqueueOptions::default())
        .await
        .unwrap();
    let info = client.item("q", &second.id).await.unwrap();
    assert_eq!(
        (
            info.kind.as_str(),
            info.state.as_str(),
            info.position,
            info.attempts
        ),
        ("item", "ready", Some(1), 0)
    );
    assert_eq!(info.enqueued_at, second.creation_timestamp);
    let by_key = client.item_by_key("q", "order-7").await.unwrap();
    assert_eq!(
        (by_key.id.as_str(), by_key.position),
        (first.id.as_str(), Some(0))
    );

    // Leased: the lease, with who holds it; the JSON has only the fields of its state.
    let pod = client.clone().with_consumer(Some("pod-9".into()));
    let opts = DequeueOptions {
        lease: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let Dequeued::Messages(got) = pod.dequeue("q", &opts).await.unwrap() else {
        panic!("an item")
    };
    let url = format!("{}/memq/server/queues/q/items/{}", server.url(), first.id);
    let raw: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(raw["state"], "leased");
    assert_eq!(
        raw["lease"]["id"],
        got[0].lease.as_ref().unwrap().id.as_str()
    );
    assert_eq!(raw["lease"]["consumer"], "pod-9");
    assert_eq!(raw["lease"]["itemId"], first.id.as_str());
    assert!(
        raw.get("position").is_none() && raw.get("readyAt").is_none(),
        "{raw}"
    );
    pod.ack("q", &got[0].lease.as_ref().unwrap().id)
        .await
        .unwrap();

    // Not there: 404 item_not_found, saying so; bad input: 400 naming it; no queue: 404.
    let gone = client.item("q", &first.id).await.unwrap_err();
    assert_eq!(
        (gone.status(), gone.code()),
        (Some(404), Some("item_not_found"))
    );
    let gone = client.item_by_key("q", "order-7").await.unwrap_err();
    assert_eq!(
        (gone.status(), gone.code()),
        (Some(404), Some("item_not_found"))
    );
    let bad = client.item("q", "not-an-id").await.unwrap_err();
    assert_eq!(
        (bad.status(), bad.code()),
        (Some(400), Some("invalid_parameter"))
    );
    let resp = reqwest::get(format!("{}/memq/server/queues/q/items", server.url()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert!(err["message"].as_str().unwrap().contains("key"), "{err}");
    let missing = client.item("nope", &second.id).await.unwrap_err();
    assert_eq!(missing.code(), Some("queue_not_found"));
    server.shutdown().await;
}

/// `--dedup-window` on every store (this suite also runs on Redis): a key is kept after its
/// item left, counted in `retainedKeys`, and free once the window passed.
#[tokio::test]
async fn the_dedup_window_keeps_a_key_after_its_item_left_and_then_frees_it() {
    let (server, client) = server_with_queue(Config {
        dedup_window: Duration::from_millis(800),
        ..Config::default()
    })
    .await;
    let keyed = EnqueueOptions {
        id: Some("rerun-1".into()),
        ..Default::default()
    };
    client.enqueue("q", "a", &keyed).await.unwrap();
    assert_eq!(client.queue("q").await.unwrap().retained_keys, 0);
    client
        .dequeue("q", &DequeueOptions::default())
        .await
        .unwrap();
    assert_eq!(client.queue("q").await.unwrap().retained_keys, 1);
    assert!(client.enqueue("q", "a", &keyed).await.unwrap().duplicate);
    queue_server::testing::eventually(Duration::from_secs(10), "the key is free", || async {
        let q = client.queue("q").await.map_err(|e| e.to_string())?;
        if q.retained_keys == 0 {
            Ok(())
        } else {
            Err(format!("{q:?}"))
        }
    })
    .await;
    assert!(!client.enqueue("q", "a", &keyed).await.unwrap().duplicate);

    // A window of 0: the key is free as soon as its item left.
    let (server0, client0) = server_with_queue(Config {
        dedup_window: Duration::ZERO,
        ..Config::default()
    })
    .await;
    client0.enqueue("q", "a", &keyed).await.unwrap();
    client0
        .dequeue("q", &DequeueOptions::default())
        .await
        .unwrap();
    assert_eq!(client0.queue("q").await.unwrap().retained_keys, 0);
    assert!(!client0.enqueue("q", "a", &keyed).await.unwrap().duplicate);
    server.shutdown().await;
    server0.shutdown().await;
}
