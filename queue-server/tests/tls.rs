//! HTTPS: `--tls-cert`/`--tls-key` serve the API over TLS on the same port, a renewed
//! certificate is served to new connections while open ones (a long poll) go on, a renewal that
//! does not load keeps the old certificate, and nothing a client sends ends more than its own
//! connection.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use queue_server::Config;
use queue_server::testing::{ServerCert, TestCa, TestServer, eventually, metric_from, write_pair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_queue-server");
const GAUGE: &str = "memq_tls_certificate_expiry_timestamp_seconds";
const LIMIT: Duration = Duration::from_secs(20);

async fn start(dir: &Path, cert: &ServerCert, config: Config) -> TestServer {
    let (cert, key) = cert.write(dir);
    TestServer::start_as_given(Config {
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..config
    })
    .await
}

/// The certificate a new connection from a client trusting `ca` is served.
async fn peer_certificate(ca: &TestCa, url: &str) -> Result<Vec<u8>, String> {
    let resp = ca
        .http_client()
        .get(format!("{url}/healthz"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let info = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .ok_or("no TLS info")?;
    Ok(info
        .peer_certificate()
        .ok_or("no peer certificate")?
        .to_vec())
}

#[tokio::test]
async fn https_with_the_ca_serves_the_api_over_http_1_1_and_the_expiry_gauge() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let cert = ca.issue(2040);
    let server = start(dir.path(), &cert, Config::default()).await;
    assert!(server.url().starts_with("https://"));
    let http = ca.http_client();
    let queue = format!("{}/queues/keygen", server.base_url());
    let created = http.put(&queue).send().await.unwrap();
    assert_eq!(created.status(), 201);
    let item = http
        .post(format!("{queue}/enqueue"))
        .body("work-item-0")
        .send()
        .await
        .unwrap();
    assert_eq!(item.status(), 200);
    let got: serde_json::Value = http
        .post(format!("{queue}/dequeue"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["body"], "work-item-0");
    assert_eq!(
        metric_from(&http, &server.url(), GAUGE).await,
        cert.not_after as f64
    );
    assert_eq!(cert.not_after, 2_208_988_800, "2040-01-01T00:00:00Z");

    // ALPN: the server offers HTTP/1.1 and nothing else.
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = rustls::pki_types::pem::PemObject::from_pem_slice(ca.pem().as_bytes()).unwrap();
    roots.add(ca_der).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    server.shutdown().await;
}

#[tokio::test]
async fn untrusting_plain_garbage_and_silent_clients_end_only_their_own_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let server = start(
        dir.path(),
        &ca.issue(2040),
        Config {
            header_read_timeout: Duration::from_millis(300),
            ..Config::default()
        },
    )
    .await;
    let healthz = format!("{}/healthz", server.url());

    // A client that trusts another CA (or only the public roots) refuses the certificate.
    let other = TestCa::new().http_client();
    let err = other.get(&healthz).send().await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    let public_roots = reqwest::Client::new().get(&healthz).send().await;
    assert!(public_roots.is_err());

    // Plain HTTP to the TLS port: no answer, the connection ends.
    let plain = format!("http://{}/healthz", server.addr());
    assert!(reqwest::get(&plain).await.is_err());

    // Garbage, and a client that says nothing: each connection is closed by the server.
    let mut garbage = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    garbage
        .write_all(b"\x16\x03\x01\xff\xff not a client hello \x00\x01\x02\r\n\r\n")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    for conn in [&mut garbage, &mut silent] {
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(LIMIT, conn.read_to_end(&mut rest)).await;
        assert!(ended.is_ok(), "the server kept the connection open");
    }

    // The server is still there for a client that trusts it.
    let ok = ca.http_client().get(&healthz).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_while_a_long_poll_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let (old, new) = (ca.issue(2040), ca.issue(2041));
    let server = start(dir.path(), &old, Config::default()).await;
    let url = server.url();
    let queue = format!("{}/queues/rotate", server.base_url());
    let watcher = ca.http_client();
    assert_eq!(watcher.put(&queue).send().await.unwrap().status(), 201);
    assert_eq!(peer_certificate(&ca, &url).await.unwrap(), old.der);

    // One connection, opened with the old certificate, waits in a long poll.
    let poller = ca.http_client();
    let poll = tokio::spawn(
        poller
            .post(format!("{queue}/dequeue?wait=60&lease=30"))
            .send(),
    );
    eventually(LIMIT, "the long poll waits", || async {
        match metric_from(&watcher, &url, "memq_long_polls_waiting").await {
            1.0 => Ok(()),
            n => Err(format!("{n} waiting")),
        }
    })
    .await;

    new.write(dir.path());
    eventually(LIMIT, "the new certificate is served", || async {
        let gauge = metric_from(&ca.http_client(), &url, GAUGE).await;
        if gauge != new.not_after as f64 {
            return Err(format!("gauge {gauge}"));
        }
        match peer_certificate(&ca, &url).await? {
            der if der == new.der => Ok(()),
            _ => Err("a new connection still gets the old certificate".into()),
        }
    })
    .await;

    let pushed = watcher
        .post(format!("{queue}/enqueue"))
        .body("after-rotation")
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 200);
    let answer = tokio::time::timeout(LIMIT, poll)
        .await
        .expect("the long poll answers")
        .unwrap()
        .expect("the long poll's connection survived the rotation");
    assert_eq!(answer.status(), 200);
    let peer = answer
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .unwrap()
        .to_vec();
    assert_eq!(peer, old.der, "the poll was served on its old connection");
    let message: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(message["body"], "after-rotation");
    server.shutdown().await;
}

/// The binary with `--log-format json` writing its log to a file, and that file.
struct Logged {
    child: std::process::Child,
    log: tempfile::NamedTempFile,
    url: String,
}

impl Logged {
    fn start(cert: &Path, key: &Path) -> Self {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = std::process::Command::new(BIN)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--log-format", "json"])
            .env("MEMQ_TLS_CERT", cert)
            .env("MEMQ_TLS_KEY", key)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            log,
            url: format!("https://127.0.0.1:{port}"),
        }
    }

    fn text(&self) -> String {
        let mut text = String::new();
        self.log
            .reopen()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    /// The warnings about the certificate logged so far.
    fn warnings(&self) -> Vec<serde_json::Value> {
        self.text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["level"] == "WARN" && v["target"] == "queue_server::tls")
            .collect()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn a_renewal_that_does_not_load_keeps_the_old_certificate_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let good = ca.issue(2040);
    let (cert, key) = good.write(dir.path());
    let server = Logged::start(&cert, &key);
    let url = server.url.clone();
    eventually(LIMIT, "the server answers over HTTPS", || async {
        peer_certificate(&ca, &url).await
    })
    .await;
    let another = ca.issue(2041);
    let expired = ca.issue(2020);
    let broken: [(&str, &[u8], &[u8], &str); 3] = [
        (
            "not PEM",
            b"this is not a certificate",
            good.key_pem.as_bytes(),
            "PEM certificate",
        ),
        (
            "another certificate's key",
            another.cert_pem.as_bytes(),
            good.key_pem.as_bytes(),
            "does not belong to the certificate",
        ),
        (
            "expired",
            expired.cert_pem.as_bytes(),
            expired.key_pem.as_bytes(),
            "expired",
        ),
    ];
    for (n, (what, cert_pem, key_pem, why)) in broken.into_iter().enumerate() {
        write_pair(dir.path(), cert_pem, key_pem);
        let warning = eventually(LIMIT, what, || async {
            let warnings = server.warnings();
            match warnings.get(n) {
                Some(w) => Ok(w.clone()),
                None => Err(format!("{} warnings", warnings.len())),
            }
        })
        .await;
        let error = warning["error"].as_str().unwrap_or_default();
        let message = warning["message"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{what}: {warning}");
        assert!(
            error.contains(&cert.display().to_string()),
            "{what}: names the file: {warning}"
        );
        assert!(
            message.contains("still serving the old certificate") && message.contains("--tls-cert"),
            "{what}: says what to do: {warning}"
        );
        assert_eq!(
            peer_certificate(&ca, &url).await.unwrap(),
            good.der,
            "{what}"
        );
        assert_eq!(
            metric_from(&ca.http_client(), &url, GAUGE).await,
            good.not_after as f64,
            "{what}"
        );
    }
    // A key file that goes away: the same.
    std::fs::remove_file(&key).unwrap();
    let warning = eventually(LIMIT, "the key file is gone", || async {
        let warnings = server.warnings();
        match warnings.get(3) {
            Some(w) => Ok(w.clone()),
            None => Err(format!("{} warnings", warnings.len())),
        }
    })
    .await;
    let error = warning["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot read") && error.contains(&key.display().to_string()),
        "{warning}"
    );
    assert_eq!(peer_certificate(&ca, &url).await.unwrap(), good.der);
    // Each broken pair was said once, not once a second.
    assert_eq!(server.warnings().len(), 4, "{}", server.text());
    // And a good one after them is served.
    let renewed = ca.issue(2042);
    renewed.write(dir.path());
    eventually(LIMIT, "the renewed certificate is served", || async {
        match peer_certificate(&ca, &url).await? {
            der if der == renewed.der => Ok(()),
            _ => Err("still the old certificate".to_string()),
        }
    })
    .await;
}

#[tokio::test]
async fn a_pair_that_does_not_load_at_start_stops_the_server_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let good = ca.issue(2040);
    let (cert, key) = write_pair(dir.path(), b"garbage", good.key_pem.as_bytes());
    let missing = dir.path().join("missing.key");
    let expired = ca.issue(2020);
    let expired_dir = tempfile::tempdir().unwrap();
    let (expired_cert, expired_key) = expired.write(expired_dir.path());
    for (what, cert, key, named) in [
        ("a cert that is not PEM", &cert, &key, &cert),
        ("a missing key", &cert, &missing, &missing),
        (
            "an expired cert",
            &expired_cert,
            &expired_key,
            &expired_cert,
        ),
    ] {
        let out = tokio::time::timeout(
            LIMIT,
            tokio::process::Command::new(BIN)
                .args(["--listen", "127.0.0.1:0"])
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key)
                .env("RUST_LOG", "info")
                .stdin(std::process::Stdio::null())
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{what}: the server did not stop"))
        .unwrap();
        assert!(!out.status.success(), "{what}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&named.display().to_string()) && stderr.contains("--tls-cert"),
            "{what}: {stderr}"
        );
    }
    // One flag without the other is refused by the flag parser.
    let out = std::process::Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

#[tokio::test]
async fn the_memq_client_says_what_to_do_when_tls_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let server = start(dir.path(), &ca.issue(2040), Config::default()).await;
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let trusting = memq::Client::new_trusting(server.base_url(), Some(&ca_file)).unwrap();
    trusting.create_queue("q", None).await.unwrap();

    let untrusting = memq::Client::new(server.base_url()).unwrap();
    let err = untrusting.create_queue("q", None).await.unwrap_err();
    assert!(
        err.to_string().contains(
            "the server's certificate is not trusted: pass --ca-cert (MEMQ_CA_CERT) with the CA that signed it"
        ),
        "{err}"
    );
    assert!(!err.is_retryable(), "{err}");

    let plain = format!("http://{}{}", server.addr(), memq::BASE_PATH);
    let err = memq::Client::new(plain)
        .unwrap()
        .create_queue("q", None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("use an https:// URL"), "{err}");

    let http_server = TestServer::start_as_given(Config::default()).await;
    let https_to_plain = format!("https://{}{}", http_server.addr(), memq::BASE_PATH);
    let err = memq::Client::new(https_to_plain)
        .unwrap()
        .create_queue("q", None)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("is the server serving HTTPS"),
        "{err}"
    );

    let err =
        memq::Client::new_trusting(server.base_url(), Some(&dir.path().join("nope"))).unwrap_err();
    assert!(err.to_string().contains("cannot use --ca-cert"), "{err}");
    http_server.shutdown().await;
    server.shutdown().await;
}
