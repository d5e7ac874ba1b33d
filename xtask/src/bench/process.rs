//! The processes a run starts, each held by a [`Proc`] that kills it when dropped, and the
//! servers: the release `queue-server` and the `baseline` example on free loopback ports.

use std::fs::File;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use super::{Config, table};

/// A child process, killed (`SIGKILL`) and reaped when dropped, unless it has exited already.
pub struct Proc {
    name: String,
    pid: u32,
    child: Child,
}

impl Proc {
    /// Spawns `cmd` (standard input from /dev/null); `name` is for messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Self> {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {name}"))?;
        let pid = child.id().context("a pid")?;
        Ok(Proc {
            name: name.to_string(),
            pid,
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until it exits.
    pub async fn wait(&mut self) -> anyhow::Result<ExitStatus> {
        self.child
            .wait()
            .await
            .with_context(|| format!("waiting for {}", self.name))
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exited() {
            return;
        }
        let _ = self.child.start_kill();
        // SIGKILL ends it at once; reaped here so that nothing outlives the run.
        for _ in 0..500 {
            if self.exited() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("bench: {} (pid {}) did not exit", self.name, self.pid);
    }
}

/// A file for a child's output (created, or emptied).
pub fn output_file(path: &Path) -> anyhow::Result<File> {
    File::create(path).with_context(|| format!("create {}", path.display()))
}

/// Standard output and error both into `path` (`>path 2>&1`).
pub fn both_into(cmd: &mut Command, path: &Path) -> anyhow::Result<()> {
    let file = output_file(path)?;
    cmd.stderr(file.try_clone()?).stdout(file);
    Ok(())
}

/// A server process and where it listens.
pub struct Server {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub port: u16,
    pub proc: Proc,
}

/// Tries to find the server's address 200 times, 50 ms apart.
const START_TRIES: u32 = 200;
const START_PAUSE: Duration = Duration::from_millis(50);

/// Starts the release queue-server as `NAME` with `--listen 127.0.0.1:0` and `args`, logging
/// (`RUST_LOG=warn,queue_server=info`) into `work/NAME.log`, and reads its address from the log
/// (`addr=127.0.0.1:PORT`).
pub async fn start_server(
    cfg: &Config,
    work: &Path,
    name: &str,
    args: &[&str],
) -> anyhow::Result<Server> {
    let logf = work.join(format!("{name}.log"));
    let mut cmd = Command::new(cfg.bin.join("queue-server"));
    cmd.env("RUST_LOG", "warn,queue_server=info")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stderr(output_file(&logf)?);
    let mut proc = Proc::spawn(&format!("queue-server {name}"), &mut cmd)?;
    for _ in 0..START_TRIES {
        let log = std::fs::read_to_string(&logf).unwrap_or_default();
        if let Some(addr) = logged_addr(&log) {
            return server(addr, proc);
        }
        if proc.exited() {
            bail!("queue-server {name} did not start: {log}");
        }
        tokio::time::sleep(START_PAUSE).await;
    }
    bail!("queue-server {name} did not say where it listens")
}

/// Starts the bare 204 server (`examples/baseline 127.0.0.1:0`, output into `work/NAME.out`)
/// and reads its address from its `listening on ADDR` line.
pub async fn start_baseline(cfg: &Config, work: &Path, name: &str) -> anyhow::Result<Server> {
    let out = work.join(format!("{name}.out"));
    let mut cmd = Command::new(cfg.bin.join("examples/baseline"));
    cmd.arg("127.0.0.1:0");
    both_into(&mut cmd, &out)?;
    let mut proc = Proc::spawn(&format!("baseline {name}"), &mut cmd)?;
    for _ in 0..START_TRIES {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(addr) = text.lines().find_map(|l| l.strip_prefix("listening on ")) {
            return server(addr.trim(), proc);
        }
        if proc.exited() {
            break;
        }
        tokio::time::sleep(START_PAUSE).await;
    }
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    bail!("baseline server did not start: {text}")
}

fn server(addr: &str, proc: Proc) -> anyhow::Result<Server> {
    let port = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .with_context(|| format!("no port in {addr}"))?;
    Ok(Server {
        url: format!("http://{addr}"),
        port,
        proc,
    })
}

/// The first `addr=127.0.0.1:PORT` in a queue-server log.
pub fn logged_addr(log: &str) -> Option<&str> {
    const PREFIX: &str = "addr=";
    let mut rest = log;
    while let Some(at) = rest.find("addr=127.0.0.1:") {
        let addr = &rest[at + PREFIX.len()..];
        let port_len = addr["127.0.0.1:".len()..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        if port_len > 0 {
            return Some(&addr[..("127.0.0.1:".len() + port_len)]);
        }
        rest = &rest[at + PREFIX.len()..];
    }
    None
}

/// Resident memory of process `pid`, in kB.
pub fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("/proc/{pid}/status"))?;
    table::vm_rss_kb(&status).with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// Established TCP connections on local port `port` (IPv4 and IPv6).
pub fn established(port: u16) -> anyhow::Result<usize> {
    let mut n = 0;
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(path) {
            Ok(table) => n += table::established(&table, port),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context(path),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_from_the_log() {
        let log = "2026-11-25T15:40:24.123Z  INFO queue_server: store=memory\n\
                   2026-11-25T15:40:24.124Z  INFO queue_server::serve: listening addr=127.0.0.1:43117 max_connections=10000\n";
        assert_eq!(logged_addr(log), Some("127.0.0.1:43117"));
        assert_eq!(
            logged_addr("addr=127.0.0.1: x addr=127.0.0.1:9\n"),
            Some("127.0.0.1:9")
        );
        assert_eq!(logged_addr("addr=0.0.0.0:80\n"), None);
        assert_eq!(logged_addr(""), None);
    }
}
