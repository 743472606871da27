//! The client's operation, end to end: Azure and OpenAI clients (async-openai) calling
//! embeddings, chat and the v1 surface through the gateway, endpoints whose URI ends at a
//! deployment or at `/openai/v1` (the operation comes from the client) or names its operation
//! (called as is, another operation refused by name), an endpoint's `model` in the body, and
//! bodies the gateway must not touch (multipart audio, Responses streams). The simulator's
//! request log shows where each request went; a raw TCP backend shows the exact bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use aigw_core::Settings;
use aigw_simulator::SeenRequest;
use aigw_tests::raw::{RawRequest, read_request};
use aigw_tests::*;
use async_openai::Client;
use async_openai::config::{AzureConfig, OpenAIConfig};
use async_openai::types::chat::{
    ChatCompletionRequestUserMessageArgs, CreateChatCompletionRequest,
    CreateChatCompletionRequestArgs,
};
use async_openai::types::embeddings::{CreateEmbeddingRequest, CreateEmbeddingRequestArgs};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const PREFIX: &str = "/api/v1/dev/apirouter";

fn chat(model: &str) -> CreateChatCompletionRequest {
    CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages([ChatCompletionRequestUserMessageArgs::default()
            .content("Hello there")
            .build()
            .unwrap()
            .into()])
        .build()
        .unwrap()
}

fn embedding(model: &str) -> CreateEmbeddingRequest {
    CreateEmbeddingRequestArgs::default()
        .model(model)
        .input(["hello world", "goodbye"])
        .build()
        .unwrap()
}

/// One application `app` whose endpoints are the given JSON objects (the key added).
fn config(app: &str, endpoints: &[Value]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|ep| {
            let mut ep = ep.clone();
            ep["apikey"] = json!(BACKEND_KEY);
            ep
        })
        .collect();
    json!({"applications": [{"appId": app, "appType": "azure_oai", "endpoints": endpoints}]})
}

/// The last request the simulator received.
fn last(sim: &Simulator) -> SeenRequest {
    sim.requests().pop().expect("the simulator got a request")
}

fn azure(base: String, deployment: &str, api_version: &str) -> Client<AzureConfig> {
    Client::with_config(
        AzureConfig::new()
            .with_api_base(base)
            .with_deployment_id(deployment)
            .with_api_version(api_version)
            .with_api_key("client-key"),
    )
}

fn openai(base: String) -> Client<OpenAIConfig> {
    Client::with_config(
        OpenAIConfig::new()
            .with_api_base(base)
            .with_api_key("client-key"),
    )
}

async fn error_of(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    let error = &body["error"];
    (
        status,
        error["code"].as_str().unwrap_or_default().to_owned(),
        error["message"].as_str().unwrap_or_default().to_owned(),
    )
}

#[tokio::test]
async fn azure_sdk_embeddings_reach_a_deployment_base_as_embeddings() {
    let sim = simulator("emb", Behaviour::default()).await;
    let deployment = format!("{}/openai/deployments/text-embedding-3-small", sim.url());
    let gw = TestGateway::start(config("search", &[json!({"uri": deployment})])).await;

    let at_root = azure(gw.url(), "search", "2024-10-21");
    let answer = at_root
        .embeddings()
        .create(embedding("ignored"))
        .await
        .unwrap();
    assert_eq!(answer.data.len(), 2);
    assert!(!answer.data[0].embedding.is_empty());
    let seen = last(&sim);
    assert_eq!(
        seen.path,
        "/openai/deployments/text-embedding-3-small/embeddings"
    );
    assert_eq!(
        seen.query_param("api-version").as_deref(),
        Some("2024-10-21")
    );
    assert_eq!(seen.content_type.as_deref(), Some("application/json"));

    // Under {prefix}/lb, and the client's api-version is the one sent.
    let under_lb = azure(
        format!("{}{PREFIX}/lb", gw.url()),
        "search",
        "2025-01-01-preview",
    );
    under_lb
        .embeddings()
        .create(embedding("ignored"))
        .await
        .unwrap();
    let seen = last(&sim);
    assert_eq!(
        seen.path,
        "/openai/deployments/text-embedding-3-small/embeddings"
    );
    assert_eq!(
        seen.query_param("api-version").as_deref(),
        Some("2025-01-01-preview")
    );

    // The same application serves chat too: the operation is the client's.
    let answer = at_root.chat().create(chat("ignored")).await.unwrap();
    assert!(answer.choices[0].message.content.is_some());
    assert_eq!(
        last(&sim).path,
        "/openai/deployments/text-embedding-3-small/chat/completions"
    );
}

#[tokio::test]
async fn openai_sdk_on_the_lb_base_url_names_its_operation() {
    let sim = simulator("a", Behaviour::default()).await;
    let deployment = format!("{}/openai/deployments/gpt-4o", sim.url());
    let gw = TestGateway::start(config("app", &[json!({"uri": deployment})])).await;
    let client = openai(gw.lb("app"));

    client.embeddings().create(embedding("x")).await.unwrap();
    let seen = last(&sim);
    assert_eq!(seen.path, "/openai/deployments/gpt-4o/embeddings");
    // No client api-version: the gateway's default.
    assert_eq!(
        seen.query_param("api-version").as_deref(),
        Some("2024-10-21")
    );

    client.chat().create(chat("x")).await.unwrap();
    assert_eq!(
        last(&sim).path,
        "/openai/deployments/gpt-4o/chat/completions"
    );
}

#[tokio::test]
async fn the_node_path_means_chat_completions_with_the_default_api_version() {
    let sim = simulator("a", Behaviour::default()).await;
    let deployment = format!("{}/openai/deployments/gpt-4o/", sim.url());
    let app = config("chatbot", &[json!({"uri": deployment})]);

    let gw = TestGateway::start(app.clone()).await;
    let response = post_chat(&gw, "chatbot", "Hi", false).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["object"], "chat.completion");
    let seen = last(&sim);
    assert_eq!(seen.path, "/openai/deployments/gpt-4o/chat/completions");
    assert_eq!(
        seen.query_param("api-version").as_deref(),
        Some("2024-10-21")
    );

    // API_GATEWAY_DEFAULT_API_VERSION.
    let settings = Settings {
        default_api_version: "2025-04-01-preview".into(),
        ..Settings::default()
    };
    let other = TestGateway::start_with(app, settings).await;
    assert_eq!(
        post_chat(&other, "chatbot", "Hi", false).await.status(),
        200
    );
    assert_eq!(
        last(&sim).query_param("api-version").as_deref(),
        Some("2025-04-01-preview")
    );
}

#[tokio::test]
async fn an_api_version_on_the_uri_wins_over_the_clients() {
    let sim = simulator("a", Behaviour::default()).await;
    let deployment = format!(
        "{}/openai/deployments/gpt-4o?api-version=2024-06-01",
        sim.url()
    );
    let gw = TestGateway::start(config("app", &[json!({"uri": deployment})])).await;
    azure(gw.url(), "app", "2024-10-21")
        .embeddings()
        .create(embedding("x"))
        .await
        .unwrap();
    let seen = last(&sim);
    assert_eq!(seen.path, "/openai/deployments/gpt-4o/embeddings");
    assert_eq!(seen.query.as_deref(), Some("api-version=2024-06-01"));
}

#[tokio::test]
async fn the_v1_surface_picks_the_application_from_the_model() {
    let sim = simulator("v1", Behaviour::default()).await;
    let v1 = format!("{}/openai/v1", sim.url());
    let gw = TestGateway::start(config(
        "chatbot",
        &[json!({"uri": v1, "model": "gpt-4o-mini"})],
    ))
    .await;

    // OpenAI(base_url="{gateway}/openai/v1"), model = the application id.
    let client = openai(format!("{}/openai/v1", gw.url()));
    let answer = client.chat().create(chat("chatbot")).await.unwrap();
    assert!(answer.choices[0].message.content.is_some());
    // The endpoint's model went upstream in the body (the simulator answers with it).
    assert_eq!(answer.model, "gpt-4o-mini");
    let seen = last(&sim);
    assert_eq!(seen.path, "/openai/v1/chat/completions");
    assert_eq!(seen.query, None, "no dated api-version on v1");

    // Under {prefix}/lb too, for embeddings.
    let under_lb = openai(format!("{}{PREFIX}/lb/openai/v1", gw.url()));
    let answer = under_lb
        .embeddings()
        .create(embedding("chatbot"))
        .await
        .unwrap();
    assert_eq!(answer.model, "gpt-4o-mini");
    assert_eq!(last(&sim).path, "/openai/v1/embeddings");
}

#[tokio::test]
async fn v1_requests_need_a_known_application_in_a_json_model() {
    let sim = simulator("v1", Behaviour::default()).await;
    let v1 = format!("{}/openai/v1", sim.url());
    let gw = TestGateway::start(config(
        "chatbot",
        &[json!({"uri": v1, "model": "gpt-4o-mini"})],
    ))
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/openai/v1/chat/completions", gw.url());

    let unknown = http
        .post(&url)
        .json(&json!({"model": "nope", "messages": []}))
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(unknown).await;
    assert_eq!(
        (status, code.as_str()),
        (404, "application_not_found"),
        "{message}"
    );
    assert!(message.contains("'nope'"), "{message}");

    let missing = http
        .post(&url)
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(missing).await;
    assert_eq!(
        (status, code.as_str()),
        (400, "model_required"),
        "{message}"
    );
    assert!(message.contains("\"model\""), "{message}");

    let multipart = http
        .post(format!("{}/openai/v1/audio/transcriptions", gw.url()))
        .header("content-type", "multipart/form-data; boundary=b")
        .body("--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nchatbot\r\n--b--\r\n")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(multipart).await;
    assert_eq!((status, code.as_str()), (400, "model_required"));

    let models = http
        .post(format!("{}/openai/v1/models", gw.url()))
        .json(&json!({"model": "chatbot"}))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(models).await;
    assert_eq!((status, code.as_str()), (404, "operation_not_found"));
    assert_eq!(sim.stats().requests, 0);
}

#[tokio::test]
async fn a_uri_naming_its_operation_refuses_another_by_name() {
    let sim = simulator("a", Behaviour::default()).await;
    let gw = TestGateway::start(app_config("chat", &[("ptu", &sim.url(), None)])).await;

    let refused = azure(gw.url(), "chat", "2024-10-21")
        .embeddings()
        .create(embedding("x"))
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("serves chat/completions, not embeddings"),
        "{refused}"
    );
    let response = reqwest::Client::new()
        .post(format!("{}{PREFIX}/lb/chat/embeddings", gw.url()))
        .json(&json!({"input": "x"}))
        .send()
        .await
        .unwrap();
    let (status, code, message) = error_of(response).await;
    assert_eq!((status, code.as_str()), (404, "operation_not_served"));
    assert_eq!(
        message,
        "AI application 'chat' serves chat/completions, not embeddings"
    );
    assert_eq!(sim.stats().requests, 0, "nothing was sent");

    // Its own operation, named or not, goes to the URI as written.
    let client = openai(gw.lb("chat"));
    client.chat().create(chat("x")).await.unwrap();
    assert_eq!(post_chat(&gw, "chat", "Hi", false).await.status(), 200);
    for seen in sim.requests() {
        assert_eq!(seen.path, "/openai/deployments/gpt-4o/chat/completions");
        assert_eq!(seen.query.as_deref(), Some("api-version=2024-10-21"));
    }
    assert_eq!(sim.requests().len(), 2);
}

#[tokio::test]
async fn unknown_operations_get_a_clear_404() {
    let sim = simulator("a", Behaviour::default()).await;
    let deployment = format!("{}/openai/deployments/gpt-4o", sim.url());
    let gw = TestGateway::start(config("app", &[json!({"uri": deployment})])).await;
    for path in [
        format!("{PREFIX}/lb/app/chat/completion"),
        format!("{PREFIX}/lb/app/files"),
        "/openai/deployments/app/extensions/chat/completions".to_owned(),
    ] {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", gw.url()))
            .json(&chat_body("Hi", false))
            .send()
            .await
            .unwrap();
        let (status, code, message) = error_of(response).await;
        assert_eq!(
            (status, code.as_str()),
            (404, "operation_not_found"),
            "{path}"
        );
        assert!(
            message.contains("chat/completions, completions, embeddings"),
            "{message}"
        );
    }
    assert_eq!(sim.stats().requests, 0);
}

#[tokio::test]
async fn an_endpoint_model_replaces_the_clients() {
    let sim = simulator("a", Behaviour::default()).await;
    let gw = TestGateway::start(config(
        "app",
        &[json!({"uri": chat_uri(&sim.url()), "model": "gpt-4o-2024-08-06"})],
    ))
    .await;
    let answer = openai(gw.lb("app"))
        .chat()
        .create(chat("whatever-the-client-says"))
        .await
        .unwrap();
    assert_eq!(answer.model, "gpt-4o-2024-08-06");
    // A body without a model gets one.
    let response = post_chat(&gw, "app", "Hi", false).await;
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["model"], "gpt-4o-2024-08-06");
}

#[tokio::test]
async fn an_application_named_openai_keeps_its_lb_paths() {
    let sim = simulator("a", Behaviour::default()).await;
    let deployment = format!("{}/openai/deployments/gpt-4o", sim.url());
    let gw = TestGateway::start(config("openai", &[json!({"uri": deployment})])).await;
    assert_eq!(post_chat(&gw, "openai", "Hi", false).await.status(), 200);
    openai(gw.lb("openai"))
        .embeddings()
        .create(embedding("x"))
        .await
        .unwrap();
    assert_eq!(last(&sim).path, "/openai/deployments/gpt-4o/embeddings");
}

/// A backend answering every request with `body` as `content_type`; what it received comes out
/// of the receiver. Returns its base URL.
async fn raw_backend(
    content_type: &'static str,
    body: &'static [u8],
) -> (String, mpsc::UnboundedReceiver<RawRequest>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (requests, received) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let requests = requests.clone();
            tokio::spawn(async move {
                let request = read_request(&mut socket).await;
                let _ = requests.send(request);
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                socket.write_all(head.as_bytes()).await.unwrap();
                socket.write_all(body).await.unwrap();
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, received)
}

#[tokio::test]
async fn multipart_bodies_pass_through_byte_for_byte() {
    let (backend, mut received) = raw_backend("application/json", br#"{"text":"hello"}"#).await;
    // Even an endpoint that names its model leaves a multipart body alone.
    let deployment = format!("{backend}/openai/deployments/whisper");
    let gw = TestGateway::start(config(
        "voice",
        &[json!({"uri": deployment, "model": "whisper-1"})],
    ))
    .await;
    let content_type = "multipart/form-data; boundary=----AaB03x";
    let mut form =
        b"------AaB03x\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nvoice\r\n\
------AaB03x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
Content-Type: audio/wav\r\n\r\nRIFF"
            .to_vec();
    form.extend((0u8..=255).chain([0, 0xff, b'\r', b'\n']));
    form.extend_from_slice(b"\r\n------AaB03x--\r\n");

    let response = reqwest::Client::new()
        .post(format!(
            "{}/openai/deployments/voice/audio/transcriptions?api-version=2024-06-01",
            gw.url()
        ))
        .header("content-type", content_type)
        .body(form.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), r#"{"text":"hello"}"#);
    let got = received.recv().await.unwrap();
    assert_eq!(
        got.target,
        "/openai/deployments/whisper/audio/transcriptions?api-version=2024-06-01"
    );
    assert_eq!(got.content_type.as_deref(), Some(content_type));
    assert!(got.body == form, "the body arrived changed");
}

const RESPONSES_STREAM: &[u8] = b"event: response.created\ndata: {\"type\":\"response.created\"}\n\n\
event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":2,\"total_tokens\":5}}}\n\n";

#[tokio::test]
async fn responses_streams_are_not_asked_for_usage() {
    let (backend, mut received) = raw_backend("text/event-stream", RESPONSES_STREAM).await;
    let deployment = format!("{backend}/openai/deployments/gpt-4o");
    let gw = TestGateway::start(config("app", &[json!({"uri": deployment})])).await;
    let http = reqwest::Client::new();

    let body = json!({"model": "gpt-4o", "input": "Hi", "stream": true}).to_string();
    let response = http
        .post(format!("{}/responses", gw.lb("app")))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    // The stream, usage event included, reaches the client as the backend sent it.
    assert_eq!(&response.bytes().await.unwrap()[..], RESPONSES_STREAM);
    let got = received.recv().await.unwrap();
    assert_eq!(
        got.target,
        "/openai/deployments/gpt-4o/responses?api-version=2024-10-21"
    );
    assert_eq!(got.body, body.as_bytes(), "no stream_options added");

    // Chat streams still are.
    let chat = http
        .post(format!("{}/chat/completions", gw.lb("app")))
        .json(&chat_body("Hi", true))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    let _ = chat.bytes().await;
    let got = received.recv().await.unwrap();
    let sent: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));

    // Embeddings never are, stream flag or not.
    let embeddings = http
        .post(format!("{}/embeddings", gw.lb("app")))
        .json(&json!({"input": "Hi", "stream": true}))
        .send()
        .await
        .unwrap();
    let _ = embeddings.bytes().await;
    let got = received.recv().await.unwrap();
    assert_eq!(
        got.target,
        "/openai/deployments/gpt-4o/embeddings?api-version=2024-10-21"
    );
    let sent: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(sent.get("stream_options"), None);
}
