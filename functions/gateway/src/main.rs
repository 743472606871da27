//! The all-in-one gateway: every function of the set in one process over in-memory state. Used
//! for local runs and single-container deployments.

use aigw_core::{ProcessEnv, start};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let gateway = match start::boot(&ProcessEnv, &args) {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = gateway.settings.clone();
    start::serve_until_signal("gateway", &settings, aigw_core::router_app(gateway)).await
}
