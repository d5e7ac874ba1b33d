//! `queue-server` binary: parse flags, set up logs, bind, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use clap::Parser;
use queue_server::config::Command;
use queue_server::{Config, serve, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Some(Command::Repair { data_dir }) = &config.command {
        return repair(data_dir);
    }
    telemetry::init(config.log_format);
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %config.listen, error = %e, "cannot listen; is another server on that port? pick one with --listen");
            return ExitCode::from(2);
        }
    };
    match serve(listener, config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            ExitCode::FAILURE
        }
    }
}

/// `queue-server repair`: its report on stdout, progress and failure on stderr.
fn repair(dir: &std::path::Path) -> ExitCode {
    let progress = |line: &str| eprintln!("repair: {line}");
    match queue_server::store::journal::repair(dir, progress) {
        Ok(report) => {
            for line in report {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("repair: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
