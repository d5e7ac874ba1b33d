//! Prefetch and batched acks against a real queue server: items leased ahead into a buffer,
//! acks and extends sent in batches, the buffer given back unstarted on SIGTERM, and nothing
//! lost when a consumer with a full buffer is killed.

mod common;

use std::time::Duration;

use common::*;
use queue_server::testing::metric;

const LIMIT: Duration = Duration::from_secs(120);

/// Requests the server answered with `status` on `route` (a pattern of the route table).
async fn requests(url: &str, route: &str, status: u16) -> f64 {
    let series = format!(
        "memq_http_request_duration_seconds_count{{method=\"POST\",route=\"/memq/server/queues/{{queue}}{route}\",status=\"{status}\"}}"
    );
    metric(url, &series).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetching_consumer_leases_in_batches_and_acks_in_batches() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("batches");
    load(&client, "bulk", None, &items(1000)).await;
    let mut c = Consumer::start(
        &scratch,
        "c",
        &server.base_url(),
        "bulk",
        &["--prefetch", "1000", "--work", "noop"],
        &scratch.path("unused"),
    );
    assert_eq!(c.exit(LIMIT).await.code(), Some(0), "{}", c.log());
    let q = client.queue("bulk").await.unwrap();
    assert_eq!(
        (q.acked, q.inflight, q.depth, q.requeued),
        (1000, 0, 0, 0),
        "{q:?}"
    );
    let url = server.url();
    // One request leased all 1000 (the buffer and the free slot, at most 1000 per request).
    assert_eq!(requests(&url, "/dequeue", 200).await, 1.0);
    // The acks went 100 to a request (the slot works through what it has without waiting, so
    // every batch fills before its few milliseconds are up), none one by one.
    assert_eq!(requests(&url, "/leases/{lease}/ack", 200).await, 0.0);
    let batches = requests(&url, "/ack", 200).await;
    assert!((10.0..=20.0).contains(&batches), "{batches} ack requests");
    assert!(c.log().contains("done=1000"), "{}", c.log());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_leases_are_extended_together_while_they_wait() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("extend");
    let out = scratch.path("record");
    load(&client, "slow", None, &items(8)).await;
    // 8 items of 500 ms each, one at a time: the last waits 3.5 s in the buffer, past its 2 s
    // lease, unless the consumer extends it.
    let mut args = vec!["--prefetch", "7", "--lease", "2s"];
    args.extend([
        "--exec",
        "sh",
        "-c",
        r#"sleep 0.5; read -r body; echo "$body" >> "$OUT""#,
    ]);
    let mut c = Consumer::start(&scratch, "c", &server.base_url(), "slow", &args, &out);
    eventually("the consumer to hold all 8", LIMIT, || async {
        (client.queue("slow").await.unwrap().inflight == 8).then_some(())
    })
    .await;
    assert_eq!(c.exit(LIMIT).await.code(), Some(0), "{}", c.log());
    let counts = record_counts(&out);
    assert_eq!(counts.len(), 8, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let q = client.queue("slow").await.unwrap();
    assert_eq!((q.acked, q.requeued), (8, 0), "no lease ran out: {q:?}");
    let url = server.url();
    assert!(requests(&url, "/extend", 200).await >= 1.0);
    assert_eq!(requests(&url, "/leases/{lease}/extend", 200).await, 0.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_releases_the_buffer_unstarted_and_nacks_the_work_in_progress() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("release");
    let all = items(100);
    load(&client, "term", None, &all).await;
    let mut c = Consumer::start(
        &scratch,
        "c",
        &server.base_url(),
        "term",
        &[
            "--prefetch",
            "20",
            "--concurrency",
            "2",
            "--work",
            "sleep=1h",
        ],
        &scratch.path("unused"),
    );
    eventually("2 items in work and 20 in the buffer", LIMIT, || async {
        (client.queue("term").await.unwrap().inflight == 22).then_some(())
    })
    .await;
    c.terminate();
    let status = c.exit(LIMIT).await;
    assert_eq!(status.code(), Some(143), "{}", c.log());
    let q = client.queue("term").await.unwrap();
    assert_eq!(
        (q.depth, q.inflight, q.dead, q.requeued),
        (100, 0, 0, 22),
        "{q:?}"
    );
    assert!(
        c.log().contains("released=20"),
        "the buffer went back in one release:\n{}",
        c.log()
    );
    // The released items' delivery did not count; the two in progress were nacked (counted).
    let mut attempts = [0u32; 2];
    for message in client.peek("term", Some(100)).await.unwrap() {
        let found = client.item("term", &message.id).await.unwrap();
        attempts[found.attempts as usize] += 1;
    }
    assert_eq!(attempts, [98, 2]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_with_a_full_buffer_loses_nothing() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("sigkill");
    let out = scratch.path("record");
    load(&client, "crash", None, &items(300)).await;
    let base = server.base_url();
    let mut victim = Consumer::start(
        &scratch,
        "victim",
        &base,
        "crash",
        &["--prefetch", "100", "--lease", "2s", "--work", "sleep=1h"],
        &out,
    );
    eventually("the victim's buffer to fill", LIMIT, || async {
        (client.queue("crash").await.unwrap().inflight == 101).then_some(())
    })
    .await;
    // No SIGTERM: nothing is given back, the leases must run out.
    victim.child.kill().await.unwrap();
    let mut args = vec!["--prefetch", "20", "--lease", "2s", "--concurrency", "4"];
    args.extend(RECORD);
    let mut other = Consumer::start(&scratch, "other", &base, "crash", &args, &out);
    assert_eq!(other.exit(LIMIT).await.code(), Some(0), "{}", other.log());
    let counts = record_counts(&out);
    assert_eq!(counts.len(), 300, "every item done");
    assert!(counts.values().all(|&n| n == 1), "an item was done twice");
    let q = client.queue("crash").await.unwrap();
    assert_eq!(
        (q.acked, q.inflight, q.depth, q.dead),
        (300, 0, 0, 0),
        "{q:?}"
    );
    assert!(
        q.requeued >= 101,
        "the held items came back by lease expiry: {q:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_prefetch_beyond_what_one_request_can_lease_is_a_usage_error() {
    let scratch = Scratch::new("usage");
    let port = closed_port();
    let base = format!("http://127.0.0.1:{port}/memq/server");
    for (args, says) in [
        (&["--prefetch", "1001"][..], "at most 1000"),
        (&["--prefetch=x"][..], "--prefetch"),
        (
            &["--kuard", "--prefetch", "5"][..],
            "--prefetch with --kuard",
        ),
    ] {
        let mut c = Consumer::start(&scratch, "c", &base, "q", args, &scratch.path("unused"));
        assert_eq!(c.exit(LIMIT).await.code(), Some(2), "{args:?}: {}", c.log());
        assert!(c.log().contains(says), "{args:?}: {}", c.log());
    }
}
