//! Certificates for HTTPS tests: a CA made on the spot and server certificates it signs for
//! `127.0.0.1` and `localhost`, written where `--tls-cert` and `--tls-key` read them.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority of its own for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate (chain of one) and its key, in PEM.
#[derive(Clone)]
pub struct ServerCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The certificate, DER: what a client sees as the peer certificate.
    pub der: Vec<u8>,
    /// Its notAfter, unix seconds.
    pub not_after: i64,
}

impl TestCa {
    /// A new CA (ECDSA P-256), valid until 2100.
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "memq test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let key = KeyPair::generate().expect("CA key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    /// The CA certificate, PEM: what clients take as `--ca-cert`.
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `127.0.0.1` and `localhost` that expires on 1 January of
    /// `year` (before now: an expired one), with a new key.
    pub fn issue(&self, year: i32) -> ServerCert {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "memq test server");
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        ServerCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
            not_after: params.not_after.unix_timestamp(),
        }
    }

    /// A test server on HTTPS with a certificate of this CA (valid until 2040, files in
    /// `dir`), and this CA's certificate written to `dir/ca.crt` for clients' `--ca-cert`.
    pub async fn https_server(&self, dir: &Path) -> (super::TestServer, PathBuf) {
        let (cert, key) = self.issue(2040).write(dir);
        let ca_file = dir.join("ca.crt");
        std::fs::write(&ca_file, self.pem()).expect("write the CA certificate");
        let server = super::TestServer::start(crate::Config {
            tls_cert: Some(cert),
            tls_key: Some(key),
            ..Default::default()
        })
        .await;
        (server, ca_file)
    }

    /// A reqwest client that trusts this CA (and no other), with the TLS details of each
    /// response kept (`reqwest::tls::TlsInfo`) and a connection of its own (no pool shared
    /// with other clients).
    pub fn http_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.pem().as_bytes()).expect("CA PEM"),
            )
            .tls_info(true)
            .build()
            .expect("build client")
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCert {
    /// Writes `tls.crt` and `tls.key` in `dir` (each to a temporary file renamed over the old
    /// one, so a reader never sees half a file) and returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        write_pair(dir, self.cert_pem.as_bytes(), self.key_pem.as_bytes())
    }
}

/// Writes `cert` and `key` as `tls.crt` and `tls.key` in `dir`, each replaced by a rename.
pub fn write_pair(dir: &Path, cert: &[u8], key: &[u8]) -> (PathBuf, PathBuf) {
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    for (path, bytes) in [(&cert_path, cert), (&key_path, key)] {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes).expect("write a certificate file");
        std::fs::rename(&tmp, path).expect("rename a certificate file");
    }
    (cert_path, key_path)
}
