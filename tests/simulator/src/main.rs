//! The `simulator` binary: the fake backend as a standalone process, for
//! benchmarks, the README demo and anything outside the Rust test suite.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use aigw_simulator::serve_with_shutdown;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use cli::{Command, Config, USAGE};

fn main() -> ExitCode {
    let config = match cli::parse(std::env::args().skip(1), |key| std::env::var(key).ok()) {
        Ok(Command::Run(config)) => config,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("simulator: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // Logs go to stderr: stdout carries only the "listening" line.
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init()
        .is_err();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(workers) = config.workers {
        runtime.worker_threads(workers);
    }
    match runtime.build() {
        Ok(runtime) => runtime.block_on(run(config)),
        Err(e) => {
            eprintln!("simulator: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> ExitCode {
    let listener = match TcpListener::bind((config.host.as_str(), config.port)).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!(
                "simulator: cannot listen on {}:{}: {e}",
                config.host, config.port
            );
            return ExitCode::FAILURE;
        }
    };
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("simulator: cannot read the bound address: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "simulator listening on http://{addr}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        eprintln!("simulator listening on http://{addr} (stdout is closed)");
    }
    drop(stdout);
    match serve_with_shutdown(listener, config.opts, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simulator: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No Ctrl-C handling here: wait for SIGTERM alone.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    () = ctrl_c => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}
