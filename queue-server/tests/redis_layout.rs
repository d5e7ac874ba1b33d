//! The Redis key layout's version (docs/redis.md, "Layout versions"): a replica refuses a Redis
//! whose queues a newer release wrote, at start with one line and nothing written, and later,
//! when a queue turns out newer, by answering 503 and going unready. Each test starts a
//! redis-server of its own (it fails when there is none: scripts/test.sh installs it). The
//! older layout read and brought up to date: tests/golden.rs; replicas of two releases on one
//! Redis: tests/redis_replicas.rs.

use std::collections::BTreeMap;
use std::time::Duration;

use memq::EnqueueOptions;
use queue_server::Config;
use queue_server::testing::{RedisServer, ServerProcess, TestServer};

const BIN: &str = env!("CARGO_BIN_EXE_queue-server");

type Conn = redis::aio::MultiplexedConnection;

async fn cmd<T: redis::FromRedisValue>(conn: &mut Conn, args: &[&str]) -> T {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Everything Redis holds: every key with its value (`DUMP`), and the function libraries.
async fn everything(conn: &mut Conn) -> (BTreeMap<String, Vec<u8>>, String) {
    let keys: Vec<String> = cmd(conn, &["KEYS", "*"]).await;
    let mut out = BTreeMap::new();
    for key in keys {
        let dump: Vec<u8> = cmd(conn, &["DUMP", &key]).await;
        out.insert(key, dump);
    }
    let functions: redis::Value = cmd(conn, &["FUNCTION", "LIST"]).await;
    (out, format!("{functions:?}"))
}

/// A server on `redis` with the default key prefix, which holds queue `q` with two items.
async fn queue_with_items(redis: &RedisServer) -> TestServer {
    let server = TestServer::start_as_given(Config {
        redis: Some(redis.url()),
        ..Config::default()
    })
    .await;
    let c = server.client();
    c.create_queue("q", None).await.unwrap();
    for body in ["a", "b"] {
        c.enqueue("q", body, &EnqueueOptions::default())
            .await
            .unwrap();
    }
    server
}

#[tokio::test]
async fn a_redis_of_a_newer_layout_is_refused_at_start_with_nothing_written() {
    let redis = RedisServer::start(&[]).await;
    queue_with_items(&redis).await.shutdown().await;
    let mut conn = redis.connection().await;
    let layout: String = cmd(&mut conn, &["GET", "memq:layout"]).await;
    assert_eq!(layout, "2", "a replica records the layout it writes");
    // As a replica of a newer release would leave it; its own library is not there yet.
    let () = cmd(&mut conn, &["SET", "memq:layout", "3"]).await;
    let () = cmd(&mut conn, &["FUNCTION", "FLUSH"]).await;
    let before = everything(&mut conn).await;

    let (status, stderr) = ServerProcess::run_to_exit(BIN, &["--redis", &redis.url()]);
    assert!(!status.success(), "the start was refused: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    assert!(
        errors[0].contains(
            "redis holds queues in key layout 3 (prefix \"memq\"), written by a newer release; this release reads layouts 1 to 2"
        ),
        "{stderr}"
    );
    assert_eq!(
        everything(&mut conn).await,
        before,
        "no key and no function changed"
    );
}

#[tokio::test]
async fn a_queue_a_newer_release_migrated_is_refused_with_503_and_the_replica_goes_unready() {
    let redis = RedisServer::start(&[]).await;
    let server = queue_with_items(&redis).await;
    let c = server.client();
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    let mut conn = redis.connection().await;
    let layout: String = cmd(&mut conn, &["HGET", "memq:{q}:meta", "layout"]).await;
    assert_eq!(layout, "2", "a new queue records its layout");
    // A replica of a newer release brought the queue to its layout.
    let () = cmd(&mut conn, &["HSET", "memq:{q}:meta", "layout", "3"]).await;
    let before = everything(&mut conn).await;

    let err = c.queue("q").await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (Some(503), Some("backend_unavailable"))
    );
    assert!(
        err.to_string().contains("key layout 3"),
        "the answer says why: {err}"
    );
    assert!(
        !server.wait_ready(Duration::from_millis(200)).await,
        "unready: a Service sends its traffic to the replicas that read layout 3"
    );
    // Every other request is refused too, and nothing is written.
    let err = c
        .enqueue("q", "c", &EnqueueOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(everything(&mut conn).await, before);
    server.shutdown().await;
}
