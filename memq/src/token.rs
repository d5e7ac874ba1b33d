//! Where a client's bearer token comes from: a fixed string (`--token`), or a file
//! (`--token-file`, e.g. the `token` key of a mounted Secret) that is followed as it changes, so
//! a rotated token is picked up without a restart.
//!
//! A file is checked at most once a second (one `stat`; read only when its inode, size or mtime
//! changed), so a request costs a clock read and an uncontended lock. After a 401 the client
//! re-reads it at once ([`TokenSource::reload_after_refusal`]) and tries the request again with
//! the new token, if there is one.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How often a token file is checked for a change at most (besides right after a 401).
pub const TOKEN_FILE_CHECK: Duration = Duration::from_secs(1);

/// Why a token file cannot be used at start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot use --token-file {}: {why}; write the bearer token into it (in a pod: mount the role's \
     Secret memq-token-ROLE, key `token`, from scripts/make-tokens.sh), or use --token",
    path.display()
)]
pub struct TokenFileError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub why: String,
}

/// The bearer token of a client: fixed, or read from a file that may change.
#[derive(Clone)]
pub struct TokenSource(Inner);

#[derive(Clone)]
enum Inner {
    Fixed(Arc<str>),
    File(Arc<TokenFile>),
}

struct TokenFile {
    path: PathBuf,
    state: Mutex<FileState>,
}

struct FileState {
    token: Arc<str>,
    /// The token the file held before `token`, if it changed since the start.
    previous: Option<Arc<str>>,
    /// What the file was when `token` was read: a change of any of these means a new file.
    stamp: Option<Stamp>,
    checked: Instant,
    /// The last problem logged, so that a file that stays broken is reported once.
    problem: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<SystemTime>,
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
    }
}

/// The token in `path` (trimmed) and what the file was when read.
fn read_token(path: &Path) -> Result<(String, Stamp), String> {
    // Stat first: a file replaced between the two reads is seen as changed at the next check.
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.is_dir() {
        return Err(
            "it is a directory, not a file (mount the Secret's key `token` in it: \
                    the path ends in /token)"
                .into(),
        );
    }
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let token = text.trim();
    if token.is_empty() {
        return Err("it is empty".into());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "it holds more than one token: spaces, line breaks or non-ASCII characters inside"
                .into(),
        );
    }
    Ok((token.to_string(), stamp(&meta)))
}

impl TokenSource {
    /// Always this token.
    pub fn fixed(token: impl Into<String>) -> Self {
        Self(Inner::Fixed(token.into().into()))
    }

    /// The token in the file at `path`, whitespace trimmed, followed as the file changes. The
    /// file must hold a token now; later an unreadable or empty file keeps the last token (and
    /// says so in the log), as during the swap of a mounted Secret.
    pub fn file(path: impl Into<PathBuf>) -> Result<Self, TokenFileError> {
        let path = path.into();
        let (token, stamp) = read_token(&path).map_err(|why| TokenFileError {
            path: path.clone(),
            why,
        })?;
        Ok(Self(Inner::File(Arc::new(TokenFile {
            path,
            state: Mutex::new(FileState {
                token: token.into(),
                previous: None,
                stamp: Some(stamp),
                checked: Instant::now(),
                problem: None,
            }),
        }))))
    }

    /// The source the flags describe: `--token` or `--token-file` (not both), or none.
    pub fn from_flags(
        token: Option<String>,
        file: Option<&Path>,
    ) -> Result<Option<Self>, TokenFileError> {
        match (token.filter(|t| !t.is_empty()), file) {
            (Some(_), Some(path)) => Err(TokenFileError {
                path: path.to_owned(),
                why: "--token (MEMQ_TOKEN) is given too".into(),
            }),
            (Some(token), None) => Ok(Some(Self::fixed(token))),
            (None, Some(path)) => Self::file(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The file the token is read from, if any.
    pub fn path(&self) -> Option<&Path> {
        match &self.0 {
            Inner::Fixed(_) => None,
            Inner::File(f) => Some(&f.path),
        }
    }

    /// The token to send now: for a file, the last one read, re-checked when a second has
    /// passed since the last check.
    pub fn current(&self) -> Arc<str> {
        match &self.0 {
            Inner::Fixed(token) => token.clone(),
            Inner::File(f) => f.current(false),
        }
    }

    /// After the server refused `refused` (401): re-reads the file at once; the new token if it
    /// is another one (the request is worth one more try). Else, if the file changed before,
    /// the token it held until then: during a rotation a client's Secret can be refreshed before
    /// the server's tokens file is, and the server still takes the token before. Else `None`.
    pub fn reload_after_refusal(&self, refused: &str) -> Option<Arc<str>> {
        match &self.0 {
            Inner::Fixed(_) => None,
            Inner::File(f) => {
                let now = f.current(true);
                if &*now != refused {
                    return Some(now);
                }
                let state = f.state.lock().unwrap_or_else(|e| e.into_inner());
                state.previous.clone().filter(|p| &**p != refused)
            }
        }
    }
}

impl TokenFile {
    fn current(&self, now: bool) -> Arc<str> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !now && state.checked.elapsed() < TOKEN_FILE_CHECK {
            return state.token.clone();
        }
        state.checked = Instant::now();
        let changed = match std::fs::metadata(&self.path) {
            Ok(meta) => Some(stamp(&meta)) != state.stamp,
            // Reported by the read below.
            Err(_) => true,
        };
        if !changed && !now {
            return state.token.clone();
        }
        match read_token(&self.path) {
            Ok((token, stamp)) => {
                if *token != *state.token {
                    tracing::info!(path = %self.path.display(), "token file changed: using its new token");
                    let before = std::mem::replace(&mut state.token, token.into());
                    state.previous = Some(before);
                }
                state.stamp = Some(stamp);
                state.problem = None;
            }
            Err(why) => {
                if state.problem.as_deref() != Some(why.as_str()) {
                    tracing::warn!(
                        path = %self.path.display(),
                        error = %why,
                        "cannot read the token file; keeping the last token read from it"
                    );
                }
                state.problem = Some(why);
                // Look again at the next check, whatever the file's stamp then.
                state.stamp = None;
            }
        }
        state.token.clone()
    }
}

/// Never shows the token.
impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Fixed(_) => f.write_str("TokenSource::Fixed(..)"),
            Inner::File(file) => write!(f, "TokenSource::File({:?})", file.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replace(path: &Path, text: &str) {
        let next = path.with_extension("next");
        std::fs::write(&next, text).unwrap();
        std::fs::rename(&next, path).unwrap();
    }

    #[test]
    fn reads_the_file_trimmed_and_refuses_a_bad_one_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret\n").unwrap();
        let source = TokenSource::file(&path).unwrap();
        assert_eq!(&*source.current(), "s3cret");
        assert!(!format!("{source:?}").contains("s3cret"));

        for (text, why) in [("\n \n", "it is empty"), ("a b\n", "more than one token")] {
            std::fs::write(&path, text).unwrap();
            let err = TokenSource::file(&path).unwrap_err().to_string();
            assert!(
                err.contains(why) && err.contains("memq-token-ROLE"),
                "{err}"
            );
        }
        let err = TokenSource::file(dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--token-file") && err.contains("missing"),
            "{err}"
        );
        let err = TokenSource::file(dir.path()).unwrap_err().to_string();
        assert!(err.contains("directory"), "{err}");
    }

    #[test]
    fn token_and_token_file_together_are_refused() {
        let err = TokenSource::from_flags(Some("t".into()), Some(Path::new("/x")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--token (MEMQ_TOKEN) is given too"), "{err}");
        assert!(TokenSource::from_flags(None, None).unwrap().is_none());
        let fixed = TokenSource::from_flags(Some("t".into()), None)
            .unwrap()
            .unwrap();
        assert_eq!(&*fixed.current(), "t");
        assert_eq!(fixed.reload_after_refusal("t"), None);
    }

    #[test]
    fn follows_the_file_at_most_once_a_second_and_at_once_after_a_refusal_then_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old\n").unwrap();
        let source = TokenSource::file(&path).unwrap();
        replace(&path, "new\n");
        // Within the second since the last check: still the old one, no file access.
        assert_eq!(&*source.current(), "old");
        // A refusal of the old token reads the file now.
        assert_eq!(source.reload_after_refusal("old").as_deref(), Some("new"));
        assert_eq!(&*source.current(), "new");
        // The new one refused: the server may not have it yet, so the one before is worth a try.
        assert_eq!(source.reload_after_refusal("new").as_deref(), Some("old"));
        assert_eq!(
            &*source.current(),
            "new",
            "the file's token stays the one sent first"
        );

        // A second later the change is seen without a refusal.
        replace(&path, "newer\n");
        let Inner::File(file) = &source.0 else {
            unreachable!()
        };
        file.state.lock().unwrap().checked -= TOKEN_FILE_CHECK;
        assert_eq!(&*source.current(), "newer");

        // An empty or missing file later keeps the last token (and the one before it to try).
        replace(&path, "");
        assert_eq!(source.reload_after_refusal("newer").as_deref(), Some("new"));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(source.reload_after_refusal("newer").as_deref(), Some("new"));
        assert_eq!(&*source.current(), "newer");
        // The one before refused: the current one is the other to try.
        assert_eq!(source.reload_after_refusal("new").as_deref(), Some("newer"));
        std::fs::write(&path, "back\n").unwrap();
        assert_eq!(
            source.reload_after_refusal("newer").as_deref(),
            Some("back")
        );
    }
}
