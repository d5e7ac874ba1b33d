//! Lease rules over HTTP: expiry to the front, stale ids, attempts, dead letters, extend, ack batch.

use std::time::Duration;

use memq::{DequeueOptions, Dequeued, EnqueueOptions, Message, QueueConfigPatch};
use queue_server::Config;
use queue_server::testing::{TestServer, eventually};

fn lease_for(ms: u64) -> DequeueOptions {
    DequeueOptions {
        lease: Some(Duration::from_millis(ms)),
        ..Default::default()
    }
}

async fn one(client: &memq::Client, q: &str, opts: &DequeueOptions) -> Message {
    match client.dequeue(q, opts).await.unwrap() {
        Dequeued::Messages(mut m) => m.remove(0),
        other => panic!("expected a message, got {other:?}"),
    }
}

async fn setup(config: Option<QueueConfigPatch>, items: &[&str]) -> (TestServer, memq::Client) {
    let server = TestServer::start(Config::default()).await;
    let client = server.client();
    client.create_queue("work", config.as_ref()).await.unwrap();
    for body in items {
        client
            .enqueue("work", *body, &EnqueueOptions::default())
            .await
            .unwrap();
    }
    (server, client)
}

/// Polls `GET /queues/work` until `done` holds (bounded).
async fn until(
    client: &memq::Client,
    what: &str,
    done: impl Fn(&memq::QueueStats) -> bool,
) -> memq::QueueStats {
    eventually(Duration::from_secs(10), what, || async {
        let q = client.queue("work").await.map_err(|e| e.to_string())?;
        if done(&q) {
            Ok(q)
        } else {
            Err(format!("{q:?}"))
        }
    })
    .await
}

#[tokio::test]
async fn expired_lease_returns_item_to_front() {
    let (server, client) = setup(None, &["a", "b", "c"]).await;
    let first = one(&client, "work", &lease_for(300)).await;
    assert_eq!(first.body, "a");
    let lease = first.lease.clone().expect("leased");
    assert_eq!(lease.attempt, 1);
    assert!(humantime::parse_rfc3339(&lease.expires_at).is_ok());
    let q = until(&client, "the lease to expire", |q| q.inflight == 0).await;
    assert_eq!((q.depth, q.requeued), (3, 1));
    let again = one(&client, "work", &lease_for(10_000)).await;
    assert_eq!(
        (again.body.as_str(), again.id.as_str()),
        ("a", first.id.as_str())
    );
    assert_eq!(again.lease.unwrap().attempt, 2);
    // The stale lease id answers 410 and changes nothing.
    let err = client.ack("work", &lease.id).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(410), Some("lease_expired"))
    );
    let q = client.queue("work").await.unwrap();
    assert_eq!((q.inflight, q.acked, q.depth), (1, 0, 2));
    server.shutdown().await;
}

#[tokio::test]
async fn stale_or_foreign_lease_ids_change_nothing() {
    let (server, client) = setup(None, &["a"]).await;
    let msg = one(&client, "work", &lease_for(10_000)).await;
    let lease = msg.lease.unwrap().id;
    client.ack("work", &lease).await.unwrap();
    for (what, id) in [
        ("acked", lease.as_str()),
        ("never existed", "01ARZ3NDEKTSV4RRFFQ69G5FAV"),
        ("malformed", "not-a-lease"),
    ] {
        for result in [
            client.ack("work", id).await,
            client.nack("work", id, None).await,
            client.extend("work", id, None).await.map(|_| ()),
        ] {
            let err = result.unwrap_err();
            assert_eq!(
                (err.status(), err.code()),
                (Some(404), Some("lease_not_found")),
                "{what}"
            );
        }
    }
    let q = client.queue("work").await.unwrap();
    assert_eq!((q.acked, q.depth, q.inflight, q.requeued), (1, 0, 0, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn nack_counts_attempts_and_poison_goes_to_dead_letters_then_requeues() {
    let config = QueueConfigPatch {
        max_attempts: Some(3),
        ..Default::default()
    };
    let (server, client) = setup(Some(config), &["poison", "fine"]).await;
    for attempt in 1..=3 {
        let msg = one(&client, "work", &lease_for(10_000)).await;
        assert_eq!(msg.body, "poison", "a nacked item goes back to the front");
        assert_eq!(msg.lease.as_ref().unwrap().attempt, attempt);
        client
            .nack("work", &msg.lease.unwrap().id, None)
            .await
            .unwrap();
    }
    let q = client.queue("work").await.unwrap();
    assert_eq!((q.dead, q.depth, q.requeued), (1, 1, 2));
    let dead = client.dead_letters("work", Some(10)).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].body.as_str(), dead[0].attempts), ("poison", 3));

    assert_eq!(client.requeue_dead("work").await.unwrap(), 1);
    let fine = one(&client, "work", &lease_for(10_000)).await;
    assert_eq!(fine.body, "fine");
    let again = one(&client, "work", &lease_for(10_000)).await;
    assert_eq!(again.body, "poison");
    assert_eq!(
        again.lease.as_ref().unwrap().attempt,
        1,
        "requeued dead letters start over"
    );
    client
        .nack("work", &again.lease.unwrap().id, None)
        .await
        .unwrap();
    client
        .nack("work", &fine.lease.unwrap().id, None)
        .await
        .unwrap();
    // Purge empties the dead letters; nothing is dead now, so 0.
    assert_eq!(client.purge_dead("work").await.unwrap(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn expiring_leases_use_up_attempts_too() {
    let config = QueueConfigPatch {
        max_attempts: Some(2),
        ..Default::default()
    };
    let (server, client) = setup(Some(config), &["slow"]).await;
    one(&client, "work", &lease_for(100)).await;
    until(&client, "first expiry", |q| q.inflight == 0 && q.depth == 1).await;
    one(&client, "work", &lease_for(100)).await;
    let q = until(&client, "death", |q| q.dead == 1).await;
    assert_eq!((q.depth, q.inflight, q.requeued), (0, 0, 1));
    server.shutdown().await;
}

/// `?seconds=` names the new length (the path's `{lease}` names the lease); `?lease=`, which
/// clients sent before, still works.
#[tokio::test]
async fn extend_takes_the_new_length_as_seconds_or_as_lease() {
    let (server, client) = setup(None, &["item"]).await;
    let lease = one(&client, "work", &lease_for(1_000)).await.lease.unwrap();
    let http = reqwest::Client::new();
    for (param, secs) in [("seconds", 600), ("lease", 1200)] {
        let before = std::time::SystemTime::now();
        let url = format!(
            "{}/memq/server/queues/work/leases/{}/extend?{param}={secs}",
            server.url(),
            lease.id
        );
        let resp = http.post(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{param}");
        let msg: Message = resp.json().await.unwrap();
        let expires = humantime::parse_rfc3339(&msg.lease.unwrap().expires_at).unwrap();
        let length = expires.duration_since(before).unwrap();
        // The deadline is kept on the server's monotonic clock and shown on the wall clock, in
        // whole milliseconds: the two clocks may differ by a little, never by the minutes
        // between the lengths asked for here.
        let at_least = Duration::from_secs(secs) - Duration::from_secs(1);
        assert!(length >= at_least, "{param}={secs}: {length:?}");
        assert!(
            length < Duration::from_secs(secs + 60),
            "{param}={secs}: {length:?}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn extend_keeps_a_slow_item_from_being_handed_out_twice() {
    let (server, client) = setup(None, &["long"]).await;
    let msg = one(&client, "work", &lease_for(400)).await;
    let lease = msg.lease.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let extended = client
            .extend("work", &lease.id, Some(Duration::from_millis(400)))
            .await
            .unwrap();
        assert_eq!(extended.body, "long");
        assert_eq!(extended.lease.as_ref().unwrap().id, lease.id);
        let other = client.dequeue("work", &lease_for(1_000)).await.unwrap();
        assert!(
            matches!(
                other,
                Dequeued::Empty {
                    depth: 0,
                    inflight: 1,
                    ..
                }
            ),
            "{other:?}"
        );
    }
    client.ack("work", &lease.id).await.unwrap();
    let q = client.queue("work").await.unwrap();
    assert_eq!((q.acked, q.requeued, q.inflight), (1, 0, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn lease_true_uses_the_queue_lease_and_batch_ack_reports_each_id() {
    let config = QueueConfigPatch {
        lease_seconds: Some(7),
        ..Default::default()
    };
    let (server, client) = setup(Some(config), &["a", "b", "c"]).await;
    let opts = DequeueOptions {
        lease_default: true,
        max: Some(3),
        ..Default::default()
    };
    let Dequeued::Messages(msgs) = client.dequeue("work", &opts).await.unwrap() else {
        panic!("expected messages")
    };
    assert_eq!(msgs.len(), 3);
    let expires = humantime::parse_rfc3339(&msgs[0].lease.as_ref().unwrap().expires_at).unwrap();
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left > Duration::from_secs(5) && left <= Duration::from_secs(7),
        "{left:?}"
    );
    let mut ids: Vec<String> = msgs
        .iter()
        .map(|m| m.lease.as_ref().unwrap().id.clone())
        .collect();
    ids.push("bogus".into());
    let result = client.ack_batch("work", &ids).await.unwrap();
    assert_eq!(result.acked, 3);
    let statuses: Vec<u16> = result.results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 404]);
    let q = client.queue("work").await.unwrap();
    assert_eq!((q.acked, q.inflight), (3, 0));
    server.shutdown().await;
}

/// The batch routes over HTTP, as the consumer calls them: one outcome per lease id in the
/// order given, an extend's new end, and items released ahead of the rest.
#[tokio::test]
async fn batch_nack_extend_and_release_answer_lease_by_lease() {
    let (server, client) = setup(None, &["a", "b", "c", "d"]).await;
    let opts = DequeueOptions {
        max: Some(4),
        ..lease_for(10_000)
    };
    let Dequeued::Messages(held) = client.dequeue("work", &opts).await.unwrap() else {
        panic!("items")
    };
    let leases: Vec<String> = held.iter().map(|m| m.lease.clone().unwrap().id).collect();
    let first_end = held[0].lease.clone().unwrap().expires_at;

    let mut ids = leases.clone();
    ids.push("bogus".into());
    let extended = client
        .extend_batch("work", &ids, Some(Duration::from_secs(600)))
        .await
        .unwrap();
    assert_eq!(
        (extended.kind.as_str(), extended.extended),
        ("extendResult", 4)
    );
    let statuses: Vec<u16> = extended.results.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 404]);
    let end = extended.results[0].expires_at.clone().expect("a new end");
    assert!(end > first_end, "{first_end} then {end}");
    assert_eq!(extended.results[4].code.as_deref(), Some("lease_not_found"));
    assert!(extended.results[4].expires_at.is_none());

    let released = client.release("work", &leases[2..]).await.unwrap();
    assert_eq!(
        (released.kind.as_str(), released.released),
        ("releaseResult", 2)
    );
    let nacked = client
        .nack_batch("work", &[leases[1].clone(), leases[2].clone()], None)
        .await
        .unwrap();
    assert_eq!((nacked.kind.as_str(), nacked.nacked), ("nackResult", 1));
    assert_eq!(nacked.results[1].status, 404);
    let opts = DequeueOptions {
        max: Some(10),
        ..lease_for(10_000)
    };
    let Dequeued::Messages(back) = client.dequeue("work", &opts).await.unwrap() else {
        panic!("items")
    };
    let seen: Vec<(&str, u32)> = back
        .iter()
        .map(|m| (m.body.as_str(), m.lease.as_ref().unwrap().attempt))
        .collect();
    assert_eq!(seen, [("b", 2), ("c", 1), ("d", 1)]);
    server.shutdown().await;
}

#[tokio::test]
async fn nack_with_delay_keeps_the_item_delayed_first() {
    let (server, client) = setup(None, &["x"]).await;
    let msg = one(&client, "work", &lease_for(10_000)).await;
    client
        .nack(
            "work",
            &msg.lease.unwrap().id,
            Some(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    let q = client.queue("work").await.unwrap();
    assert_eq!((q.depth, q.delayed, q.inflight), (0, 1, 0));
    let q = until(&client, "the delay to pass", |q| q.depth == 1).await;
    assert_eq!(q.delayed, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn the_lease_list_names_each_consumer_and_refuses_bad_names() {
    let (server, anonymous) = setup(None, &["a", "b", "c"]).await;
    let pod = anonymous
        .clone()
        .with_consumer(Some("consumers-x7k2p".into()));
    let taken = one(&pod, "work", &lease_for(60_000)).await;
    let other = one(&anonymous, "work", &lease_for(60_000)).await;

    let list = anonymous.leases("work", None).await.unwrap();
    assert_eq!(list.kind, "leaseList");
    let seen: Vec<(&str, &str, u32, Option<&str>)> = list
        .leases
        .iter()
        .map(|l| {
            (
                l.id.as_str(),
                l.item_id.as_str(),
                l.attempt,
                l.consumer.as_deref(),
            )
        })
        .collect();
    let lease = |m: &Message| m.lease.clone().unwrap();
    assert_eq!(
        seen,
        [
            (
                lease(&taken).id.as_str(),
                taken.id.as_str(),
                1,
                Some("consumers-x7k2p")
            ),
            (lease(&other).id.as_str(), other.id.as_str(), 1, None),
        ]
    );
    let first = &list.leases[0];
    assert_eq!(first.expires_at, lease(&taken).expires_at);
    let leased_at = humantime::parse_rfc3339(&first.leased_at).unwrap();
    let expires_at = humantime::parse_rfc3339(&first.expires_at).unwrap();
    let held_for = expires_at.duration_since(leased_at).unwrap();
    assert!(
        (Duration::from_secs(59)..=Duration::from_secs(61)).contains(&held_for),
        "{held_for:?}"
    );
    assert_eq!(
        anonymous
            .leases("work", Some(1))
            .await
            .unwrap()
            .leases
            .len(),
        1
    );

    // Bad input: 400 naming what is wrong; a missing queue: 404. Nothing is handed out.
    let http = reqwest::Client::new();
    let base = format!("{}/memq/server/queues/work", server.url());
    for (value, why) in [
        ("x".repeat(254), "1 to 253 bytes"),
        ("tab\there".to_string(), "printable ASCII"),
    ] {
        let resp = http
            .post(format!("{base}/dequeue?lease=30"))
            .header("X-Memq-Consumer", value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let err: serde_json::Value = resp.json().await.unwrap();
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains("X-Memq-Consumer") && message.contains(why),
            "{message}"
        );
    }
    for limit in ["0", "1001", "x"] {
        let resp = http
            .get(format!("{base}/leases?limit={limit}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "limit={limit}");
    }
    let missing = anonymous.leases("nope", None).await.unwrap_err();
    assert_eq!(missing.status(), Some(404));
    assert_eq!(anonymous.queue("work").await.unwrap().inflight, 2);
    server.shutdown().await;
}
