//! The all-in-one gateway: every function of the set in one process over in-memory state. Used
//! for local runs and single-container deployments.

use aigw_core::start;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let gateway = match start::boot_process("gateway").await {
        Ok(gateway) => gateway,
        Err(code) => return code,
    };
    let app = aigw_core::router_app(gateway.clone());
    start::serve_until_signal("gateway", &gateway, app).await
}
