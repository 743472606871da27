//! The all-in-one gateway: every function of the set in one process over in-memory state. Used
//! for local runs and single-container deployments.

use aigw_core::start;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let gateway = match start::boot_process("gateway") {
        Ok(gateway) => gateway,
        Err(code) => return code,
    };
    let settings = gateway.settings.clone();
    start::serve_until_signal("gateway", &settings, aigw_core::router_app(gateway)).await
}
