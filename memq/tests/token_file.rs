//! A client on a token file follows a rotation done as scripts/make-tokens.sh does it, against a
//! real server that re-reads its tokens file: no request fails, no restart.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use memq::{EnqueueOptions, TokenSource};
use queue_server::Config;
use queue_server::testing::{TestServer, eventually};

const LIMIT: Duration = Duration::from_secs(20);

/// Swaps the file at once, as the kubelet swaps a Secret volume's files.
fn replace(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Waits until the server answers `token` with `status` (it re-reads its file every second).
async fn server_answers(server: &TestServer, token: &str, status: u16) {
    let url = format!("{}/queues/q", server.base_url());
    eventually(LIMIT, &format!("the server answers {status}"), || async {
        let got = reqwest::Client::new()
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .status()
            .as_u16();
        if got == status {
            Ok(())
        } else {
            Err(format!("{got}"))
        }
    })
    .await;
}

async fn setup(dir: &Path) -> (TestServer, memq::Client) {
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        "admin admin * admin-s3cret\np producer * old-s3cret\n",
    )
    .unwrap();
    let server = TestServer::start(Config {
        tokens_file: Some(tokens),
        ..Config::default()
    })
    .await;
    server
        .client()
        .with_token(Some("admin-s3cret".into()))
        .create_queue("q", None)
        .await
        .unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "old-s3cret\n").unwrap();
    let client = server
        .client()
        .with_token_source(Some(TokenSource::file(&token_file).unwrap()));
    (server, client)
}

#[tokio::test]
async fn a_rotation_in_two_steps_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = setup(dir.path()).await;
    let tokens = dir.path().join("tokens");
    let token_file = dir.path().join("token");

    // Requests all along, every one of which must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (client, stop) = (client.clone(), stop.clone());
        async move {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                client
                    .enqueue("q", format!("item-{sent}"), &EnqueueOptions::default())
                    .await
                    .unwrap_or_else(|e| panic!("request {sent} failed: {e}"));
                sent += 1;
            }
            sent
        }
    });

    // Step 1 (--rotate): the server takes the new token and keeps the old as p-previous.
    replace(
        &tokens,
        "admin admin * admin-s3cret\np producer * new-s3cret\np-previous producer * old-s3cret\n",
    );
    server_answers(&server, "new-s3cret", 200).await;
    // The kubelet refreshes the Secret volume: the client follows within a second or so.
    replace(&token_file, "new-s3cret\n");
    let source = client.token_source().unwrap().clone();
    eventually(LIMIT, "the client sends the new token", || async {
        match &*source.current() {
            "new-s3cret" => Ok(()),
            _ => Err("still the old token".to_string()),
        }
    })
    .await;
    // Step 2 (--retire-previous).
    replace(
        &tokens,
        "admin admin * admin-s3cret\np producer * new-s3cret\n",
    );
    server_answers(&server, "old-s3cret", 401).await;
    client
        .enqueue("q", "after", &EnqueueOptions::default())
        .await
        .unwrap();

    stop.store(true, Ordering::Relaxed);
    let sent = load.await.unwrap();
    assert!(sent > 0);
    let stats = client.queue("q").await.unwrap();
    assert_eq!(stats.enqueued, sent + 1, "{stats:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_refused_request_is_sent_again_with_the_token_the_file_has_now() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = setup(dir.path()).await;
    // The old token already gone from the server ...
    replace(
        &dir.path().join("tokens"),
        "admin admin * admin-s3cret\np producer * new-s3cret\n",
    );
    server_answers(&server, "old-s3cret", 401).await;
    // ... and a client that read its file just before it changed: within the second it does not
    // look at the file, its first request goes with the old token, is refused, and goes again at
    // once with the new one.
    let token_file = dir.path().join("token");
    let client = server
        .client()
        .with_token_source(Some(TokenSource::file(&token_file).unwrap()));
    replace(&token_file, "new-s3cret\n");
    client
        .enqueue("q", "x", &EnqueueOptions::default())
        .await
        .unwrap();
    assert_eq!(&*client.token_source().unwrap().current(), "new-s3cret");

    // A token the server does not know, and nothing new in the file: the 401 stands.
    replace(&dir.path().join("tokens"), "admin admin * admin-s3cret\n");
    server_answers(&server, "new-s3cret", 401).await;
    let err = client.queue("q").await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    server.shutdown().await;
}
