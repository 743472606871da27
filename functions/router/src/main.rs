//! The router function: inference routes, `instanceinfo` and `healthz`. One binary for three
//! hosts: an Azure Functions custom handler (`FUNCTIONS_CUSTOMHANDLER_PORT`), AWS Lambda
//! (`AWS_LAMBDA_RUNTIME_API`), or a plain listener (Container Apps, local runs).

use aigw_core::{serverless, start};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let gateway = match start::boot_process("router").await {
        Ok(gateway) => gateway,
        Err(code) => return code,
    };
    let app = aigw_core::router_app(gateway.clone());
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        // Lambda owns the socket and freezes the process between invocations (see serverless).
        return serverless::serve(
            "router",
            &gateway,
            app,
            lambda_runtime::spawn_graceful_shutdown_handler,
            lambda_http::run_with_streaming_response,
        )
        .await;
    }
    start::serve_until_signal("router", &gateway, app).await
}
