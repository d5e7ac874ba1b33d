//! `--worker`: long-lived worker processes speaking JSON lines, against a real queue server:
//! the Python example, several items at once, a worker's own retry delay, the docs' shell and
//! jq one-liners, SIGTERM, and every way a worker can break the protocol (it is restarted, the
//! items it held are retried, nothing is acked by mistake).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(120);

fn example() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/worker.py")
        .to_string_lossy()
        .into_owned()
}

/// A Python worker for the tests: records `BODY ATTEMPT` to `$OUT` and answers ok, except
/// that the first process started (of a consumer's run) misbehaves on its first item as
/// `argv[1]` says, and `hold` holds every item. Every start appends its pid to `$OUT.starts`.
const SCRIPTED: &str = r#"
import json, os, sys, time
mode, out = sys.argv[1], os.environ["OUT"]
try:
    os.close(os.open(out + ".first", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    first = True
except FileExistsError:
    first = False
with open(out + ".starts", "a") as f:
    f.write(f"{os.getpid()}\n")

def say(text):
    sys.stdout.write(text + "\n")
    sys.stdout.flush()

def do(item):
    with open(out, "a") as f:
        f.write(f"{item['body']} {item['attempt']}\n")

for line in sys.stdin:
    item = json.loads(line)
    ok = json.dumps({"id": item["id"], "ok": True})
    if first:
        first = False
        if mode == "garbage":
            say("this is not json")
            continue
        if mode == "array":
            say(json.dumps([item["id"], True]))
            continue
        if mode == "unknown":
            say(json.dumps({"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "ok": True}))
            continue
        if mode == "twice":
            do(item)
            say(ok + "\n" + ok)  # in one write: both arrive before its next item is sent
            continue
        if mode == "long":
            say("x" * (2 << 20))
            continue
        if mode == "exit":
            sys.exit(3)
        if mode == "silent":
            continue
        if mode == "retry":
            say(json.dumps({"id": item["id"], "ok": False, "retryAfter": "60s", "error": "not today"}))
            continue
    if mode == "hold":
        time.sleep(3600)
    do(item)
    say(ok)
"#;

/// `consumer ... --worker python3 -c SCRIPTED MODE`, with `extra` flags before it.
fn scripted(mode: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(
        [
            "--retry-delay",
            "50ms",
            "--worker",
            "python3",
            "-c",
            SCRIPTED,
            mode,
        ]
        .map(String::from),
    );
    args
}

/// The lines of a file (none when it does not exist).
fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_serves_every_item_from_one_process_per_slot() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("example");
    let all = items(200);
    load(&client, "words", None, &all).await;
    let example = example();
    let args = [
        "--concurrency",
        "2",
        "--prefetch",
        "20",
        "--worker",
        "python3",
        &example,
    ];
    let mut c = Consumer::start(
        &scratch,
        "c",
        &server.base_url(),
        "words",
        &args,
        &scratch.path("unused"),
    );
    assert_eq!(c.exit(LIMIT).await.code(), Some(0), "{}", c.log());
    let q = client.queue("words").await.unwrap();
    assert_eq!(
        (q.acked, q.depth, q.inflight, q.dead),
        (200, 0, 0, 0),
        "{q:?}"
    );
    let log = c.log();
    // Its stderr is the consumer's: one line per item it hashed.
    assert_eq!(log.matches("(attempt 1): sha256 ").count(), 200, "{log}");
    assert_eq!(
        log.matches("worker started").count(),
        2,
        "one process per slot:\n{log}"
    );
    assert!(!log.contains("worker failed"), "{log}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_may_hold_several_items_and_answer_them_in_any_order() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("several");
    load(&client, "q", None, &items(10)).await;
    // Answers only once it holds 5 items, last first.
    let script = r#"
import json, sys
held = []
for line in sys.stdin:
    held.append(json.loads(line))
    if len(held) == 5:
        print(f"holding {len(held)}", file=sys.stderr)
        for item in reversed(held):
            sys.stdout.write(json.dumps({"id": item["id"], "ok": True}) + "\n")
        sys.stdout.flush()
        held = []
"#;
    let args = [
        "--worker-items",
        "5",
        "--prefetch",
        "5",
        "--worker",
        "python3",
        "-c",
        script,
    ];
    let mut c = Consumer::start(
        &scratch,
        "c",
        &server.base_url(),
        "q",
        &args,
        &scratch.path("unused"),
    );
    assert_eq!(c.exit(LIMIT).await.code(), Some(0), "{}", c.log());
    assert_eq!(c.log().matches("holding 5").count(), 2, "{}", c.log());
    let q = client.queue("q").await.unwrap();
    assert_eq!((q.acked, q.requeued), (10, 0), "{q:?}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_fails_an_item_sets_its_retry_delay() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("retry");
    let out = scratch.path("record");
    client.create_queue("q", None).await.unwrap();
    let item = client
        .enqueue("q", "retry-me", &Default::default())
        .await
        .unwrap();
    let asked = std::time::SystemTime::now();
    let mut c = Consumer::start(
        &scratch,
        "c",
        &server.base_url(),
        "q",
        &scripted("retry", &[]),
        &out,
    );
    let found = eventually(
        "the failed item to wait for its retryAfter",
        LIMIT,
        || async {
            let found = client.item("q", &item.id).await.ok()?;
            (found.state == "delayed").then_some(found)
        },
    )
    .await;
    // 60 s from the answer, not the consumer's own 50 ms.
    let ready_at = humantime::parse_rfc3339(found.ready_at.as_deref().unwrap()).unwrap();
    let wait = ready_at.duration_since(asked).unwrap();
    assert!(wait >= Duration::from_secs(59), "ready after {wait:?}");
    assert_eq!(
        (found.attempts, client.queue("q").await.unwrap().requeued),
        (1, 1)
    );
    assert!(
        c.log().contains("not today"),
        "the worker's error is logged:\n{}",
        c.log()
    );
    c.terminate();
    assert_eq!(c.exit(LIMIT).await.code(), Some(143), "{}", c.log());
    assert!(lines(&out).is_empty(), "the item was not done");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_breaks_the_protocol_is_restarted_and_its_item_retried() {
    for (mode, says, extra) in [
        ("garbage", "not an answer", &[][..]),
        ("array", "not an answer", &[][..]),
        ("unknown", "which it does not hold", &[][..]),
        ("twice", "which it does not hold", &[][..]),
        ("long", "more than 1048576 bytes", &[][..]),
        ("exit", "exited", &[][..]),
        // Long enough for a worker's start (its first item is sent at once) on a busy machine.
        ("silent", "--item-timeout", &["--item-timeout", "5s"][..]),
    ] {
        let server = server().await;
        let client = server.client();
        let scratch = Scratch::new(mode);
        let out = scratch.path("record");
        let all = items(5);
        load(&client, "q", None, &all).await;
        let mut c = Consumer::start(
            &scratch,
            "c",
            &server.base_url(),
            "q",
            &scripted(mode, extra),
            &out,
        );
        assert_eq!(c.exit(LIMIT).await.code(), Some(0), "{mode}: {}", c.log());
        let log = c.log();
        assert!(
            log.contains("worker failed") && log.contains(says),
            "{mode}: {log}"
        );
        let starts = lines(&scratch.path("record.starts"));
        assert!(starts.len() >= 2, "{mode}: restarted: {starts:?}");
        // Every item done exactly once, and acked only then.
        let done = lines(&out);
        let mut bodies: Vec<&str> = done.iter().map(|l| l.split(' ').next().unwrap()).collect();
        bodies.sort_unstable();
        assert_eq!(bodies, all, "{mode}: {done:?}");
        let q = client.queue("q").await.unwrap();
        assert_eq!(
            (q.acked, q.dead, q.depth, q.inflight),
            (5, 0, 0, 0),
            "{mode}: {q:?}"
        );
        // The item the broken worker held was nacked, not acked: done on its second delivery.
        // (Answered twice, it was done and acked on the first answer.)
        let retried = done.iter().filter(|l| l.ends_with(" 2")).count();
        let want = if mode == "twice" { 0 } else { 1 };
        assert_eq!(retried, want, "{mode}: {done:?}");
        server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_workers_and_gives_every_item_back() {
    let server = server().await;
    let client = server.client();
    let scratch = Scratch::new("term");
    let out = scratch.path("record");
    load(&client, "q", None, &items(20)).await;
    let mut c = Consumer::start(
        &scratch,
        "c",
        &server.base_url(),
        "q",
        &scripted("hold", &["--concurrency", "2", "--prefetch", "5"]),
        &out,
    );
    eventually("2 items at the workers, 5 in the buffer", LIMIT, || async {
        (client.queue("q").await.unwrap().inflight == 7).then_some(())
    })
    .await;
    let starts = scratch.path("record.starts");
    let pids = eventually("both workers to start", LIMIT, || async {
        let pids = lines(&starts);
        (pids.len() == 2).then_some(pids)
    })
    .await;
    c.terminate();
    assert_eq!(c.exit(LIMIT).await.code(), Some(143), "{}", c.log());
    let q = client.queue("q").await.unwrap();
    assert_eq!((q.depth, q.inflight, q.acked), (20, 0, 0), "{q:?}");
    assert!(c.log().contains("released=5"), "{}", c.log());
    for pid in pids {
        eventually("the worker process to be gone", LIMIT, || async {
            (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
        })
        .await;
    }
    server.shutdown().await;
}

/// The one-liners of docs/consumer.md, run as written there (`consumer` is this binary, given
/// the test's server and queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_shell_and_jq_workers_drain_a_queue() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/consumer.md"))
        .unwrap();
    let prefix = "consumer --queue words --worker ";
    let commands: Vec<&str> = doc
        .lines()
        .filter_map(|l| {
            let at = l.find(prefix)?;
            Some(l[at..].trim_end_matches(['`', '.']))
        })
        .filter(|l| l.contains("jq"))
        .collect();
    assert_eq!(
        commands.len(),
        2,
        "the shell loop and the jq one: {commands:?}"
    );
    for command in commands {
        let server = server().await;
        let client = server.client();
        load(&client, "words", None, &items(30)).await;
        let rest = command.strip_prefix("consumer ").unwrap();
        let line = format!(
            "exec {} --server {} {rest}",
            env!("CARGO_BIN_EXE_consumer"),
            server.base_url()
        );
        let run = tokio::process::Command::new("sh")
            .args(["-c", &line])
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .output();
        let output = tokio::time::timeout(LIMIT, run)
            .await
            .expect("in time")
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{command}: {log}");
        let q = client.queue("words").await.unwrap();
        assert_eq!(
            (q.acked, q.depth, q.inflight),
            (30, 0, 0),
            "{command}: {q:?}"
        );
        server.shutdown().await;
    }
}
