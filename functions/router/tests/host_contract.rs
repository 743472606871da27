//! Plays the Azure Functions host (Core Tools cannot run here): checks the staged app's files
//! the way the host reads them, launches the handler as the host does, polls it for readiness,
//! and proxies HTTP calls to it with the host's headers, streams included.

// A failed unwrap here is a failed assertion; clippy.toml's test allowance does not reach helpers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aigw_simulator::{Behaviour, SimOptions, Simulator};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/functionapp");

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The function folders of an app root: direct children holding a function.json.
fn function_folders(root: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("function.json").is_file())
        .collect();
    found.sort();
    found
}

#[test]
fn host_json_is_what_the_host_expects() {
    let host = read_json(&Path::new(ROOT).join("host.json"));
    assert_eq!(host["version"], "2.0");
    assert_eq!(
        host["extensions"]["http"]["routePrefix"], "",
        "paths identical on every host"
    );
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        "handler"
    );
    assert_eq!(
        host["customHandler"]["enableProxyingHttpRequest"], true,
        "proxying streams; forwarding buffers"
    );
    assert!(
        host.get("extensionBundle").is_none(),
        "HTTP and timer triggers are built in"
    );
}

#[test]
fn the_router_function_is_exactly_http_in_and_out() {
    let folders = function_folders(Path::new(APP));
    assert_eq!(folders.len(), 1);
    assert_eq!(folders[0].file_name().unwrap(), "router");
    let f = read_json(&folders[0].join("function.json"));
    let bindings = f["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 2);
    let (input, output) = (&bindings[0], &bindings[1]);
    assert_eq!(
        (input["type"].as_str(), input["direction"].as_str()),
        (Some("httpTrigger"), Some("in"))
    );
    assert_eq!(
        (output["type"].as_str(), output["direction"].as_str()),
        (Some("http"), Some("out"))
    );
    assert!(["anonymous", "function", "admin"].contains(&input["authLevel"].as_str().unwrap()));
    let route = input["route"].as_str().unwrap();
    assert_eq!(route, "{*path}");
    assert!(
        !route.starts_with("admin"),
        "routes under admin/ clash with the host's own"
    );
    let methods: Vec<&str> = input["methods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(methods.contains(&"post") && methods.contains(&"get"));
}

#[test]
fn the_admin_function_is_http_in_and_out_behind_a_function_key() {
    let admin = Path::new(ROOT).join("functions/admin/functionapp");
    let folders = function_folders(&admin);
    assert_eq!(folders.len(), 1);
    let f = read_json(&folders[0].join("function.json"));
    let bindings = f["bindings"].as_array().unwrap();
    assert_eq!(bindings.len(), 2);
    assert_eq!(bindings[0]["type"], "httpTrigger");
    assert_eq!(bindings[1]["type"], "http");
    assert_eq!(
        bindings[0]["authLevel"], "function",
        "operators' routes need the host's key"
    );
    let route = bindings[0]["route"].as_str().unwrap();
    assert!(
        !route.starts_with("admin"),
        "routes under admin/ clash with the host's own"
    );
}

/// A staged Function App in a fresh temporary folder: host.json, the function folders, and the
/// router binary as `handler`.
fn stage() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "aigw-funcapp-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(Path::new(ROOT).join("host.json"), dir.join("host.json")).unwrap();
    for folder in function_folders(Path::new(APP)) {
        let target = dir.join(folder.file_name().unwrap());
        std::fs::create_dir_all(&target).unwrap();
        std::fs::copy(folder.join("function.json"), target.join("function.json")).unwrap();
    }
    std::fs::copy(env!("CARGO_BIN_EXE_router"), dir.join("handler")).unwrap();
    let magic = std::fs::read(dir.join("handler")).unwrap();
    assert_eq!(&magic[..4], b"\x7fELF", "the handler is a Linux executable");
    dir
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Handler(Child);

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Launch the handler as the host does and wait for readiness: `GET /` answering anything.
async fn launch(dir: &Path, config: &Value) -> (Handler, String) {
    std::fs::write(dir.join("gateway.json"), config.to_string()).unwrap();
    let port = free_port();
    let child = Command::new(dir.join("handler"))
        .current_dir(dir)
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", port.to_string())
        .env("FUNCTIONS_HTTPWORKER_PORT", port.to_string())
        .env("FUNCTIONS_CUSTOMHANDLER_WORKER_ID", "worker-1")
        .env("FUNCTIONS_APP_ROOT_PATH", dir)
        .env("API_GATEWAY_CONFIG_FILE", "gateway.json")
        .env("API_GATEWAY_LOG_LEVEL", "warn")
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let handler = Handler(child);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if http.get(format!("{base}/")).send().await.is_ok() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the handler must be ready within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (handler, base)
}

fn host_request(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
) -> reqwest::RequestBuilder {
    http.request(method, url)
        .header(
            "X-Azure-Functions-InvocationId",
            "3b2a7c1e-0000-4000-8000-000000000001",
        )
        .header("X-Azure-Functions-HostVersion", "4.1040.300.0")
        .header("User-Agent", "Azure-Functions-Host/4.1040.300.0")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
}

#[tokio::test]
async fn the_handler_serves_proxied_calls_and_streams_as_the_host_sends_them() {
    let sim = Simulator::start(SimOptions {
        api_key: Some("k".into()),
        behaviour: Behaviour {
            chunks: 5,
            chunk_interval_ms: 100,
            ..Default::default()
        },
        name: Some("backend".into()),
    })
    .await
    .unwrap();
    let config = json!({"applications": [{"appId": "chat", "appType": "azure_oai", "endpoints": [
        {"id": "ptu", "uri": format!("{}/openai/deployments/gpt/chat/completions?api-version=2024-10-21", sim.url()), "apikey": "k"}
    ]}]});
    let dir = stage();
    let (_handler, base) = launch(&dir, &config).await;
    let http = reqwest::Client::new();

    // The proxied path and query arrive as the client sent them (routePrefix "").
    let r = host_request(
        &http,
        reqwest::Method::POST,
        format!("{base}/openai/deployments/chat/chat/completions?api-version=2024-10-21"),
    )
    .header("x-request-id", "client-7")
    .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "client-7");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");

    let info = host_request(
        &http,
        reqwest::Method::GET,
        format!("{base}/api/v1/dev/apirouter/instanceinfo"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(info.status(), 200);

    // Streams arrive piece by piece: the first chunk before the backend has finished.
    let r = host_request(
        &http,
        reqwest::Method::POST,
        format!("{base}/api/v1/dev/apirouter/lb/chat"),
    )
    .json(&json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}))
    .send()
    .await
    .unwrap();
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut body = r.bytes_stream();
    let mut seen = String::new();
    let mut completed_at_first_content = None;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .unwrap()
    {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if completed_at_first_content.is_none() && seen.contains("\"content\"") {
            completed_at_first_content = Some(sim.stats().streams_completed);
        }
    }
    assert_eq!(completed_at_first_content, Some(0));
    assert!(seen.trim_end().ends_with("data: [DONE]"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sigterm_drains_and_exits_cleanly() {
    let sim = Simulator::start(SimOptions {
        api_key: None,
        behaviour: Behaviour {
            chunks: 6,
            chunk_interval_ms: 100,
            ..Default::default()
        },
        name: None,
    })
    .await
    .unwrap();
    let config = json!({"applications": [{"appId": "chat", "appType": "azure_oai", "endpoints": [
        {"uri": format!("{}/v1/chat/completions", sim.url()), "apikey": "k"}
    ]}]});
    let dir = stage();
    let (mut handler, base) = launch(&dir, &config).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/v1/dev/apirouter/lb/chat"))
        .json(&json!({"messages": [{"role": "user", "content": "hi"}], "stream": true}))
        .send()
        .await
        .unwrap();
    let pid = handler.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let text = tokio::time::timeout(Duration::from_secs(10), r.text())
        .await
        .unwrap()
        .unwrap();
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "the stream in flight finished"
    );
    let status = tokio::task::spawn_blocking(move || handler.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_invalid_configuration_stops_start_up_listing_every_problem() {
    let dir = std::env::temp_dir().join(format!("aigw-badcfg-{}", fastrand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = json!({"applications": [
        {"appId": "a", "appType": "azure_oai", "endpoints": [{"uri": "nope", "apikey": "k", "rpm": -1}]},
        {"appId": "b", "appType": "azure_translator", "endpoints": [{"uri": "https://x/", "apikey": "env:NOT_SET_ANYWHERE"}]}
    ]});
    std::fs::write(dir.join("bad.json"), config.to_string()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_router"))
        .args(["--config", dir.join("bad.json").to_str().unwrap()])
        .env("FUNCTIONS_CUSTOMHANDLER_PORT", free_port().to_string())
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "applications[0].endpoints[0].uri",
        "applications[0].endpoints[0].rpm",
        "applications[1].appType",
        "applications[1].endpoints[0].apikey",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected} missing from:\n{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
