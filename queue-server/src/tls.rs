//! HTTPS (`--tls-cert`, `--tls-key`): the serving certificate, its rotation and its expiry.
//!
//! The certificate and key are PEM files, as a Kubernetes TLS Secret mounts them. They are read
//! once at start (a pair that does not load stops the server) and then every
//! [`RELOAD_INTERVAL`]: cert-manager renews a mounted Secret by swapping a symlink, which file
//! watches see unreliably, so the files' contents are compared instead. A pair that loads
//! replaces the served one for new handshakes ([`Resolver`] holds it in an `ArcSwap`, read
//! without a lock by every handshake); connections already open keep theirs. A pair that does
//! not load (half written, a key of another certificate, already expired) is logged once and
//! the old one is served on.
//!
//! It does not accept connections: [`crate::connections`] runs the handshake in each
//! connection's task.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;
use x509_cert::der::Decode;

/// How often the certificate and key files are read to see whether they changed.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Why a certificate and key pair cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is not what it should be (no PEM certificate, no PEM private key, bad DER).
    #[error("{}: {why}", path.display())]
    Parse { path: PathBuf, why: String },
    /// The key is not the certificate's.
    #[error("the key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
    /// The certificate's notAfter has passed.
    #[error("the certificate in {} expired at unix time {not_after}", path.display())]
    Expired { path: PathBuf, not_after: i64 },
}

/// A certificate and key that load: what a handshake serves, and when it expires.
#[derive(Debug)]
pub struct Loaded {
    /// The chain and signing key.
    pub key: Arc<CertifiedKey>,
    /// The leaf certificate's notAfter, in unix seconds.
    pub not_after: i64,
}

/// The two files and how to read them.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM: the leaf certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads and checks the pair (see [`load_pair`]); with the bytes it loaded, so that a
    /// reload compares with exactly what is served.
    pub fn load(&self, provider: &CryptoProvider) -> Result<(Loaded, Pair), TlsError> {
        let (cert, key) = (read(&self.cert)?, read(&self.key)?);
        let loaded = load_pair(
            &self.cert,
            &cert,
            &self.key,
            &key,
            provider,
            SystemTime::now(),
        )?;
        Ok((loaded, (cert, key)))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses a PEM certificate chain and key (as read from `cert_path` and `key_path`, named in
/// errors) and checks that the key is the certificate's and that it has not expired at `now`.
pub fn load_pair(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
    provider: &CryptoProvider,
    now: SystemTime,
) -> Result<Loaded, TlsError> {
    let parse = |path: &Path, why: String| TlsError::Parse {
        path: path.to_owned(),
        why,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| parse(cert_path, format!("not a PEM certificate: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(parse(cert_path, "holds no PEM certificate".into()));
    };
    let leaf = x509_cert::Certificate::from_der(leaf)
        .map_err(|e| parse(cert_path, format!("not an X.509 certificate: {e}")))?;
    let not_after = leaf
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs();
    let not_after = i64::try_from(not_after).unwrap_or(i64::MAX);
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| parse(key_path, format!("no PEM private key: {e}")))?;
    let signer = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| parse(key_path, format!("not a usable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) => {}
        // A key type whose public half rustls cannot derive: the handshake will tell.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::Mismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            });
        }
    }
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    if not_after <= now_secs {
        return Err(TlsError::Expired {
            path: cert_path.to_owned(),
            not_after,
        });
    }
    Ok(Loaded {
        key: Arc::new(certified),
        not_after,
    })
}

/// The certificate every new handshake gets: the last pair that loaded.
#[derive(Debug)]
pub struct Resolver {
    current: ArcSwap<CertifiedKey>,
    /// The served certificate's notAfter (unix seconds), for the expiry gauge.
    not_after: Arc<AtomicI64>,
}

impl Resolver {
    fn new(loaded: Loaded, not_after: Arc<AtomicI64>) -> Self {
        not_after.store(loaded.not_after, Ordering::Relaxed);
        Self {
            current: ArcSwap::new(loaded.key),
            not_after,
        }
    }

    fn replace(&self, loaded: Loaded) {
        self.current.store(loaded.key);
        self.not_after.store(loaded.not_after, Ordering::Relaxed);
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// HTTPS for the accept loop: the acceptor to hand each connection, and the task that reloads
/// the certificate.
pub struct Tls {
    /// Runs a server handshake on a connection.
    pub acceptor: tokio_rustls::TlsAcceptor,
    resolver: Arc<Resolver>,
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    /// The files' contents as loaded at start: a change after that (while the store opens) is
    /// a change for the reload too.
    loaded: Pair,
}

impl Tls {
    /// Loads the pair (an error names the file and the reason) and sets up HTTP/1.1 over TLS
    /// 1.2 and 1.3 with ring. `not_after` is set to the certificate's notAfter now and on
    /// every reload.
    pub fn load(files: TlsFiles, not_after: Arc<AtomicI64>) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (loaded, pair) = files
            .load(&provider)
            .map_err(|e| anyhow::anyhow!("cannot serve HTTPS with --tls-cert/--tls-key: {e}"))?;
        let resolver = Arc::new(Resolver::new(loaded, not_after));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            resolver,
            files,
            provider,
            loaded: pair,
        })
    }

    /// Reads the files every [`RELOAD_INTERVAL`] until `cancel`, and serves a changed pair
    /// once it loads. A changed pair that does not load, and still does not a tick later (a
    /// writer replacing the two files one after the other gets that long), is logged once, not
    /// again until the files change, and the old certificate stays.
    pub async fn reload_until(self: Arc<Self>, cancel: CancellationToken) {
        let files = self.files.clone();
        let read = async || {
            let cert = tokio::fs::read(&files.cert).await;
            let key = tokio::fs::read(&files.key).await;
            match (cert, key) {
                (Ok(cert), Ok(key)) => Ok((cert, key)),
                (Err(e), _) => Err(format!("cannot read {}: {e}", files.cert.display())),
                (_, Err(e)) => Err(format!("cannot read {}: {e}", files.key.display())),
            }
        };
        // The contents of the pair served now.
        let mut served = Some(self.loaded.clone());
        // A pair that did not load: what was read, why, and whether that was logged.
        let mut failing: Option<(Result<Pair, String>, String, bool)> = None;
        let mut tick = tokio::time::interval(RELOAD_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = read().await;
            if now.as_ref().ok() == served.as_ref() {
                failing = None;
                continue;
            }
            if let Some((seen, why, logged)) = &mut failing
                && *seen == now
            {
                if !*logged {
                    tracing::warn!(error = %why,
                        "the new TLS certificate or key does not load; still serving the old certificate. Write a matching, unexpired PEM certificate and key to --tls-cert and --tls-key");
                    *logged = true;
                }
                continue;
            }
            let loaded = match &now {
                Ok((cert, key)) => load_pair(
                    &files.cert,
                    cert,
                    &files.key,
                    key,
                    &self.provider,
                    SystemTime::now(),
                )
                .map_err(|e| e.to_string()),
                Err(why) => Err(why.clone()),
            };
            match loaded {
                Ok(loaded) => {
                    tracing::info!(cert = %files.cert.display(), not_after = loaded.not_after,
                        "TLS certificate reloaded: new connections get the new one");
                    self.resolver.replace(loaded);
                    served = now.ok();
                    failing = None;
                }
                // Logged at the next tick if the files are still the same.
                Err(why) => failing = Some((now, why, false)),
            }
        }
    }
}

/// The contents of a certificate file and a key file.
pub type Pair = (Vec<u8>, Vec<u8>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_files_name_the_file() {
        let provider = rustls::crypto::ring::default_provider();
        let (c, k) = (Path::new("/x/tls.crt"), Path::new("/x/tls.key"));
        let err = load_pair(c, b"", k, b"", &provider, SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("/x/tls.crt"), "{err}");
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = load_pair(c, garbage, k, b"", &provider, SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("/x/tls.crt"), "{err}");
    }
}
