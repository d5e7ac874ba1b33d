//! The consumer binary against a real queue server: draining, crashes, poison items, signals,
//! outages and kuard's plain dequeue. Every wait has a deadline; conditions are polled, not
//! slept on.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn version_names_the_release_and_the_commit() {
    queue_server::testing::checked_version(env!("CARGO_BIN_EXE_consumer"), "consumer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_consumers_drain_ten_thousand_items_exactly_once() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("five");
    let out = scratch.path("record");
    let all = items(10_000);
    load(&client, "bulk", None, &all).await;

    let mut consumers: Vec<Consumer> = (0..5)
        .map(|i| {
            let mut args = vec!["--concurrency", "2", "--lease", "10s"];
            args.extend(RECORD);
            Consumer::start(
                &scratch,
                &format!("c{i}"),
                &server.base_url(),
                "bulk",
                &args,
                &out,
            )
        })
        .collect();
    for c in &mut consumers {
        let status = c.exit(LIMIT).await;
        assert_eq!(status.code(), Some(0), "{} failed:\n{}", c.name, c.log());
        assert!(c.log().contains("consumer summary"), "{}", c.log());
    }

    let counts = record_counts(&out);
    assert_eq!(counts.len(), 10_000, "distinct items processed");
    assert!(
        counts.values().all(|&n| n == 1),
        "an item was processed twice"
    );
    assert!(all.iter().all(|i| counts.contains_key(i)));
    let q = client.queue("bulk").await.unwrap();
    assert_eq!(
        (q.acked, q.inflight, q.depth, q.dead),
        (10_000, 0, 0, 0),
        "{q:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_of_a_killed_consumer_come_back_after_their_lease_and_get_done() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("killed");
    let out = scratch.path("record");
    load(&client, "crash", None, &items(20)).await;
    let base = server.base_url();

    // The victim takes 5 items and would work on them for an hour, heartbeating all along.
    let mut victim = Consumer::start(
        &scratch,
        "victim",
        &base,
        "crash",
        &["--lease", "2s", "--concurrency", "5", "--work", "sleep=1h"],
        &out,
    );
    eventually("the victim to hold 5 items", LIMIT, || async {
        (client.queue("crash").await.unwrap().inflight == 5).then_some(())
    })
    .await;

    let mut args = vec!["--lease", "2s", "--concurrency", "2"];
    args.extend(RECORD);
    let mut others: Vec<Consumer> = (0..2)
        .map(|i| Consumer::start(&scratch, &format!("other{i}"), &base, "crash", &args, &out))
        .collect();
    eventually("the others to do the 15 free items", LIMIT, || async {
        (record_counts(&out).len() == 15).then_some(())
    })
    .await;
    // Heartbeats keep the victim's leases alive past their 2s length (a window to observe, not
    // a wait for something to happen)...
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let q = client.queue("crash").await.unwrap();
    assert_eq!((q.inflight, q.depth, q.requeued), (5, 0, 0), "{q:?}");
    // ...and nothing is finished while they are held, so nobody may leave.
    for c in &mut others {
        assert!(
            c.running(),
            "{} exited while items were still held:\n{}",
            c.name,
            c.log()
        );
    }

    victim.child.kill().await.unwrap();
    for c in &mut others {
        let status = c.exit(LIMIT).await;
        assert_eq!(status.code(), Some(0), "{}:\n{}", c.name, c.log());
    }
    let counts = record_counts(&out);
    assert_eq!(counts.len(), 20, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    let q = client.queue("crash").await.unwrap();
    assert_eq!((q.acked, q.inflight, q.depth), (20, 0, 0), "{q:?}");
    assert!(
        q.requeued >= 5,
        "the held items came back through lease expiry: {q:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_item_ends_in_dead_letters_and_the_rest_finish() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("poison");
    let out = scratch.path("record");
    let mut all = items(30);
    all.insert(10, "poison".into());
    let config = memq::QueueConfigPatch {
        max_attempts: Some(3),
        ..Default::default()
    };
    load(&client, "jobs", Some(config), &all).await;

    let script = r#"read -r body; [ "$body" = poison ] && exit 3; echo "$body" >> "$OUT""#;
    let args = [
        "--retry-delay",
        "50ms",
        "--concurrency",
        "2",
        "--exec",
        "sh",
        "-c",
        script,
    ];
    let mut consumers: Vec<Consumer> = (0..2)
        .map(|i| {
            Consumer::start(
                &scratch,
                &format!("c{i}"),
                &server.base_url(),
                "jobs",
                &args,
                &out,
            )
        })
        .collect();
    for c in &mut consumers {
        let status = c.exit(LIMIT).await;
        assert_eq!(status.code(), Some(0), "{}:\n{}", c.name, c.log());
    }

    let counts = record_counts(&out);
    assert_eq!(counts.len(), 30);
    assert!(!counts.contains_key("poison"));
    let dead = client.dead_letters("jobs", None).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].body.as_str(), dead[0].attempts), ("poison", 3));
    let q = client.queue("jobs").await.unwrap();
    assert_eq!(
        (q.acked, q.dead, q.inflight, q.depth, q.delayed),
        (30, 1, 0, 0, 0),
        "{q:?}"
    );
    let logs: String = consumers.iter().map(Consumer::log).collect();
    assert!(logs.contains("work failed"), "{logs}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_held_items_back_at_once_and_exits_143() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("sigterm");
    let out = scratch.path("record");
    load(&client, "term", None, &items(10)).await;

    // A 30s lease: only a nack (not an expiry) can bring the items back within the test's wait.
    let mut c = Consumer::start(
        &scratch,
        "c",
        &server.base_url(),
        "term",
        &["--lease", "30s", "--concurrency", "3", "--work", "sleep=1h"],
        &out,
    );
    eventually("3 items in flight", LIMIT, || async {
        (client.queue("term").await.unwrap().inflight == 3).then_some(())
    })
    .await;
    c.terminate();
    let status = c.exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(143), "{}", c.log());

    let q = client.queue("term").await.unwrap();
    assert_eq!(
        (q.depth, q.inflight, q.acked, q.requeued),
        (10, 0, 0, 3),
        "{q:?}"
    );
    let log = c.log();
    assert!(
        log.contains("returned=3") && log.contains("interrupted=true"),
        "{log}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_grace_lets_work_in_progress_finish() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("grace");
    let out = scratch.path("record");
    load(&client, "grace", None, &items(10)).await;

    let script = r#"read -r body; touch "$OUT.started"; sleep 1; echo "$body" >> "$OUT""#;
    let args = [
        "--grace",
        "20s",
        "--concurrency",
        "2",
        "--exec",
        "sh",
        "-c",
        script,
    ];
    let mut c = Consumer::start(&scratch, "c", &server.base_url(), "grace", &args, &out);
    let started = scratch.path("record.started");
    eventually("work to start", LIMIT, || async {
        started.exists().then_some(())
    })
    .await;
    c.terminate();
    let status = c.exit(LIMIT).await;
    assert_eq!(status.code(), Some(143), "{}", c.log());

    // What was being worked on finished and was acked; nothing else was taken or lost.
    let done = record_counts(&out).len() as u64;
    let q = client.queue("grace").await.unwrap();
    assert!(done >= 1, "{q:?}");
    assert_eq!(
        (q.acked, q.inflight, q.depth),
        (done, 0, 10 - done),
        "{q:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kuard_mode_dequeues_plainly_and_exits_at_the_first_empty_answer() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("kuard");
    let out = scratch.path("record");
    // The seed's way: PUT the queue, then one plain enqueue per item.
    client.create_queue("keygen", None).await.unwrap();
    for i in 0..25 {
        client
            .enqueue("keygen", format!("work-item-{i}"), &Default::default())
            .await
            .unwrap();
    }

    let mut args = vec!["--kuard"];
    args.extend(RECORD);
    let mut c = Consumer::start(&scratch, "kuard", &server.base_url(), "keygen", &args, &out);
    let status = c.exit(LIMIT).await;
    assert_eq!(status.code(), Some(0), "{}", c.log());

    let counts = record_counts(&out);
    assert_eq!(counts.len(), 25);
    assert!(counts.values().all(|&n| n == 1));
    // kuard's dequeue removes items for good: nothing was leased or acked.
    let q = client.queue("keygen").await.unwrap();
    assert_eq!(
        (q.dequeued, q.acked, q.inflight, q.depth, q.requeued),
        (25, 0, 0, 0, 0),
        "{q:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_mode_waits_for_leases_but_until_empty_leaves_like_kuard() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("until");
    let out = scratch.path("record");
    load(&client, "q", None, &items(1)).await;
    let lease = client
        .dequeue(
            "q",
            &memq::DequeueOptions {
                lease: Some(Duration::from_secs(60)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let memq::Dequeued::Messages(held) = lease else {
        panic!("{lease:?}")
    };

    let base = server.base_url();
    let mut empty = Consumer::start(
        &scratch,
        "empty",
        &base,
        "q",
        &["--until", "empty", "--work", "noop"],
        &out,
    );
    let mut finished = Consumer::start(
        &scratch,
        "finished",
        &base,
        "q",
        &["--work", "noop", "--wait", "1s"],
        &out,
    );
    assert_eq!(empty.exit(LIMIT).await.code(), Some(0), "{}", empty.log());
    // An item is still leased by someone else: the default consumer must not call it done. Two
    // more empty answers (204) than when "empty" left, so "finished" has had at least one.
    let empties = || async {
        let series = "memq_http_request_duration_seconds_count{method=\"POST\",\
                      route=\"/memq/server/queues/{queue}/dequeue\",status=\"204\"}";
        queue_server::testing::metric(&server.url(), series).await
    };
    let before = empties().await;
    eventually("empty answers to \"finished\"", LIMIT, || async {
        (empties().await >= before + 2.0).then_some(())
    })
    .await;
    assert!(finished.running(), "{}", finished.log());
    let lease_id = &held[0].lease.as_ref().unwrap().id;
    client.ack("q", lease_id).await.unwrap();
    assert_eq!(
        finished.exit(LIMIT).await.code(),
        Some(0),
        "{}",
        finished.log()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_item_is_not_mistaken_for_a_finished_queue() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("delayed");
    let out = scratch.path("record");
    client.create_queue("later", None).await.unwrap();
    let opts = memq::EnqueueOptions {
        delay: Some(Duration::from_secs(2)),
        id: None,
    };
    client.enqueue("later", "soon", &opts).await.unwrap();
    // A 204 now says depth 0 and inflight 0, though the item is only delayed.
    let mut args = vec!["--wait", "1s"];
    args.extend(RECORD);
    let mut c = Consumer::start(&scratch, "c", &server.base_url(), "later", &args, &out);
    assert_eq!(c.exit(LIMIT).await.code(), Some(0), "{}", c.log());
    assert_eq!(record_counts(&out).len(), 1, "{}", c.log());
    assert_eq!(client.queue("later").await.unwrap().acked, 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_started_before_the_producer_waits_for_the_work() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("early");
    let out = scratch.path("record");
    client.create_queue("early", None).await.unwrap();
    let mut args = vec!["--wait", "2s"];
    args.extend(RECORD);
    let mut c = Consumer::start(&scratch, "c", &server.base_url(), "early", &args, &out);
    eventually("the consumer to wait for a producer", LIMIT, || async {
        c.log().contains("waiting for a producer").then_some(())
    })
    .await;
    assert!(c.running(), "{}", c.log());
    load(&client, "early", None, &items(3)).await;
    assert_eq!(c.exit(LIMIT).await.code(), Some(0), "{}", c.log());
    assert_eq!(record_counts(&out).len(), 3);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_items_stops_after_that_many() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("max");
    let out = scratch.path("record");
    load(&client, "q", None, &items(10)).await;
    let mut args = vec!["--max-items", "4", "--concurrency", "3"];
    args.extend(RECORD);
    let mut c = Consumer::start(&scratch, "c", &server.base_url(), "q", &args, &out);
    assert_eq!(c.exit(LIMIT).await.code(), Some(0), "{}", c.log());
    assert_eq!(record_counts(&out).len(), 4);
    let q = client.queue("q").await.unwrap();
    assert_eq!((q.acked, q.depth, q.inflight), (4, 6, 0), "{q:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retried_then_given_up_with_exit_1() {
    let scratch = Scratch::new("unreachable");
    let base = format!("http://127.0.0.1:{}/memq/server", closed_port());
    let mut c = Consumer::start(
        &scratch,
        "c",
        &base,
        "q",
        &["--give-up-after", "1s", "--work", "noop"],
        &scratch.path("r"),
    );
    let status = c.exit(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(1), "{}", c.log());
    let log = c.log();
    assert!(
        log.contains("retrying") && log.contains("Connection refused"),
        "{log}"
    );
    assert!(log.contains("gave up after"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_rides_out_a_late_server_and_a_missing_queue() {
    let scratch = Scratch::new("late");
    let out = scratch.path("record");
    let port = closed_port();
    let base = format!("http://127.0.0.1:{port}/memq/server");
    let mut args = vec!["--give-up-after", "60s", "--wait", "1s"];
    args.extend(RECORD);
    let mut c = Consumer::start(&scratch, "c", &base, "late", &args, &out);
    eventually("a retry to be logged", LIMIT, || async {
        c.log().contains("Connection refused").then_some(())
    })
    .await;

    // The server comes up on that port; the queue only appears a moment later.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(queue_server::serve(
        listener,
        queue_server::Config::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let client = memq::Client::new(base.clone()).unwrap();
    eventually("the consumer to wait for the queue", LIMIT, || async {
        c.log().contains("queue_not_found").then_some(())
    })
    .await;
    load(&client, "late", None, &items(5)).await;

    assert_eq!(c.exit(LIMIT).await.code(), Some(0), "{}", c.log());
    assert_eq!(record_counts(&out).len(), 5);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_program_that_does_not_exist_is_a_usage_error() {
    let server = server().await;
    let scratch = Scratch::new("noexec");
    let args = ["--exec", "memq-no-such-program", "x"];
    let mut c = Consumer::start(
        &scratch,
        "c",
        &server.base_url(),
        "q",
        &args,
        &scratch.path("r"),
    );
    assert_eq!(c.exit(LIMIT).await.code(), Some(2), "{}", c.log());
    assert!(c.log().contains("not found on PATH"), "{}", c.log());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_sent_and_a_wrong_one_fails_fast() {
    let config = queue_server::Config {
        token: Some("s3cret".into()),
        ..Default::default()
    };
    let server = queue_server::testing::TestServer::start(config).await;
    let client = server.client().with_token(Some("s3cret".into()));
    let scratch = Scratch::new("token");
    let out = scratch.path("record");
    load(&client, "q", None, &items(3)).await;
    let base = server.base_url();

    let mut wrong = Consumer::start(
        &scratch,
        "wrong",
        &base,
        "q",
        &["--token", "nope", "--work", "noop"],
        &out,
    );
    assert_eq!(wrong.exit(LIMIT).await.code(), Some(1), "{}", wrong.log());
    assert!(wrong.log().contains("401"), "{}", wrong.log());

    let mut args = vec!["--token", "s3cret"];
    args.extend(RECORD);
    let mut right = Consumer::start(&scratch, "right", &base, "q", &args, &out);
    assert_eq!(right.exit(LIMIT).await.code(), Some(0), "{}", right.log());
    assert_eq!(record_counts(&out).len(), 3);

    // --token-file: the token read from a file (a mounted Secret's key), here with a line break.
    load(&client, "q", None, &items(2)).await;
    let file = scratch.path("token");
    std::fs::write(&file, "s3cret\n").unwrap();
    let file_arg = file.display().to_string();
    let mut args = vec!["--token-file", file_arg.as_str()];
    args.extend(RECORD);
    let mut from_file = Consumer::start(&scratch, "file", &base, "q", &args, &out);
    assert_eq!(
        from_file.exit(LIMIT).await.code(),
        Some(0),
        "{}",
        from_file.log()
    );
    assert_eq!(client.queue("q").await.unwrap().acked, 5);

    // An empty file: a usage error that says what to do.
    std::fs::write(&file, "").unwrap();
    let mut empty = Consumer::start(
        &scratch,
        "empty",
        &base,
        "q",
        &["--token-file", file_arg.as_str(), "--work", "noop"],
        &out,
    );
    assert_eq!(empty.exit(LIMIT).await.code(), Some(2), "{}", empty.log());
    assert!(
        empty
            .log()
            .contains("it is empty; write the bearer token into it"),
        "{}",
        empty.log()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_prints_one_key_per_item() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("keygen");
    load(
        &client,
        "keygen",
        None,
        &["work-item-0".to_string(), "work-item-1".to_string()],
    )
    .await;
    let mut c = Consumer::start(
        &scratch,
        "c",
        &server.base_url(),
        "keygen",
        &["--work", "keygen=1000"],
        &scratch.path("r"),
    );
    assert_eq!(c.exit(LIMIT).await.code(), Some(0), "{}", c.log());
    let stdout = std::fs::read_to_string(scratch.path("c.out")).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines.iter().any(|l| l.starts_with("work-item-0: key ")),
        "{stdout}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_an_https_server_with_ca_cert_and_says_what_to_do_without_it() {
    let scratch = Scratch::new("https");
    let ca = queue_server::testing::TestCa::new();
    let (server, ca_file) = ca.https_server(&scratch.dir).await;
    let base = server.base_url();
    assert!(base.starts_with("https://"));
    let client = memq::Client::new_trusting(&base, Some(&ca_file)).unwrap();
    let out = scratch.path("record");
    load(&client, "q", None, &items(3)).await;

    let mut untrusting = Consumer::start(
        &scratch,
        "untrusting",
        &base,
        "q",
        &["--work", "noop"],
        &out,
    );
    let status = untrusting.exit(LIMIT).await;
    assert_eq!(status.code(), Some(1), "{}", untrusting.log());
    assert!(
        untrusting.log().contains("not trusted: pass --ca-cert"),
        "{}",
        untrusting.log()
    );

    let mut args = vec!["--ca-cert", ca_file.to_str().unwrap()];
    args.extend(RECORD);
    let mut trusting = Consumer::start(&scratch, "trusting", &base, "q", &args, &out);
    assert_eq!(
        trusting.exit(LIMIT).await.code(),
        Some(0),
        "{}",
        trusting.log()
    );
    assert_eq!(record_counts(&out).len(), 3);
    server.shutdown().await;
}
