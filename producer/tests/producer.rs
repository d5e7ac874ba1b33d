//! The producer binary against a real queue server (in this process, on 127.0.0.1:0): loading,
//! idempotent reruns, JSON Lines, stdin, --wait, --delay, and bad input.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use queue_server::testing::TestServer;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const LIMIT: Duration = Duration::from_secs(120);

async fn server() -> TestServer {
    TestServer::start(queue_server::Config::default()).await
}

fn scratch_file(name: &str, content: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "memq-producer-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, content).unwrap();
    path
}

fn producer(base: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_producer"));
    cmd.args(["--server", base])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("MEMQ_TOKEN")
        .env_remove("MEMQ_TOKEN_FILE")
        .env_remove("MEMQ_QUEUE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::time::timeout(LIMIT, cmd.output())
        .await
        .expect("producer finished in time")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit code and stderr of a run that must fail with one clear line and no panic.
fn assert_one_line_error(out: &Output, code: i32, needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(needle), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn version_names_the_release_and_the_commit() {
    queue_server::testing::checked_version(env!("CARGO_BIN_EXE_producer"), "producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_the_seed_range_into_a_new_queue() {
    let server = server().await;
    let out = run(producer(
        &server.base_url(),
        &["--queue", "keygen", "--create", "work-item-{0..99}"],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("sent 100 items (100 added, 0 duplicates) in "),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("items/s"));

    let client = server.client();
    let q = client.queue("keygen").await.unwrap();
    assert_eq!((q.depth, q.enqueued), (100, 100));
    let first = client.peek("keygen", Some(3)).await.unwrap();
    let bodies: Vec<_> = first.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["work-item-0", "work-item-1", "work-item-2"]);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_rerun_after_a_partial_load_adds_each_item_once() {
    let server = server().await;
    let client = server.client();
    let base = server.base_url();
    let all: Vec<String> = (0..5000).map(|i| format!("job-{i}")).collect();
    // Two identical lines are two items: keys come from the line number, not only the text.
    let file = scratch_file("items.txt", &(all[..2000].join("\n") + "\njob-1\n"));
    let path = file.to_str().unwrap();
    let args = [
        "--queue",
        "jobs",
        "--create",
        "--idempotent",
        "--batch",
        "300",
        "--file",
        path,
    ];

    // The crash: only the first 2000 lines made it before the producer died.
    let out = run(producer(&base, &args)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(client.queue("jobs").await.unwrap().enqueued, 2001);

    // The rerun reads the whole file (same path, same first lines, the rest behind them).
    let mut lines = all[..2000].to_vec();
    lines.push("job-1".into());
    lines.extend_from_slice(&all[2000..]);
    std::fs::write(&file, lines.join("\n")).unwrap();
    let out = run(producer(&base, &args)).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("sent 5001 items (3000 added, 2001 duplicates)"),
        "{}",
        text(&out.stdout)
    );

    // And once more: nothing new.
    let out = run(producer(&base, &args)).await;
    assert!(
        text(&out.stdout).starts_with("sent 5001 items (0 added, 5001 duplicates)"),
        "{}",
        text(&out.stdout)
    );

    let q = client.queue("jobs").await.unwrap();
    assert_eq!((q.depth, q.enqueued), (5001, 5001), "{q:?}");
    // Take everything out and count: each line exactly once.
    let mut seen = std::collections::BTreeMap::new();
    let opts = memq::DequeueOptions {
        max: Some(1000),
        ..Default::default()
    };
    while let memq::Dequeued::Messages(batch) = client.dequeue("jobs", &opts).await.unwrap() {
        for m in batch {
            *seen.entry(m.body).or_insert(0) += 1;
        }
    }
    assert_eq!(seen.len(), 5000);
    assert_eq!(seen["job-1"], 2, "the file has job-1 on two lines");
    assert!(seen.iter().all(|(body, &n)| n == 1 || body == "job-1"));
    std::fs::remove_file(file).unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_carry_keys_documents_and_line_breaks() {
    let server = server().await;
    let lines = [
        r#""plain""#,
        r#"{"id":"k1","body":"first"}"#,
        r#"{"id":"k1","body":"again"}"#,
        r#"{"body":"two\nlines"}"#,
        r#"{"user":7}"#,
        "",
    ];
    let file = scratch_file("items.jsonl", &lines.join("\n"));
    let out = run(producer(
        &server.base_url(),
        &[
            "-q",
            "docs",
            "--create",
            "--json-lines",
            file.to_str().unwrap(),
        ],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("sent 5 items (4 added, 1 duplicates)"),
        "{}",
        text(&out.stdout)
    );
    let bodies: Vec<String> = server
        .client()
        .peek("docs", Some(10))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["plain", "first", "two\nlines", r#"{"user":7}"#]);
    std::fs::remove_file(file).unwrap();
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_items_from_stdin() {
    let server = server().await;
    let mut cmd = producer(&server.base_url(), &["-q", "in", "--create", "--file", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input: String = (0..2500).map(|i| format!("line {i}\n")).collect();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(server.client().queue("in").await.unwrap().depth, 2500);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_passes_through_to_the_server() {
    let server = server().await;
    let out = run(producer(
        &server.base_url(),
        &["-q", "later", "--create", "--delay", "5m", "a", "b"],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let q = server.client().queue("later").await.unwrap();
    assert_eq!((q.depth, q.delayed), (0, 2), "{q:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_follows_the_queue_until_it_is_finished() {
    let server = server().await;
    let client = server.client();
    let mut cmd = producer(
        &server.base_url(),
        &["-q", "follow", "--create", "--wait", "item-{1..50}"],
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();

    // A worker of our own, leasing and acking until the producer has gone.
    let worker = tokio::spawn(async move {
        let opts = memq::DequeueOptions {
            lease: Some(Duration::from_secs(30)),
            wait: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let mut acked = 0;
        while acked < 50 {
            match client.dequeue("follow", &opts).await {
                Ok(memq::Dequeued::Messages(m)) => {
                    client
                        .ack("follow", &m[0].lease.as_ref().unwrap().id)
                        .await
                        .unwrap();
                    acked += 1;
                }
                // Not created yet, or nothing loaded yet.
                Ok(memq::Dequeued::Empty { .. }) | Err(_) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
            }
        }
    });
    let out = tokio::time::timeout(LIMIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    tokio::time::timeout(LIMIT, worker).await.unwrap().unwrap();
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("queue follow finished after") && stdout.contains("50 acked, 0 dead"),
        "{stdout}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_sends_the_token_in_the_file_and_a_bad_one_is_a_usage_error() {
    let server = TestServer::start(queue_server::Config {
        token: Some("s3cret".into()),
        ..Default::default()
    })
    .await;
    let base = server.base_url();
    let file = scratch_file("token", "s3cret\n");
    let file_arg = file.display().to_string();
    let out = run(producer(
        &base,
        &["-q", "q", "--create", "--token-file", &file_arg, "a", "b"],
    ))
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // MEMQ_TOKEN_FILE as a Job sets it.
    let mut cmd = producer(&base, &["-q", "q", "c"]);
    cmd.env("MEMQ_TOKEN_FILE", &file);
    let out = run(cmd).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let client = server.client().with_token(Some("s3cret".into()));
    assert_eq!(client.queue("q").await.unwrap().enqueued, 3);

    // An empty file, a missing one, or a file with --token: exit 2, saying what to do.
    let empty = scratch_file("empty-token", "\n");
    let empty_arg = empty.display().to_string();
    let out = run(producer(
        &base,
        &["-q", "q", "--token-file", &empty_arg, "x"],
    ))
    .await;
    assert_one_line_error(&out, 2, "it is empty; write the bearer token into it");
    let out = run(producer(
        &base,
        &["-q", "q", "--token-file", "/no/such/token", "x"],
    ))
    .await;
    assert_one_line_error(&out, 2, "cannot use --token-file /no/such/token");
    let mut cmd = producer(&base, &["-q", "q", "--token-file", &file_arg, "x"]);
    cmd.env("MEMQ_TOKEN", "s3cret");
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(client.queue("q").await.unwrap().enqueued, 3);
    for f in [file, empty] {
        let _ = std::fs::remove_file(f);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_one_line_and_exit_2_and_nothing_is_sent() {
    let server = server().await;
    let base = server.base_url();
    let out = run(producer(
        &base,
        &["-q", "bad", "--create", "--file", "/no/such/items.txt"],
    ))
    .await;
    assert_one_line_error(&out, 2, "cannot read /no/such/items.txt");
    let out = run(producer(
        &base,
        &["-q", "bad", "--create", "ok", "item-{1..x}"],
    ))
    .await;
    assert_one_line_error(&out, 2, "invalid range {1..x}");
    let out = run(producer(&base, &["-q", "bad", "--create"])).await;
    assert!(
        out.status.success(),
        "--create alone just creates: {}",
        text(&out.stderr)
    );
    let out = run(producer(&base, &["-q", "bad"])).await;
    assert_one_line_error(&out, 2, "nothing to do");
    let out = run(producer(&base, &["-q", "bad", "--batch", "0", "x"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // The checks come before any request: the queue is still empty.
    let q = server.client().queue("bad").await.unwrap();
    assert_eq!(q.enqueued, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retried_then_exit_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}/memq/server");
    let out = run(producer(
        &base,
        &["-q", "q", "--give-up-after", "1s", "a", "b"],
    ))
    .await;
    assert_one_line_error(&out, 1, "gave up after");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("Connection refused") && stderr.contains("retrying"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_exit_1_with_the_servers_reason() {
    let config = queue_server::Config {
        max_item_bytes: 8,
        ..Default::default()
    };
    let server = TestServer::start(config).await;
    let out = run(producer(
        &server.base_url(),
        &["-q", "small", "--create", "this item is far too long"],
    ))
    .await;
    assert_one_line_error(&out, 1, "413");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_an_https_server_with_ca_cert_and_says_what_to_do_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = queue_server::testing::TestCa::new();
    let (server, ca_file) = ca.https_server(dir.path()).await;
    let base = server.base_url();
    assert!(base.starts_with("https://"));

    // Not retried for a minute: a certificate that is not trusted will not be on a retry.
    let out = run(producer(&base, &["-q", "q", "--create", "a", "b"])).await;
    assert_one_line_error(&out, 1, "not trusted: pass --ca-cert");

    let mut trusting = producer(&base, &["-q", "q", "--create", "a", "b", "c"]);
    trusting.env("MEMQ_CA_CERT", &ca_file);
    let out = run(trusting).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let client = memq::Client::new_trusting(&base, Some(&ca_file)).unwrap();
    assert_eq!(client.queue("q").await.unwrap().depth, 3);

    let missing = dir.path().join("missing.crt");
    let mut bad = producer(&base, &["-q", "q", "a"]);
    bad.arg("--ca-cert").arg(&missing);
    let out = run(bad).await;
    assert_one_line_error(&out, 2, &missing.display().to_string());
    server.shutdown().await;
}
