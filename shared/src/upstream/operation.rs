//! Which operation a request is for, and where each endpoint takes it.
//!
//! A client names its operation in its path (`…/deployments/{app}/embeddings`, `…/lb/{app}/chat/completions`;
//! the Node gateway's bare `/lb/{app}` names none). An endpoint's configured URI either names an
//! operation itself (the Node gateway's form, called as is) or ends at a base the operation is
//! appended to: an Azure deployment (`…/openai/deployments/{name}`) or Azure's v1 surface
//! (`…/openai/v1`). This module is the pure part of that: naming operations, classifying URIs at
//! configuration time, deciding what a request's operation is for an application, and building a
//! base endpoint's URL. No I/O, so all of it is unit-tested here.

use reqwest::Url;

/// The operations the gateway forwards (the Azure OpenAI inference surface).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    ChatCompletions,
    Completions,
    Embeddings,
    ImageGenerations,
    ImageEdits,
    AudioTranscriptions,
    AudioTranslations,
    AudioSpeech,
    Responses,
}

impl Operation {
    pub const ALL: [Operation; 9] = [
        Operation::ChatCompletions,
        Operation::Completions,
        Operation::Embeddings,
        Operation::ImageGenerations,
        Operation::ImageEdits,
        Operation::AudioTranscriptions,
        Operation::AudioTranslations,
        Operation::AudioSpeech,
        Operation::Responses,
    ];

    /// The operation's path below a deployment or the v1 base, as clients and Azure spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::ChatCompletions => "chat/completions",
            Operation::Completions => "completions",
            Operation::Embeddings => "embeddings",
            Operation::ImageGenerations => "images/generations",
            Operation::ImageEdits => "images/edits",
            Operation::AudioTranscriptions => "audio/transcriptions",
            Operation::AudioTranslations => "audio/translations",
            Operation::AudioSpeech => "audio/speech",
            Operation::Responses => "responses",
        }
    }

    /// The operation a client path names below its deployment or base (`chat/completions`,
    /// `embeddings/`); `None` for anything else.
    pub fn from_path(tail: &str) -> Option<Self> {
        let tail = tail.trim_matches('/');
        Self::ALL.into_iter().find(|op| op.as_str() == tail)
    }

    /// Whether a stream of this operation can be asked for its usage with
    /// `stream_options.include_usage`. Azure rejects the option on the Responses API (whose
    /// streams report usage in their `response.completed` event), and it means nothing to
    /// embeddings, images or audio.
    pub fn takes_stream_options(self) -> bool {
        matches!(self, Operation::ChatCompletions | Operation::Completions)
    }

    /// Every operation's name, for messages.
    pub fn list() -> String {
        Self::ALL
            .iter()
            .map(|op| op.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an endpoint's configured URI is, decided once when the configuration is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The URI names its operation (`…/deployments/gpt/chat/completions?api-version=…`), or is
    /// not recognisable: it is called as is, whatever the client's path (the Node gateway's
    /// behaviour). `operation` is what the path names, when it is recognisable.
    Fixed { operation: Option<Operation> },
    /// The URI ends at an Azure deployment (`…/openai/deployments/{name}`): the operation comes
    /// from the client. `api_version` says whether the URI names one; if not, the client's (or
    /// the gateway's default) is added.
    Deployment { api_version: bool },
    /// The URI is Azure's v1 surface (`…/openai/v1`): the operation comes from the client, the
    /// URI's query is kept as written and no dated `api-version` is added. The body's `model`
    /// must name the deployment, so such an endpoint names its `model`.
    V1,
}

impl Target {
    /// What `uri` is.
    pub fn of(uri: &Url) -> Self {
        let path = uri.path().trim_end_matches('/');
        let mut back = path.rsplit('/');
        if let (Some(name), Some("deployments"), Some("openai")) =
            (back.next(), back.next(), back.next())
            && !name.is_empty()
        {
            let api_version = uri.query_pairs().any(|(name, _)| name == "api-version");
            return Target::Deployment { api_version };
        }
        if path.ends_with("/openai/v1") {
            return Target::V1;
        }
        Target::Fixed {
            operation: named_by(path),
        }
    }

    /// Whether the client's path decides the operation (a deployment or v1 base).
    pub fn takes_client_operation(self) -> bool {
        !matches!(self, Target::Fixed { .. })
    }
}

/// The operation a fixed URI's path names: what follows the deployment name on a deployment
/// path, what follows `/v1/` on a v1 path, else the longest operation the path ends with
/// (`…/models/chat/completions` on Foundry).
fn named_by(path: &str) -> Option<Operation> {
    if let Some((_, rest)) = path.split_once("/openai/deployments/") {
        return rest
            .split_once('/')
            .and_then(|(_, tail)| Operation::from_path(tail));
    }
    if let Some((_, tail)) = path.rsplit_once("/v1/") {
        return Operation::from_path(tail);
    }
    Operation::ALL
        .into_iter()
        .filter(|op| {
            path.strip_suffix(op.as_str())
                .is_some_and(|before| before.ends_with('/'))
        })
        .max_by_key(|op| op.as_str().len())
}

/// What an application makes of the client's operation, from its endpoints' targets.
/// Configuration validation ensures an application's endpoints are all bases or all fixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    /// Base endpoints: the client's operation, `chat/completions` when its path names none.
    Client,
    /// Fixed endpoints that all name this operation.
    Only(Operation),
    /// Fixed endpoints naming different or unrecognisable operations: called as is for any
    /// client operation.
    AsIs,
}

impl Serves {
    /// What the application whose endpoints have `targets` serves (in configuration order).
    pub fn of(mut targets: impl Iterator<Item = Target>) -> Self {
        let Some(first) = targets.next() else {
            return Serves::AsIs;
        };
        match first {
            Target::Deployment { .. } | Target::V1 => Serves::Client,
            Target::Fixed { operation: None } => Serves::AsIs,
            Target::Fixed {
                operation: Some(op),
            } => {
                if targets.all(|t| t == first) {
                    Serves::Only(op)
                } else {
                    Serves::AsIs
                }
            }
        }
    }

    /// The operation a request is for, given the one its path names (`None` for the Node
    /// gateway's `/lb/{app}`). `Ok(None)`: unknown (fixed URIs called as is). `Err(op)`: the
    /// application serves only `op`, and the client asked for another.
    pub fn resolve(self, asked: Option<Operation>) -> Result<Option<Operation>, Operation> {
        match self {
            Serves::Client => Ok(Some(asked.unwrap_or(Operation::ChatCompletions))),
            Serves::Only(op) => match asked {
                Some(other) if other != op => Err(op),
                _ => Ok(Some(op)),
            },
            Serves::AsIs => Ok(asked),
        }
    }
}

/// The URL to call for `operation` on an endpoint at `uri` whose target is `target`.
///
/// A fixed URI is called as is. A base gets the operation appended to its path; a deployment
/// base whose URI names no `api-version` gets `api_version` (the client's, else the gateway's
/// default) added to its query, other query parameters kept.
pub fn url(uri: &Url, target: Target, operation: Operation, api_version: Option<&str>) -> Url {
    let mut url = uri.clone();
    if matches!(target, Target::Fixed { .. }) {
        return url;
    }
    if let Ok(mut segments) = url.path_segments_mut() {
        segments
            .pop_if_empty()
            .extend(operation.as_str().split('/'));
    }
    if let (Target::Deployment { api_version: false }, Some(version)) = (target, api_version) {
        url.query_pairs_mut().append_pair("api-version", version);
    }
    url
}

#[cfg(test)]
mod tests;
