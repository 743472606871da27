//! The all-in-one gateway: every function of the set in one process, over in-memory state or,
//! with `DATABASE_URL`, PostgreSQL. Used for local runs and single-container deployments.
//! `gateway migrate` applies the database schema and exits.

use aigw_core::{ProcessEnv, start};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("migrate") {
        return start::migrate_command(&ProcessEnv).await;
    }
    let gateway = match start::boot_process("gateway").await {
        Ok(gateway) => gateway,
        Err(code) => return code,
    };
    let app = aigw_core::gateway_app(gateway.clone());
    start::serve_until_signal("gateway", &gateway, app).await
}
