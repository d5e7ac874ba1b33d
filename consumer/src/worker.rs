//! `--worker CMD`: a long-lived process per slot, in any language, speaking JSON lines.
//!
//! The consumer writes one line per item to the worker's stdin,
//! `{"id":ITEM,"body":TEXT,"attempt":N,"queue":Q,"lease":LEASE}` (the body as JSON text:
//! items are UTF-8 text by the API's rule; `lease` is null for a kuard dequeue), and reads one
//! line per item from its stdout, `{"id":ITEM,"ok":true}` or
//! `{"id":ITEM,"ok":false,"retryAfter":"30s","error":"why"}`, in any order: a worker may hold up
//! to `--worker-items` items at once. Its stderr is the consumer's.
//!
//! A worker that exits, writes a line that is not such an answer (not JSON, an id it does not
//! hold, an item answered twice, a line over [`MAX_ANSWER_BYTES`]) or does not answer within
//! `--item-timeout` is stopped and started again with backoff; the items it held are nacked
//! for a retry, never acked. Leasing, prefetch, batched acks and lease extension are the
//! consumer's, below this module, as for `--work` and `--exec`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use memq::Message;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::Shared;
use crate::retry::Backoff;
use crate::work::Outcome;

/// Longest answer line read from a worker; a longer one is a protocol error (an answer is
/// a few dozen bytes, its `error` text included; this is the server's default item size).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;
/// How long a worker whose input was closed may take to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);
/// A worker that served this long without failing starts from the shortest backoff again.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

/// The command of `--worker`.
#[derive(Debug, Clone)]
pub struct Command {
    /// The program, resolved on PATH at start.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Items one process holds at once (`--worker-items`).
    pub items: usize,
}

/// One item as the worker reads it.
#[derive(Debug, Serialize)]
struct ItemLine<'a> {
    id: &'a str,
    body: &'a str,
    attempt: u32,
    queue: &'a str,
    lease: Option<&'a str>,
}

/// One answer as the worker writes it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    id: String,
    ok: bool,
    #[serde(default)]
    retry_after: Option<RetryAfter>,
    #[serde(default)]
    error: Option<String>,
}

/// `retryAfter`: seconds, or a duration as the flags take it (`30s`, `1m30s`, `1.5`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RetryAfter {
    Seconds(f64),
    Text(String),
}

impl RetryAfter {
    fn duration(&self) -> Result<Duration, String> {
        match self {
            RetryAfter::Seconds(s) => Duration::try_from_secs_f64(*s).map_err(|e| e.to_string()),
            RetryAfter::Text(t) => memq::duration::parse_duration(t),
        }
    }
}

/// Why a worker process stopped serving.
#[derive(Debug)]
enum End {
    /// No more items: its input is closed and it answered everything.
    Finished,
    /// Stopped unfinished (after `--grace`, a fatal error): its items go back.
    Abandoned,
    /// It broke the protocol, exited, or did not answer in time: restart it.
    Failed(String),
}

/// An item a worker holds.
#[derive(Debug)]
struct Pending {
    message: Message,
    sent: Instant,
}

impl Shared {
    /// Runs worker processes for slot `slot` until no items are left, restarting one that
    /// fails.
    pub async fn run_worker(&self, command: &Command, slot: usize) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            let started = Instant::now();
            let end = match spawn(command, &self.queue, slot) {
                Ok(process) => self.serve(command, process, slot).await,
                Err(reason) => End::Failed(reason),
            };
            match end {
                End::Finished | End::Abandoned => return,
                End::Failed(reason) => {
                    if started.elapsed() >= HEALTHY_AFTER {
                        backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
                    }
                    let delay = backoff.next_delay();
                    warn!(slot, %reason, restart_in_ms = delay.as_millis() as u64, "worker failed; its items go back for a retry");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.abandon.cancelled() => return,
                    }
                    if self.buffer_done() {
                        return;
                    }
                }
            }
        }
    }

    /// Whether no item will come for a slot any more (the buffer is closed and empty, or
    /// shutdown).
    fn buffer_done(&self) -> bool {
        self.shutdown.is_cancelled() || self.buffer.is_finished()
    }

    /// Feeds one worker process and reads its answers until it ends.
    async fn serve(&self, command: &Command, mut process: Process, slot: usize) -> End {
        let (lines, rx) = mpsc::unbounded_channel::<Vec<u8>>();
        // Writes run beside the reads, so a worker that writes answers while we write it
        // items cannot block both sides.
        let writer = tokio::spawn(write_lines(process.stdin.take(), rx));
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut order: VecDeque<String> = VecDeque::new();
        let mut input_closed = false;
        let end = loop {
            if input_closed && pending.is_empty() {
                break End::Finished;
            }
            let oldest = self.item_timeout.and_then(|limit| {
                while let Some(id) = order.front() {
                    match pending.get(id) {
                        Some(p) => return Some((p.sent + limit, id.clone())),
                        None => {
                            order.pop_front();
                        }
                    }
                }
                None
            });
            let take = !input_closed && pending.len() < command.items;
            tokio::select! {
                biased;
                _ = self.abandon.cancelled() => break End::Abandoned,
                line = process.answers.next_line() => match line {
                    Ok(Some(line)) => {
                        if let Err(reason) = self.answer(&line, &mut pending) {
                            break End::Failed(reason);
                        }
                    }
                    Ok(None) => break End::Failed(process.exit_reason().await),
                    Err(e) => break End::Failed(e),
                },
                _ = sleep_until(oldest.as_ref().map(|(at, _)| *at)), if oldest.is_some() => {
                    let id = oldest.map(|(_, id)| id).unwrap_or_default();
                    break End::Failed(format!("item {id} was not answered within --item-timeout"));
                }
                next = self.buffer.take(&self.shutdown), if take => match next {
                    None => {
                        input_closed = true;
                        // The worker's input ends: it sees the end of its stdin.
                        let _ = lines.send(Vec::new());
                    }
                    Some(message) => {
                        if !self.still_held(&message) {
                            continue;
                        }
                        if let Some(held) = pending.get_mut(&message.id) {
                            // Handed out again (its old lease ran out) while this worker still
                            // works on it: its answer settles the new lease.
                            warn!(id = %message.id, "item handed out again while a worker still holds it; its answer will settle the new lease");
                            self.held.remove(crate::fetch::key(&held.message));
                            held.message = message;
                            continue;
                        }
                        let _ = lines.send(item_line(&message, &self.queue));
                        order.push_back(message.id.clone());
                        pending.insert(message.id.clone(), Pending { message, sent: Instant::now() });
                    }
                },
            }
        };
        drop(lines);
        match &end {
            End::Finished => {
                let _ = writer.await;
                process.wait_or_kill(slot).await;
            }
            End::Abandoned | End::Failed(_) => {
                writer.abort();
                process.kill().await;
                for (_, p) in pending.drain() {
                    let outcome = match &end {
                        End::Failed(reason) => {
                            Some(Outcome::failed(format!("worker failed: {reason}")))
                        }
                        _ => None,
                    };
                    self.finish(&p.message, outcome);
                }
            }
        }
        end
    }

    /// Settles the item one answer line names; Err (the worker must be restarted) when the
    /// line is not an answer for an item it holds.
    fn answer(&self, line: &[u8], pending: &mut HashMap<String, Pending>) -> Result<(), String> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let answer = parse_answer(line).map_err(|e| {
            format!(
                "wrote a line that is not an answer ({e}): {:?}; answer each item with one line {{\"id\":ITEM,\"ok\":true}} on stdout, and log to stderr",
                shown(line)
            )
        })?;
        let Some(held) = pending.remove(&answer.id) else {
            return Err(format!(
                "answered item {:?}, which it does not hold (never sent to it, or answered already)",
                answer.id
            ));
        };
        let outcome = if answer.ok {
            Outcome::Done
        } else {
            let retry_after = match answer.retry_after.as_ref().map(RetryAfter::duration) {
                None => None,
                Some(Ok(d)) => Some(d),
                Some(Err(e)) => {
                    warn!(id = %answer.id, error = %e, "the worker's retryAfter is not a duration; using --retry-delay");
                    None
                }
            };
            Outcome::Failed {
                reason: answer
                    .error
                    .unwrap_or_else(|| "the worker answered ok: false".into()),
                retry_after,
            }
        };
        self.finish(&held.message, Some(outcome));
        Ok(())
    }
}

/// An answer line: a JSON object (serde would also read a struct from an array).
fn parse_answer(line: &[u8]) -> Result<Answer, String> {
    if line.trim_ascii_start().first() != Some(&b'{') {
        return Err("not a JSON object".into());
    }
    serde_json::from_slice(line).map_err(|e| e.to_string())
}

/// The first 200 bytes of a line, for a log.
fn shown(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The line (with its newline) that hands `message` to a worker.
fn item_line(message: &Message, queue: &str) -> Vec<u8> {
    let line = ItemLine {
        id: &message.id,
        body: &message.body,
        attempt: message.lease.as_ref().map_or(1, |l| l.attempt),
        queue,
        lease: message.lease.as_ref().map(|l| l.id.as_str()),
    };
    let mut bytes = serde_json::to_vec(&line).expect("an item serializes");
    bytes.push(b'\n');
    bytes
}

/// Writes lines to the worker until the channel ends or sends an empty line (end of input),
/// flushing whenever no more are waiting.
async fn write_lines(stdin: Option<ChildStdin>, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    let Some(stdin) = stdin else { return };
    let mut out = BufWriter::new(stdin);
    while let Some(line) = rx.recv().await {
        if line.is_empty() {
            break;
        }
        // A worker gone: its reads end too, and the reader reports it.
        if out.write_all(&line).await.is_err() {
            return;
        }
        if rx.is_empty() && out.flush().await.is_err() {
            return;
        }
    }
    let _ = out.flush().await;
    let _ = out.shutdown().await;
}

/// A running worker process.
struct Process {
    child: Child,
    stdin: Option<ChildStdin>,
    answers: Lines,
}

fn spawn(command: &Command, queue: &str, slot: usize) -> Result<Process, String> {
    let mut child = tokio::process::Command::new(&command.program)
        .args(&command.args)
        .env("MEMQ_QUEUE", queue)
        .env("MEMQ_WORKER_SLOT", slot.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // A consumer that goes away must not leave its workers running.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", command.program.display()))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("stdout is piped");
    info!(slot, pid = child.id(), "worker started");
    Ok(Process {
        child,
        stdin,
        answers: Lines::new(stdout),
    })
}

impl Process {
    /// Why the worker's output ended, for the log.
    async fn exit_reason(&mut self) -> String {
        match tokio::time::timeout(EXIT_GRACE, self.child.wait()).await {
            Ok(Ok(status)) => format!("exited ({status})"),
            Ok(Err(e)) => format!("closed its stdout; waiting for it: {e}"),
            Err(_) => "closed its stdout".to_string(),
        }
    }

    /// Waits for a worker whose input ended to exit; kills it after [`EXIT_GRACE`].
    async fn wait_or_kill(mut self, slot: usize) {
        match tokio::time::timeout(EXIT_GRACE, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => info!(slot, "worker exited"),
            Ok(Ok(status)) => {
                warn!(slot, %status, "worker exited with a failure after its last item")
            }
            Ok(Err(e)) => warn!(slot, error = %e, "cannot wait for the worker"),
            Err(_) => {
                warn!(
                    slot,
                    "worker did not exit after its input ended; killing it"
                );
                self.kill().await;
            }
        }
    }

    async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Answer lines from a worker's stdout, each at most [`MAX_ANSWER_BYTES`].
struct Lines {
    reader: BufReader<ChildStdout>,
    line: Vec<u8>,
}

impl Lines {
    fn new(stdout: ChildStdout) -> Self {
        Self {
            reader: BufReader::new(stdout),
            line: Vec::new(),
        }
    }

    /// The next line without its newline; `None` at the end of the output. Cancel-safe: what
    /// was read of a line is kept for the next call.
    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, String> {
        loop {
            let available = self
                .reader
                .fill_buf()
                .await
                .map_err(|e| format!("cannot read its stdout: {e}"))?;
            if available.is_empty() {
                if self.line.is_empty() {
                    return Ok(None);
                }
                // A last line without its newline.
                return Ok(Some(std::mem::take(&mut self.line)));
            }
            let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
                Some(at) => (&available[..at], at + 1),
                None => (available, available.len()),
            };
            let complete = done > chunk.len();
            self.line.extend_from_slice(chunk);
            self.reader.consume(done);
            if self.line.len() > MAX_ANSWER_BYTES {
                return Err(format!(
                    "wrote a line of more than {MAX_ANSWER_BYTES} bytes: {:?}...",
                    shown(&self.line)
                ));
            }
            if complete {
                return Ok(Some(std::mem::take(&mut self.line)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_is_one_json_line_with_its_body_as_text() {
        let message = Message {
            kind: "message".into(),
            id: "01ID".into(),
            body: "two\nlines \"quoted\"".into(),
            creation_timestamp: String::new(),
            lease: Some(memq::Lease {
                id: "01LEASE".into(),
                expires_at: String::new(),
                attempt: 3,
            }),
            duplicate: false,
        };
        let line = item_line(&message, "q");
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(line.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"id":"01ID","body":"two\nlines \"quoted\"","attempt":3,"queue":"q","lease":"01LEASE"})
        );
    }

    #[test]
    fn answers_read_as_the_protocol_says() {
        let a: Answer = serde_json::from_str(r#"{"id":"x","ok":true}"#).unwrap();
        assert!(a.ok && a.retry_after.is_none());
        let a: Answer =
            serde_json::from_str(r#"{"id":"x","ok":false,"retryAfter":"1m30s","error":"e"}"#)
                .unwrap();
        assert_eq!(
            a.retry_after.unwrap().duration(),
            Ok(Duration::from_secs(90))
        );
        let a: Answer = serde_json::from_str(r#"{"id":"x","ok":false,"retryAfter":2.5}"#).unwrap();
        assert_eq!(
            a.retry_after.unwrap().duration(),
            Ok(Duration::from_millis(2500))
        );
        let a: Answer = serde_json::from_str(r#"{"id":"x","ok":false,"retryAfter":-1}"#).unwrap();
        assert!(a.retry_after.unwrap().duration().is_err());
        for bad in [
            r#"{"ok":true}"#,
            r#"{"id":"x"}"#,
            r#"["x",true]"#,
            "x",
            r#"{"id":1,"ok":true}"#,
        ] {
            assert!(parse_answer(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
