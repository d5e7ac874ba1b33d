//! The producer's flags: one struct, each flag with its `MEMQ_*` variable where a Job would set
//! it through the environment.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use memq::logging::LogFormat;

fn parse_queue(text: &str) -> Result<String, String> {
    memq::name::validate_queue_name(text)?;
    Ok(text.to_string())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    memq::duration::parse_duration(text)
}

fn parse_delay(text: &str) -> Result<Duration, String> {
    let d = memq::duration::parse_duration(text)?;
    if d > memq::limits::MAX_DELAY {
        return Err(format!(
            "the server accepts delays of at most {}s",
            memq::limits::MAX_DELAY.as_secs()
        ));
    }
    Ok(d)
}

/// producer: loads work items into a memq-rs queue (kuard MemQ compatible), fast.
///
/// Items come from arguments (brace ranges such as work-item-{0..99} expand), --file and
/// --json-lines, in that order. Exit codes: 0 done, 1 server trouble, 2 bad input or usage.
#[derive(Debug, Clone, Parser)]
#[command(version = memq::version::VERSION, about, long_about)]
pub struct Args {
    /// Items to enqueue; `{0..99}`, `{000..999}` and `{0..100..10}` expand to ranges.
    #[arg(value_name = "ITEM")]
    pub items: Vec<String>,

    /// Read items from FILE, one per line (`-` for stdin); empty lines are skipped. Repeatable.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Vec<PathBuf>,

    /// Read items from a JSON Lines FILE (`-` for stdin): a string, `{"id":KEY,"body":TEXT}`, or
    /// any other JSON value (enqueued as its JSON text). Repeatable.
    #[arg(long, value_name = "FILE")]
    pub json_lines: Vec<PathBuf>,

    /// Take ITEM arguments literally: no brace-range expansion.
    #[arg(long)]
    pub no_expand: bool,

    /// Queue server URL, ending in /memq/server.
    #[arg(long, env = "MEMQ_SERVER", default_value = memq::DEFAULT_SERVER)]
    pub server: String,

    /// Queue to load.
    #[arg(long, short = 'q', env = "MEMQ_QUEUE", value_parser = parse_queue)]
    pub queue: String,

    /// The token and the CAs to trust.
    #[command(flatten)]
    pub access: memq::access::Access,

    /// Create the queue first (does nothing when it exists).
    #[arg(long, env = "MEMQ_CREATE")]
    pub create: bool,

    /// Items per request.
    #[arg(long, env = "MEMQ_BATCH", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,

    /// Requests in flight at once.
    #[arg(long, env = "MEMQ_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,

    /// Give every item a stable key (hash of source, line and text) so that a rerun after a
    /// crash adds nothing twice.
    #[arg(long, env = "MEMQ_IDEMPOTENT")]
    pub idempotent: bool,

    /// Items become ready only after this long (seconds or 500ms, 30s, 2m; at most 900s).
    #[arg(long, env = "MEMQ_DELAY", value_parser = parse_delay)]
    pub delay: Option<Duration>,

    /// After loading, ask the queue server to launch a consumer Job for the queue
    /// (POST /jobs; needs a server running with --jobs in a cluster).
    #[arg(long, env = "MEMQ_LAUNCH_JOB")]
    pub launch_job: bool,

    /// Consumer pods of the launched Job (1 to 1000).
    #[arg(long, env = "MEMQ_PARALLELISM", default_value_t = 5, requires = "launch_job",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(memq::limits::MAX_PARALLELISM)))]
    pub parallelism: u32,

    /// After loading, follow the queue until it is finished (nothing ready, in flight or
    /// delayed), then exit 0.
    #[arg(long)]
    pub wait: bool,

    /// Give up on a server that keeps failing (unreachable, 5xx) after this long; exit 1.
    #[arg(long, env = "MEMQ_GIVE_UP_AFTER", default_value = "5m", value_parser = parse_duration)]
    pub give_up_after: Duration,

    /// Progress bars even when stderr is not a terminal (normally only a summary line then).
    #[arg(long, conflicts_with = "no_progress")]
    pub progress: bool,

    /// No progress bars, only the summary line.
    #[arg(long)]
    pub no_progress: bool,

    /// Log format: text for people, json for log collectors in clusters.
    #[arg(long, env = "MEMQ_LOG_FORMAT", value_enum, default_value_t)]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("producer").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_fit_the_seed_walkthrough() {
        let a = parse(&["--queue", "keygen", "work-item-{0..99}"]).unwrap();
        assert_eq!(a.queue, "keygen");
        assert_eq!(a.items, ["work-item-{0..99}"]);
        assert_eq!(a.batch, 1000);
        assert_eq!(a.concurrency, 4);
        assert_eq!(a.give_up_after, Duration::from_secs(300));
        assert!(!a.idempotent && !a.wait && !a.create);
        assert_eq!(a.log_format, LogFormat::Text);
    }

    #[test]
    fn reads_every_flag() {
        let a = parse(&[
            "-q",
            "q1",
            "--server",
            "http://127.0.0.1:1/memq/server",
            "--token",
            "t",
            "--file",
            "a.txt",
            "-f",
            "-",
            "--json-lines",
            "b.jsonl",
            "--create",
            "--batch",
            "10",
            "--concurrency",
            "2",
            "--idempotent",
            "--delay",
            "1.5",
            "--wait",
            "--give-up-after",
            "30s",
            "--log-format",
            "json",
            "--no-expand",
        ])
        .unwrap();
        assert_eq!(a.file, [PathBuf::from("a.txt"), PathBuf::from("-")]);
        assert_eq!(a.json_lines, [PathBuf::from("b.jsonl")]);
        assert_eq!(a.delay, Some(Duration::from_millis(1500)));
        assert_eq!(a.give_up_after, Duration::from_secs(30));
        assert_eq!(a.log_format, LogFormat::Json);
        assert!(a.create && a.idempotent && a.wait && a.no_expand);
        assert_eq!(a.access.token.as_deref(), Some("t"));
    }

    #[test]
    fn refuses_bad_values_as_usage_errors() {
        for bad in [
            &["work"][..],
            &["-q", "bad name", "x"],
            &["-q", "q", "--batch", "0"],
            &["-q", "q", "--delay", "901"],
            &["-q", "q", "--delay", "soon"],
            &["-q", "q", "--log-format", "xml"],
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
