//! Logging set-up: `tracing` to stderr, filtered by `API_GATEWAY_LOG_LEVEL` (a level or a full
//! filter directive such as `info,aigw_core=debug`).

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init(level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
