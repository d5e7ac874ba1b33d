//! The `consumer` binary: flags in, signals turned into a shutdown token, exit code out;
//! everything else is in the library.

use std::process::ExitCode;

use clap::Parser;
use consumer::cli::Args;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on the first SIGTERM or SIGINT; a second one exits at once.
async fn watch_signals(mut term: Signal, mut int: Signal, shutdown: CancellationToken) {
    for round in 0..2 {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if round == 0 {
            shutdown.cancel();
        }
    }
    tracing::warn!("second signal: exiting without giving items back (their leases will expire)");
    std::process::exit(consumer::EXIT_INTERRUPTED.into());
}

fn main() -> ExitCode {
    let args = Args::parse();
    memq::logging::init(args.log_format, "info");
    // One thread: the consumer's own work is moving items between the server and the slots,
    // which one thread does with no hand-offs between threads (a keygen round runs on a
    // blocking thread of its own, an --exec or --worker in its own process).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let code = runtime.block_on(async {
        // Installed before any work starts, so that no signal finds the default (die at once).
        let (term, int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!(error = %err, "cannot install signal handlers");
                return 1;
            }
        };
        let signals = tokio::spawn(watch_signals(term, int, shutdown.clone()));
        let result = consumer::run(args, shutdown).await;
        signals.abort();
        match result {
            Ok(summary) => summary.exit_code(),
            Err(err) => {
                tracing::error!(error = %err, "consumer failed");
                err.exit_code()
            }
        }
    });
    // Don't wait for a keygen round still running on a blocking thread.
    runtime.shutdown_background();
    ExitCode::from(code)
}
