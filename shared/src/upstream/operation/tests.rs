//! Unit tests of [`super`] (`operation`).

use super::*;

fn target(uri: &str) -> Target {
    Target::of(&Url::parse(uri).unwrap())
}

#[test]
fn client_paths_name_known_operations_only() {
    for op in Operation::ALL {
        assert_eq!(Operation::from_path(op.as_str()), Some(op));
        assert_eq!(Operation::from_path(&format!("{op}/")), Some(op));
    }
    assert_eq!(
        Operation::from_path("/embeddings"),
        Some(Operation::Embeddings)
    );
    for unknown in [
        "",
        "chat",
        "models",
        "chat/completions/x",
        "Embeddings",
        "files",
    ] {
        assert_eq!(Operation::from_path(unknown), None, "{unknown}");
    }
}

#[test]
fn only_chat_and_completions_take_stream_options() {
    let taking: Vec<_> = Operation::ALL
        .into_iter()
        .filter(|op| op.takes_stream_options())
        .collect();
    assert_eq!(taking, [Operation::ChatCompletions, Operation::Completions]);
}

#[test]
fn uris_ending_at_a_deployment_are_bases() {
    let res = "https://r.openai.azure.com/openai/deployments/gpt-4o";
    assert_eq!(target(res), Target::Deployment { api_version: false });
    assert_eq!(
        target(&format!("{res}/")),
        Target::Deployment { api_version: false }
    );
    assert_eq!(
        target(&format!("{res}?api-version=2024-06-01")),
        Target::Deployment { api_version: true }
    );
    assert_eq!(
        target(&format!("{res}?code=x")),
        Target::Deployment { api_version: false }
    );
    // A deployment may be named like an operation.
    assert_eq!(
        target("https://r/openai/deployments/embeddings"),
        Target::Deployment { api_version: false }
    );
    assert_eq!(
        target("https://apim.example.com/team/openai/deployments/d"),
        Target::Deployment { api_version: false }
    );
    assert_eq!(
        target("https://r/openai/deployments/"),
        Target::Fixed { operation: None }
    );
}

#[test]
fn uris_ending_at_v1_are_bases() {
    assert_eq!(target("https://r.openai.azure.com/openai/v1"), Target::V1);
    assert_eq!(target("https://r.openai.azure.com/openai/v1/"), Target::V1);
    assert_eq!(
        target("https://r.openai.azure.com/openai/v1?api-version=preview"),
        Target::V1
    );
}

#[test]
fn other_uris_name_their_operation_when_recognisable() {
    let fixed = |op| Target::Fixed {
        operation: Some(op),
    };
    use Operation::*;
    assert_eq!(
        target("https://r/openai/deployments/gpt/chat/completions?api-version=2024-10-21"),
        fixed(ChatCompletions)
    );
    // The deployment name is not part of the operation, whatever it is called.
    assert_eq!(
        target("https://r/openai/deployments/chat/completions"),
        fixed(Completions)
    );
    assert_eq!(
        target("https://r/openai/deployments/e/embeddings/"),
        fixed(Embeddings)
    );
    assert_eq!(
        target("https://r/openai/deployments/w/audio/transcriptions"),
        fixed(AudioTranscriptions)
    );
    assert_eq!(target("https://r/openai/v1/responses"), fixed(Responses));
    assert_eq!(
        target(
            "https://r.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview"
        ),
        fixed(ChatCompletions)
    );
    assert_eq!(
        target("https://r/openai/responses?api-version=2025-03-01-preview"),
        fixed(Responses)
    );
    for unknown in [
        "https://apim.example.com/my-chat-api",
        "https://r/openai/deployments/gpt/extensions",
        "https://r/",
        "https://r/xcompletions",
    ] {
        assert_eq!(
            target(unknown),
            Target::Fixed { operation: None },
            "{unknown}"
        );
    }
}

#[test]
fn an_application_serves_what_its_endpoints_take() {
    use Operation::*;
    let chat = Target::Fixed {
        operation: Some(ChatCompletions),
    };
    let emb = Target::Fixed {
        operation: Some(Embeddings),
    };
    let base = Target::Deployment { api_version: true };
    assert_eq!(Serves::of([base, Target::V1].into_iter()), Serves::Client);
    assert_eq!(
        Serves::of([chat, chat].into_iter()),
        Serves::Only(ChatCompletions)
    );
    assert_eq!(Serves::of([chat, emb].into_iter()), Serves::AsIs);
    assert_eq!(
        Serves::of([Target::Fixed { operation: None }].into_iter()),
        Serves::AsIs
    );
    assert_eq!(Serves::of(std::iter::empty()), Serves::AsIs);
}

#[test]
fn resolving_the_clients_operation() {
    use Operation::*;
    assert_eq!(Serves::Client.resolve(None), Ok(Some(ChatCompletions)));
    assert_eq!(
        Serves::Client.resolve(Some(Embeddings)),
        Ok(Some(Embeddings))
    );
    let chat = Serves::Only(ChatCompletions);
    assert_eq!(chat.resolve(None), Ok(Some(ChatCompletions)));
    assert_eq!(
        chat.resolve(Some(ChatCompletions)),
        Ok(Some(ChatCompletions))
    );
    assert_eq!(chat.resolve(Some(Embeddings)), Err(ChatCompletions));
    assert_eq!(Serves::AsIs.resolve(None), Ok(None));
    assert_eq!(Serves::AsIs.resolve(Some(Responses)), Ok(Some(Responses)));
}

#[test]
fn base_urls_get_the_operation_and_an_api_version_when_they_name_none() {
    let build = |uri: &str, op, version| {
        let uri = Url::parse(uri).unwrap();
        url(&uri, Target::of(&uri), op, version).to_string()
    };
    let res = "https://r.openai.azure.com/openai/deployments/gpt-4o";
    assert_eq!(
        build(res, Operation::Embeddings, Some("2024-10-21")),
        format!("{res}/embeddings?api-version=2024-10-21")
    );
    assert_eq!(
        build(
            &format!("{res}/"),
            Operation::ChatCompletions,
            Some("2025-01-01-preview")
        ),
        format!("{res}/chat/completions?api-version=2025-01-01-preview")
    );
    // The URI's own api-version wins; other query parameters are kept.
    assert_eq!(
        build(
            &format!("{res}?api-version=2024-06-01"),
            Operation::Embeddings,
            Some("2024-10-21")
        ),
        format!("{res}/embeddings?api-version=2024-06-01")
    );
    assert_eq!(
        build(
            &format!("{res}?code=abc"),
            Operation::AudioSpeech,
            Some("2024-10-21")
        ),
        format!("{res}/audio/speech?code=abc&api-version=2024-10-21")
    );
    // v1: no dated api-version, the URI's query as written.
    assert_eq!(
        build(
            "https://r/openai/v1",
            Operation::Responses,
            Some("2024-10-21")
        ),
        "https://r/openai/v1/responses"
    );
    assert_eq!(
        build(
            "https://r/openai/v1/?api-version=preview",
            Operation::ChatCompletions,
            None
        ),
        "https://r/openai/v1/chat/completions?api-version=preview"
    );
    // A fixed URI is called as is.
    let fixed = "https://r/openai/deployments/gpt/chat/completions?api-version=2024-02-01";
    assert_eq!(
        build(fixed, Operation::Embeddings, Some("2024-10-21")),
        fixed
    );
}
