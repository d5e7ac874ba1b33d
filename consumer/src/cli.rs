//! The consumer's flags: one struct, each flag with its `MEMQ_*` variable where a Job would set
//! it through the environment.

use std::time::Duration;

use clap::Parser;

use memq::logging::LogFormat;

/// Rounds of the keygen workload by default: about a tenth of a second of one core with SHA
/// instructions (more without), in the range of kuard's RSA key generation.
pub const DEFAULT_KEYGEN_ROUNDS: u32 = 1_000_000;

/// The built-in workloads of `--work`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuiltinWork {
    /// Derive a key from the item by iterating SHA-256 this many times, and print it.
    Keygen {
        /// Hash rounds per item.
        rounds: u32,
    },
    /// Sleep this long per item.
    Sleep(Duration),
    /// Do nothing (measure the queue itself).
    Noop,
}

/// Parses `keygen`, `keygen=ROUNDS`, `sleep=DURATION` or `noop`.
pub fn parse_work(text: &str) -> Result<BuiltinWork, String> {
    let (name, arg) = match text.split_once('=') {
        Some((name, arg)) => (name, Some(arg)),
        None => (text, None),
    };
    match (name, arg) {
        ("keygen", None) => Ok(BuiltinWork::Keygen {
            rounds: DEFAULT_KEYGEN_ROUNDS,
        }),
        ("keygen", Some(rounds)) => match rounds.parse::<u32>() {
            Ok(rounds) if rounds > 0 => Ok(BuiltinWork::Keygen { rounds }),
            _ => Err(format!(
                "keygen rounds {rounds:?} must be a whole number from 1"
            )),
        },
        ("sleep", Some(d)) => Ok(BuiltinWork::Sleep(memq::duration::parse_duration(d)?)),
        ("sleep", None) => Err("sleep needs a duration, e.g. sleep=200ms".into()),
        ("noop", None) => Ok(BuiltinWork::Noop),
        _ => Err(format!(
            "unknown work {text:?}; use keygen, keygen=ROUNDS, sleep=DURATION or noop"
        )),
    }
}

/// When the consumer exits by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Until {
    /// When the queue is finished: nothing ready, nothing in flight, nothing delayed. While
    /// others hold leases it keeps polling, so an item whose holder died is picked up.
    #[default]
    Finished,
    /// At the first empty answer (kuard's worker).
    Empty,
    /// Never: a long-running worker.
    Forever,
}

fn parse_queue(text: &str) -> Result<String, String> {
    memq::name::validate_queue_name(text)?;
    Ok(text.to_string())
}

fn parse_name(text: &str) -> Result<String, String> {
    memq::name::validate_consumer_name(text)?;
    Ok(text.to_string())
}

/// This host's name (a pod's name in Kubernetes: its `HOSTNAME`), when it is a valid consumer
/// name.
pub fn host_name() -> Option<String> {
    let name = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())?;
    let name = name.trim();
    memq::name::validate_consumer_name(name).ok()?;
    Some(name.to_string())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    memq::duration::parse_duration(text)
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let d = memq::duration::parse_duration(text)?;
    if d.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(d)
}

fn parse_prefetch(text: &str) -> Result<u32, String> {
    let n: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number"))?;
    let max = memq::limits::MAX_DEQUEUE;
    if n > max {
        return Err(format!(
            "the server leases at most {max} items per request (?max=); prefetch at most {max}"
        ));
    }
    Ok(n)
}

fn parse_lease(text: &str) -> Result<Duration, String> {
    let d = memq::duration::parse_duration(text)?;
    if d < Duration::from_millis(100) {
        return Err("a lease shorter than 100ms cannot be kept alive by heartbeats".into());
    }
    Ok(d)
}

fn parse_wait(text: &str) -> Result<Duration, String> {
    let d = memq::duration::parse_duration(text)?;
    if d > memq::limits::MAX_WAIT {
        return Err(format!(
            "the server long-polls for at most {}s",
            memq::limits::MAX_WAIT.as_secs()
        ));
    }
    Ok(d)
}

/// consumer: drains a memq-rs queue (kuard MemQ compatible), one item at a time per slot,
/// leasing each item and keeping the lease alive while the work runs.
///
/// Exit codes: 0 the queue is finished (or --until / --max-items reached), 1 the server failed
/// for longer than --give-up-after, 2 usage, 143 interrupted by SIGTERM/SIGINT (items held were
/// given back), so a Kubernetes Job replaces an interrupted pod instead of counting it done.
#[derive(Debug, Clone, Parser)]
#[command(version = memq::version::VERSION, about, long_about)]
pub struct Args {
    /// Queue server URL, ending in /memq/server.
    #[arg(long, env = "MEMQ_SERVER", default_value = memq::DEFAULT_SERVER)]
    pub server: String,

    /// Queue to drain.
    #[arg(long, short = 'q', env = "MEMQ_QUEUE", value_parser = parse_queue)]
    pub queue: String,

    /// The token and the CAs to trust.
    #[command(flatten)]
    pub access: memq::access::Access,

    /// The name the server lists this consumer's leases under (X-Memq-Consumer); default: the
    /// host name, which in a Job is the pod's name.
    #[arg(long, env = "MEMQ_CONSUMER_NAME", value_parser = parse_name)]
    pub name: Option<String>,

    /// Built-in work per item: keygen (prints a key derived from the item), keygen=ROUNDS,
    /// sleep=DURATION, noop.
    #[arg(long, env = "MEMQ_WORK", value_parser = parse_work, default_value = "keygen",
          conflicts_with_all = ["exec", "worker"])]
    pub work: BuiltinWork,

    /// Run CMD [ARGS...] per item, with the body on stdin and MEMQ_MESSAGE_ID, MEMQ_QUEUE,
    /// MEMQ_ATTEMPT in its environment; exit 0 acks, anything else nacks. Must come last: the
    /// rest of the command line is the command.
    #[arg(long, value_name = "CMD", num_args = 1.., allow_hyphen_values = true,
          conflicts_with = "worker")]
    pub exec: Option<Vec<String>>,

    /// Start CMD [ARGS...] once per slot and keep it running: items go to its stdin as JSON
    /// lines ({"id","body","attempt","queue","lease"}), it answers one JSON line per item on
    /// stdout ({"id","ok":true} or {"id","ok":false,"retryAfter":"30s","error":"..."}) in any
    /// order. Must come last: the rest of the command line is the command.
    #[arg(long, value_name = "CMD", num_args = 1.., allow_hyphen_values = true)]
    pub worker: Option<Vec<String>>,

    /// With --worker: items one worker process holds at once (sent before its answers come
    /// back; it may work on them together and answer in any order).
    #[arg(long, env = "MEMQ_WORKER_ITEMS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub worker_items: u32,

    /// An item not done in this long is given up: its work is stopped (a --worker process is
    /// restarted) and the item nacked for a retry. Default: no limit.
    #[arg(long, env = "MEMQ_ITEM_TIMEOUT", value_parser = parse_positive_duration)]
    pub item_timeout: Option<Duration>,

    /// Lease up to this many items beyond those being worked on, so that a slot that finishes
    /// finds its next item at hand; one request leases what fills the free slots and this
    /// buffer (at most 1000), and it is refilled once half of it is used. 0: lease only for
    /// free slots, so that a pod holds no item it cannot start at once.
    #[arg(long, env = "MEMQ_PREFETCH", default_value_t = 0, value_parser = parse_prefetch)]
    pub prefetch: u32,

    /// Lease each item for this long; the lease is extended every third of it while work runs.
    #[arg(long, env = "MEMQ_LEASE", default_value = "30s", value_parser = parse_lease)]
    pub lease: Duration,

    /// Items worked on at once in this process.
    #[arg(long, short = 'c', env = "MEMQ_CONCURRENCY", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub concurrency: u32,

    /// Long poll: wait this long for an item before the server answers "empty" (at most 60s).
    #[arg(long, env = "MEMQ_WAIT", default_value = "20s", value_parser = parse_wait)]
    pub wait: Duration,

    /// When to exit by itself: finished (nothing ready, in flight or delayed), empty (first
    /// empty answer, like kuard), forever.
    #[arg(long, env = "MEMQ_UNTIL", value_enum, default_value_t)]
    pub until: Until,

    /// Stop after this many items.
    #[arg(long, env = "MEMQ_MAX_ITEMS")]
    pub max_items: Option<u64>,

    /// On SIGTERM/SIGINT, let work in progress run this long before giving its items back.
    #[arg(long, env = "MEMQ_GRACE", default_value = "0s", value_parser = parse_duration)]
    pub grace: Duration,

    /// Give up on a server that keeps failing (unreachable, 5xx) after this long; exit 1.
    #[arg(long, env = "MEMQ_GIVE_UP_AFTER", default_value = "5m", value_parser = parse_duration)]
    pub give_up_after: Duration,

    /// A failed item comes back after this delay, doubled per attempt (at most 5m), so a
    /// flaky dependency gets time to recover; 0 retries at once.
    #[arg(long, env = "MEMQ_RETRY_DELAY", default_value = "1s", value_parser = parse_duration)]
    pub retry_delay: Duration,

    /// Talk to a kuard MemQ server: plain dequeue (no leases, acks or long polls), exit at the
    /// first empty answer.
    #[arg(long, env = "MEMQ_KUARD")]
    pub kuard: bool,

    /// Log format: text for people, json for log collectors in clusters.
    #[arg(long, env = "MEMQ_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("consumer").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_match_the_job() {
        let a = parse(&[
            "--server=http://queue:8080/memq/server",
            "--queue=keygen",
            "--work=keygen",
        ])
        .unwrap();
        assert_eq!(
            a.work,
            BuiltinWork::Keygen {
                rounds: DEFAULT_KEYGEN_ROUNDS
            }
        );
        assert_eq!(a.lease, Duration::from_secs(30));
        assert_eq!(a.wait, Duration::from_secs(20));
        assert_eq!(a.until, Until::Finished);
        assert_eq!(a.concurrency, 1);
        assert_eq!(a.grace, Duration::ZERO);
        assert_eq!(a.give_up_after, Duration::from_secs(300));
        assert_eq!(a.exec, None);
        assert!(!a.kuard);
    }

    #[test]
    fn exec_takes_the_rest_of_the_line() {
        let a = parse(&[
            "-q",
            "q",
            "--concurrency",
            "3",
            "--exec",
            "sh",
            "-c",
            "cat >> out",
            "--lease",
            "x",
        ])
        .unwrap();
        assert_eq!(a.exec.unwrap(), ["sh", "-c", "cat >> out", "--lease", "x"]);
        assert_eq!(a.concurrency, 3);
        assert!(parse(&["-q", "q", "--exec"]).is_err());
    }

    #[test]
    fn reads_work_kinds() {
        assert_eq!(
            parse_work("keygen=10").unwrap(),
            BuiltinWork::Keygen { rounds: 10 }
        );
        assert_eq!(
            parse_work("sleep=200ms").unwrap(),
            BuiltinWork::Sleep(Duration::from_millis(200))
        );
        assert_eq!(parse_work("noop").unwrap(), BuiltinWork::Noop);
        for bad in [
            "keygen=0",
            "keygen=x",
            "sleep",
            "sleep=forever",
            "noop=1",
            "mine",
        ] {
            assert!(parse_work(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_every_flag() {
        let a = parse(&[
            "-q",
            "q",
            "--token",
            "t",
            "--work",
            "sleep=1s",
            "--lease",
            "1s",
            "-c",
            "4",
            "--wait",
            "0",
            "--until",
            "empty",
            "--max-items",
            "7",
            "--grace",
            "10s",
            "--give-up-after",
            "2s",
            "--retry-delay",
            "50ms",
            "--kuard",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(a.work, BuiltinWork::Sleep(Duration::from_secs(1)));
        assert_eq!(
            (a.lease, a.wait, a.grace),
            (
                Duration::from_secs(1),
                Duration::ZERO,
                Duration::from_secs(10)
            )
        );
        assert_eq!(a.until, Until::Empty);
        assert_eq!(a.max_items, Some(7));
        assert_eq!(a.retry_delay, Duration::from_millis(50));
        assert!(a.kuard);
        assert_eq!(a.log_format, LogFormat::Json);
    }

    #[test]
    fn refuses_bad_values_as_usage_errors() {
        for bad in [
            &["--work", "noop"][..],
            &["-q", "q", "--wait", "61"],
            &["-q", "q", "--lease", "10ms"],
            &["-q", "q", "--until", "later"],
            &["-q", "q", "-c", "0"],
            &["-q", "q", "--work", "noop", "--exec", "true"],
        ] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }
}
