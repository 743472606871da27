//! The router function: inference routes, `instanceinfo` and `healthz`. One binary for three
//! hosts: an Azure Functions custom handler (`FUNCTIONS_CUSTOMHANDLER_PORT`), AWS Lambda
//! (`AWS_LAMBDA_RUNTIME_API`), or a plain listener (Container Apps, local runs).

use aigw_core::start;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let gateway = match start::boot_process("router").await {
        Ok(gateway) => gateway,
        Err(code) => return code,
    };
    let app = aigw_core::router_app(gateway.clone());
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        // Lambda owns the socket; the runtime exits when its environment is reclaimed.
        return match lambda_http::run_with_streaming_response(app).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("router: lambda runtime failed: {e}");
                ExitCode::from(1)
            }
        };
    }
    start::serve_until_signal("router", &gateway, app).await
}
