//! Async HTTP client for the queue API, one method per route.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use crate::types::*;

/// What can go wrong talking to a queue server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("{status}: {message} ({code})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's error code (`queue_not_found`, ...), or `http_<status>` without a JSON body.
        code: String,
        /// The server's message.
        message: String,
        /// `Retry-After` of a 429/503, when given.
        retry_after: Option<Duration>,
    },
    /// The request did not get an answer (connection refused, reset, timeout, a TLS
    /// handshake that failed). Shown with its root cause and, for TLS, what to do.
    #[error("cannot reach the queue server: {}", describe(.0))]
    Transport(#[from] reqwest::Error),
    /// The CA bundle given to trust (`--ca-cert`) cannot be used.
    #[error("cannot use --ca-cert {}: {why}", path.display())]
    CaCert {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        why: String,
    },
    /// The answer was not what the contract promises.
    #[error("unexpected answer from the queue server: {0}")]
    Decode(String),
}

impl Error {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The contract's error code of an API error.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether trying the same request again later can succeed (network trouble, 5xx, 429).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { status, .. } => *status == 429 || *status >= 500,
            // A certificate that is not trusted will not be trusted on the next try either.
            Error::Transport(e) => !matches!(tls_problem(e), Some(TlsProblem::Certificate(_))),
            Error::Decode(_) | Error::CaCert { .. } => false,
        }
    }
}

/// What went wrong in a TLS connection, as far as the client can tell.
enum TlsProblem {
    /// The server's certificate was refused; what to do about it.
    Certificate(&'static str),
    /// The other side does not speak TLS, or not the TLS we speak.
    Protocol(&'static str),
}

/// The TLS problem behind a transport error, if any: a rustls error somewhere in its causes.
fn tls_problem(err: &reqwest::Error) -> Option<TlsProblem> {
    use rustls::{CertificateError as C, Error as R};
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        // io::Error hides the error it wraps from source(): look inside it too.
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        let rustls = e
            .downcast_ref::<R>()
            .or_else(|| inner.and_then(|i| i.downcast_ref::<R>()));
        if let Some(r) = rustls {
            return Some(match r {
                R::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                    TlsProblem::Certificate(
                        "the server's certificate has expired: renew it where the server reads --tls-cert",
                    )
                }
                R::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                    TlsProblem::Certificate(
                        "the server's certificate is not for this host name: use a name it was issued for in the server URL",
                    )
                }
                R::InvalidCertificate(_) => TlsProblem::Certificate(
                    "the server's certificate is not trusted: pass --ca-cert (MEMQ_CA_CERT) with the CA that signed it",
                ),
                _ => TlsProblem::Protocol(
                    "the TLS handshake failed: is the server serving HTTPS on this port (--tls-cert)? Use http:// for a server without it",
                ),
            });
        }
        cause = inner.or_else(|| e.source());
    }
    None
}

/// A transport error with its root cause (reqwest shows only the outermost) and, when it is
/// one of TLS or of HTTPS-vs-HTTP, what to do.
fn describe(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut root: &dyn std::error::Error = err;
    while let Some(next) = root.source() {
        root = next;
    }
    if !std::ptr::addr_eq(root, err as &dyn std::error::Error) {
        text = format!("{text}: {root}");
    }
    let hint = match tls_problem(err) {
        Some(TlsProblem::Certificate(hint) | TlsProblem::Protocol(hint)) => Some(hint),
        // Connected, then no HTTP answer: a TLS server answering a plain request, for one.
        None if err.url().is_some_and(|u| u.scheme() == "http")
            && !err.is_connect()
            && !err.is_timeout() =>
        {
            Some("if the server serves HTTPS (--tls-cert), use an https:// URL")
        }
        None => None,
    };
    if let Some(hint) = hint {
        text = format!("{text}; {hint}");
    }
    text
}

/// Adds the certificates of the PEM bundle at `path` to the CAs `builder` trusts (`--ca-cert`),
/// beside the public roots.
pub fn trust_ca_file(
    builder: reqwest::ClientBuilder,
    path: &std::path::Path,
) -> Result<reqwest::ClientBuilder, Error> {
    let fail = |why: String| Error::CaCert {
        path: path.to_owned(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| fail(format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    Ok(certs
        .into_iter()
        .fold(builder, |b, cert| b.add_root_certificate(cert)))
}

/// Options of `POST /queues/{q}/enqueue`.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Ready only after this long (at most 900 s).
    pub delay: Option<Duration>,
    /// The producer's dedup key (single enqueue only).
    pub id: Option<String>,
}

/// Options of `POST /queues/{q}/dequeue`. The default is kuard's plain dequeue.
#[derive(Debug, Clone, Default)]
pub struct DequeueOptions {
    /// Lease the items for this long instead of removing them.
    pub lease: Option<Duration>,
    /// Lease with the queue's default lease length (`lease=true`).
    pub lease_default: bool,
    /// Long poll up to this long (at most 60 s).
    pub wait: Option<Duration>,
    /// Up to this many items (1 to 1000).
    pub max: Option<u32>,
}

/// What a dequeue gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Dequeued {
    /// One or more items.
    Messages(Vec<Message>),
    /// 204: nothing ready now, with the queue's counts from the headers.
    Empty {
        /// Ready items (0 unless paused).
        depth: u64,
        /// Items in flight: when > 0, a lease may still expire and bring work back.
        inflight: u64,
        /// Items waiting for a delay: they become ready later.
        delayed: u64,
        /// The queue is paused.
        paused: bool,
    },
}

impl Dequeued {
    /// True when the queue is finished: nothing ready, in flight or delayed.
    pub fn is_finished(&self) -> bool {
        matches!(
            self,
            Dequeued::Empty {
                depth: 0,
                inflight: 0,
                delayed: 0,
                paused: false
            }
        )
    }
}

/// A client for one queue server (`http://host:8080/memq/server`).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<crate::token::TokenSource>,
    consumer: Option<String>,
}

fn secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        (ms / 1000).to_string()
    } else {
        format!("{}ms", ms)
    }
}

impl Client {
    /// A client for the server at `base` (the URL that ends in `/memq/server`).
    pub fn new(base: impl Into<String>) -> Result<Self, Error> {
        Self::new_trusting(base, None)
    }

    /// A client for the server at `base` that also trusts the CAs in the PEM file `ca_cert`
    /// (for an `https://` server whose certificate a private CA signed).
    pub fn new_trusting(
        base: impl Into<String>,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Self, Error> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            // Below the server's --header-read-timeout (30 s by default), which closes idle
            // connections: the client lets them go first, so it never reuses one being closed.
            .pool_idle_timeout(Duration::from_secs(20));
        if let Some(path) = ca_cert {
            builder = trust_ca_file(builder, path)?;
        }
        Ok(Self::with_http(builder.build()?, base))
    }

    /// A client sharing an existing `reqwest::Client` (and its connection pool).
    pub fn with_http(http: reqwest::Client, base: impl Into<String>) -> Self {
        let base = base.into().trim_end_matches('/').to_string();
        Self {
            http,
            base,
            token: None,
            consumer: None,
        }
    }

    /// Sends `Authorization: Bearer TOKEN` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token
            .filter(|t| !t.is_empty())
            .map(crate::token::TokenSource::fixed);
        self
    }

    /// Sends the token of `source` with every request: with a file
    /// ([`crate::token::TokenSource::file`]) the token follows the file as it changes, and a
    /// request refused with 401 is sent once more at once if the file holds another token by then.
    pub fn with_token_source(mut self, source: Option<crate::token::TokenSource>) -> Self {
        self.token = source;
        self
    }

    /// Where this client's token comes from, if it sends one.
    pub fn token_source(&self) -> Option<&crate::token::TokenSource> {
        self.token.as_ref()
    }

    /// Names this client on every dequeue (`X-Memq-Consumer`), so the server lists its leases
    /// under that name (printable ASCII, at most [`crate::name::MAX_CONSUMER_NAME`] bytes).
    pub fn with_consumer(mut self, name: Option<String>) -> Self {
        self.consumer = name.filter(|n| !n.is_empty());
        self
    }

    /// `GET /queues/{q}/leases?limit=N`: the leases held now, oldest first.
    pub async fn leases(&self, queue: &str, limit: Option<u32>) -> Result<crate::LeaseList, Error> {
        let mut req = self.request(Method::GET, &Self::queue_path(queue, "/leases"));
        if let Some(limit) = limit {
            req = req.query(&[("limit", limit)]);
        }
        self.json(req).await
    }

    /// `GET /queues/{q}/items/{id}`: where an item is now (ready, delayed, leased or dead).
    pub async fn item(&self, queue: &str, id: &str) -> Result<crate::ItemInfo, Error> {
        let mut path = Self::queue_path(queue, "/items/");
        path.extend(form_escape(id));
        self.json(self.request(Method::GET, &path)).await
    }

    /// `GET /queues/{q}/items?key=KEY`: where the item enqueued with producer key `key` is now.
    pub async fn item_by_key(&self, queue: &str, key: &str) -> Result<crate::ItemInfo, Error> {
        let req = self.request(Method::GET, &Self::queue_path(queue, "/items"));
        self.json(req.query(&[("key", key)])).await
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A request to `path` under the base URL; [`Client::send`] adds the token.
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{}", self.base, path))
    }

    fn queue_path(queue: &str, rest: &str) -> String {
        // Queue names are restricted to URL-safe characters; anything else is left for the
        // server to refuse with a clear error, so escape it rather than build a different path.
        let mut path = String::from("/queues/");
        path.extend(form_escape(queue));
        path.push_str(rest);
        path
    }

    /// Sends `req` with the token; a 401 with a token file that holds another token by now (a
    /// rotation the client had not seen yet), or held one before (a rotation the server has not
    /// seen yet), is sent once more with that one. The server refuses before it reads the body,
    /// so a resent enqueue is not enqueued twice.
    async fn send(&self, req: RequestBuilder) -> Result<reqwest::Response, Error> {
        let resp = match &self.token {
            None => req.send().await?,
            Some(source) => {
                let token = source.current();
                // Only a file's token can change; a streamed body cannot be sent twice.
                let again = source.path().and_then(|_| req.try_clone());
                let resp = req.bearer_auth(&*token).send().await?;
                match again {
                    Some(again) if resp.status() == StatusCode::UNAUTHORIZED => {
                        match source.reload_after_refusal(&token) {
                            Some(new) => {
                                tracing::debug!(
                                    "the server refused the token (401): sending the request again with the token file's other token"
                                );
                                again.bearer_auth(&*new).send().await?
                            }
                            None => resp,
                        }
                    }
                    _ => resp,
                }
            }
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(api_error(resp).await)
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, Error> {
        let resp = self.send(req).await?;
        decode(resp).await
    }

    /// `PUT /queues/{q}`: creates the queue (or updates its config). True when it was created.
    pub async fn create_queue(
        &self,
        queue: &str,
        config: Option<&QueueConfigPatch>,
    ) -> Result<(QueueStats, bool), Error> {
        let mut req = self.request(Method::PUT, &Self::queue_path(queue, ""));
        if let Some(config) = config {
            req = req.json(config);
        }
        let resp = self.send(req).await?;
        let created = resp.status() == StatusCode::CREATED;
        let obj: QueueObject = decode(resp).await?;
        Ok((obj.queue, created))
    }

    /// `GET /queues/{q}`.
    pub async fn queue(&self, queue: &str) -> Result<QueueStats, Error> {
        let obj: QueueObject = self
            .json(self.request(Method::GET, &Self::queue_path(queue, "")))
            .await?;
        Ok(obj.queue)
    }

    /// `DELETE /queues/{q}`.
    pub async fn delete_queue(&self, queue: &str) -> Result<(), Error> {
        self.send(self.request(Method::DELETE, &Self::queue_path(queue, "")))
            .await?;
        Ok(())
    }

    /// `POST /queues/{q}/drain`, `/pause` or `/resume` (`action` is the last path segment).
    pub async fn queue_action(&self, queue: &str, action: &str) -> Result<QueueStats, Error> {
        let path = Self::queue_path(queue, &format!("/{action}"));
        let obj: QueueObject = self.json(self.request(Method::POST, &path)).await?;
        Ok(obj.queue)
    }

    /// `GET /stats`.
    pub async fn stats(&self) -> Result<Stats, Error> {
        self.json(self.request(Method::GET, "/stats")).await
    }

    /// `POST /queues/{q}/enqueue` with one item.
    pub async fn enqueue(
        &self,
        queue: &str,
        body: impl Into<String>,
        opts: &EnqueueOptions,
    ) -> Result<Message, Error> {
        let mut req = self
            .request(Method::POST, &Self::queue_path(queue, "/enqueue"))
            .body(body.into());
        if let Some(delay) = opts.delay {
            req = req.query(&[("delay", secs(delay))]);
        }
        if let Some(id) = &opts.id {
            req = req.query(&[("id", id)]);
        }
        self.json(req).await
    }

    /// `POST /queues/{q}/enqueue?batch=json`: all items or none.
    pub async fn enqueue_batch(
        &self,
        queue: &str,
        items: &[BatchItem],
        delay: Option<Duration>,
    ) -> Result<EnqueueResult, Error> {
        let body = serde_json::to_vec(items).map_err(|e| Error::Decode(e.to_string()))?;
        self.enqueue_raw_batch(queue, "json", body, delay).await
    }

    /// `POST /queues/{q}/enqueue?batch=lines`: one item per line of `body`.
    pub async fn enqueue_lines(
        &self,
        queue: &str,
        body: impl Into<reqwest::Body>,
        delay: Option<Duration>,
    ) -> Result<EnqueueResult, Error> {
        self.enqueue_raw_batch(queue, "lines", body, delay).await
    }

    async fn enqueue_raw_batch(
        &self,
        queue: &str,
        kind: &str,
        body: impl Into<reqwest::Body>,
        delay: Option<Duration>,
    ) -> Result<EnqueueResult, Error> {
        let mut req = self
            .request(Method::POST, &Self::queue_path(queue, "/enqueue"))
            .query(&[("batch", kind)])
            .body(body);
        if let Some(delay) = delay {
            req = req.query(&[("delay", secs(delay))]);
        }
        self.json(req).await
    }

    /// `POST /queues/{q}/dequeue` with the given options.
    pub async fn dequeue(&self, queue: &str, opts: &DequeueOptions) -> Result<Dequeued, Error> {
        let mut req = self.request(Method::POST, &Self::queue_path(queue, "/dequeue"));
        let mut timeout = Duration::from_secs(30);
        if let Some(lease) = opts.lease {
            req = req.query(&[("lease", secs(lease))]);
        } else if opts.lease_default {
            req = req.query(&[("lease", "true")]);
        }
        if let Some(wait) = opts.wait {
            req = req.query(&[("wait", secs(wait))]);
            timeout += wait;
        }
        if let Some(max) = opts.max {
            req = req.query(&[("max", max)]);
        }
        if let Some(name) = &self.consumer {
            req = req.header(headers::CONSUMER, name);
        }
        let resp = self.send(req.timeout(timeout)).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            let h = resp.headers();
            let num = |name: &str| {
                h.get(name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let paused = h
                .get(headers::PAUSED)
                .is_some_and(|v| v.as_bytes() == b"true");
            return Ok(Dequeued::Empty {
                depth: num(headers::DEPTH),
                inflight: num(headers::INFLIGHT),
                delayed: num(headers::DELAYED),
                paused,
            });
        }
        if opts.max.is_some() {
            let list: MessageList = decode(resp).await?;
            Ok(Dequeued::Messages(list.messages))
        } else {
            Ok(Dequeued::Messages(vec![decode(resp).await?]))
        }
    }

    fn lease_path(queue: &str, lease: &str, action: &str) -> String {
        let mut path = Self::queue_path(queue, "/leases/");
        path.extend(form_escape(lease));
        path.push('/');
        path.push_str(action);
        path
    }

    /// `POST /queues/{q}/leases/{lease}/ack`.
    pub async fn ack(&self, queue: &str, lease: &str) -> Result<(), Error> {
        self.send(self.request(Method::POST, &Self::lease_path(queue, lease, "ack")))
            .await?;
        Ok(())
    }

    /// `POST /queues/{q}/leases/{lease}/nack`, back to ready after `delay`.
    pub async fn nack(
        &self,
        queue: &str,
        lease: &str,
        delay: Option<Duration>,
    ) -> Result<(), Error> {
        let mut req = self.request(Method::POST, &Self::lease_path(queue, lease, "nack"));
        if let Some(delay) = delay {
            req = req.query(&[("delay", secs(delay))]);
        }
        self.send(req).await?;
        Ok(())
    }

    /// `POST /queues/{q}/leases/{lease}/extend`: the lease now runs `lease` from now.
    pub async fn extend(
        &self,
        queue: &str,
        lease: &str,
        duration: Option<Duration>,
    ) -> Result<Message, Error> {
        let mut req = self.request(Method::POST, &Self::lease_path(queue, lease, "extend"));
        if let Some(d) = duration {
            req = req.query(&[("lease", secs(d))]);
        }
        self.json(req).await
    }

    /// `POST /queues/{q}/ack` with many lease ids.
    pub async fn ack_batch(&self, queue: &str, leases: &[String]) -> Result<AckResult, Error> {
        self.json(
            self.request(Method::POST, &Self::queue_path(queue, "/ack"))
                .json(leases),
        )
        .await
    }

    /// `POST /queues/{q}/nack?delay=S` with many lease ids: back to ready after `delay` (with
    /// none, to the front in the order given).
    pub async fn nack_batch(
        &self,
        queue: &str,
        leases: &[String],
        delay: Option<Duration>,
    ) -> Result<NackResult, Error> {
        let mut req = self
            .request(Method::POST, &Self::queue_path(queue, "/nack"))
            .json(leases);
        if let Some(delay) = delay {
            req = req.query(&[("delay", secs(delay))]);
        }
        self.json(req).await
    }

    /// `POST /queues/{q}/extend?lease=S` with many lease ids: each now runs `duration` from
    /// now (the queue's lease length by default).
    pub async fn extend_batch(
        &self,
        queue: &str,
        leases: &[String],
        duration: Option<Duration>,
    ) -> Result<ExtendResult, Error> {
        let mut req = self
            .request(Method::POST, &Self::queue_path(queue, "/extend"))
            .json(leases);
        if let Some(d) = duration {
            req = req.query(&[("lease", secs(d))]);
        }
        self.json(req).await
    }

    /// `POST /queues/{q}/release` with the lease ids of items never started: back to the front
    /// in the order given, their attempt not counted.
    pub async fn release(&self, queue: &str, leases: &[String]) -> Result<ReleaseResult, Error> {
        self.json(
            self.request(Method::POST, &Self::queue_path(queue, "/release"))
                .json(leases),
        )
        .await
    }

    /// `GET /queues/{q}/dead?limit=N`.
    pub async fn dead_letters(
        &self,
        queue: &str,
        limit: Option<u32>,
    ) -> Result<Vec<DeadLetter>, Error> {
        let mut req = self.request(Method::GET, &Self::queue_path(queue, "/dead"));
        if let Some(limit) = limit {
            req = req.query(&[("limit", limit)]);
        }
        let list: DeadLetterList = self.json(req).await?;
        Ok(list.messages)
    }

    /// `POST /queues/{q}/dead/requeue`: dead letters back to ready; returns how many.
    pub async fn requeue_dead(&self, queue: &str) -> Result<u64, Error> {
        let r: CountResult = self
            .json(self.request(Method::POST, &Self::queue_path(queue, "/dead/requeue")))
            .await?;
        Ok(r.count)
    }

    /// `DELETE /queues/{q}/dead`: purges the dead letters; returns how many.
    pub async fn purge_dead(&self, queue: &str) -> Result<u64, Error> {
        let r: CountResult = self
            .json(self.request(Method::DELETE, &Self::queue_path(queue, "/dead")))
            .await?;
        Ok(r.count)
    }

    /// The server's root (`http://host:8080`): `/jobs` lives outside the queue base path.
    fn root_url(&self) -> &str {
        self.base
            .strip_suffix(crate::BASE_PATH)
            .unwrap_or(&self.base)
    }

    fn root_request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.root_url(), path))
    }

    /// `GET /jobs`: the consumer Jobs the server launched in its namespace.
    pub async fn jobs(&self) -> Result<JobList, Error> {
        self.json(self.root_request(Method::GET, "/jobs")).await
    }

    /// `POST /jobs`: launches a consumer Job for `request.queue` from the server's template.
    pub async fn create_job(&self, request: &CreateJobRequest) -> Result<JobSummary, Error> {
        let obj: JobObject = self
            .json(self.root_request(Method::POST, "/jobs").json(request))
            .await?;
        Ok(obj.job)
    }

    /// `DELETE /jobs/{name}`: deletes a consumer Job and its pods; answers its last summary.
    pub async fn delete_job(&self, name: &str) -> Result<JobSummary, Error> {
        let mut path = String::from("/jobs/");
        path.extend(form_escape(name));
        let obj: JobObject = self.json(self.root_request(Method::DELETE, &path)).await?;
        Ok(obj.job)
    }

    /// `GET /queues/{q}/messages?limit=N`: a peek at ready items.
    pub async fn peek(&self, queue: &str, limit: Option<u32>) -> Result<Vec<Message>, Error> {
        let mut req = self.request(Method::GET, &Self::queue_path(queue, "/messages"));
        if let Some(limit) = limit {
            req = req.query(&[("limit", limit)]);
        }
        let list: MessageList = self.json(req).await?;
        Ok(list.messages)
    }
}

/// Percent-escapes a path segment (everything but unreserved characters).
fn form_escape(segment: &str) -> impl Iterator<Item = char> + '_ {
    segment.bytes().flat_map(|b| {
        let keep = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        let hex = b"0123456789ABCDEF";
        let chars = if keep {
            [b as char, '\0', '\0']
        } else {
            [
                '%',
                hex[(b >> 4) as usize] as char,
                hex[(b & 15) as usize] as char,
            ]
        };
        chars.into_iter().filter(|c| *c != '\0')
    })
}

async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, Error> {
    let bytes = resp.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        Error::Decode(format!("{e} in {shown:?}"))
    })
}

async fn api_error(resp: reqwest::Response) -> Error {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let bytes = resp.bytes().await.unwrap_or_default();
    match serde_json::from_slice::<ApiError>(&bytes) {
        Ok(e) => Error::Api {
            status,
            code: e.code,
            message: e.message,
            retry_after,
        },
        Err(_) => Error::Api {
            status,
            code: format!("http_{status}"),
            message: String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                .trim()
                .to_string(),
            retry_after,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_path_segments() {
        assert_eq!(form_escape("keygen").collect::<String>(), "keygen");
        assert_eq!(form_escape("../x").collect::<String>(), "..%2Fx");
        assert_eq!(form_escape("a b").collect::<String>(), "a%20b");
    }

    #[test]
    fn job_routes_live_at_the_server_root() {
        let c = Client::new("http://queue:8080/memq/server/").unwrap();
        assert_eq!(c.root_url(), "http://queue:8080");
        let c = Client::new("http://proxy/x").unwrap();
        assert_eq!(c.root_url(), "http://proxy/x");
    }

    #[test]
    fn formats_durations_for_query_strings() {
        assert_eq!(secs(Duration::from_secs(30)), "30");
        assert_eq!(secs(Duration::from_millis(250)), "250ms");
    }
}
