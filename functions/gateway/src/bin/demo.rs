//! The demo: the gateway on a machine with no cloud account. Three simulated Azure OpenAI
//! deployments on ports 8101-8103 (the second one throttles every fourth request, so failover
//! shows), and the gateway on port 8000 with `config/demo.json`, in-memory state.
//!
//! Settings work as for the gateway (`API_GATEWAY_PORT`, `--port`, ...); `--config` replaces the
//! demo configuration.

use aigw_core::{ProcessEnv, start};
use aigw_simulator::{Behaviour, SimOptions};
use std::process::ExitCode;

const DEMO_CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/demo.json");
const BACKEND_KEY: &str = "demo-backend-key";

#[tokio::main]
async fn main() -> ExitCode {
    let backends = [
        (8101, "ptu-east", Behaviour::default()),
        (
            8102,
            "payg-east",
            Behaviour {
                throttle_every: Some(4),
                retry_after_ms: 5_000,
                ..Default::default()
            },
        ),
        (8103, "payg-west", Behaviour::default()),
    ];
    for (port, name, behaviour) in backends {
        let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("demo: cannot start the simulated backend '{name}' on port {port}: {e}");
                return ExitCode::from(1);
            }
        };
        let options = SimOptions {
            api_key: Some(BACKEND_KEY.into()),
            behaviour,
            name: Some(name.into()),
        };
        tokio::spawn(async move {
            if let Err(e) = aigw_simulator::serve(listener, options).await {
                eprintln!("demo: simulated backend '{name}' stopped: {e}");
            }
        });
    }

    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let has_config = args
        .iter()
        .any(|a| a == "--config" || a.starts_with("--config="));
    if !has_config && std::env::var_os("API_GATEWAY_CONFIG_FILE").is_none() {
        args.extend(["--config".to_owned(), DEMO_CONFIG.to_owned()]);
    }
    let gateway = match start::boot(&ProcessEnv, &args).await {
        Ok(gateway) => gateway,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(2);
        }
    };
    let settings = gateway.settings.clone();
    println!(
        "demo gateway on http://{}:{}{} with simulated backends on 127.0.0.1:8101-8103\n\
         try: curl -s http://{}:{}{}/lb/chatbot -H 'content-type: application/json' \
         -d '{{\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'",
        settings.host,
        settings.port,
        settings.prefix(),
        settings.host,
        settings.port,
        settings.prefix()
    );
    let app = aigw_core::gateway_app(gateway.clone());
    start::serve_until_signal("demo", &gateway, app).await
}
