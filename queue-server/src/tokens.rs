//! Who may do what: the bearer tokens the server accepts (`--token`, `--token-file`,
//! `--tokens-file`), each with a role and the queues it covers.
//!
//! A token is held only as its SHA-256 digest. A request's token is hashed once and compared
//! with every known digest in constant time, so that neither the time taken nor an early exit
//! tells anything about a token's length, prefix, or which entry came close.
//!
//! `--tokens-file` is re-read when it changes (a mounted Secret is swapped in place): a file
//! that does not parse keeps the last good set and logs why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use wildmatch::WildMatch;

use crate::metrics::TokenMetrics;

/// What a token may do. `producer` and `consumer` each add their work to `reader`'s reads;
/// `admin` may do everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Stats, queue figures, leases, item lookups, the dashboard's views.
    Reader,
    /// Reader + enqueue.
    Producer,
    /// Reader + dequeue, ack, nack, extend.
    Consumer,
    /// Everything: queue create/config, delete, drain, pause, resume, dead letters' requeue and
    /// purge, `/jobs`.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 4] = [Role::Reader, Role::Producer, Role::Consumer, Role::Admin];

    /// Whether a token of this role may call a route that needs `need`.
    pub fn grants(self, need: Role) -> bool {
        self == Role::Admin || need == Role::Reader || self == need
    }

    /// Its name in a tokens file and in answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Producer => "producer",
            Role::Consumer => "consumer",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            // The value is not repeated: on a line whose fields are out of order it could be
            // the token.
            .ok_or_else(|| "unknown role: use reader, producer, consumer or admin".to_string())
    }
}

/// The queues a token covers: a glob of `*` (any run of characters) and `?` (one character).
#[derive(Debug, Clone)]
pub struct Queues {
    text: String,
    glob: WildMatch,
}

impl Queues {
    /// Every queue (`*`).
    pub fn all() -> Self {
        Queues::parse("*").expect("`*` is a glob")
    }

    /// Checks that the glob can match some queue name: a queue name holds letters, digits,
    /// `.`, `_` and `-` and starts with a letter or digit, so a glob with any other character,
    /// or one that starts with `.`, `_` or `-`, would match nothing. Errors do not repeat the
    /// glob (a line with its fields out of order could hold the token there).
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*' | '?')))
        {
            return Err(format!(
                "the queues glob matches no queue: {bad:?} is not in any queue name (names \
                 hold letters, digits, '.', '_' and '-'; the glob may add '*' and '?')"
            ));
        }
        if text.starts_with(['.', '_', '-']) {
            return Err(
                "the queues glob matches no queue: queue names start with a letter or digit"
                    .to_string(),
            );
        }
        if text.len() > memq::name::MAX_QUEUE_NAME_LEN && !text.contains('*') {
            return Err(format!(
                "the queues glob matches no queue: it is longer than a queue name may be ({} \
                 bytes)",
                memq::name::MAX_QUEUE_NAME_LEN
            ));
        }
        Ok(Queues {
            text: text.to_string(),
            glob: WildMatch::new(text),
        })
    }

    /// Whether it covers every queue.
    pub fn is_all(&self) -> bool {
        self.text == "*"
    }

    /// Whether it covers `queue`.
    pub fn covers(&self, queue: &str) -> bool {
        self.is_all() || self.glob.matches(queue)
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// What one token may do, and the name it is known by (in the audit trail and in answers;
/// never the token itself).
#[derive(Debug)]
pub struct Grant {
    /// The entry's name, or `the admin token` for `--token`/`--token-file`.
    pub name: Arc<str>,
    /// Its role.
    pub role: Role,
    /// The queues it covers.
    pub queues: Queues,
}

/// The name `--token` and `--token-file` go by.
pub const ADMIN_TOKEN: &str = "the admin token";

/// A set of tokens, each held as its SHA-256 digest.
#[derive(Debug, Default)]
pub struct TokenSet {
    entries: Vec<([u8; 32], Arc<Grant>)>,
}

impl TokenSet {
    /// The one admin token of `--token` / `--token-file`.
    pub fn admin(token: &str) -> Self {
        TokenSet {
            entries: vec![(
                sha256(token.as_bytes()),
                Arc::new(Grant {
                    name: ADMIN_TOKEN.into(),
                    role: Role::Admin,
                    queues: Queues::all(),
                }),
            )],
        }
    }

    /// Parses a tokens file: one `NAME ROLE QUEUES TOKEN` per line, `#` comment lines, blank
    /// lines. TOKEN is the secret itself or `sha256:HEX` of it. Errors name the line and what
    /// to change, never a token.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut set = TokenSet::default();
        let mut lines: Vec<usize> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (digest, grant) = parse_line(line).map_err(|e| format!("line {number}: {e}"))?;
            if let Some(i) = set.entries.iter().position(|(_, g)| g.name == grant.name) {
                return Err(format!(
                    "line {number}: the name {:?} is taken by line {}; give each token its own name",
                    grant.name, lines[i]
                ));
            }
            if let Some(i) = set.entries.iter().position(|(d, _)| *d == digest) {
                return Err(format!(
                    "line {number}: {:?} has the same token as {:?} (line {}); give each its own",
                    grant.name, set.entries[i].1.name, lines[i]
                ));
            }
            set.entries.push((digest, Arc::new(grant)));
            lines.push(number);
        }
        if set.entries.is_empty() {
            return Err(
                "it holds no token: add lines of the form `NAME ROLE QUEUES TOKEN`".to_string(),
            );
        }
        Ok(set)
    }

    /// The grant of a bearer token, if it is one of the set. Every entry is compared, in
    /// constant time.
    pub fn find(&self, token: &[u8]) -> Option<&Arc<Grant>> {
        let given = sha256(token);
        let mut found = None;
        for (digest, grant) in &self.entries {
            if bool::from(given.ct_eq(digest)) {
                found = Some(grant);
            }
        }
        found
    }

    /// How many tokens it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn parse_line(line: &str) -> Result<([u8; 32], Grant), String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [name, role, queues, token] = fields[..] else {
        return Err(format!(
            "{} fields where 4 are expected: `NAME ROLE QUEUES TOKEN`{}",
            fields.len(),
            if fields.len() == 3 {
                " (is the token missing or empty?)"
            } else {
                ""
            }
        ));
    };
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(
            "the name (the first field) may hold only letters, digits, '.', '_' and '-'"
                .to_string(),
        );
    }
    let role: Role = role.parse()?;
    let queues = Queues::parse(queues)?;
    let digest = match token.strip_prefix("sha256:") {
        Some(hex) => parse_hex_digest(hex).ok_or_else(|| {
            format!("the token of {name:?} starts with `sha256:` but is not 64 hex digits after it")
        })?,
        None => sha256(token.as_bytes()),
    };
    // No request could ever be refused for lacking a token it would then hold.
    if digest == sha256(b"") {
        return Err(format!(
            "the token of {name:?} is the SHA-256 of an empty token (was the variable hashed \
             unset?); give it a digest of a real token"
        ));
    }
    Ok((
        digest,
        Grant {
            name: name.into(),
            role,
            queues,
        },
    ))
}

fn parse_hex_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    digest(&SHA256, bytes)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// The tokens the server accepts, or none (no auth). Cheap to read on every request.
#[derive(Debug)]
pub struct Tokens {
    /// `None`: no token configured, every request passes.
    set: Option<ArcSwap<TokenSet>>,
    /// `--tokens-file`, watched for changes.
    file: Option<PathBuf>,
    /// The admin token of `--token` / `--token-file`, kept beside the file's entries.
    admin: Option<String>,
    /// The file's content as loaded at start: a change after that is a change for the watch.
    loaded: Option<Vec<u8>>,
}

/// How often `--tokens-file` is checked for a change.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

impl Tokens {
    /// From `--token`/`--token-file` (already read into `admin`) and `--tokens-file`.
    pub fn load(admin: Option<&str>, file: Option<&Path>) -> anyhow::Result<Self> {
        let loaded = file
            .map(|path| {
                std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("cannot read --tokens-file {}: {e}", path.display())
                })
            })
            .transpose()?;
        let set = match (admin, &loaded) {
            (None, None) => None,
            (admin, text) => Some(ArcSwap::from_pointee(combine(
                admin,
                text.as_deref(),
                file,
            )?)),
        };
        Ok(Tokens {
            set,
            file: file.map(Path::to_path_buf),
            admin: admin.map(str::to_string),
            loaded,
        })
    }

    /// Whether requests need a token at all.
    pub fn enabled(&self) -> bool {
        self.set.is_some()
    }

    /// The grant of a bearer token; `None` for a missing or unknown one. Only when
    /// [`Self::enabled`].
    pub fn find(&self, token: &[u8]) -> Option<Arc<Grant>> {
        self.set.as_ref()?.load().find(token).cloned()
    }

    /// Whether `grant` is still one of the tokens in force (false once a reload replaced the
    /// set: a long-lived response such as the stats stream then ends, and the client's next
    /// request is checked against the new set).
    pub fn holds(&self, grant: &Arc<Grant>) -> bool {
        self.set.as_ref().is_some_and(|set| {
            set.load()
                .entries
                .iter()
                .any(|(_, g)| Arc::ptr_eq(g, grant))
        })
    }

    /// Re-reads `--tokens-file` each [`RELOAD_EVERY`] until `cancel`, swapping in a new set
    /// when its content changed and parses; a broken file keeps the last good set.
    pub async fn watch(self: Arc<Self>, metrics: TokenMetrics, cancel: CancellationToken) {
        metrics.accepted(self.set.as_ref().map_or(0, |set| set.load().len()));
        let (Some(path), Some(set)) = (self.file.clone(), self.set.as_ref()) else {
            return;
        };
        let mut last = self.loaded.clone();
        let mut tick = tokio::time::interval(RELOAD_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = match tokio::fs::read(&path).await {
                Ok(bytes) => Some(bytes),
                Err(e) => {
                    if last.is_some() {
                        metrics.reloaded(false);
                        tracing::warn!(file = %path.display(), error = %e,
                            "cannot read --tokens-file; keeping the tokens read before (restore the file)");
                    }
                    last = None;
                    continue;
                }
            };
            if now == last {
                continue;
            }
            last = now;
            match combine(self.admin.as_deref(), last.as_deref(), Some(&path)) {
                Ok(new) => {
                    tracing::info!(file = %path.display(), tokens = new.len(), "--tokens-file reloaded");
                    metrics.accepted(new.len());
                    metrics.reloaded(true);
                    set.store(Arc::new(new));
                }
                Err(e) => {
                    metrics.reloaded(false);
                    tracing::warn!(
                        error = %e,
                        "--tokens-file changed but does not parse; keeping the tokens read before (fix the line named)"
                    );
                }
            }
        }
    }
}

/// The set of `--tokens-file`'s content `text` (read from `file`, named in errors) and the admin
/// token.
fn combine(
    admin: Option<&str>,
    text: Option<&[u8]>,
    file: Option<&Path>,
) -> anyhow::Result<TokenSet> {
    let name = file.map_or("?".into(), |p| p.display().to_string());
    let mut set = match text {
        Some(bytes) => {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| anyhow::anyhow!("--tokens-file {name} is not UTF-8 text"))?;
            TokenSet::parse(text).map_err(|e| anyhow::anyhow!("--tokens-file {name}: {e}"))?
        }
        None => TokenSet::default(),
    };
    if let Some(token) = admin {
        let admin = TokenSet::admin(token);
        if set.find(token.as_bytes()).is_some() {
            anyhow::bail!("--tokens-file holds the same token as --token; give each its own");
        }
        set.entries.extend(admin.entries);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_hex(token: &str) -> String {
        sha256(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn a_file_maps_each_token_to_its_name_role_and_queues() {
        let text = format!(
            "# who may do what\n\n  batch-producer producer keygen* p-s3cret\n\
             workers consumer keygen-? c-s3cret\nops admin * sha256:{}\nlook reader * r\n",
            digest_hex("a-s3cret").to_uppercase()
        );
        let set = TokenSet::parse(&text).unwrap();
        assert_eq!(set.len(), 4);
        let p = set.find(b"p-s3cret").unwrap();
        assert_eq!((&*p.name, p.role), ("batch-producer", Role::Producer));
        assert!(p.queues.covers("keygen") && p.queues.covers("keygen-2"));
        assert!(!p.queues.covers("other") && !p.queues.covers("xkeygen"));
        let c = set.find(b"c-s3cret").unwrap();
        assert!(c.queues.covers("keygen-1") && !c.queues.covers("keygen-10"));
        assert_eq!(set.find(b"a-s3cret").unwrap().role, Role::Admin);
        assert_eq!(set.find(b"r").unwrap().role, Role::Reader);
        assert!(set.find(b"sha256:").is_none());
        assert!(set.find(b"p-s3cre").is_none() && set.find(b"").is_none());
    }

    #[test]
    fn each_bad_line_is_refused_with_its_number_and_what_to_change() {
        let bad = [
            ("a producer q", "line 1: 3 fields where 4 are expected"),
            ("a producer q t extra", "5 fields"),
            ("a writer q t", "line 1: unknown role: use reader"),
            ("a/b reader q t", "the name (the first field)"),
            (
                "a reader q sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                "SHA-256 of an empty token",
            ),
            ("tok3n-s3cret a reader q", "line 1: unknown role"),
            ("a reader keygen/* t", "matches no queue"),
            ("a reader -x* t", "start with a letter or digit"),
            ("a reader q sha256:abc", "not 64 hex digits"),
            (
                "a reader q t\na admin * u",
                "line 2: the name \"a\" is taken by line 1",
            ),
            (
                "a reader q t\nb admin * t",
                "line 2: \"b\" has the same token as \"a\"",
            ),
            ("# nothing\n", "holds no token"),
        ];
        for (text, want) in bad {
            let err = TokenSet::parse(text).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains(" t\"") && !err.contains("\"u\""), "{err}");
            assert!(!err.contains("tok3n"), "{err}");
        }
    }

    #[test]
    fn roles_grant_reads_to_all_and_work_to_their_own() {
        use Role::*;
        let table: Vec<(Role, Vec<Role>)> = Role::ALL
            .into_iter()
            .map(|has| {
                (
                    has,
                    Role::ALL.into_iter().filter(|n| has.grants(*n)).collect(),
                )
            })
            .collect();
        assert_eq!(
            table,
            [
                (Reader, vec![Reader]),
                (Producer, vec![Reader, Producer]),
                (Consumer, vec![Reader, Consumer]),
                (Admin, vec![Reader, Producer, Consumer, Admin]),
            ]
        );
    }

    #[test]
    fn the_admin_token_sits_beside_the_file_and_may_not_repeat_one_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "r reader * r-tok\n").unwrap();
        let tokens = Tokens::load(Some("adm"), Some(&path)).unwrap();
        assert_eq!(&*tokens.find(b"adm").unwrap().name, ADMIN_TOKEN);
        assert_eq!(&*tokens.find(b"r-tok").unwrap().name, "r");
        let err = Tokens::load(Some("r-tok"), Some(&path)).unwrap_err();
        assert!(err.to_string().contains("same token as --token"), "{err}");
        let none = Tokens::load(None, None).unwrap();
        assert!(!none.enabled() && none.find(b"x").is_none());
        let err = Tokens::load(None, Some(&dir.path().join("missing"))).unwrap_err();
        assert!(
            err.to_string().contains("cannot read --tokens-file"),
            "{err}"
        );
    }
}
