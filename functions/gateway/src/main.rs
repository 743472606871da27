//! The all-in-one gateway: every function of the set in one process, over in-memory state or,
//! with `DATABASE_URL`, PostgreSQL. Used for local runs and single-container deployments.
//! `gateway migrate [--check]` applies (or checks) the database schema and exits.

use aigw_core::{ProcessEnv, start};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(("migrate", rest)) = args.split_first().map(|(a, r)| (a.as_str(), r)) {
        return start::migrate_command(&ProcessEnv, rest).await;
    }
    let gateway = match start::boot_process("gateway").await {
        Ok(gateway) => gateway,
        Err(code) => return code,
    };
    let app = aigw_core::gateway_app(gateway.clone());
    start::serve_until_signal("gateway", &gateway, app).await
}
