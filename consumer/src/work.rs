//! The work done per item: an external command (`--exec`) or a built-in workload. Work is a
//! future, and dropping it cancels it: an `--exec` child is killed, a keygen loop stops at its
//! next check. That is how shutdown takes items back without waiting for slow work.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::AsyncWriteExt;

use crate::cli::BuiltinWork;

/// What to do with each item.
#[derive(Debug, Clone)]
pub enum Work {
    /// Run a command per item.
    Exec {
        /// The program, resolved on PATH at start.
        program: PathBuf,
        /// Its arguments.
        args: Vec<String>,
    },
    /// A built-in workload.
    Builtin(BuiltinWork),
}

/// One item as the work sees it.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    /// The item's id.
    pub id: &'a str,
    /// The item's text.
    pub body: &'a str,
    /// The queue it came from.
    pub queue: &'a str,
    /// Delivery count, 1 on the first (also 1 without leases).
    pub attempt: u32,
}

/// How the work ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: ack.
    Done,
    /// Failed: nack, so it is retried (and dead-lettered after maxAttempts).
    Failed {
        /// What went wrong, for the log.
        reason: String,
        /// When to try again, if the work said (a `--worker`'s `retryAfter`); else the
        /// consumer's `--retry-delay` backoff.
        retry_after: Option<std::time::Duration>,
    },
}

impl Outcome {
    /// A failure that leaves the retry's delay to the consumer.
    pub fn failed(reason: impl Into<String>) -> Self {
        Outcome::Failed {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

/// Finds `program` the way a shell would: as given when it has a slash, else on PATH. Done once
/// at start so a typo fails the consumer (exit 2) instead of sending every item to the dead
/// letters.
pub fn resolve_program(program: &str) -> Result<PathBuf, String> {
    let runnable = |p: &Path| p.is_file() && is_executable(p);
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if runnable(&path) {
            Ok(path)
        } else {
            Err(format!("--exec {program}: no such executable file"))
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(program))
        .find(|p| runnable(p))
        .ok_or_else(|| format!("--exec {program}: not found on PATH"))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(_path: &Path) -> bool {
    true
}

impl Work {
    /// Does the work for one item.
    pub async fn perform(&self, job: &Job<'_>) -> Outcome {
        match self {
            Work::Exec { program, args } => exec(program, args, job).await,
            Work::Builtin(BuiltinWork::Keygen { rounds }) => keygen(job, *rounds).await,
            Work::Builtin(BuiltinWork::Sleep(d)) => {
                tokio::time::sleep(*d).await;
                Outcome::Done
            }
            Work::Builtin(BuiltinWork::Noop) => Outcome::Done,
        }
    }
}

async fn exec(program: &Path, args: &[String], job: &Job<'_>) -> Outcome {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("MEMQ_MESSAGE_ID", job.id)
        .env("MEMQ_QUEUE", job.queue)
        .env("MEMQ_ATTEMPT", job.attempt.to_string())
        .stdin(Stdio::piped())
        // Dropping this future (shutdown, lost lease) must not leave the command running.
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => return Outcome::failed(format!("cannot start {}: {err}", program.display())),
    };
    let stdin = child.stdin.take();
    let feed = async move {
        if let Some(mut stdin) = stdin {
            // A command that ignores its input and exits closes the pipe: not an error.
            let _ = stdin.write_all(job.body.as_bytes()).await;
        }
    };
    let (_, status) = tokio::join!(feed, child.wait());
    match status {
        Ok(status) if status.success() => Outcome::Done,
        Ok(status) => Outcome::failed(format!("command {status}")),
        Err(err) => Outcome::failed(format!("waiting for the command: {err}")),
    }
}

/// Sets its flag when dropped, to stop work on a blocking thread that cannot be aborted.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn keygen(job: &Job<'_>, rounds: u32) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let _guard = StopOnDrop(stop.clone());
    let body = job.body.to_string();
    // CPU-bound: off the async threads, so heartbeats keep their schedule.
    let key = tokio::task::spawn_blocking(move || derive_key(&body, rounds, &stop)).await;
    match key {
        Ok(Some(key)) => {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}: key {hex} ({} rounds)", job.body, rounds);
            Outcome::Done
        }
        Ok(None) => Outcome::failed("stopped"),
        Err(err) => Outcome::failed(format!("keygen task failed: {err}")),
    }
}

/// The keygen workload: SHA-256 of the text, hashed again `rounds - 1` times (a classic key
/// stretching loop, real CPU work with a checkable result). None when stopped early.
pub fn derive_key(text: &str, rounds: u32, stop: &AtomicBool) -> Option<[u8; 32]> {
    let sha = &ring::digest::SHA256;
    let mut key = [0u8; 32];
    key.copy_from_slice(ring::digest::digest(sha, text.as_bytes()).as_ref());
    for round in 1..rounds {
        if round % 4096 == 0 && stop.load(Ordering::Relaxed) {
            return None;
        }
        let next = ring::digest::digest(sha, &key);
        key.copy_from_slice(next.as_ref());
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job<'a>(body: &'a str) -> Job<'a> {
        Job {
            id: "01ID",
            body,
            queue: "q",
            attempt: 2,
        }
    }

    #[test]
    fn keys_are_iterated_sha256() {
        let stop = AtomicBool::new(false);
        let one = derive_key("work-item-0", 1, &stop).unwrap();
        let expected = ring::digest::digest(&ring::digest::SHA256, b"work-item-0");
        assert_eq!(&one[..], expected.as_ref());
        let two = derive_key("work-item-0", 2, &stop).unwrap();
        assert_eq!(
            &two[..],
            ring::digest::digest(&ring::digest::SHA256, &one).as_ref()
        );
        assert_ne!(derive_key("work-item-1", 2, &stop).unwrap(), two);
    }

    #[test]
    fn keygen_stops_when_asked() {
        let stop = AtomicBool::new(true);
        assert_eq!(derive_key("x", 1_000_000_000, &stop), None);
    }

    #[test]
    fn programs_resolve_on_path() {
        assert!(resolve_program("sh").unwrap().is_absolute());
        assert!(resolve_program("/bin/sh").is_ok());
        assert!(resolve_program("no-such-program-memq").is_err());
        assert!(resolve_program("/no/such/program").is_err());
    }

    #[tokio::test]
    async fn exec_gets_body_and_environment() {
        let sh = resolve_program("sh").unwrap();
        let script = r#"read -r body; [ "$body" = hello ] && [ "$MEMQ_MESSAGE_ID" = 01ID ] && [ "$MEMQ_QUEUE" = q ] && [ "$MEMQ_ATTEMPT" = 2 ]"#;
        let work = Work::Exec {
            program: sh.clone(),
            args: vec!["-c".into(), script.into()],
        };
        assert_eq!(work.perform(&job("hello")).await, Outcome::Done);
        assert!(matches!(
            work.perform(&job("other")).await,
            Outcome::Failed { .. }
        ));
        // A command that does not read its input still works.
        let ignore = Work::Exec {
            program: sh,
            args: vec!["-c".into(), "exit 0".into()],
        };
        assert_eq!(
            ignore.perform(&job(&"x".repeat(1 << 20))).await,
            Outcome::Done
        );
    }

    #[tokio::test]
    async fn builtins_finish() {
        let noop = Work::Builtin(BuiltinWork::Noop);
        assert_eq!(noop.perform(&job("x")).await, Outcome::Done);
        let keygen = Work::Builtin(BuiltinWork::Keygen { rounds: 10 });
        assert_eq!(keygen.perform(&job("x")).await, Outcome::Done);
    }
}
