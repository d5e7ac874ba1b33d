//! The `producer` binary: flags in, exit code out; everything else is in the library.

use std::process::ExitCode;

use clap::Parser;
use producer::cli::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    memq::logging::init(args.log_format, "info");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(producer::run(args)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "producer failed");
            ExitCode::from(err.exit_code())
        }
    }
}
