//! The admin function: metrics (JSON under the prefix, Prometheus at `/metrics`), live
//! reconfiguration, `instanceinfo` and `healthz`. Like the router: an Azure Functions custom
//! handler, a Lambda function or a plain server, chosen from the environment. It reads the
//! metrics every router instance writes to the shared store, and stores new configurations
//! that every router instance picks up.

use aigw_core::{serverless, start};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let gateway = match start::boot_process("admin").await {
        Ok(gateway) => gateway,
        Err(code) => return code,
    };
    let app = aigw_core::admin_app(gateway.clone());
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        // Background tasks (config watch included) live as long as the execution environment.
        return serverless::serve(
            "admin",
            &gateway,
            app,
            lambda_runtime::spawn_graceful_shutdown_handler,
            lambda_http::run,
        )
        .await;
    }
    start::serve_until_signal("admin", &gateway, app).await
}
